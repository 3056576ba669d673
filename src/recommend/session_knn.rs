//! Session-kNN, the user-user analogue: find the past sessions most like this one (same
//! tempo, meter, key, playing, and the same presets working), and recommend what worked in
//! them, weighted by similarity.

use super::data::{Catalogue, Context, Dataset, Feedback};
use super::evidence::{Evidence, INLINE, KnnRow, key_name, tempo_range};
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

/// Half for the same mode (major/minor flavour), half for the same tonic.
fn key_similarity(a: crate::music::Key, b: crate::music::Key) -> f32 {
    0.5 * (a.scale.is_minor() == b.scale.is_minor()) as u8 as f32
        + 0.5 * (a.tonic == b.tonic) as u8 as f32
}

/// Similarity of the musical situation, 0..=1 over the facts known on both sides (the
/// definition; rankings compute it from compact rows, see `Query::similarity`).
#[cfg_attr(not(test), allow(dead_code))]
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
        sim += key_similarity(k, sk);
    }
    if let (Some(d), Some(sd)) = (ctx.input_density, s.input_density) {
        total += 0.5;
        sim += 0.5 * (-(d - sd).abs()).exp();
    }
    if total > 0.0 { sim / total } else { 0.0 }
}

/// An upper bound of [`context_similarity`] (1, plus rounding).
const CONTEXT_BOUND: f32 = 1.0 + 1e-4;

/// `(exp(d), exp(-d))` of a notes-per-beat density (clamped so neither overflows).
pub(super) fn density_exps(d: f32) -> (f32, f32) {
    let d = d.clamp(-40.0, 40.0);
    (d.exp(), (-d).exp())
}

/// The query side of [`context_similarity`], computed once per ranking: the tempo term of
/// every distinct session tempo, and `exp(±density)`.
struct Query {
    tempo_terms: Vec<f32>,
    has_tempo: bool,
    meter: Option<crate::music::Meter>,
    key: Option<crate::music::Key>,
    density: Option<(f32, f32)>,
}

impl Query {
    fn new(ev: &Evidence, ctx: &Context) -> Query {
        Query {
            tempo_terms: ctx.tempo.map_or_else(Vec::new, |t| {
                ev.tempos
                    .iter()
                    .map(|s| (-((t - s) / 10.0).powi(2)).exp())
                    .collect()
            }),
            has_tempo: ctx.tempo.is_some(),
            meter: ctx.meter,
            key: ctx.key,
            density: ctx.input_density.map(density_exps),
        }
    }

    /// [`context_similarity`] of a compact row; `exp(-|d - sd|)` is `exp(-d) exp(sd)` below
    /// `d` and `exp(d) exp(-sd)` above, so no exponential is taken per session.
    #[inline]
    fn similarity(&self, row: &KnnRow) -> f32 {
        let (mut sim, mut total) = (0.0, 0.0);
        if self.has_tempo {
            total += 1.0;
            sim += self.tempo_terms[row.tempo as usize];
        }
        if let Some(m) = self.meter {
            total += 1.0;
            sim += (m == row.meter) as u8 as f32;
        }
        if let (Some(k), Some(sk)) = (self.key, row.key) {
            total += 1.0;
            sim += key_similarity(k, sk);
        }
        if let (Some((e, inv)), Some((se, sinv))) = (self.density, row.density) {
            total += 0.5;
            // sd <= d exactly when exp(sd) <= exp(d).
            let near = if se <= e { inv * se } else { e * sinv };
            sim += 0.5 * near;
        }
        if total > 0.0 { sim / total } else { 0.0 }
    }
}

impl SessionKnn {
    /// Whether neighbour `a` ranks before `b`: higher similarity, then the more recent
    /// session, then the higher id — an order that does not depend on where rows sit, so an
    /// online update picks the same neighbours as a refit.
    fn before(ev: &Evidence, a: (u32, f32), b: (u32, f32)) -> bool {
        match a.1.total_cmp(&b.1) {
            std::cmp::Ordering::Equal => {
                let (sa, sb) = (&ev.sessions[a.0 as usize], &ev.sessions[b.0 as usize]);
                (sa.started_at_ms, sa.id) > (sb.started_at_ms, sb.id)
            }
            o => o.is_gt(),
        }
    }

    /// Scores against `ev` (the hybrid's shared evidence, or this recommender's own): one
    /// pass over the compact rows keeping the best `neighbours` in a small buffer.
    pub(super) fn score_with(&self, ev: &Evidence, ctx: &Context) -> Scores {
        let n = ev.catalogue.len();
        let mut profile = vec![0.0f32; n];
        for (i, w) in ev.profile(ctx) {
            profile[i as usize] = w;
        }
        let norm = profile.iter().map(|w| w * w).sum::<f32>().sqrt().max(1e-6);
        let me = ev.producer(&ctx.producer);
        let query = Query::new(ev, ctx);
        let k = self.neighbours;
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
        // The worst kept neighbour once `best` is full: anything below it is skipped.
        let mut worst: Option<(usize, f32)> = None;
        let mut consider = |r: usize, row: &KnnRow| {
            if row.len == 0 || k == 0 {
                return;
            }
            let dot: f32 = if row.len as usize <= INLINE {
                row.positives[..row.len as usize]
                    .iter()
                    .map(|&i| profile[i as usize])
                    .sum()
            } else {
                ev.sessions[r]
                    .positives()
                    .map(|i| profile[i as usize])
                    .sum()
            };
            let overlap = dot / (norm * row.sqrt_len);
            let own = if Some(row.producer) == me {
                self.own_bonus
            } else {
                0.0
            };
            // The context similarity is at most 1: a session that cannot beat the worst
            // neighbour even with a perfect context is skipped before computing it.
            if let Some((_, w)) = worst
                && overlap + own + CONTEXT_BOUND < w
            {
                return;
            }
            let sim = query.similarity(row) + overlap + own;
            let cand = (r as u32, sim);
            match worst {
                Some((_, w)) if sim < w => return,
                Some((at, _)) => {
                    if !Self::before(ev, cand, best[at]) {
                        return;
                    }
                    best[at] = cand;
                }
                None => best.push(cand),
            }
            if best.len() == k {
                let at = (0..k)
                    .reduce(|a, b| {
                        if Self::before(ev, best[a], best[b]) {
                            b
                        } else {
                            a
                        }
                    })
                    .expect("k > 0");
                worst = Some((at, best[at].1));
            }
        };
        // The producer's own sessions first (they carry the bonus), so the bar is high
        // early and most other sessions are rejected on their preset overlap alone. The
        // neighbours kept do not depend on the order (ties are broken by `before`).
        let own_rows: &[u32] = me.map_or(&[], |p| &ev.rows_of[p as usize]);
        for &r in own_rows {
            consider(r as usize, &ev.knn[r as usize]);
        }
        for (r, row) in ev.knn.iter().enumerate() {
            if me.is_none() || Some(row.producer) != me {
                consider(r, row);
            }
        }
        best.sort_unstable_by(|&a, &b| {
            if Self::before(ev, a, b) {
                std::cmp::Ordering::Less
            } else if Self::before(ev, b, a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        let mut values = vec![0.0; n];
        for &(r, sim) in &best {
            for &(i, w) in &ev.sessions[r as usize].items {
                if w > 0.0 {
                    values[i as usize] += sim * w.min(3.0) / 3.0;
                }
            }
        }
        Scores {
            values,
            neighbours: best,
            parts: Vec::new(),
        }
    }
}

impl Recommender for SessionKnn {
    fn name(&self) -> &'static str {
        "session-knn"
    }

    evidence_backed!();

    fn score(&self, ctx: &Context) -> Scores {
        self.score_with(&self.ev, ctx)
    }

    fn reason(&self, ctx: &Context, scores: &Scores, item: u16) -> String {
        self.reason_with(&self.ev, ctx, scores, item)
    }
}

impl SessionKnn {
    pub(super) fn reason_with(
        &self,
        ev: &Evidence,
        ctx: &Context,
        scores: &Scores,
        item: u16,
    ) -> String {
        let me = ev.producer(&ctx.producer);
        let name = ev.catalogue.name(item);
        let worked: Vec<_> = scores
            .neighbours
            .iter()
            .map(|&(r, _)| &ev.sessions[r as usize])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recommend::sim::{self, SimConfig};
    use crate::recommend::{Catalogue, Dataset};

    /// The scan over compact rows picks the same neighbours, with the same similarities (to
    /// rounding), as the definition applied to every session.
    #[test]
    fn compact_scan_matches_the_definition() {
        let world = sim::simulate(&SimConfig {
            producers: 40,
            max_sessions: 60,
            ..SimConfig::default()
        });
        let data = Dataset::new(&world.log, Catalogue::from_presets(&world.presets));
        let mut knn = SessionKnn::default();
        knn.fit(&data);
        let ev = &knn.ev;
        for s in world.log.sessions.iter().step_by(37) {
            let mut ctx = Context::from_session(&s.producer, &s.context);
            if s.session % 2 == 0 {
                ctx.input_density = None;
                ctx.key = None;
            }
            let profile: Vec<(u16, f32)> = ev.profile(&ctx);
            let mut dense = vec![0.0f32; ev.catalogue.len()];
            for &(i, w) in &profile {
                dense[i as usize] = w;
            }
            let norm = dense.iter().map(|w| w * w).sum::<f32>().sqrt().max(1e-6);
            let me = ev.producer(&ctx.producer);
            let mut all: Vec<(u32, f32)> = ev
                .sessions
                .iter()
                .enumerate()
                .filter(|(_, r)| r.positives().next().is_some())
                .map(|(r, row)| {
                    let len = row.positives().count() as f32;
                    let dot: f32 = row.positives().map(|i| dense[i as usize]).sum();
                    let own = if Some(row.producer) == me { 0.5 } else { 0.0 };
                    let sim =
                        context_similarity(&ctx, &row.context) + dot / (norm * len.sqrt()) + own;
                    (r as u32, sim)
                })
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            let got = knn.score(&ctx).neighbours;
            assert_eq!(got.len(), knn.neighbours);
            for (g, want) in got.iter().zip(&all) {
                assert!((g.1 - want.1).abs() < 1e-5, "{g:?} vs {want:?}");
            }
            // Every neighbour is at least as similar as every session left out (to rounding).
            let floor = got.last().unwrap().1;
            let kept: std::collections::HashSet<u32> = got.iter().map(|g| g.0).collect();
            for (r, sim) in &all {
                if !kept.contains(r) {
                    assert!(*sim <= floor + 1e-5);
                }
            }
        }
    }
}
