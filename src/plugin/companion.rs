//! The plugin's companion thread: everything about the producer's history that must stay
//! off the audio thread.
//!
//! It watches what played (the [`EngineView`], fed by the audio thread's lock-free monitor
//! channel), the "Style preset" and "new idea" parameters, and the editor's actions; it
//! writes the session log through the [`SessionRecorder`]; and it re-ranks the preset
//! suggestions the editor shows. The audio thread never waits for any of this.

use super::MelodistParams;
use crate::editor::{EditorAction, Suggestion};
use crate::engine::thread::{Background, TEARDOWN_WAIT};
use crate::engine::{EngineView, WorkerStatus};
use crate::presets::PresetLibrary;
use crate::recommend::cache::load_dataset;
use crate::recommend::{Catalogue, Context, Dataset, Feedback, Hybrid, HybridWeights, Recommender};
use crate::sessions::recorder::{RecorderEvent, RecorderSender, SessionRecorder};
use crate::sessions::{
    EventKind, LOCAL_PRODUCER, Observation, SessionContext, SessionDb, SessionTracker,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the companion looks at the plugin's state.
const TICK: Duration = Duration::from_millis(100);
/// How often suggestions are re-ranked when nothing happened.
const RERANK_EVERY: Duration = Duration::from_secs(10);
/// Input statistics look at the producer's notes over this many beats.
const INPUT_WINDOW_BEATS: f64 = 32.0;
/// Suggestions shown in the editor.
const SUGGESTIONS: usize = 5;
/// Events the session queue holds before it drops (it never blocks).
const RECORDER_CAPACITY: usize = 1024;

/// Everything the companion reads and writes.
pub struct CompanionLinks {
    pub params: Arc<MelodistParams>,
    pub view: Arc<Mutex<EngineView>>,
    pub worker: Option<Arc<WorkerStatus>>,
    pub actions: Receiver<EditorAction>,
    pub suggestions: Arc<Mutex<Vec<Suggestion>>>,
}

/// Handle to the companion thread; dropping it closes the session and joins at once
/// (the thread waits on this channel between ticks, so closing it wakes it).
pub struct Companion {
    stop: Option<Sender<()>>,
    thread: Option<Background>,
}

impl Companion {
    /// Starts the thread. `db_path: None` (no user data folder) still ranks suggestions
    /// from context alone, but records nothing.
    pub fn spawn(links: CompanionLinks, db_path: Option<PathBuf>) -> Self {
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let thread = Background::spawn("melodist-companion", move || {
            State::new(links, db_path).run(&stopped)
        })
        .ok();
        Self {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Companion {
    fn drop(&mut self) {
        drop(self.stop.take());
        // A refit or a commit under way finishes alone (the session is still closed).
        if let Some(t) = self.thread.as_mut() {
            t.stop_within(TEARDOWN_WAIT);
        }
    }
}

struct State {
    links: CompanionLinks,
    library: PresetLibrary,
    db_path: Option<PathBuf>,
    recorder: Option<SessionRecorder>,
    sender: Option<RecorderSender>,
    /// The logging rules: what to record when (see [`SessionTracker`]).
    tracker: SessionTracker,
    /// The tracker's clock starts here.
    epoch: Instant,
    /// The preset in use (library index).
    preset: Option<u16>,
    playing: bool,
    /// The last preset the editor applied; in use while the parameter says "Manual".
    editor_preset: Option<u16>,
    idea: u32,
    last_rank: Option<Instant>,
    /// The recommender, fitted once from the database and then updated online with what
    /// this instance records (refitted only when the preset library changes).
    model: Option<Hybrid>,
    /// This instance's session number for online updates, and that session's context.
    model_session: i64,
    session_ctx: SessionContext,
}

impl State {
    fn new(links: CompanionLinks, db_path: Option<PathBuf>) -> Self {
        let (library, warnings) = match crate::presets::user_dir() {
            Ok(dir) => PresetLibrary::load(&dir),
            Err(err) => (
                PresetLibrary::factory(),
                vec![format!("no user preset folder: {err:#}")],
            ),
        };
        for w in warnings {
            nice_plug::nice_log!("melodist: {w}");
        }
        let recorder = db_path.clone().map(|path| {
            SessionRecorder::start(
                path,
                LOCAL_PRODUCER.to_string(),
                library.ids(),
                RECORDER_CAPACITY,
            )
        });
        let sender = recorder.as_ref().map(SessionRecorder::sender);
        let idea = links.params.idea.load(Ordering::Relaxed);
        Self {
            links,
            library,
            db_path,
            recorder,
            sender,
            tracker: SessionTracker::default(),
            epoch: Instant::now(),
            preset: None,
            playing: false,
            editor_preset: None,
            idea,
            last_rank: None,
            model: None,
            // Far from database row ids, so online sessions never merge with stored ones.
            model_session: i64::MAX / 2,
            session_ctx: SessionContext::default(),
        }
    }

    fn run(mut self, stopped: &Receiver<()>) {
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
            let changed = self.tick();
            if changed || self.last_rank.is_none_or(|t| t.elapsed() >= RERANK_EVERY) {
                self.rerank();
            }
        }
        let mut out = Vec::new();
        self.tracker.finish(&mut out);
        self.record_all(out);
        if let Some(r) = self.recorder.take() {
            r.finish();
        }
    }

    fn record_all(&self, events: Vec<RecorderEvent>) {
        if let Some(s) = &self.sender {
            for event in events {
                s.record(event);
            }
        }
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// One look at the plugin. Returns whether anything the ranking depends on changed.
    fn tick(&mut self) -> bool {
        let mut changed = false;
        let mut out = Vec::new();
        let (playing, tempo, meter, density, register) = {
            let mut view = self.links.view.lock().expect("engine view lock");
            view.update();
            let (density, register) = input_stats(&view);
            (
                view.playing,
                view.tempo as f32,
                view.meter,
                density,
                register,
            )
        };
        let param = self.links.params.preset.value();
        // The editor's actions first: an applied preset is in use from this look on.
        let mut feedback = Vec::new();
        while let Ok(action) = self.links.actions.try_recv() {
            match action {
                EditorAction::Like => feedback.push(EventKind::Liked),
                EditorAction::Dislike => feedback.push(EventKind::Disliked),
                EditorAction::Captured(_) => feedback.push(EventKind::Exported),
                EditorAction::ApplyPreset(id) => self.editor_preset = self.library.index_of(&id),
                // "New idea" is counted from the parameter; saving a preset is not feedback.
                EditorAction::NewIdea => {}
                EditorAction::SavePreset(_) => self.reload_library(),
            }
            changed = true;
        }
        let current = if param >= 1 {
            Some(param as u16 - 1)
        } else {
            self.editor_preset
        };
        changed |= current != self.preset || playing != self.playing;
        self.preset = current;
        self.playing = playing;
        let obs = Observation {
            playing,
            tempo,
            meter,
            key: Some(self.key()),
            input_density: density,
            input_register: register,
            preset: current,
        };
        self.tracker.observe(self.now(), &obs, &mut out);
        let idea = self.links.params.idea.load(Ordering::Relaxed);
        if idea != self.idea {
            self.idea = idea;
            self.tracker.action(EventKind::NewIdea, &mut out);
            changed = true;
        }
        for kind in feedback {
            self.tracker.action(kind, &mut out);
        }
        self.learn(&out);
        self.record_all(out);
        changed
    }

    /// Feeds what is being recorded to the fitted model (no database read, no refit).
    fn learn(&mut self, events: &[RecorderEvent]) {
        for &event in events {
            let (kind, preset, seconds) = match event {
                RecorderEvent::Start { tempo, meter, key } => {
                    self.model_session += 1;
                    self.session_ctx = SessionContext {
                        tempo,
                        meter,
                        key,
                        ..SessionContext::default()
                    };
                    continue;
                }
                RecorderEvent::Context {
                    input_density,
                    input_register,
                    key,
                    ..
                } => {
                    let c = &mut self.session_ctx;
                    c.key = c.key.or(key);
                    c.input_density = c.input_density.or(input_density);
                    c.input_register = c.input_register.or(input_register);
                    continue;
                }
                RecorderEvent::End => continue,
                RecorderEvent::PresetUsed { preset, seconds } => {
                    (EventKind::PresetUsed, preset, Some(seconds))
                }
                RecorderEvent::Feedback { kind, preset } => (kind, preset, None),
            };
            if let Some(model) = self.model.as_mut() {
                model.update(&Feedback {
                    producer: LOCAL_PRODUCER.to_string(),
                    session: self.model_session,
                    context: self.session_ctx,
                    preset,
                    kind,
                    seconds,
                    at_ms: 0,
                });
            }
        }
    }

    fn reload_library(&mut self) {
        if let Ok(dir) = crate::presets::user_dir() {
            // New user presets are appended, so existing indices stay valid for the log.
            self.library = PresetLibrary::load(&dir).0;
            self.model = None; // the catalogue changed: refit on the next ranking
        }
    }

    fn key(&self) -> crate::music::Key {
        self.links
            .worker
            .as_ref()
            .and_then(|w| w.detected_key())
            .unwrap_or_else(|| self.links.params.gen_settings().key)
    }

    /// Re-ranks the presets for the current context and publishes the top ones.
    fn rerank(&mut self) {
        self.last_rank = Some(Instant::now());
        if self.model.is_none() {
            // The stored compact history, brought up to date with what changed since
            // (recommend::cache), rather than a read of the whole database.
            let catalogue = Catalogue::from_library(&self.library);
            let data = self
                .db_path
                .as_ref()
                .and_then(|p| SessionDb::open(p).ok())
                .and_then(|db| load_dataset(&db, catalogue.clone()).ok())
                .map_or_else(|| Dataset::new(&Default::default(), catalogue), |(d, _)| d);
            let mut hybrid = Hybrid::new(HybridWeights::TUNED);
            hybrid.fit(&data);
            self.model = Some(hybrid);
        }
        let (tempo, meter, density, register) = {
            let view = self.links.view.lock().expect("engine view lock");
            let (density, register) = input_stats(&view);
            (view.tempo as f32, view.meter, density, register)
        };
        let Some(hybrid) = self.model.as_ref() else {
            return;
        };
        let session = self.preset.map(|p| vec![(p, 0.0)]).unwrap_or_default();
        let ctx = Context {
            producer: LOCAL_PRODUCER.to_string(),
            tempo: Some(tempo),
            meter: Some(meter),
            key: Some(self.key()),
            input_density: density,
            input_register: register,
            session,
        };
        let suggestions = hybrid
            .recommend(&ctx, SUGGESTIONS)
            .into_iter()
            .map(|r| Suggestion {
                name: self
                    .library
                    .get(&r.preset_id)
                    .map_or_else(|| r.preset_id.clone(), |p| p.name.clone()),
                preset_id: r.preset_id,
                explanation: r.explanation,
            })
            .collect();
        *self.links.suggestions.lock().expect("suggestions lock") = suggestions;
    }
}

/// The producer's recent input: (notes per beat, mean MIDI pitch) over the last
/// [`INPUT_WINDOW_BEATS`], or `None`s when they played nothing.
fn input_stats(view: &EngineView) -> (Option<f32>, Option<f32>) {
    let recent: Vec<_> = view
        .played
        .iter()
        .filter(|n| n.input && n.start > view.playhead - INPUT_WINDOW_BEATS)
        .collect();
    if recent.is_empty() {
        return (None, None);
    }
    let density = recent.len() as f32 / INPUT_WINDOW_BEATS as f32;
    let register = recent.iter().map(|n| n.pitch as f32).sum::<f32>() / recent.len() as f32;
    (Some(density), Some(register))
}
