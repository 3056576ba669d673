//! Style presets: a named set of generator settings plus the features the recommender
//! matches against the producer's context.
//!
//! Presets are plain JSON files (see `src/presets/factory/*.json` for the format). The
//! factory bank is compiled into the binary; user presets live as one file each in the
//! user preset folder, so a producer can copy, share and version them like any document.

use crate::generator::{GenSettings, Mode};
use crate::model::tokenizer::Style;
use crate::music::{Meter, Scale};
use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The factory bank, embedded so the plugin never depends on files next to it.
const FACTORY_JSON: &[&str] = &[
    include_str!("factory/reel-drive.json"),
    include_str!("factory/jig-lilt.json"),
    include_str!("factory/slip-jig-float.json"),
    include_str!("factory/hornpipe-swagger.json"),
    include_str!("factory/polka-bounce.json"),
    include_str!("factory/march-step.json"),
    include_str!("factory/waltz-turn.json"),
    include_str!("factory/slow-air.json"),
    include_str!("factory/chorale-line.json"),
    include_str!("factory/lament.json"),
    include_str!("factory/strathspey-snap.json"),
    include_str!("factory/shanty-swing.json"),
    include_str!("factory/highland-pipe.json"),
    include_str!("factory/lo-fi-noodle.json"),
    include_str!("factory/trap-bell.json"),
    include_str!("factory/house-pluck.json"),
    include_str!("factory/techno-sequence.json"),
    include_str!("factory/synthwave-lead.json"),
    include_str!("factory/pop-hook.json"),
    include_str!("factory/drill-slide.json"),
    include_str!("factory/afrobeats-flute.json"),
    include_str!("factory/ambient-drift.json"),
    include_str!("factory/dnb-riff.json"),
    include_str!("factory/reggaeton-lead.json"),
    include_str!("factory/blues-lick.json"),
    include_str!("factory/jazz-walk.json"),
    include_str!("factory/chiptune-arp.json"),
    include_str!("factory/cinematic-theme.json"),
    include_str!("factory/bossa-melody.json"),
    include_str!("factory/kpop-topline.json"),
];

/// A style preset as stored on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StylePreset {
    /// Stable identifier (`lowercase-with-dashes`): what session logs refer to, so renaming
    /// a preset keeps its history.
    pub id: String,
    /// Display name ("Reel Drive").
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Style tag ("reel", "trap", ...), used by the taste profile.
    pub style: String,
    pub settings: PresetSettings,
    pub features: MatchFeatures,
}

/// The generator settings a preset applies. The key's tonic is never stored: it belongs to
/// the producer's track, not to a style.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetSettings {
    pub scale: ScaleHandling,
    /// Lowest and highest MIDI pitch.
    pub low: u8,
    pub high: u8,
    /// 0..=1, see [`GenSettings::density`].
    pub density: f32,
    /// 0..=1, see [`GenSettings::variation`].
    pub variation: f32,
    /// 0.05..=1, sounding fraction of each note.
    pub gate: f32,
    /// 1..=127.
    pub velocity: u8,
    /// 0..=1.
    pub humanize: f32,
    pub mode: Mode,
}

/// Whether a preset locks the scale or keeps whatever the input / the producer chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleHandling {
    FollowInput,
    Fixed(Scale),
}

/// Descriptive features the content-based recommender matches against the context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFeatures {
    /// Tempo range (BPM) the style is written for.
    pub tempo_min: f32,
    pub tempo_max: f32,
    /// Time signatures the style suits, as "6/8".
    pub meters: Vec<String>,
    pub key_mode: KeyMode,
    /// 0 = calm, 1 = high energy.
    pub energy: f32,
    /// Free mood tags ("driving", "melancholy").
    #[serde(default)]
    pub moods: Vec<String>,
}

/// The tonality a style suits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    Major,
    Minor,
    Any,
}

impl KeyMode {
    /// Whether a scale suits this key mode.
    pub fn accepts(self, scale: Scale) -> bool {
        match self {
            KeyMode::Any => true,
            KeyMode::Minor => scale.is_minor(),
            KeyMode::Major => !scale.is_minor(),
        }
    }
}

impl StylePreset {
    /// Parses and validates one preset file's text.
    pub fn from_json(text: &str) -> Result<StylePreset> {
        let preset: StylePreset =
            serde_json::from_str(text).context("not a valid preset JSON file")?;
        preset.validate()?;
        Ok(preset)
    }

    /// Pretty JSON, the format of the factory files.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).expect("preset serialises") + "\n"
    }

    /// Checks every value is in range; the error lists all problems, one per line.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            problems.push(format!(
                "id {:?} must be 1-64 characters of a-z, 0-9 and '-'",
                self.id
            ));
        }
        if self.name.trim().is_empty() || self.name.len() > 64 {
            problems.push("name must be 1-64 characters".to_string());
        }
        if self.style.trim().is_empty() {
            problems.push("style tag must not be empty".to_string());
        }
        let s = &self.settings;
        if s.low > 127 || s.high > 127 || s.high < s.low.saturating_add(12) {
            problems.push(format!(
                "register {}..{} must be MIDI pitches 0-127 spanning at least an octave",
                s.low, s.high
            ));
        }
        let unit = [
            ("density", s.density),
            ("variation", s.variation),
            ("humanize", s.humanize),
        ];
        for (name, v) in unit {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("{name} {v} must be between 0 and 1"));
            }
        }
        if !(0.05..=1.0).contains(&s.gate) {
            problems.push(format!("gate {} must be between 0.05 and 1", s.gate));
        }
        if !(1..=127).contains(&s.velocity) {
            problems.push(format!("velocity {} must be between 1 and 127", s.velocity));
        }
        let f = &self.features;
        if !(20.0..=400.0).contains(&f.tempo_min)
            || !(20.0..=400.0).contains(&f.tempo_max)
            || f.tempo_min > f.tempo_max
        {
            problems.push(format!(
                "tempo range {}-{} must be within 20-400 BPM, low first",
                f.tempo_min, f.tempo_max
            ));
        }
        if f.meters.is_empty() {
            problems.push("meters must list at least one time signature".to_string());
        }
        for m in &f.meters {
            if Meter::parse(m).is_none() {
                problems.push(format!("meter {m:?} is not a time signature like \"6/8\""));
            }
        }
        if !(0.0..=1.0).contains(&f.energy) {
            problems.push(format!("energy {} must be between 0 and 1", f.energy));
        }
        if f.moods.iter().any(|m| m.trim().is_empty()) {
            problems.push("mood tags must not be empty".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("invalid preset {:?}:\n  {}", self.id, problems.join("\n  "))
        }
    }

    /// Writes this preset's generator settings into the engine's settings. The tonic and the
    /// seed stay the producer's; a "follow input" preset keeps the current scale too.
    pub fn apply_to(&self, settings: &mut GenSettings) {
        let s = &self.settings;
        if let ScaleHandling::Fixed(scale) = s.scale {
            settings.key.scale = scale;
        }
        settings.low = s.low;
        settings.high = s.high;
        settings.density = s.density;
        settings.variation = s.variation;
        settings.gate = s.gate;
        settings.velocity = s.velocity;
        settings.humanize = s.humanize;
        settings.mode = s.mode;
        // Allocation-free (this runs in `process()`); unknown styles mean "any".
        settings.style = Style::parse(&self.style).unwrap_or_default();
    }

    /// The time signatures this preset suits (validated presets parse fully).
    pub fn meters(&self) -> Vec<Meter> {
        self.features
            .meters
            .iter()
            .filter_map(|m| Meter::parse(m))
            .collect()
    }

    /// Middle of the register, used to compare with the producer's playing.
    pub fn register_centre(&self) -> f32 {
        (self.settings.low as f32 + self.settings.high as f32) / 2.0
    }

    pub fn mode(&self) -> Mode {
        self.settings.mode
    }
}

/// The factory presets plus the producer's own, in a stable order (factory first).
#[derive(Debug, Clone, Default)]
pub struct PresetLibrary {
    presets: Vec<StylePreset>,
}

impl PresetLibrary {
    /// The embedded factory bank. The files are checked by a unit test, so parsing here
    /// cannot fail in a released build.
    pub fn factory() -> PresetLibrary {
        let presets = FACTORY_JSON
            .iter()
            .map(|text| StylePreset::from_json(text).expect("factory presets are valid"))
            .collect();
        PresetLibrary { presets }
    }

    /// Factory presets plus every valid `*.json` in `user_dir`. Files that do not parse, fail
    /// validation or reuse an existing id are skipped; the returned warnings say why.
    pub fn load(user_dir: &Path) -> (PresetLibrary, Vec<String>) {
        let mut library = PresetLibrary::factory();
        let mut warnings = Vec::new();
        let entries = match std::fs::read_dir(user_dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return (library, warnings),
            Err(err) => {
                warnings.push(format!(
                    "cannot read preset folder {}: {err}",
                    user_dir.display()
                ));
                return (library, warnings);
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let loaded = std::fs::read_to_string(&path)
                .map_err(anyhow::Error::from)
                .and_then(|text| StylePreset::from_json(&text));
            match loaded {
                Ok(p) if library.get(&p.id).is_some() => warnings.push(format!(
                    "skipped preset {}: id {:?} is already used",
                    path.display(),
                    p.id
                )),
                Ok(p) => library.presets.push(p),
                Err(err) => warnings.push(format!("skipped preset {}: {err:#}", path.display())),
            }
        }
        (library, warnings)
    }

    pub fn presets(&self) -> &[StylePreset] {
        &self.presets
    }

    pub fn get(&self, id: &str) -> Option<&StylePreset> {
        self.presets.iter().find(|p| p.id == id)
    }

    /// Position of a preset: what the audio thread sends instead of a `String` id.
    pub fn index_of(&self, id: &str) -> Option<u16> {
        self.presets
            .iter()
            .position(|p| p.id == id)
            .map(|i| i as u16)
    }

    /// Finds a preset by id or (case-insensitive) display name.
    pub fn find(&self, id_or_name: &str) -> Option<&StylePreset> {
        self.get(id_or_name).or_else(|| {
            self.presets
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(id_or_name))
        })
    }

    pub fn ids(&self) -> Vec<String> {
        self.presets.iter().map(|p| p.id.clone()).collect()
    }
}

/// The user preset folder: `<data dir>/presets`.
pub fn user_dir() -> Result<PathBuf> {
    Ok(crate::sessions::data_dir()?.join("presets"))
}

/// Validates and saves a user preset as `<dir>/<id>.json` (written to a temporary file and
/// renamed, so a crash never leaves half a preset).
pub fn save_user(dir: &Path, preset: &StylePreset) -> Result<PathBuf> {
    preset.validate()?;
    if PresetLibrary::factory().get(&preset.id).is_some() {
        bail!(
            "preset id {:?} belongs to a factory preset; choose another id",
            preset.id
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create preset folder {}", dir.display()))?;
    let path = dir.join(format!("{}.json", preset.id));
    let tmp = dir.join(format!(".{}.json.tmp", preset.id));
    std::fs::write(&tmp, preset.to_json())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Imports a preset file someone shared: validated, then saved into the user folder.
pub fn import(file: &Path, dir: &Path) -> Result<StylePreset> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let preset = StylePreset::from_json(&text)
        .with_context(|| format!("cannot import {}", file.display()))?;
    save_user(dir, &preset)?;
    Ok(preset)
}

/// Exports a preset to a file the producer can share.
pub fn export(preset: &StylePreset, file: &Path) -> Result<()> {
    std::fs::write(file, preset.to_json())
        .with_context(|| format!("cannot write {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_bank_is_valid_and_unique() {
        let lib = PresetLibrary::factory();
        assert!(lib.presets().len() >= 24);
        let mut ids = lib.ids();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), lib.presets().len(), "duplicate factory ids");
        for p in lib.presets() {
            assert!(!p.meters().is_empty(), "{} has no meters", p.id);
        }
    }

    #[test]
    fn json_round_trip() {
        let lib = PresetLibrary::factory();
        for p in lib.presets() {
            assert_eq!(&StylePreset::from_json(&p.to_json()).unwrap(), p);
        }
    }

    #[test]
    fn rejects_bad_values_with_reasons() {
        let mut p = PresetLibrary::factory().presets()[0].clone();
        p.settings.gate = 0.0;
        p.settings.low = 80;
        p.settings.high = 70;
        p.features.meters = vec!["7/7".into()];
        let msg = format!("{:#}", StylePreset::from_json(&p.to_json()).unwrap_err());
        for needle in ["gate", "register", "7/7"] {
            assert!(msg.contains(needle), "{needle} missing from: {msg}");
        }
        assert!(StylePreset::from_json("{\"id\": 3}").is_err());
        let unknown = p
            .to_json()
            .replacen("\"name\"", "\"colour\": 1, \"name\"", 1);
        assert!(
            StylePreset::from_json(&unknown).is_err(),
            "unknown fields are rejected"
        );
    }

    #[test]
    fn apply_keeps_tonic_and_seed() {
        let lib = PresetLibrary::factory();
        let reel = lib.get("reel-drive").unwrap();
        let mut s = GenSettings {
            seed: 99,
            ..GenSettings::default()
        };
        let tonic = s.key.tonic;
        reel.apply_to(&mut s);
        assert_eq!(s.key.scale, Scale::Dorian);
        assert_eq!((s.key.tonic, s.seed), (tonic, 99));
        assert_eq!((s.low, s.high, s.density), (62, 88, 0.85));
        let follow = lib
            .presets()
            .iter()
            .find(|p| p.settings.scale == ScaleHandling::FollowInput)
            .unwrap();
        s.key.scale = Scale::Blues;
        follow.apply_to(&mut s);
        assert_eq!(s.key.scale, Scale::Blues);
    }

    #[test]
    fn user_folder_skips_corrupt_files_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let mut mine = PresetLibrary::factory().presets()[0].clone();
        mine.id = "my-reel".into();
        mine.name = "My Reel".into();
        save_user(dir.path(), &mine).unwrap();
        std::fs::write(dir.path().join("broken.json"), "{ not json").unwrap();
        let mut clash = mine.clone();
        clash.id = "reel-drive".into();
        std::fs::write(dir.path().join("clash.json"), clash.to_json()).unwrap();
        let (lib, warnings) = PresetLibrary::load(dir.path());
        assert_eq!(lib.get("my-reel"), Some(&mine));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("broken.json")));
        assert!(warnings.iter().any(|w| w.contains("already used")));

        let out = dir.path().join("shared.json");
        export(&mine, &out).unwrap();
        let other = tempfile::tempdir().unwrap();
        assert_eq!(import(&out, other.path()).unwrap(), mine);
        assert!(import(&dir.path().join("broken.json"), other.path()).is_err());
    }
}
