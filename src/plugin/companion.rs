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
use crate::recommend::{Catalogue, Context, Dataset, Hybrid, HybridWeights, Recommender};
use crate::sessions::recorder::{RecorderEvent, RecorderSender, SessionRecorder};
use crate::sessions::{EventKind, LOCAL_PRODUCER, SessionDb};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the companion looks at the plugin's state.
const TICK: Duration = Duration::from_millis(100);
/// How often suggestions are re-ranked when nothing happened.
const RERANK_EVERY: Duration = Duration::from_secs(10);
/// A preset switched away from within this time counts as abandoned.
const QUICK_ABANDON_SECS: f32 = 10.0;
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
    playing: bool,
    /// The preset in use (library index) and since when.
    preset: Option<(u16, Instant)>,
    /// The last preset the editor applied; in use while the parameter says "Manual".
    editor_preset: Option<u16>,
    idea: u32,
    last_rank: Option<Instant>,
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
            playing: false,
            preset: None,
            editor_preset: None,
            idea,
            last_rank: None,
        }
    }

    fn run(mut self, stopped: &Receiver<()>) {
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
            let changed = self.tick();
            if changed || self.last_rank.is_none_or(|t| t.elapsed() >= RERANK_EVERY) {
                self.rerank();
            }
        }
        self.close_preset();
        self.record(RecorderEvent::End);
        if let Some(r) = self.recorder.take() {
            r.finish();
        }
    }

    fn record(&self, event: RecorderEvent) {
        if let Some(s) = &self.sender {
            s.record(event);
        }
    }

    /// One look at the plugin. Returns whether anything the ranking depends on changed.
    fn tick(&mut self) -> bool {
        let mut changed = false;
        let (playing, tempo, meter) = {
            let mut view = self.links.view.lock().expect("engine view lock");
            view.update();
            (view.playing, view.tempo as f32, view.meter)
        };
        if playing != self.playing {
            self.playing = playing;
            if playing {
                let key = Some(self.key());
                self.record(RecorderEvent::Start { tempo, meter, key });
                // A fresh session starts with the preset already in use.
                if let Some((p, _)) = self.preset {
                    self.preset = Some((p, Instant::now()));
                }
            } else {
                self.close_preset();
                self.record(RecorderEvent::End);
            }
            changed = true;
        }

        let param = self.links.params.preset.value();
        let current = if param >= 1 {
            Some(param as u16 - 1)
        } else {
            self.editor_preset
        };
        if current != self.preset.map(|(p, _)| p) {
            self.close_preset();
            self.preset = current.map(|p| (p, Instant::now()));
            changed = true;
        }

        let idea = self.links.params.idea.load(Ordering::Relaxed);
        if idea != self.idea {
            self.idea = idea;
            self.feedback(EventKind::NewIdea);
            changed = true;
        }

        while let Ok(action) = self.links.actions.try_recv() {
            match action {
                EditorAction::Like => self.feedback(EventKind::Liked),
                EditorAction::Dislike => self.feedback(EventKind::Disliked),
                EditorAction::Captured(_) => self.feedback(EventKind::Exported),
                EditorAction::ApplyPreset(id) => {
                    self.editor_preset = self.library.index_of(&id);
                    if param >= 1 {
                        continue; // the parameter still rules until set back to Manual
                    }
                    self.close_preset();
                    self.preset = self.editor_preset.map(|p| (p, Instant::now()));
                }
                // "New idea" is counted from the parameter; saving a preset is not feedback.
                EditorAction::NewIdea => {}
                EditorAction::SavePreset(_) => self.reload_library(),
            }
            changed = true;
        }
        changed
    }

    /// Logs how long the current preset was used, and a quick abandon.
    fn close_preset(&mut self) {
        if let Some((preset, since)) = self.preset.take() {
            let seconds = since.elapsed().as_secs_f32();
            self.record(RecorderEvent::PresetUsed { preset, seconds });
            if seconds < QUICK_ABANDON_SECS {
                self.record(RecorderEvent::Feedback {
                    kind: EventKind::AbandonedQuickly,
                    preset,
                });
            }
        }
    }

    fn feedback(&self, kind: EventKind) {
        if let Some((preset, _)) = self.preset {
            self.record(RecorderEvent::Feedback { kind, preset });
        }
    }

    fn reload_library(&mut self) {
        if let Ok(dir) = crate::presets::user_dir() {
            // New user presets are appended, so existing indices stay valid for the log.
            self.library = PresetLibrary::load(&dir).0;
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
        let log = self
            .db_path
            .as_ref()
            .and_then(|p| SessionDb::open(p).ok())
            .and_then(|db| db.load_log().ok())
            .unwrap_or_default();
        let (tempo, meter, density, register) = {
            let view = self.links.view.lock().expect("engine view lock");
            let recent: Vec<_> = view
                .played
                .iter()
                .filter(|n| n.input && n.start > view.playhead - 32.0)
                .collect();
            let density = (!recent.is_empty()).then(|| recent.len() as f32 / 32.0);
            let register = (!recent.is_empty())
                .then(|| recent.iter().map(|n| n.pitch as f32).sum::<f32>() / recent.len() as f32);
            (view.tempo as f32, view.meter, density, register)
        };
        let catalogue = Catalogue::from_library(&self.library);
        let mut hybrid = Hybrid::new(HybridWeights::TUNED);
        hybrid.fit(&Dataset::new(&log, catalogue));
        let session = self.preset.map(|(p, _)| vec![(p, 0.0)]).unwrap_or_default();
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
