//! Offline evaluation: leave-last-out hit rate, NDCG and coverage, plus tuning the hybrid.
//!
//! Protocol: for each producer, the last `held` sessions in which some preset worked are
//! held out (leave-last-k-out); everything before the first of them (and every other
//! producer's history) is training data, and later sessions are dropped so the future
//! never leaks into the past. Each held-out session is a case, predicted from that same
//! history: the recommender is not told how the producer's earlier held-out sessions went.
//! The target is the preset with the highest net feedback in the held-out session, and the
//! recommender sees only that session's starting context (tempo, meter, key, input), as in
//! the plugin. A producer's cases are not independent, so the paired intervals resample
//! producers, not cases ([`paired_bootstrap`]).
//! - HR@k: share of cases whose target is in the top k.
//! - NDCG@10: 1 / log2(rank + 1) of the target (rank from 1), 0 beyond 10.
//! - coverage: share of the catalogue appearing in at least one top-10 list.
//!
//! Cold start holds out the first working session of every other producer, with none of
//! their sessions in training.

use super::data::{Catalogue, Context, Dataset};
use super::{Hybrid, HybridWeights, Recommender, top_k};
use crate::sessions::{Session, SessionLog};

/// One held-out session.
#[derive(Debug, Clone)]
pub struct Case {
    /// Which producer of the split (0, 1, ...): the unit the bootstrap resamples.
    pub producer: u32,
    pub context: Context,
    /// The preset id that worked best in the held-out session.
    pub target: String,
}

/// Training history and held-out cases.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub train: SessionLog,
    pub cases: Vec<Case>,
}

/// The preset with the highest net feedback, if anything worked in the session.
fn target(session: &Session) -> Option<String> {
    let best = session
        .preset_scores()
        .into_iter()
        .filter(|(_, w)| *w > 0.0)
        .fold(None, |best: Option<(&str, f32)>, c| match best {
            Some(b) if b.1 >= c.1 => Some(b),
            _ => Some(c),
        });
    best.map(|(id, _)| id.to_string())
}

/// Groups a canonically sorted log by producer.
fn by_producer(log: &SessionLog) -> Vec<&[Session]> {
    log.sessions
        .chunk_by(|a, b| a.producer == b.producer)
        .collect()
}

/// Leave-last-k-out with `held` = k: only the held-out sessions with at least
/// `min_history` sessions before them become cases; a producer with none trains whole.
pub fn leave_last_out(log: &SessionLog, min_history: usize, held: usize) -> Split {
    let mut split = Split::default();
    for sessions in by_producer(log) {
        let with_target: Vec<(usize, String)> = (sessions.iter().enumerate())
            .skip(min_history)
            .filter_map(|(i, s)| Some((i, target(s)?)))
            .collect();
        let held_out = &with_target[with_target.len().saturating_sub(held)..];
        let Some(&(first, _)) = held_out.first() else {
            split.train.sessions.extend_from_slice(sessions);
            continue;
        };
        split.train.sessions.extend_from_slice(&sessions[..first]);
        let producer = split.producers();
        for (i, target) in held_out {
            let s = &sessions[*i];
            split.cases.push(Case {
                producer,
                context: Context::from_session(&s.producer, &s.context),
                target: target.clone(),
            });
        }
    }
    split
}

impl Split {
    /// Producers with cases so far (the next producer's number).
    fn producers(&self) -> u32 {
        self.cases.last().map_or(0, |c| c.producer + 1)
    }

    /// Each case's producer, in case order.
    pub fn groups(&self) -> Vec<u32> {
        self.cases.iter().map(|c| c.producer).collect()
    }
}

/// Cold start: every second producer is held out entirely except for one test case.
pub fn cold_start(log: &SessionLog) -> Split {
    let mut split = Split::default();
    for (p, sessions) in by_producer(log).into_iter().enumerate() {
        if p % 2 == 0 {
            split.train.sessions.extend_from_slice(sessions);
        } else if let Some(s) = sessions.iter().find(|s| target(s).is_some()) {
            let target = target(s).expect("found above");
            split.cases.push(Case {
                producer: split.producers(),
                context: Context::from_session(&s.producer, &s.context),
                target,
            });
        }
    }
    split
}

/// Early sessions: for every second producer, their first session that has a target and
/// at most `max_prior` sessions before it is held out; their earlier sessions train, their
/// later ones are dropped. The other producers' whole histories train.
pub fn early_sessions(log: &SessionLog, max_prior: usize) -> Split {
    let mut split = Split::default();
    for (p, sessions) in by_producer(log).into_iter().enumerate() {
        let held = (p % 2 == 1)
            .then(|| {
                sessions
                    .iter()
                    .take(max_prior + 1)
                    .position(|s| target(s).is_some())
            })
            .flatten();
        match held {
            Some(i) => {
                split.train.sessions.extend_from_slice(&sessions[..i]);
                let s = &sessions[i];
                split.cases.push(Case {
                    producer: split.producers(),
                    context: Context::from_session(&s.producer, &s.context),
                    target: target(s).expect("found above"),
                });
            }
            None => split.train.sessions.extend_from_slice(sessions),
        }
    }
    split.train.sort();
    split
}

/// One recommender's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub name: String,
    pub cases: usize,
    pub hr5: f64,
    pub hr10: f64,
    pub ndcg10: f64,
    pub coverage: f64,
    /// Per held-out case: the target's rank in the top 10 (0 = first), for paired tests.
    pub ranks: Vec<Option<u8>>,
}

impl Metrics {
    /// Per-case HR@10 (0 or 1) and NDCG@10.
    pub fn per_case(&self, ndcg: bool) -> Vec<f64> {
        self.ranks
            .iter()
            .map(|r| match (r, ndcg) {
                (None, _) => 0.0,
                (Some(_), false) => 1.0,
                (Some(r), true) => 1.0 / ((*r as usize + 2) as f64).log2(),
            })
            .collect()
    }
}

/// Mean of `a - b` over paired cases with a 95 % percentile bootstrap interval: (mean,
/// low, high). `groups[i]` is case `i`'s producer; each of `rounds` resamples draws
/// producers with replacement and takes all their cases (a fixed seed).
pub fn paired_bootstrap(
    a: &[f64],
    b: &[f64],
    groups: &[u32],
    rounds: usize,
    seed: u64,
) -> (f64, f64, f64) {
    let n = a.len().min(b.len()).min(groups.len());
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    // Per producer: (sum of differences, cases).
    let producers = groups[..n].iter().max().map_or(0, |g| *g as usize + 1);
    let mut by_producer = vec![(0f64, 0usize); producers];
    for i in 0..n {
        let p = &mut by_producer[groups[i] as usize];
        p.0 += a[i] - b[i];
        p.1 += 1;
    }
    by_producer.retain(|p| p.1 > 0);
    let m = by_producer.len();
    let mean = by_producer.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let mut rng = crate::music::SeedRng::derive(&[seed, 0xB007]);
    let mut means: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let (sum, cases) = (0..m).fold((0.0, 0), |(s, c), _| {
                let p = by_producer[(rng.next_u64() % m as u64) as usize];
                (s + p.0, c + p.1)
            });
            sum / cases as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    (mean, at(0.025), at(0.975))
}

/// The training data for a split: held-out presets are in the catalogue even if unseen.
fn dataset(split: &Split, catalogue: &Catalogue) -> Dataset {
    let mut catalogue = catalogue.clone();
    for case in &split.cases {
        catalogue.ensure(&case.target);
    }
    Dataset::new(&split.train, catalogue)
}

/// Metrics of ranked lists (best first) against targets.
fn metrics(name: &str, ranked: &[Vec<u16>], targets: &[u16], catalogue_len: usize) -> Metrics {
    let mut m = Metrics {
        name: name.to_string(),
        cases: targets.len(),
        hr5: 0.0,
        hr10: 0.0,
        ndcg10: 0.0,
        coverage: 0.0,
        ranks: Vec::with_capacity(targets.len()),
    };
    let mut seen = vec![false; catalogue_len];
    for (list, &t) in ranked.iter().zip(targets) {
        for &i in list.iter().take(10) {
            seen[i as usize] = true;
        }
        let rank = list.iter().take(10).position(|&i| i == t);
        m.ranks.push(rank.map(|r| r as u8));
        if let Some(rank) = rank {
            m.hr10 += 1.0;
            m.hr5 += (rank < 5) as u8 as f64;
            m.ndcg10 += 1.0 / ((rank + 2) as f64).log2();
        }
    }
    let n = targets.len().max(1) as f64;
    m.hr5 /= n;
    m.hr10 /= n;
    m.ndcg10 /= n;
    m.coverage = seen.iter().filter(|s| **s).count() as f64 / catalogue_len.max(1) as f64;
    m
}

/// Fits each recommender on the split's training data and scores the held-out cases.
pub fn evaluate(
    split: &Split,
    catalogue: &Catalogue,
    recommenders: &mut [Box<dyn Recommender>],
) -> Vec<Metrics> {
    let data = dataset(split, catalogue);
    let targets: Vec<u16> = split
        .cases
        .iter()
        .map(|c| data.catalogue.index_of(&c.target).expect("ensured"))
        .collect();
    recommenders
        .iter_mut()
        .map(|r| {
            r.fit(&data);
            let ranked: Vec<Vec<u16>> = split
                .cases
                .iter()
                .map(|c| r.top_k(&c.context, 10))
                .collect();
            metrics(r.name(), &ranked, &targets, data.catalogue.len())
        })
        .collect()
}

/// Picks hybrid weights on a leave-one-out split of `train` itself, so the held-out cases
/// of the real evaluation are never seen: coordinate ascent from
/// [`HybridWeights::TUNED`], each weight in turn over {0, ⅛, ¼, ½, 1, 2}, two passes,
/// maximising HR@10 + NDCG@10 (a change must gain, so ties keep the defaults).
pub fn tune_hybrid(train: &SessionLog, catalogue: &Catalogue) -> HybridWeights {
    let inner = leave_last_out(train, 1, 1);
    if inner.cases.is_empty() {
        return HybridWeights::TUNED;
    }
    let data = dataset(&inner, catalogue);
    let mut hybrid = Hybrid::default();
    hybrid.fit(&data);
    let parts: Vec<_> = inner
        .cases
        .iter()
        .map(|c| hybrid.parts(&c.context))
        .collect();
    let targets: Vec<u16> = inner
        .cases
        .iter()
        .map(|c| data.catalogue.index_of(&c.target).expect("ensured"))
        .collect();
    let value = |w: [f32; 6]| {
        let w = HybridWeights::from_array(w);
        let ranked: Vec<Vec<u16>> = parts
            .iter()
            .map(|p| top_k(&Hybrid::blend(w, p), 10))
            .collect();
        let m = metrics("hybrid", &ranked, &targets, data.catalogue.len());
        m.hr10 + m.ndcg10
    };
    let mut best = HybridWeights::TUNED.as_array();
    let mut best_value = value(best);
    for _ in 0..2 {
        for k in 0..best.len() {
            for g in [0.0, 0.125, 0.25, 0.5, 1.0, 2.0] {
                let mut w = best;
                w[k] = g;
                if w.iter().all(|x| *x == 0.0) {
                    continue;
                }
                let v = value(w);
                if v > best_value + 1e-9 {
                    (best, best_value) = (w, v);
                }
            }
        }
    }
    HybridWeights::from_array(best)
}

/// A plain-text table, one row per recommender.
pub fn table(title: &str, rows: &[Metrics]) -> String {
    let mut out = format!("{title}\n");
    out += &format!(
        "  {:<13} {:>6} {:>7} {:>7} {:>8} {:>9}\n",
        "recommender", "cases", "HR@5", "HR@10", "NDCG@10", "coverage"
    );
    for m in rows {
        out += &format!(
            "  {:<13} {:>6} {:>7.3} {:>7.3} {:>8.3} {:>9.3}\n",
            m.name, m.cases, m.hr5, m.hr10, m.ndcg10, m.coverage
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_working_sessions_are_held_out_and_only_the_past_trains() {
        use crate::recommend::sim::{SimConfig, simulate};
        let cfg = SimConfig {
            producers: 40,
            max_sessions: 40,
            ..SimConfig::default()
        };
        let log = simulate(&cfg).log;
        let split = leave_last_out(&log, 5, 3);
        let groups = split.groups();
        assert!(groups.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
        for sessions in by_producer(&log) {
            let producer = &sessions[0].producer;
            let cases: Vec<&Case> = (split.cases.iter())
                .filter(|c| &c.context.producer == producer)
                .collect();
            let trained = (split.train.sessions.iter())
                .filter(|s| &s.producer == producer)
                .count();
            let working: Vec<usize> = (5..sessions.len())
                .filter(|&i| target(&sessions[i]).is_some())
                .collect();
            match working.len() {
                0 => assert!(cases.is_empty() && trained == sessions.len()),
                w => {
                    // The last (up to) three working sessions; training stops at the first.
                    let held = &working[w.saturating_sub(3)..];
                    assert_eq!(cases.len(), held.len(), "{producer}");
                    assert_eq!(trained, held[0], "{producer}");
                    for (c, &i) in cases.iter().zip(held) {
                        assert_eq!(Some(c.target.clone()), target(&sessions[i]));
                    }
                }
            }
        }
        assert!(split.cases.len() > 2 * (*groups.last().unwrap() as usize + 1));
    }

    /// One producer with 100 cases of +1 and nine with one case of 0: resampling cases
    /// would give a narrow interval near +0.92; resampling producers leaves the big one
    /// out in about a third of the draws.
    #[test]
    fn the_bootstrap_resamples_producers_not_cases() {
        let mut groups = vec![0u32; 100];
        groups.extend(1..10);
        let a: Vec<f64> = (0..109).map(|i| (i < 100) as u8 as f64).collect();
        let b = vec![0.0; 109];
        let (mean, lo, hi) = paired_bootstrap(&a, &b, &groups, 2000, 1);
        assert!((mean - 100.0 / 109.0).abs() < 1e-9);
        assert!(lo < 0.01 && hi > 0.9, "[{lo}, {hi}]");
        // Each case its own producer: the interval is the narrow case-level one.
        let own: Vec<u32> = (0..109).collect();
        let (_, lo, hi) = paired_bootstrap(&a, &b, &own, 2000, 1);
        assert!(lo > 0.8 && hi < 1.0, "[{lo}, {hi}]");
    }

    #[test]
    fn metrics_count_hits_and_ranks() {
        let ranked = vec![vec![3, 1, 2], vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9], vec![5]];
        let m = metrics("x", &ranked, &[3, 7, 4], 12);
        assert!((m.hr10 - 2.0 / 3.0).abs() < 1e-9);
        assert!((m.hr5 - 1.0 / 3.0).abs() < 1e-9);
        let ndcg = (1.0 + 1.0 / 9f64.log2()) / 3.0;
        assert!((m.ndcg10 - ndcg).abs() < 1e-9);
        assert!((m.coverage - 10.0 / 12.0).abs() < 1e-9);
    }
}
