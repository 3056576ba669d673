//! The CLAP / VST3 plugin: parameters in, transport in, MIDI in → MIDI out.
//!
//! `process()` only reads parameters, runs the scheduler and forwards events; all music
//! is made on the worker thread (see [`crate::engine`]).

pub mod companion;
pub mod params;

use crate::editor::EditorLink;
use crate::engine::monitor::{self, MonitorEvent};
use crate::engine::scheduler::BlockControls;
use crate::engine::{
    BlockTransport, EngineView, OutEvent, OutKind, Scheduler, Worker, WorkerStatus,
};
use crate::generator::Generator;
use crate::generator::loader::{self, ModelChoice};
use crate::generator::remote::RemoteGenerator;
use companion::{Companion, CompanionLinks};
use crossbeam_channel::Sender;
use nice_plug::midi::{Channel, Key, VoiceID};
use nice_plug::prelude::*;
pub use params::MelodistParams;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

pub struct Melodist {
    params: Arc<MelodistParams>,
    worker: Option<Worker>,
    scheduler: Option<Scheduler>,
    offline: bool,
    /// The active layout has a main input (audio passes through) rather than silence out.
    has_audio_input: bool,
    /// The audio thread's end of the monitor channel, and the UI's view of it.
    monitor_tx: Sender<MonitorEvent>,
    view: Arc<Mutex<EngineView>>,
    /// Last seen values of the trigger parameters, for edge detection.
    new_idea_was_on: bool,
    vary_was_on: bool,
    panic_was_on: bool,
    /// What the editor shares with the plugin: worker status, suggestions, its events.
    pub editor_link: EditorLink,
    /// Session log and preset suggestions, on their own thread.
    companion: Option<Companion>,
}

impl Default for Melodist {
    fn default() -> Self {
        let (monitor_tx, monitor_rx) = monitor::channel();
        Self {
            params: Arc::new(MelodistParams::default()),
            worker: None,
            scheduler: None,
            offline: false,
            has_audio_input: false,
            monitor_tx,
            view: Arc::new(Mutex::new(EngineView::new(monitor_rx))),
            new_idea_was_on: false,
            vary_was_on: false,
            panic_was_on: false,
            editor_link: EditorLink::with_saved_server(),
            companion: None,
        }
    }
}

impl Melodist {
    /// What the worker reports (model in use, fallback reason, latency), once activated.
    pub fn worker_status(&self) -> Option<Arc<WorkerStatus>> {
        self.worker.as_ref().map(|w| w.status.clone())
    }

    /// What played and what is about to play, for the editor and capture. Only UI threads
    /// lock it; the audio thread feeds it through a lock-free channel.
    pub fn engine_view(&self) -> Arc<Mutex<EngineView>> {
        self.view.clone()
    }
}

impl Plugin for Melodist {
    const NAME: &'static str = "Melodist";
    const VENDOR: &'static str = "Melodist";
    const URL: &'static str = "https://github.com/melodist/melodist";
    const EMAIL: &'static str = "hello@melodist.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    // Stereo out first: many hosts only offer instrument slots to plugins with audio out.
    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[
        AudioIOLayout {
            main_input_channels: None,
            main_output_channels: NonZeroU32::new(2),
            names: PortNames {
                layout: Some("MIDI generator (silent stereo out)"),
                main_output: Some("Silent output"),
                ..PortNames::const_default()
            },
            ..AudioIOLayout::const_default()
        },
        // For hosts that only load plugins with an audio input on a track: audio passes.
        AudioIOLayout {
            main_input_channels: NonZeroU32::new(2),
            main_output_channels: NonZeroU32::new(2),
            names: PortNames {
                layout: Some("MIDI generator (stereo audio through)"),
                main_input: Some("Audio in"),
                main_output: Some("Audio out"),
                ..PortNames::const_default()
            },
            ..AudioIOLayout::const_default()
        },
    ];
    // Notes are all Melodist reads; `MidiCCs` here would make VST3 hosts list 2,080
    // "MIDI CC" parameters. The output keeps CCs for panic's CC 123.
    const MIDI_INPUT: MidiConfig = MidiConfig::Basic;
    const MIDI_OUTPUT: MidiConfig = MidiConfig::MidiCCs;
    const SAMPLE_ACCURATE_AUTOMATION: bool = false;

    type Editor = nice_plug_egui::EguiEditor<crate::editor::EditorApp>;
    type SysExMessage = ();
    type BackgroundTask = ();

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn editor(&mut self, _async_executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        crate::editor::create(self.params.clone(), self.view.clone(), &self.editor_link)
    }

    fn activate(
        &mut self,
        layout: &AudioIOLayout,
        buffer_config: &BufferConfig,
        _context: &mut impl ActivateContext<Self>,
    ) -> bool {
        self.offline = buffer_config.process_mode == ProcessMode::Offline;
        self.has_audio_input = layout.main_input_channels.is_some();
        if self.worker.is_none() {
            let choice = ModelChoice::from_env();
            let server = self.editor_link.server.clone();
            // The *Model server* setting wraps whichever local model loads: it asks the
            // server first when on, and the local model writes what the server does not.
            let loader = Box::new(move || {
                let (local, fallback) = loader::load(&choice);
                let generator: Box<dyn Generator> = Box::new(RemoteGenerator::new(local, server));
                (generator, fallback)
            });
            self.worker = Some(Worker::spawn(loader, self.params.hooks.clone()));
            self.editor_link.set_worker_status(self.worker_status());
        }
        if self.companion.is_none() {
            let links = CompanionLinks {
                params: self.params.clone(),
                view: self.view.clone(),
                worker: self.worker_status(),
                actions: self.editor_link.actions.clone(),
                suggestions: self.editor_link.suggestions.clone(),
            };
            let db_path = crate::sessions::default_db_path()
                .inspect_err(|err| nice_log!("melodist: session history is off: {err:#}"))
                .ok();
            self.companion = Some(Companion::spawn(links, db_path));
        }
        if self.scheduler.is_none() {
            let w = self.worker.as_ref().expect("just spawned");
            self.scheduler = Some(Scheduler::new(w.link()));
            if let Some(s) = self.scheduler.as_mut() {
                s.set_monitor(self.monitor_tx.clone());
            }
        }
        true
    }

    fn reset(&mut self) {
        if let Some(s) = self.scheduler.as_mut() {
            s.reset();
        }
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        // Audio: every output sample is written. The wrapper copies a main input to the
        // outputs in place; with no input the host's buffers hold garbage until we clear them.
        let block_len = buffer.samples();
        write_audio(buffer, self.has_audio_input);
        let Some(scheduler) = self.scheduler.as_mut() else {
            return ProcessStatus::KeepAlive;
        };
        let params = &self.params;

        let new_idea = params.new_idea.value();
        if new_idea && !self.new_idea_was_on {
            params.idea.fetch_add(1, Ordering::Relaxed);
        }
        self.new_idea_was_on = new_idea;
        let vary = params.vary.value();
        if vary && !self.vary_was_on {
            params.varies.fetch_add(1, Ordering::Relaxed);
        }
        self.vary_was_on = vary;
        let panic = params.panic.value();
        if panic && !self.panic_was_on {
            scheduler.panic();
        }
        self.panic_was_on = panic;

        let controls = BlockControls {
            enabled: params.play.value() && !params.bypass.value(),
            settings: params.gen_settings(),
            channel: params.output_channel(),
            quantize: params.quantize.value(),
            free_run_tempo: params.free_run_tempo.value() as f64,
            offline: self.offline,
        };
        let transport = read_transport(context.transport());
        let n_generated = scheduler
            .process_block(&transport, &controls, block_len)
            .len();
        let late_bars = &self.editor_link.late_bars;
        late_bars.store(scheduler.stats.late_bars, Ordering::Relaxed);

        // Merge MIDI thru with the generated notes by time: hosts reject unordered output.
        let thru = params.midi_thru.value();
        let chord_channel = params.chord_channel();
        let mut next = 0;
        while let Some(event) = context.next_event() {
            let timing = event.timing();
            while next < n_generated && scheduler.events()[next].timing <= timing {
                send(context, scheduler.events()[next]);
                next += 1;
            }
            // With a chord channel, its notes are the chord and the others the melody.
            let is_chord = |channel: Channel| match (chord_channel, channel) {
                (None, _) => None,
                (Some(want), Channel::Number(ch)) => Some(ch == want),
                (Some(_), _) => Some(false),
            };
            match event {
                NoteEvent::NoteOn {
                    key: Key::Number(key),
                    velocity,
                    channel,
                    ..
                } => {
                    let velocity = (velocity * 127.0).round().clamp(1.0, 127.0) as u8;
                    match is_chord(channel) {
                        None => scheduler.input_note(key, velocity, timing),
                        Some(true) => scheduler.chord_note(key, true, timing),
                        Some(false) => scheduler.melody_note(key, velocity, timing),
                    }
                }
                NoteEvent::NoteOff {
                    key: Key::Number(key),
                    channel,
                    ..
                } => match is_chord(channel) {
                    Some(true) => scheduler.chord_note(key, false, timing),
                    _ => scheduler.input_note_off(key, timing),
                },
                _ => {}
            }
            if thru {
                let _ = context.try_send_event(event);
            }
        }
        while next < n_generated {
            send(context, scheduler.events()[next]);
            next += 1;
        }
        ProcessStatus::KeepAlive
    }

    fn deactivate(&mut self) {
        // The worker keeps running (a host re-activates often); notes are cut on the next
        // activation's first block through `reset()`.
        if let Some(s) = self.scheduler.as_mut() {
            s.reset();
        }
    }
}

/// Reads the host transport into the scheduler's plain form.
fn read_transport(t: &Transport) -> BlockTransport {
    BlockTransport {
        playing: t.playing,
        sample_rate: t.sample_rate as f64,
        tempo: t.tempo,
        time_sig_numerator: t.time_sig_numerator,
        time_sig_denominator: t.time_sig_denominator,
        pos_beats: t.pos_beats(),
        bar_start_beats: t.bar_start_pos_beats(),
        bar_number: t.bar_number().map(i64::from),
        loop_range: t.loop_range_beats(),
    }
}

/// Silence when there is no input; otherwise the input (already in place) with denormals
/// flushed to zero, so nothing slow or stray reaches the next plugin.
fn write_audio(buffer: &mut Buffer, has_input: bool) {
    for channel in buffer.as_slice() {
        if has_input {
            for x in channel.iter_mut() {
                *x = flush_subnormal(*x);
            }
        } else {
            channel.fill(0.0);
        }
    }
}

/// Zero for a subnormal sample, the sample itself otherwise.
pub fn flush_subnormal(x: f32) -> f32 {
    if x.is_subnormal() { 0.0 } else { x }
}

fn send<P: Plugin>(context: &mut impl ProcessContext<P>, ev: OutEvent) {
    let (timing, channel) = (ev.timing, Channel::Number(ev.channel));
    let event = match ev.kind {
        OutKind::NoteOn { key, velocity } => NoteEvent::NoteOn {
            timing,
            voice_id: VoiceID::Wildcard,
            channel,
            key: Key::Number(key),
            velocity: velocity as f32 / 127.0,
        },
        OutKind::NoteOff { key } => NoteEvent::NoteOff {
            timing,
            voice_id: VoiceID::Wildcard,
            channel,
            key: Key::Number(key),
            velocity: 0.0,
        },
        OutKind::AllNotesOff => NoteEvent::MidiCC {
            timing,
            channel: ev.channel,
            cc: 123,
            value: 0.0,
        },
    };
    // A full host event buffer drops the event; nothing else we can do without blocking.
    let _ = context.try_send_event(event);
}

impl ClapPlugin for Melodist {
    const CLAP_ID: &'static str = "com.melodist.melodist";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("Live AI melody generator: in time, in key, never a stuck note");
    const CLAP_MANUAL_URL: Option<&'static str> = Some(Self::URL);
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[
        ClapFeature::NoteEffect,
        ClapFeature::Instrument,
        ClapFeature::Utility,
    ];
}

impl Vst3Plugin for Melodist {
    const VST3_CLASS_ID: [u8; 16] = *b"MelodistMelodyGn";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Instrument, Vst3SubCategory::Generator];
}

nice_export_clap!(Melodist);
nice_export_vst3!(Melodist);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_through_flushes_subnormals_and_keeps_the_rest() {
        let tiny = f32::MIN_POSITIVE / 8.0;
        assert!(tiny.is_subnormal());
        assert_eq!(flush_subnormal(tiny), 0.0);
        assert_eq!(flush_subnormal(-tiny), 0.0);
        for x in [0.0, -0.0, 0.5, -1.0, f32::MIN_POSITIVE, 1e30] {
            assert_eq!(flush_subnormal(x).to_bits(), x.to_bits());
        }
    }
}
