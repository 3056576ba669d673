//! A minimal CLAP host (clack-host) around the built Melodist plugin, shared by the
//! host tests and the benchmarks.
#![allow(dead_code)]

use clack_extensions::render::{PluginRender, RenderMode};
use clack_extensions::state::{HostState, HostStateImpl, PluginState};
use clack_host::events::event_types::{NoteOnEvent, TransportEvent, TransportFlags};
use clack_host::events::{EventFlags, EventHeader, Match, Pckn};
use clack_host::prelude::*;
use clack_host::utils::{BeatTime, SecondsTime};
use std::path::PathBuf;
use std::sync::OnceLock;

pub struct TestHost;
pub struct Shared {
    state: OnceLock<Option<PluginState>>,
    render: OnceLock<Option<PluginRender>>,
}
pub struct MainThread;

impl<'a> SharedHandler<'a> for Shared {
    fn initializing(&self, instance: InitializingPluginHandle<'a>) {
        let _ = self.state.set(instance.get_extension());
        let _ = self.render.set(instance.get_extension());
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

pub fn plugin_path() -> PathBuf {
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
pub struct Out {
    pub timing: u32,
    pub on: bool,
    pub key: u8,
    pub channel: u8,
    pub velocity: f64,
}

pub const SR: f64 = 48_000.0;
pub const BLOCK: usize = 512;

pub struct Session {
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
    pub sample_rate: f64,
    max_block: usize,
    pub sounding: std::collections::HashSet<(u8, u8)>,
}

impl Session {
    /// A real-time session (the plugin never waits for its worker).
    pub fn new() -> Self {
        Self::with_mode(RenderMode::Realtime, SR, BLOCK)
    }

    /// An offline-render session: the plugin waits for its worker, so output is exact.
    pub fn offline() -> Self {
        Self::with_mode(RenderMode::Offline, SR, BLOCK)
    }

    /// An offline session at another sample rate and maximum block size.
    pub fn offline_at(sample_rate: f64, max_block: usize) -> Self {
        Self::with_mode(RenderMode::Offline, sample_rate, max_block)
    }

    fn with_mode(mode: RenderMode, sample_rate: f64, max_block: usize) -> Self {
        isolate_user_data();
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
                render: OnceLock::new(),
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
            inputs: vec![vec![0.0; max_block]; 2],
            outputs: vec![vec![0.0; max_block]; 2],
            in_events: EventBuffer::with_capacity(64),
            out_events: EventBuffer::with_capacity(1024),
            steady: 0,
            sample_rate,
            max_block,
            sounding: Default::default(),
        };
        let render = s
            .instance
            .access_shared_handler(|h| *h.render.get().unwrap());
        let render = render.expect("plugin has the render extension");
        render
            .set(&s.instance.plugin_handle(), mode)
            .expect("set render mode");
        s.activate();
        s
    }

    pub fn activate(&mut self) {
        let config = PluginAudioConfiguration {
            sample_rate: self.sample_rate,
            min_frames_count: 1,
            max_frames_count: self.max_block as u32,
        };
        let stopped = self.instance.activate(|_, _| (), config).expect("activate");
        self.processor = Some(stopped.start_processing().expect("start processing"));
    }

    pub fn deactivate(&mut self) {
        let p = self.processor.take().unwrap().stop_processing();
        self.instance.deactivate(p);
    }

    fn state_ext(&self) -> PluginState {
        self.instance
            .access_shared_handler(|h| *h.state.get().unwrap())
            .expect("plugin has the state extension")
    }

    pub fn save(&mut self) -> Vec<u8> {
        let ext = self.state_ext();
        let mut out = Vec::new();
        ext.save(&self.instance.plugin_handle(), &mut out)
            .expect("save state");
        out
    }

    pub fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
        let ext = self.state_ext();
        ext.load(
            &self.instance.plugin_handle(),
            &mut std::io::Cursor::new(bytes),
        )
        .map_err(|e| e.to_string())
    }

    /// Sets parameters by editing the plugin's own saved state: nice-plug writes a
    /// little-endian u64 length, then JSON.
    pub fn set_params(&mut self, values: &[(&str, serde_json::Value)]) {
        self.edit_state(|state| {
            for (id, v) in values {
                state["params"][*id] = v.clone();
            }
        });
    }

    /// Sets persisted fields (`#[persist = "..."]`), each stored as a JSON string.
    pub fn set_fields(&mut self, values: &[(&str, String)]) {
        self.edit_state(|state| {
            for (id, v) in values {
                state["fields"][*id] = serde_json::Value::String(v.clone());
            }
        });
    }

    /// Saves the state, lets `edit` change its JSON, and loads it back.
    pub fn edit_state(&mut self, edit: impl FnOnce(&mut serde_json::Value)) {
        let saved = self.save();
        let mut state: serde_json::Value =
            serde_json::from_slice(&saved[8..]).expect("state is JSON");
        edit(&mut state);
        let json = serde_json::to_vec(&state).unwrap();
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend(json);
        self.load(&bytes).expect("load edited state");
    }

    /// Runs the plugin's `process()` for one block; returns how many events it sent.
    /// Allocation-free on the host side so the benchmarks measure the plugin.
    pub fn process(
        &mut self,
        transport: Option<&TransportEvent>,
        input_notes: &[(u32, u8)],
    ) -> u32 {
        self.process_len(transport, input_notes, self.max_block)
    }

    /// `process()` for a block of `len` samples. The output buffers are filled with NaN
    /// first, as clap-validator does, and every sample must come back written.
    pub fn process_len(
        &mut self,
        transport: Option<&TransportEvent>,
        input_notes: &[(u32, u8)],
        len: usize,
    ) -> u32 {
        for channel in &mut self.outputs {
            channel.fill(f32::NAN);
        }
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
                    .map(|b| InputChannel::constant(&mut b[..len])),
            ),
        }]);
        let mut output_audio = self.output_ports.with_output_buffers([AudioPortBuffer {
            latency: 0,
            channels: AudioPortBufferType::f32_output_only(
                self.outputs.iter_mut().map(|b| &mut b[..len]),
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
                transport,
            )
            .expect("process");
        self.steady += len as u64;
        for (c, channel) in self.outputs.iter().enumerate() {
            if let Some(i) = channel[..len].iter().position(|x| !x.is_finite()) {
                panic!("output channel {c}, sample {i} was left unwritten");
            }
        }
        self.out_events.len()
    }

    /// Processes one block; checks output order and note pairing.
    pub fn block(
        &mut self,
        transport: Option<TransportEvent>,
        input_notes: &[(u32, u8)],
    ) -> Vec<Out> {
        self.block_len(transport, input_notes, BLOCK)
    }

    /// [`Session::block`] with a block of `len` samples.
    pub fn block_len(
        &mut self,
        transport: Option<TransportEvent>,
        input_notes: &[(u32, u8)],
        len: usize,
    ) -> Vec<Out> {
        self.process_len(transport.as_ref(), input_notes, len);
        let mut out = Vec::new();
        for e in self.out_events.iter() {
            let t = e.header().time();
            use clack_host::events::spaces::CoreEventSpace;
            let (on, raw) = match e.as_core_event() {
                Some(CoreEventSpace::NoteOn(n)) => (true, n.as_raw()),
                Some(CoreEventSpace::NoteOff(n)) => (false, n.as_raw()),
                _ => continue,
            };
            out.push(Out {
                timing: t,
                on,
                key: raw.key as u8,
                channel: raw.channel as u8,
                velocity: raw.velocity,
            });
        }
        for w in out.windows(2) {
            assert!(w[0].timing <= w[1].timing, "unordered output {out:?}");
        }
        for e in &out {
            assert!((e.timing as usize) < len);
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

/// A 4/4 transport with a loop range (the host's loop/cycle is on).
pub fn looping_transport(pos_beats: f64, tempo: f64, loop_beats: (f64, f64)) -> TransportEvent {
    let mut t = transport(pos_beats, tempo, true);
    t.flags |= TransportFlags::IS_LOOP_ACTIVE;
    t.loop_start_beats = BeatTime::from_float(loop_beats.0);
    t.loop_end_beats = BeatTime::from_float(loop_beats.1);
    t.loop_start_seconds = SecondsTime::from_float(loop_beats.0 * 60.0 / tempo);
    t.loop_end_seconds = SecondsTime::from_float(loop_beats.1 * 60.0 / tempo);
    t
}

pub fn transport(pos_beats: f64, tempo: f64, playing: bool) -> TransportEvent {
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

/// The plugin keeps a session history under the user's data folder; tests use a private
/// one instead. Set once, before any plugin exists, so no thread reads it concurrently.
pub fn isolate_user_data() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        // SAFETY: runs inside `OnceLock::get_or_init`, before any plugin (the only other
        // reader of the environment here) is created.
        unsafe { std::env::set_var("MELODIST_DATA_DIR", dir.path()) };
        dir
    })
    .path()
}
