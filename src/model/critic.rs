//! A small realism critic: reads a few bars of melody and says how real they look
//! (a logit: > 0 means "a corpus tune", < 0 "a generator's output").
//!
//! It is the discriminator half of a GAN, kept as a **measurement**: a critic trained on a
//! generator's samples against real tunes, then scored on held-out tunes and fresh samples,
//! says how far that generator is from indistinguishable (50% accuracy). See
//! `model::realism` for segments, training, metrics and critic-reranked decoding.
//!
//! Input, one [`Segment`] per example, one step per note or rest, in the token grid of
//! `model::grid` and `model::tokenizer`:
//! - the scale degree (pitch class relative to the key's tonic, or rest),
//! - the interval from the previous note (−12..=12 semitones, clamped; "none" for the first),
//! - the duration token and the position in the bar (ticks),
//! - and, once per segment, the meter token and the mode (major / minor).
//!
//! The octave is left out on purpose: the register is a producer's setting (the plugin's
//! Low/High), not something the model learned, and a critic that wins on register alone
//! measures the settings. The steps' rows of one embedding table are summed, three dilated
//! 1-D convolutions (kernel 5, dilations 1, 2, 4: 29 notes of context, i.e. a 4-bar reel)
//! read them, and the masked mean and max over time feed one linear logit. About 45 k
//! parameters: training on 2 × 8,000 segments takes about a minute on one core.

use super::grid::DURATIONS;
use super::tokenizer::{MAX_POS, METER0, METERS};
use candle_core::{D, Device, Module, Result, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Scale degrees 0..12, then rest.
const DEGREE_ROWS: usize = 13;
/// Intervals −12..=12, then "none" (first note, or a rest).
const INTERVAL_ROWS: usize = 26;
pub const NO_INTERVAL: u8 = 25;
pub const REST_DEGREE: u8 = 12;
const METER_ROWS: usize = METERS.len() + 1;
/// Offsets of each feature's rows in the one embedding table.
const DEGREE_AT: usize = 0;
const INTERVAL_AT: usize = DEGREE_AT + DEGREE_ROWS;
const DUR_AT: usize = INTERVAL_AT + INTERVAL_ROWS;
const POS_AT: usize = DUR_AT + DURATIONS.len();
const METER_AT: usize = POS_AT + MAX_POS;
const MODE_AT: usize = METER_AT + METER_ROWS;
/// Rows of the embedding table.
pub const ROWS: usize = MODE_AT + 2;
/// Features read per step (degree, interval, duration, position).
const STEP_FEATURES: usize = 4;
/// Dilations of the convolutions (kernel [`KERNEL`]): the receptive field is
/// `1 + (KERNEL - 1) * sum(DILATIONS)` steps.
const DILATIONS: [usize; 3] = [1, 2, 4];
const KERNEL: usize = 5;
/// Batches are padded to at least this many steps (masked out): candle 0.11's convolution
/// gradient computes `(steps - 1) - 2 * padding` in unsigned arithmetic, which overflows
/// (a panic in debug builds) for sequences shorter than the widest padding allows.
const MIN_STEPS: usize = 2 * DILATIONS[DILATIONS.len() - 1] * (KERNEL - 1) / 2 + 1;

/// Shape of the critic; stored as `critic.json` next to the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticConfig {
    /// Width of the embedding rows.
    pub embed: usize,
    /// Channels of every convolution.
    pub channels: usize,
    /// Steps read per segment; longer segments are cut (a 4-bar reel has 32 notes).
    pub max_steps: usize,
}

impl Default for CriticConfig {
    fn default() -> Self {
        Self {
            embed: 32,
            channels: 64,
            max_steps: 64,
        }
    }
}

/// One note or rest as the critic reads it (see the module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// 0..12 above the tonic, or [`REST_DEGREE`].
    pub degree: u8,
    /// `interval + 12` for −12..=12, or [`NO_INTERVAL`].
    pub interval: u8,
    /// Index into [`DURATIONS`].
    pub duration: u8,
    /// Ticks from the bar line (clamped below [`MAX_POS`]).
    pub pos: u8,
}

/// A few bars of one melody, key-relative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// A meter token of the tokenizer (`tokenizer::meter_token`).
    pub meter_token: u32,
    pub minor: bool,
    pub steps: Vec<Step>,
}

/// A padded batch of segments.
pub struct CriticBatch {
    /// `[B, T, 4]` u32 rows of the embedding table.
    steps: Tensor,
    /// `[B, 2]` u32 rows: meter and mode.
    cond: Tensor,
    /// `[B, T]` f32: 1 on steps, 0 on padding.
    mask: Tensor,
}

impl CriticBatch {
    pub fn new(segments: &[&Segment], max_steps: usize) -> Result<Self> {
        let longest = segments.iter().map(|s| s.steps.len()).max().unwrap_or(1);
        let t = longest.min(max_steps).max(MIN_STEPS);
        let b = segments.len();
        let mut rows = vec![0u32; b * t * STEP_FEATURES];
        let mut mask = vec![0f32; b * t];
        let mut cond = Vec::with_capacity(b * 2);
        for (i, s) in segments.iter().enumerate() {
            let meter = (s.meter_token.saturating_sub(METER0) as usize).min(METER_ROWS - 1);
            cond.extend([
                (METER_AT + meter) as u32,
                (MODE_AT + s.minor as usize) as u32,
            ]);
            for (j, step) in s.steps.iter().take(t).enumerate() {
                let at = (i * t + j) * STEP_FEATURES;
                rows[at..at + STEP_FEATURES].copy_from_slice(&[
                    (DEGREE_AT + (step.degree as usize).min(DEGREE_ROWS - 1)) as u32,
                    (INTERVAL_AT + (step.interval as usize).min(INTERVAL_ROWS - 1)) as u32,
                    (DUR_AT + (step.duration as usize).min(DURATIONS.len() - 1)) as u32,
                    (POS_AT + (step.pos as usize).min(MAX_POS - 1)) as u32,
                ]);
                mask[i * t + j] = 1.0;
            }
        }
        let dev = &Device::Cpu;
        Ok(Self {
            steps: Tensor::from_vec(rows, (b, t, STEP_FEATURES), dev)?,
            cond: Tensor::from_vec(cond, (b, 2), dev)?,
            mask: Tensor::from_vec(mask, (b, t), dev)?,
        })
    }
}

pub struct Critic {
    pub config: CriticConfig,
    /// Every feature's rows, [`ROWS`] × embed.
    table: Tensor,
    convs: Vec<Conv1d>,
    /// `[2 * channels] -> 1`: reads the masked mean and max over time.
    head: Linear,
}

impl Critic {
    /// Builds the critic from a `VarBuilder`: a fresh `VarMap` for training (then
    /// [`super::realism::seeded_init`] for reproducible weights) or saved weights.
    pub fn new(config: CriticConfig, vb: VarBuilder) -> Result<Self> {
        let table = vb.get_with_hints(
            (ROWS, config.embed),
            "table",
            Init::Randn {
                mean: 0.0,
                stdev: 0.1,
            },
        )?;
        let mut convs = Vec::new();
        for (i, &dilation) in DILATIONS.iter().enumerate() {
            let cfg = Conv1dConfig {
                padding: dilation * (KERNEL - 1) / 2,
                dilation,
                ..Default::default()
            };
            let input = if i == 0 {
                config.embed
            } else {
                config.channels
            };
            let conv = candle_nn::conv1d(
                input,
                config.channels,
                KERNEL,
                cfg,
                vb.pp(format!("conv{i}")),
            )?;
            convs.push(conv);
        }
        let head = candle_nn::linear(2 * config.channels, 1, vb.pp("head"))?;
        Ok(Self {
            config,
            table,
            convs,
            head,
        })
    }

    /// One logit per segment, `[B]`: > 0 reads as real.
    pub fn forward(&self, batch: &CriticBatch) -> Result<Tensor> {
        let (b, t, _) = batch.steps.dims3()?;
        let e = self.config.embed;
        let steps = self
            .table
            .embedding(&batch.steps.flatten_all()?)?
            .reshape((b, t, STEP_FEATURES, e))?
            .sum(2)?;
        let cond = self
            .table
            .embedding(&batch.cond.flatten_all()?)?
            .reshape((b, 2, e))?
            .sum_keepdim(1)?;
        let mask = batch.mask.unsqueeze(1)?; // [B, 1, T]
        // Padding reads as zeros, so it adds nothing to the convolutions' sums.
        let mut x = steps
            .broadcast_add(&cond)?
            .transpose(1, 2)?
            .broadcast_mul(&mask)?;
        for conv in &self.convs {
            x = conv.forward(&x)?.relu()?.broadcast_mul(&mask)?;
        }
        let steps_per_row = batch.mask.sum_keepdim(1)?.clamp(1f32, f32::MAX)?; // [B, 1]
        let mean = x.sum(D::Minus1)?.broadcast_div(&steps_per_row)?;
        // After ReLU and the mask everything is ≥ 0, so the padding's zeros never win a max
        // over a real step's activation.
        let max = x.max(D::Minus1)?;
        let pooled = Tensor::cat(&[mean, max], 1)?;
        self.head.forward(&pooled)?.squeeze(1)
    }

    pub fn parameter_count(&self) -> usize {
        let convs: usize = (self.convs.iter())
            .map(|c| c.weight().elem_count() + c.bias().map_or(0, Tensor::elem_count))
            .sum();
        let head = self.head.weight().elem_count() + self.head.bias().map_or(0, Tensor::elem_count);
        self.table.elem_count() + convs + head
    }
}

/// Mean binary cross-entropy of `logits` against labels (1 real, 0 generated), in the
/// stable form `max(x, 0) − x·y + ln(1 + e^−|x|)` (candle's version takes the log of a
/// sigmoid, which is −inf once the critic is sure).
pub fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let softplus_tail = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((logits.relu()? - (logits * labels)?)? + softplus_tail)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::VarMap;

    fn segment(degrees: &[u8]) -> Segment {
        Segment {
            meter_token: METER0,
            minor: false,
            steps: (degrees.iter().enumerate())
                .map(|(i, &d)| Step {
                    degree: d,
                    interval: if i == 0 { NO_INTERVAL } else { 14 },
                    duration: 3,
                    pos: (i * 6 % 48) as u8,
                })
                .collect(),
        }
    }

    #[test]
    fn every_trainable_tensor_gets_a_gradient() -> anyhow::Result<()> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let critic = Critic::new(CriticConfig::default(), vb)?;
        let (a, b) = (segment(&[0, 2, 4, 5, 7]), segment(&[11, 3, REST_DEGREE]));
        let logits = critic.forward(&CriticBatch::new(&[&a, &b], 64)?)?;
        let labels = Tensor::new(&[1f32, 0.0], &Device::Cpu)?;
        let grads = bce_with_logits(&logits, &labels)?.backward()?;
        let data = varmap.data().lock().unwrap();
        // The table, 3 convolutions and the head, each with weight and bias but the table.
        assert_eq!(data.len(), 1 + 2 * 3 + 2);
        let mut total = 0;
        for (name, var) in data.iter() {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = g.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(norm > 0.0, "{name} has a zero gradient");
            total += var.elem_count();
        }
        assert_eq!(total, critic.parameter_count());
        Ok(())
    }

    #[test]
    fn padding_does_not_change_a_segments_logit() -> anyhow::Result<()> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let critic = Critic::new(CriticConfig::default(), vb)?;
        let (short, long) = (segment(&[0, 4, 7]), segment(&[0, 2, 4, 5, 7, 9, 11, 0]));
        let alone: Vec<f32> = critic
            .forward(&CriticBatch::new(&[&short], 64)?)?
            .to_vec1()?;
        let padded: Vec<f32> = critic
            .forward(&CriticBatch::new(&[&short, &long], 64)?)?
            .to_vec1()?;
        assert!(
            (alone[0] - padded[0]).abs() < 1e-5,
            "{alone:?} vs {padded:?}"
        );
        Ok(())
    }

    #[test]
    fn stable_loss_matches_the_textbook_formula() -> anyhow::Result<()> {
        let x = Tensor::new(&[2.0f32, -1.0, 0.5, 40.0], &Device::Cpu)?;
        let y = Tensor::new(&[1.0f32, 0.0, 0.0, 1.0], &Device::Cpu)?;
        let got = bce_with_logits(&x, &y)?.to_scalar::<f32>()?;
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        let want = (-(sig(2.0)).ln() - (1.0 - sig(-1.0)).ln() - (1.0 - sig(0.5)).ln() + 0.0) / 4.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        Ok(())
    }
}
