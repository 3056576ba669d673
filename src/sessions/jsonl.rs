//! The session log exchange format: JSON lines, one session per line.
//!
//! ```text
//! {"producer":"local","session":12,"started_at_ms":1718000000000,"ended_at_ms":1718000900000,
//!  "tempo":122.0,"meter":"4/4","key":"A Natural minor","input_density":1.5,"input_register":69.0,
//!  "events":[{"t_ms":4000,"kind":"preset_used","preset":"reel-drive","seconds":95.0},
//!            {"t_ms":30000,"kind":"kept","preset":"reel-drive"}]}
//! ```
//! (shown wrapped; in the file each session is one line). Fields:
//! - `producer`: who played. Lines are grouped by producer, so logs of many producers can be
//!   concatenated and evaluated together (`melodist eval-recs --log FILE`).
//! - `session`: an id unique within the producer; `started_at_ms` / `ended_at_ms`: Unix ms.
//! - `tempo` (BPM), `meter` ("6/8"), `key` (tonic + scale, e.g. "F# dorian", or null),
//!   `input_density` (notes per beat the producer played), `input_register` (mean MIDI pitch).
//! - `events[]`: `t_ms` since the session start, `kind` (one of `preset_used`, `liked`,
//!   `disliked`, `kept`, `exported`, `new_idea`, `abandoned_quickly`, `kept_playing`,
//!   `context`), `preset` (a preset id), `seconds` (how long the preset was used,
//!   `preset_used` only) and `context` (`context` events: the new tempo, meter, key and input
//!   statistics, same fields as the session).
//!
//! Blank lines and lines starting with `#` are ignored.

use super::{Session, SessionLog};
use anyhow::{Context as _, Result};
use std::io::{BufRead, Write};
use std::path::Path;

/// Writes the log, one session per line.
pub fn write(log: &SessionLog, mut out: impl Write) -> Result<()> {
    for s in &log.sessions {
        serde_json::to_writer(&mut out, s)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Reads a log; a malformed line is an error naming its line number (a silently partial
/// evaluation would be misleading).
pub fn read(input: impl BufRead) -> Result<SessionLog> {
    let mut log = SessionLog::default();
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read line {}", n + 1))?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let session: Session = serde_json::from_str(trimmed)
            .with_context(|| format!("line {}: not a session record", n + 1))?;
        log.sessions.push(session);
    }
    log.sort();
    Ok(log)
}

pub fn write_file(log: &SessionLog, path: &Path) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    write(log, std::io::BufWriter::new(file))
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn read_file(path: &Path) -> Result<SessionLog> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read(std::io::BufReader::new(file)).with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::music::{Key, Meter, PitchClass, Scale};
    use crate::sessions::{Event, EventKind, SessionContext};

    #[test]
    fn round_trip_and_bad_line() {
        let session = Session {
            producer: "ana".into(),
            session: 3,
            started_at_ms: 1000,
            ended_at_ms: Some(5000),
            context: SessionContext {
                tempo: 122.0,
                meter: Meter::new(6, 8),
                key: Some(Key::new(PitchClass::A, Scale::Dorian)),
                input_density: Some(1.5),
                input_register: None,
            },
            events: vec![Event {
                t_ms: 10,
                kind: EventKind::PresetUsed,
                preset: Some("jig-lilt".into()),
                seconds: Some(80.0),
                context: None,
            }],
        };
        let log = SessionLog {
            sessions: vec![session],
        };
        let mut buf = Vec::new();
        write(&log, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.contains("\"meter\":\"6/8\"") && text.contains("A Dorian"),
            "{text}"
        );
        assert_eq!(read(text.as_bytes()).unwrap(), log);
        let err = read(format!("{text}\n{{\"producer\": 1}}\n").as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("line 3"), "{err:#}");
    }
}
