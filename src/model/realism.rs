//! Realism measured by a critic ([`super::critic`]): melodies cut into segments, a
//! reproducible training loop, accuracy and AUC on held-out data, saving and loading, and
//! critic-reranked decoding.
//!
//! Protocol (`melodist critic eval`): a **fresh** critic per generator, trained on that
//! generator's samples against the training split of the corpus (split by tune, as
//! `melodist train` splits), then scored on the held-out tunes against fresh samples
//! (other seeds). 50% accuracy / 0.5 AUC means the critic cannot tell them apart. A critic
//! trained on one generator and reused on another would measure how that other generator
//! differs from the first one's mistakes, not how far it is from real music.

use super::adamw::AdamW;
use super::critic::{
    Critic, CriticBatch, CriticConfig, NO_INTERVAL, REST_DEGREE, Segment, Step, bce_with_logits,
};
use super::grid::{GridEvent, TPQ, bar_ticks, events_of};
use super::tokenizer::{MAX_POS, meter_token};
use crate::midi::{Melody, MelodyNote};
use crate::music::{Key, Meter, SeedRng, fnv1a};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::{ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::Path;
use std::time::Instant;

/// Bars per segment: half an 8-bar strain, the corpus's phrase (antecedent or consequent).
pub const SEGMENT_BARS: u32 = 4;
pub const CRITIC_CONFIG_FILE: &str = "critic.json";
pub const CRITIC_WEIGHTS_FILE: &str = "critic.safetensors";
const FORMAT: &str = "melodist-critic/1";

/// The [`SEGMENT_BARS`]-bar segments of a melody whose bar lines fall on multiples of the
/// meter's bar, from bar `first_bar` on; a segment needs a note in its last bar (so a tune's
/// ragged end is dropped). Pitches are read relative to `key`.
pub fn segments_of(notes: &[MelodyNote], key: Key, meter: Meter, first_bar: u32) -> Vec<Segment> {
    let events = grid_events(notes, key, meter);
    let bar = bar_ticks(meter);
    let span = bar * SEGMENT_BARS;
    let last_onset = events.iter().map(|e| e.start_tick).max().unwrap_or(0);
    (0..)
        .map(|i| (first_bar + i * SEGMENT_BARS) * bar)
        .take_while(|&start| start + span - bar <= last_onset)
        .filter_map(|start| segment(&events, key, meter, start..start + span))
        .collect()
}

fn grid_events(notes: &[MelodyNote], key: Key, meter: Meter) -> Vec<GridEvent> {
    events_of(&Melody {
        title: String::new(),
        meter,
        key: Some(key),
        notes: notes.to_vec(),
    })
}

/// The events with an onset in `ticks` as one segment; `None` if it has no note.
fn segment(events: &[GridEvent], key: Key, meter: Meter, ticks: Range<u32>) -> Option<Segment> {
    let bar = bar_ticks(meter);
    let mut previous: Option<u8> = None;
    let steps: Vec<Step> = (events.iter())
        .filter(|e| ticks.contains(&e.start_tick))
        .map(|e| {
            let (degree, interval) = match e.pitch {
                Some(p) => {
                    let interval = previous.map_or(NO_INTERVAL, |q| {
                        ((p as i32 - q as i32).clamp(-12, 12) + 12) as u8
                    });
                    previous = Some(p);
                    (key.relative_pc(p), interval)
                }
                None => (REST_DEGREE, NO_INTERVAL),
            };
            Step {
                degree,
                interval,
                duration: e.duration,
                pos: ((e.start_tick % bar) as usize).min(MAX_POS - 1) as u8,
            }
        })
        .collect();
    steps
        .iter()
        .any(|s| s.degree != REST_DEGREE)
        .then(|| Segment {
            meter_token: meter_token(meter),
            minor: key.scale.is_minor(),
            steps,
        })
}

/// The first full bar of a melody (a pickup before it is left out).
pub fn first_full_bar(notes: &[MelodyNote], meter: Meter) -> u32 {
    let first = notes.first().map_or(0.0, |n| n.start);
    let bar = bar_ticks(meter) as f64 / TPQ as f64;
    (first / bar - 1e-6).ceil().max(0.0) as u32
}

/// Sets every weight from `seed` (candle's own random generator cannot be seeded): biases
/// at zero, the rest uniform with variance 1/fan-in. Same seed and data, same critic.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("var map lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let fan_in = dims[1..].iter().product::<usize>().max(1);
        let bound = (3.0 / fan_in as f32).sqrt();
        let mut rng = SeedRng::derive(&[seed, fnv1a(name.as_bytes())]);
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| {
                if name.ends_with("bias") {
                    0.0
                } else {
                    (2.0 * rng.next_f32() - 1.0) * bound
                }
            })
            .collect();
        var.set(&Tensor::from_vec(values, dims, &Device::Cpu)?)?;
    }
    Ok(())
}

/// Everything `melodist critic train` can set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CriticTraining {
    pub config: CriticConfig,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate, decayed linearly to a tenth over the run.
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
    /// One line per epoch on stderr.
    pub progress: bool,
}

impl Default for CriticTraining {
    fn default() -> Self {
        Self {
            config: CriticConfig::default(),
            epochs: 6,
            batch_size: 64,
            lr: 3e-3,
            weight_decay: 0.01,
            seed: 1,
            progress: true,
        }
    }
}

pub struct TrainedCritic {
    pub critic: Critic,
    pub varmap: VarMap,
    pub seconds: f64,
    /// Real segments seen per epoch, and as many generated ones.
    pub per_class: usize,
    /// Mean training loss per epoch (nats).
    pub losses: Vec<f64>,
}

/// Trains a critic to tell `real` (label 1) from `fake` (label 0). Each epoch sees as
/// many real segments as fake ones (a fresh draw of the larger side), so the classes
/// stay balanced and 50% stays the chance level.
pub fn train_critic(
    real: &[Segment],
    fake: &[Segment],
    opts: &CriticTraining,
) -> Result<TrainedCritic> {
    if real.is_empty() || fake.is_empty() {
        bail!(
            "a critic needs both real and generated segments ({} real, {} generated)",
            real.len(),
            fake.len()
        );
    }
    let varmap = VarMap::new();
    let critic = Critic::new(
        opts.config.clone(),
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    seeded_init(&varmap, opts.seed)?;
    let params = ParamsAdamW {
        lr: opts.lr,
        weight_decay: opts.weight_decay,
        ..Default::default()
    };
    let mut opt = AdamW::new(&varmap, params)?;
    let per_side = real.len().min(fake.len());
    let steps_per_epoch = (2 * per_side).div_ceil(opts.batch_size);
    let total_steps = (steps_per_epoch * opts.epochs).max(1);
    let start = Instant::now();
    let mut losses = Vec::new();
    for epoch in 0..opts.epochs {
        let mut rng = SeedRng::derive(&[opts.seed, epoch as u64]);
        let (real, fake) = (
            draw(real, per_side, &mut rng),
            draw(fake, per_side, &mut rng),
        );
        let mut examples: Vec<(&Segment, f32)> = (real.into_iter().map(|s| (s, 1.0)))
            .chain(fake.into_iter().map(|s| (s, 0.0)))
            .collect();
        shuffle(&mut examples, &mut rng);
        let mut loss_sum = 0.0;
        for (i, chunk) in examples.chunks(opts.batch_size).enumerate() {
            let step = epoch * steps_per_epoch + i;
            opt.params.lr = opts.lr * (1.0 - 0.9 * step as f64 / total_steps as f64);
            let segments: Vec<&Segment> = chunk.iter().map(|e| e.0).collect();
            let labels: Vec<f32> = chunk.iter().map(|e| e.1).collect();
            let batch = CriticBatch::new(&segments, opts.config.max_steps)?;
            let labels = Tensor::new(labels.as_slice(), &Device::Cpu)?;
            let loss = bce_with_logits(&critic.forward(&batch)?, &labels)?;
            opt.step(&loss.backward()?)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
        }
        let mean = loss_sum / steps_per_epoch.max(1) as f64;
        losses.push(mean);
        if opts.progress {
            eprintln!(
                "critic epoch {}/{}: loss {mean:.3}, {} segments, {:.1} s",
                epoch + 1,
                opts.epochs,
                2 * per_side,
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(TrainedCritic {
        critic,
        varmap,
        seconds: start.elapsed().as_secs_f64(),
        per_class: per_side,
        losses,
    })
}

/// `n` segments of `from`: all of them in a shuffled order when `n` covers them, else a
/// fresh random subset.
fn draw<'a>(from: &'a [Segment], n: usize, rng: &mut SeedRng) -> Vec<&'a Segment> {
    let mut order: Vec<usize> = (0..from.len()).collect();
    shuffle(&mut order, rng);
    order.into_iter().take(n).map(|i| &from[i]).collect()
}

fn shuffle<T>(v: &mut [T], rng: &mut SeedRng) {
    for i in (1..v.len()).rev() {
        v.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
}

/// The critic's logit for every segment (> 0 reads as real).
pub fn scores(critic: &Critic, segments: &[Segment]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(segments.len());
    for chunk in segments.chunks(256) {
        let refs: Vec<&Segment> = chunk.iter().collect();
        let batch = CriticBatch::new(&refs, critic.config.max_steps)?;
        out.extend(critic.forward(&batch)?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// How well a critic tells real from generated segments.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Separation {
    /// Share classified right at logit 0, over equally many real and generated segments
    /// (0.5: indistinguishable).
    pub accuracy: f64,
    /// Probability that a random real segment scores above a random generated one.
    pub auc: f64,
    pub real: usize,
    pub generated: usize,
}

impl Separation {
    /// From the critic's scores; the larger side is cut to the smaller one's size (its
    /// first segments) so the accuracy's chance level is 50%.
    pub fn of(real: &[f32], generated: &[f32]) -> Separation {
        let n = real.len().min(generated.len());
        let (real, generated) = (&real[..n], &generated[..n]);
        let right = real.iter().filter(|&&s| s > 0.0).count()
            + generated.iter().filter(|&&s| s <= 0.0).count();
        Separation {
            accuracy: right as f64 / (2 * n).max(1) as f64,
            auc: auc(real, generated),
            real: n,
            generated: n,
        }
    }
}

/// Mann–Whitney AUC: the share of (real, generated) pairs the scores order right, ties
/// counting half.
fn auc(real: &[f32], generated: &[f32]) -> f64 {
    let mut all: Vec<(f32, bool)> = (real.iter().map(|&s| (s, true)))
        .chain(generated.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the real segments' ranks (1-based, ties at their average rank).
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let j = (i..all.len())
            .find(|&j| all[j].0 != all[i].0)
            .unwrap_or(all.len());
        let average_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += average_rank * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let (r, g) = (real.len() as f64, generated.len() as f64);
    if r == 0.0 || g == 0.0 {
        return 0.5;
    }
    (rank_sum - r * (r + 1.0) / 2.0) / (r * g)
}

/// `critic.json`: the network's shape, what it was trained on, and the weights' checksum.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CriticFile {
    pub format: String,
    pub config: CriticConfig,
    /// The generator whose samples were the "generated" class.
    pub generator: String,
    pub training: CriticTraining,
    pub separation: Option<Separation>,
    /// FNV-1a of `critic.safetensors`, hex.
    pub weights_fnv1a: String,
}

/// Writes `critic.json` + `critic.safetensors` into `dir`.
pub fn save_critic(dir: &Path, varmap: &VarMap, file: &CriticFile) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let weights = dir.join(CRITIC_WEIGHTS_FILE);
    varmap
        .save(&weights)
        .with_context(|| format!("cannot write {}", weights.display()))?;
    let file = CriticFile {
        format: FORMAT.into(),
        weights_fnv1a: format!("{:016x}", fnv1a(&std::fs::read(&weights)?)),
        ..file.clone()
    };
    std::fs::write(
        dir.join(CRITIC_CONFIG_FILE),
        serde_json::to_string_pretty(&file)?,
    )?;
    Ok(())
}

/// Loads a critic written by [`save_critic`], refusing a damaged or foreign one.
pub fn load_critic(dir: &Path) -> Result<(Critic, CriticFile)> {
    let json = std::fs::read(dir.join(CRITIC_CONFIG_FILE))
        .with_context(|| format!("no {CRITIC_CONFIG_FILE} in {}", dir.display()))?;
    let file: CriticFile =
        serde_json::from_slice(&json).context("critic.json is not a valid critic config")?;
    if file.format != FORMAT {
        bail!(
            "critic.json has format {:?}, this Melodist reads {FORMAT:?}",
            file.format
        );
    }
    let bytes = std::fs::read(dir.join(CRITIC_WEIGHTS_FILE))
        .with_context(|| format!("no {CRITIC_WEIGHTS_FILE} in {}", dir.display()))?;
    if format!("{:016x}", fnv1a(&bytes)) != file.weights_fnv1a {
        bail!("critic.safetensors does not match critic.json (damaged or from another critic)");
    }
    let vb = VarBuilder::from_slice_safetensors(&bytes, DType::F32, &Device::Cpu)?;
    let critic = Critic::new(file.config.clone(), vb)
        .context("critic.safetensors does not fit the network in critic.json")?;
    Ok((critic, file))
}

/// How real a whole piece looks: the mean logit of its segments (the whole piece as one
/// segment when it is shorter than [`SEGMENT_BARS`] bars).
pub fn realism(critic: &Critic, notes: &[MelodyNote], key: Key, meter: Meter) -> Result<f32> {
    let mut segments = segments_of(notes, key, meter, 0);
    if segments.is_empty() {
        segments.extend(segment(
            &grid_events(notes, key, meter),
            key,
            meter,
            0..u32::MAX,
        ));
    }
    if segments.is_empty() {
        return Ok(f32::NEG_INFINITY);
    }
    let s = scores(critic, &segments)?;
    Ok(s.iter().sum::<f32>() / s.len() as f32)
}

/// Critic-reranked decoding: `draw(i)` writes candidate `i` (its own seed; candidate 0 is
/// the plain decode), and the candidate the critic rates most real is kept, with its
/// score. Only the generator's own outputs can be chosen, so its scale and register masks,
/// form and originality guard all still hold; the cost is `n` decodes.
pub fn rerank(
    critic: &Critic,
    key: Key,
    meter: Meter,
    n: usize,
    mut draw: impl FnMut(usize) -> Vec<MelodyNote>,
) -> Result<(Vec<MelodyNote>, f32)> {
    let mut best: Option<(Vec<MelodyNote>, f32)> = None;
    for i in 0..n.max(1) {
        let candidate = draw(i);
        let score = realism(critic, &candidate, key, meter)?;
        if best.as_ref().is_none_or(|b| score > b.1) {
            best = Some((candidate, score));
        }
    }
    Ok(best.expect("at least one candidate"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::music::{PitchClass, Scale};

    const C_MAJOR: [u8; 7] = [0, 2, 4, 5, 7, 9, 11];

    fn c_major() -> Key {
        Key::new(PitchClass::from_index(0), Scale::Major)
    }

    /// Four bars of eighths in 4/4, pitches from `pitch(i)`.
    fn eighths(mut pitch: impl FnMut(usize) -> u8) -> Vec<MelodyNote> {
        (0..32)
            .map(|i| MelodyNote {
                start: i as f64 * 0.5,
                duration: 0.5,
                pitch: pitch(i),
                velocity: 96,
            })
            .collect()
    }

    /// The planted task: real = scale runs (up or down, from any degree), fake = random
    /// chromatic notes with the same rhythm and range.
    fn planted(n: usize, seed: u64) -> (Vec<Segment>, Vec<Segment>) {
        let mut rng = SeedRng::new(seed);
        let meter = Meter::new(4, 4);
        let (mut real, mut fake) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let from = (rng.next_u64() % 7) as i64 + 7;
            let up = rng.next_u64().is_multiple_of(2);
            let run = eighths(|i| {
                let step = from + if up { i as i64 % 8 } else { -(i as i64 % 8) };
                48 + 12 * step.div_euclid(7) as u8 + C_MAJOR[step.rem_euclid(7) as usize]
            });
            real.extend(segments_of(&run, c_major(), meter, 0));
            let noise = eighths(|_| 60 + (rng.next_u64() % 24) as u8);
            fake.extend(segments_of(&noise, c_major(), meter, 0));
        }
        (real, fake)
    }

    fn small() -> CriticTraining {
        CriticTraining {
            config: CriticConfig {
                embed: 16,
                channels: 16,
                max_steps: 64,
            },
            epochs: 3,
            batch_size: 32,
            progress: false,
            ..Default::default()
        }
    }

    #[test]
    fn a_critic_learns_the_planted_task() -> Result<()> {
        let (real, fake) = planted(300, 1);
        let (real_test, fake_test) = planted(100, 2);
        assert_eq!(
            (real.len(), fake.len()),
            (300, 300),
            "one segment per 4 bars"
        );
        let trained = train_critic(&real, &fake, &small())?;
        let s = Separation::of(
            &scores(&trained.critic, &real_test)?,
            &scores(&trained.critic, &fake_test)?,
        );
        assert!(s.accuracy > 0.95, "held-out accuracy {s:?}");
        assert!(s.auc > 0.98, "held-out AUC {s:?}");
        Ok(())
    }

    #[test]
    fn same_seed_same_critic_same_scores() -> Result<()> {
        let (real, fake) = planted(64, 3);
        let opts = CriticTraining {
            epochs: 1,
            ..small()
        };
        let (a, b) = (
            train_critic(&real, &fake, &opts)?,
            train_critic(&real, &fake, &opts)?,
        );
        let (sa, sb) = (scores(&a.critic, &fake)?, scores(&b.critic, &fake)?);
        assert_eq!(sa, sb);
        let other = train_critic(&real, &fake, &CriticTraining { seed: 2, ..opts })?;
        assert_ne!(scores(&other.critic, &fake)?, sa, "the seed matters");
        Ok(())
    }

    #[test]
    fn segments_are_key_relative_and_skip_the_ragged_end() {
        let meter = Meter::new(3, 4);
        // Nine bars of quarter notes in D major: two full segments, the ninth bar dropped.
        let notes: Vec<MelodyNote> = (0..27)
            .map(|i| MelodyNote {
                start: i as f64,
                duration: 1.0,
                pitch: 62 + (i % 3) as u8 * 2,
                velocity: 96,
            })
            .collect();
        let d_major = Key::new(PitchClass::from_index(2), Scale::Major);
        let segments = segments_of(&notes, d_major, meter, 0);
        assert_eq!(segments.len(), 2);
        let first = &segments[0].steps;
        assert_eq!(first.len(), 12);
        assert_eq!(first[0].degree, 0);
        assert_eq!(first[0].interval, NO_INTERVAL);
        assert_eq!((first[1].degree, first[1].interval), (2, 14));
        assert_eq!(first[3].pos, 0, "bar line");
        assert_eq!(first[4].pos as u32, TPQ);
        // Starting at bar 2 leaves one full segment (bars 2-5; bars 6-8 are too few).
        assert_eq!(segments_of(&notes, d_major, meter, 2).len(), 1);
    }

    #[test]
    fn separation_counts_right_answers_and_ranks() {
        let s = Separation::of(&[2.0, 1.0, -1.0], &[-2.0, 0.5, -3.0]);
        assert_eq!(s.accuracy, 4.0 / 6.0);
        // Pairs ordered right: 2>all 3, 1>-2,0.5,-3 (3), -1>-2,-3 (2): 8 of 9.
        assert!((s.auc - 8.0 / 9.0).abs() < 1e-12, "{s:?}");
        let tied = Separation::of(&[0.0, 0.0], &[0.0, 0.0]);
        assert_eq!(tied.auc, 0.5);
    }
}
