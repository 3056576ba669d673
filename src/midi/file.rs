//! Reads and writes Standard MIDI Files with `midly`.
//!
//! Reading reduces any file to one monophonic melody line (the highest sounding voice,
//! drums excluded), because that is what Melodist models and answers.

use crate::music::{Key, Meter, PitchClass, Scale};
use anyhow::{Context, Result, bail};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};
use std::path::{Path, PathBuf};

/// Ticks per quarter note of the files we write (the corpus convention).
pub const WRITE_TPQ: u16 = 480;

/// A note of a melody, in quarter notes from the start of the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MelodyNote {
    pub start: f64,
    pub duration: f64,
    pub pitch: u8,
    pub velocity: u8,
}

/// A monophonic melody with the meter and key its file declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Melody {
    pub title: String,
    /// The first time signature of the file (4/4 if none).
    pub meter: Meter,
    /// The first key signature of the file, if any.
    pub key: Option<Key>,
    pub notes: Vec<MelodyNote>,
}

pub fn read_melody(path: &Path) -> Result<Melody> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    read_melody_bytes(&bytes)
        .with_context(|| format!("{} is not a usable MIDI file", path.display()))
}

pub fn read_melody_bytes(bytes: &[u8]) -> Result<Melody> {
    let (mut melody, raw, tpq) = parse(bytes)?;
    melody.notes = to_notes(skyline(raw), tpq);
    Ok(melody)
}

/// Every note of a file, overlapping ones included (a chord track, a piano part), sorted
/// by onset; drums excluded.
pub fn read_all_notes(path: &Path) -> Result<Vec<MelodyNote>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, mut raw, tpq) =
        parse(&bytes).with_context(|| format!("{} is not a usable MIDI file", path.display()))?;
    raw.sort_by_key(|n| (n.0, n.2));
    Ok(to_notes(raw, tpq))
}

fn to_notes(raw: Vec<(u64, u64, u8, u8)>, tpq: f64) -> Vec<MelodyNote> {
    raw.into_iter()
        .map(|(s, e, p, v)| MelodyNote {
            start: s as f64 / tpq,
            duration: (e - s) as f64 / tpq,
            pitch: p,
            velocity: v,
        })
        .collect()
}

/// The file's title, meter and key (notes empty), its notes as (start tick, end tick,
/// pitch, velocity), and its ticks per quarter note.
#[allow(clippy::type_complexity)]
fn parse(bytes: &[u8]) -> Result<(Melody, Vec<(u64, u64, u8, u8)>, f64)> {
    let smf = Smf::parse(bytes).context("MIDI parse error")?;
    let tpq = match smf.header.timing {
        Timing::Metrical(t) if t.as_int() > 0 => t.as_int() as f64,
        Timing::Metrical(_) => bail!("MIDI header has zero ticks per quarter note"),
        Timing::Timecode(..) => {
            bail!("SMPTE-timed MIDI files are not supported (need ticks per quarter note)")
        }
    };
    let mut title = String::new();
    let mut meter = None;
    let mut key = None;
    // (start tick, end tick, pitch, velocity)
    let mut raw: Vec<(u64, u64, u8, u8)> = Vec::new();
    for track in &smf.tracks {
        let mut tick = 0u64;
        let mut open: [[Option<(u64, u8)>; 128]; 16] = [[None; 128]; 16];
        for ev in track {
            tick += ev.delta.as_int() as u64;
            match ev.kind {
                TrackEventKind::Meta(MetaMessage::TrackName(name)) if title.is_empty() => {
                    title = String::from_utf8_lossy(name).trim().to_string();
                }
                TrackEventKind::Meta(MetaMessage::TimeSignature(n, d_pow, ..))
                    if meter.is_none() =>
                {
                    meter = Some(Meter::from_host(
                        Some(n as i32),
                        1i32.checked_shl(d_pow as u32),
                    ));
                }
                TrackEventKind::Meta(MetaMessage::KeySignature(sharps, minor)) if key.is_none() => {
                    key = Some(key_from_signature(sharps, minor));
                }
                TrackEventKind::Midi { channel, message } => {
                    let ch = channel.as_int() as usize;
                    if ch == 9 {
                        continue; // General MIDI drums are not melody.
                    }
                    let (pitch, on_vel) = match message {
                        MidiMessage::NoteOn { key, vel } => (key.as_int(), vel.as_int()),
                        MidiMessage::NoteOff { key, .. } => (key.as_int(), 0),
                        _ => continue,
                    };
                    let slot = &mut open[ch][pitch as usize];
                    if let Some((start, vel)) = slot.take()
                        && tick > start
                    {
                        raw.push((start, tick, pitch, vel));
                    }
                    if on_vel > 0 {
                        *slot = Some((tick, on_vel));
                    }
                }
                _ => {}
            }
        }
    }
    let melody = Melody {
        title,
        meter: meter.unwrap_or_default(),
        key,
        notes: Vec::new(),
    };
    Ok((melody, raw, tpq))
}

/// Reduces overlapping notes to the highest voice: at each onset the highest pitch wins and
/// a sounding note is cut where the next kept note starts.
fn skyline(mut raw: Vec<(u64, u64, u8, u8)>) -> Vec<(u64, u64, u8, u8)> {
    raw.sort_by(|a, b| a.0.cmp(&b.0).then(b.2.cmp(&a.2)));
    let mut out: Vec<(u64, u64, u8, u8)> = Vec::with_capacity(raw.len());
    for note in raw {
        if let Some(last) = out.last_mut() {
            if note.0 == last.0 {
                continue; // same onset, lower pitch: dropped
            }
            if note.0 < last.1 {
                if note.2 < last.2 && note.1 <= last.1 {
                    continue; // a lower inner voice under a held melody note
                }
                last.1 = note.0;
            }
        }
        out.push(note);
    }
    out
}

fn key_from_signature(sharps: i8, minor: bool) -> Key {
    let major_tonic = (sharps as i32 * 7).rem_euclid(12) as u8;
    if minor {
        Key::new(PitchClass::from_index(major_tonic + 9), Scale::Minor)
    } else {
        Key::new(PitchClass::from_index(major_tonic), Scale::Major)
    }
}

fn signature_from_key(key: &Key) -> (i8, bool) {
    let minor = key.scale.is_minor();
    let major_tonic = if minor {
        (key.tonic.semitone() + 3) % 12
    } else {
        key.tonic.semitone()
    };
    // Position on the circle of fifths, preferring flats for 6+ sharps.
    let fifths = (major_tonic as i32 * 7).rem_euclid(12);
    let sharps = if fifths > 6 { fifths - 12 } else { fifths };
    (sharps as i8, minor)
}

/// All `.mid` / `.midi` files under the given folders (recursively), sorted for
/// reproducibility.
pub fn collect_midi_files(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for dir in dirs {
        if dir.is_file() {
            out.push(dir.clone());
            continue;
        }
        if !dir.is_dir() {
            bail!("{} is not a folder", dir.display());
        }
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for entry in
                std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
            {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    e.eq_ignore_ascii_case("mid") || e.eq_ignore_ascii_case("midi")
                }) {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes a type-0 MIDI file that any DAW opens: tempo, meter, key, one channel of notes.
pub fn write_melody(
    path: &Path,
    title: &str,
    notes: &[MelodyNote],
    tempo_bpm: f64,
    meter: Meter,
    key: Option<Key>,
    channel: u8,
) -> Result<()> {
    let bytes = melody_to_bytes(title, notes, tempo_bpm, meter, key, channel)?;
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

pub fn melody_to_bytes(
    title: &str,
    notes: &[MelodyNote],
    tempo_bpm: f64,
    meter: Meter,
    key: Option<Key>,
    channel: u8,
) -> Result<Vec<u8>> {
    tracks_to_bytes(title, &[(notes, channel)], tempo_bpm, meter, key)
}

/// Writes the melody and, on a second track named "Chords", accompanying notes (e.g. the
/// chords it was written over), so the file plays back as a sketch.
#[allow(clippy::too_many_arguments)]
pub fn write_melody_with_chords(
    path: &Path,
    title: &str,
    notes: &[MelodyNote],
    chords: &[MelodyNote],
    tempo_bpm: f64,
    meter: Meter,
    key: Option<Key>,
    channel: u8,
) -> Result<()> {
    let tracks = [(notes, channel), (chords, (channel + 1) & 15)];
    let bytes = tracks_to_bytes(title, &tracks, tempo_bpm, meter, key)?;
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// One track per `(notes, channel)`; the first carries the title, tempo, meter and key.
fn tracks_to_bytes(
    title: &str,
    parts: &[(&[MelodyNote], u8)],
    tempo_bpm: f64,
    meter: Meter,
    key: Option<Key>,
) -> Result<Vec<u8>> {
    if !(10.0..=999.0).contains(&tempo_bpm) {
        bail!("tempo {tempo_bpm} BPM is outside 10..=999");
    }
    let mut tracks = Vec::with_capacity(parts.len());
    for (i, &(notes, channel)) in parts.iter().enumerate() {
        let head = if i == 0 {
            header_events(title, tempo_bpm, meter, key)
        } else {
            vec![meta(MetaMessage::TrackName(b"Chords"))]
        };
        tracks.push(note_track(head, notes, channel)?);
    }
    let format = if tracks.len() == 1 {
        Format::SingleTrack
    } else {
        Format::Parallel
    };
    let smf = Smf {
        header: Header::new(format, Timing::Metrical(WRITE_TPQ.into())),
        tracks,
    };
    let mut out = Vec::new();
    smf.write_std(&mut out).context("MIDI encode error")?;
    Ok(out)
}

/// Title, tempo, time signature and key signature events.
fn header_events(
    title: &str,
    tempo_bpm: f64,
    meter: Meter,
    key: Option<Key>,
) -> Vec<TrackEvent<'_>> {
    let micros = (60_000_000.0 / tempo_bpm).round() as u32;
    let d_pow = meter.denominator.trailing_zeros() as u8;
    let mut track: Vec<TrackEvent> = vec![
        meta(MetaMessage::TrackName(title.as_bytes())),
        meta(MetaMessage::Tempo(micros.into())),
        meta(MetaMessage::TimeSignature(meter.numerator, d_pow, 24, 8)),
    ];
    if let Some(k) = key {
        let (sharps, minor) = signature_from_key(&k);
        track.push(meta(MetaMessage::KeySignature(sharps, minor)));
    }
    track
}

/// `head`, then the notes on `channel` in time order, then the end of the track.
fn note_track<'a>(
    mut track: Vec<TrackEvent<'a>>,
    notes: &[MelodyNote],
    channel: u8,
) -> Result<Vec<TrackEvent<'a>>> {
    let to_tick = |q: f64| (q * WRITE_TPQ as f64).round().max(0.0) as u64;
    // (tick, order, kind): note-offs (order 0) before note-ons (order 1) at the same tick.
    let mut timed: Vec<(u64, u8, TrackEventKind)> = Vec::new();
    let ch = (channel & 15).into();
    for n in notes {
        let (s, e) = (to_tick(n.start), to_tick(n.start + n.duration));
        if e <= s {
            continue;
        }
        let k = n.pitch.min(127).into();
        timed.push((
            s,
            1,
            TrackEventKind::Midi {
                channel: ch,
                message: MidiMessage::NoteOn {
                    key: k,
                    vel: n.velocity.clamp(1, 127).into(),
                },
            },
        ));
        timed.push((
            e,
            0,
            TrackEventKind::Midi {
                channel: ch,
                message: MidiMessage::NoteOff {
                    key: k,
                    vel: 0.into(),
                },
            },
        ));
    }
    timed.sort_by_key(|(t, o, _)| (*t, *o));
    let mut last = 0u64;
    for (tick, _, kind) in timed {
        let delta = u32::try_from(tick - last).context("note too far from the previous one")?;
        track.push(TrackEvent {
            delta: delta.into(),
            kind,
        });
        last = tick;
    }
    track.push(meta(MetaMessage::EndOfTrack));
    Ok(track)
}

fn meta(m: MetaMessage<'_>) -> TrackEvent<'_> {
    TrackEvent {
        delta: 0.into(),
        kind: TrackEventKind::Meta(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(start: f64, duration: f64, pitch: u8) -> MelodyNote {
        MelodyNote {
            start,
            duration,
            pitch,
            velocity: 90,
        }
    }

    #[test]
    fn write_then_read_round_trip() {
        let notes = vec![
            n(0.0, 1.0, 69),
            n(1.0, 0.5, 72),
            n(1.5, 0.5, 71),
            n(3.0, 1.0, 64),
        ];
        let key = Key::new(PitchClass::A, Scale::Minor);
        let bytes = melody_to_bytes("test", &notes, 110.0, Meter::new(3, 4), Some(key), 2).unwrap();
        let m = read_melody_bytes(&bytes).unwrap();
        assert_eq!(m.title, "test");
        assert_eq!(m.meter, Meter::new(3, 4));
        assert_eq!(m.key, Some(key));
        assert_eq!(m.notes, notes);
    }

    #[test]
    fn key_signatures_round_trip() {
        for tonic in 0..12u8 {
            for scale in [Scale::Major, Scale::Minor] {
                let k = Key::new(PitchClass::from_index(tonic), scale);
                let (s, m) = signature_from_key(&k);
                assert_eq!(key_from_signature(s, m), k);
            }
        }
    }

    #[test]
    fn chords_reduce_to_the_top_voice() {
        let raw = vec![
            (0, 480, 60, 80),
            (0, 480, 64, 80),
            (0, 960, 67, 80),
            (480, 960, 62, 80),
            (960, 1440, 65, 80),
        ];
        let out = skyline(raw);
        assert_eq!(out, vec![(0, 960, 67, 80), (960, 1440, 65, 80)]);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = read_melody_bytes(b"RIFF this is not midi").unwrap_err();
        assert!(format!("{err:#}").contains("MIDI parse error"), "{err:#}");
        // A header announcing an impossible file format.
        let bad_format = b"MThd\x00\x00\x00\x06\x00\x07\x00\x01\x01\xe0MTrk\x00\x00\x00\x00";
        assert!(read_melody_bytes(bad_format).is_err());
        let smpte =
            b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\xe7\x28MTrk\x00\x00\x00\x04\x00\xff\x2f\x00";
        let err = read_melody_bytes(smpte).unwrap_err();
        assert!(format!("{err:#}").contains("SMPTE"), "{err:#}");
    }
}
