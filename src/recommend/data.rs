//! The recommenders' view of presets and sessions: everything indexed by small integers so
//! scoring thousands of sessions stays well under a millisecond.

use crate::music::{Key, Meter};
use crate::presets::{KeyMode, PresetLibrary, StylePreset};
use crate::sessions::{EventKind, SessionContext, SessionLog};
use std::collections::HashMap;
use std::sync::Arc;

/// One preset as the recommenders see it.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    pub name: String,
    /// Whether the features below are real. Presets seen only in a log (deleted user
    /// presets, another machine's) have neutral features and are matched by history alone.
    pub known: bool,
    pub tempo: (f32, f32),
    pub meters: Vec<Meter>,
    pub key_mode: KeyMode,
    pub energy: f32,
    /// Generator density 0..=1.
    pub density: f32,
    /// Middle of the register (MIDI pitch).
    pub register: f32,
    /// Bit `t` set when the preset has tag `t` of [`Catalogue::tags`] (moods and style).
    pub tags: u64,
}

impl Item {
    /// Whether the preset states it suits meter `m` (a preset listing no meter takes any).
    pub fn takes_meter(&self, m: Meter) -> bool {
        self.meters.is_empty() || self.meters.contains(&m)
    }
}

/// The presets a model ranks, in a fixed order.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub items: Vec<Item>,
    /// Tag vocabulary (moods and style tags); at most 64, later tags share bit 63.
    pub tags: Vec<String>,
    index: HashMap<String, u16>,
}

impl Catalogue {
    pub fn from_library(library: &PresetLibrary) -> Catalogue {
        Catalogue::from_presets(library.presets())
    }

    pub fn from_presets(presets: &[StylePreset]) -> Catalogue {
        let mut cat = Catalogue::default();
        for p in presets {
            let mut tags = 0u64;
            for tag in p.features.moods.iter().chain(std::iter::once(&p.style)) {
                tags |= 1 << cat.tag_bit(tag);
            }
            cat.push(Item {
                id: p.id.clone(),
                name: p.name.clone(),
                known: true,
                tempo: (p.features.tempo_min, p.features.tempo_max),
                meters: p.meters(),
                key_mode: p.features.key_mode,
                energy: p.features.energy,
                density: p.settings.density,
                register: p.register_centre(),
                tags,
            });
        }
        cat
    }

    fn tag_bit(&mut self, tag: &str) -> u32 {
        let tag = tag.trim().to_lowercase();
        if let Some(i) = self.tags.iter().position(|t| *t == tag) {
            return i.min(63) as u32;
        }
        self.tags.push(tag);
        (self.tags.len() - 1).min(63) as u32
    }

    fn push(&mut self, item: Item) -> u16 {
        let i = self.items.len() as u16;
        self.index.insert(item.id.clone(), i);
        self.items.push(item);
        i
    }

    /// The index of `id`, adding a featureless item for an id only seen in a log.
    pub fn ensure(&mut self, id: &str) -> u16 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        self.push(Item {
            id: id.to_string(),
            name: id.to_string(),
            known: false,
            tempo: (20.0, 400.0),
            meters: Vec::new(),
            key_mode: KeyMode::Any,
            energy: 0.5,
            density: 0.5,
            register: 72.0,
            tags: 0,
        })
    }

    pub fn index_of(&self, id: &str) -> Option<u16> {
        self.index.get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Display name of item `i`.
    pub fn name(&self, i: u16) -> &str {
        &self.items[i as usize].name
    }

    /// Tag names of a bit set.
    pub fn tag_names(&self, bits: u64) -> Vec<&str> {
        self.tags
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << (*i).min(63)) != 0)
            .map(|(_, t)| t.as_str())
            .collect()
    }
}

/// The situation a recommendation is for. Unknown values are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// Whose history to personalise with; unknown producers get cold-start recommendations.
    pub producer: String,
    pub tempo: Option<f32>,
    pub meter: Option<Meter>,
    pub key: Option<Key>,
    /// Notes per beat the producer is playing.
    pub input_density: Option<f32>,
    /// Mean MIDI pitch of the producer's input.
    pub input_register: Option<f32>,
    /// Presets already tried in this session, with their net feedback so far.
    pub session: Vec<(u16, f32)>,
}

impl Context {
    /// The context at the start of a logged session (nothing tried yet).
    pub fn from_session(producer: &str, ctx: &SessionContext) -> Context {
        Context {
            producer: producer.to_string(),
            tempo: Some(ctx.tempo),
            meter: Some(ctx.meter),
            key: ctx.key,
            input_density: ctx.input_density,
            input_register: ctx.input_register,
            session: Vec::new(),
        }
    }
}

/// One session, indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// The session's id in its source (database row id or file order): with the start
    /// time, what breaks ties between otherwise equal sessions, wherever the row sits.
    pub id: i64,
    pub producer: u32,
    pub context: SessionContext,
    /// Net feedback per preset (see [`EventKind::weight`]); > 0 means it worked.
    pub items: Vec<(u16, f32)>,
    /// Per preset: the positive kinds of evidence logged for it ([`EventKind::bit`] set);
    /// explanations cite only these.
    pub signals: Vec<(u16, u16)>,
    /// Unix ms when the session started.
    pub started_at_ms: i64,
}

/// The evidence bit an event contributes, if it is positive evidence about a preset.
pub fn signal_bit(kind: EventKind, seconds: Option<f32>) -> u16 {
    if kind.weight(seconds) > 0.0 && kind.evidence_phrase().is_some() {
        kind.bit()
    } else {
        0
    }
}

/// Adds `bit` to `item`'s signal set.
pub fn add_signal(signals: &mut Vec<(u16, u16)>, item: u16, bit: u16) {
    if bit == 0 {
        return;
    }
    match signals.iter_mut().find(|(i, _)| *i == item) {
        Some((_, b)) => *b |= bit,
        None => signals.push((item, bit)),
    }
}

impl SessionRow {
    /// Presets that worked in this session.
    pub fn positives(&self) -> impl Iterator<Item = u16> + '_ {
        self.items.iter().filter(|(_, w)| *w > 0.0).map(|(i, _)| *i)
    }
}

/// A session log indexed against a catalogue: what `fit` consumes.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub catalogue: Arc<Catalogue>,
    pub producers: Vec<String>,
    pub sessions: Vec<SessionRow>,
}

impl Dataset {
    /// Indexes `log`; preset ids missing from `catalogue` are added as featureless items.
    pub fn new(log: &SessionLog, mut catalogue: Catalogue) -> Dataset {
        let mut producers: Vec<String> = Vec::new();
        let mut producer_index: HashMap<String, u32> = HashMap::new();
        let mut sessions = Vec::with_capacity(log.sessions.len());
        for s in &log.sessions {
            let producer = *producer_index.entry(s.producer.clone()).or_insert_with(|| {
                producers.push(s.producer.clone());
                producers.len() as u32 - 1
            });
            let items = s
                .preset_scores()
                .into_iter()
                .map(|(id, w)| (catalogue.ensure(id), w))
                .collect();
            let mut signals = Vec::new();
            for e in &s.events {
                if let Some(id) = e.preset.as_deref() {
                    let item = catalogue.ensure(id);
                    add_signal(&mut signals, item, signal_bit(e.kind, e.seconds));
                }
            }
            sessions.push(SessionRow {
                id: s.session,
                producer,
                context: s.context,
                items,
                signals,
                started_at_ms: s.started_at_ms,
            });
        }
        Dataset {
            catalogue: Arc::new(catalogue),
            producers,
            sessions,
        }
    }
}

/// One feedback event for online learning.
#[derive(Debug, Clone)]
pub struct Feedback {
    pub producer: String,
    /// Session the event belongs to; a new id starts a new session in the model.
    pub session: i64,
    pub context: SessionContext,
    pub preset: u16,
    pub kind: EventKind,
    /// For `PresetUsed`: how long.
    pub seconds: Option<f32>,
    /// Unix ms of the session start (for recency).
    pub at_ms: i64,
}

impl Feedback {
    pub fn weight(&self) -> f32 {
        self.kind.weight(self.seconds)
    }
}
