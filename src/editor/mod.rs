//! The plugin's editor (egui through nice-plug-egui): a live piano roll, controls for every
//! parameter, the preset browser with the recommender's suggestions, feedback and capture.
//!
//! The whole UI is the plain function [`draw`] over an [`EditorState`], so tests drive it with
//! `egui_kittest` without a window. [`EditorApp`] only adapts it to nice-plug-egui.
//!
//! The editor never blocks `process()`: it reads parameters (atomics), drains the engine's
//! monitor channel into an [`EngineView`] it alone locks, and sends its events out through a
//! bounded channel with `try_send`.

pub mod access;
pub mod capture;
pub mod controls;
pub mod hooks;
pub mod presets;
pub mod roll;
pub mod server;

use crate::engine::{EngineView, WorkerStatus};
use crate::generator::remote::{ServerLink, ServerSetting};
use crate::music::Key;
use crate::plugin::MelodistParams;
use crate::presets::PresetLibrary;
pub use access::{NoAccess, ParamAccess, ParamChange, RecordingAccess};
use crossbeam_channel::{Receiver, Sender, bounded};
use egui::{RichText, Ui, vec2};
use nice_plug::context::gui::GuiContext;
use nice_plug::editor::dpi::LogicalSize;
use nice_plug::prelude::ResizeHint;
use nice_plug_egui::{EguiEditor, EguiEditorState, EguiNiceSettings, NiceEguiApp};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The size the editor opens at the first time.
pub const DEFAULT_SIZE: EditorSize = EditorSize {
    width: 900.0,
    height: 560.0,
};
const MIN_SIZE: EditorSize = EditorSize {
    width: 720.0,
    height: 460.0,
};
/// Room for a burst of clicks between two reads by the session recorder.
const ACTION_CAPACITY: usize = 256;

/// The editor window's logical size, saved with the project (`#[persist = "editor-state"]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EditorSize {
    pub width: f32,
    pub height: f32,
}

impl Default for EditorSize {
    fn default() -> Self {
        DEFAULT_SIZE
    }
}

/// A preset the recommender suggests, with the reason it gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    pub preset_id: String,
    pub name: String,
    pub explanation: String,
}

/// What the producer did in the editor, for the session log and the recommender.
#[derive(Debug, Clone, PartialEq)]
pub enum EditorAction {
    Like,
    Dislike,
    NewIdea,
    Captured(capture::Captured),
    ApplyPreset(String),
    SavePreset(String),
}

/// Shared between the plugin and its editor, created with the plugin (the editor object is
/// created before `activate()` and outlives many window openings).
///
/// - `worker`: filled in by `activate()` once the worker exists, for the status line;
/// - `late_bars`: the scheduler's late-bar count, published by the audio thread;
/// - `suggestions`: the recommender's current top 5, replaced whenever it re-ranks;
/// - `actions`: the receiving end of the editor's events (the session recorder drains it);
/// - `server`: the *Model server* setting the editor changes and the worker follows.
pub struct EditorLink {
    pub worker: Arc<Mutex<Option<Arc<WorkerStatus>>>>,
    pub server: Arc<ServerLink>,
    pub late_bars: Arc<AtomicU32>,
    pub suggestions: Arc<Mutex<Vec<Suggestion>>>,
    pub actions: Receiver<EditorAction>,
    actions_tx: Sender<EditorAction>,
}

impl Default for EditorLink {
    fn default() -> Self {
        let (actions_tx, actions) = bounded(ACTION_CAPACITY);
        Self {
            worker: Arc::default(),
            server: Arc::default(),
            late_bars: Arc::default(),
            suggestions: Arc::default(),
            actions,
            actions_tx,
        }
    }
}

impl EditorLink {
    /// The plugin's link: the *Model server* setting as this user saved it.
    pub fn with_saved_server() -> Self {
        Self {
            server: Arc::new(ServerLink::saved()),
            ..Self::default()
        }
    }

    pub fn set_worker_status(&self, status: Option<Arc<WorkerStatus>>) {
        *self.worker.lock().expect("not poisoned") = status;
    }
}

/// Everything [`draw`] reads and changes: handles to the plugin plus the editor's own fields.
pub struct EditorState {
    pub params: Arc<MelodistParams>,
    pub view: Arc<Mutex<EngineView>>,
    /// Where parameter changes go (the host in the plugin, a recorder in tests).
    pub access: Box<dyn ParamAccess>,
    pub worker: Arc<Mutex<Option<Arc<WorkerStatus>>>>,
    pub late_bars: Arc<AtomicU32>,
    pub suggestions: Arc<Mutex<Vec<Suggestion>>>,
    actions: Sender<EditorAction>,
    /// The *Model server* setting the worker follows, and the editor's unapplied copy.
    pub server: Arc<ServerLink>,
    pub server_draft: ServerSetting,
    /// Where Apply saves the setting (`None`: no data folder; it then lasts this session).
    pub server_file: Option<PathBuf>,

    pub library: PresetLibrary,
    pub factory_ids: HashSet<String>,
    /// User presets are saved here and loaded from here.
    pub preset_dir: PathBuf,
    pub current_preset: Option<String>,
    pub search: String,
    pub save_name: String,

    /// Captures go to this folder (editable in the UI).
    pub capture_dir: String,
    pub capture_bars: u32,
    /// The last capture's result or the last preset operation, shown to the producer.
    pub message: String,
    /// Triggers switched on and when to switch them off (egui time).
    held: Vec<(controls::Trigger, f64)>,
}

impl EditorState {
    /// `preset_dir`: the user preset folder (`presets::user_dir()` in the plugin, a temporary
    /// folder in tests).
    pub fn new(
        params: Arc<MelodistParams>,
        view: Arc<Mutex<EngineView>>,
        link: &EditorLink,
        access: Box<dyn ParamAccess>,
        preset_dir: PathBuf,
    ) -> Self {
        let mut state = Self {
            params,
            view,
            access,
            worker: link.worker.clone(),
            late_bars: link.late_bars.clone(),
            suggestions: link.suggestions.clone(),
            actions: link.actions_tx.clone(),
            server: link.server.clone(),
            server_draft: link.server.setting(),
            server_file: ServerSetting::path().ok(),
            library: PresetLibrary::default(),
            factory_ids: PresetLibrary::factory().ids().into_iter().collect(),
            preset_dir,
            current_preset: None,
            search: String::new(),
            save_name: String::new(),
            capture_dir: capture::default_dir().display().to_string(),
            capture_bars: 8,
            message: String::new(),
            held: Vec::new(),
        };
        state.reload_library();
        state
    }

    /// Re-reads the user preset folder (after a save, or when the editor opens).
    pub fn reload_library(&mut self) {
        let (library, warnings) = PresetLibrary::load(&self.preset_dir);
        self.library = library;
        if !warnings.is_empty() {
            self.message = warnings.join("; ");
        }
    }

    /// Queues an event for the session log; dropped if nobody has read the queue in a while.
    fn send(&self, action: EditorAction) {
        let _ = self.actions.try_send(action);
    }

    fn key(&self) -> Key {
        Key::new(self.params.root.value(), self.params.scale.value())
    }

    fn capture(&mut self) {
        let key = self.key();
        let channel = self.params.output_channel();
        let dir = PathBuf::from(self.capture_dir.trim());
        let result = {
            let view = self.view.lock().expect("not poisoned");
            capture::capture(&view, self.capture_bars, &dir, key, channel)
        };
        match result {
            Ok(captured) => {
                self.message = format!("Captured to {}", captured.melody.display());
                if let Some(input) = &captured.input {
                    self.message += &format!(" (your part: {})", input.display());
                }
                self.send(EditorAction::Captured(captured));
            }
            Err(err) => self.message = format!("Nothing captured: {err:#}"),
        }
    }

    /// The status line: model (or fallback and why), latency, late bars, transport.
    pub fn status_text(&self) -> String {
        let model = match self.worker.lock().expect("not poisoned").as_ref() {
            None => "Model: starting".to_string(),
            Some(w) => {
                let name = w.generator.lock().expect("not poisoned").clone();
                let name = if name.is_empty() {
                    "loading".to_string()
                } else {
                    name
                };
                let latency = w.last_phrase_us.load(Ordering::Relaxed) as f64 / 1000.0;
                match w.fallback_reason.lock().expect("not poisoned").as_ref() {
                    Some(why) => {
                        format!("Model: {name} (fallback: {why}) | phrase {latency:.1} ms")
                    }
                    None => format!("Model: {name} | phrase {latency:.1} ms"),
                }
            }
        };
        let vae = self
            .worker
            .lock()
            .expect("not poisoned")
            .as_ref()
            .and_then(|w| {
                let why = w.vae_fallback_reason.lock().expect("not poisoned");
                why.as_ref().map(|why| format!(" | {why}"))
            });
        let model = model + &vae.unwrap_or_default();
        let view = self.view.lock().expect("not poisoned");
        format!(
            "{model} | late bars: {} | {:.1} BPM {}/{} {}",
            self.late_bars.load(Ordering::Relaxed),
            view.tempo,
            view.meter.numerator,
            view.meter.denominator,
            if view.playing { "playing" } else { "stopped" },
        )
    }
}

/// Draws the whole editor into `ui`. Call once per frame.
pub fn draw(ui: &mut Ui, state: &mut EditorState) {
    let now = ui.input(|i| i.time);
    controls::release_triggers(state, now);
    state.view.lock().expect("not poisoned").update();

    egui::Panel::bottom("status").show(ui, |ui| {
        ui.label(RichText::new(state.status_text()).small());
    });
    egui::Panel::right("presets")
        .resizable(true)
        .default_size(250.0)
        .show(ui, |ui| presets::show(ui, state));
    egui::CentralPanel::default().show(ui, |ui| {
        let register = (
            state.params.low.value() as u8,
            state.params.high.value() as u8,
        );
        let height = (ui.available_height() * 0.45).max(140.0);
        let size = vec2(ui.available_width(), height);
        {
            let view = state.view.lock().expect("not poisoned");
            roll::show(ui, size, &view, state.key(), register);
        }
        feedback_row(ui, state, now);
        hooks::show(ui, state, now);
        if !state.message.is_empty() {
            ui.label(RichText::new(&state.message).small());
        }
        ui.separator();
        egui::ScrollArea::vertical()
            .id_salt("controls")
            .show(ui, |ui| {
                controls::show(ui, state);
                server::show(ui, state);
            });
    });
    // The roll moves with the music.
    ui.ctx()
        .request_repaint_after(std::time::Duration::from_millis(33));
}

fn feedback_row(ui: &mut Ui, state: &mut EditorState, now: f64) {
    ui.horizontal(|ui| {
        if ui
            .button("Like")
            .on_hover_text("Keep ideas like this one")
            .clicked()
        {
            state.send(EditorAction::Like);
            state.message = "Liked: Melodist will suggest more like this".into();
        }
        if ui
            .button("Dislike")
            .on_hover_text("Fewer ideas like this one")
            .clicked()
        {
            state.send(EditorAction::Dislike);
            state.message = "Disliked: noted for suggestions".into();
        }
        if ui
            .button("New idea")
            .on_hover_text("A new seed at the next bar")
            .clicked()
        {
            controls::fire(state, controls::Trigger::NewIdea, now);
            state.send(EditorAction::NewIdea);
        }
        ui.separator();
        if ui
            .button("Capture")
            .on_hover_text("Save what just played as MIDI")
            .clicked()
        {
            state.capture();
        }
        ui.add(
            egui::DragValue::new(&mut state.capture_bars)
                .range(1..=64)
                .suffix(" bars"),
        );
        let label = ui.label("to folder");
        ui.add(egui::TextEdit::singleline(&mut state.capture_dir).desired_width(f32::INFINITY))
            .labelled_by(label.id);
    });
}

/// nice-plug-egui's side of the editor: owns the state, hands it the host's parameter
/// access when a window opens, and keeps the persisted size up to date.
pub struct EditorApp {
    state: EditorState,
    size: Arc<Mutex<EditorSize>>,
}

impl NiceEguiApp for EditorApp {
    fn build(
        &mut self,
        egui_ctx: egui::Context,
        gui: GuiContext,
        _frame: &mut nice_plug_egui::Frame,
    ) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        self.state.access = Box::new(gui);
        self.state.reload_library();
        // The window opens at the size known when the plugin was created; the project's saved
        // size (loaded later) is applied here.
        let size = *self.size.lock().expect("not poisoned");
        if size != DEFAULT_SIZE {
            egui_ctx.send_viewport_cmd(egui::ViewportCommand::InnerSize(vec2(
                size.width,
                size.height,
            )));
        }
        Ok(())
    }

    fn ui(&mut self, ui: &mut Ui, _frame: &mut nice_plug_egui::Frame) {
        nice_plug_egui::resizable_window::ResizableWindow::new("melodist")
            .min_size(vec2(MIN_SIZE.width, MIN_SIZE.height))
            .show(ui, |ui| draw(ui, &mut self.state));
    }

    fn resized(&mut self, size: nice_plug_egui::baseview::WindowSize) {
        *self.size.lock().expect("not poisoned") = EditorSize {
            width: size.logical.width as f32,
            height: size.logical.height as f32,
        };
    }

    fn editor_closed(&mut self) {
        self.state.access = Box::new(NoAccess);
    }
}

/// The editor object the plugin returns from `Plugin::editor()`.
pub fn create(
    params: Arc<MelodistParams>,
    view: Arc<Mutex<EngineView>>,
    link: &EditorLink,
) -> Option<EguiEditor<EditorApp>> {
    let size = params.editor_size.clone();
    let start = *size.lock().expect("not poisoned");
    let preset_dir = crate::presets::user_dir().unwrap_or_else(|_| PathBuf::from("presets"));
    let state = EditorState::new(params, view, link, Box::new(NoAccess), preset_dir);
    let settings = EguiNiceSettings::new()
        .with_tile("Melodist")
        .with_resize_hint(
            ResizeHint::resizable()
                .with_min_logical_size(LogicalSize::new(MIN_SIZE.width, MIN_SIZE.height)),
        );
    nice_plug_egui::create_egui_editor(
        EguiEditorState::from_size(LogicalSize::new(start.width, start.height), 1.0),
        nice_plug_egui::RepaintNotifier::new(),
        settings,
        EditorApp { state, size },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use nice_plug::prelude::Params;

    #[test]
    fn window_size_is_saved_with_the_project() {
        let params = MelodistParams::default();
        *params.editor_size.lock().unwrap() = EditorSize {
            width: 1200.0,
            height: 700.0,
        };
        let saved = params.serialize_fields();
        assert!(saved.contains_key("editor-state"), "{saved:?}");
        let reopened = MelodistParams::default();
        assert_eq!(*reopened.editor_size.lock().unwrap(), DEFAULT_SIZE);
        reopened.deserialize_fields(&saved);
        let size = *reopened.editor_size.lock().unwrap();
        assert_eq!(
            size,
            EditorSize {
                width: 1200.0,
                height: 700.0
            }
        );
    }
}
