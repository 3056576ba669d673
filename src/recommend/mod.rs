//! Preset recommenders: which style presets fit this session, and why.
//!
//! Every recommender implements [`Recommender`]: `fit` on a [`Dataset`] (the session log
//! indexed against a preset [`Catalogue`]), `update` online with one [`Feedback`], `score`
//! every preset for a [`Context`], and give each recommendation a short explanation built
//! from real evidence (session counts, tempo ranges, keys).
//!
//! - [`ItemCf`]: presets kept together in the same sessions (cosine with shrinkage).
//! - [`SessionKnn`]: the past sessions most like this one, and what worked there.
//! - [`ContentBased`]: preset features against the context and the producer's taste.
//! - [`Hybrid`]: a weighted blend (weights from [`eval`]), content + popularity at cold start.
//! - [`Popularity`], [`RandomBaseline`]: the baselines every number is compared against.
//! - [`cache`]: the history read incrementally from the session database.

/// `fit`, `update` and `catalogue` for recommenders whose whole learnt state is the shared
/// [`Evidence`] in a field `ev` (content-based, popularity, session-kNN).
macro_rules! evidence_backed {
    () => {
        fn fit(&mut self, data: &Dataset) {
            self.ev = Evidence::build(data);
        }

        fn update(&mut self, feedback: &Feedback) {
            self.ev.update(feedback);
        }

        fn catalogue(&self) -> &Catalogue {
            &self.ev.catalogue
        }
    };
}

pub mod cache;
mod content;
mod data;
pub mod eval;
mod evidence;
mod hybrid;
mod item_cf;
mod popularity;
mod session_knn;
pub mod sim;

pub use content::ContentBased;
pub use data::{Catalogue, Context, Dataset, Feedback, Item, SessionRow};
pub use evidence::Evidence;
pub use hybrid::{Hybrid, HybridWeights, PERSONAL_GROWTH};
pub use item_cf::ItemCf;
pub use popularity::{
    ContextPopularity, PersonalPopularity, Popularity, RandomBaseline, RecentPersonal,
};
pub use session_knn::SessionKnn;

/// One ranked suggestion.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub preset_id: String,
    pub score: f32,
    /// Why, in words, citing the evidence ("Reel Drive worked in 4 of your sessions (you liked it in 3)...").
    pub explanation: String,
}

/// Scores for every catalogue item, plus what a recommender needs to explain them.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    /// One score per catalogue item; higher is better.
    pub values: Vec<f32>,
    /// Session-kNN: the neighbour sessions used, as (session row, similarity).
    pub neighbours: Vec<(u32, f32)>,
    /// Hybrid: each component's normalised scores, in component order.
    pub parts: Vec<Scores>,
}

/// The interface every recommender implements.
pub trait Recommender: Send {
    /// Short name for tables ("item-cf").
    fn name(&self) -> &'static str;

    /// Learns from a whole history, replacing what was learnt before.
    fn fit(&mut self, data: &Dataset);

    /// Learns from one new feedback event, without refitting.
    fn update(&mut self, feedback: &Feedback);

    /// The catalogue the scores refer to (empty before `fit`).
    fn catalogue(&self) -> &Catalogue;

    /// Scores every preset for the context.
    fn score(&self, ctx: &Context) -> Scores;

    /// Explains `item`'s score, citing evidence.
    fn reason(&self, ctx: &Context, scores: &Scores, item: u16) -> String;

    /// The `k` best presets, best first (ties broken by catalogue order).
    fn top_k(&self, ctx: &Context, k: usize) -> Vec<u16> {
        top_k(&self.score(ctx).values, k)
    }

    /// The `k` best presets with scores and explanations.
    fn recommend(&self, ctx: &Context, k: usize) -> Vec<Recommendation> {
        let scores = self.score(ctx);
        top_k(&scores.values, k)
            .into_iter()
            .map(|i| Recommendation {
                preset_id: self.catalogue().items[i as usize].id.clone(),
                score: scores.values[i as usize],
                explanation: self.reason(ctx, &scores, i),
            })
            .collect()
    }

    /// Explains why `preset_id` scores as it does in this context.
    fn explain(&self, ctx: &Context, preset_id: &str) -> Option<String> {
        let item = self.catalogue().index_of(preset_id)?;
        Some(self.reason(ctx, &self.score(ctx), item))
    }
}

/// Indices of the `k` largest values, best first; equal values keep index order.
pub fn top_k(values: &[f32], k: usize) -> Vec<u16> {
    let mut idx: Vec<u16> = (0..values.len() as u16).collect();
    let order = |a: &u16, b: &u16| {
        values[*b as usize]
            .total_cmp(&values[*a as usize])
            .then(a.cmp(b))
    };
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_unstable_by(order);
    idx
}

/// Every recommender the evaluation compares, baselines last.
pub fn all_recommenders(weights: HybridWeights, seed: u64) -> Vec<Box<dyn Recommender>> {
    vec![
        Box::new(Hybrid::new(weights)),
        Box::new(ItemCf::default()),
        Box::new(SessionKnn::default()),
        Box::new(ContentBased::default()),
        Box::new(PersonalPopularity::default()),
        Box::new(RecentPersonal::default()),
        Box::new(ContextPopularity::default()),
        Box::new(Popularity::default()),
        Box::new(RandomBaseline::new(seed)),
    ]
}

/// The baselines the hybrid must beat (paired comparisons in `eval-recs`).
pub const STRONG_BASELINES: [&str; 3] = ["personal-pop", "recent-personal", "context-pop"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        assert_eq!(top_k(&[0.1, 0.5, 0.5, 0.9, 0.0], 3), vec![3, 1, 2]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![1, 0]);
        assert!(top_k(&[1.0], 0).is_empty());
    }
}
