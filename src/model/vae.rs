//! A MusicVAE-style melody autoencoder over short segments (2 bars) of the token grid.
//!
//! What it is for: *variations* of a hook (encode, move a little in latent space, decode)
//! and *morphs* between two hooks (spherical interpolation of their latent codes), see
//! [`super::variation`]. The LSTM (`super::lstm`) continues melodies; this model rewrites
//! a segment it has summarised.
//!
//! - **Notes**, as the LSTM reads them: one step per note, its key-relative pitch token (or
//!   `REST`) and its duration token, plus where it starts **in the segment** (ticks from
//!   the segment's first downbeat, so the two bars are told apart).
//! - **Encoder**: a bidirectional GRU over the notes; the two final states give the
//!   posterior's mean μ and log-variance log σ² of a `latent`-dimensional code z.
//! - **Decoder**: a GRU whose initial state is `tanh(W z)` and which also reads z (and the
//!   header's style, meter and key, as the LSTM does) at every step, so the code cannot be
//!   forgotten halfway; its input is the previous note. Heads as in the LSTM: the pitch
//!   from the state, the duration from the state **and the chosen pitch**.
//!
//! GRU rather than LSTM: three gates instead of four, and one state vector to start from z
//! (MusicVAE's hierarchical LSTMs would not fit the ≤ 2.5 MB and ≤ 40 CPU-minutes budget).
//! Gates follow the PyTorch layout `[reset, update, new]`, with separate input and hidden
//! biases (the hidden one of the `new` gate is scaled by the reset gate).
//!
//! Two ways to run the decoder on the same weights: [`Vae::forward`] (a batch, teacher
//! forced, differentiable) and [`Vae::start`] + [`Vae::step`] + [`Vae::duration_logits`]
//! (one note of one segment, for sampling), checked equal by a test.

use candle_core::{D, DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder, ops::sigmoid};
use serde::{Deserialize, Serialize};

use super::tokenizer::{MAX_POS, VOCAB};

/// Shape of the model; stored in `config.json` next to the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    pub vocab: usize,
    /// Bars per segment; positions run over `bars × MAX_POS` ticks.
    pub bars: usize,
    pub embed: usize,
    /// Hidden units of each encoder direction.
    pub enc_hidden: usize,
    pub dec_hidden: usize,
    /// Dimensions of z.
    pub latent: usize,
    /// Width of the duration layer that sees the decoder state and the chosen pitch.
    pub dur_hidden: usize,
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            vocab: VOCAB,
            bars: 2,
            embed: 64,
            enc_hidden: 128,
            dec_hidden: 256,
            latent: 48,
            dur_hidden: 64,
        }
    }
}

impl VaeConfig {
    /// Rows of the position table: every tick of a segment of the longest bars.
    pub fn positions(&self) -> usize {
        self.bars * MAX_POS
    }
}

/// A padded batch of segments (`[B, T]` tensors unless said otherwise).
pub struct SegmentBatch {
    /// Header tokens of each segment: style, meter, key (`[B, 3]` u32).
    pub cond: Tensor,
    /// Each note's pitch token (or `REST`) and duration token: what the encoder reads and
    /// the decoder predicts.
    pub pitch: Tensor,
    pub dur: Tensor,
    /// The note before (`BOS`, `PAD` for the first; maybe hidden in training): what the
    /// decoder reads.
    pub prev_pitch: Tensor,
    pub prev_dur: Tensor,
    /// Where each note starts, ticks from the segment's start (u32).
    pub pos: Tensor,
    /// 1.0 on notes, 0.0 on padding (f32).
    pub mask: Tensor,
}

/// One GRU: `[3H, in]`, `[3H, H]` and two `[3H]` biases.
pub(super) struct Gru {
    pub(super) w_ih: Tensor,
    pub(super) w_hh: Tensor,
    pub(super) b_ih: Tensor,
    pub(super) b_hh: Tensor,
}

impl Gru {
    fn new(input: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        let bound = 1.0 / (hidden as f64).sqrt();
        let uniform = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            w_ih: vb.get_with_hints((3 * hidden, input), "w_ih", uniform)?,
            w_hh: vb.get_with_hints((3 * hidden, hidden), "w_hh", uniform)?,
            b_ih: vb.get_with_hints(3 * hidden, "b_ih", Init::Const(0.0))?,
            b_hh: vb.get_with_hints(3 * hidden, "b_hh", Init::Const(0.0))?,
        })
    }

    /// Input projections `x W_ihᵀ + b_ih` of every step (`[B, 3H]` each).
    fn project(&self, xs: &[Tensor]) -> Result<Vec<Tensor>> {
        let w = self.w_ih.t()?;
        xs.iter()
            .map(|x| x.matmul(&w)?.broadcast_add(&self.b_ih))
            .collect()
    }

    /// One update from the projected input `gi` and the state `h` (`[B, H]`).
    fn cell(&self, gi: &Tensor, h: &Tensor, w_hh_t: &Tensor) -> Result<Tensor> {
        let gh = h.matmul(w_hh_t)?.broadcast_add(&self.b_hh)?;
        let n = h.dim(D::Minus1)?;
        let part = |t: &Tensor, k: usize| t.narrow(D::Minus1, k * n, n);
        let reset = sigmoid(&(part(gi, 0)? + part(&gh, 0)?)?)?;
        let update = sigmoid(&(part(gi, 1)? + part(&gh, 1)?)?)?;
        let new = (part(gi, 2)? + (reset * part(&gh, 2)?)?)?.tanh()?;
        // h' = (1 − u) n + u h
        new.clone() + (update * (h - new)?)?
    }

    /// Runs over `gis` (in that order) from a zero state; a step whose `masks` row is 0
    /// (padding) keeps the state, so the final state is the one after each row's last note.
    fn last_state(&self, gis: &[Tensor], masks: &[Tensor], batch: usize) -> Result<Tensor> {
        let w_hh_t = self.w_hh.t()?;
        let hidden = self.w_hh.dim(1)?;
        let mut h = Tensor::zeros((batch, hidden), DType::F32, &Device::Cpu)?;
        for (gi, m) in gis.iter().zip(masks) {
            let next = self.cell(gi, &h, &w_hh_t)?;
            h = (&h + (next - &h)?.broadcast_mul(m)?)?;
        }
        Ok(h)
    }
}

pub struct Vae {
    pub config: VaeConfig,
    /// Pitch and duration rows (disjoint token ranges of one table), shared by both halves.
    pub(super) tok_emb: Tensor,
    pub(super) pos_emb: Tensor,
    /// Header tokens (style, meter, key), summed into one decoder conditioning vector.
    pub(super) cond_emb: Tensor,
    pub(super) enc_fwd: Gru,
    pub(super) enc_bwd: Gru,
    pub(super) to_mu: Linear,
    pub(super) to_logvar: Linear,
    /// z → the decoder's initial state, and z → an input added at every decoder step.
    pub(super) z_to_state: Linear,
    pub(super) z_to_input: Linear,
    pub(super) dec: Gru,
    pub(super) pitch_head: Linear,
    pub(super) dur_in: Linear,
    /// `[vocab, dur_hidden]`: the chosen pitch's contribution to the duration layer.
    pub(super) dur_pitch: Tensor,
    pub(super) dur_head: Linear,
}

/// Decoding state of one segment: the GRU state and the step-constant input projection
/// (z, header and bias), `[1, 3H]`.
#[derive(Clone)]
pub struct DecoderState {
    h: Tensor,
    constant_in: Tensor,
}

impl Vae {
    /// Builds the model from a `VarBuilder`: a fresh `VarMap` for training or safetensors
    /// weights for inference.
    pub fn new(config: VaeConfig, vb: VarBuilder) -> Result<Self> {
        let (e, v, l) = (config.embed, config.vocab, config.latent);
        let emb_init = Init::Randn {
            mean: 0.0,
            stdev: 0.1,
        };
        Ok(Self {
            tok_emb: vb.get_with_hints((v, e), "tok_emb", emb_init)?,
            pos_emb: vb.get_with_hints((config.positions(), e), "pos_emb", emb_init)?,
            cond_emb: vb.get_with_hints((v, e), "cond_emb", emb_init)?,
            enc_fwd: Gru::new(e, config.enc_hidden, vb.pp("enc_fwd"))?,
            enc_bwd: Gru::new(e, config.enc_hidden, vb.pp("enc_bwd"))?,
            to_mu: candle_nn::linear(2 * config.enc_hidden, l, vb.pp("to_mu"))?,
            to_logvar: candle_nn::linear(2 * config.enc_hidden, l, vb.pp("to_logvar"))?,
            z_to_state: candle_nn::linear(l, config.dec_hidden, vb.pp("z_to_state"))?,
            z_to_input: candle_nn::linear(l, e, vb.pp("z_to_input"))?,
            dec: Gru::new(e, config.dec_hidden, vb.pp("dec"))?,
            pitch_head: candle_nn::linear(config.dec_hidden, v, vb.pp("pitch_head"))?,
            dur_in: candle_nn::linear(config.dec_hidden, config.dur_hidden, vb.pp("dur_in"))?,
            dur_pitch: vb.get_with_hints((v, config.dur_hidden), "dur_pitch", emb_init)?,
            dur_head: candle_nn::linear(config.dur_hidden, v, vb.pp("dur_head"))?,
            config,
        })
    }

    /// The posterior of each segment: `(μ, log σ²)`, each `[B, latent]`.
    ///
    /// Per-step tensors rather than slices of one `[B, T, ..]` activation, for the reason
    /// given in `Lstm::forward` (candle's backward pass would pad every slice's gradient).
    pub fn encode(&self, batch: &SegmentBatch) -> Result<(Tensor, Tensor)> {
        let (b, t) = batch.pitch.dims2()?;
        let columns = |x: &Tensor| x.t()?.contiguous();
        let (pitch, dur, pos) = (
            columns(&batch.pitch)?,
            columns(&batch.dur)?,
            columns(&batch.pos)?,
        );
        let mask = batch.mask.t()?.contiguous()?;
        let xs: Vec<Tensor> = (0..t)
            .map(|i| {
                (self.tok_emb.embedding(&pitch.get(i)?)? + self.tok_emb.embedding(&dur.get(i)?)?)?
                    + self.pos_emb.embedding(&pos.get(i)?)?
            })
            .collect::<Result<_>>()?;
        let masks: Vec<Tensor> = (0..t)
            .map(|i| mask.get(i)?.unsqueeze(1))
            .collect::<Result<_>>()?;
        let forward = self
            .enc_fwd
            .last_state(&self.enc_fwd.project(&xs)?, &masks, b)?;
        let (mut back_in, mut back_masks) = (self.enc_bwd.project(&xs)?, masks);
        back_in.reverse();
        back_masks.reverse();
        let backward = self.enc_bwd.last_state(&back_in, &back_masks, b)?;
        let both = Tensor::cat(&[forward, backward], 1)?;
        Ok((self.to_mu.forward(&both)?, self.to_logvar.forward(&both)?))
    }

    /// Teacher-forced decoding of `batch` from codes `z` (`[B, latent]`): pitch and
    /// duration logits, each `[B, T, vocab]`.
    pub fn decode(&self, z: &Tensor, batch: &SegmentBatch) -> Result<(Tensor, Tensor)> {
        let (b, t) = batch.prev_pitch.dims2()?;
        let e = self.config.embed;
        let cond = self
            .cond_emb
            .embedding(&batch.cond.flatten_all()?)?
            .reshape((b, 3, e))?
            .sum(1)?;
        let constant = (cond + self.z_to_input.forward(z)?)?;
        let columns = |x: &Tensor| x.t()?.contiguous();
        let (pp, pd, pos) = (
            columns(&batch.prev_pitch)?,
            columns(&batch.prev_dur)?,
            columns(&batch.pos)?,
        );
        let xs: Vec<Tensor> = (0..t)
            .map(|i| {
                let x = (self.tok_emb.embedding(&pp.get(i)?)?
                    + self.tok_emb.embedding(&pd.get(i)?)?)?;
                (x + self.pos_emb.embedding(&pos.get(i)?)?)? + &constant
            })
            .collect::<Result<_>>()?;
        let w_hh_t = self.dec.w_hh.t()?;
        let mut h = self.z_to_state.forward(z)?.tanh()?;
        let mut states = Vec::with_capacity(t);
        for gi in self.dec.project(&xs)? {
            h = self.dec.cell(&gi, &h, &w_hh_t)?;
            states.push(h.clone());
        }
        let top = Tensor::stack(&states, 1)?;
        let pitch_logits = self.pitch_head.forward(&top)?;
        let chosen = self
            .dur_pitch
            .embedding(&batch.pitch.flatten_all()?)?
            .reshape((b, t, self.config.dur_hidden))?;
        let hidden = (self.dur_in.forward(&top)? + chosen)?.relu()?;
        Ok((pitch_logits, self.dur_head.forward(&hidden)?))
    }

    /// Encodes, samples z = μ + σ·ε (the reparameterisation, so gradients reach the
    /// encoder) and decodes: `(pitch logits, duration logits, μ, log σ²)`.
    pub fn forward(&self, batch: &SegmentBatch) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let (mu, logvar) = self.encode(batch)?;
        let eps = mu.randn_like(0.0, 1.0)?;
        let z = (&mu + (eps * (&logvar * 0.5)?.exp()?)?)?;
        let (pitch, dur) = self.decode(&z, batch)?;
        Ok((pitch, dur, mu, logvar))
    }

    /// A fresh decoding state for one segment with code `z` (`latent` values) and header
    /// tokens `cond` (style, meter, key).
    pub fn start(&self, z: &[f32], cond: [u32; 3]) -> Result<DecoderState> {
        let z = Tensor::new(z, &Device::Cpu)?.unsqueeze(0)?;
        let cond = Tensor::new(&cond, &Device::Cpu)?;
        let constant = self
            .cond_emb
            .embedding(&cond)?
            .sum_keepdim(0)?
            .add(&self.z_to_input.forward(&z)?)?;
        Ok(DecoderState {
            h: self.z_to_state.forward(&z)?.tanh()?,
            constant_in: self.dec.project(&[constant])?.remove(0),
        })
    }

    /// Reads the previous note (`BOS`, `PAD` before the first) and where the next one
    /// starts (ticks into the segment); returns the next note's pitch logits.
    pub fn step(
        &self,
        prev_pitch: u32,
        prev_dur: u32,
        pos: usize,
        state: &mut DecoderState,
    ) -> Result<Vec<f32>> {
        let pos = pos.min(self.config.positions() - 1);
        let rows = |t: &Tensor, i: usize| t.i(i..i + 1);
        let x = ((rows(&self.tok_emb, prev_pitch as usize)?
            + rows(&self.tok_emb, prev_dur as usize)?)?
            + rows(&self.pos_emb, pos)?)?;
        // The constant part already carries b_ih; add the varying part's projection only.
        let gi = (x.matmul(&self.dec.w_ih.t()?)? + &state.constant_in)?;
        state.h = self.dec.cell(&gi, &state.h, &self.dec.w_hh.t()?)?;
        self.pitch_head.forward(&state.h)?.squeeze(0)?.to_vec1()
    }

    /// Duration logits of the note whose pitch token is `pitch`, after [`Vae::step`].
    pub fn duration_logits(&self, pitch: u32, state: &DecoderState) -> Result<Vec<f32>> {
        let p = pitch as usize;
        let hidden = (self.dur_in.forward(&state.h)? + self.dur_pitch.i(p..p + 1)?)?.relu()?;
        self.dur_head.forward(&hidden)?.squeeze(0)?.to_vec1()
    }

    pub fn parameter_count(&self) -> usize {
        let linear = |l: &Linear| l.weight().elem_count() + l.bias().map_or(0, Tensor::elem_count);
        let gru = |g: &Gru| {
            [&g.w_ih, &g.w_hh, &g.b_ih, &g.b_hh]
                .map(Tensor::elem_count)
                .iter()
                .sum::<usize>()
        };
        [
            &self.tok_emb,
            &self.pos_emb,
            &self.cond_emb,
            &self.dur_pitch,
        ]
        .map(Tensor::elem_count)
        .iter()
        .sum::<usize>()
            + [&self.enc_fwd, &self.enc_bwd, &self.dec]
                .map(gru)
                .iter()
                .sum::<usize>()
            + [
                &self.to_mu,
                &self.to_logvar,
                &self.z_to_state,
                &self.z_to_input,
                &self.pitch_head,
                &self.dur_in,
                &self.dur_head,
            ]
            .map(linear)
            .iter()
            .sum::<usize>()
    }
}

/// KL(q(z|x) ‖ N(0, I)) of each segment and dimension, `[B, latent]` (nats).
pub fn kl_per_dim(mu: &Tensor, logvar: &Tensor) -> Result<Tensor> {
    // ½ (μ² + σ² − 1 − log σ²)
    ((mu.sqr()? + logvar.exp()?)? - 1.0)?
        .sub(logvar)?
        .affine(0.5, 0.0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::segment::segment_batch;
    use crate::model::tokenizer::{BOS, NoteSeq, REST, dur_token, pitch_token};
    use candle_nn::VarMap;

    pub(crate) fn tiny_config() -> VaeConfig {
        VaeConfig {
            embed: 8,
            enc_hidden: 6,
            dec_hidden: 10,
            latent: 4,
            dur_hidden: 5,
            ..VaeConfig::default()
        }
    }

    fn tiny() -> (VarMap, Vae) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        (varmap.clone(), Vae::new(tiny_config(), vb).unwrap())
    }

    /// Two segments of different lengths: (pitch, duration index) per note.
    pub(crate) fn steps() -> Vec<NoteSeq> {
        let seq = |notes: &[(u8, u8)]| {
            let mut s = NoteSeq {
                cond: [140, 120, 130],
                ..Default::default()
            };
            let (mut pp, mut pd) = (BOS, 0);
            for &(p, d) in notes {
                let tok = if p == 0 {
                    REST
                } else {
                    pitch_token(p).unwrap()
                };
                s.prev_pitch.push(pp);
                s.prev_dur.push(pd);
                s.pitch.push(tok);
                s.dur.push(dur_token(d));
                s.at.push(Default::default());
                (pp, pd) = (tok, dur_token(d));
            }
            s
        };
        vec![
            seq(&[(62, 6), (64, 6), (0, 3), (67, 3), (69, 8)]),
            seq(&[(74, 8), (72, 8)]),
        ]
    }

    #[test]
    fn encoder_and_decoder_shapes() -> Result<()> {
        let (_, vae) = tiny();
        let batch = segment_batch(&steps())?;
        let (mu, logvar) = vae.encode(&batch)?;
        assert_eq!(mu.dims(), &[2, 4]);
        assert_eq!(logvar.dims(), &[2, 4]);
        let (pitch, dur) = vae.decode(&mu, &batch)?;
        assert_eq!(pitch.dims(), &[2, 5, VOCAB]);
        assert_eq!(dur.dims(), &[2, 5, VOCAB]);
        assert_eq!(kl_per_dim(&mu, &logvar)?.dims(), &[2, 4]);
        // Padding does not leak into a short segment's code: alone, it encodes the same.
        let alone = segment_batch(&steps()[1..])?;
        let (mu_alone, _) = vae.encode(&alone)?;
        let (a, b): (Vec<f32>, Vec<f32>) = (mu.get(1)?.to_vec1()?, mu_alone.get(0)?.to_vec1()?);
        assert!(
            a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5),
            "{a:?} vs {b:?}"
        );
        Ok(())
    }

    #[test]
    fn every_trainable_tensor_gets_a_gradient() -> Result<()> {
        let (varmap, vae) = tiny();
        let batch = segment_batch(&steps())?;
        let (pitch, dur, mu, logvar) = vae.forward(&batch)?;
        let loss = ((pitch.sqr()?.mean_all()? + dur.sqr()?.mean_all()?)?
            + kl_per_dim(&mu, &logvar)?.mean_all()?)?;
        let grads = loss.backward()?;
        let data = varmap.data().lock().unwrap();
        // 4 tables, 3 GRUs × 4 tensors, 7 linear layers × 2.
        assert_eq!(data.len(), 4 + 3 * 4 + 7 * 2);
        for (name, var) in data.iter() {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = g.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(norm > 0.0, "{name} has a zero gradient");
        }
        assert_eq!(
            vae.parameter_count(),
            data.values().map(|v| v.elem_count()).sum::<usize>()
        );
        Ok(())
    }

    #[test]
    fn step_by_step_decoding_equals_the_batch_decoder() -> Result<()> {
        let (_, vae) = tiny();
        let seqs = steps();
        let batch = segment_batch(&seqs[..1])?;
        let z = Tensor::new(&[[0.5f32, -1.0, 0.25, 2.0]], &Device::Cpu)?;
        let (pl, dl) = vae.decode(&z, &batch)?;
        let (pl, dl): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
            (pl.squeeze(0)?.to_vec2()?, dl.squeeze(0)?.to_vec2()?);
        let pos: Vec<Vec<u32>> = batch.pos.to_vec2()?;
        let mut state = vae.start(&[0.5, -1.0, 0.25, 2.0], [140, 120, 130])?;
        let s = &seqs[0];
        for i in 0..s.len() {
            let p = vae.step(
                s.prev_pitch[i],
                s.prev_dur[i],
                pos[0][i] as usize,
                &mut state,
            )?;
            let d = vae.duration_logits(s.pitch[i], &state)?;
            for (x, y) in p.iter().zip(&pl[i]).chain(d.iter().zip(&dl[i])) {
                assert!((x - y).abs() < 1e-4, "note {i}: {x} vs {y}");
            }
        }
        Ok(())
    }
}
