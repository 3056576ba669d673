//! The VAE of [`super::vae`] for live use: encode a segment and decode one note per step in
//! plain Rust over the same weights, with **no system calls, no locks and no allocation
//! per note** (scratch is allocated once, [`FastVae::scratch`]).
//!
//! Why, as for the LSTM (`super::lstm_fast`): at batch 1 each step is a few small
//! matrix-vector products, and candle spends far longer around them than in them (it
//! allocates every intermediate and asks how many threads to use on every matmul). The
//! same layout is used: every matrix stored transposed, `[inputs, outputs]` row-major, so
//! a product runs over contiguous outputs with `lstm_fast`'s AVX2/FMA kernel. candle stays
//! for training; tests check this path against [`Vae::encode`] and [`Vae::step`] to 1e-4.

use super::lstm_fast::{add, matvec, row};
use super::tokenizer::NoteSeq;
use super::vae::{Gru, Vae, VaeConfig};
use candle_core::{Result, Tensor};
use candle_nn::Linear;

/// `[in, out]` weights and `[out]` bias of a linear layer.
struct Dense {
    w: Vec<f32>,
    bias: Vec<f32>,
}

/// A GRU laid out for matrix-vector products: `W_ihᵀ` `[in, 3H]`, `W_hhᵀ` `[H, 3H]`.
struct FastGru {
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
}

/// The encoder's mean and the decoder of a trained [`Vae`] (the variance head is only
/// needed in training).
pub struct FastVae {
    pub config: VaeConfig,
    tok_emb: Vec<f32>,
    pos_emb: Vec<f32>,
    cond_emb: Vec<f32>,
    enc_fwd: FastGru,
    enc_bwd: FastGru,
    to_mu: Dense,
    z_to_state: Dense,
    z_to_input: Dense,
    dec: FastGru,
    pitch_head: Dense,
    dur_in: Dense,
    dur_pitch: Vec<f32>,
    dur_head: Dense,
}

/// State and scratch of one encode or decode, allocated once and reused.
pub struct VaeScratch {
    /// Decoder state `[H]`, the step-constant input projection `[3H]` (z, header, bias).
    h: Vec<f32>,
    constant_in: Vec<f32>,
    /// Encoder states of both directions, `[2 × enc_hidden]` (forward then backward).
    enc_h: Vec<f32>,
    x: Vec<f32>,
    gi: Vec<f32>,
    gh: Vec<f32>,
    dur_hidden: Vec<f32>,
    pitch_logits: Vec<f32>,
    dur_logits: Vec<f32>,
}

impl FastVae {
    /// Copies the weights out of the candle model (once, at load time), exactly.
    pub fn from_vae(v: &Vae) -> Result<Self> {
        Ok(Self {
            config: v.config.clone(),
            tok_emb: flat(&v.tok_emb)?,
            pos_emb: flat(&v.pos_emb)?,
            cond_emb: flat(&v.cond_emb)?,
            enc_fwd: FastGru::from_gru(&v.enc_fwd)?,
            enc_bwd: FastGru::from_gru(&v.enc_bwd)?,
            to_mu: Dense::from_linear(&v.to_mu)?,
            z_to_state: Dense::from_linear(&v.z_to_state)?,
            z_to_input: Dense::from_linear(&v.z_to_input)?,
            dec: FastGru::from_gru(&v.dec)?,
            pitch_head: Dense::from_linear(&v.pitch_head)?,
            dur_in: Dense::from_linear(&v.dur_in)?,
            dur_pitch: flat(&v.dur_pitch)?,
            dur_head: Dense::from_linear(&v.dur_head)?,
        })
    }

    pub fn scratch(&self) -> VaeScratch {
        let c = &self.config;
        let three = 3 * c.dec_hidden.max(c.enc_hidden);
        VaeScratch {
            h: vec![0.0; c.dec_hidden],
            constant_in: vec![0.0; 3 * c.dec_hidden],
            enc_h: vec![0.0; 2 * c.enc_hidden],
            x: vec![0.0; c.embed.max(c.latent)],
            gi: vec![0.0; three],
            gh: vec![0.0; three],
            dur_hidden: vec![0.0; c.dur_hidden],
            pitch_logits: vec![0.0; c.vocab],
            dur_logits: vec![0.0; c.vocab],
        }
    }

    /// The posterior mean μ of one segment's notes, written into `mu` (`latent` values).
    /// `pos[i]` is where note `i` starts, ticks into the segment.
    pub fn encode_mean(&self, notes: &NoteSeq, pos: &[u32], s: &mut VaeScratch, mu: &mut [f32]) {
        let e = self.config.embed;
        let n = self.config.enc_hidden;
        let (fwd, bwd) = s.enc_h.split_at_mut(n);
        fwd.fill(0.0);
        bwd.fill(0.0);
        let input = |i: usize, x: &mut [f32]| {
            let p = (pos[i] as usize).min(self.config.positions() - 1);
            x.copy_from_slice(row(&self.tok_emb, notes.pitch[i] as usize, e));
            add(x, row(&self.tok_emb, notes.dur[i] as usize, e));
            add(x, row(&self.pos_emb, p, e));
        };
        let x = &mut s.x[..e];
        for i in 0..notes.len() {
            input(i, x);
            self.enc_fwd.step(x, None, fwd, &mut s.gi, &mut s.gh);
        }
        for i in (0..notes.len()).rev() {
            input(i, x);
            self.enc_bwd.step(x, None, bwd, &mut s.gi, &mut s.gh);
        }
        self.to_mu.forward(&s.enc_h, mu);
    }

    /// Starts decoding a segment from code `z` with header tokens `cond` (style, meter, key).
    pub fn start(&self, z: &[f32], cond: [u32; 3], s: &mut VaeScratch) {
        let e = self.config.embed;
        let x = &mut s.x[..e];
        self.z_to_input.forward(z, x);
        for c in cond {
            add(x, row(&self.cond_emb, c as usize, e));
        }
        // The constant part of every step's input projection, input bias included.
        s.constant_in.copy_from_slice(&self.dec.b_ih);
        matvec(&self.dec.w_ih, x, &mut s.constant_in);
        self.z_to_state.forward(z, &mut s.h);
        for v in s.h.iter_mut() {
            *v = v.tanh();
        }
    }

    /// Reads the previous note (`BOS`, `PAD` before the first) and where the next one
    /// starts (ticks into the segment); returns the next note's pitch logits.
    pub fn step<'s>(
        &self,
        prev_pitch: u32,
        prev_dur: u32,
        pos: usize,
        s: &'s mut VaeScratch,
    ) -> &'s [f32] {
        let e = self.config.embed;
        let pos = pos.min(self.config.positions() - 1);
        let x = &mut s.x[..e];
        x.copy_from_slice(row(&self.tok_emb, prev_pitch as usize, e));
        add(x, row(&self.tok_emb, prev_dur as usize, e));
        add(x, row(&self.pos_emb, pos, e));
        self.dec
            .step(x, Some(&s.constant_in), &mut s.h, &mut s.gi, &mut s.gh);
        self.pitch_head.forward(&s.h, &mut s.pitch_logits);
        &s.pitch_logits
    }

    /// Duration logits of the note whose pitch token is `pitch`, after [`FastVae::step`].
    pub fn duration_logits<'s>(&self, pitch: u32, s: &'s mut VaeScratch) -> &'s [f32] {
        self.dur_in.forward(&s.h, &mut s.dur_hidden);
        let chosen = row(&self.dur_pitch, pitch as usize, self.config.dur_hidden);
        for (z, p) in s.dur_hidden.iter_mut().zip(chosen) {
            *z = (*z + p).max(0.0);
        }
        self.dur_head.forward(&s.dur_hidden, &mut s.dur_logits);
        &s.dur_logits
    }
}

impl FastGru {
    fn from_gru(g: &Gru) -> Result<Self> {
        Ok(Self {
            w_ih: flat(&g.w_ih.t()?)?,
            w_hh: flat(&g.w_hh.t()?)?,
            b_ih: flat(&g.b_ih)?,
            b_hh: flat(&g.b_hh)?,
        })
    }

    /// One update of `h` from input `x`. `input_constant`, when given, replaces the input
    /// bias (it already holds it, plus a projection that is the same at every step).
    fn step(
        &self,
        x: &[f32],
        input_constant: Option<&[f32]>,
        h: &mut [f32],
        gi: &mut [f32],
        gh: &mut [f32],
    ) {
        let n = h.len();
        let (gi, gh) = (&mut gi[..3 * n], &mut gh[..3 * n]);
        gi.copy_from_slice(input_constant.unwrap_or(&self.b_ih));
        matvec(&self.w_ih, x, gi);
        gh.copy_from_slice(&self.b_hh);
        matvec(&self.w_hh, h, gh);
        let sigmoid = |x: f32| 1.0 / ((-x).exp() + 1.0);
        for j in 0..n {
            let reset = sigmoid(gi[j] + gh[j]);
            let update = sigmoid(gi[n + j] + gh[n + j]);
            let new = (gi[2 * n + j] + reset * gh[2 * n + j]).tanh();
            h[j] = new + update * (h[j] - new);
        }
    }
}

impl Dense {
    fn from_linear(l: &Linear) -> Result<Self> {
        let out = l.weight().dim(0)?;
        Ok(Self {
            w: flat(&l.weight().t()?)?,
            bias: match l.bias() {
                Some(b) => flat(b)?,
                None => vec![0.0; out],
            },
        })
    }

    /// `out = x · w + bias`.
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        out.copy_from_slice(&self.bias);
        matvec(&self.w, x, out);
    }
}

/// A tensor's values in row-major order.
fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::segment::{onsets, segment_batch};
    use crate::model::vae::tests::tiny_config;
    use crate::music::SeedRng;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    /// A VAE with random weights everywhere (biases too, so every term is exercised).
    fn random_vae() -> Vae {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let vae = Vae::new(tiny_config(), vb).unwrap();
        let mut rng = SeedRng::new(3);
        for var in varmap.all_vars() {
            let v: Vec<f32> = (0..var.elem_count())
                .map(|_| rng.next_f32() * 0.4 - 0.2)
                .collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        vae
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 1e-4, "[{i}]: {x} vs {y}");
        }
    }

    #[test]
    fn encode_and_decode_match_candle() {
        let vae = random_vae();
        let fast = FastVae::from_vae(&vae).unwrap();
        let mut s = fast.scratch();
        for seq in crate::model::vae::tests::steps() {
            let (mu, _) = vae
                .encode(&segment_batch(std::slice::from_ref(&seq)).unwrap())
                .unwrap();
            let mut got = vec![0.0; fast.config.latent];
            fast.encode_mean(&seq, &onsets(&seq), &mut s, &mut got);
            close(&got, &mu.to_vec2::<f32>().unwrap()[0]);

            let z = &got;
            let mut state = vae.start(z, seq.cond).unwrap();
            fast.start(z, seq.cond, &mut s);
            let pos = onsets(&seq);
            for (i, &at) in pos.iter().enumerate() {
                let (pp, pd) = (seq.prev_pitch[i], seq.prev_dur[i]);
                let want = vae.step(pp, pd, at as usize, &mut state).unwrap();
                close(fast.step(pp, pd, at as usize, &mut s), &want);
                let want = vae.duration_logits(seq.pitch[i], &state).unwrap();
                close(fast.duration_logits(seq.pitch[i], &mut s), &want);
            }
        }
    }
}
