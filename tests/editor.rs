//! The editor, driven headlessly with egui_kittest: widgets are found by their labels and
//! clicked like a producer would, then the parameter changes and session events are checked.
//! The render test draws through wgpu on Mesa's software rasteriser (no GPU needed).

use crossbeam_channel::Sender;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use melodist::editor::{
    EditorAction, EditorLink, EditorState, ParamAccess, RecordingAccess, Suggestion, draw, roll,
};
use melodist::engine::{BarNotes, EngineView, MonitorEvent, monitor};
use melodist::music::{BeatNote, Meter, PitchClass};
use melodist::plugin::MelodistParams;
use nice_plug::prelude::*;
use std::sync::{Arc, Mutex};

struct Fixture {
    params: Arc<MelodistParams>,
    access: RecordingAccess,
    link: EditorLink,
    monitor: Sender<MonitorEvent>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> (Fixture, EditorState) {
        let params = Arc::new(MelodistParams::default());
        let (monitor, rx) = monitor::channel();
        let view = Arc::new(Mutex::new(EngineView::new(rx)));
        let access = RecordingAccess::default();
        let link = EditorLink::default();
        let dir = tempfile::tempdir().unwrap();
        let mut state = EditorState::new(
            params.clone(),
            view,
            &link,
            Box::new(access.clone()),
            dir.path().join("presets"),
        );
        state.capture_dir = dir.path().join("captures").display().to_string();
        (
            Fixture {
                params,
                access,
                link,
                monitor,
                dir,
            },
            state,
        )
    }

    fn actions(&self) -> Vec<EditorAction> {
        self.link.actions.try_iter().collect()
    }

    /// The last value the editor set for the parameter with this display name.
    fn last_set(&self, name: &str) -> Option<f32> {
        self.access
            .changes()
            .iter()
            .rev()
            .find(|c| c.name == name)
            .map(|c| c.normalized)
    }

    /// Plays a few bars: generated notes, the producer's notes, and an upcoming bar.
    fn play_some_notes(&self) {
        let mut events = Vec::new();
        for (i, pitch) in [60u8, 62, 64, 65, 67, 69, 71, 72].iter().enumerate() {
            let beat = i as f64;
            events.push(note(beat, *pitch, true, false));
            events.push(note(beat + 0.75, *pitch, false, false));
        }
        events.push(note(4.5, 55, true, true));
        events.push(note(6.0, 55, false, true));
        let upcoming: Vec<_> = [74u8, 72, 71, 69]
            .iter()
            .enumerate()
            .map(|(i, &pitch)| BeatNote {
                start: i as f64,
                duration: 0.5,
                pitch,
                velocity: 90,
            })
            .collect();
        let notes = BarNotes::from_slice(&upcoming);
        events.push(MonitorEvent::Bar {
            bar_index: 2,
            start_beat: 8.0,
            notes,
        });
        events.push(MonitorEvent::Playhead {
            beat: 8.0,
            tempo: 100.0,
            playing: true,
            meter: Meter::new(4, 4),
        });
        for e in events {
            self.monitor.send(e).unwrap();
        }
    }
}

/// A note starting (`on`) or ending at `beat`; `input` marks the producer's own notes.
fn note(beat: f64, pitch: u8, on: bool, input: bool) -> MonitorEvent {
    MonitorEvent::Note {
        beat,
        pitch,
        velocity: 100,
        on,
        input,
    }
}

fn harness(state: EditorState) -> Harness<'static, EditorState> {
    Harness::builder()
        .with_size(egui::vec2(900.0, 560.0))
        .build_ui_state(|ui, state: &mut EditorState| draw(ui, state), state)
}

#[test]
fn like_dislike_and_new_idea_reach_the_session_log() {
    let (fx, state) = Fixture::new();
    let mut h = harness(state);
    h.get_by_label("Like").click();
    h.run();
    h.get_by_label("Dislike").click();
    h.run();
    assert_eq!(
        fx.actions(),
        vec![EditorAction::Like, EditorAction::Dislike]
    );

    h.get_by_label("New idea").click();
    h.step();
    assert_eq!(fx.actions(), vec![EditorAction::NewIdea]);
    assert_eq!(
        fx.last_set("New idea"),
        Some(1.0),
        "the trigger is switched on"
    );
    assert!(fx.params.new_idea.value());
    // Held long enough for the audio thread to see the edge, then released.
    h.run_steps(2);
    assert_eq!(fx.last_set("New idea"), Some(0.0));
    assert!(!fx.params.new_idea.value());
}

#[test]
fn key_buttons_and_scale_menu_change_the_parameters() {
    let (fx, state) = Fixture::new();
    let mut h = harness(state);
    assert_eq!(fx.params.root.value(), PitchClass::C);
    h.get_by_label("A").click();
    h.run();
    assert_eq!(fx.params.root.value(), PitchClass::A);
    assert!(fx.last_set("Key").is_some());

    h.get_by_label("Scale").click();
    h.run();
    h.get_by_label("Dorian").click();
    h.run();
    assert_eq!(fx.params.scale.value(), melodist::music::Scale::Dorian);
}

#[test]
fn a_suggested_preset_applies_with_one_click() {
    let (fx, state) = Fixture::new();
    *fx.link.suggestions.lock().unwrap() = vec![Suggestion {
        preset_id: "reel-drive".into(),
        name: "Reel Drive".into(),
        explanation: "you kept phrases with Reel Drive in 4 sessions at 118-126 BPM".into(),
    }];
    // A host-side style preset was chosen before.
    let lament = fx.params.preset.preview_normalized(3);
    fx.access
        .clone()
        .set_once(fx.params.preset.as_ptr(), lament);
    let mut h = harness(state);
    h.get_by_label_contains("you kept phrases with Reel Drive");
    // The suggestion is listed first; the library lists the same name further down.
    h.get_all_by_label("Reel Drive").next().unwrap().click();
    h.run();
    assert_eq!(
        fx.actions(),
        vec![EditorAction::ApplyPreset("reel-drive".into())]
    );
    // The preset's own values (see src/presets/factory/reel-drive.json).
    assert_eq!(fx.params.scale.value(), melodist::music::Scale::Dorian);
    assert_eq!((fx.params.low.value(), fx.params.high.value()), (62, 88));
    assert!((fx.params.density.value() - 0.85).abs() < 1e-6);
    assert_eq!(
        fx.params.root.value(),
        PitchClass::C,
        "the tonic stays the producer's"
    );
    assert_eq!(
        fx.params.preset.value(),
        0,
        "the host's selector goes back to Manual"
    );
}

#[test]
fn search_filters_and_save_adds_a_user_preset() {
    let (fx, state) = Fixture::new();
    let mut h = harness(state);
    h.get_by_label("Search").focus();
    h.run();
    h.get_by_label("Search").type_text("trap");
    h.run();
    assert!(h.query_by_label("Trap Bell").is_some());
    assert!(h.query_by_label("Reel Drive").is_none(), "filtered out");

    h.get_by_label("Name").focus();
    h.run();
    h.get_by_label("Name").type_text("Night Drive");
    h.run();
    h.get_by_label("Save preset").click();
    h.run();
    assert_eq!(
        fx.actions(),
        vec![EditorAction::SavePreset("night-drive".into())]
    );
    assert!(fx.dir.path().join("presets/night-drive.json").exists());
    assert!(h.state().library.get("night-drive").is_some());
}

#[test]
fn capture_writes_what_played_and_the_input_separately() {
    let (fx, state) = Fixture::new();
    fx.play_some_notes();
    let mut h = harness(state);
    h.get_by_label("Capture").click();
    h.run();
    let actions = fx.actions();
    let [EditorAction::Captured(captured)] = actions.as_slice() else {
        panic!("expected one capture, got {actions:?}");
    };
    assert!(
        h.state()
            .message
            .contains(&captured.melody.display().to_string()),
        "path shown"
    );

    let melody = melodist::midi::read_melody(&captured.melody).unwrap();
    let got: Vec<_> = melody
        .notes
        .iter()
        .map(|n| (n.start, n.duration, n.pitch, n.velocity))
        .collect();
    let want: Vec<_> = [60u8, 62, 64, 65, 67, 69, 71, 72]
        .iter()
        .enumerate()
        .map(|(i, p)| (i as f64, 0.75, *p, 100))
        .collect();
    assert_eq!(got, want);
    assert_eq!(melody.meter, Meter::new(4, 4));

    let input =
        melodist::midi::read_melody(captured.input.as_ref().expect("input was played")).unwrap();
    let got: Vec<_> = input
        .notes
        .iter()
        .map(|n| (n.start, n.duration, n.pitch))
        .collect();
    assert_eq!(got, vec![(4.5, 1.5, 55)]);
}

#[test]
fn capture_with_nothing_played_says_so() {
    let (fx, state) = Fixture::new();
    let mut h = harness(state);
    h.get_by_label("Capture").click();
    h.run();
    assert!(fx.actions().is_empty());
    assert!(
        h.state().message.starts_with("Nothing captured"),
        "{}",
        h.state().message
    );
}

#[test]
fn status_line_shows_the_fallback_reason_and_late_bars() {
    let (fx, state) = Fixture::new();
    let status = Arc::new(melodist::engine::WorkerStatus::default());
    *status.generator.lock().unwrap() = "markov".into();
    *status.fallback_reason.lock().unwrap() = Some("models/neural missing".into());
    status
        .last_phrase_us
        .store(2500, std::sync::atomic::Ordering::Relaxed);
    fx.link.set_worker_status(Some(status));
    fx.link
        .late_bars
        .store(3, std::sync::atomic::Ordering::Relaxed);
    let h = harness(state);
    h.get_by_label_contains(
        "Model: markov (fallback: models/neural missing) | phrase 2.5 ms | late bars: 3",
    );
}

/// A session in A minor as the real generator plays it: 4 bars played (with the producer's
/// bass notes under bars 2-3), the playhead in bar 4, and bars 4-5 already generated.
fn play_a_generated_session(fx: &Fixture, access: &mut RecordingAccess) {
    use melodist::generator::{PhraseRequest, loader, render_phrase};
    let p = &fx.params;
    access.set_once(p.root.as_ptr(), p.root.preview_normalized(PitchClass::A));
    access.set_once(
        p.scale.as_ptr(),
        p.scale.preview_normalized(melodist::music::Scale::Minor),
    );
    let meter = Meter::new(4, 4);
    let request = PhraseRequest {
        settings: p.gen_settings(),
        meter,
        phrase_index: 0,
        bars: 4,
        context: &[],
        shape: Default::default(),
        chords: &[],
    };
    let mut generator = loader::embedded_markov();
    let mut bars = render_phrase(generator.as_mut(), &request);
    bars.extend(render_phrase(
        generator.as_mut(),
        &PhraseRequest {
            phrase_index: 1,
            ..request
        },
    ));
    let playhead = 18.0;
    let mut events = Vec::new();
    for (i, bar) in bars.iter().enumerate() {
        let start = i as f64 * 4.0;
        for n in bar.iter().filter(|n| start + n.start < playhead) {
            events.push(note(start + n.start, n.pitch, true, false));
            events.push(note(
                (start + n.start + n.duration).min(playhead),
                n.pitch,
                false,
                false,
            ));
        }
        if start + 4.0 > playhead {
            let notes = BarNotes::from_slice(bar);
            events.push(MonitorEvent::Bar {
                bar_index: i as i64,
                start_beat: start,
                notes,
            });
        }
    }
    for (beat, pitch) in [(8.0, 45u8), (10.0, 48), (12.0, 52), (14.0, 50), (16.0, 45)] {
        events.push(note(beat, pitch, true, true));
        events.push(note(beat + 1.5, pitch, false, true));
    }
    events.sort_by(|a, b| beat_of(a).total_cmp(&beat_of(b)));
    events.push(MonitorEvent::Playhead {
        beat: playhead,
        tempo: 112.0,
        playing: true,
        meter,
    });
    for e in events {
        fx.monitor.send(e).unwrap();
    }
    let status = Arc::new(melodist::engine::WorkerStatus::default());
    *status.generator.lock().unwrap() = generator.name().to_string();
    status
        .last_phrase_us
        .store(640, std::sync::atomic::Ordering::Relaxed);
    fx.link.set_worker_status(Some(status));
}

fn beat_of(e: &MonitorEvent) -> f64 {
    match e {
        MonitorEvent::Note { beat, .. } => *beat,
        MonitorEvent::Bar { start_beat, .. } => *start_beat,
        _ => f64::MAX,
    }
}

/// Renders through wgpu (Mesa's llvmpipe/lavapipe on a machine without a GPU) and checks the
/// piano roll's pixels. `MELODIST_SCREENSHOT=docs/editor.png` also writes the README's
/// screenshot; otherwise the image goes to the target folder for inspection.
#[test]
fn renders_the_piano_roll_to_pixels() {
    let (fx, mut state) = Fixture::new();
    state.capture_dir = "/home/producer/Music/Melodist".into();
    play_a_generated_session(&fx, &mut fx.access.clone());
    *fx.link.suggestions.lock().unwrap() = vec![
        Suggestion {
            preset_id: "lament".into(),
            name: "Lament".into(),
            explanation: "you kept phrases with Lament in 4 sessions at 104-118 BPM in A minor"
                .into(),
        },
        Suggestion {
            preset_id: "slow-air".into(),
            name: "Slow Air".into(),
            explanation: "fits 112 BPM, 4/4 and a minor key".into(),
        },
    ];
    let mut h = Harness::builder()
        .with_size(egui::vec2(900.0, 560.0))
        .wgpu()
        .build_ui_state(|ui, state: &mut EditorState| draw(ui, state), state);
    h.run();
    let image = h
        .render()
        .expect("software rendering works (Mesa installed?)");
    let out = std::env::var("MELODIST_SCREENSHOT")
        .unwrap_or_else(|_| format!("{}/editor.png", env!("CARGO_TARGET_TMPDIR")));
    image.save(&out).unwrap();

    let roll = h.get_by_label("Piano roll").rect();
    let scale = image.width() as f32 / 900.0;
    let mut colours = std::collections::HashSet::new();
    let (mut generated, mut input, mut playhead) = (0, 0, 0);
    let near = |p: [u8; 4], c: egui::Color32| {
        (0..3).all(|i| (p[i] as i32 - [c.r(), c.g(), c.b()][i] as i32).abs() <= 6)
    };
    for y in (roll.top() * scale) as u32..(roll.bottom() * scale) as u32 {
        for x in (roll.left() * scale) as u32..(roll.right() * scale) as u32 {
            let p = image.get_pixel(x, y).0;
            colours.insert(p);
            generated += near(p, roll::GENERATED) as usize;
            input += near(p, roll::INPUT) as usize;
            playhead += near(p, roll::PLAYHEAD) as usize;
        }
    }
    assert!(
        colours.len() > 8,
        "the roll is not blank: {} colours",
        colours.len()
    );
    assert!(generated > 100, "generated notes drawn: {generated} px");
    assert!(input > 20, "input notes drawn: {input} px");
    assert!(playhead > 20, "playhead drawn: {playhead} px");
}

#[test]
fn hooks_capture_into_a_slot_clear_and_vary() {
    let (fx, state) = Fixture::new();
    fx.play_some_notes();
    let mut h = harness(state);
    let before = fx.params.hooks.version();
    h.get_by_label("Capture A").click();
    h.run();
    let slots = fx.params.hooks.slots();
    let a = slots.a.expect("slot A holds the capture");
    assert!(slots.b.is_none());
    assert_ne!(
        fx.params.hooks.version(),
        before,
        "the plugin sees the change"
    );
    // Loop mode is off, so a 4-bar phrase: the two bars that played and two silent ones.
    // The producer's single note is not a hook: Melodist's own notes are taken.
    assert_eq!(a.bars.len(), 4);
    let pitches: Vec<u8> = a.bars.iter().flatten().map(|n| n.pitch).collect();
    assert_eq!(pitches, vec![60, 62, 64, 65, 67, 69, 71, 72]);
    assert_eq!(a.bars[1][0].start, 0.0, "bar-relative times");
    assert!(
        h.state().message.contains("8 notes"),
        "{}",
        h.state().message
    );

    h.get_by_label("Clear A").click();
    h.run();
    assert!(fx.params.hooks.slots().a.is_none());

    h.get_by_label("Vary").click();
    h.step();
    assert_eq!(fx.last_set("Vary"), Some(1.0), "the trigger is switched on");
    h.run_steps(2);
    assert_eq!(fx.last_set("Vary"), Some(0.0));
}

/// The *Model server* section: off by default; Apply hands the address and token to the
/// worker at once and saves them for this user (not in the project), and the worker's
/// report shows under it.
#[test]
fn the_model_server_setting_applies_to_the_worker_and_is_saved_for_this_user() {
    use melodist::generator::remote::ServerSetting;
    let (fx, mut state) = Fixture::new();
    let file = fx.dir.path().join("model-server.json");
    state.server_file = Some(file.clone());
    assert!(!state.server_draft.enabled);
    // A tall window: the section sits below the controls, where a producer scrolls to.
    let mut h = Harness::builder()
        .with_size(egui::vec2(900.0, 2000.0))
        .build_ui_state(|ui, state: &mut EditorState| draw(ui, state), state);
    h.get_by_label("Model server").click();
    h.run();
    h.get_by_label("Ask a model server first").click();
    h.run();
    h.get_by_label("Server URL").focus();
    h.run();
    h.get_by_label("Server URL").type_text("http://studio:8088");
    h.run();
    h.get_by_label("Token").focus();
    h.run();
    h.get_by_label("Token").type_text("s3cret");
    h.run();
    assert!(
        !fx.link.server.setting().enabled,
        "nothing changes before Apply"
    );
    h.get_by_label("Apply server").click();
    h.run();
    let applied = ServerSetting {
        enabled: true,
        url: "http://studio:8088".into(),
        token: "s3cret".into(),
    };
    assert_eq!(fx.link.server.setting(), applied);
    let saved: ServerSetting = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved, applied);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the token file is readable by others: {mode:o}"
        );
    }
    h.get_by_label_contains("Model server: asking http://studio:8088");
    assert!(
        !fx.params
            .serialize_fields()
            .values()
            .any(|v| v.contains("s3cret")),
        "the token is in the project"
    );
}
