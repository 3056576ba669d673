//! A morph a producer hears as one steady move from hook A to hook B.
//!
//! Decoding each point of the latent path (`variation::morph`) on its own often lands a
//! step back towards A, or on a third melody far from both: the decoder samples, and
//! nearby codes can decode to crossing notes. [`MorphPath`] decodes the points in order:
//! - each segment (the VAE's unit: one code each) is decoded a few times, one seed each,
//!   leaning towards A's notes by (1 − t) and B's by t ([`LEAN`]), so notes the ends share
//!   with the latent's choice win;
//! - of those, the whole phrase kept is one no closer to A and no farther from B than the
//!   step before, and no farther from A than B is (so the path can still arrive at B),
//!   with its share of the way, d(A) / (d(A) + d(B)), nearest the knob's;
//! - when no decoding qualifies, the point holds the previous phrase: the knob never
//!   steps back. `melodist morph --measure` counts those held steps.

use super::copyguard::{CopyGuard, melody_line};
use super::grid::TPQ;
use super::variation::{DecodeRules, Encoded, Lean, ORIGINAL_TRIES, VaeModel, cut, morph, shifted};
use crate::midi::MelodyNote;
use crate::music::SeedRng;
use anyhow::Result;

/// Decodings tried per segment at each point (each costs one segment decode).
pub const CANDIDATES: u64 = 8;
/// How hard a point leans towards A's notes (× (1 − t)) and B's (× t), in logits after
/// the temperature: enough that notes the two ends share with the latent's choice win.
pub const LEAN: f32 = 8.0;
/// Decodings per segment kept for choosing the whole phrase.
const KEPT: usize = 4;

/// The points of one morph from A to B, decoded on demand and kept.
pub struct MorphPath {
    a: Encoded,
    b: Encoded,
    /// Points per path: point `i` is `i / steps` of the way.
    steps: usize,
    seed: u64,
    /// Quarter notes per segment.
    segment: f64,
    /// B's notes as heard (A's are point 0's), and both cut into segments (each from its
    /// segment's start).
    b_notes: Vec<MelodyNote>,
    cut_ends: [Vec<Vec<MelodyNote>>; 2],
    /// The same segments as leans for the decoder.
    leans: [Vec<Lean>; 2],
    /// Points 0..path.len() so far; point 0 is A as heard.
    path: Vec<Point>,
}

#[derive(Clone)]
struct Point {
    notes: Vec<MelodyNote>,
    /// The whole phrase's distances to A and B.
    whole: [usize; 2],
    /// Each segment's distances to A's and B's.
    to_a: Vec<usize>,
    to_b: Vec<usize>,
}

impl MorphPath {
    /// A path from `a` (heard as `a_notes`) to `b` (heard as `b_notes`) in `steps` steps.
    pub fn new(
        vae: &VaeModel,
        a: Encoded,
        b: Encoded,
        a_notes: Vec<MelodyNote>,
        b_notes: Vec<MelodyNote>,
        steps: usize,
        seed: u64,
    ) -> Self {
        let segments = a.codes.len().max(b.codes.len());
        let segment = vae.segment_ticks(a.context.meter) as f64 / TPQ as f64;
        let cut_ends = [&a_notes, &b_notes].map(|notes| cut(notes, segment, segments));
        let to_b = (cut_ends[0].iter().zip(&cut_ends[1]))
            .map(|(a, b)| note_edit_distance(a, b))
            .collect();
        let start = Point {
            whole: [0, note_edit_distance(&a_notes, &b_notes)],
            notes: a_notes,
            to_a: vec![0; segments],
            to_b,
        };
        let key = a.context.key;
        let leans = cut_ends
            .each_ref()
            .map(|segments| segments.iter().map(|n| Lean::new(n, key, 0.0)).collect());
        Self {
            a,
            b,
            leans,
            steps: steps.max(1),
            seed,
            segment,
            b_notes,
            cut_ends,
            path: vec![start],
        }
    }

    /// The notes of point `i` (0 = A, `steps` = B), decoding the points before it first.
    /// The same codes, rules and seed always give the same path.
    pub fn point(
        &mut self,
        i: usize,
        vae: &VaeModel,
        rules: &DecodeRules,
        guard: &CopyGuard,
    ) -> Result<&[MelodyNote]> {
        let i = i.min(self.steps);
        if i == self.steps {
            return Ok(&self.b_notes);
        }
        while self.path.len() <= i {
            let mut point = self.next_point(vae, rules, 0)?;
            for retry in 1..ORIGINAL_TRIES {
                if !guard.copies(&melody_line(&point.notes)) {
                    break;
                }
                point = self.next_point(vae, rules, retry)?;
            }
            self.path.push(point);
        }
        Ok(&self.path[i].notes)
    }

    /// Point `path.len()`: each segment's best few decodings by its own distances, then
    /// the combination whose whole phrase breaks the rule least (a few greedy passes).
    fn next_point(&self, vae: &VaeModel, rules: &DecodeRules, draw: u64) -> Result<Point> {
        let i = self.path.len();
        let t = i as f32 / self.steps as f32;
        let code = morph(&self.a, &self.b, t);
        let prev = self.path.last().expect("the path starts at A");
        let ([a, b], a_to_b) = (&self.cut_ends, &self.path[0].to_b);
        // Per segment: (rank, notes from the phrase's start, distances), best first.
        let mut options: Vec<Vec<Decoding>> = Vec::new();
        for (k, z) in code.codes.iter().enumerate() {
            let leans = [
                self.leans[0][k].weighted(LEAN * (1.0 - t)),
                self.leans[1][k].weighted(LEAN * t),
            ];
            let shift = k as f64 * self.segment;
            let rules = rules.from_tick((shift * TPQ as f64).round() as u32);
            let mut found: Vec<Decoding> = (0..CANDIDATES)
                .map(|c| {
                    let rng = SeedRng::derive(&[self.seed, i as u64, k as u64, c, draw]);
                    let notes = vae.decode_one(z, code.context, &rules, rng, &leans);
                    let to = [&a[k], &b[k]].map(|end| note_edit_distance(&notes, end));
                    let rank = rank(to, [prev.to_a[k], prev.to_b[k]], a_to_b[k], t);
                    let notes = shifted(notes, shift);
                    (rank, notes, to)
                })
                .collect();
            found.sort_by(|x, y| x.0.partial_cmp(&y.0).expect("ranks are finite"));
            found.truncate(KEPT);
            options.push(found);
        }
        // Whole phrases: distances to A and B as heard, against the previous point's.
        let whole = |choice: &[usize]| {
            let notes: Vec<MelodyNote> = (options.iter().zip(choice))
                .flat_map(|(o, &c)| o[c].1.iter().copied())
                .collect();
            let to =
                [&self.path[0].notes, &self.b_notes].map(|end| note_edit_distance(&notes, end));
            let rank = rank(to, prev.whole, self.path[0].whole[1], t);
            (rank, notes, to)
        };
        let mut choice = vec![0; options.len()];
        let mut best = whole(&choice);
        for _pass in 0..2 {
            for k in 0..options.len() {
                for c in 0..options[k].len() {
                    let old = std::mem::replace(&mut choice[k], c);
                    let tried = whole(&choice);
                    if tried.0 < best.0 {
                        best = tried;
                    } else {
                        choice[k] = old;
                    }
                }
            }
        }
        if best.0.0 > 0 {
            // No decoding moves forward: hold the previous phrase rather than step back.
            return Ok(prev.clone());
        }
        let (_, notes, whole) = best;
        let per = |e: usize| {
            (options.iter().zip(&choice))
                .map(|(o, &c)| o[c].2[e])
                .collect()
        };
        Ok(Point {
            notes,
            whole,
            to_a: per(0),
            to_b: per(1),
        })
    }
}

/// One decoding of a segment: its rank, its notes (from the phrase's start), its
/// distances to A's and B's segment.
type Decoding = ((usize, f32), Vec<MelodyNote>, [usize; 2]);

/// How a phrase at `t` with distances `to` [A, B] fares after a phrase at `prev`: how far
/// it steps back towards A, away from B, or past A–B's distance (0 = a monotone step),
/// then how far its share of the way is from `t`.
fn rank(to: [usize; 2], prev: [usize; 2], a_to_b: usize, t: f32) -> (usize, f32) {
    let breaks = prev[0].saturating_sub(to[0])
        + to[1].saturating_sub(prev[1])
        + to[0].saturating_sub(a_to_b);
    let share = to[0] as f32 / (to[0] + to[1]).max(1) as f32;
    (breaks, (share - t).abs())
}

/// A morph heard in `count` phrases: A decoded, the path's points, B decoded in A's
/// context (the command line's and the server's morph).
pub fn morph_phrases(
    vae: &VaeModel,
    a: &Encoded,
    b: &Encoded,
    count: usize,
    rules: &DecodeRules,
    seed: u64,
) -> Result<Vec<Vec<MelodyNote>>> {
    let guard = CopyGuard::default();
    // B in A's meter and key, as the path's points are: the codes are key-relative.
    let b = &Encoded {
        codes: b.codes.clone(),
        context: a.context,
    };
    let (a_notes, b_notes) = (vae.decode(a, rules, seed)?, vae.decode(b, rules, seed)?);
    let steps = count.max(2) - 1;
    let mut path = MorphPath::new(vae, a.clone(), b.clone(), a_notes, b_notes, steps, seed);
    (0..count.max(2))
        .map(|i| Ok(path.point(i, vae, rules, &guard)?.to_vec()))
        .collect()
}

/// How a morph's phrases move between its two ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Monotonicity {
    /// Note edit distance of each phrase to the first (A) and to the last (B).
    pub to_a: Vec<usize>,
    pub to_b: Vec<usize>,
    /// Consecutive pairs where the distance to A does not fall and to B does not rise.
    pub monotone_steps: usize,
    /// Consecutive pairs with the same notes (a step that holds).
    pub held_steps: usize,
    pub steps: usize,
}

impl Monotonicity {
    pub fn share(&self) -> f64 {
        self.monotone_steps as f64 / self.steps.max(1) as f64
    }

    /// Every step moves away from A and towards B (or stays).
    pub fn monotone(&self) -> bool {
        self.monotone_steps == self.steps
    }
}

/// Measures a morph's phrases (the decoded A first, the decoded B last).
pub fn monotonicity(phrases: &[Vec<MelodyNote>]) -> Monotonicity {
    let (first, last) = (&phrases[0], &phrases[phrases.len() - 1]);
    let to_a: Vec<usize> = phrases
        .iter()
        .map(|p| note_edit_distance(p, first))
        .collect();
    let to_b: Vec<usize> = phrases
        .iter()
        .map(|p| note_edit_distance(p, last))
        .collect();
    let monotone_steps = (1..phrases.len())
        .filter(|&i| to_a[i] >= to_a[i - 1] && to_b[i] <= to_b[i - 1])
        .count();
    let held_steps = (phrases.windows(2))
        .filter(|w| note_edit_distance(&w[0], &w[1]) == 0)
        .count();
    Monotonicity {
        to_a,
        to_b,
        monotone_steps,
        held_steps,
        steps: phrases.len().saturating_sub(1),
    }
}

/// Levenshtein distance between two melodies as sequences of notes (onset on the grid and
/// pitch must both match for two notes to be the same).
pub fn note_edit_distance(a: &[MelodyNote], b: &[MelodyNote]) -> usize {
    let key = |n: &MelodyNote| ((n.start * 12.0).round() as i64, n.pitch);
    let (a, b): (Vec<_>, Vec<_>) = (a.iter().map(key).collect(), b.iter().map(key).collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let next = (diagonal + (x != y) as usize)
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(notes: &[(f64, u8)]) -> Vec<MelodyNote> {
        (notes.iter())
            .map(|&(start, pitch)| MelodyNote {
                start,
                duration: 0.5,
                pitch,
                velocity: 80,
            })
            .collect()
    }

    #[test]
    fn note_edit_distance_counts_changed_inserted_and_removed_notes() {
        let a = line(&[(0.0, 60), (0.5, 62), (1.0, 64)]);
        assert_eq!(note_edit_distance(&a, &a), 0);
        assert_eq!(
            note_edit_distance(&a, &line(&[(0.0, 60), (0.5, 63), (1.0, 64)])),
            1
        );
        assert_eq!(note_edit_distance(&a, &line(&[(0.0, 60), (1.0, 64)])), 1);
        // The same pitch a sixteenth later is another note.
        assert_eq!(
            note_edit_distance(&a, &line(&[(0.0, 60), (0.75, 62), (1.0, 64)])),
            1
        );
        assert_eq!(note_edit_distance(&a, &[]), 3);
    }

    #[test]
    fn monotonicity_counts_steps_that_leave_a_and_approach_b() {
        let a = line(&[(0.0, 60), (0.5, 62), (1.0, 64)]);
        let mid = line(&[(0.0, 60), (0.5, 65), (1.0, 64)]);
        let b = line(&[(0.0, 67), (0.5, 65), (1.0, 64)]);
        let m = monotonicity(&[a.clone(), mid.clone(), b.clone()]);
        assert_eq!(
            (m.to_a.clone(), m.to_b.clone()),
            (vec![0, 1, 2], vec![2, 1, 0])
        );
        assert_eq!((m.monotone_steps, m.held_steps, m.steps), (2, 0, 2));
        assert!(m.monotone());
        // Holding a phrase is monotone, and counted.
        let m = monotonicity(&[a.clone(), mid.clone(), mid.clone(), b.clone()]);
        assert_eq!((m.monotone_steps, m.held_steps, m.steps), (3, 1, 3));
        // Going back to A halfway breaks one step.
        let m = monotonicity(&[a.clone(), mid, a.clone(), b]);
        assert_eq!((m.monotone_steps, m.steps), (2, 3));
        assert!(!m.monotone());
        assert!((m.share() - 2.0 / 3.0).abs() < 1e-9);
    }
}
