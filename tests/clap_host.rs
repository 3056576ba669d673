//! Loads the built `.clap` (the cdylib cargo builds for the tests, with
//! `assert_process_allocs` on) in a real CLAP host library, clack-host, and plays it.

use clack_extensions::state::{HostState, HostStateImpl, PluginState};
use clack_host::events::event_types::{NoteOnEvent, TransportEvent, TransportFlags};
use clack_host::events::{EventFlags, EventHeader, Match, Pckn};
use clack_host::prelude::*;
use clack_host::utils::{BeatTime, SecondsTime};
use melodist::cli::generate::generate_notes;
use melodist::generator::GenSettings;
use melodist::generator::loader::ModelChoice;
use melodist::music::{Key, Meter, PitchClass, Scale};
use std::path::PathBuf;
use std::sync::OnceLock;

struct TestHost;
struct Shared {
    state: OnceLock<Option<PluginState>>,
}
struct MainThread;

impl<'a> SharedHandler<'a> for Shared {
    fn initializing(&self, instance: InitializingPluginHandle<'a>) {
        let _ = self.state.set(instance.get_extension());
    }
    fn request_restart(&self) {}
    fn request_process(&self) {}
    fn request_callback(&self) {}
}

impl<'a> MainThreadHandler<'a> for MainThread {}

impl HostStateImpl for MainThread {
    fn mark_dirty(&self) {}
}

impl HostHandlers for TestHost {
    type Shared<'a> = Shared;
    type MainThread<'a> = MainThread;
    type AudioProcessor<'a> = ();

    fn declare_extensions(builder: &mut HostExtensions<Self>, _shared: &Self::Shared<'_>) {
        builder.register::<HostState>();
    }
}

fn plugin_path() -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let name = if cfg!(target_os = "macos") {
        "libmelodist.dylib"
    } else if cfg!(windows) {
        "melodist.dll"
    } else {
        "libmelodist.so"
    };
    for dir in [deps.clone(), deps.parent().unwrap().to_path_buf()] {
        if dir.join(name).exists() {
            return dir.join(name);
        }
    }
    panic!("{name} not found next to {}", deps.display());
}

/// One note event as the host received it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Out {
    timing: u32,
    on: bool,
    key: u8,
    channel: u8,
    velocity: f64,
}

const SR: f64 = 48_000.0;
const BLOCK: usize = 512;

struct Session {
    _entry: PluginEntry,
    instance: PluginInstance<TestHost>,
    processor: Option<StartedPluginAudioProcessor<TestHost>>,
    input_ports: AudioPorts,
    output_ports: AudioPorts,
    inputs: Vec<Vec<f32>>,
    outputs: Vec<Vec<f32>>,
    in_events: EventBuffer,
    out_events: EventBuffer,
    steady: u64,
    sounding: std::collections::HashSet<(u8, u8)>,
}

impl Session {
    fn new() -> Self {
        let entry = unsafe { PluginEntry::load(plugin_path()) }.expect("load the .clap");
        let host = HostInfo::new(
            "melodist-test",
            "melodist",
            "https://example.invalid",
            "1.0",
        )
        .unwrap();
        let instance = PluginInstance::<TestHost>::new(
            |_| Shared {
                state: OnceLock::new(),
            },
            |_| MainThread,
            &entry,
            c"com.melodist.melodist",
            &host,
        )
        .expect("instantiate");
        let mut s = Self {
            _entry: entry,
            instance,
            processor: None,
            input_ports: AudioPorts::with_capacity(2, 1),
            output_ports: AudioPorts::with_capacity(2, 1),
            inputs: vec![vec![0.0; BLOCK]; 2],
            outputs: vec![vec![0.0; BLOCK]; 2],
            in_events: EventBuffer::with_capacity(64),
            out_events: EventBuffer::with_capacity(1024),
            steady: 0,
            sounding: Default::default(),
        };
        s.activate();
        s
    }

    fn activate(&mut self) {
        let config = PluginAudioConfiguration {
            sample_rate: SR,
            min_frames_count: 1,
            max_frames_count: BLOCK as u32,
        };
        let stopped = self.instance.activate(|_, _| (), config).expect("activate");
        self.processor = Some(stopped.start_processing().expect("start processing"));
    }

    fn deactivate(&mut self) {
        let p = self.processor.take().unwrap().stop_processing();
        self.instance.deactivate(p);
    }

    fn state_ext(&self) -> PluginState {
        self.instance
            .access_shared_handler(|h| *h.state.get().unwrap())
            .expect("plugin has the state extension")
    }

    fn save(&mut self) -> Vec<u8> {
        let ext = self.state_ext();
        let mut out = Vec::new();
        ext.save(&mut self.instance.plugin_handle(), &mut out)
            .expect("save state");
        out
    }

    fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
        let ext = self.state_ext();
        ext.load(
            &mut self.instance.plugin_handle(),
            &mut std::io::Cursor::new(bytes),
        )
        .map_err(|e| e.to_string())
    }

    /// Sets parameters by editing the plugin's own saved state: nice-plug writes a
    /// little-endian u64 length, then JSON.
    fn set_params(&mut self, values: &[(&str, serde_json::Value)]) {
        let saved = self.save();
        let mut state: serde_json::Value = serde_json::from_slice(&saved[8..]).expect("state is JSON");
        for (id, v) in values {
            state["params"][*id] = v.clone();
        }
        let json = serde_json::to_vec(&state).unwrap();
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend(json);
        self.load(&bytes).expect("load edited state");
    }

    /// Processes one block; checks output order and note pairing.
    fn block(&mut self, transport: Option<TransportEvent>, input_notes: &[(u32, u8)]) -> Vec<Out> {
        self.in_events.clear();
        for &(t, key) in input_notes {
            self.in_events.push(&NoteOnEvent::new(
                t,
                Pckn::new(0u16, 0u16, key as u16, Match::All),
                0.8,
            ));
        }
        self.out_events.clear();
        let input_audio = self.input_ports.with_input_buffers([AudioPortBuffer {
            latency: 0,
            channels: AudioPortBufferType::f32_input_only(
                self.inputs
                    .iter_mut()
                    .map(|b| InputChannel::constant(b.as_mut_slice())),
            ),
        }]);
        let mut output_audio = self.output_ports.with_output_buffers([AudioPortBuffer {
            latency: 0,
            channels: AudioPortBufferType::f32_output_only(
                self.outputs.iter_mut().map(|b| b.as_mut_slice()),
            ),
        }]);
        let input_events = InputEvents::from_buffer(&self.in_events);
        let mut output_events = OutputEvents::from_buffer(&mut self.out_events);
        self.processor
            .as_mut()
            .unwrap()
            .process(
                &input_audio,
                &mut output_audio,
                &input_events,
                &mut output_events,
                Some(self.steady),
                transport.as_ref(),
            )
            .expect("process");
        self.steady += BLOCK as u64;
        let mut out = Vec::new();
        for e in self.out_events.iter() {
            let t = e.header().time();
            match e.as_core_event() {
                Some(clack_host::events::spaces::CoreEventSpace::NoteOn(n)) => {
                    let r = n.as_raw();
                    out.push(Out {
                        timing: t,
                        on: true,
                        key: r.key as u8,
                        channel: r.channel as u8,
                        velocity: r.velocity,
                    });
                }
                Some(clack_host::events::spaces::CoreEventSpace::NoteOff(n)) => {
                    let r = n.as_raw();
                    out.push(Out {
                        timing: t,
                        on: false,
                        key: r.key as u8,
                        channel: r.channel as u8,
                        velocity: r.velocity,
                    });
                }
                _ => {}
            }
        }
        for w in out.windows(2) {
            assert!(w[0].timing <= w[1].timing, "unordered output {out:?}");
        }
        for e in &out {
            assert!((e.timing as usize) < BLOCK);
            if e.on {
                assert!(
                    self.sounding.insert((e.channel, e.key)),
                    "NoteOn on a sounding key: {out:?}"
                );
            } else {
                self.sounding.remove(&(e.channel, e.key));
            }
        }
        out
    }
}

fn transport(pos_beats: f64, tempo: f64, playing: bool) -> TransportEvent {
    let mut flags = TransportFlags::HAS_TEMPO
        | TransportFlags::HAS_BEATS_TIMELINE
        | TransportFlags::HAS_SECONDS_TIMELINE
        | TransportFlags::HAS_TIME_SIGNATURE;
    if playing {
        flags |= TransportFlags::IS_PLAYING;
    }
    let bar = (pos_beats / 4.0 + 1e-9).floor();
    TransportEvent {
        header: EventHeader::new_core(0, EventFlags::empty()),
        flags,
        song_pos_beats: BeatTime::from_float(pos_beats),
        song_pos_seconds: SecondsTime::from_float(pos_beats * 60.0 / tempo),
        tempo,
        tempo_inc: 0.0,
        loop_start_beats: BeatTime::from_int(0),
        loop_end_beats: BeatTime::from_int(0),
        loop_start_seconds: SecondsTime::from_int(0),
        loop_end_seconds: SecondsTime::from_int(0),
        bar_start: BeatTime::from_float(bar * 4.0),
        bar_number: bar as i32,
        time_signature_numerator: 4,
        time_signature_denominator: 4,
    }
}

/// Plays `blocks` blocks from `start`, pacing like a real host so the worker keeps ahead.
/// Returns every NoteOn as (beat, key, channel) and the beat after the last block.
fn play(s: &mut Session, start: f64, blocks: usize, tempo: f64) -> (Vec<(f64, u8, u8)>, f64) {
    // A host runs stopped blocks before play; the plugin uses them to prepare.
    s.block(Some(transport(start, tempo, false)), &[]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let bps = tempo / 60.0 / SR;
    let mut pos = start;
    let mut ons = Vec::new();
    for i in 0..blocks {
        if i % 8 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let p = BeatTime::from_float(pos).to_float();
        for e in s.block(Some(transport(pos, tempo, true)), &[]) {
            if e.on {
                ons.push((p + e.timing as f64 * bps, e.key, e.channel));
            }
        }
        pos += BLOCK as f64 * bps;
    }
    (ons, pos)
}

fn a_minor(s: &mut Session, seed: i32) {
    s.set_params(&[
        ("seed", serde_json::json!({"i32": seed})),
        ("root", serde_json::json!({"i32": 9})),
        ("scale", serde_json::json!({"i32": 1})),
        ("low", serde_json::json!({"i32": 57})),
        ("high", serde_json::json!({"i32": 81})),
        ("channel", serde_json::json!({"i32": 3})),
    ]);
}

#[test]
fn plays_the_seeded_melody_in_key_on_the_grid_and_stops_cleanly() {
    let mut s = Session::new();
    a_minor(&mut s, 7);
    let tempo = 110.0;
    let (ons, end) = play(&mut s, 0.0, 1700, tempo); // ~8.7 bars
    // The same notes the CLI writes for `generate --seed 7 --key A --scale minor --low 57 --high 81`.
    let settings = GenSettings {
        key: Key::new(PitchClass::A, Scale::Minor),
        low: 57,
        high: 81,
        seed: 7,
        ..Default::default()
    };
    let (expected, _, _) = generate_notes(&ModelChoice::Default, settings, Meter::new(4, 4), 12);
    let expected: Vec<_> = expected
        .into_iter()
        .filter(|n| n.start < end - 1e-9)
        .collect();
    assert!(expected.len() > 16, "too few notes: {}", expected.len());
    assert_eq!(ons.len(), expected.len(), "ons {ons:?}");
    let bps = tempo / 60.0 / SR;
    for ((beat, key, channel), n) in ons.iter().zip(&expected) {
        assert_eq!(*key, n.pitch);
        assert_eq!(*channel, 2, "MIDI channel 3 is index 2");
        assert!(settings.key.contains(*key) && (57..=81).contains(key));
        let err = beat - n.start;
        assert!(
            err > -1e-6 && err <= bps + 1e-6,
            "note at {beat}, intended {}",
            n.start
        );
    }
    // Stop: every sounding note is released at once, and nothing plays while stopped.
    let out = s.block(Some(transport(end, tempo, false)), &[]);
    assert!(out.iter().all(|e| !e.on && e.timing == 0));
    assert!(s.sounding.is_empty(), "stuck notes {:?}", s.sounding);
    for _ in 0..100 {
        assert!(s.block(Some(transport(end, tempo, false)), &[]).is_empty());
    }
    s.deactivate();
}

#[test]
fn saved_state_reproduces_the_same_output() {
    let mut a = Session::new();
    a_minor(&mut a, 1234);
    let state = a.save();
    let (first, _) = play(&mut a, 8.0, 400, 128.0);
    assert!(!first.is_empty());

    let mut b = Session::new();
    b.load(&state).expect("load saved state");
    let (second, _) = play(&mut b, 8.0, 400, 128.0);
    assert_eq!(first, second);

    // A different seed plays something else (so the comparison above can fail).
    let mut c = Session::new();
    a_minor(&mut c, 1235);
    let (third, _) = play(&mut c, 8.0, 400, 128.0);
    assert_ne!(first, third);
}

#[test]
fn corrupt_state_is_rejected_and_the_plugin_keeps_working() {
    let mut s = Session::new();
    assert!(s.load(b"{ this is not a saved state").is_err());
    assert!(s.load(b"").is_err());
    // Still generates and still passes MIDI through, merged in time order.
    s.block(Some(transport(0.0, 120.0, false)), &[]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let out = s.block(Some(transport(0.0, 120.0, true)), &[(3, 50), (300, 52)]);
    assert!(
        out.iter().any(|e| e.on && e.key == 50 && e.timing == 3),
        "thru missing: {out:?}"
    );
    assert!(out.iter().any(|e| e.on && e.key == 52 && e.timing == 300));
    let (ons, _) = play(&mut s, 4.0, 200, 120.0);
    assert!(!ons.is_empty());
}

#[test]
fn deactivation_releases_sounding_notes() {
    let mut s = Session::new();
    s.set_params(&[("gate", serde_json::json!({"f32": 1.0}))]);
    s.block(Some(transport(0.0, 120.0, false)), &[]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut pos = 0.0;
    while s.sounding.is_empty() {
        s.block(Some(transport(pos, 120.0, true)), &[]);
        pos += BLOCK as f64 * 2.0 / SR;
        assert!(pos < 64.0, "never played a note");
    }
    let held: Vec<_> = s.sounding.iter().copied().collect();
    s.deactivate();
    s.activate();
    let out = s.block(Some(transport(pos, 120.0, false)), &[]);
    for (ch, key) in held {
        assert!(
            out.iter()
                .any(|e| !e.on && e.key == key && e.channel == ch && e.timing == 0),
            "no release of {key}: {out:?}"
        );
    }
    assert!(s.sounding.is_empty());
}
