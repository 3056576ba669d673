//! The *Model server* section: ask a `melodist serve` (a studio's or a classroom's) for the
//! melody, with the local model filling in whenever it does not answer in time. Off by
//! default; the setting is this user's (see [`crate::generator::remote`]), not the project's.

use super::EditorState;
use crate::generator::remote::ServerSetting;
use egui::{RichText, Ui};
use std::sync::atomic::Ordering;

pub fn show(ui: &mut Ui, state: &mut EditorState) {
    egui::CollapsingHeader::new("Model server")
        .id_salt("model-server")
        .default_open(state.server_draft.enabled)
        .show(ui, |ui| {
            ui.checkbox(&mut state.server_draft.enabled, "Ask a model server first")
                .on_hover_text("The local model plays whenever the server is slow or gone");
            ui.horizontal(|ui| {
                let label = ui.label("Server URL");
                ui.add(
                    egui::TextEdit::singleline(&mut state.server_draft.url)
                        .hint_text("http://studio:8088")
                        .desired_width(220.0),
                )
                .labelled_by(label.id);
            });
            ui.horizontal(|ui| {
                let label = ui.label("Token");
                ui.add(
                    egui::TextEdit::singleline(&mut state.server_draft.token)
                        .password(true)
                        .desired_width(220.0),
                )
                .labelled_by(label.id);
            });
            ui.horizontal(|ui| {
                let changed = state.server_draft != state.server.setting();
                if ui
                    .add_enabled(changed, egui::Button::new("Apply server"))
                    .clicked()
                {
                    apply(state);
                }
            });
            let link = &state.server;
            let report = link.report();
            if !report.is_empty() {
                ui.label(RichText::new(report).small());
            }
            let (remote, local) = (
                link.from_server.load(Ordering::Relaxed),
                link.fell_back.load(Ordering::Relaxed),
            );
            if remote + local > 0 {
                ui.label(
                    RichText::new(format!(
                        "Phrases from the server: {remote}; from this computer: {local}"
                    ))
                    .small(),
                );
            }
        });
}

/// Hands the draft to the worker and saves it for every Melodist of this user.
fn apply(state: &mut EditorState) {
    let setting: ServerSetting = state.server_draft.clone();
    state.server.set(setting.clone());
    let saved = (state.server_file.as_deref())
        .ok_or_else(|| anyhow::anyhow!("Melodist has no data folder here"))
        .and_then(|path| setting.save(path));
    state.message = match saved {
        Ok(()) if setting.enabled => format!("Model server: asking {}", setting.url.trim()),
        Ok(()) => "Model server off: the local model plays".into(),
        Err(e) => format!("Model server applied for this session only: {e:#}"),
    };
}
