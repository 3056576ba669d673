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
