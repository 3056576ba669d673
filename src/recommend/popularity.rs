//! The popularity family: what worked most often for everyone, for this producer (plain
//! and recency-weighted, the hybrid's personal component), in sessions like this one; and
//! a random order.

use super::content::context_facts;
use super::data::{Catalogue, Context, Dataset, Feedback, Item};
use super::evidence::{Evidence, sessions};
use super::{Recommender, Scores};
use crate::music::{Meter, Scale, SeedRng};

/// Ranks presets by the number of sessions (all producers) in which they worked.
#[derive(Debug, Clone, Default)]
pub struct Popularity {
    ev: Evidence,
}

impl Recommender for Popularity {
    fn name(&self) -> &'static str {
        "popularity"
    }

    evidence_backed!();

    fn score(&self, ctx: &Context) -> Scores {
        Self::score_with(&self.ev, ctx)
    }

    fn reason(&self, _ctx: &Context, _scores: &Scores, item: u16) -> String {
        Self::reason_with(&self.ev, item)
    }
}

impl Popularity {
    pub(super) fn score_with(ev: &Evidence, _ctx: &Context) -> Scores {
        Scores {
            values: ev.popularity.clone(),
            ..Scores::default()
        }
    }

    pub(super) fn reason_with(ev: &Evidence, item: u16) -> String {
        let n = ev.popularity[item as usize];
        format!(
            "{} worked in {} so far, more than most presets",
            ev.catalogue.name(item),
            sessions(n)
        )
    }
}

/// A random order that is fixed for a given seed and context, so evaluations repeat.
#[derive(Debug, Clone, Default)]
pub struct RandomBaseline {
    catalogue: Catalogue,
    seed: u64,
}

impl RandomBaseline {
    pub fn new(seed: u64) -> Self {
        Self {
            catalogue: Catalogue::default(),
            seed,
        }
    }
}

impl Recommender for RandomBaseline {
    fn name(&self) -> &'static str {
        "random"
    }

    fn fit(&mut self, data: &Dataset) {
        self.catalogue = (*data.catalogue).clone();
    }

    fn update(&mut self, _feedback: &Feedback) {}

    fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    fn score(&self, ctx: &Context) -> Scores {
        let producer = ctx
            .producer
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        let tempo = ctx.tempo.map_or(0, |t| t.to_bits() as u64);
        let mut rng = SeedRng::derive(&[self.seed, producer, tempo]);
        let values = (0..self.catalogue.len()).map(|_| rng.next_f32()).collect();
        Scores {
            values,
            ..Scores::default()
        }
    }

    fn reason(&self, _ctx: &Context, _scores: &Scores, item: u16) -> String {
        format!(
            "{} was drawn at random (baseline)",
            self.catalogue.name(item)
        )
    }
}

/// Sessions of a producer in which each preset worked, optionally decayed by age: a session
/// `a` sessions before the producer's latest one counts `0.5^(a / half_life)`.
fn personal_counts(ev: &Evidence, ctx: &Context, half_life: Option<f32>) -> Vec<f32> {
    let mut values = vec![0.0; ev.catalogue.len()];
    let Some(p) = ev.producer(&ctx.producer) else {
        return values;
    };
    let rows = &ev.rows_of[p as usize];
    for (age, &r) in rows.iter().rev().enumerate() {
        let w = half_life.map_or(1.0, |h| 0.5f32.powf(age as f32 / h));
        for i in ev.sessions[r as usize].positives() {
            values[i as usize] += w;
        }
    }
    values
}

/// Adds the global popularity, scaled below one session's worth, to break ties (and to
/// rank anything at all for a producer without history).
fn break_ties(values: &mut [f32], ev: &Evidence) {
    let max = ev
        .popularity
        .iter()
        .copied()
        .fold(0.0f32, f32::max)
        .max(1.0);
    for (v, p) in values.iter_mut().zip(&ev.popularity) {
        *v += 1e-3 * p / max;
    }
}

/// Baseline of repeat-consumption domains: each producer's own most-used presets (sessions
/// in which they worked), ties broken by global popularity.
#[derive(Debug, Clone, Default)]
pub struct PersonalPopularity {
    ev: Evidence,
}

impl Recommender for PersonalPopularity {
    fn name(&self) -> &'static str {
        "personal-pop"
    }

    evidence_backed!();

    fn score(&self, ctx: &Context) -> Scores {
        let mut values = personal_counts(&self.ev, ctx, None);
        break_ties(&mut values, &self.ev);
        Scores {
            values,
            ..Scores::default()
        }
    }

    fn reason(&self, ctx: &Context, _scores: &Scores, item: u16) -> String {
        personal_reason(&self.ev, ctx, item)
    }
}

fn personal_reason(ev: &Evidence, ctx: &Context, item: u16) -> String {
    ev.describe(ctx, item).unwrap_or_else(|| {
        format!(
            "{} worked in {} for everyone so far",
            ev.catalogue.name(item),
            sessions(ev.popularity[item as usize])
        )
    })
}

/// Personal popularity with recent sessions counting more (half-life in sessions).
#[derive(Debug, Clone)]
pub struct RecentPersonal {
    ev: Evidence,
    pub half_life: f32,
    /// 0 (the baseline): rank by the decayed counts. Above 0 (the hybrid's personal
    /// component): among the producer's own presets, `ln(1 + count) + context_fit ×` how
    /// much better the preset fits this session than it fits the producer's usual ones
    /// (`UsualContext::fit_change`) — habit and situation adding up, as in a choice
    /// model. A favourite's count already holds how well it suits the producer's usual
    /// tempo and meter, so only the difference this session makes should move it: in a
    /// 6/8 session the presets that list 6/8 rise above the 4/4 favourites, and in a usual
    /// session the favourites stay on top.
    pub context_fit: f32,
}

impl Default for RecentPersonal {
    fn default() -> Self {
        Self {
            ev: Evidence::default(),
            half_life: 8.0,
            context_fit: 0.0,
        }
    }
}

impl Recommender for RecentPersonal {
    fn name(&self) -> &'static str {
        "recent-personal"
    }

    evidence_backed!();

    fn score(&self, ctx: &Context) -> Scores {
        self.score_with(&self.ev, ctx)
    }

    fn reason(&self, ctx: &Context, _scores: &Scores, item: u16) -> String {
        personal_reason(&self.ev, ctx, item)
    }
}

impl RecentPersonal {
    pub(super) fn score_with(&self, ev: &Evidence, ctx: &Context) -> Scores {
        let mut values = personal_counts(ev, ctx, Some(self.half_life));
        if self.context_fit > 0.0 {
            let usual = UsualContext::of(ev, ctx);
            for (v, item) in values.iter_mut().zip(&ev.catalogue.items) {
                if *v > 0.0 {
                    *v = v.ln_1p() + self.context_fit * usual.fit_change(ctx, item);
                }
            }
        }
        break_ties(&mut values, ev);
        Scores {
            values,
            ..Scores::default()
        }
    }

    pub(super) fn reason_with(ev: &Evidence, ctx: &Context, item: u16) -> String {
        personal_reason(ev, ctx, item)
    }
}

/// How many of a producer's latest sessions make up their "usual" context (bounds the work
/// per ranking for a producer with a long history).
const USUAL_SESSIONS: usize = 256;

/// The contexts of a producer's last [`USUAL_SESSIONS`] sessions, summarised once per
/// ranking so each preset's usual fit costs a binary search, not a pass over the sessions.
#[derive(Default)]
struct UsualContext {
    /// Session tempos, sorted.
    tempos: Vec<f32>,
    /// Sessions per meter.
    meters: Vec<(Meter, u32)>,
    /// Sessions per scale (sessions without a key meet no key mode).
    scales: Vec<(Scale, u32)>,
}

impl UsualContext {
    fn of(ev: &Evidence, ctx: &Context) -> UsualContext {
        let mut usual = UsualContext::default();
        let Some(p) = ev.producer(&ctx.producer) else {
            return usual;
        };
        let rows = &ev.rows_of[p as usize];
        for &r in &rows[rows.len().saturating_sub(USUAL_SESSIONS)..] {
            let c = &ev.sessions[r as usize].context;
            usual.tempos.push(c.tempo);
            bump(&mut usual.meters, c.meter);
            if let Some(key) = c.key {
                bump(&mut usual.scales, key.scale);
            }
        }
        usual.tempos.sort_by(f32::total_cmp);
        usual
    }

    /// The preset's [`context_facts`] in this session minus their mean over the usual
    /// sessions: how unusually well (or badly) it fits today.
    fn fit_change(&self, ctx: &Context, item: &Item) -> f32 {
        if self.tempos.is_empty() {
            return 0.0;
        }
        let now = context_facts(item, ctx.tempo, ctx.meter, ctx.key);
        let (lo, hi) = item.tempo;
        let tempo =
            self.tempos.partition_point(|&t| t <= hi) - self.tempos.partition_point(|&t| t < lo);
        let meter: u32 = (self.meters.iter())
            .filter(|(m, _)| item.takes_meter(*m))
            .map(|(_, n)| n)
            .sum();
        let key: u32 = (self.scales.iter())
            .filter(|(s, _)| item.key_mode.accepts(*s))
            .map(|(_, n)| n)
            .sum();
        now - (tempo as u32 + meter + key) as f32 / self.tempos.len() as f32
    }
}

/// Adds one to `value`'s count.
fn bump<T: PartialEq>(counts: &mut Vec<(T, u32)>, value: T) {
    match counts.iter_mut().find(|(v, _)| *v == value) {
        Some((_, n)) => *n += 1,
        None => counts.push((value, 1)),
    }
}

/// How alike two session contexts are, 0..=1: tempo (±10 BPM scale), meter, key mode.
#[cfg_attr(not(test), allow(dead_code))]
pub fn context_similarity(ctx: &Context, s: &crate::sessions::SessionContext) -> f32 {
    let (tempo, num, den, scale) = super::evidence::context_key(s);
    group_similarity(
        ctx,
        f32::from_bits(tempo),
        crate::music::Meter {
            numerator: num,
            denominator: den,
        },
        scale,
    )
}

/// [`context_similarity`] of a session context given as its tempo, meter and scale code
/// (0: no key, else `Scale as u8 + 1`).
fn group_similarity(ctx: &Context, tempo: f32, meter: crate::music::Meter, scale: u8) -> f32 {
    let tempo = ctx.tempo.map_or(1.0, |t| (-(t - tempo).abs() / 10.0).exp());
    let meter = match ctx.meter {
        Some(m) if m != meter => 0.2,
        _ => 1.0,
    };
    let key = match ctx.key {
        Some(a) if scale != 0 && a.scale as u8 + 1 != scale => 0.5,
        _ => 1.0,
    };
    tempo * meter * key
}

/// Popularity among sessions (all producers) whose tempo, meter and key resemble this one.
#[derive(Debug, Clone, Default)]
pub struct ContextPopularity {
    ev: Evidence,
}

impl Recommender for ContextPopularity {
    fn name(&self) -> &'static str {
        "context-pop"
    }

    evidence_backed!();

    fn score(&self, ctx: &Context) -> Scores {
        Self::score_with(&self.ev, ctx)
    }

    fn reason(&self, ctx: &Context, _scores: &Scores, item: u16) -> String {
        Self::reason_with(&self.ev, ctx, item)
    }
}

impl ContextPopularity {
    /// The similarity of every distinct context (tempo, meter, scale) in the history, with
    /// its positive counts: one exponential per context rather than per session.
    fn groups<'a>(
        ev: &'a Evidence,
        ctx: &'a Context,
    ) -> impl Iterator<Item = (f32, &'a [(u16, f32)])> + 'a {
        ev.by_context
            .iter()
            .map(move |(&(tempo, num, den, scale), counts)| {
                let meter = crate::music::Meter {
                    numerator: num,
                    denominator: den,
                };
                let sim = group_similarity(ctx, f32::from_bits(tempo), meter, scale);
                (sim, counts.as_slice())
            })
    }

    pub(super) fn score_with(ev: &Evidence, ctx: &Context) -> Scores {
        let mut values = vec![0.0; ev.catalogue.len()];
        for (sim, counts) in Self::groups(ev, ctx) {
            if sim > 1e-3 {
                for &(i, n) in counts {
                    values[i as usize] += sim * n;
                }
            }
        }
        break_ties(&mut values, ev);
        Scores {
            values,
            ..Scores::default()
        }
    }

    pub(super) fn reason_with(ev: &Evidence, ctx: &Context, item: u16) -> String {
        let n: f32 = Self::groups(ev, ctx)
            .filter(|(sim, _)| *sim >= 0.5)
            .filter_map(|(_, counts)| {
                counts
                    .binary_search_by_key(&item, |(i, _)| *i)
                    .ok()
                    .map(|at| counts[at].1)
            })
            .sum();
        format!(
            "{} worked in {} with a similar tempo, meter and key",
            ev.catalogue.name(item),
            sessions(n)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recommend::sim::{self, SimConfig};
    use crate::recommend::{Catalogue, Dataset};

    /// Counting per distinct context gives what summing the definition over every session
    /// gives.
    #[test]
    fn grouped_context_popularity_matches_the_definition() {
        let world = sim::simulate(&SimConfig {
            producers: 40,
            max_sessions: 60,
            ..SimConfig::default()
        });
        let data = Dataset::new(&world.log, Catalogue::from_presets(&world.presets));
        let mut cp = ContextPopularity::default();
        cp.fit(&data);
        for s in world.log.sessions.iter().step_by(41) {
            let mut ctx = Context::from_session(&s.producer, &s.context);
            if s.session % 2 == 0 {
                ctx.key = None;
            }
            let mut want = vec![0.0f32; cp.ev.catalogue.len()];
            for row in &cp.ev.sessions {
                let sim = context_similarity(&ctx, &row.context);
                if sim > 1e-3 {
                    for i in row.positives() {
                        want[i as usize] += sim;
                    }
                }
            }
            break_ties(&mut want, &cp.ev);
            let got = cp.score(&ctx).values;
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{g} vs {w}");
            }
        }
    }
}
