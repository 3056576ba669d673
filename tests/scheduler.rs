//! Transport handling of the audio-thread scheduler, driven with a real worker and the
//! shipped Markov model. Every run checks the invariants a host relies on:
//! events in order and inside the block, no NoteOn on a sounding key, every NoteOn
//! eventually gets its NoteOff, and notes land within one sample of their beat.

use melodist::engine::scheduler::BlockControls;
use melodist::engine::{BlockTransport, OutKind, Quantize, Scheduler, Worker};
use melodist::generator::form::{FormPlayer, SongChords};
use melodist::generator::loader::embedded_markov;
use melodist::generator::{GenSettings, Generator, PhraseRequest};
use melodist::music::Meter;
use proptest::prelude::*;
use std::collections::HashMap;

/// A note-on as heard by the test host: absolute beat where it sounded, pitch.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Heard {
    beat: f64,
    pitch: u8,
}

struct Harness {
    _worker: Worker,
    sched: Scheduler,
    /// (channel, key) -> sounding since beat
    sounding: HashMap<(u8, u8), f64>,
    heard: Vec<Heard>,
    cc_all_off: usize,
}

impl Harness {
    fn new() -> Self {
        Self::with(Box::new(|| (embedded_markov(), None)))
    }

    fn with(loader: melodist::engine::worker::GeneratorLoader) -> Self {
        let worker = Worker::spawn(loader, Default::default());
        let sched = Scheduler::new(worker.link());
        Self {
            _worker: worker,
            sched,
            sounding: HashMap::new(),
            heard: Vec::new(),
            cc_all_off: 0,
        }
    }

    /// Runs one block and checks the per-block invariants.
    fn block(
        &mut self,
        t: &BlockTransport,
        c: &BlockControls,
        len: usize,
    ) -> Vec<melodist::engine::OutEvent> {
        let events = self.sched.process_block(t, c, len).to_vec();
        let tempo = t.tempo.unwrap_or(c.free_run_tempo);
        let bps = tempo / 60.0 / t.sample_rate;
        let mut last = 0;
        for e in &events {
            assert!(
                (e.timing as usize) < len,
                "event at {} outside block of {len}",
                e.timing
            );
            assert!(e.timing >= last, "events out of order: {events:?}");
            last = e.timing;
            match e.kind {
                OutKind::NoteOn { key, .. } => {
                    assert!(
                        self.sounding.insert((e.channel, key), 0.0).is_none(),
                        "NoteOn on sounding key {key}: {events:?}"
                    );
                    if let Some(p) = t.pos_beats {
                        self.heard.push(Heard {
                            beat: p + e.timing as f64 * bps,
                            pitch: key,
                        });
                    }
                }
                OutKind::NoteOff { key } => {
                    assert!(
                        self.sounding.remove(&(e.channel, key)).is_some(),
                        "NoteOff for silent key {key}"
                    );
                }
                OutKind::AllNotesOff => self.cc_all_off += 1,
            }
        }
        events
    }

    /// Plays `blocks` contiguous blocks from `start` beats; returns the beat after the last.
    fn play(
        &mut self,
        start: f64,
        blocks: usize,
        len: usize,
        tempo: f64,
        sr: f64,
        c: &BlockControls,
    ) -> f64 {
        let mut pos = start;
        for _ in 0..blocks {
            self.block(&BlockTransport::playing_at(pos, tempo, sr), c, len);
            pos += len as f64 * tempo / 60.0 / sr;
        }
        pos
    }

    fn stop(&mut self, pos: f64, c: &BlockControls) {
        let t = BlockTransport {
            playing: false,
            ..BlockTransport::playing_at(pos, 120.0, 48_000.0)
        };
        self.block(&t, c, 512);
        assert!(
            self.sounding.is_empty(),
            "notes left sounding after stop: {:?}",
            self.sounding
        );
        assert_eq!(self.sched.sounding_notes(), 0);
    }
}

fn offline(settings: GenSettings) -> BlockControls {
    BlockControls {
        settings,
        offline: true,
        ..BlockControls::default()
    }
}

/// The notes the generator intends for bars `first..last` (absolute beats, 4/4 unless given).
fn intended(settings: GenSettings, meter: Meter, bars: std::ops::Range<i64>) -> Vec<Heard> {
    intended_notes(settings, meter, bars)
        .into_iter()
        .map(|(beat, n)| Heard {
            beat,
            pitch: n.pitch,
        })
        .collect()
}

/// The generator's notes for bars `bars`, each with its absolute start beat.
fn intended_notes(
    settings: GenSettings,
    meter: Meter,
    bars: std::ops::Range<i64>,
) -> Vec<(f64, melodist::music::BeatNote)> {
    // The worker's path: the form plan, section by section.
    let mut g = embedded_markov();
    let mut form = FormPlayer::default();
    let mut out = Vec::new();
    for bar in bars {
        let start = bar as f64 * meter.beats_per_bar();
        for n in form.bar(g.as_mut(), settings, meter, bar, &[], &SongChords(&[]), 0) {
            out.push((start + n.start, n));
        }
    }
    out
}

/// Every intended note of bars `bars` (4/4) as (start beat, end beat, pitch).
fn intended_spans(settings: GenSettings, bars: std::ops::Range<i64>) -> Vec<(f64, f64, u8)> {
    intended_notes(settings, Meter::new(4, 4), bars)
        .into_iter()
        .map(|(beat, n)| (beat, beat + n.duration, n.pitch))
        .collect()
}

/// What playback from `start` to `end` must play: the notes starting in that span, plus a
/// note already under way at `start` with at least half of it (or a beat) still to come,
/// started at `start` (chasing, as DAWs do for MIDI clips).
fn expected_from(spans: &[(f64, f64, u8)], start: f64, end: f64, bps: f64) -> Vec<Heard> {
    let mut out: Vec<Heard> = spans
        .iter()
        .filter(|n| {
            n.0 < start - bps && n.1 - start > 1e-3 && n.1 - start >= ((n.1 - n.0) * 0.5).min(1.0)
        })
        .map(|n| Heard {
            beat: start,
            pitch: n.2,
        })
        .collect();
    out.extend(
        spans
            .iter()
            .filter(|n| n.0 >= start - bps && n.0 < end - 1e-9)
            .map(|n| Heard {
                beat: n.0,
                pitch: n.2,
            }),
    );
    out
}

/// Asserts `heard` equals `expected` note for note, each within one sample.
fn assert_on_grid(heard: &[Heard], expected: &[Heard], beats_per_sample: f64) {
    assert_on_grid_within(heard, expected, beats_per_sample)
}

/// Asserts `heard` equals `expected` note for note, each within `tolerance` beats.
fn assert_on_grid_within(heard: &[Heard], expected: &[Heard], tolerance: f64) {
    assert_eq!(
        heard.len(),
        expected.len(),
        "heard {heard:?}\nexpected {expected:?}"
    );
    for (h, e) in heard.iter().zip(expected) {
        assert_eq!(h.pitch, e.pitch);
        let err = h.beat - e.beat;
        assert!(
            err > -1e-9 && err <= tolerance + 1e-9,
            "note {e:?} heard at {} (err {err} beats)",
            h.beat
        );
    }
}

#[test]
fn plays_the_generated_notes_on_the_grid_then_stops_cleanly() {
    let s = GenSettings {
        seed: 11,
        ..Default::default()
    };
    let mut h = Harness::new();
    let end = h.play(0.0, 8 * 48_000 * 2 / 512, 512, 120.0, 48_000.0, &offline(s)); // 8 bars at 120 BPM
    let expected: Vec<Heard> = intended(s, Meter::new(4, 4), 0..9)
        .into_iter()
        .filter(|n| n.beat < end - 1e-9)
        .collect();
    assert!(expected.len() > 16);
    assert_on_grid(&h.heard, &expected, 120.0 / 60.0 / 48_000.0);
    for n in &h.heard {
        assert!(s.key.contains(n.pitch) && (s.low..=s.high).contains(&n.pitch));
    }
    h.stop(end, &offline(s));
    // Stopped: nothing more plays.
    let before = h.heard.len();
    for _ in 0..50 {
        let t = BlockTransport {
            playing: false,
            ..BlockTransport::playing_at(end, 120.0, 48_000.0)
        };
        assert!(h.block(&t, &offline(s), 512).is_empty());
    }
    assert_eq!(h.heard.len(), before);
}

#[test]
fn starts_from_any_position() {
    let s = GenSettings {
        seed: 5,
        ..Default::default()
    };
    let bps = 97.0 / 60.0 / 44_100.0;
    for start in [21.37, 16.0, 17.5, 30.999] {
        let mut h = Harness::new();
        let end = h.play(start, 300, 333, 97.0, 44_100.0, &offline(s));
        let expected = expected_from(&intended_spans(s, 0..20), start, end, bps);
        assert_on_grid(&h.heard, &expected, bps);
    }
}

#[test]
fn loop_wrap_and_jumps_cut_notes_and_resync() {
    let s = GenSettings {
        seed: 9,
        gate: 1.0,
        ..Default::default()
    };
    let c = offline(s);
    let mut h = Harness::new();
    // Loop bars 0..2 twice: the second pass repeats the first exactly.
    let end = h.play(0.0, 375, 512, 120.0, 48_000.0, &c);
    let first_pass = h.heard.clone();
    assert!(end > 8.0);
    let notes_before_wrap = h.sounding.len();
    let wrap = h.block(&BlockTransport::playing_at(0.0, 120.0, 48_000.0), &c, 512);
    if notes_before_wrap > 0 {
        assert!(
            wrap.iter()
                .any(|e| e.timing == 0 && matches!(e.kind, OutKind::NoteOff { .. })),
            "no note-off at the loop wrap"
        );
    }
    h.heard.truncate(first_pass.len());
    h.sounding.clear();
    let mut h2 = Harness::new();
    h2.play(0.0, 375, 512, 120.0, 48_000.0, &c);
    assert_eq!(h2.heard, first_pass);
    // Forward jump to bar 12 and backward jump to bar 3: notes resume on the grid.
    let bps = 120.0 / 60.0 / 48_000.0;
    for start in [48.0, 12.0] {
        let mut h = Harness::new();
        h.play(0.0, 100, 512, 120.0, 48_000.0, &c);
        let cut = h.heard.len();
        let end = h.play(start, 200, 512, 120.0, 48_000.0, &c);
        let expected: Vec<Heard> = intended(s, Meter::new(4, 4), 0..20)
            .into_iter()
            .filter(|n| n.beat >= start - 1e-9 && n.beat < end - 1e-9)
            .collect();
        assert_on_grid(&h.heard[cut..], &expected, bps);
        assert!(h.sched.stats.resyncs >= 1);
    }
}

#[test]
fn tempo_changes_keep_notes_on_their_beats() {
    let s = GenSettings {
        seed: 3,
        density: 0.8,
        ..Default::default()
    };
    let c = offline(s);
    let mut h = Harness::new();
    let sr = 48_000.0;
    let mut pos = 0.0;
    let mut max_bps: f64 = 0.0;
    for i in 0..600 {
        let tempo = 60.0 + (i as f64 * 0.7) % 140.0; // keeps changing
        max_bps = max_bps.max(tempo / 60.0 / sr);
        h.block(&BlockTransport::playing_at(pos, tempo, sr), &c, 256);
        pos += 256.0 * tempo / 60.0 / sr;
    }
    let expected: Vec<Heard> = intended(s, Meter::new(4, 4), 0..40)
        .into_iter()
        .filter(|n| n.beat < pos - 1e-9)
        .collect();
    assert_on_grid(&h.heard, &expected, max_bps);
}

#[test]
fn time_signature_change_redraws_bars() {
    let s = GenSettings {
        seed: 21,
        ..Default::default()
    };
    let c = offline(s);
    let mut h = Harness::new();
    let end = h.play(0.0, 375, 512, 120.0, 48_000.0, &c); // 2 bars of 4/4 (8 beats)
    assert!((end - 8.0).abs() < 1e-6);
    // The host switches to 3/4 at beat 8 and reports bar 2 starting there.
    let cut = h.heard.len();
    let mut pos = end;
    for _ in 0..(375 * 3 / 2) {
        let bar = ((pos - 8.0) / 3.0 + 1e-9).floor();
        let t = BlockTransport {
            time_sig_numerator: Some(3),
            time_sig_denominator: Some(4),
            bar_start_beats: Some(8.0 + bar * 3.0),
            bar_number: Some(2 + bar as i64),
            ..BlockTransport::playing_at(pos, 120.0, 48_000.0)
        };
        h.block(&t, &c, 512);
        pos += 512.0 * 120.0 / 60.0 / 48_000.0;
    }
    // The 3/4 bars hold the generator's 3/4 notes.
    let mut expected = Vec::new();
    for n in intended(s, Meter::new(3, 4), 2..10) {
        let beat = 8.0 + (n.beat - 2.0 * 3.0);
        if beat < pos - 1e-9 {
            expected.push(Heard {
                beat,
                pitch: n.pitch,
            });
        }
    }
    assert_on_grid(&h.heard[cut..], &expected, 120.0 / 60.0 / 48_000.0);
}

#[test]
fn sample_rate_and_block_size_changes() {
    let s = GenSettings {
        seed: 14,
        ..Default::default()
    };
    let c = offline(s);
    let mut h = Harness::new();
    let mut pos = 0.0;
    let mut max_bps: f64 = 0.0;
    for (i, (sr, len)) in [
        (44_100.0, 64),
        (96_000.0, 1024),
        (22_050.0, 7),
        (192_000.0, 4096),
        (48_000.0, 1),
    ]
    .iter()
    .cycle()
    .take(3000)
    .enumerate()
    {
        let len = if *len == 1 { 1 + i % 3 } else { *len };
        max_bps = max_bps.max(120.0 / 60.0 / sr);
        h.block(&BlockTransport::playing_at(pos, 120.0, *sr), &c, len);
        pos += len as f64 * 2.0 / sr;
    }
    let expected: Vec<Heard> = intended(s, Meter::new(4, 4), 0..200)
        .into_iter()
        .filter(|n| n.beat < pos - 1e-9)
        .collect();
    assert!(expected.len() > 10);
    assert_on_grid(&h.heard, &expected, max_bps);
}

#[test]
fn reset_bypass_and_panic_silence_everything() {
    let s = GenSettings {
        seed: 2,
        gate: 1.0,
        ..Default::default()
    };
    let c = offline(s);
    for action in ["reset", "bypass", "panic", "play-off"] {
        let mut h = Harness::new();
        // Play until a note is sounding.
        let mut pos = 0.0;
        while h.sounding.is_empty() {
            h.block(&BlockTransport::playing_at(pos, 120.0, 48_000.0), &c, 128);
            pos += 128.0 * 2.0 / 48_000.0;
        }
        let was_sounding: Vec<u8> = h.sounding.keys().map(|k| k.1).collect();
        let mut c2 = c;
        match action {
            "reset" => h.sched.reset(),
            "panic" => h.sched.panic(),
            _ => c2.enabled = false,
        }
        // After a reset the host restarts at 0, where the melody may begin again at once.
        let ev = h.block(
            &BlockTransport::playing_at(if action == "reset" { 0.0 } else { pos }, 120.0, 48_000.0),
            &c2,
            128,
        );
        for key in was_sounding {
            assert!(
                ev.iter()
                    .any(|e| e.timing == 0 && e.kind == OutKind::NoteOff { key }),
                "{action}: no note-off for {key} in {ev:?}"
            );
        }
        if action != "reset" {
            assert!(
                h.sounding.is_empty(),
                "{action}: still sounding after {ev:?}"
            );
        }
        if action == "panic" {
            assert_eq!(h.cc_all_off, 1);
        }
    }
}

#[test]
fn free_runs_without_a_host_timeline() {
    let s = GenSettings {
        seed: 4,
        ..Default::default()
    };
    let c = BlockControls {
        free_run_tempo: 90.0,
        ..offline(s)
    };
    let mut h = Harness::new();
    let t = BlockTransport {
        playing: false,
        tempo: None,
        pos_beats: None,
        ..BlockTransport::playing_at(0.0, 0.0, 48_000.0)
    };
    let mut ons = Vec::new();
    let mut sample = 0u64;
    for _ in 0..2000 {
        for e in h.block(&t, &c, 480) {
            if matches!(e.kind, OutKind::NoteOn { .. }) {
                ons.push((sample + e.timing as u64) as f64 * 1.5 / 48_000.0);
            }
        }
        sample += 480;
    }
    let expected: Vec<f64> = intended(s, Meter::new(4, 4), 0..20)
        .into_iter()
        .map(|n| n.beat)
        .filter(|b| *b < sample as f64 * 1.5 / 48_000.0 - 1e-9)
        .collect();
    assert_eq!(ons.len(), expected.len());
    for (a, b) in ons.iter().zip(&expected) {
        assert!((a - b) >= -1e-9 && a - b <= 1.5 / 48_000.0 + 1e-9);
    }
}

#[test]
fn a_seed_change_takes_effect_at_the_next_bar_or_beat() {
    let a = GenSettings {
        seed: 100,
        ..Default::default()
    };
    let b = GenSettings { seed: 200, ..a };
    let bps = 2.0 / 48_000.0;
    for quantize in [Quantize::Bar, Quantize::Beat] {
        let mut h = Harness::new();
        let ca = BlockControls {
            quantize,
            ..offline(a)
        };
        let cb = BlockControls {
            quantize,
            ..offline(b)
        };
        let mid = h.play(0.0, 200, 480, 120.0, 48_000.0, &ca); // 4 bars... to beat 4.0 * 1 bar = 4 beats? 200*480 samples = 2 s = 4 beats
        assert!((mid - 4.0).abs() < 1e-9);
        let pos = h.play(mid, 100, 480, 120.0, 48_000.0, &ca); // into bar 1 (beat 6.0)
        let end = h.play(pos, 600, 480, 120.0, 48_000.0, &cb);
        let switch = if quantize == Quantize::Bar { 8.0 } else { 7.0 }; // next bar / next beat after 6.0
        let mut expected: Vec<Heard> = intended(a, Meter::new(4, 4), 0..2)
            .into_iter()
            .filter(|n| n.beat < switch)
            .collect();
        expected.extend(
            intended(b, Meter::new(4, 4), 1..20)
                .into_iter()
                .filter(|n| n.beat >= switch && n.beat < end - 1e-9),
        );
        assert_on_grid(&h.heard, &expected, bps);
    }
}

/// "Change at: Next phrase": a new idea (a seed change) made in bar 1 waits for the next
/// 4-bar phrase, so the phrase playing is never cut.
#[test]
fn with_change_at_phrase_a_new_idea_starts_at_the_next_phrase() {
    let a = GenSettings {
        seed: 100,
        ..Default::default()
    };
    let b = GenSettings { seed: 200, ..a };
    let bps = 2.0 / 48_000.0;
    let controls = |s| BlockControls {
        quantize: Quantize::Phrase,
        ..offline(s)
    };
    let mut h = Harness::new();
    let pos = h.play(0.0, 300, 480, 120.0, 48_000.0, &controls(a)); // to beat 6, in bar 1
    let end = h.play(pos, 1200, 480, 120.0, 48_000.0, &controls(b)); // to beat 30
    let switch = 16.0; // bar 4
    let mut expected: Vec<Heard> = intended(a, Meter::new(4, 4), 0..4);
    expected.extend(
        intended(b, Meter::new(4, 4), 4..8)
            .into_iter()
            .filter(|n| n.beat < end - 1e-9),
    );
    assert!(expected.iter().any(|n| n.beat >= switch));
    assert_on_grid(&h.heard, &expected, bps);
}

/// A generator that takes `ms` per phrase and counts its phrases.
struct Counted {
    inner: Box<dyn Generator>,
    ms: u64,
    phrases: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Generator for Counted {
    fn name(&self) -> &str {
        "counted"
    }
    fn generate(
        &mut self,
        r: &PhraseRequest<'_>,
        rng: &mut melodist::music::SeedRng,
    ) -> melodist::generator::Phrase {
        self.phrases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(self.ms));
        self.inner.generate(r, rng)
    }
}

/// A loader of the shipped Markov model taking `ms` per phrase, and its phrase counter.
fn counted(
    ms: u64,
) -> (
    melodist::engine::worker::GeneratorLoader,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let phrases = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = phrases.clone();
    let loader: melodist::engine::worker::GeneratorLoader = Box::new(move || {
        let generator = Counted {
            inner: embedded_markov(),
            ms,
            phrases: counter,
        };
        (Box::new(generator) as Box<dyn Generator>, None)
    });
    (loader, phrases)
}

/// A harness whose generator takes `ms` per phrase; also returns its phrase counter.
fn counted_harness(ms: u64) -> (Harness, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let (loader, phrases) = counted(ms);
    (Harness::with(loader), phrases)
}

#[test]
fn realtime_never_waits_for_a_late_worker() {
    let worker = Worker::spawn(counted(2_000).0, Default::default());
    let mut sched = Scheduler::new(worker.link());
    let c = BlockControls::default(); // realtime
    let started = std::time::Instant::now();
    let mut ons = 0;
    for i in 0..50 {
        let ev = sched.process_block(
            &BlockTransport::playing_at(i as f64 * 0.02, 120.0, 48_000.0),
            &c,
            480,
        );
        ons += ev
            .iter()
            .filter(|e| matches!(e.kind, OutKind::NoteOn { .. }))
            .count();
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "audio thread waited: {:?}",
        started.elapsed()
    );
    assert_eq!(ons, 0);
    assert!(sched.stats.late_bars >= 1);
}

/// `transport` in the `i`th of five meters that take turns block by block.
fn meter_of_block(i: usize, transport: BlockTransport) -> BlockTransport {
    let (num, den) = [(4, 4), (3, 4), (6, 8), (5, 4), (7, 8)][i % 5];
    BlockTransport {
        time_sig_numerator: Some(num),
        time_sig_denominator: Some(den),
        ..transport
    }
}

/// A transport whose meter changes every block (what clap-validator's fuzzer sends; a
/// host's tempo-and-meter map can come close) asks for every bar again each block. The
/// worker writes only the latest request for each bar: a backlog of superseded phrases
/// would leave real time silent and an offline render waiting long after the changes stop.
#[test]
fn a_meter_changing_every_block_leaves_the_worker_no_backlog() {
    let (mut h, phrases) = counted_harness(15);
    let (len, tempo, sr) = (128, 120.0, 48_000.0);
    let bps = tempo / 60.0 / sr;
    let block = |pos: f64, i: usize| meter_of_block(i, BlockTransport::playing_at(pos, tempo, sr));
    // 300 blocks back to back in real time: far faster than the worker writes a phrase.
    let realtime = BlockControls::default();
    let mut pos = 0.0;
    for i in 0..300 {
        h.block(&block(pos, i), &realtime, len);
        pos += len as f64 * bps;
    }
    // Then the meter rests and the host renders offline: it waits only for current bars.
    let offline = offline(GenSettings::default());
    for _ in 0..200 {
        h.block(&block(pos, 299), &offline, len);
        pos += len as f64 * bps;
    }
    let written = phrases.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        h.sched.stats.offline_gave_up, 0,
        "{written} phrases written"
    );
    assert!(!h.heard.is_empty());
    assert!(
        written < 20,
        "the worker wrote {written} phrases for 300 blocks of superseded requests"
    );
}

/// Offline, a transport that changes faster than phrases are written (a new meter every
/// 64 samples, 50 ms a phrase) would make the render crawl, waiting for every block: the
/// waits stay within the grace and a share of the audio rendered.
#[test]
fn an_offline_render_waits_no_longer_than_a_grace_and_a_share_of_its_audio() {
    let (mut h, _) = counted_harness(50);
    let (len, tempo, sr) = (64, 120.0, 48_000.0);
    let c = offline(GenSettings::default());
    let mut pos = 0.0;
    for i in 0..300 {
        h.block(
            &meter_of_block(i, BlockTransport::playing_at(pos, tempo, sr)),
            &c,
            len,
        );
        pos += len as f64 * tempo / 60.0 / sr;
    }
    let rendered_ms = 300.0 * len as f64 / sr * 1e3;
    let stats = h.sched.stats;
    // Waiting for every block would take 300 x 50 ms. The budget: 3 s and a quarter of the
    // audio, with a little slack for the last sleep.
    assert!(
        (stats.offline_waited_ms as f64) < 3_000.0 + rendered_ms / 4.0 + 200.0,
        "waited {} ms for {rendered_ms} ms of audio",
        stats.offline_waited_ms
    );
    assert!(stats.offline_gave_up > 0);
}

#[test]
fn offline_render_equals_a_paced_realtime_render() {
    let s = GenSettings {
        seed: 31,
        ..Default::default()
    };
    let render = |offline: bool| {
        let mut h = Harness::new();
        let c = BlockControls {
            offline,
            ..offline_controls(s)
        };
        // Let the worker prepare while stopped, as a host does before play.
        let stopped = BlockTransport {
            playing: false,
            ..BlockTransport::playing_at(0.0, 120.0, 48_000.0)
        };
        h.block(&stopped, &c, 512);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut pos = 0.0;
        for i in 0..900 {
            if !offline && i % 5 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1)); // leave the worker time, like real time does
            }
            h.block(&BlockTransport::playing_at(pos, 120.0, 48_000.0), &c, 512);
            pos += 512.0 * 2.0 / 48_000.0;
        }
        (h.heard, h.sched.stats.late_bars)
    };
    let (a, _) = render(true);
    // A machine busy with other tests can starve the worker; real time then (rightly)
    // drops notes. Compare against a real-time render in which the worker kept up.
    let b = (0..5)
        .map(|_| render(false))
        .find(|(_, late)| *late == 0)
        .expect("the worker never kept up in real time")
        .0;
    assert!(a.len() > 20);
    assert_eq!(a, b);
}

fn offline_controls(s: GenSettings) -> BlockControls {
    offline(s)
}

/// One step of a random host.
#[derive(Debug, Clone)]
enum Step {
    Play {
        blocks: usize,
        len: usize,
    },
    Jump {
        to: f64,
    },
    Tempo(f64),
    SampleRate(f64),
    Stop,
    Start,
    /// The host's loop range (start, length in beats), or none.
    Loop(Option<(f64, f64)>),
    /// Positions rounded to the host's 1/1920-beat tick, or exact.
    Rounding(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..40, 1usize..=4096).prop_map(|(blocks, len)| Step::Play { blocks, len }),
        1 => (0.0f64..64.0).prop_map(|to| Step::Jump { to }),
        1 => (30.0f64..300.0).prop_map(Step::Tempo),
        1 => prop::sample::select(vec![22_050.0, 44_100.0, 48_000.0, 88_200.0, 96_000.0, 192_000.0]).prop_map(Step::SampleRate),
        1 => Just(Step::Stop),
        1 => Just(Step::Start),
        1 => prop::option::of((0.0f64..32.0, 0.5f64..16.0)).prop_map(Step::Loop),
        1 => any::<bool>().prop_map(Step::Rounding),
    ]
}

/// The random host's transport between steps.
struct RandomHost {
    pos: f64,
    tempo: f64,
    sr: f64,
    playing: bool,
    looping: Option<(f64, f64)>,
    /// The host's position grid (0: exact).
    tick: f64,
}

impl RandomHost {
    fn new() -> Self {
        Self {
            pos: 0.0,
            tempo: 120.0,
            sr: 48_000.0,
            playing: true,
            looping: None,
            tick: 0.0,
        }
    }

    fn bps(&self) -> f64 {
        self.tempo / 60.0 / self.sr
    }

    /// The next block's transport, its position rounded to the host's grid.
    fn transport(&self) -> BlockTransport {
        let reported = if self.tick > 0.0 {
            (self.pos / self.tick).round() * self.tick
        } else {
            self.pos
        };
        BlockTransport {
            playing: self.playing,
            loop_range: self.looping,
            ..BlockTransport::playing_at(reported, self.tempo, self.sr)
        }
    }

    /// Moves on by a block of `len` samples, wrapping at the loop end (and back to the
    /// start after beat 150, to stay within the bars the tests know).
    fn advance(&mut self, len: usize) {
        if self.playing {
            let was = self.pos;
            self.pos += len as f64 * self.bps();
            if let Some((ls, le)) = self.looping
                && was < le
                && self.pos >= le
            {
                self.pos = ls + (self.pos - le) % (le - ls);
            }
        }
        if self.pos > 150.0 {
            self.pos = 0.0;
        }
    }

    /// Any step but `Play`.
    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Play { .. } => {}
            Step::Jump { to } => self.pos = to,
            Step::Tempo(t) => self.tempo = t,
            Step::SampleRate(r) => self.sr = r,
            Step::Stop => self.playing = false,
            Step::Start => self.playing = true,
            Step::Loop(range) => self.looping = range.map(|(start, len)| (start, start + len)),
            Step::Rounding(on) => self.tick = if on { 1.0 / 1920.0 } else { 0.0 },
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random transports: every invariant the Harness checks holds, every note heard is
    /// one the generator intended (within a sample), and stopping leaves nothing sounding.
    #[test]
    fn random_transports_keep_the_invariants(steps in prop::collection::vec(step(), 1..25), seed in 0u64..1000) {
        let s = GenSettings { seed, ..Default::default() };
        let c = offline(s);
        let mut h = Harness::new();
        let mut host = RandomHost::new();
        let intended = intended_spans(s, 0..40);
        for st in steps {
            let Step::Play { blocks, len } = st else {
                host.apply(&st);
                continue;
            };
            for _ in 0..blocks {
                let before = h.heard.len();
                let t = host.transport();
                let (reported, bps, tick) = (t.pos_beats.unwrap_or(0.0), host.bps(), host.tick);
                h.block(&t, &c, len);
                for heard in &mut h.heard[before..] {
                    // A wrap inside the block: the harness counts beats on past it.
                    if let Some((ls, le)) = host.looping && reported < le && heard.beat >= le {
                        heard.beat = ls + (heard.beat - le) % (le - ls);
                    }
                    // On its beat (within a sample and the host's rounding), or chased part-way through.
                    prop_assert!(
                        intended.iter().any(|n| n.2 == heard.pitch && heard.beat - n.0 > -1e-9 - tick && heard.beat - n.0 <= bps + tick + 1e-9)
                            || intended.iter().any(|n| n.2 == heard.pitch && n.0 < heard.beat && heard.beat < n.1),
                        "unexpected note {:?}", heard
                    );
                }
                host.advance(len);
            }
        }
        h.stop(host.pos, &c);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random chord changes (held triads, some released late, some never) under random
    /// transports: melodies are re-planned around them, and still no note is doubled,
    /// left hanging or played out of key or register.
    #[test]
    fn random_chords_under_random_transports_leave_nothing_stuck(
        steps in prop::collection::vec((step(), prop::option::of(0usize..7), any::<bool>()), 1..20),
        seed in 0u64..1000,
    ) {
        let s = GenSettings { seed, chord_fit: 1.0, ..Default::default() };
        let c = offline(s);
        let mut h = Harness::new();
        let mut host = RandomHost::new();
        let mut held: Vec<u8> = Vec::new();
        for (st, chord, release) in steps {
            // A triad of the key (degrees 1, 3, 5 from a scale step), struck at the block start.
            if let Some(root) = chord {
                if release {
                    for p in held.drain(..) {
                        h.sched.input_note_off(p, 0);
                    }
                }
                let scale: Vec<u8> = (48..72).filter(|&p| s.key.contains(p)).collect();
                for i in [0, 2, 4] {
                    let p = scale[root + i];
                    h.sched.input_note(p, 90, 0);
                    held.push(p);
                }
            }
            let Step::Play { blocks, len } = st else {
                host.apply(&st);
                continue;
            };
            for _ in 0..blocks {
                h.block(&host.transport(), &c, len);
                host.advance(len);
            }
        }
        prop_assert!(h.heard.iter().all(|n| s.key.contains(n.pitch) && (s.low..=s.high).contains(&n.pitch)));
        h.stop(host.pos, &c);
    }
}

/// The producer holds C major, then switches to A minor in the middle of bar 2: the
/// melody (neural model, Chord fit 1) sits on C while it is held and on A minor from the
/// next bars on.
#[test]
fn live_chords_are_followed_and_a_change_is_heard_from_the_next_bar() {
    use melodist::generator::loader::{ModelChoice, load_strict};
    let s = GenSettings {
        seed: 3,
        chord_fit: 1.0,
        ..Default::default()
    };
    let c = offline(s);
    let mut h = Harness::with(Box::new(|| {
        (
            load_strict(&ModelChoice::Default).expect("shipped model"),
            None,
        )
    }));
    let (len, tempo, sr) = (480, 120.0, 48_000.0);
    let bps = tempo / 60.0 / sr;
    h.block(&BlockTransport::playing_at(0.0, tempo, sr), &c, len);
    for p in [60u8, 64, 67] {
        h.sched.input_note(p, 90, 0);
    }
    let pos = h.play(len as f64 * bps, 499, len, tempo, sr, &c); // to beat 10
    h.block(&BlockTransport::playing_at(pos, tempo, sr), &c, len);
    for p in [60u8, 64, 67] {
        h.sched.input_note_off(p, 0);
    }
    for p in [57u8, 60, 64] {
        h.sched.input_note(p, 90, 0);
    }
    h.play(pos + len as f64 * bps, 1900, len, tempo, sr, &c); // to beat 48
    let share = |bars: std::ops::Range<f64>, chord: &[u8]| {
        let strong: Vec<&Heard> = h
            .heard
            .iter()
            .filter(|n| {
                let half_bars = n.beat / 2.0;
                bars.contains(&(n.beat / 4.0)) && (half_bars - half_bars.round()).abs() < 1e-3
            })
            .collect();
        let tones = strong
            .iter()
            .filter(|n| chord.contains(&(n.pitch % 12)))
            .count();
        (tones as f64 / strong.len().max(1) as f64, strong.len())
    };
    let (on_c, n_c) = share(1.0..2.5, &[0, 4, 7]);
    let (on_am, n_am) = share(3.0..12.0, &[9, 0, 4]);
    assert!(
        n_c >= 2 && n_am >= 10,
        "too few strong-beat notes: {n_c}, {n_am}"
    );
    assert!(
        on_c >= 0.75,
        "C held: {on_c:.2} of strong-beat notes are C-E-G"
    );
    assert!(
        on_am >= 0.75,
        "A minor held: {on_am:.2} of strong-beat notes are A-C-E"
    );
    h.stop(48.0, &c);
}

#[test]
fn continue_mode_answers_the_producer_from_the_next_bar() {
    let s = GenSettings {
        seed: 77,
        mode: melodist::generator::Mode::Continue,
        ..Default::default()
    };
    let c = offline(s);
    let bps = 2.0 / 48_000.0;
    let run = |with_input: bool| {
        let mut h = Harness::new();
        let mid = h.play(0.0, 150, 480, 120.0, 48_000.0, &c); // to beat 3.0, inside bar 0
        if with_input {
            // The producer plays a phrase at the end of bar 0 (low, outside the default register).
            h.block(&BlockTransport::playing_at(mid, 120.0, 48_000.0), &c, 480);
            for (i, pitch) in [45u8, 47, 48, 50, 52].iter().enumerate() {
                h.sched.input_note(*pitch, 100, (i * 90) as u32);
            }
        } else {
            h.block(&BlockTransport::playing_at(mid, 120.0, 48_000.0), &c, 480);
        }
        h.play(mid + 480.0 * bps, 700, 480, 120.0, 48_000.0, &c);
        h.heard
    };
    let plain = run(false);
    let answered = run(true);
    let bar0 = |v: &[Heard]| {
        v.iter()
            .filter(|n| n.beat < 4.0)
            .copied()
            .collect::<Vec<_>>()
    };
    // The bar already playing is untouched; from the next bar on the melody answers the input.
    assert_eq!(bar0(&plain), bar0(&answered));
    let bar1 = |v: &[Heard]| {
        v.iter()
            .filter(|n| (4.0..8.0).contains(&n.beat))
            .copied()
            .collect::<Vec<_>>()
    };
    assert_ne!(
        bar1(&plain),
        bar1(&answered),
        "the next bar did not answer the producer"
    );
    assert!(
        answered
            .iter()
            .all(|n| s.key.contains(n.pitch) && (s.low..=s.high).contains(&n.pitch))
    );
}

/// Hosts round positions to their tick grid (here 1/1920 beat, about 12 samples at
/// 120 BPM / 48 kHz): that drift is not a jump, so nothing is cut or re-synced.
#[test]
fn host_rounding_is_not_a_jump() {
    let s = GenSettings {
        seed: 17,
        ..Default::default()
    };
    let c = offline(s);
    let tick = 1.0 / 1920.0;
    for (tempo, sr, len) in [
        (120.0, 48_000.0, 512),
        (87.0, 44_100.0, 256),
        (174.0, 96_000.0, 1000),
    ] {
        let mut h = Harness::new();
        let bps = tempo / 60.0 / sr;
        let mut pos = 0.0f64;
        while pos < 16.0 {
            let reported = (pos / tick).round() * tick;
            h.block(&BlockTransport::playing_at(reported, tempo, sr), &c, len);
            pos += len as f64 * bps;
        }
        assert_eq!(h.sched.stats.resyncs, 0, "{tempo} BPM at {sr} Hz");
        let expected: Vec<Heard> = intended(s, Meter::new(4, 4), 0..5)
            .into_iter()
            .filter(|n| n.beat < pos - tick)
            .collect();
        assert_on_grid_within(&h.heard, &expected, bps + tick);
    }
}

/// With the host's loop range, a wrap inside a block is played at its sample: the loop
/// start's notes play on every pass, and none of it counts as a jump.
#[test]
fn loop_range_wraps_inside_blocks_without_resyncs() {
    let s = GenSettings {
        seed: 23,
        ..Default::default()
    };
    let c = offline(s);
    let (ls, le) = (4.0, 12.0);
    let bps = 120.0 / 60.0 / 48_000.0;
    let mut h = Harness::new();
    let mut pos = ls + 272.0 * bps; // a track running ahead by its latency
    let mut wraps = 0;
    for _ in 0..(4 * 8 * 24_000 / 512) {
        let t = BlockTransport {
            loop_range: Some((ls, le)),
            ..BlockTransport::playing_at(pos, 120.0, 48_000.0)
        };
        h.block(&t, &c, 512);
        pos += 512.0 * bps;
        if pos >= le {
            pos = ls + (pos - le);
            wraps += 1;
        }
    }
    assert_eq!(h.sched.stats.resyncs, 0);
    assert_eq!(h.sched.stats.loop_wraps, wraps);
    let pass: Vec<Heard> = intended(s, Meter::new(4, 4), 1..3);
    assert_eq!(pass[0].beat, ls, "the loop starts with a note");
    // Every pass after the first plays the whole loop, downbeat included.
    let downbeats = h
        .heard
        .iter()
        .filter(|n| {
            // Heard beats count on past the wrap inside a block; fold them into the loop.
            let phase = (n.beat - ls).rem_euclid(le - ls);
            n.pitch == pass[0].pitch && phase.min(le - ls - phase) <= bps
        })
        .count();
    assert!(
        downbeats >= wraps as usize,
        "{downbeats} downbeats in {wraps} wraps"
    );
}

/// Loop mode: a change of Evolve, Morph or Vary while a loop plays waits for the loop's
/// end, so the loop under way is never cut; from there on the new setting plays.
#[test]
fn loop_settings_change_at_the_next_loop_boundary() {
    use melodist::generator::hooks::Variations;
    use melodist::generator::looping::LoopPlayer;
    let a = GenSettings {
        seed: 3,
        loop_bars: 4,
        evolve: 0.0,
        ..Default::default()
    };
    // What the worker plays: the shipped VAE behind Vary and Morph, no captured hooks.
    let expected = |bars: std::ops::Range<i64>, s: GenSettings| {
        let mut g = embedded_markov();
        let mut player = LoopPlayer::new(Variations::load(), Default::default());
        bars.flat_map(|bar| {
            player
                .bar(g.as_mut(), s, Meter::new(4, 4), bar, &SongChords(&[]))
                .into_iter()
                .map(move |n| Heard {
                    beat: bar as f64 * 4.0 + n.start,
                    pitch: n.pitch,
                })
        })
        .collect::<Vec<_>>()
    };
    let bps = 2.0 / 48_000.0;
    for b in [
        GenSettings { evolve: 1.0, ..a },
        GenSettings { morph: 1.0, ..a },
        GenSettings { morph: 0.5, ..a },
        GenSettings { vary_step: 2, ..a },
    ] {
        // The change really changes the loop (so the boundary below is observable).
        assert_ne!(expected(8..12, b), expected(8..12, a), "{b:?}");
        let mut h = Harness::new();
        // Into bar 5 (the second repeat), then the change: bars 5-7 stay as they were.
        let pos = h.play(0.0, 1000, 480, 120.0, 48_000.0, &offline(a)); // to beat 20 (bar 5)
        let end = h.play(pos, 1500, 480, 120.0, 48_000.0, &offline(b)); // to beat 50
        let mut want = expected(0..8, a);
        want.extend(expected(8..13, b));
        want.retain(|n| n.beat < end - 1e-9);
        assert_on_grid(&h.heard, &want, bps);
        h.stop(end, &offline(b));
    }
}
