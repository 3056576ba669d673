//! The two baselines: what worked most often for everyone, and a random order.

use super::data::{Catalogue, Context, Dataset, Feedback};
use super::evidence::{Evidence, sessions};
use super::{Recommender, Scores};
use crate::music::SeedRng;

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

    fn score(&self, _ctx: &Context) -> Scores {
        Scores {
            values: self.ev.popularity.clone(),
            ..Scores::default()
        }
    }

    fn reason(&self, _ctx: &Context, _scores: &Scores, item: u16) -> String {
        let n = self.ev.popularity[item as usize];
        format!(
            "{} worked in {} so far, more than most presets",
            self.catalogue().name(item),
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
}

impl Default for RecentPersonal {
    fn default() -> Self {
        Self {
            ev: Evidence::default(),
            half_life: 8.0,
        }
    }
}

impl Recommender for RecentPersonal {
    fn name(&self) -> &'static str {
        "recent-personal"
    }

    evidence_backed!();

    fn score(&self, ctx: &Context) -> Scores {
        let mut values = personal_counts(&self.ev, ctx, Some(self.half_life));
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

/// How alike two session contexts are, 0..=1: tempo (±10 BPM scale), meter, key mode.
pub fn context_similarity(ctx: &Context, s: &crate::sessions::SessionContext) -> f32 {
    let tempo = ctx
        .tempo
        .map_or(1.0, |t| (-(t - s.tempo).abs() / 10.0).exp());
    let meter = match ctx.meter {
        Some(m) if m != s.meter => 0.2,
        _ => 1.0,
    };
    let key = match (ctx.key, s.key) {
        (Some(a), Some(b)) if a.scale != b.scale => 0.5,
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
        let mut values = vec![0.0; self.ev.catalogue.len()];
        for s in &self.ev.sessions {
            let sim = context_similarity(ctx, &s.context);
            if sim > 1e-3 {
                for i in s.positives() {
                    values[i as usize] += sim;
                }
            }
        }
        break_ties(&mut values, &self.ev);
        Scores {
            values,
            ..Scores::default()
        }
    }

    fn reason(&self, ctx: &Context, _scores: &Scores, item: u16) -> String {
        let n = self
            .ev
            .sessions
            .iter()
            .filter(|s| {
                context_similarity(ctx, &s.context) >= 0.5 && s.positives().any(|i| i == item)
            })
            .count();
        format!(
            "{} worked in {} with a similar tempo, meter and key",
            self.ev.catalogue.name(item),
            sessions(n as f32)
        )
    }
}
