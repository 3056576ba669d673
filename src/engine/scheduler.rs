//! The audio-thread half of the engine: from host transport + generated bars to
//! sample-accurate note events.
//!
//! Everything here is allocation-free: bars live in a fixed ring of slots, sounding notes
//! in a 128-entry table, output events in a fixed buffer.
//!
//! Timing rule: a note at beat `x` goes to the first sample at or after `x` (within a
//! millionth of a sample), so every note lands within one sample of its beat position
//! whatever the block size, tempo or sample rate.

use super::messages::{BarNotes, BarReady, InputNote, ToWorker};
use super::monitor::MonitorEvent;
use crate::generator::{GenSettings, Mode};
use crate::music::Meter;
use crossbeam_channel::{Receiver, Sender};
use nice_plug::prelude::Enum;
use std::time::{Duration, Instant};

/// Bars kept in flight: the current one, the lookahead, and a margin for loops.
const N_SLOTS: usize = 8;
/// Bars requested beyond the current one (so at least one full bar is always ahead).
const LOOKAHEAD_BARS: i64 = 2;
/// Output events per block. Far above what a melody needs; excess notes wait a block.
pub const MAX_EVENTS: usize = 256;
/// Longest an offline render waits for a bar before giving up on it.
const OFFLINE_WAIT: Duration = Duration::from_secs(10);

/// When a parameter or seed change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum Quantize {
    #[name = "Next bar"]
    Bar,
    #[name = "Next beat"]
    Beat,
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
    cursor: usize,
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
            cursor: 0,
            notes: BarNotes::default(),
        }
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
}

/// Counters for the status line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Bars whose notes were not ready when they had to play (realtime only).
    pub late_bars: u32,
    /// Requests the worker queue had no room for (retried next block).
    pub request_retries: u32,
    /// Transport discontinuities (jumps, loop wraps) seen.
    pub resyncs: u32,
}

pub struct Scheduler {
    to_worker: Sender<ToWorker>,
    from_worker: Receiver<BarReady>,
    slots: [Slot; N_SLOTS],
    sounding: [Option<Sounding>; 128],
    events: [OutEvent; MAX_EVENTS],
    n_events: usize,
    epoch: u32,
    settings: Option<GenSettings>,
    meter: Option<Meter>,
    /// Beat where the next block should start if the transport runs on smoothly.
    expected_next: Option<f64>,
    free_beat: f64,
    grid: Option<BarGrid>,
    all_off_pending: bool,
    panic_pending: bool,
    input_dirty: bool,
    block_start: f64,
    beats_per_sample: f64,
    /// Where played notes and upcoming bars are reported (editor, capture), if anywhere.
    monitor: Option<Sender<MonitorEvent>>,
    pub stats: SchedulerStats,
}

impl Scheduler {
    pub fn new(to_worker: Sender<ToWorker>, from_worker: Receiver<BarReady>) -> Self {
        Self {
            to_worker,
            from_worker,
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
            expected_next: None,
            free_beat: 0.0,
            grid: None,
            all_off_pending: false,
            panic_pending: false,
            input_dirty: false,
            block_start: 0.0,
            beats_per_sample: 0.0,
            monitor: None,
            stats: SchedulerStats::default(),
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

    /// Host reset / re-activation: silence at the start of the next block and resync.
    pub fn reset(&mut self) {
        self.all_off_pending = true;
        self.expected_next = None;
        for slot in &mut self.slots {
            slot.cursor = 0;
        }
    }

    /// Panic: note-offs for everything, CC 123, and forget the producer's input.
    pub fn panic(&mut self) {
        self.reset();
        self.panic_pending = true;
    }

    /// Whether any generated note is sounding.
    pub fn sounding_notes(&self) -> usize {
        self.sounding.iter().flatten().count()
    }

    /// A note the producer played at `timing` in the current block; goes to the worker as
    /// context. Call after `process_block` for the same block.
    pub fn input_note(&mut self, pitch: u8, velocity: u8, timing: u32) {
        let beat = self.block_start + timing as f64 * self.beats_per_sample;
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

    /// The producer released a note (for the editor and capture only).
    pub fn input_note_off(&mut self, pitch: u8, timing: u32) {
        let beat = self.block_start + timing as f64 * self.beats_per_sample;
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
        self.n_events = 0;
        self.receive();
        if self.all_off_pending {
            self.all_notes_off(0);
            self.all_off_pending = false;
        }
        if self.panic_pending {
            self.push(0, controls.channel, OutKind::AllNotesOff);
            let _ = self.to_worker.try_send(ToWorker::ClearInput);
            self.panic_pending = false;
        }
        let sample_rate = if transport.sample_rate.is_finite() && transport.sample_rate >= 1000.0 {
            transport.sample_rate
        } else {
            return self.events();
        };
        let tempo = transport
            .tempo
            .filter(|t| t.is_finite() && (1.0..=1000.0).contains(t))
            .unwrap_or(controls.free_run_tempo.clamp(20.0, 999.0));
        let meter = Meter::from_host(transport.time_sig_numerator, transport.time_sig_denominator);
        let bps = tempo / 60.0 / sample_rate;
        let host_pos = transport
            .pos_beats
            .filter(|p| p.is_finite() && p.abs() < 1e9);
        let (pos, running) = match host_pos {
            Some(p) => (p, transport.playing && controls.enabled),
            None => (self.free_beat, controls.enabled),
        };
        self.block_start = pos;
        self.beats_per_sample = bps;
        let grid = bar_grid(transport, host_pos, pos, meter);
        self.grid = Some(grid);

        if !running {
            if self.expected_next.take().is_some() {
                self.all_notes_off(0);
                self.report(MonitorEvent::Resync);
            }
            self.report(MonitorEvent::Playhead {
                beat: pos,
                tempo,
                playing: false,
                meter,
            });
            // Ask for the bars under the (stopped) playhead so pressing play starts on time.
            self.apply_settings(controls, meter, grid, pos, pos);
            self.ensure_requests(grid, meter);
            return self.events();
        }

        let block_end = pos + block_len as f64 * bps;
        if let Some(expected) = self.expected_next
            && (pos - expected).abs() > bps + 1e-9
        {
            self.stats.resyncs += 1;
            self.all_notes_off(0);
            self.report(MonitorEvent::Resync);
            for slot in &mut self.slots {
                slot.cursor = 0;
            }
        }
        self.apply_settings(controls, meter, grid, pos, block_end);
        self.ensure_requests(grid, meter);
        if controls.offline {
            self.wait_for_bars(grid, meter, block_end);
        }
        self.emit(grid, pos, bps, block_len, controls.channel);
        self.report(MonitorEvent::Playhead {
            beat: block_end,
            tempo,
            playing: true,
            meter,
        });
        self.expected_next = Some(block_end);
        if host_pos.is_none() {
            self.free_beat = block_end;
        }
        self.events()
    }

    pub fn events(&self) -> &[OutEvent] {
        &self.events[..self.n_events]
    }

    /// Bumps the settings version when anything that shapes the notes changed, and marks the
    /// affected bars for regeneration: from the next bar, or the next beat.
    fn apply_settings(
        &mut self,
        controls: &BlockControls,
        meter: Meter,
        grid: BarGrid,
        pos: f64,
        block_end: f64,
    ) {
        let settings = controls.settings;
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
        // A new meter redraws the bar lines: everything from the current bar is redone.
        let mut first = grid.bar + 1;
        let mut splice = None;
        if meter_changed {
            first = grid.bar;
            self.all_notes_off(0);
        } else if controls.quantize == Quantize::Beat {
            let pulse = meter.pulse();
            let next_beat = ((block_end - grid.start) / pulse - 1e-9).ceil() * pulse;
            if next_beat < grid.length - 1e-9 {
                first = grid.bar;
                splice = Some(next_beat.max(pos - grid.start));
            }
        }
        let epoch = self.epoch;
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.bar != EMPTY_SLOT && s.bar >= first)
        {
            slot.epoch = epoch;
            slot.needs_request = true;
            slot.splice_from = if slot.bar == grid.bar { splice } else { None };
        }
    }

    fn ensure_requests(&mut self, grid: BarGrid, meter: Meter) {
        let Some(settings) = self.settings else {
            return;
        };
        for bar in grid.bar..=grid.bar + LOOKAHEAD_BARS {
            let slot = &mut self.slots[bar.rem_euclid(N_SLOTS as i64) as usize];
            if slot.bar != bar {
                *slot = Slot {
                    bar,
                    epoch: self.epoch,
                    needs_request: true,
                    ..Slot::default()
                };
            }
            if slot.needs_request {
                let msg = ToWorker::Bar {
                    epoch: slot.epoch,
                    bar_index: bar,
                    meter,
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
        let resume_at = self.expected_next;
        let bar_start = self.grid.map(|g| g.start_of(ready.bar_index));
        let slot = &mut self.slots[ready.bar_index.rem_euclid(N_SLOTS as i64) as usize];
        if slot.bar != ready.bar_index || slot.epoch != ready.epoch {
            return; // superseded
        }
        match slot.splice_from.take() {
            Some(from) if slot.content_epoch.is_some() => {
                slot.notes.splice_from(&ready.notes, from)
            }
            _ => slot.notes = ready.notes,
        }
        slot.content_epoch = Some(ready.epoch);
        let notes = slot.notes;
        // Notes before the point the playhead already passed are not played again.
        slot.cursor = match (resume_at, bar_start) {
            (Some(at), Some(start)) => slot
                .notes
                .as_slice()
                .iter()
                .take_while(|n| start + n.start < at - 1e-9)
                .count(),
            _ => 0,
        };
        if let Some(start_beat) = bar_start {
            self.report(MonitorEvent::Bar {
                bar_index: ready.bar_index,
                start_beat,
                notes,
            });
        }
    }

    /// Offline render only: block until the bars under this block carry current notes.
    fn wait_for_bars(&mut self, grid: BarGrid, meter: Meter, block_end: f64) {
        let deadline = Instant::now() + OFFLINE_WAIT;
        let mut bar = grid.bar;
        while grid.start_of(bar) < block_end {
            loop {
                let slot = &self.slots[bar.rem_euclid(N_SLOTS as i64) as usize];
                if slot.bar == bar && slot.content_epoch == Some(slot.epoch) && !slot.needs_request
                {
                    break;
                }
                if Instant::now() > deadline {
                    return;
                }
                self.ensure_requests(grid, meter);
                std::thread::sleep(Duration::from_micros(100));
                self.receive();
            }
            bar += 1;
        }
    }

    /// Emits note-offs and note-ons in time order until the end of the block.
    fn emit(&mut self, grid: BarGrid, block_start: f64, bps: f64, block_len: usize, channel: u8) {
        let sample_of = |beat: f64| ((beat - block_start) / bps - 1e-6).ceil() as i64;
        let last_sample = block_len as i64 - 1;
        let block_end = block_start + block_len as f64 * bps;
        loop {
            let next_off = self
                .sounding
                .iter()
                .enumerate()
                .filter_map(|(k, s)| s.map(|s| (k, s)))
                .min_by(|a, b| a.1.end.total_cmp(&b.1.end));
            let next_on = self.next_note_on(grid, block_end, &sample_of);
            let take_off = match (next_off, next_on) {
                (Some((_, off)), Some((_, _, on_beat))) => off.end <= on_beat,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_off {
                let (key, s) = next_off.expect("checked");
                let at = sample_of(s.end).max(0);
                if at > last_sample {
                    // Any note-on is at or after this off, so it is beyond the block too.
                    break;
                }
                self.sounding[key] = None;
                self.push(at as u32, s.channel, OutKind::NoteOff { key: key as u8 });
                self.report(MonitorEvent::Note {
                    beat: s.end,
                    pitch: key as u8,
                    velocity: 0,
                    on: false,
                    input: false,
                });
            } else {
                let (slot_idx, note_idx, beat) = next_on.expect("checked");
                if !self.note_on(slot_idx, note_idx, beat, &sample_of, last_sample, channel) {
                    break;
                }
            }
            if self.n_events + 2 >= MAX_EVENTS {
                break;
            }
        }
    }

    /// Emits one note-on (after a note-off if its key still sounds). False if it is beyond
    /// the block.
    fn note_on(
        &mut self,
        slot_idx: usize,
        note_idx: usize,
        beat: f64,
        sample_of: &impl Fn(f64) -> i64,
        last_sample: i64,
        channel: u8,
    ) -> bool {
        let at = sample_of(beat);
        if at > last_sample {
            return false;
        }
        let note = self.slots[slot_idx].notes.as_slice()[note_idx];
        self.slots[slot_idx].cursor = note_idx + 1;
        if let Some(s) = self.sounding[note.pitch as usize].take() {
            self.push(at as u32, s.channel, OutKind::NoteOff { key: note.pitch });
        }
        self.push(
            at as u32,
            channel,
            OutKind::NoteOn {
                key: note.pitch,
                velocity: note.velocity,
            },
        );
        self.sounding[note.pitch as usize] = Some(Sounding {
            end: beat + note.duration,
            channel,
        });
        self.report(MonitorEvent::Note {
            beat,
            pitch: note.pitch,
            velocity: note.velocity,
            on: true,
            input: false,
        });
        true
    }

    /// The next unplayed note that starts before `block_end`: (slot, note index, beat).
    /// Notes more than a sample in the past are skipped (the worker was late or we jumped).
    fn next_note_on(
        &mut self,
        grid: BarGrid,
        block_end: f64,
        sample_of: &impl Fn(f64) -> i64,
    ) -> Option<(usize, usize, f64)> {
        let mut bar = grid.bar;
        while grid.start_of(bar) < block_end {
            let idx = bar.rem_euclid(N_SLOTS as i64) as usize;
            let start = grid.start_of(bar);
            let slot = &mut self.slots[idx];
            if slot.bar == bar && slot.content_epoch.is_some() {
                while let Some(n) = slot.notes.as_slice().get(slot.cursor) {
                    let beat = start + n.start;
                    if sample_of(beat) < 0 {
                        slot.cursor += 1;
                        continue;
                    }
                    return (beat < block_end).then_some((idx, slot.cursor, beat));
                }
            } else if !slot.late_counted && slot.bar == bar {
                slot.late_counted = true;
                self.stats.late_bars += 1;
            }
            bar += 1;
        }
        None
    }

    fn all_notes_off(&mut self, timing: u32) {
        for key in 0..128 {
            if let Some(s) = self.sounding[key].take() {
                self.push(timing, s.channel, OutKind::NoteOff { key: key as u8 });
                let beat = self.block_start + timing as f64 * self.beats_per_sample;
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

/// The bar grid for this block: the host's bar info when it is consistent with the
/// position, otherwise bars counted from beat 0 in the current meter.
fn bar_grid(t: &BlockTransport, host_pos: Option<f64>, pos: f64, meter: Meter) -> BarGrid {
    let length = meter.beats_per_bar();
    if let (Some(p), Some(start), Some(number)) = (host_pos, t.bar_start_beats, t.bar_number)
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
    let bar = (pos / length + 1e-9).floor();
    BarGrid {
        bar: bar as i64,
        start: bar * length,
        length,
    }
}
