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

#[derive(Debug, Clone)]
pub struct ItemCf {
    ev: Evidence,
    /// Dense `n × n`: sessions where both presets worked.
    together: Vec<f32>,
    /// Sessions where each preset worked.
    count: Vec<f32>,
    pub shrinkage: f32,
}

impl Default for ItemCf {
    fn default() -> Self {
        Self {
            ev: Evidence::default(),
            together: Vec::new(),
            count: Vec::new(),
            shrinkage: 3.0,
        }
    }
}

impl ItemCf {
    fn n(&self) -> usize {
        self.count.len()
    }

    /// Adds (`sign` 1) or removes (-1) the co-occurrences of one session's positives.
    fn add_session(&mut self, positives: &[u16], sign: f32) {
        let n = self.n();
        for (a, &i) in positives.iter().enumerate() {
            self.count[i as usize] += sign;
            for &j in &positives[a + 1..] {
                self.together[i as usize * n + j as usize] += sign;
                self.together[j as usize * n + i as usize] += sign;
            }
        }
    }

    fn similarity(&self, i: u16, j: u16) -> f32 {
        if i == j {
            return 1.0;
        }
        let (i, j) = (i as usize, j as usize);
        let t = self.together[i * self.n() + j];
        if t <= 0.0 {
            0.0
        } else {
            t / ((self.count[i] * self.count[j]).sqrt() + self.shrinkage)
        }
    }
}

impl Recommender for ItemCf {
    fn name(&self) -> &'static str {
        "item-cf"
    }

    fn fit(&mut self, data: &Dataset) {
        self.ev = Evidence::build(data);
        let n = data.catalogue.len();
        self.together = vec![0.0; n * n];
        self.count = vec![0.0; n];
        for s in &data.sessions {
            let positives: Vec<u16> = s.positives().collect();
            self.add_session(&positives, 1.0);
        }
    }

    fn update(&mut self, feedback: &Feedback) {
        if let Some(change) = self.ev.update(feedback) {
            self.add_session(&change.before, -1.0);
            self.add_session(&change.after, 1.0);
        }
    }

    fn catalogue(&self) -> &Catalogue {
        &self.ev.catalogue
    }

    fn score(&self, ctx: &Context) -> Scores {
        let n = self.n();
        let mut values = vec![0.0; n];
        for (i, w) in self.ev.profile(ctx) {
            for (j, v) in values.iter_mut().enumerate() {
                *v += w * self.similarity(i, j as u16);
            }
        }
        Scores {
            values,
            ..Scores::default()
        }
    }

    fn reason(&self, ctx: &Context, _scores: &Scores, item: u16) -> String {
        let profile = self.ev.profile(ctx);
        let best = profile
            .iter()
            .map(|&(i, w)| (i, w * self.similarity(i, item)))
            .filter(|(_, c)| *c > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let name = self.catalogue().name(item);
        match best {
            Some((i, _)) if i == item => self
                .ev
                .describe(ctx, item)
                .unwrap_or_else(|| format!("{name} worked earlier in this session")),
            Some((i, _)) => {
                let together = self.together[i as usize * self.n() + item as usize];
                let source = self.catalogue().name(i);
                let yours = self
                    .ev
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
