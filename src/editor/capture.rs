//! "Capture": keep the idea that just played. Writes the last bars that actually sounded
//! (not what was planned) to a `.mid`, and the producer's own notes of the same bars to a
//! second file next to it, so each re-imports as one clean melody line.

use crate::engine::EngineView;
use crate::midi::write_melody;
use crate::music::Key;
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// The files one capture wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub melody: PathBuf,
    /// Only when the producer played something during those bars.
    pub input: Option<PathBuf>,
}

/// Where captures go unless the producer picks a folder: `~/Music/Melodist` if there is
/// a music folder, else Melodist's data folder.
pub fn default_dir() -> PathBuf {
    directories::UserDirs::new()
        .and_then(|d| d.audio_dir().map(|m| m.join("Melodist")))
        .or_else(|| crate::sessions::data_dir().ok().map(|d| d.join("captures")))
        .unwrap_or_else(|| PathBuf::from("melodist-captures"))
}

/// Writes the last `bars` bars of `view` into `dir` (created if needed) as
/// `melodist-<unix time>[-n].mid` and, if there was input, `...-input.mid`.
pub fn capture(
    view: &EngineView,
    bars: u32,
    dir: &Path,
    key: Key,
    channel: u8,
) -> Result<Captured> {
    let (melody, input) = view.capture(bars);
    if melody.is_empty() && input.is_empty() {
        bail!("nothing played in the last {bars} bars");
    }
    std::fs::create_dir_all(dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = (0..)
        .map(|n| match n {
            0 => format!("melodist-{stamp}"),
            n => format!("melodist-{stamp}-{n}"),
        })
        .find(|b| !dir.join(format!("{b}.mid")).exists())
        .expect("an unused name exists");
    let tempo = view.tempo.clamp(10.0, 999.0);
    let write = |suffix: &str, notes: &[crate::midi::MelodyNote]| -> Result<PathBuf> {
        let path = dir.join(format!("{base}{suffix}.mid"));
        let title = format!("Melodist {base}{suffix}");
        write_melody(&path, &title, notes, tempo, view.meter, Some(key), channel)?;
        Ok(path)
    };
    Ok(Captured {
        melody: write("", &melody)?,
        input: if input.is_empty() {
            None
        } else {
            Some(write("-input", &input)?)
        },
    })
}
