//! The audio-thread half of the engine: from host transport + generated bars to
//! sample-accurate note events.
//!
//! Everything here is allocation-free: bars live in a fixed set of slots, sounding notes
//! in a 128-entry table, output events in a fixed buffer.
//!
//! Timing rule: a note at beat `x` goes to the first sample at or after `x` (within a
//! millionth of a sample), so every note lands within one sample of its beat position
//! whatever the block size, tempo or sample rate.
//!
//! Real hosts are not exact, so the scheduler reads the transport the way a producer hears
//! it:
//! - **Drift is not a jump.** Hosts round positions to their own tick grid (often 1/1920
//!   beat, far coarser than a sample), so consecutive blocks rarely meet exactly. A block
//!   that starts within [`drift_tolerance`] of where the last one ended continues it: the
//!   clock re-anchors to the host silently and no note is cut, doubled or skipped.
//! - **Nothing remembers what was played.** Each block plays the notes whose start lies in
//!   the beat window it covers, so after a stop, locate, jump or loop the bars under the
//!   new position simply play again. A long note already under way where playback starts is
//!   started there (MIDI chase).
//! - **Loops wrap at their exact sample.** With the host's loop range (CLAP transport loop,
//!   VST3 cycle) a block that crosses the loop end is split: notes end at the wrap and the
//!   loop start's downbeat plays on the wrap sample, whatever the host's block boundaries or
//!   latency offset. The lookahead follows the loop, so the loop start is ready in time.

use super::messages::{BarNotes, BarReady, InputNote, ToWorker};
use super::monitor::MonitorEvent;
use super::worker::WorkerLink;
use crate::generator::{GenSettings, Mode, PHRASE_BARS};
use crate::music::chord::HeldNotes;
use crate::music::{BeatNote, Meter};
use crossbeam_channel::{Receiver, Sender};
use nice_plug::prelude::Enum;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Bars kept: the current one, the lookahead, the previous bar and room for a loop's start.
const N_SLOTS: usize = 8;
/// Bars requested beyond the current one (so at least one full bar is always ahead).
const LOOKAHEAD_BARS: usize = 2;
/// Output events per block. Far above what a melody needs; excess notes wait a block.
pub const MAX_EVENTS: usize = 256;
/// Longest an offline render waits for the bars of one block before giving up on them.
/// The worker drops requests a jump made stale, so a healthy wait is one bar's generation
/// time (milliseconds); this only bounds a stuck or still-loading worker.
const OFFLINE_WAIT: Duration = Duration::from_secs(3);
/// An offline render's waits, all together, stay within this plus [`OFFLINE_SHARE`] of the
/// audio it has rendered (see [`OfflineBudget`]).
const OFFLINE_GRACE: Duration = Duration::from_secs(3);
/// A bounce waits about a millisecond per bar of seconds (`cargo bench --bench neural`);
/// a quarter of the audio leaves room for a slow machine or a debug build, and keeps a low
/// sample rate, whose few samples are long audio, from waiting for minutes.
const OFFLINE_SHARE: f64 = 0.25;
/// Slack in the timing rule, in samples.
const SAMPLE_EPS: f64 = 1e-6;
/// Pieces a block can be cut into by loop wraps (a loop shorter than a block wraps often).
const MAX_SEGMENTS: usize = 8;
/// A note under way where playback starts is chased when at least this share of it...
const CHASE_SHARE: f64 = 0.5;
/// ...or at least this many beats of it are still to come.
const CHASE_BEATS: f64 = 1.0;

/// How far a block may start from where the last one ended and still continue it: the
/// larger of 1/1000 beat (hosts round to ~1/1920 beat) and a few samples.
pub fn drift_tolerance(beats_per_sample: f64) -> f64 {
    (4.0 * beats_per_sample).max(1e-3)
}

/// When a parameter or seed change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Quantize {
    #[name = "Next bar"]
    Bar,
    #[name = "Next beat"]
    Beat,
    /// The next 4-bar phrase: a new idea (or seed, or any change) starts a new phrase
    /// instead of cutting one.
    #[name = "Next phrase"]
    Phrase,
}

/// The transport as the scheduler needs it, already read from the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockTransport {
    pub playing: bool,
    pub sample_rate: f64,
    pub tempo: Option<f64>,
    pub time_sig_numerator: Option<i32>,
    pub time_sig_denominator: Option<i32>,
    /// Song position in quarter notes; `None` when the host reports no timeline, in which
    /// case the scheduler free-runs on its own clock.
    pub pos_beats: Option<f64>,
    pub bar_start_beats: Option<f64>,
    pub bar_number: Option<i64>,
    /// The active loop (cycle) range in quarter notes, if the host reports one.
    pub loop_range: Option<(f64, f64)>,
}

impl BlockTransport {
    /// A playing transport at a position, 4/4 — handy for tests and benches.
    pub fn playing_at(pos_beats: f64, tempo: f64, sample_rate: f64) -> Self {
        Self {
            playing: true,
            sample_rate,
            tempo: Some(tempo),
            time_sig_numerator: Some(4),
            time_sig_denominator: Some(4),
            pos_beats: Some(pos_beats),
            bar_start_beats: None,
            bar_number: None,
            loop_range: None,
        }
    }
}

/// Per-block controls from the plugin's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockControls {
    /// Play switch on and not bypassed.
    pub enabled: bool,
    pub settings: GenSettings,
    pub channel: u8,
    pub quantize: Quantize,
    /// Tempo used when the host reports none.
    pub free_run_tempo: f64,
    /// Offline render: wait for the worker instead of skipping late bars.
    pub offline: bool,
}

impl Default for BlockControls {
    fn default() -> Self {
        Self {
            enabled: true,
            settings: GenSettings::default(),
            channel: 0,
            quantize: Quantize::Bar,
            free_run_tempo: 120.0,
            offline: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    NoteOn {
        key: u8,
        velocity: u8,
    },
    NoteOff {
        key: u8,
    },
    /// MIDI CC 123 (all notes off), sent on panic.
    AllNotesOff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutEvent {
    /// Sample offset inside the block.
    pub timing: u32,
    pub channel: u8,
    pub kind: OutKind,
}

/// One bar's notes and what the scheduler knows about them.
#[derive(Debug, Clone, Copy)]
struct Slot {
    bar: i64,
    /// Settings version this slot wants.
    epoch: u32,
    /// Settings version of the notes it holds, if any.
    content_epoch: Option<u32>,
    needs_request: bool,
    /// Beat inside the bar from which an incoming answer replaces the notes (beat quantise).
    splice_from: Option<f64>,
    late_counted: bool,
    /// Block counter when this bar was last wanted, to pick which slot to reuse.
    last_wanted: u64,
    notes: BarNotes,
}

const EMPTY_SLOT: i64 = i64::MIN;

impl Default for Slot {
    fn default() -> Self {
        Self {
            bar: EMPTY_SLOT,
            epoch: 0,
            content_epoch: None,
            needs_request: false,
            splice_from: None,
            late_counted: false,
            last_wanted: 0,
            notes: BarNotes::default(),
        }
    }
}

impl Slot {
    /// Holds notes of the settings it wants, with nothing left to ask for.
    fn is_current(&self) -> bool {
        self.content_epoch == Some(self.epoch) && !self.needs_request
    }
}

#[derive(Debug, Clone, Copy)]
struct Sounding {
    end: f64,
    channel: u8,
}

/// Where bars are on the host timeline during this block.
#[derive(Debug, Clone, Copy)]
struct BarGrid {
    bar: i64,
    start: f64,
    length: f64,
}

impl BarGrid {
    fn start_of(&self, bar: i64) -> f64 {
        self.start + (bar - self.bar) as f64 * self.length
    }

    fn bar_of(&self, beat: f64) -> i64 {
        self.bar + ((beat - self.start) / self.length + 1e-9).floor() as i64
    }
}

/// A loop range that makes sense (finite, ordered, not degenerate).
#[derive(Debug, Clone, Copy, PartialEq)]
struct LoopRange {
    start: f64,
    end: f64,
}

/// The host clock for one block, sanitised.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// Beat at the block's first sample.
    pos: f64,
    beats_per_sample: f64,
    tempo: f64,
    meter: Meter,
    /// The transport rolls and the Play switch is on.
    running: bool,
    /// The host reports a song position (otherwise we free-run).
    host_timeline: bool,
    looping: Option<LoopRange>,
}

/// A stretch of a block with a continuous timeline; a loop wrap starts a new one.
#[derive(Debug, Clone, Copy, Default)]
struct Segment {
    first_sample: u32,
    /// One past the last sample.
    end_sample: u32,
    /// Beat at `first_sample`.
    beat0: f64,
    /// Notes starting in `(from, to]` play in this segment.
    from: f64,
    to: f64,
}

/// How a rolling block relates to the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// Continues the previous block (within the drift tolerance).
    Smooth,
    /// The host wrapped its loop at the block boundary.
    LoopWrap,
    /// Play was pressed (or the plugin was reset).
    Start,
    /// The position jumped while rolling.
    Jump,
}

/// Where the next block should start if the transport rolls on.
#[derive(Debug, Clone, Copy)]
struct Continuation {
    expected_pos: f64,
    /// Notes up to this beat have been played.
    played_until: f64,
}

/// What an offline render may still wait for the worker. A render waits for the bars it
/// plays, so its notes are those of real time with a worker that keeps up; but a host
/// that moves the transport faster than phrases are written (a new meter or position every
/// few samples, as clap-validator's fuzzer does) would make it crawl, or hang the host. So
/// the waits, all together, never exceed [`OFFLINE_GRACE`] plus [`OFFLINE_SHARE`] of the
/// audio rendered: past that the render plays what is ready, as real time does, until the
/// audio catches up.
#[derive(Debug, Default, Clone, Copy)]
struct OfflineBudget {
    /// [`OFFLINE_SHARE`] of the audio rendered.
    earned: Duration,
    waited: Duration,
    /// Gave up on the last block (said once per stretch, not for every block of it).
    behind: bool,
}

impl OfflineBudget {
    fn render(&mut self, samples: usize, sample_rate: f64) {
        self.earned += Duration::from_secs_f64(OFFLINE_SHARE * samples as f64 / sample_rate);
    }

    /// How long the next block may wait.
    fn allowance(&self) -> Duration {
        (self.earned + OFFLINE_GRACE)
            .saturating_sub(self.waited)
            .min(OFFLINE_WAIT)
    }
}

/// `d` in whole milliseconds, as the counters and messages carry it.
fn millis(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

/// Counters for the status line and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Bars whose notes were not ready when they had to play (realtime only).
    pub late_bars: u32,
    /// Requests the worker queue had no room for (retried next block).
    pub request_retries: u32,
    /// Jumps while rolling: the position moved by more than host rounding explains.
    pub resyncs: u32,
    /// Loop wraps played (inside a block or at its start).
    pub loop_wraps: u32,
    /// Notes started part-way because playback began while they were due to sound.
    pub chased_notes: u32,
    /// Offline blocks that gave up waiting for the worker.
    pub offline_gave_up: u32,
    /// Time offline blocks spent waiting for the worker, in milliseconds.
    pub offline_waited_ms: u32,
}

pub struct Scheduler {
    to_worker: Sender<ToWorker>,
    from_worker: Receiver<BarReady>,
    /// Bumped on every discontinuity; the worker skips requests from older generations.
    generation: Arc<AtomicU32>,
    slots: [Slot; N_SLOTS],
    sounding: [Option<Sounding>; 128],
    events: [OutEvent; MAX_EVENTS],
    n_events: usize,
    epoch: u32,
    settings: Option<GenSettings>,
    meter: Option<Meter>,
    /// Set while rolling; `None` when stopped or after a reset.
    continuation: Option<Continuation>,
    /// Where the stopped playhead last was (a locate moves it).
    rest_pos: Option<f64>,
    /// Start notes already under way at this beat, at the next segment's first sample.
    chase_at: Option<f64>,
    free_beat: f64,
    grid: Option<BarGrid>,
    segments: [Segment; MAX_SEGMENTS],
    n_segments: usize,
    all_off_pending: bool,
    panic_pending: bool,
    input_dirty: bool,
    /// The producer's held notes, read as a chord (harmony following).
    held: HeldNotes,
    held_chord: u16,
    beats_per_sample: f64,
    blocks: u64,
    /// Where played notes and upcoming bars are reported (editor, capture), if anywhere.
    monitor: Option<Sender<MonitorEvent>>,
    pub stats: SchedulerStats,
    offline_budget: OfflineBudget,
}

impl Scheduler {
    pub fn new(link: WorkerLink) -> Self {
        Self {
            to_worker: link.to_worker,
            from_worker: link.from_worker,
            generation: link.generation,
            slots: [Slot::default(); N_SLOTS],
            sounding: [None; 128],
            events: [OutEvent {
                timing: 0,
                channel: 0,
                kind: OutKind::AllNotesOff,
            }; MAX_EVENTS],
            n_events: 0,
            epoch: 0,
            settings: None,
            meter: None,
            continuation: None,
            rest_pos: None,
            chase_at: None,
            free_beat: 0.0,
            grid: None,
            segments: [Segment::default(); MAX_SEGMENTS],
            n_segments: 0,
            all_off_pending: false,
            panic_pending: false,
            input_dirty: false,
            held: HeldNotes::new(),
            held_chord: 0,
            beats_per_sample: 0.0,
            blocks: 0,
            monitor: None,
            stats: SchedulerStats::default(),
            offline_budget: OfflineBudget::default(),
        }
    }

    /// Reports played notes, the playhead and upcoming bars to this channel (never blocks).
    pub fn set_monitor(&mut self, tx: Sender<MonitorEvent>) {
        self.monitor = Some(tx);
    }

    fn report(&self, ev: MonitorEvent) {
        if let Some(tx) = &self.monitor {
            let _ = tx.try_send(ev);
        }
    }

    /// Host reset / re-activation: silence at the start of the next block, which then
    /// starts playback afresh.
    pub fn reset(&mut self) {
        self.all_off_pending = true;
        self.continuation = None;
    }

    /// Panic: note-offs for everything, CC 123, and forget the producer's input. The melody
    /// goes on from its next note (nothing silenced is started again).
    pub fn panic(&mut self) {
        self.all_off_pending = true;
        self.panic_pending = true;
    }

    /// Whether any generated note is sounding.
    pub fn sounding_notes(&self) -> usize {
        self.sounding.iter().flatten().count()
    }

    /// The beat on the host timeline at a sample of the current block (loop wraps included).
    fn beat_at(&self, timing: u32) -> f64 {
        let seg = self.segments[..self.n_segments]
            .iter()
            .rev()
            .find(|s| s.first_sample <= timing)
            .copied()
            .unwrap_or_default();
        seg.beat0 + (timing - seg.first_sample) as f64 * self.beats_per_sample
    }

    /// A note the producer played at `timing` in the current block: melody context for the
    /// worker and part of the held chord. Call after `process_block` for the same block.
    pub fn input_note(&mut self, pitch: u8, velocity: u8, timing: u32) {
        self.melody_note(pitch, velocity, timing);
        self.chord_note(pitch, true, timing);
    }

    /// A note of the producer's melody only (the chord arrives on another channel).
    pub fn melody_note(&mut self, pitch: u8, velocity: u8, timing: u32) {
        let beat = self.beat_at(timing);
        self.report(MonitorEvent::Note {
            beat,
            pitch,
            velocity,
            on: true,
            input: true,
        });
        if self
            .to_worker
            .try_send(ToWorker::Input(InputNote {
                pitch,
                velocity,
                beat,
            }))
            .is_ok()
            && let Some(s) = self.settings
        {
            self.input_dirty |= s.mode == Mode::Continue || s.follow_input;
        }
    }

    /// A note of the producer's chord only, pressed (`on`) or released.
    pub fn chord_note(&mut self, pitch: u8, on: bool, timing: u32) {
        if on {
            self.held.note_on(pitch);
            self.chord_changed(self.beat_at(timing));
        } else {
            self.held.note_off(pitch);
        }
    }

    /// Sends the held chord to the worker when it changed: three or more pitch classes
    /// held together (so a legato melody's overlapping notes are not taken for chords).
    /// Releasing a chord keeps it: the harmony lasts until the next one.
    fn chord_changed(&mut self, beat: f64) {
        let mask = self.held.mask();
        if mask.count_ones() < 3 || mask == self.held_chord {
            return;
        }
        let Some(chord) = self.held.chord() else {
            return;
        };
        if self
            .to_worker
            .try_send(ToWorker::Chord { beat, chord })
            .is_ok()
        {
            self.held_chord = mask;
            if let Some(s) = self.settings {
                self.input_dirty |= s.chord_fit > 0.0;
            }
        }
    }

    /// The producer released a note (the editor, capture and the held chord).
    pub fn input_note_off(&mut self, pitch: u8, timing: u32) {
        self.held.note_off(pitch);
        let beat = self.beat_at(timing);
        self.report(MonitorEvent::Note {
            beat,
            pitch,
            velocity: 0,
            on: false,
            input: true,
        });
    }

    /// Runs one block and returns its note events, sorted by timing.
    pub fn process_block(
        &mut self,
        transport: &BlockTransport,
        controls: &BlockControls,
        block_len: usize,
    ) -> &[OutEvent] {
        // Drain finished bars, then send what reset or panic left pending.
        self.n_events = 0;
        self.n_segments = 0;
        self.blocks += 1;
        self.receive();
        if self.all_off_pending {
            self.all_notes_off(0);
            self.all_off_pending = false;
        }
        if self.panic_pending {
            self.push(0, controls.channel, OutKind::AllNotesOff);
            let _ = self.to_worker.try_send(ToWorker::ClearInput);
            self.held.clear();
            self.held_chord = 0;
            self.panic_pending = false;
        }
        let Some(clock) = read_clock(transport, controls, self.free_beat) else {
            return self.events(); // no usable sample rate: nothing can be timed
        };
        self.beats_per_sample = clock.beats_per_sample;
        // One segment from the block start until loop wraps (if any) split it.
        self.segments[0] = Segment {
            beat0: clock.pos,
            ..Segment::default()
        };
        self.n_segments = 1;
        let grid = bar_grid(transport, &clock);
        self.grid = Some(grid);

        // Stopped: release everything once, then prepare the bars under the playhead so
        // pressing Play starts on time with the current settings.
        if !clock.running {
            self.rest(&clock, grid, controls);
            return self.events();
        }

        // Rolling: is this block a continuation, a loop wrap, a start or a jump?
        let entry = self.classify(&clock);
        let from = match entry {
            Entry::Smooth => self.continuation.map_or(clock.pos, |c| c.played_until),
            Entry::LoopWrap => {
                let start = clock.looping.map_or(clock.pos, |l| l.start);
                self.wrap_loop(0, start);
                start - 1e-9
            }
            Entry::Start | Entry::Jump => {
                if entry == Entry::Jump {
                    self.stats.resyncs += 1;
                    self.all_notes_off(0);
                    self.report(MonitorEvent::Resync);
                }
                self.new_generation();
                self.chase_at = Some(clock.pos);
                clock.pos + (SAMPLE_EPS - 1.0) * clock.beats_per_sample
            }
        };
        let at_rest = matches!(entry, Entry::Start | Entry::Jump);

        // Settings, requests, and (offline only) waiting for the bars this block plays.
        let block_end = clock.pos + block_len as f64 * clock.beats_per_sample;
        self.apply_settings(controls, clock.meter, grid, clock.pos, block_end, at_rest);
        self.ensure_requests(grid, &clock);
        self.split_into_segments(&clock, block_len, from);
        if controls.offline {
            self.offline_budget.render(block_len, transport.sample_rate);
            self.wait_for_bars(grid, &clock);
        }

        // Emit each segment; a loop wrap between segments ends what sounds and chases.
        let mut played_until = from;
        for i in 0..self.n_segments {
            let seg = self.segments[i];
            if i > 0 {
                let start = clock.looping.map_or(seg.beat0, |l| l.start);
                self.wrap_loop(seg.first_sample, start);
            }
            played_until = self.emit(grid, seg, controls.channel);
        }
        let last = self.segments[self.n_segments - 1];
        let next_pos =
            last.beat0 + (block_len as u32 - last.first_sample) as f64 * clock.beats_per_sample;
        self.continuation = Some(Continuation {
            expected_pos: next_pos,
            played_until,
        });
        if !clock.host_timeline {
            self.free_beat = next_pos;
        }
        self.report(MonitorEvent::Playhead {
            beat: next_pos,
            tempo: clock.tempo,
            playing: true,
            meter: clock.meter,
        });
        self.events()
    }

    pub fn events(&self) -> &[OutEvent] {
        &self.events[..self.n_events]
    }

    /// A stopped block: notes off once after rolling, a new generation when the playhead
    /// moved, and the bars under it requested with the current settings.
    fn rest(&mut self, clock: &Clock, grid: BarGrid, controls: &BlockControls) {
        let tol = drift_tolerance(clock.beats_per_sample);
        let moved = self.rest_pos.is_none_or(|p| (p - clock.pos).abs() > tol);
        if self.continuation.take().is_some() {
            self.all_notes_off(0);
            self.report(MonitorEvent::Resync);
        }
        if moved {
            self.new_generation();
        }
        self.rest_pos = Some(clock.pos);
        self.report(MonitorEvent::Playhead {
            beat: clock.pos,
            tempo: clock.tempo,
            playing: false,
            meter: clock.meter,
        });
        self.apply_settings(controls, clock.meter, grid, clock.pos, clock.pos, true);
        self.ensure_requests(grid, clock);
    }

    fn classify(&mut self, clock: &Clock) -> Entry {
        self.rest_pos = None;
        let Some(c) = self.continuation else {
            return Entry::Start;
        };
        let tol = drift_tolerance(clock.beats_per_sample);
        if (clock.pos - c.expected_pos).abs() <= tol {
            return Entry::Smooth;
        }
        // A host that wraps at the block boundary: the last block ended at the loop end and
        // this one starts at the loop start (plus the same overshoot, for hosts that don't
        // split blocks at the loop end).
        if let Some(l) = clock.looping
            && c.expected_pos >= l.end - tol
            && ((c.expected_pos - l.end) - (clock.pos - l.start)).abs() <= tol
        {
            return Entry::LoopWrap;
        }
        Entry::Jump
    }

    /// At a loop wrap: whatever sounds ends here, and notes under way at the loop start
    /// are chased.
    fn wrap_loop(&mut self, sample: u32, loop_start: f64) {
        self.stats.loop_wraps += 1;
        self.all_notes_off(sample);
        self.chase_at = Some(loop_start);
    }

    /// The worker drops requests sent before this (a jump, stop or locate made them stale);
    /// requests still pending are sent again.
    fn new_generation(&mut self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        for slot in self.slots.iter_mut().filter(|s| s.bar != EMPTY_SLOT) {
            if slot.content_epoch != Some(slot.epoch) {
                slot.needs_request = true;
            }
        }
    }

    /// Cuts the block at every loop wrap inside it. `from` is where the first segment's
    /// notes start (exclusive).
    fn split_into_segments(&mut self, clock: &Clock, block_len: usize, from: f64) {
        let bps = clock.beats_per_sample;
        let window_end = |first: u32, end: u32, beat0: f64| {
            beat0 + ((end - first) as f64 - 1.0 + SAMPLE_EPS) * bps
        };
        let (mut first, mut beat0, mut from) = (0u32, clock.pos, from);
        self.n_segments = 0;
        loop {
            let mut end = block_len as u32;
            let wraps = clock.looping.filter(|l| beat0 < l.end);
            if let Some(l) = wraps
                && self.n_segments + 1 < MAX_SEGMENTS
            {
                let wrap = first as f64 + ((l.end - beat0) / bps - SAMPLE_EPS).ceil().max(0.0);
                if wrap < end as f64 {
                    end = wrap as u32;
                }
            }
            self.segments[self.n_segments] = Segment {
                first_sample: first,
                end_sample: end,
                beat0,
                from,
                to: window_end(first, end, beat0),
            };
            self.n_segments += 1;
            if end as usize >= block_len {
                break;
            }
            let l = clock.looping.expect("only a loop splits a block");
            (first, beat0, from) = (end, l.start, l.start - 1e-9);
        }
    }

    /// Bumps the settings version when anything that shapes the notes changed, and marks the
    /// affected bars for regeneration. Rolling, the bar under the playhead changes from the
    /// next bar or beat; every other bar (ahead, or behind for a loop or jump to replay) is
    /// redone. At rest (stopped, starting, or just jumped) the current bar is redone too and
    /// stale notes are dropped, so a change made while stopped is heard from the first note.
    fn apply_settings(
        &mut self,
        controls: &BlockControls,
        meter: Meter,
        grid: BarGrid,
        pos: f64,
        block_end: f64,
        at_rest: bool,
    ) {
        let (settings, loop_boundary) =
            self.deferred_change(controls.settings, controls.quantize, grid, at_rest);
        let meter_changed = self.meter.is_some_and(|m| m != meter);
        let changed =
            self.settings.is_some_and(|s| s != settings) || meter_changed || self.input_dirty;
        self.settings = Some(settings);
        self.meter = Some(meter);
        self.input_dirty = false;
        if !changed {
            return;
        }
        self.epoch = self.epoch.wrapping_add(1);
        // The bar under the playhead: kept, spliced from the next beat, or redone.
        let mut redo_current = at_rest;
        let mut splice = None;
        if meter_changed {
            // A new meter redraws the bar lines: everything is redone.
            redo_current = true;
            self.all_notes_off(0);
        } else if !at_rest && controls.quantize == Quantize::Beat {
            let pulse = meter.pulse();
            let next_beat = ((block_end - grid.start) / pulse - 1e-9).ceil() * pulse;
            if next_beat < grid.length - 1e-9 {
                splice = Some(next_beat.max(pos - grid.start));
            }
        }
        // Bars from the playhead up to here keep their notes.
        let keep_until = match loop_boundary {
            Some(bar) => bar,
            None if redo_current || splice.is_some() => grid.bar,
            None => grid.bar + 1,
        };
        let epoch = self.epoch;
        for slot in self.slots.iter_mut().filter(|s| s.bar != EMPTY_SLOT) {
            let current = slot.bar == grid.bar;
            if (grid.bar..keep_until).contains(&slot.bar) {
                continue;
            }
            slot.epoch = epoch;
            slot.needs_request = true;
            slot.splice_from = if current { splice } else { None };
            if redo_current || at_rest {
                slot.content_epoch = None;
            }
        }
    }

    /// Changes that wait for a boundary instead of cutting into what plays: while a loop
    /// plays, a change of only Loop length, Evolve, Morph, Vary or a hook slot waits for
    /// the loop's end; with *Change
    /// at* on "Next phrase", any change waits for the next 4-bar phrase. Returns the
    /// settings to use now, and the boundary bar once the lookahead reaches it (the change
    /// applies from there).
    fn deferred_change(
        &self,
        wanted: GenSettings,
        quantize: Quantize,
        grid: BarGrid,
        at_rest: bool,
    ) -> (GenSettings, Option<i64>) {
        let Some(now) = self.settings else {
            return (wanted, None);
        };
        let loop_only = GenSettings {
            loop_bars: wanted.loop_bars,
            evolve: wanted.evolve,
            morph: wanted.morph,
            vary_step: wanted.vary_step,
            hooks_version: wanted.hooks_version,
            ..now
        } == wanted;
        let length = if now.loop_bars > 0 && loop_only {
            now.loop_bars as i64
        } else if quantize == Quantize::Phrase {
            PHRASE_BARS as i64
        } else {
            0
        };
        if at_rest || length == 0 || now == wanted {
            return (wanted, None);
        }
        let boundary = (grid.bar.div_euclid(length) + 1) * length;
        if grid.bar + LOOKAHEAD_BARS as i64 >= boundary {
            (wanted, Some(boundary))
        } else {
            (now, None)
        }
    }

    /// The bars to have ready: the current one and the next ones in play order, following
    /// the loop back to its start.
    fn wanted_bars(grid: BarGrid, clock: &Clock) -> ([i64; LOOKAHEAD_BARS + 1], usize) {
        let mut bars = [0i64; LOOKAHEAD_BARS + 1];
        let mut n = 0;
        let mut bar = grid.bar_of(clock.pos);
        let looping = clock.looping.filter(|l| clock.pos < l.end);
        for _ in 0..=LOOKAHEAD_BARS {
            if !bars[..n].contains(&bar) {
                bars[n] = bar;
                n += 1;
            }
            bar += 1;
            if let Some(l) = looping
                && grid.start_of(bar) >= l.end - 1e-9
            {
                bar = grid.bar_of(l.start);
            }
        }
        (bars, n)
    }

    fn slot_index(&self, bar: i64) -> Option<usize> {
        self.slots.iter().position(|s| s.bar == bar)
    }

    /// Makes sure every wanted bar has a slot and a request on its way.
    fn ensure_requests(&mut self, grid: BarGrid, clock: &Clock) {
        let Some(settings) = self.settings else {
            return;
        };
        let (wanted, n) = Self::wanted_bars(grid, clock);
        let previous = grid.bar_of(clock.pos) - 1;
        let generation = self.generation.load(Ordering::Relaxed);
        for &bar in &wanted[..n] {
            let idx = match self.slot_index(bar) {
                Some(i) => i,
                None => {
                    // Reuse the slot wanted longest ago; never one wanted now, and keep
                    // the previous bar (a jump back by a bar replays it).
                    let i = (0..N_SLOTS)
                        .filter(|&i| {
                            let b = self.slots[i].bar;
                            !wanted[..n].contains(&b) && b != previous
                        })
                        .min_by_key(|&i| self.slots[i].last_wanted)
                        .expect("more slots than wanted bars");
                    self.slots[i] = Slot {
                        bar,
                        epoch: self.epoch,
                        needs_request: true,
                        ..Slot::default()
                    };
                    i
                }
            };
            let slot = &mut self.slots[idx];
            slot.last_wanted = self.blocks;
            if slot.needs_request {
                let msg = ToWorker::Bar {
                    epoch: slot.epoch,
                    generation,
                    bar_index: bar,
                    meter: clock.meter,
                    settings,
                };
                if self.to_worker.try_send(msg).is_ok() {
                    slot.needs_request = false;
                } else {
                    self.stats.request_retries += 1;
                }
            }
        }
    }

    /// Takes every finished bar the worker has sent.
    fn receive(&mut self) {
        while let Ok(ready) = self.from_worker.try_recv() {
            self.accept(ready);
        }
    }

    fn accept(&mut self, ready: BarReady) {
        let Some(idx) = self.slot_index(ready.bar_index) else {
            return; // no longer wanted
        };
        let slot = &mut self.slots[idx];
        if slot.epoch != ready.epoch {
            return; // superseded
        }
        let had_content = slot.content_epoch.is_some();
        match slot.splice_from.take() {
            Some(from) if had_content => slot.notes.splice_from(&ready.notes, from),
            _ => slot.notes = ready.notes,
        }
        slot.content_epoch = Some(ready.epoch);
        let notes = slot.notes;
        let Some(grid) = self.grid else {
            return;
        };
        let start_beat = grid.start_of(ready.bar_index);
        // A bar that arrives after its start (the worker was late) starts the note that
        // should be sounding now.
        if let Some(c) = self.continuation
            && !had_content
            && grid.bar_of(c.played_until) == ready.bar_index
            && start_beat < c.played_until
        {
            self.chase_at = Some(c.played_until);
        }
        self.report(MonitorEvent::Bar {
            bar_index: ready.bar_index,
            start_beat,
            notes,
        });
    }

    /// Offline render only: wait until the bars this block plays carry current notes, as
    /// long as the render's [`OfflineBudget`] allows.
    fn wait_for_bars(&mut self, grid: BarGrid, clock: &Clock) {
        let started = Instant::now();
        let missing =
            self.wait_until_current(grid, clock, started + self.offline_budget.allowance());
        let waited = started.elapsed();
        self.offline_budget.waited += waited;
        self.stats.offline_waited_ms = millis(self.offline_budget.waited);
        let Some(bar) = missing else {
            self.offline_budget.behind = false;
            return;
        };
        self.stats.offline_gave_up += 1;
        // Ask again next block: an answer dropped while the host was not calling process
        // (the worker's queue was full) never comes.
        if let Some(i) = self.slot_index(bar) {
            self.slots[i].needs_request = true;
        }
        if !std::mem::replace(&mut self.offline_budget.behind, true) {
            let _ = self.to_worker.try_send(ToWorker::GaveUp {
                bar_index: bar,
                waited_ms: millis(waited),
            });
        }
    }

    /// Waits until `deadline` for the bars of this block's segments; the first bar still
    /// not current then, if any.
    fn wait_until_current(
        &mut self,
        grid: BarGrid,
        clock: &Clock,
        deadline: Instant,
    ) -> Option<i64> {
        for i in 0..self.n_segments {
            let seg = self.segments[i];
            let mut bar = grid.bar_of(seg.beat0);
            while grid.start_of(bar) <= seg.to {
                loop {
                    let ready = self
                        .slot_index(bar)
                        .is_none_or(|i| self.slots[i].is_current());
                    if ready {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Some(bar);
                    }
                    self.ensure_requests(grid, clock);
                    std::thread::sleep(Duration::from_micros(50));
                    self.receive();
                }
                bar += 1;
            }
        }
        None
    }

    /// Emits note-offs and note-ons in time order for one segment; returns the beat up to
    /// which notes were played.
    fn emit(&mut self, grid: BarGrid, seg: Segment, channel: u8) -> f64 {
        let bps = self.beats_per_sample;
        let sample_of = |beat: f64| -> i64 {
            let offset = ((beat - seg.beat0) / bps - SAMPLE_EPS).ceil();
            seg.first_sample as i64 + offset.clamp(0.0, 1e12) as i64
        };
        if let Some(at) = self.chase_at.take() {
            self.chase(grid, at, seg.from, seg.first_sample, channel);
        }
        let mut cursor = (grid.bar_of(seg.from), 0usize);
        loop {
            if self.n_events + 2 >= MAX_EVENTS {
                // The rest waits for the next block (it plays on its first sample).
                return self
                    .peek_note(grid, &mut cursor, seg.from, seg.to)
                    .map_or(seg.to, |(_, beat)| beat - 1e-9);
            }
            let next_off = self
                .sounding
                .iter()
                .enumerate()
                .filter_map(|(k, s)| s.map(|s| (k, s)))
                .min_by(|a, b| a.1.end.total_cmp(&b.1.end));
            let next_on = self.peek_note(grid, &mut cursor, seg.from, seg.to);
            match (next_off, next_on) {
                (Some((key, off)), on) if on.is_none_or(|(_, beat)| off.end <= beat) => {
                    let at = sample_of(off.end);
                    if at >= seg.end_sample as i64 {
                        break; // any note-on is later still
                    }
                    self.sounding[key] = None;
                    self.push(at as u32, off.channel, OutKind::NoteOff { key: key as u8 });
                    self.report(MonitorEvent::Note {
                        beat: off.end,
                        pitch: key as u8,
                        velocity: 0,
                        on: false,
                        input: false,
                    });
                }
                (_, Some((note, beat))) => {
                    let at = sample_of(beat) as u32;
                    self.start_note(note, beat, beat + note.duration, at, channel);
                    cursor.1 += 1;
                }
                _ => break,
            }
        }
        // A host running slightly behind with a tiny block may end before `from`.
        seg.to.max(seg.from)
    }

    /// The next note starting in `(from, to]` at or after the cursor (bar, index); counts
    /// bars that have no notes yet when their time comes.
    fn peek_note(
        &mut self,
        grid: BarGrid,
        cursor: &mut (i64, usize),
        from: f64,
        to: f64,
    ) -> Option<(BeatNote, f64)> {
        loop {
            let start = grid.start_of(cursor.0);
            if start > to {
                return None;
            }
            if let Some(i) = self.slot_index(cursor.0) {
                let slot = &mut self.slots[i];
                if slot.content_epoch.is_some() {
                    while let Some(&n) = slot.notes.as_slice().get(cursor.1) {
                        let beat = start + n.start;
                        if beat <= from {
                            cursor.1 += 1;
                            continue;
                        }
                        return (beat <= to).then_some((n, beat));
                    }
                } else if !slot.late_counted {
                    slot.late_counted = true;
                    self.stats.late_bars += 1;
                    // Asked again once, in case its answer was dropped (the worker's queue
                    // keeps one request per bar, so a request still waiting costs nothing).
                    slot.needs_request = true;
                }
            }
            *cursor = (cursor.0 + 1, 0);
        }
    }

    /// Starts, at `sample`, the notes of the bar at `at` that began before the window and
    /// still have enough to play (what a DAW calls chasing notes).
    fn chase(&mut self, grid: BarGrid, at: f64, from: f64, sample: u32, channel: u8) {
        let bar = grid.bar_of(at);
        let Some(i) = self.slot_index(bar) else {
            return;
        };
        if self.slots[i].content_epoch.is_none() {
            return;
        }
        let start = grid.start_of(bar);
        let notes = self.slots[i].notes;
        for n in notes.as_slice() {
            let (beat, end) = (start + n.start, start + n.start + n.duration);
            if beat > from || beat >= at {
                break; // plays in the window itself
            }
            let remaining = end - at;
            if remaining > 1e-3 && remaining >= CHASE_BEATS.min(n.duration * CHASE_SHARE) {
                self.stats.chased_notes += 1;
                self.start_note(*n, at, end, sample, channel);
            }
        }
    }

    /// Note-on at `sample` (after a note-off if its key still sounds), sounding until `end`.
    fn start_note(&mut self, note: BeatNote, beat: f64, end: f64, sample: u32, channel: u8) {
        if let Some(s) = self.sounding[note.pitch as usize].take() {
            self.push(sample, s.channel, OutKind::NoteOff { key: note.pitch });
        }
        self.push(
            sample,
            channel,
            OutKind::NoteOn {
                key: note.pitch,
                velocity: note.velocity,
            },
        );
        self.sounding[note.pitch as usize] = Some(Sounding { end, channel });
        self.report(MonitorEvent::Note {
            beat,
            pitch: note.pitch,
            velocity: note.velocity,
            on: true,
            input: false,
        });
    }

    fn all_notes_off(&mut self, timing: u32) {
        let beat = self.beat_at(timing);
        for key in 0..128 {
            if let Some(s) = self.sounding[key].take() {
                self.push(timing, s.channel, OutKind::NoteOff { key: key as u8 });
                self.report(MonitorEvent::Note {
                    beat,
                    pitch: key as u8,
                    velocity: 0,
                    on: false,
                    input: false,
                });
            }
        }
    }

    fn push(&mut self, timing: u32, channel: u8, kind: OutKind) {
        if self.n_events < MAX_EVENTS {
            self.events[self.n_events] = OutEvent {
                timing,
                channel,
                kind,
            };
            self.n_events += 1;
        }
    }
}

/// Sanitises the host clock: sample rate, tempo, meter, position (or our free-running
/// one), loop range. `None` when there is no usable sample rate.
fn read_clock(t: &BlockTransport, controls: &BlockControls, free_beat: f64) -> Option<Clock> {
    let sample_rate = Some(t.sample_rate).filter(|sr| sr.is_finite() && *sr >= 1000.0)?;
    let tempo = t
        .tempo
        .filter(|t| t.is_finite() && (1.0..=1000.0).contains(t))
        .unwrap_or(controls.free_run_tempo.clamp(20.0, 999.0));
    let host_pos = t.pos_beats.filter(|p| p.is_finite() && p.abs() < 1e9);
    let (pos, running) = match host_pos {
        Some(p) => (p, t.playing && controls.enabled),
        None => (free_beat, controls.enabled),
    };
    let looping = t
        .loop_range
        .filter(|&(s, e)| s.is_finite() && e.is_finite() && s.abs() < 1e9 && e - s >= 1e-3)
        .filter(|_| host_pos.is_some())
        .map(|(start, end)| LoopRange { start, end });
    Some(Clock {
        pos,
        beats_per_sample: tempo / 60.0 / sample_rate,
        tempo,
        meter: Meter::from_host(t.time_sig_numerator, t.time_sig_denominator),
        running,
        host_timeline: host_pos.is_some(),
        looping,
    })
}

/// The bar grid for this block: the host's bar info when it is consistent with the
/// position, otherwise bars counted from beat 0 in the current meter.
fn bar_grid(t: &BlockTransport, clock: &Clock) -> BarGrid {
    let length = clock.meter.beats_per_bar();
    let p = clock.pos;
    if let (true, Some(start), Some(number)) =
        (clock.host_timeline, t.bar_start_beats, t.bar_number)
        && start.is_finite()
        && start <= p + 1e-9
        && p - start < length + 1e-9
    {
        return BarGrid {
            bar: number,
            start,
            length,
        };
    }
    let bar = (p / length + 1e-9).floor();
    BarGrid {
        bar: bar as i64,
        start: bar * length,
        length,
    }
}
