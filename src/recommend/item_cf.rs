//! Item-item collaborative filtering: presets that worked in the same sessions are similar.
//!
//! similarity(i, j) = together(i, j) / (sqrt(n_i · n_j) + shrinkage), the cosine between the
//! presets' session vectors, shrunk towards 0 when little evidence exists. A preset's score
//! is the producer's profile weight of every preset times its similarity; a preset the
//! producer already likes counts as fully similar to itself (producers reuse favourites).
//! Counts are kept rather than similarities, so an online update is a few additions.

use super::data::{Catalogue, Context, Dataset, Feedback};
use super::evidence::{Evidence, sessions};
use super::{Recommender, Scores};

/// The co-occurrence counts live in [`Evidence`], shared with the other components.
#[derive(Debug, Clone)]
pub struct ItemCf {
    ev: Evidence,
    pub shrinkage: f32,
}

impl Default for ItemCf {
    fn default() -> Self {
        Self {
            ev: Evidence::default(),
            shrinkage: 3.0,
        }
    }
}

impl ItemCf {
    fn similarity(&self, ev: &Evidence, i: u16, j: u16) -> f32 {
        if i == j {
            return 1.0;
        }
        similarity(ev, self.shrinkage, i, j, ev.together(i, j))
    }

    /// Scores against `ev` (the hybrid's shared evidence, or this recommender's own).
    pub(super) fn score_with(&self, ev: &Evidence, ctx: &Context) -> Scores {
        let mut values = vec![0.0; ev.catalogue.len()];
        for (i, w) in ev.profile(ctx) {
            values[i as usize] += w;
            for &(j, t) in &ev.together[i as usize] {
                values[j as usize] += w * similarity(ev, self.shrinkage, i, j, t);
            }
        }
        Scores {
            values,
            ..Scores::default()
        }
    }

    pub(super) fn reason_with(&self, ev: &Evidence, ctx: &Context, item: u16) -> String {
        let profile = ev.profile(ctx);
        let best = profile
            .iter()
            .map(|&(i, w)| (i, w * self.similarity(ev, i, item)))
            .filter(|(_, c)| *c > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let name = ev.catalogue.name(item);
        match best {
            Some((i, _)) if i == item => ev
                .describe(ctx, item)
                .unwrap_or_else(|| format!("{name} worked earlier in this session")),
            Some((i, _)) => {
                let together = ev.together(i, item);
                let source = ev.catalogue.name(i);
                let yours = ev
                    .describe(ctx, i)
                    .unwrap_or_else(|| format!("{source} worked earlier in this session"));
                format!(
                    "{yours}; {name} and {source} worked together in {}",
                    sessions(together)
                )
            }
            None => format!("no session history links {name} to your presets yet"),
        }
    }
}

/// Cosine with shrinkage of two different presets that worked together in `t` sessions.
fn similarity(ev: &Evidence, shrinkage: f32, i: u16, j: u16, t: f32) -> f32 {
    if t <= 0.0 {
        0.0
    } else {
        let (ci, cj) = (ev.popularity[i as usize], ev.popularity[j as usize]);
        t / ((ci * cj).sqrt() + shrinkage)
    }
}

impl Recommender for ItemCf {
    fn name(&self) -> &'static str {
        "item-cf"
    }

    evidence_backed!();

    fn score(&self, ctx: &Context) -> Scores {
        self.score_with(&self.ev, ctx)
    }

    fn reason(&self, ctx: &Context, _scores: &Scores, item: u16) -> String {
        self.reason_with(&self.ev, ctx, item)
    }
}
