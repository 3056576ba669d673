//! Melodies cut into fixed segments of a few bars: the unit the VAE (`super::vae`) encodes.
//!
//! A segment is a [`TokenSeq`] (the tune's header, then pitch/duration pairs, no `END`)
//! that covers exactly `bars` bars: silence before its first onset (a note held over from
//! the segment before) and after its last note (the end of a tune) is written as rests,
//! and a last note that would sound past the segment is cut at its end. So decoded
//! segments tile a phrase exactly, and training and decoding see the same picture.

use super::grid::{DURATIONS, bar_ticks};
use super::tokenizer::{NoteSeq, Onset, PAD, REST, TokenSeq, dur_token, token_ticks};
use super::vae::SegmentBatch;
use crate::music::Meter;
use candle_core::{Device, Result, Tensor};

/// Ticks in one segment of `bars` bars of `meter`.
pub fn segment_ticks(meter: Meter, bars: usize) -> u32 {
    bars as u32 * bar_ticks(meter)
}

/// Cuts a tokenised tune (its first note at tick 0 of bar 1, as `tokenizer::encode` writes
/// it) into consecutive segments of `ticks` ticks. Segments with fewer than `min_notes`
/// pitched notes are left out (silence teaches nothing); pass 0 to keep them all.
pub fn segments(seq: &TokenSeq, ticks: u32, min_notes: usize) -> Vec<TokenSeq> {
    // (onset tick, pitch token, duration ticks) of every note and rest of the tune.
    let mut events = Vec::new();
    let mut t = 0;
    for pair in seq.tokens[4.min(seq.len())..].chunks_exact(2) {
        let Some(d) = token_ticks(pair[1]) else {
            break;
        };
        events.push((t, pair[0], d));
        t += d;
    }
    if events.is_empty() {
        return Vec::new();
    }
    let count = t.div_ceil(ticks.max(1));
    let mut out = Vec::new();
    for k in 0..count {
        let (start, end) = (k * ticks, (k + 1) * ticks);
        let mut seg = TokenSeq::default();
        for &tok in &seq.tokens[..4] {
            seg.push(tok, Onset::default());
        }
        let mut at = start;
        let mut pitched = 0;
        for &(onset, tok, d) in events.iter().filter(|e| (start..end).contains(&e.0)) {
            push_rests(&mut seg, onset - at);
            seg.push(tok, Onset::default());
            seg.push(
                dur_token(longest_within(d.min(end - onset))),
                Onset::default(),
            );
            at = onset + d.min(end - onset);
            pitched += (tok != REST) as usize;
        }
        push_rests(&mut seg, end.saturating_sub(at));
        if pitched >= min_notes && seg.len() > 4 {
            out.push(seg);
        }
    }
    out
}

/// The longest duration (index into `DURATIONS`) not longer than `ticks` (the shortest if
/// none is).
fn longest_within(ticks: u32) -> u8 {
    DURATIONS.iter().rposition(|&d| d <= ticks).unwrap_or(0) as u8
}

/// Silence of `ticks` as rests, longest first (as `tokenizer::encode` writes a lead-in).
fn push_rests(seg: &mut TokenSeq, mut ticks: u32) {
    while ticks >= DURATIONS[0] {
        let d = longest_within(ticks);
        seg.push(REST, Onset::default());
        seg.push(dur_token(d), Onset::default());
        ticks -= DURATIONS[d as usize];
    }
}

/// Where each note of a segment starts: ticks from the segment's start.
pub fn onsets(notes: &NoteSeq) -> Vec<u32> {
    let mut t = 0;
    notes
        .dur
        .iter()
        .map(|&d| {
            let at = t;
            t += token_ticks(d).unwrap_or(0);
            at
        })
        .collect()
}

/// Pads segments' note steps into a [`SegmentBatch`].
pub fn segment_batch(seqs: &[NoteSeq]) -> Result<SegmentBatch> {
    let t = seqs.iter().map(NoteSeq::len).max().unwrap_or(1).max(1);
    let n = seqs.len() * t;
    let (mut pitch, mut dur, mut pp, mut pd) =
        (vec![PAD; n], vec![PAD; n], vec![PAD; n], vec![PAD; n]);
    let (mut pos, mut mask) = (vec![0u32; n], vec![0f32; n]);
    let mut cond = Vec::with_capacity(seqs.len() * 3);
    for (row, s) in seqs.iter().enumerate() {
        cond.extend_from_slice(&s.cond);
        let (o, len) = (row * t, s.len());
        pitch[o..o + len].copy_from_slice(&s.pitch);
        dur[o..o + len].copy_from_slice(&s.dur);
        pp[o..o + len].copy_from_slice(&s.prev_pitch);
        pd[o..o + len].copy_from_slice(&s.prev_dur);
        pos[o..o + len].copy_from_slice(&onsets(s));
        mask[o..o + len].fill(1.0);
    }
    let shape = (seqs.len(), t);
    let dev = &Device::Cpu;
    let u = |v: Vec<u32>| Tensor::from_vec(v, shape, dev);
    Ok(SegmentBatch {
        cond: Tensor::from_vec(cond, (seqs.len(), 3), dev)?,
        pitch: u(pitch)?,
        dur: u(dur)?,
        prev_pitch: u(pp)?,
        prev_dur: u(pd)?,
        pos: u(pos)?,
        mask: Tensor::from_vec(mask, shape, dev)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::midi::{Melody, MelodyNote};
    use crate::model::tokenizer::{Style, decode, encode};
    use crate::music::{Key, PitchClass, Scale};

    fn tune(notes: &[(f64, f64, u8)]) -> TokenSeq {
        let notes = notes
            .iter()
            .map(|&(start, duration, pitch)| MelodyNote {
                start,
                duration,
                pitch,
                velocity: 80,
            })
            .collect();
        let m = Melody {
            title: "t".into(),
            meter: Meter::new(4, 4),
            key: Some(Key::new(PitchClass::G, Scale::Major)),
            notes,
        };
        encode(&m, Style::Reel).unwrap()
    }

    #[test]
    fn segments_tile_the_tune_and_cut_held_notes() {
        // Two bars of quarters, then a note held across the segment line, then one note.
        let mut notes: Vec<(f64, f64, u8)> =
            (0..7).map(|i| (i as f64, 1.0, 67 + i as u8)).collect();
        notes.push((7.0, 2.0, 74));
        notes.push((9.0, 1.0, 76));
        let seq = tune(&notes);
        let ticks = segment_ticks(Meter::new(4, 4), 2);
        let segs = segments(&seq, ticks, 0);
        assert_eq!(segs.len(), 2);
        for s in &segs {
            assert_eq!(
                &s.tokens[..4],
                &seq.tokens[..4],
                "each segment keeps the header"
            );
            let steps = NoteSeq::from_tokens(s);
            let total: u32 = steps.dur.iter().map(|&d| token_ticks(d).unwrap()).sum();
            assert_eq!(total, ticks, "a segment spans exactly its bars");
        }
        // The held note is cut at the line; the next segment starts with a rest for it.
        let first = decode(&segs[0].tokens);
        assert_eq!(first.last().unwrap().pitch, 74);
        assert_eq!(first.last().unwrap().duration, 1.0);
        let second = NoteSeq::from_tokens(&segs[1]);
        assert_eq!(second.pitch[0], REST);
        assert_eq!(onsets(&second)[1], 12);
        assert_eq!(decode(&segs[1].tokens)[0].pitch, 76);
        // A segment of silence is left out when notes are required.
        assert_eq!(segments(&seq, ticks, 2).len(), 1);
    }
}
