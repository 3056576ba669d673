//! The producer's session history: what they played, which presets they used and what they
//! kept. It never leaves the machine; `melodist sessions export` / `forget` hand it back.
//!
//! - [`db`]: the SQLite store (WAL, migrations, corruption recovery).
//! - [`recorder`]: the background writer the audio thread feeds without blocking.
//! - [`jsonl`]: the JSON-lines exchange format (export, import, `eval-recs --log`).

pub mod db;
pub mod jsonl;
pub mod recorder;
pub mod tracker;

pub use db::SessionDb;
pub use recorder::{RecorderEvent, RecorderSender, SessionRecorder};
pub use tracker::{Observation, SessionTracker, TrackerRules};

use crate::music::{Key, Meter};
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Overrides the data folder (tests, portable installs).
pub const DATA_DIR_ENV: &str = "MELODIST_DATA_DIR";

/// The producer id used for this machine's own history.
pub const LOCAL_PRODUCER: &str = "local";

/// Where Melodist keeps its data: `$MELODIST_DATA_DIR`, else the platform's user data folder
/// (`~/.local/share/melodist`, `~/Library/Application Support/Melodist`, `%APPDATA%\Melodist`).
pub fn data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let dirs = directories::ProjectDirs::from("", "", "Melodist")
        .context("cannot find a home folder for Melodist's data; set MELODIST_DATA_DIR")?;
    Ok(dirs.data_dir().to_path_buf())
}

/// The session database file inside [`data_dir`].
pub fn default_db_path() -> Result<PathBuf> {
    Ok(data_dir()?.join("sessions.sqlite3"))
}

/// What happened during a session, besides its start and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A preset was active for `seconds`.
    PresetUsed,
    Liked,
    Disliked,
    /// A phrase was dragged / recorded into the project.
    Kept,
    /// A phrase was exported as a MIDI file.
    Exported,
    /// The producer asked for a new idea (mild dissatisfaction with the current phrase).
    NewIdea,
    /// The preset was switched away from within seconds of rolling transport.
    AbandonedQuickly,
    /// The preset kept playing for [`TrackerRules::kept_bars`] bars of rolling transport
    /// without a preset change or a new idea: the positive signal the plugin itself sees.
    KeptPlaying,
    /// The session's musical context changed (tempo, meter, key, input statistics); the new
    /// values are in [`Event::context`].
    Context,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::PresetUsed,
        EventKind::Liked,
        EventKind::Disliked,
        EventKind::Kept,
        EventKind::Exported,
        EventKind::NewIdea,
        EventKind::AbandonedQuickly,
        EventKind::KeptPlaying,
        EventKind::Context,
    ];

    /// The database / JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PresetUsed => "preset_used",
            EventKind::Liked => "liked",
            EventKind::Disliked => "disliked",
            EventKind::Kept => "kept",
            EventKind::Exported => "exported",
            EventKind::NewIdea => "new_idea",
            EventKind::AbandonedQuickly => "abandoned_quickly",
            EventKind::KeptPlaying => "kept_playing",
            EventKind::Context => "context",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// How much an event says the producer liked the preset it refers to. Keeping or
    /// exporting a phrase is the strongest signal (it ends up in music); a quick abandon the
    /// strongest negative one. `seconds` only matters for `PresetUsed`: a minute of use counts
    /// as a mild positive.
    pub fn weight(self, seconds: Option<f32>) -> f32 {
        match self {
            EventKind::PresetUsed => {
                if seconds.unwrap_or(0.0) >= 60.0 {
                    0.5
                } else {
                    0.0
                }
            }
            EventKind::Liked => 1.0,
            EventKind::Kept => 2.0,
            EventKind::Exported => 3.0,
            EventKind::Disliked => -1.0,
            EventKind::NewIdea => -0.25,
            EventKind::AbandonedQuickly => -2.0,
            EventKind::KeptPlaying => 1.0,
            EventKind::Context => 0.0,
        }
    }

    /// A bit per kind, for sets of kinds ([`EventKind::ALL`] order).
    pub fn bit(self) -> u16 {
        1 << EventKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    /// How an explanation cites this evidence: "you liked it", ... `None` for kinds that
    /// are not evidence about a preset.
    pub fn evidence_phrase(self) -> Option<&'static str> {
        match self {
            EventKind::Exported => Some("captured it"),
            EventKind::Kept => Some("kept phrases from it"),
            EventKind::Liked => Some("liked it"),
            EventKind::KeptPlaying => Some("let it play on"),
            EventKind::PresetUsed => Some("played it for over a minute"),
            _ => None,
        }
    }
}

/// The musical context of a session, as the host and the input detector report it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SessionContext {
    /// Host tempo in BPM.
    pub tempo: f32,
    #[serde(with = "meter_text")]
    pub meter: Meter,
    /// Detected key of the producer's input, when they played anything.
    #[serde(with = "key_text", default)]
    pub key: Option<Key>,
    /// Notes per beat the producer played (0 = nothing), when known.
    #[serde(default)]
    pub input_density: Option<f32>,
    /// Mean MIDI pitch of the producer's input, when known.
    #[serde(default)]
    pub input_register: Option<f32>,
}

impl SessionContext {
    /// A change observed mid-session: its tempo and meter, and what it leaves out (key,
    /// input density and register) carried over from `self`.
    pub fn observe(&self, seen: SessionContext) -> SessionContext {
        SessionContext {
            key: seen.key.or(self.key),
            input_density: seen.input_density.or(self.input_density),
            input_register: seen.input_register.or(self.input_register),
            ..seen
        }
    }

    /// The session's own context: it keeps its starting tempo and meter, and what it did
    /// not know at the start is filled in from `seen`.
    pub fn filled_from(&self, seen: &SessionContext) -> SessionContext {
        SessionContext {
            key: self.key.or(seen.key),
            input_density: self.input_density.or(seen.input_density),
            input_register: self.input_register.or(seen.input_register),
            ..*self
        }
    }
}

impl Default for SessionContext {
    fn default() -> Self {
        Self {
            tempo: 120.0,
            meter: Meter::default(),
            key: None,
            input_density: None,
            input_register: None,
        }
    }
}

/// One event inside a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the session started.
    pub t_ms: i64,
    pub kind: EventKind,
    /// The preset id the event is about (absent for events about no preset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// How long the preset was used (`preset_used` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f32>,
    /// The new context (`context` events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<SessionContext>,
}

impl Event {
    /// An event about `preset` (no context).
    pub fn about(t_ms: i64, kind: EventKind, preset: &str, seconds: Option<f32>) -> Event {
        Event {
            t_ms,
            kind,
            preset: Some(preset.to_string()),
            seconds,
            context: None,
        }
    }
}

/// One session: from loading the plugin (or pressing play) to closing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Who played: [`LOCAL_PRODUCER`] for this machine, anything for imported logs.
    pub producer: String,
    /// Id inside its source (database row id or file order); not stable across imports.
    pub session: i64,
    /// Unix time in milliseconds.
    pub started_at_ms: i64,
    #[serde(default)]
    pub ended_at_ms: Option<i64>,
    #[serde(flatten)]
    pub context: SessionContext,
    #[serde(default)]
    pub events: Vec<Event>,
}

impl Session {
    /// Net feedback per preset in this session, in order of first appearance.
    pub fn preset_scores(&self) -> Vec<(&str, f32)> {
        let mut scores: Vec<(&str, f32)> = Vec::new();
        for e in &self.events {
            let Some(id) = e.preset.as_deref() else {
                continue;
            };
            let w = e.kind.weight(e.seconds);
            match scores.iter_mut().find(|(p, _)| *p == id) {
                Some((_, s)) => *s += w,
                None => scores.push((id, w)),
            }
        }
        scores
    }
}

/// A whole history, ordered by producer, then start time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionLog {
    pub sessions: Vec<Session>,
}

impl SessionLog {
    /// Restores the canonical order (producer, start time, id).
    pub fn sort(&mut self) {
        self.sessions.sort_by(|a, b| {
            (&a.producer, a.started_at_ms, a.session).cmp(&(
                &b.producer,
                b.started_at_ms,
                b.session,
            ))
        });
    }

    pub fn producers(&self) -> Vec<&str> {
        let mut p: Vec<&str> = self.sessions.iter().map(|s| s.producer.as_str()).collect();
        p.dedup();
        p
    }

    pub fn event_count(&self) -> usize {
        self.sessions.iter().map(|s| s.events.len()).sum()
    }
}

/// Formats a key as "A Natural minor" / parses it back (also "A minor", "F# dorian").
pub fn parse_key(text: &str) -> Option<Key> {
    let (tonic, scale) = text.trim().split_once(' ')?;
    Some(Key::new(
        crate::music::PitchClass::parse(tonic)?,
        crate::music::Scale::parse(scale.trim())?,
    ))
}

mod key_text {
    use crate::music::Key;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(key: &Option<Key>, s: S) -> Result<S::Ok, S::Error> {
        match key {
            Some(k) => s.serialize_some(&k.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Key>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(t) => super::parse_key(&t)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("bad key {t:?}"))),
        }
    }
}

mod meter_text {
    use crate::music::Meter;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(m: &Meter, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&m.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Meter, D::Error> {
        let t = String::deserialize(d)?;
        Meter::parse(&t).ok_or_else(|| D::Error::custom(format!("bad meter {t:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::music::{PitchClass, Scale};

    #[test]
    fn keys_round_trip_as_text() {
        for scale in Scale::ALL {
            let k = Key::new(PitchClass::Fs, scale);
            assert_eq!(parse_key(&k.to_string()), Some(k));
        }
        assert_eq!(
            parse_key("A minor"),
            Some(Key::new(PitchClass::A, Scale::Minor))
        );
        assert_eq!(parse_key("H minor"), None);
    }

    #[test]
    fn preset_scores_sum_feedback() {
        let ev = |kind, preset: &str| Event {
            t_ms: 0,
            kind,
            preset: Some(preset.into()),
            seconds: None,
            context: None,
        };
        let s = Session {
            producer: "p".into(),
            session: 1,
            started_at_ms: 0,
            ended_at_ms: None,
            context: SessionContext::default(),
            events: vec![
                ev(EventKind::Kept, "a"),
                ev(EventKind::AbandonedQuickly, "b"),
                ev(EventKind::Liked, "a"),
            ],
        };
        assert_eq!(s.preset_scores(), vec![("a", 3.0), ("b", -2.0)]);
    }
}
