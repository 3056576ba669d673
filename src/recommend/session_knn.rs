//! Session-kNN, the user-user analogue: find the past sessions most like this one (same
//! tempo, meter, key, playing, and the same presets working), and recommend what worked in
//! them, weighted by similarity.

use super::data::{Catalogue, Context, Dataset, Feedback};
use super::evidence::{Evidence, key_name, tempo_range};
use super::{Recommender, Scores};
use crate::sessions::SessionContext;

#[derive(Debug, Clone)]
pub struct SessionKnn {
    ev: Evidence,
    /// How many neighbour sessions vote.
    pub neighbours: usize,
    /// Extra similarity for the producer's own sessions.
    pub own_bonus: f32,
}

impl Default for SessionKnn {
    fn default() -> Self {
        Self {
            ev: Evidence::default(),
            neighbours: 50,
            own_bonus: 0.5,
        }
    }
}

/// Similarity of the musical situation, 0..=1 over the facts known on both sides.
pub fn context_similarity(ctx: &Context, s: &SessionContext) -> f32 {
    let (mut sim, mut total) = (0.0, 0.0);
    if let Some(t) = ctx.tempo {
        total += 1.0;
        sim += (-((t - s.tempo) / 10.0).powi(2)).exp();
    }
    if let Some(m) = ctx.meter {
        total += 1.0;
        sim += (m == s.meter) as u8 as f32;
    }
    if let (Some(k), Some(sk)) = (ctx.key, s.key) {
        total += 1.0;
        sim += 0.5 * (k.scale.is_minor() == sk.scale.is_minor()) as u8 as f32
            + 0.5 * (k.tonic == sk.tonic) as u8 as f32;
    }
    if let (Some(d), Some(sd)) = (ctx.input_density, s.input_density) {
        total += 0.5;
        sim += 0.5 * (-(d - sd).abs()).exp();
    }
    if total > 0.0 { sim / total } else { 0.0 }
}

impl Recommender for SessionKnn {
    fn name(&self) -> &'static str {
        "session-knn"
    }

    evidence_backed!();

    fn score(&self, ctx: &Context) -> Scores {
        let n = self.ev.catalogue.len();
        let mut profile = vec![0.0f32; n];
        for (i, w) in self.ev.profile(ctx) {
            profile[i as usize] = w;
        }
        let norm = profile.iter().map(|w| w * w).sum::<f32>().sqrt().max(1e-6);
        let me = self.ev.producer(&ctx.producer);
        let mut candidates: Vec<(u32, f32)> = Vec::with_capacity(self.ev.sessions.len());
        for (r, s) in self.ev.sessions.iter().enumerate() {
            let (mut dot, mut len) = (0.0, 0u32);
            for (i, w) in &s.items {
                if *w > 0.0 {
                    dot += profile[*i as usize];
                    len += 1;
                }
            }
            if len == 0 {
                continue;
            }
            let overlap = dot / (norm * (len as f32).sqrt());
            let own = if Some(s.producer) == me {
                self.own_bonus
            } else {
                0.0
            };
            candidates.push((
                r as u32,
                context_similarity(ctx, &s.context) + overlap + own,
            ));
        }
        let k = self.neighbours.min(candidates.len());
        if k > 0 && k < candidates.len() {
            candidates.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            candidates.truncate(k);
        }
        let mut values = vec![0.0; n];
        for &(r, sim) in &candidates {
            for &(i, w) in &self.ev.sessions[r as usize].items {
                if w > 0.0 {
                    values[i as usize] += sim * w.min(3.0) / 3.0;
                }
            }
        }
        Scores {
            values,
            neighbours: candidates,
            parts: Vec::new(),
        }
    }

    fn reason(&self, ctx: &Context, scores: &Scores, item: u16) -> String {
        let me = self.ev.producer(&ctx.producer);
        let name = self.catalogue().name(item);
        let worked: Vec<_> = scores
            .neighbours
            .iter()
            .map(|&(r, _)| &self.ev.sessions[r as usize])
            .filter(|s| s.items.iter().any(|&(i, w)| i == item && w > 0.0))
            .collect();
        if worked.is_empty() {
            return format!(
                "{name} did not work in any of the {} most similar past sessions",
                scores.neighbours.len()
            );
        }
        let lo = worked
            .iter()
            .map(|s| s.context.tempo)
            .fold(f32::MAX, f32::min);
        let hi = worked
            .iter()
            .map(|s| s.context.tempo)
            .fold(f32::MIN, f32::max);
        let own = worked.iter().filter(|s| Some(s.producer) == me).count();
        let mut keys: Vec<(String, usize)> = Vec::new();
        for s in &worked {
            if let Some(k) = s.context.key.map(key_name) {
                match keys.iter_mut().find(|(name, _)| *name == k) {
                    Some((_, c)) => *c += 1,
                    None => keys.push((k, 1)),
                }
            }
        }
        let key = keys
            .iter()
            .max_by_key(|(_, c)| *c)
            .map(|(k, _)| format!(", mostly {k}"))
            .unwrap_or_default();
        format!(
            "{name} worked in {} of the {} past sessions most like this one ({own} of them yours){}{key}",
            worked.len(),
            scores.neighbours.len(),
            tempo_range(lo, hi),
        )
    }
}
