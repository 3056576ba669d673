//! A stateful multi-layer LSTM that reads and writes melodies **one note per step**.
//!
//! Step `t` reads the previous note (its pitch token and its duration token, two rows of one
//! embedding table), where note `t` starts ([`Onset`]: position in the bar and, in format 3,
//! bars to the strain's cadence and the chord under it), and the tune's
//! conditioning (style, meter and key: the header tokens, embedded once and added to every
//! step so the mode cannot fade from memory). It predicts note `t` in two parts:
//! - the pitch (or a rest, or the end) from the top LSTM state;
//! - the duration from the top state **and the chosen pitch** (a small ReLU layer), so
//!   p(note) = p(pitch) · p(duration | pitch) exactly.
//!
//! One step per note instead of one per token halves the cost of both training and live
//! decoding, and doubles how many notes back the recurrent state has to remember.
//!
//! Chosen by measurement over a small transformer: at batch 1 on one core a 2×256 LSTM step
//! costs about half a transformer step of similar size, and its state is a fixed few KB (no
//! KV cache to grow or preallocate). Gates follow the PyTorch layout
//! `[input, forget, cell, output]` with one bias per layer.
//!
//! Two ways to run the same weights:
//! - [`Lstm::forward`]: a batch of note sequences, differentiable (training, evaluation);
//! - [`Lstm::step`] + [`Lstm::duration_logits`]: one note of one sequence, carrying an
//!   [`LstmState`] (live decoding). The first layer's input projections of every embedding
//!   row are precomputed, so reading a note costs three table rows plus one
//!   matrix-vector product per layer. This is the reference for the decoder the plugin
//!   runs, [`super::lstm_fast::FastLstm`] (same weights, no candle, no system calls).

use super::tokenizer::{CHORD_INPUTS, MAX_POS, Onset, STRAIN_BARS, VOCAB};
use candle_core::{D, DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder, ops::sigmoid};
use serde::{Deserialize, Serialize};

/// Shape of the model; stored as `config.json` next to the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LstmConfig {
    pub vocab: usize,
    pub max_pos: usize,
    pub embed: usize,
    pub hidden: usize,
    pub layers: usize,
    /// Width of the duration layer that sees the top state and the chosen pitch.
    pub dur_hidden: usize,
    /// Dropout on the embeddings and between layers, training only.
    #[serde(default)]
    pub dropout: f32,
    /// Format 3: every step also reads bars-to-cadence and the chord ([`Onset`]).
    /// Format-2 models (false) ignore both.
    #[serde(default)]
    pub strain_and_chord: bool,
}

impl Default for LstmConfig {
    fn default() -> Self {
        Self {
            vocab: VOCAB,
            max_pos: MAX_POS,
            embed: 128,
            hidden: 256,
            layers: 2,
            dur_hidden: 128,
            dropout: 0.2,
            strain_and_chord: true,
        }
    }
}

/// The chord input as a multi-hot row: 12 pitch classes and the "no chord" flag.
pub fn chord_row(chord: u16) -> [f32; CHORD_INPUTS] {
    let mut row = [0.0; CHORD_INPUTS];
    for (i, x) in row.iter_mut().take(12).enumerate() {
        *x = ((chord >> i) & 1) as f32;
    }
    row[12] = (chord & 0xfff == 0) as u8 as f32;
    row
}

/// A padded batch of note sequences (`[B, T]` u32 tensors; `cond` is `[B, 3]`).
pub struct NoteBatch {
    /// Header tokens of each sequence: style, meter, key.
    pub cond: Tensor,
    pub prev_pitch: Tensor,
    pub prev_dur: Tensor,
    /// Position in the bar (ticks) where the predicted note starts.
    pub pos: Tensor,
    /// Bars to the strain's cadence there (`[B, T]` u32).
    pub cadence: Tensor,
    /// The chord there, multi-hot (`[B, T, 13]` f32, see [`chord_row`]).
    pub chord: Tensor,
    /// The pitch token of the predicted note: the duration part is conditioned on it
    /// (teacher forcing).
    pub pitch: Tensor,
}

struct Layer {
    /// `[4H, in]`, `[4H, H]`, `[4H]`.
    w_ih: Tensor,
    w_hh: Tensor,
    bias: Tensor,
}

pub struct Lstm {
    pub config: LstmConfig,
    /// Previous pitch and previous duration rows (disjoint token ranges of one table).
    tok_emb: Tensor,
    pos_emb: Tensor,
    /// Header tokens (style, meter, key), summed into one conditioning vector.
    cond_emb: Tensor,
    /// Format 3: bars-to-cadence rows and the chord inputs' projection.
    strain: Option<StrainAndChord>,
    layers: Vec<Layer>,
    pitch_head: Linear,
    dur_in: Linear,
    /// `[vocab, dur_hidden]`: the chosen pitch's contribution to the duration layer.
    dur_pitch: Tensor,
    dur_head: Linear,
    /// First-layer input projections of every table row (`step` only; no bias).
    tok_in: Tensor,
    pos_in: Tensor,
    cond_in: Tensor,
    /// Transposed weights, contiguous for fast matrix-vector products.
    w_hh_t: Vec<Tensor>,
    w_ih_t: Vec<Tensor>,
}

/// Format 3's extra inputs: `cadence_emb` `[8, E]` and `chord_emb` `[13, E]`, with their
/// first-layer projections for [`Lstm::step`].
struct StrainAndChord {
    cadence_emb: Tensor,
    chord_emb: Tensor,
    cadence_in: Tensor,
    chord_in: Tensor,
}

/// The weights as [`super::lstm_fast::FastLstm`] reads them (borrowed, at load time).
pub(super) struct Weights<'a> {
    pub tok_in: &'a Tensor,
    pub pos_in: &'a Tensor,
    pub cond_in: &'a Tensor,
    /// Format 3: bars-to-cadence and chord projections.
    pub cadence_in: Option<&'a Tensor>,
    pub chord_in: Option<&'a Tensor>,
    /// `(w_ih, w_hh, bias)` per layer.
    pub layers: Vec<(&'a Tensor, &'a Tensor, &'a Tensor)>,
    pub pitch_head: &'a Linear,
    pub dur_in: &'a Linear,
    pub dur_pitch: &'a Tensor,
    pub dur_head: &'a Linear,
}

/// Recurrent state of one sequence: `(h, c)` per layer, each `[1, H]`, plus the
/// conditioning's first-layer projection (bias included).
#[derive(Clone)]
pub struct LstmState {
    h: Vec<Tensor>,
    c: Vec<Tensor>,
    cond: Tensor,
}

impl Lstm {
    /// Builds the model from a `VarBuilder`: a fresh `VarMap` for training (with its
    /// initialisers) or safetensors weights for inference.
    pub fn new(config: LstmConfig, vb: VarBuilder) -> Result<Self> {
        let (e, h, v, dh) = (config.embed, config.hidden, config.vocab, config.dur_hidden);
        let emb_init = Init::Randn {
            mean: 0.0,
            stdev: 0.1,
        };
        let tok_emb = vb.get_with_hints((v, e), "tok_emb", emb_init)?;
        let pos_emb = vb.get_with_hints((config.max_pos, e), "pos_emb", emb_init)?;
        let cond_emb = vb.get_with_hints((v, e), "cond_emb", emb_init)?;
        let bound = 1.0 / (h as f64).sqrt();
        let uniform = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let mut layers = Vec::new();
        for l in 0..config.layers {
            let input = if l == 0 { e } else { h };
            let vb = vb.pp(format!("lstm{l}"));
            layers.push(Layer {
                w_ih: vb.get_with_hints((4 * h, input), "w_ih", uniform)?,
                w_hh: vb.get_with_hints((4 * h, h), "w_hh", uniform)?,
                bias: vb.get_with_hints(4 * h, "bias", Init::Const(0.0))?,
            });
        }
        let pitch_head = candle_nn::linear(h, v, vb.pp("pitch_head"))?;
        let dur_in = candle_nn::linear(h, dh, vb.pp("dur_in"))?;
        let dur_pitch = vb.get_with_hints((v, dh), "dur_pitch", emb_init)?;
        let dur_head = candle_nn::linear(dh, v, vb.pp("dur_head"))?;
        let w_ih0_t = layers[0].w_ih.t()?;
        let tok_in = tok_emb.matmul(&w_ih0_t)?;
        let pos_in = pos_emb.matmul(&w_ih0_t)?;
        let cond_in = cond_emb.matmul(&w_ih0_t)?;
        let strain = if config.strain_and_chord {
            let cadence_emb =
                vb.get_with_hints((STRAIN_BARS as usize, e), "cadence_emb", emb_init)?;
            let chord_emb = vb.get_with_hints((CHORD_INPUTS, e), "chord_emb", emb_init)?;
            Some(StrainAndChord {
                cadence_in: cadence_emb.matmul(&w_ih0_t)?,
                chord_in: chord_emb.matmul(&w_ih0_t)?,
                cadence_emb,
                chord_emb,
            })
        } else {
            None
        };
        let w_hh_t = layers
            .iter()
            .map(|l| l.w_hh.t()?.contiguous())
            .collect::<Result<_>>()?;
        let w_ih_t = layers
            .iter()
            .map(|l| l.w_ih.t()?.contiguous())
            .collect::<Result<_>>()?;
        Ok(Self {
            config,
            tok_emb,
            pos_emb,
            cond_emb,
            strain,
            layers,
            pitch_head,
            dur_in,
            dur_pitch,
            dur_head,
            tok_in,
            pos_in,
            cond_in,
            w_hh_t,
            w_ih_t,
        })
    }

    /// Forget-gate bias of 1 (a standard LSTM trick: remember by default early in training).
    pub fn forget_bias_init(&self) -> Vec<(String, Tensor)> {
        let h = self.config.hidden;
        (0..self.layers.len())
            .map(|l| {
                let b: Vec<f32> = (0..4 * h)
                    .map(|i| if (h..2 * h).contains(&i) { 1.0 } else { 0.0 })
                    .collect();
                (
                    format!("lstm{l}.bias"),
                    Tensor::new(b, &Device::Cpu).expect("cpu tensor"),
                )
            })
            .collect()
    }

    /// Pitch logits and duration logits, each `[B, T, vocab]`.
    ///
    /// Runs time step by time step on per-step tensors: slicing a `[B, T, ..]` activation
    /// per step would make candle's backward pass pad every slice's gradient back to the
    /// full `[B, T, ..]` size (a ~10× slowdown in training).
    pub fn forward(&self, batch: &NoteBatch, train: bool) -> Result<(Tensor, Tensor)> {
        let drop = |x: Tensor| {
            if train && self.config.dropout > 0.0 {
                candle_nn::ops::dropout(&x, self.config.dropout)
            } else {
                Ok(x)
            }
        };
        let (b, t) = batch.prev_pitch.dims2()?;
        let e = self.config.embed;
        let cond = self
            .cond_emb
            .embedding(&batch.cond.flatten_all()?)?
            .reshape((b, 3, e))?
            .sum(1)?;
        let columns = |x: &Tensor| x.t()?.contiguous();
        let (pp, pd, pos) = (
            columns(&batch.prev_pitch)?,
            columns(&batch.prev_dur)?,
            columns(&batch.pos)?,
        );
        let strain = match &self.strain {
            Some(s) => Some((
                s,
                columns(&batch.cadence)?,
                batch.chord.transpose(0, 1)?.contiguous()?,
            )),
            None => None,
        };
        let mut xs: Vec<Tensor> = (0..t)
            .map(|i| {
                let x = (self.tok_emb.embedding(&pp.get(i)?)?
                    + self.tok_emb.embedding(&pd.get(i)?)?)?;
                let mut x = ((x + self.pos_emb.embedding(&pos.get(i)?)?)? + &cond)?;
                if let Some((s, cadence, chord)) = &strain {
                    x = (x + s.cadence_emb.embedding(&cadence.get(i)?)?)?;
                    x = (x + chord.get(i)?.matmul(&s.chord_emb)?)?;
                }
                drop(x)
            })
            .collect::<Result<_>>()?;
        for (l, layer) in self.layers.iter().enumerate() {
            let (w_ih_t, w_hh_t) = (layer.w_ih.t()?, layer.w_hh.t()?);
            let mut h = Tensor::zeros((b, self.config.hidden), DType::F32, &Device::Cpu)?;
            let mut c = h.clone();
            for x in xs.iter_mut() {
                let gates =
                    (x.matmul(&w_ih_t)?.broadcast_add(&layer.bias)? + h.matmul(&w_hh_t)?)?;
                (h, c) = cell(&gates, &c)?;
                *x = if l + 1 < self.layers.len() {
                    drop(h.clone())?
                } else {
                    h.clone()
                };
            }
        }
        let top = drop(Tensor::stack(&xs, 1)?)?;
        let pitch_logits = self.pitch_head.forward(&top)?;
        let chosen = self
            .dur_pitch
            .embedding(&batch.pitch.flatten_all()?)?
            .reshape((b, t, self.config.dur_hidden))?;
        let z = (self.dur_in.forward(&top)? + chosen)?.relu()?;
        Ok((pitch_logits, self.dur_head.forward(&z)?))
    }

    /// A fresh decoding state for a tune with header tokens `cond` (style, meter, key).
    pub fn start(&self, cond: [u32; 3]) -> Result<LstmState> {
        let z = Tensor::zeros((1, self.config.hidden), DType::F32, &Device::Cpu)?;
        let mut proj = self.layers[0].bias.unsqueeze(0)?;
        for tok in cond {
            let tok = tok as usize;
            proj = (proj + self.cond_in.i(tok..tok + 1)?)?;
        }
        Ok(LstmState {
            h: vec![z.clone(); self.layers.len()],
            c: vec![z; self.layers.len()],
            cond: proj,
        })
    }

    /// Reads the previous note (`prev_pitch`, `prev_dur` tokens; `BOS`, `PAD` before the
    /// first) and where the next note starts; returns the next note's pitch logits over
    /// the vocabulary.
    pub fn step(
        &self,
        prev_pitch: u32,
        prev_dur: u32,
        at: Onset,
        state: &mut LstmState,
    ) -> Result<Vec<f32>> {
        let pos = (at.pos as usize).min(self.config.max_pos - 1);
        let (p, d) = (prev_pitch as usize, prev_dur as usize);
        let mut x = Tensor::zeros(1, DType::F32, &Device::Cpu)?;
        for l in 0..self.layers.len() {
            let input = if l == 0 {
                let mut x = (((self.tok_in.i(p..p + 1)? + self.tok_in.i(d..d + 1)?)?
                    + self.pos_in.i(pos..pos + 1)?)?
                    + &state.cond)?;
                if let Some(s) = &self.strain {
                    let c = (at.cadence as usize).min(STRAIN_BARS as usize - 1);
                    let chord = Tensor::new(&[chord_row(at.chord)], &Device::Cpu)?;
                    x = ((x + s.cadence_in.i(c..c + 1)?)? + chord.matmul(&s.chord_in)?)?;
                }
                x
            } else {
                x.matmul(&self.w_ih_t[l])?
                    .broadcast_add(&self.layers[l].bias)?
            };
            let gates = (input + state.h[l].matmul(&self.w_hh_t[l])?)?;
            let (h, c) = cell(&gates, &state.c[l])?;
            state.h[l] = h.clone();
            state.c[l] = c;
            x = h;
        }
        self.pitch_head.forward(&x)?.squeeze(0)?.to_vec1()
    }

    /// Duration logits of the note whose pitch token is `pitch`, after [`Lstm::step`].
    pub fn duration_logits(&self, pitch: u32, state: &LstmState) -> Result<Vec<f32>> {
        let top = state.h.last().expect("at least one layer");
        let p = pitch as usize;
        let z = (self.dur_in.forward(top)? + self.dur_pitch.i(p..p + 1)?)?.relu()?;
        self.dur_head.forward(&z)?.squeeze(0)?.to_vec1()
    }

    pub(super) fn weights(&self) -> Weights<'_> {
        Weights {
            tok_in: &self.tok_in,
            pos_in: &self.pos_in,
            cond_in: &self.cond_in,
            cadence_in: self.strain.as_ref().map(|s| &s.cadence_in),
            chord_in: self.strain.as_ref().map(|s| &s.chord_in),
            layers: (self.layers.iter())
                .map(|l| (&l.w_ih, &l.w_hh, &l.bias))
                .collect(),
            pitch_head: &self.pitch_head,
            dur_in: &self.dur_in,
            dur_pitch: &self.dur_pitch,
            dur_head: &self.dur_head,
        }
    }

    pub fn parameter_count(&self) -> usize {
        let linear = |l: &Linear| l.weight().elem_count() + l.bias().map_or(0, Tensor::elem_count);
        let mut n = self.tok_emb.elem_count()
            + self.pos_emb.elem_count()
            + self.cond_emb.elem_count()
            + self.dur_pitch.elem_count();
        if let Some(s) = &self.strain {
            n += s.cadence_emb.elem_count() + s.chord_emb.elem_count();
        }
        for l in &self.layers {
            n += l.w_ih.elem_count() + l.w_hh.elem_count() + l.bias.elem_count();
        }
        n + linear(&self.pitch_head) + linear(&self.dur_in) + linear(&self.dur_head)
    }
}

/// One LSTM cell update from pre-activation gates `[B, 4H]`.
fn cell(gates: &Tensor, c: &Tensor) -> Result<(Tensor, Tensor)> {
    let h = gates.dim(D::Minus1)? / 4;
    let i = sigmoid(&gates.narrow(D::Minus1, 0, h)?)?;
    let f = sigmoid(&gates.narrow(D::Minus1, h, h)?)?;
    let g = gates.narrow(D::Minus1, 2 * h, h)?.tanh()?;
    let o = sigmoid(&gates.narrow(D::Minus1, 3 * h, h)?)?;
    let c = ((f * c)? + (i * g)?)?;
    let h = (o * c.tanh()?)?;
    Ok((h, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn tiny() -> (VarMap, Lstm) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let config = LstmConfig {
            embed: 8,
            hidden: 12,
            layers: 2,
            dur_hidden: 6,
            dropout: 0.0,
            strain_and_chord: true,
            ..Default::default()
        };
        (varmap.clone(), Lstm::new(config, vb).unwrap())
    }

    /// Five notes of one sequence: (prev pitch, prev duration, position, pitch,
    /// bars to cadence, chord).
    const NOTES: [[u32; 6]; 5] = [
        [1, 0, 0, 40, 7, 0],
        [40, 92, 6, 44, 7, 0b1001_0001],
        [44, 90, 12, 3, 6, 0b1001_0001],
        [3, 95, 24, 50, 1, 0b0010_0010_0100],
        [50, 92, 30, 2, 0, 0b1001_0001],
    ];

    fn onset(n: &[u32; 6]) -> Onset {
        Onset {
            pos: n[2] as u16,
            cadence: n[4] as u8,
            chord: n[5] as u16,
        }
    }

    fn batch() -> NoteBatch {
        let col = |k: usize| {
            let v: Vec<u32> = NOTES.iter().map(|n| n[k]).collect();
            Tensor::new(v.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap()
        };
        NoteBatch {
            cond: Tensor::new(&[[140u32, 120, 130]], &Device::Cpu).unwrap(),
            prev_pitch: col(0),
            prev_dur: col(1),
            pos: col(2),
            pitch: col(3),
            cadence: col(4),
            chord: Tensor::new(&[NOTES.map(|n| chord_row(n[5] as u16))], &Device::Cpu).unwrap(),
        }
    }

    #[test]
    fn incremental_steps_equal_full_forward() {
        let (_, model) = tiny();
        let (pl, dl) = model.forward(&batch(), false).unwrap();
        let pl: Vec<Vec<f32>> = pl.squeeze(0).unwrap().to_vec2().unwrap();
        let dl: Vec<Vec<f32>> = dl.squeeze(0).unwrap().to_vec2().unwrap();
        let mut state = model.start([140, 120, 130]).unwrap();
        let close = |a: &[f32], b: &[f32], what: &str| {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-4, "{what}: {x} vs {y}");
            }
        };
        for (i, n) in NOTES.iter().enumerate() {
            let p = model.step(n[0], n[1], onset(n), &mut state).unwrap();
            close(&p, &pl[i], &format!("pitch logits of note {i}"));
            let d = model.duration_logits(n[3], &state).unwrap();
            close(&d, &dl[i], &format!("duration logits of note {i}"));
        }
    }

    #[test]
    fn every_trainable_tensor_gets_a_gradient() {
        let (varmap, model) = tiny();
        let (pl, dl) = model.forward(&batch(), true).unwrap();
        let loss = (pl.sqr().unwrap().mean_all().unwrap() + dl.sqr().unwrap().mean_all().unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        // 5 embedding tables, 3 tensors per layer × 2, 3 linear layers × 2, dur_pitch.
        assert_eq!(data.len(), 5 + 3 * 2 + 3 * 2 + 1);
        for (name, var) in data.iter() {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{name} has a zero gradient");
        }
    }
}
