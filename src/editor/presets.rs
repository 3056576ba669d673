//! The preset browser: what the recommender suggests (with its reasons), the whole library
//! with search, and "save current settings as a preset".

use super::{EditorAction, EditorState};
use crate::music::Scale;
use crate::plugin::MelodistParams;
use crate::presets::{
    KeyMode, MatchFeatures, PresetLibrary, PresetSettings, ScaleHandling, StylePreset, save_user,
};
use anyhow::{Result, bail};
use egui::{RichText, Ui};
use nice_plug::prelude::*;

/// Applies a preset by setting the parameters it covers (through the host, so it is
/// automatable and undoable); the engine picks them up at the next bar or beat.
pub fn apply(state: &mut EditorState, id: &str) {
    let Some(preset) = state.library.get(id).cloned() else {
        state.message = format!("Preset {id:?} is not in the library");
        return;
    };
    let p = state.params.clone();
    let mut s = p.gen_settings();
    preset.apply_to(&mut s);
    let a = state.access.as_mut();
    a.set_once(p.scale.as_ptr(), p.scale.preview_normalized(s.key.scale));
    a.set_once(p.low.as_ptr(), p.low.preview_normalized(s.low as i32));
    a.set_once(p.high.as_ptr(), p.high.preview_normalized(s.high as i32));
    a.set_once(p.density.as_ptr(), p.density.preview_normalized(s.density));
    a.set_once(
        p.variation.as_ptr(),
        p.variation.preview_normalized(s.variation),
    );
    a.set_once(p.gate.as_ptr(), p.gate.preview_normalized(s.gate));
    a.set_once(
        p.velocity.as_ptr(),
        p.velocity.preview_normalized(s.velocity as i32),
    );
    a.set_once(
        p.humanize.as_ptr(),
        p.humanize.preview_normalized(s.humanize),
    );
    a.set_once(p.mode.as_ptr(), p.mode.preview_normalized(s.mode));
    // The knobs now hold the style: the host-side "Style preset" selector goes back to
    // Manual so it does not play a different style over them.
    a.set_once(p.preset.as_ptr(), p.preset.preview_normalized(0));
    state.current_preset = Some(preset.id.clone());
    state.message = format!("{} applies at the next change point", preset.name);
    state.send(EditorAction::ApplyPreset(preset.id));
}

/// `"My Reel #2"` → `"my-reel-2"`, the preset id format.
fn slug(name: &str) -> String {
    let lower = name.to_lowercase();
    let parts: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .collect();
    let mut id = parts.join("-");
    id.truncate(64);
    id.trim_end_matches('-').to_string()
}

/// The current parameters as a user preset named `name`, described by the current context.
pub fn from_params(
    params: &MelodistParams,
    name: &str,
    tempo: f64,
    meter: crate::music::Meter,
) -> Result<StylePreset> {
    let mut id = slug(name);
    if id.is_empty() {
        bail!("give the preset a name with letters or digits");
    }
    if PresetLibrary::factory().get(&id).is_some() {
        id = format!("my-{id}");
    }
    let s = params.gen_settings();
    let key_mode = match s.key.scale {
        Scale::Chromatic => KeyMode::Any,
        scale if scale.is_minor() => KeyMode::Minor,
        _ => KeyMode::Major,
    };
    let tempo = tempo as f32;
    let preset = StylePreset {
        id,
        name: name.trim().to_string(),
        description: "Saved from the Melodist editor".to_string(),
        style: "user".to_string(),
        settings: PresetSettings {
            scale: if s.follow_input {
                ScaleHandling::FollowInput
            } else {
                ScaleHandling::Fixed(s.key.scale)
            },
            low: s.low,
            high: s.high,
            density: s.density,
            variation: s.variation,
            gate: s.gate,
            velocity: s.velocity,
            humanize: s.humanize,
            mode: s.mode,
        },
        features: MatchFeatures {
            tempo_min: (tempo - 10.0).clamp(20.0, 400.0),
            tempo_max: (tempo + 10.0).clamp(20.0, 400.0),
            meters: vec![format!("{}/{}", meter.numerator, meter.denominator)],
            key_mode,
            energy: s.density,
            moods: Vec::new(),
        },
    };
    preset.validate()?;
    Ok(preset)
}

fn save(state: &mut EditorState) {
    let (tempo, meter) = {
        let view = state.view.lock().expect("not poisoned");
        (view.tempo, view.meter)
    };
    let saved = from_params(&state.params, &state.save_name, tempo, meter)
        .and_then(|p| save_user(&state.preset_dir, &p).map(|path| (p, path)));
    match saved {
        Ok((preset, path)) => {
            state.message = format!("Saved {} to {}", preset.name, path.display());
            state.reload_library();
            state.current_preset = Some(preset.id.clone());
            state.send(EditorAction::SavePreset(preset.id));
        }
        Err(err) => state.message = format!("Could not save the preset: {err:#}"),
    }
}

fn matches(preset: &StylePreset, query: &str) -> bool {
    let q = query.trim().to_lowercase();
    q.is_empty()
        || [&preset.name, &preset.id, &preset.style, &preset.description]
            .iter()
            .chain(preset.features.moods.iter().collect::<Vec<_>>().iter())
            .any(|text| text.to_lowercase().contains(&q))
}

pub fn show(ui: &mut Ui, state: &mut EditorState) {
    ui.heading("Presets");
    ui.strong("Suggested for this session");
    let suggestions = state.suggestions.lock().expect("not poisoned").clone();
    if suggestions.is_empty() {
        ui.weak("Suggestions appear once Melodist knows this session.");
    }
    let mut chosen = None;
    for s in suggestions.iter().take(5) {
        if ui
            .button(&s.name)
            .on_hover_text("Apply at the next bar")
            .clicked()
        {
            chosen = Some(s.preset_id.clone());
        }
        ui.label(RichText::new(&s.explanation).small().weak());
    }
    ui.separator();
    ui.horizontal(|ui| {
        let label = ui.label("Search");
        ui.add(egui::TextEdit::singleline(&mut state.search).hint_text("name, style or mood"))
            .labelled_by(label.id);
    });
    egui::ScrollArea::vertical()
        .id_salt("preset list")
        .max_height((ui.available_height() - 60.0).max(80.0))
        .show(ui, |ui| {
            for p in state
                .library
                .presets()
                .iter()
                .filter(|p| matches(p, &state.search))
            {
                let user = !state.factory_ids.contains(&p.id);
                let text = if user {
                    format!("{} (user)", p.name)
                } else {
                    p.name.clone()
                };
                let current = state.current_preset.as_deref() == Some(p.id.as_str());
                if ui
                    .selectable_label(current, text)
                    .on_hover_text(&p.description)
                    .clicked()
                {
                    chosen = Some(p.id.clone());
                }
            }
        });
    if let Some(id) = chosen {
        apply(state, &id);
    }
    ui.separator();
    ui.horizontal(|ui| {
        let label = ui.label("Name");
        ui.add(egui::TextEdit::singleline(&mut state.save_name).desired_width(110.0))
            .labelled_by(label.id);
        if ui.button("Save preset").clicked() {
            save(state);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_valid_ids() {
        assert_eq!(slug("My Reel #2"), "my-reel-2");
        assert_eq!(slug("  !!  "), "");
    }

    #[test]
    fn current_settings_make_a_valid_preset() {
        let params = MelodistParams::default();
        let p = from_params(&params, "Reel Drive", 120.0, crate::music::Meter::new(6, 8)).unwrap();
        assert_eq!(p.id, "my-reel-drive", "factory ids are not reused");
        assert_eq!(p.features.meters, vec!["6/8".to_string()]);
        assert_eq!(p.settings.low, 60);
        assert!(from_params(&params, "?", 120.0, Default::default()).is_err());
    }
}
