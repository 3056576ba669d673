//! The built plugin in a CLAP host (clack-host) that behaves like a real DAW: positions
//! rounded to the host's tick grid, a track running ahead by its latency, loops that wrap
//! inside a block, locate as stop → new position → start, jumps while rolling, parameters
//! changed while stopped, and tempos and sample rates across the usual range.
//!
//! Each test asserts what a producer hears: every written note plays where it was written
//! (once per pass), at ≥ 90% of its written length unless a stop, jump or loop end cuts it,
//! and a note cut that way ends exactly there. The sessions render offline so the plugin
//! waits for its worker and the comparison is exact.

mod common;

use clack_host::events::event_types::TransportEvent;
use common::{Session, looping_transport, transport};
use melodist::cli::generate::generate_notes;
use melodist::generator::GenSettings;
use melodist::generator::loader::ModelChoice;
use melodist::midi::file::MelodyNote as BeatNote;
use melodist::music::{Key, Meter, PitchClass, Scale};
use std::collections::HashMap;

/// A common host tick: positions are rounded to 1/1920 of a beat.
const TICK: f64 = 1.0 / 1920.0;

/// A continuous stretch of what the track played: samples `[first, end)` of the host's
/// steady clock, covering beats from `beat`.
#[derive(Debug, Clone, Copy)]
struct Span {
    first: u64,
    end: u64,
    beat: f64,
}

/// A note as the producer heard it.
#[derive(Debug, Clone, Copy)]
struct Heard {
    on: u64,
    off: Option<u64>,
    pitch: u8,
}

/// A DAW model driving one plugin instance. Positions are the track's (ahead of the
/// session by `latency` samples), optionally rounded to `tick`.
struct Daw {
    s: Session,
    tempo: f64,
    tick: Option<f64>,
    latency: usize,
    /// Loop range in beats, and whether the host reports it to the plugin.
    looping: Option<(f64, f64)>,
    report_loop: bool,
    /// The session position in beats (exact).
    pos: f64,
    clock: u64,
    spans: Vec<Span>,
    rolling: bool,
    heard: Vec<Heard>,
    open: HashMap<u8, usize>,
}

impl Daw {
    fn new(sample_rate: f64, tempo: f64, params: &[(&str, serde_json::Value)]) -> Self {
        let mut s = Session::offline_at(sample_rate, 2048);
        s.set_params(params);
        Self {
            s,
            tempo,
            tick: Some(TICK),
            latency: 0,
            looping: None,
            report_loop: true,
            pos: 0.0,
            clock: 0,
            spans: Vec::new(),
            rolling: false,
            heard: Vec::new(),
            open: HashMap::new(),
        }
    }

    fn bps(&self) -> f64 {
        self.tempo / 60.0 / self.s.sample_rate
    }

    /// The track's exact beat `samples` after the session position, wrapped into the loop.
    fn track_beat(&self, samples: f64) -> f64 {
        let beat = self.pos + samples * self.bps();
        match self.looping {
            Some((start, end)) if beat >= end => start + (beat - end) % (end - start),
            _ => beat,
        }
    }

    fn host_transport(&self, playing: bool) -> TransportEvent {
        let exact = self.track_beat(self.latency as f64);
        let reported = self.tick.map_or(exact, |t| (exact / t).round() * t);
        match self.looping {
            Some(range) if self.report_loop && playing => {
                looping_transport(reported, self.tempo, range)
            }
            _ => transport(reported, self.tempo, playing),
        }
    }

    /// One block. Records what sounded and the spans of continuous playback.
    fn block(&mut self, len: usize, playing: bool) {
        let t = self.host_transport(playing);
        let start_beat = self.track_beat(self.latency as f64);
        if playing && !self.rolling {
            self.spans.push(Span {
                first: self.clock,
                end: self.clock,
                beat: start_beat,
            });
        }
        self.rolling = playing;
        for e in self.s.block_len(Some(t), &[], len) {
            let at = self.clock + e.timing as u64;
            if e.on {
                self.open.insert(e.key, self.heard.len());
                self.heard.push(Heard {
                    on: at,
                    off: None,
                    pitch: e.key,
                });
            } else if let Some(i) = self.open.remove(&e.key) {
                self.heard[i].off = Some(at);
            }
        }
        if playing {
            // A loop wrap inside this block starts a new span at the wrap sample. The plugin
            // can only place it from the reported (rounded) position, so that is the truth.
            if let Some((ls, le)) = self.looping {
                let beat0 = t.song_pos_beats.to_float();
                if beat0 < le {
                    let wrap = ((le - beat0) / self.bps() - 1e-6).ceil() as u64;
                    if wrap < len as u64 {
                        self.spans.last_mut().unwrap().end = self.clock + wrap;
                        self.spans.push(Span {
                            first: self.clock + wrap,
                            end: self.clock + wrap,
                            beat: ls,
                        });
                    }
                }
            }
            self.spans.last_mut().unwrap().end = self.clock + len as u64;
            self.pos += len as f64 * self.bps();
            if let Some((ls, le)) = self.looping
                && self.pos >= le
            {
                self.pos = ls + (self.pos - le);
            }
        }
        self.clock += len as u64;
    }

    fn play(&mut self, blocks: usize, len: usize) {
        for _ in 0..blocks {
            self.block(len, true);
        }
    }

    fn play_beats(&mut self, beats: f64, len: usize) {
        let blocks = (beats / (len as f64 * self.bps())).ceil() as usize;
        self.play(blocks, len);
    }

    /// Stop: a few stopped blocks, as hosts keep calling `process()`.
    fn stop(&mut self, len: usize) {
        for _ in 0..4 {
            self.block(len, false);
        }
        assert!(self.s.sounding.is_empty(), "stuck notes after stop");
    }

    /// Locate while stopped: the host reports the new position in stopped blocks.
    fn locate(&mut self, beat: f64, len: usize) {
        self.pos = beat;
        for _ in 0..4 {
            self.block(len, false);
        }
    }

    /// Checks what was heard against the written notes: in every span, each note written
    /// there plays once, on its beat (within the host's rounding and a sample), for ≥ 90% of
    /// its length, or until the span ends if the span cuts it. A note under way where a span
    /// starts may be chased: started on the span's first sample.
    fn assert_heard(&self, written: &[BeatNote]) {
        let bps = self.bps();
        let tol = self.tick.unwrap_or(0.0) + 2.0 * bps;
        let mut total = 0;
        for (k, span) in self.spans.iter().enumerate() {
            let span_end_beat = span.beat + (span.end - span.first) as f64 * bps;
            let beat_of = |sample: u64| span.beat + (sample - span.first) as f64 * bps;
            let heard: Vec<&Heard> = self
                .heard
                .iter()
                .filter(|h| (span.first..span.end).contains(&h.on))
                .collect();
            let expected: Vec<&BeatNote> = written
                .iter()
                .filter(|n| n.start >= span.beat - tol && n.start < span_end_beat - tol)
                .collect();
            let (chased, on_time): (Vec<&Heard>, Vec<&Heard>) = heard.iter().partition(|h| {
                h.on == span.first
                    && !expected
                        .iter()
                        .any(|n| n.pitch == h.pitch && (n.start - span.beat).abs() <= tol)
            });
            for h in &chased {
                assert!(
                    written.iter().any(|n| n.pitch == h.pitch
                        && n.start < span.beat
                        && n.start + n.duration > span.beat),
                    "span {k}: note {} at the span start is not under way there",
                    h.pitch
                );
            }
            assert_eq!(
                on_time.len(),
                expected.len(),
                "span {k} ({span:?}): heard {:?}\nwritten {:?}",
                on_time
                    .iter()
                    .map(|h| (beat_of(h.on), h.pitch))
                    .collect::<Vec<_>>(),
                expected
                    .iter()
                    .map(|n| (n.start, n.pitch))
                    .collect::<Vec<_>>()
            );
            for (h, n) in on_time.iter().zip(&expected) {
                let at = beat_of(h.on);
                assert_eq!(h.pitch, n.pitch, "span {k}: note at {at}");
                assert!(
                    (at - n.start).abs() <= tol,
                    "span {k}: note {} written at {} heard at {at}",
                    n.pitch,
                    n.start
                );
                let Some(off) = h.off else {
                    continue; // still sounding when the test ended
                };
                let heard_len = (off - h.on) as f64 * bps;
                if n.start + n.duration < span_end_beat - tol {
                    assert!(
                        heard_len >= 0.9 * n.duration,
                        "span {k}: note {} at {} lasted {heard_len:.3} of {:.3} beats",
                        n.pitch,
                        n.start,
                        n.duration
                    );
                } else {
                    // Cut by the span's end (stop, jump, loop end): it ends right there.
                    assert!(
                        off.abs_diff(span.end) as f64 <= (tol / bps).ceil(),
                        "span {k}: note {} at {} should end at the span end {}, ended at {off}",
                        n.pitch,
                        n.start,
                        span.end
                    );
                }
            }
            total += expected.len();
        }
        assert!(total > 0, "nothing was written for the spans played");
    }
}

fn a_minor(seed: i32) -> (GenSettings, Vec<(&'static str, serde_json::Value)>) {
    let settings = GenSettings {
        key: Key::new(PitchClass::A, Scale::Minor),
        low: 57,
        high: 81,
        seed: seed as u64,
        ..Default::default()
    };
    let params = vec![
        ("seed", serde_json::json!({"i32": seed})),
        ("root", serde_json::json!({"i32": 9})),
        ("scale", serde_json::json!({"i32": 1})),
        ("low", serde_json::json!({"i32": 57})),
        ("high", serde_json::json!({"i32": 81})),
    ];
    (settings, params)
}

/// The notes the plugin's generator writes for these settings (what the CLI writes).
fn written(settings: GenSettings, bars: usize) -> Vec<BeatNote> {
    generate_notes(&ModelChoice::Default, settings, Meter::new(4, 4), bars).0
}

#[test]
fn rounded_positions_keep_notes_full_length_at_120_bpm() {
    let (settings, params) = a_minor(7);
    let mut daw = Daw::new(48_000.0, 120.0, &params);
    daw.locate(0.0, 512);
    daw.play_beats(24.0, 512);
    daw.stop(512);
    let heard = daw.heard.len();
    assert!(heard > 16, "only {heard} notes");
    daw.assert_heard(&written(settings, 8));
}

#[test]
fn first_note_after_play_is_kept_with_a_latency_offset() {
    let (settings, params) = a_minor(21);
    let mut daw = Daw::new(48_000.0, 120.0, &params);
    daw.latency = 272;
    daw.locate(0.0, 512);
    daw.play_beats(10.0, 512);
    daw.stop(512);
    let notes = written(settings, 4);
    let first = daw.heard.first().expect("something played");
    assert_eq!(first.pitch, notes[0].pitch);
    daw.assert_heard(&notes);
}

#[test]
fn tempos_60_to_200_at_44_1_48_and_96_khz() {
    let (settings, params) = a_minor(3);
    let notes = written(settings, 4);
    for (tempo, sample_rate, len) in [
        (60.0, 44_100.0, 512),
        (87.0, 48_000.0, 256),
        (140.0, 96_000.0, 1024),
        (174.0, 44_100.0, 441),
        (200.0, 48_000.0, 128),
    ] {
        let mut daw = Daw::new(sample_rate, tempo, &params);
        daw.locate(0.0, len);
        daw.play_beats(12.0, len);
        daw.stop(len);
        daw.assert_heard(&notes);
    }
}

#[test]
fn loop_wrapping_inside_a_block_plays_every_downbeat() {
    let (settings, params) = a_minor(11);
    let mut daw = Daw::new(48_000.0, 120.0, &params);
    // Bars 1-2 looped; the track runs 272 samples ahead, so the wrap falls mid-block.
    daw.looping = Some((4.0, 12.0));
    daw.latency = 272;
    daw.locate(4.0, 512);
    daw.play_beats(8.0 * 4.0, 512);
    daw.stop(512);
    assert!(daw.spans.len() >= 4, "spans {:?}", daw.spans);
    let notes = written(settings, 4);
    let downbeat = notes.iter().find(|n| n.start >= 4.0).unwrap();
    assert_eq!(downbeat.start, 4.0, "the loop starts with a note");
    daw.assert_heard(&notes);
}

#[test]
fn loop_without_a_reported_range_still_plays_the_loop() {
    let (settings, params) = a_minor(12);
    let mut daw = Daw::new(48_000.0, 120.0, &params);
    daw.looping = Some((0.0, 8.0));
    daw.report_loop = false;
    daw.locate(0.0, 512);
    daw.play_beats(24.0, 512);
    daw.stop(512);
    // Without the range the plugin sees a jump back each pass: the new pass plays from the
    // next block, so only the span bookkeeping differs; every note after it must play.
    let notes = written(settings, 2);
    let passes = daw
        .heard
        .iter()
        .filter(|h| h.pitch == notes[0].pitch)
        .count();
    assert!(passes >= 3, "the loop's first note played {passes} times");
}

#[test]
fn locate_is_stop_then_new_position_then_start() {
    let (settings, params) = a_minor(5);
    let mut daw = Daw::new(48_000.0, 120.0, &params);
    daw.locate(0.0, 512);
    daw.play_beats(10.0, 512);
    daw.stop(512);
    // Back to the start: the bars already heard play again.
    daw.locate(0.0, 512);
    daw.play_beats(10.0, 512);
    daw.stop(512);
    // Forward into the middle of a bar.
    daw.locate(13.5, 512);
    daw.play_beats(6.0, 512);
    daw.stop(512);
    assert_eq!(daw.spans.len(), 3);
    daw.assert_heard(&written(settings, 6));
}

#[test]
fn jump_back_while_rolling_replays_the_bars() {
    let (settings, params) = a_minor(8);
    let mut daw = Daw::new(48_000.0, 120.0, &params);
    daw.locate(0.0, 512);
    daw.play_beats(10.0, 512);
    // The host jumps without stopping (a marker, a click in the ruler).
    daw.pos = 2.0;
    daw.rolling = false; // a new span starts here
    daw.play_beats(10.0, 512);
    daw.pos = 9.25;
    daw.rolling = false;
    daw.play_beats(6.0, 512);
    daw.stop(512);
    assert_eq!(daw.spans.len(), 3);
    daw.assert_heard(&written(settings, 5));
}

#[test]
fn key_changed_while_stopped_applies_to_the_first_bar_played() {
    let (settings, mut params) = a_minor(4);
    let mut daw = Daw::new(48_000.0, 120.0, &params);
    daw.locate(4.0, 512);
    daw.play_beats(6.0, 512);
    daw.stop(512);
    // While stopped: F# major pentatonic, then play from the bar that just played.
    let pentatonic = Scale::MajorPentatonic;
    params.push(("root", serde_json::json!({"i32": 6})));
    params.push((
        "scale",
        serde_json::json!({"i32": nice_plug::prelude::Enum::to_index(pentatonic) as i32}),
    ));
    daw.s.set_params(&params);
    daw.heard.clear();
    daw.spans.clear();
    daw.locate(4.0, 512);
    daw.play_beats(8.0, 512);
    daw.stop(512);
    let key = Key::new(PitchClass::Fs, pentatonic);
    assert!(daw.heard.len() > 4);
    for h in &daw.heard {
        assert!(key.contains(h.pitch), "{} is not in {key:?}", h.pitch);
    }
    let changed = GenSettings { key, ..settings };
    daw.assert_heard(&written(changed, 4));
}

#[test]
fn loop_mode_repeats_the_hook_note_for_note() {
    let (_, mut params) = a_minor(9);
    params.push(("looplen", serde_json::json!({"i32": 2}))); // "2 bars"
    let mut daw = Daw::new(48_000.0, 120.0, &params);
    daw.locate(0.0, 512);
    daw.play_beats(32.0, 512);
    daw.stop(512);
    let bps = daw.bps();
    let span = daw.spans[0];
    // Every pass of the 2-bar loop (8 beats) plays what the first did, on the same beats.
    let mut passes: Vec<Vec<(i64, u8)>> = vec![Vec::new(); 4];
    for h in &daw.heard {
        let beat = span.beat + (h.on - span.first) as f64 * bps;
        let pass = (beat / 8.0).floor() as usize;
        let at = ((beat - pass as f64 * 8.0) / TICK).round() as i64;
        if pass < 4 {
            passes[pass].push((at, h.pitch));
        }
    }
    assert!(
        passes[0].len() > 4,
        "the hook has {} notes",
        passes[0].len()
    );
    for (k, pass) in passes.iter().enumerate().skip(1) {
        assert_eq!(pass, &passes[0], "pass {k} differs from the hook");
    }
}

/// Hook slots are saved with the project: a project whose slot A holds a captured hook
/// plays it note for note in loop mode; Morph 1 plays slot B; Morph 0.5 plays the VAE's
/// blend of the two, exactly what `melodist generate --hook-a --hook-b --morph` writes.
#[test]
fn hook_slots_saved_with_the_project_play_and_morph() {
    use melodist::cli::generate::generate_looped;
    use melodist::generator::hooks::{Hook, HookBank, HookSlots, Slot, Variations};
    use melodist::generator::loader;
    use melodist::generator::looping::LoopPlayer;
    let meter = Meter::new(4, 4);
    let line = |pitches: &[u8], step: f64| -> Hook {
        let notes: Vec<BeatNote> = (pitches.iter().enumerate())
            .map(|(i, &pitch)| BeatNote {
                start: i as f64 * step,
                duration: step * 0.8,
                pitch,
                velocity: 100,
            })
            .collect();
        Hook::from_notes(&notes, meter, 2)
    };
    let slots = HookSlots {
        a: Some(line(&[69, 72, 76, 74, 72, 71, 69, 64], 1.0)),
        b: Some(line(
            &[
                76, 74, 72, 71, 69, 71, 72, 74, 76, 79, 77, 76, 74, 72, 71, 69,
            ],
            0.5,
        )),
    };
    let (settings, mut params) = a_minor(9);
    params.push(("looplen", serde_json::json!({"i32": 2}))); // "2 bars"
    let mut heard_by_morph = Vec::new();
    for morph in [0.0f32, 1.0, 0.5] {
        let mut p = params.clone();
        p.push(("morph", serde_json::json!({"f32": morph})));
        let mut daw = Daw::new(48_000.0, 120.0, &p);
        daw.s
            .set_fields(&[("hooks", serde_json::to_string(&slots).unwrap())]);
        daw.locate(0.0, 512);
        daw.play_beats(16.0, 512);
        daw.stop(512);
        // What the command line writes for the same settings and slots.
        let s = GenSettings {
            loop_bars: 2,
            morph,
            ..settings
        };
        let bank = HookBank::default();
        bank.set(Slot::A, slots.a.clone());
        bank.set(Slot::B, slots.b.clone());
        let mut looper = LoopPlayer::new(Variations::load(), bank);
        let mut g = loader::load_strict(&ModelChoice::Default).unwrap();
        let want = generate_looped(g.as_mut(), s, meter, 4, &[], &mut looper);
        daw.assert_heard(&want);
        let pitches: Vec<u8> = want
            .iter()
            .filter(|n| n.start < 8.0)
            .map(|n| n.pitch)
            .collect();
        heard_by_morph.push(pitches);
    }
    // Morph 0 is hook A as captured, Morph 1 hook B, and half-way neither.
    let notes_of = |h: &Option<Hook>| -> Vec<u8> {
        h.as_ref()
            .unwrap()
            .bars
            .iter()
            .flatten()
            .map(|n| n.pitch)
            .collect()
    };
    assert_eq!(heard_by_morph[0], notes_of(&slots.a));
    assert_eq!(heard_by_morph[1], notes_of(&slots.b));
    assert_ne!(heard_by_morph[2], heard_by_morph[0]);
    assert_ne!(heard_by_morph[2], heard_by_morph[1]);
    let key = settings.key;
    assert!(
        heard_by_morph[2]
            .iter()
            .all(|&p| key.contains(p) && (57..=81).contains(&p))
    );
}
