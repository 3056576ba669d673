//! The LSTM of [`super::lstm`] for live decoding: one note of one sequence per step, in plain
//! Rust over the same weights, with **no system calls, no locks and no allocation per note**.
//!
//! Why not candle here: at batch 1 a step is a handful of matrix-vector products, and
//! candle 0.11 asks `utils::get_num_threads()` on every CPU matmul, which (unless
//! `RAYON_NUM_THREADS` is set, and a plugin cannot set it inside a host) reads
//! `/proc/cpuinfo`, then splits the product across rayon and waits on futexes. A plugin's
//! worker thread must not do that. candle stays for training and as the reference forward
//! ([`super::lstm::Lstm::forward`]); tests check this path against it to 1e-4.
//!
//! Layout, chosen for the cache: each weight matrix is stored transposed, row-major
//! `[inputs, outputs]` f32, so a product is a sum of input rows scaled by the input
//! (`out += x[i] * w[i, ..]`): the inner loop runs over contiguous outputs, which the
//! compiler vectorises without reassociating a reduction, and each weight is read once.
//! The four gates `[input, forget, cell, output]` are contiguous blocks of one row. A
//! layer above the first reads `[x; h]` through one stacked `[W_ih; W_hh]` matrix, and
//! since the states of consecutive layers sit next to each other in one buffer, `[x; h]`
//! is a slice of it with no copy. The first layer's input projections of every table row
//! come precomputed from [`super::lstm::Lstm`], so reading a note costs three table rows.
//!
//! The step is bound by reading the weights (≈ 3.4 MB f32 for the 2×256 model per note,
//! more than a core's L2 cache, so every note streams them from L3). Three things cut it:
//! - **bf16 weights** ([`Precision::Bf16`]): the matrices are stored as the top 16 bits of
//!   each f32 (rounded to nearest by candle), half the bytes; products still accumulate in
//!   f32. Widening bf16 to f32 is a shift, so the same loop vectorises for both.
//! - **int8 weights** ([`Precision::Int8`], [`super::int8`]): a quarter of the bytes, one
//!   f32 scale per output column, exact integer sums (`vpmaddwd`); 0.91 MB per note for
//!   the 2×256 model fits in a core's L2 cache.
//! - **Fused multiply-add**: on x86-64 with AVX2 and FMA (every x86-64 CPU since 2013) the
//!   products run as AVX2 FMA; on aarch64 FMA is native. The portable loop is the same
//!   code, so both round identically and a seed gives the same notes on every such CPU.
//!   Only x86-64 CPUs without FMA fall back to a separate multiply and add (whose results
//!   may differ in the last bit).

use super::int8::Int8Matrix;
use super::lstm::{Lstm, LstmConfig};
use super::tokenizer::{Onset, STRAIN_BARS};
use candle_core::{DType, Result, Tensor};
use std::sync::OnceLock;

/// How the weight matrices are stored. The tables read a row per note (token, position,
/// chord inputs) and the biases stay f32 either way: they are a few KB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The trained weights exactly: matches candle's forward to 1e-4 (the tests hold it).
    #[default]
    F32,
    /// Weights rounded to bfloat16: half the bytes to read per note.
    Bf16,
    /// Weights quantised to int8 with one f32 scale per output column: about a quarter of
    /// the bytes (0.91 MB per note for the 2×256 model, which fits in a core's L2 cache).
    Int8,
}

/// The decode-only network: the weights of an [`Lstm`], laid out for matrix-vector products.
pub struct FastLstm {
    pub config: LstmConfig,
    /// First-layer input projections (no bias) of every token row, `[vocab, 4H]`.
    tok_in: Vec<f32>,
    /// Same for every bar position, `[max_pos, 4H]`.
    pos_in: Vec<f32>,
    /// Same for the header tokens, `[vocab, 4H]`.
    cond_in: Vec<f32>,
    /// Format 3: same for bars-to-cadence (`[8, 4H]`) and the chord inputs (`[13, 4H]`).
    cadence_in: Vec<f32>,
    chord_in: Vec<f32>,
    layers: Vec<Layer>,
    precision: Precision,
    pitch_head: Dense,
    dur_in: Dense,
    /// The chosen pitch's contribution to the duration layer, `[vocab, dur_hidden]`.
    dur_pitch: Vec<f32>,
    dur_head: Dense,
}

struct Layer {
    /// `W_hh^T` (`[H, 4H]`) for the first layer, `[W_ih^T; W_hh^T]` (`[2H, 4H]`) above it.
    w: Matrix,
    bias: Vec<f32>,
}

/// A linear layer: `w` is `[in, out]` row-major.
struct Dense {
    w: Matrix,
    bias: Vec<f32>,
}

/// A row-major `[inputs, outputs]` matrix in its [`Precision`] (`w`), the same weights in
/// [`STRIP`]-column strips for one sequence's step (`strips`), and, once the first batched
/// step needs it, a packed copy for the batched kernel (`panels`, [`pack`]).
/// The columns past the last whole strip are kept row-major on their own (`tail`), so
/// they too are read as one contiguous run.
enum Matrix {
    F32 {
        w: Vec<f32>,
        strips: Vec<f32>,
        tail: Vec<f32>,
        panels: OnceLock<Vec<f32>>,
    },
    /// bfloat16 bits: the top half of each f32; strips hold two per word ([`bf16_strips`]).
    Bf16 {
        w: Vec<u16>,
        strips: Vec<u32>,
        tail: Vec<u16>,
        panels: OnceLock<Vec<u16>>,
    },
    /// int8 weights and integer products ([`Int8Matrix`]).
    Int8(Int8Matrix),
}

/// Recurrent state and scratch of one sequence, allocated once ([`FastLstm::state`]) and
/// reused for every phrase ([`FastLstm::start`]).
#[derive(Default)]
pub struct FastState {
    /// `[layers, H]` each; layer `l`'s input is `h[l - 1]`, right before `h[l]`.
    h: Vec<f32>,
    c: Vec<f32>,
    /// The conditioning's first-layer projection, first-layer bias included.
    cond: Vec<f32>,
    /// The current layer's input projection and gate pre-activations, `[4H]` each.
    input: Vec<f32>,
    gates: Vec<f32>,
    dur_hidden: Vec<f32>,
    pitch_logits: Vec<f32>,
    dur_logits: Vec<f32>,
}

/// What one sequence reads in a step (see [`FastLstm::step`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInput {
    pub prev_pitch: u32,
    pub prev_dur: u32,
    pub at: Onset,
}

impl FastState {
    /// The pitch logits of the last step (valid until the next one).
    pub fn pitch_logits(&self) -> &[f32] {
        &self.pitch_logits
    }
}

impl FastLstm {
    /// Copies the weights out of the candle model (once, at load time), exactly.
    pub fn from_lstm(m: &Lstm) -> Result<Self> {
        Self::with_precision(m, Precision::F32)
    }

    /// Copies the weights out of the candle model, the matrices stored in `precision`.
    pub fn with_precision(m: &Lstm, precision: Precision) -> Result<Self> {
        let w = m.weights();
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let matrix = |t: &Tensor| -> Result<Matrix> {
            let t = t.t()?.contiguous()?;
            let n = t.dim(1)?;
            Ok(match precision {
                Precision::F32 => Matrix::f32(flat(&t)?, n),
                Precision::Bf16 => {
                    // candle rounds to nearest; the low 16 bits of the widened value are 0.
                    let rounded = flat(&t.to_dtype(DType::BF16)?.to_dtype(DType::F32)?)?;
                    let bits = rounded.iter().map(|x| (x.to_bits() >> 16) as u16);
                    Matrix::bf16(bits.collect(), n)
                }
                Precision::Int8 => Matrix::Int8(Int8Matrix::quantise(&flat(&t)?, n)),
            })
        };
        let mut layers = Vec::new();
        for (l, (w_ih, w_hh, bias)) in w.layers.iter().enumerate() {
            // `[W_ih; W_hh]^T` above the first layer, which reads `[x; h]`.
            let stacked = if l == 0 {
                (*w_hh).clone()
            } else {
                Tensor::cat(&[*w_ih, *w_hh], 1)?
            };
            layers.push(Layer {
                w: matrix(&stacked)?,
                bias: flat(bias)?,
            });
        }
        let dense = |l: &candle_nn::Linear| -> Result<Dense> {
            let bias = l.bias().expect("linear layers are built with a bias");
            Ok(Dense {
                w: matrix(l.weight())?,
                bias: flat(bias)?,
            })
        };
        Ok(Self {
            config: m.config.clone(),
            tok_in: flat(w.tok_in)?,
            pos_in: flat(w.pos_in)?,
            cond_in: flat(w.cond_in)?,
            cadence_in: w.cadence_in.map(flat).transpose()?.unwrap_or_default(),
            chord_in: w.chord_in.map(flat).transpose()?.unwrap_or_default(),
            layers,
            precision,
            pitch_head: dense(w.pitch_head)?,
            dur_in: dense(w.dur_in)?,
            dur_pitch: flat(w.dur_pitch)?,
            dur_head: dense(w.dur_head)?,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Bytes of weights read per note (the matrices; table rows are a few KB).
    pub fn bytes_per_note(&self) -> usize {
        let dense = [&self.pitch_head, &self.dur_in, &self.dur_head];
        let matrices = self.layers.iter().map(|l| &l.w);
        matrices.chain(dense.map(|d| &d.w)).map(Matrix::bytes).sum()
    }

    /// Buffers for one sequence; call [`FastLstm::start`] before the first step.
    pub fn state(&self) -> FastState {
        let c = &self.config;
        let (n, g) = (c.layers * c.hidden, 4 * c.hidden);
        FastState {
            h: vec![0.0; n],
            c: vec![0.0; n],
            cond: vec![0.0; g],
            input: vec![0.0; g],
            gates: vec![0.0; g],
            dur_hidden: vec![0.0; c.dur_hidden],
            pitch_logits: vec![0.0; c.vocab],
            dur_logits: vec![0.0; c.vocab],
        }
    }

    /// Resets `s` for a tune with header tokens `cond` (style, meter, key).
    pub fn start(&self, cond: [u32; 3], s: &mut FastState) {
        s.h.fill(0.0);
        s.c.fill(0.0);
        s.cond.copy_from_slice(&self.layers[0].bias);
        for tok in cond {
            add(
                &mut s.cond,
                row(&self.cond_in, tok as usize, 4 * self.config.hidden),
            );
        }
    }

    /// Reads the previous note (`prev_pitch`, `prev_dur` tokens; `BOS`, `PAD` before the
    /// first) and where the next note starts; returns the next note's pitch logits over
    /// the vocabulary (valid until the next call).
    pub fn step<'s>(
        &self,
        prev_pitch: u32,
        prev_dur: u32,
        at: Onset,
        s: &'s mut FastState,
    ) -> &'s [f32] {
        let hid = self.config.hidden;
        self.first_input(prev_pitch, prev_dur, at, s);
        for (l, layer) in self.layers.iter().enumerate() {
            // Gates: recurrent product (and, above layer 0, input product) plus input.
            s.gates.fill(0.0);
            let xh = &s.h[l.saturating_sub(1) * hid..(l + 1) * hid];
            layer.w.matvec(xh, &mut s.gates);
            self.update_layer(l, s);
        }
        let top = &s.h[(self.config.layers - 1) * hid..];
        self.pitch_head.forward(top, &mut s.pitch_logits);
        &s.pitch_logits
    }

    /// [`FastLstm::step`] for several sequences at once (`inputs[b]` is read by
    /// `states[b]`): each weight matrix is read once for the whole batch, as a
    /// matrix-matrix product, instead of once per sequence. Every sequence's logits are
    /// bit for bit those of its own [`FastLstm::step`] (the products add the same terms in
    /// the same order); read them with [`FastState::pitch_logits`].
    ///
    /// Unlike `step` it allocates (two small vectors of slices per layer): it is for the
    /// server's decode threads, not the plugin's.
    pub fn step_batch(&self, inputs: &[StepInput], states: &mut [FastState]) {
        assert_eq!(inputs.len(), states.len(), "one input per sequence");
        let hid = self.config.hidden;
        for (input, s) in inputs.iter().zip(states.iter_mut()) {
            self.first_input(input.prev_pitch, input.prev_dur, input.at, s);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let span = l.saturating_sub(1) * hid..(l + 1) * hid;
            let (xs, mut outs): (Vec<&[f32]>, Vec<&mut [f32]>) = states
                .iter_mut()
                .map(|s| {
                    s.gates.fill(0.0);
                    (&s.h[span.clone()], &mut s.gates[..])
                })
                .unzip();
            layer.w.matmat(&xs, &mut outs);
            for s in states.iter_mut() {
                self.update_layer(l, s);
            }
        }
        let top = (self.config.layers - 1) * hid..;
        let (xs, mut outs): (Vec<&[f32]>, Vec<&mut [f32]>) = states
            .iter_mut()
            .map(|s| {
                s.pitch_logits.fill(0.0);
                (&s.h[top.clone()], &mut s.pitch_logits[..])
            })
            .unzip();
        self.pitch_head.w.matmat(&xs, &mut outs);
        for s in states.iter_mut() {
            add(&mut s.pitch_logits, &self.pitch_head.bias);
        }
    }

    /// Layer 0's input for the next step into `s.input`: precomputed rows plus the
    /// conditioning (same sum order as the candle step).
    fn first_input(&self, prev_pitch: u32, prev_dur: u32, at: Onset, s: &mut FastState) {
        let g = 4 * self.config.hidden;
        let pos = (at.pos as usize).min(self.config.max_pos - 1);
        s.input
            .copy_from_slice(row(&self.tok_in, prev_pitch as usize, g));
        add(&mut s.input, row(&self.tok_in, prev_dur as usize, g));
        add(&mut s.input, row(&self.pos_in, pos, g));
        add(&mut s.input, &s.cond);
        if self.config.strain_and_chord {
            let cadence = (at.cadence as usize).min(STRAIN_BARS as usize - 1);
            add(&mut s.input, row(&self.cadence_in, cadence, g));
            // The chord's multi-hot row times its projection: the rows of its pitch
            // classes, or the "no chord" row.
            let chord = at.chord & 0xfff;
            if chord == 0 {
                add(&mut s.input, row(&self.chord_in, 12, g));
            }
            for pc in (0..12).filter(|pc| chord >> pc & 1 == 1) {
                add(&mut s.input, row(&self.chord_in, pc, g));
            }
        }
    }

    /// Layer `l`'s cell update once its products are in `s.gates`.
    fn update_layer(&self, l: usize, s: &mut FastState) {
        let hid = self.config.hidden;
        if l > 0 {
            s.input.copy_from_slice(&self.layers[l].bias);
        }
        add(&mut s.gates, &s.input);
        let span = l * hid..(l + 1) * hid;
        cell(&s.gates, &mut s.c[span.clone()], &mut s.h[span]);
    }

    /// Duration logits of the note whose pitch token is `pitch`, after [`FastLstm::step`].
    pub fn duration_logits<'s>(&self, pitch: u32, s: &'s mut FastState) -> &'s [f32] {
        let hid = self.config.hidden;
        let top = &s.h[(self.config.layers - 1) * hid..];
        self.dur_in.forward(top, &mut s.dur_hidden);
        let chosen = row(&self.dur_pitch, pitch as usize, self.config.dur_hidden);
        for (z, p) in s.dur_hidden.iter_mut().zip(chosen) {
            *z = (*z + p).max(0.0);
        }
        self.dur_head.forward(&s.dur_hidden, &mut s.dur_logits);
        &s.dur_logits
    }
}

impl Dense {
    /// `out = x · w + bias`.
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        out.fill(0.0);
        self.w.matvec(x, out);
        add(out, &self.bias);
    }
}

impl Matrix {
    fn f32(w: Vec<f32>, n: usize) -> Self {
        Matrix::F32 {
            strips: pack(&w, n, STRIP),
            tail: tail_columns(&w, n),
            w,
            panels: OnceLock::new(),
        }
    }

    fn bf16(w: Vec<u16>, n: usize) -> Self {
        Matrix::Bf16 {
            strips: bf16_strips(&w, n),
            tail: tail_columns(&w, n),
            w,
            panels: OnceLock::new(),
        }
    }

    /// `out += x · self`, with AVX2 FMA where available.
    fn matvec(&self, x: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2 and FMA (checked just above; std caches it).
                unsafe { self.matvec_avx2_fma(x, out) };
            } else {
                self.matvec_strips::<false>(x, out);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.matvec_strips::<true>(x, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn matvec_avx2_fma(&self, x: &[f32], out: &mut [f32]) {
        self.matvec_strips::<true>(x, out);
    }

    /// The strips in registers, then the tail's rows. Each output adds `x[i]·w[i]` for `i`
    /// in order, as [`matvec_rows`] does over the whole matrix: same bits.
    #[inline(always)]
    fn matvec_strips<const FUSED: bool>(&self, x: &[f32], out: &mut [f32]) {
        let (whole, tail_out) = out.split_at_mut(out.len() / STRIP * STRIP);
        match self {
            Matrix::F32 { strips, tail, .. } => {
                f32_strip_product::<FUSED>(strips, x, whole);
                matvec_rows::<f32, FUSED>(tail, x, tail_out);
            }
            Matrix::Bf16 { strips, tail, .. } => {
                bf16_strip_product::<FUSED>(strips, x, whole);
                matvec_rows::<u16, FUSED>(tail, x, tail_out);
            }
            Matrix::Int8(m) => m.matvec(x, out),
        }
    }

    /// `outs[b] += xs[b] · self` for every `b`: whole [`GROUP`]s of sequences by the
    /// batched kernel, the rest one by one by the one-sequence kernel, which is the faster
    /// for fewer than a group (the batched kernel with one sequence took twice as long).
    fn matmat(&self, xs: &[&[f32]], outs: &mut [&mut [f32]]) {
        let whole = xs.len() / GROUP * GROUP;
        let (x_groups, x_rest) = xs.split_at(whole);
        let (o_groups, o_rest) = outs.split_at_mut(whole);
        if whole > 0 {
            match self {
                Matrix::F32 { w, panels, .. } => matmat(w, panels, x_groups, o_groups),
                Matrix::Bf16 { w, panels, .. } => matmat(w, panels, x_groups, o_groups),
                // One sequence at a time: the batched kernel has no int8 version.
                Matrix::Int8(m) => {
                    for (x, o) in x_groups.iter().zip(o_groups) {
                        m.matvec(x, o);
                    }
                }
            }
        }
        for (x, o) in x_rest.iter().zip(o_rest) {
            self.matvec(x, o);
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Matrix::F32 { w, .. } => 4 * w.len(),
            Matrix::Bf16 { w, .. } => 2 * w.len(),
            Matrix::Int8(m) => m.bytes(),
        }
    }
}

/// Columns per strip of the one-sequence kernel: 64 f32 accumulators are 8 AVX2
/// registers, enough independent FMA chains to keep both FMA units busy while a strip's
/// rows stream past once (one contiguous run, no loads or stores of `out` per row).
const STRIP: usize = 64;

/// [`pack`] into [`STRIP`]-column strips for bf16, two weights per word: word `l` of a strip's row holds column
/// `l` in its low half and column `l + STRIP / 2` in its high half, so one load and a
/// shift or a mask widen 16 weights into two f32 vectors.
fn bf16_strips(w: &[u16], n: usize) -> Vec<u32> {
    const HALF: usize = STRIP / 2;
    let k = w.len() / n.max(1);
    let mut strips = Vec::with_capacity(n / STRIP * HALF * k);
    for j in (0..n / STRIP * STRIP).step_by(STRIP) {
        for i in 0..k {
            let row = &w[i * n + j..i * n + j + STRIP];
            let (low, high) = row.split_at(HALF);
            strips.extend(
                low.iter()
                    .zip(high)
                    .map(|(&l, &h)| l as u32 | (h as u32) << 16),
            );
        }
    }
    strips
}

/// The columns of row-major `[k, n]` weights past the last whole strip, row-major `[k, n % STRIP]`.
fn tail_columns<W: Weight>(w: &[W], n: usize) -> Vec<W> {
    let from = n / STRIP * STRIP;
    (w.chunks_exact(n.max(1)))
        .flat_map(|row| row[from..].iter().copied())
        .collect()
}

/// `out += x · strips` over whole strips ([`pack`]ed [`STRIP`] columns wide).
#[inline(always)]
fn f32_strip_product<const FUSED: bool>(strips: &[f32], x: &[f32], out: &mut [f32]) {
    let k = x.len();
    for (strip, o) in strips
        .chunks_exact(STRIP * k)
        .zip(out.chunks_exact_mut(STRIP))
    {
        let mut acc = [0f32; STRIP];
        acc.copy_from_slice(o);
        for (row, &xi) in strip.chunks_exact(STRIP).zip(x) {
            prefetch_ahead(row);
            for l in 0..STRIP {
                acc[l] = madd::<FUSED>(acc[l], xi, row[l]);
            }
        }
        o.copy_from_slice(&acc);
    }
}

/// Asks for the weights [`PREFETCH_ROWS`] rows past `row` of a strip (a hint; never faults).
#[inline(always)]
fn prefetch_ahead<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let ahead = row
            .as_ptr()
            .wrapping_add(PREFETCH_ROWS * row.len())
            .cast::<i8>();
        for line in 0..std::mem::size_of_val(row) / 64 {
            // SAFETY: a prefetch is only a hint, valid for any address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line)) };
        }
    }
}

/// 8 rows (2 KB of f32 strip) ahead measured 55–64 µs per note against 64–72 µs without
/// prefetching (2×256 model); 16 rows was no better.
const PREFETCH_ROWS: usize = 8;

/// `out += x · strips` over whole strips ([`bf16_strips`]).
#[inline(always)]
fn bf16_strip_product<const FUSED: bool>(strips: &[u32], x: &[f32], out: &mut [f32]) {
    const HALF: usize = STRIP / 2;
    let k = x.len();
    for (strip, o) in strips
        .chunks_exact(HALF * k)
        .zip(out.chunks_exact_mut(STRIP))
    {
        let (mut low, mut high) = ([0f32; HALF], [0f32; HALF]);
        low.copy_from_slice(&o[..HALF]);
        high.copy_from_slice(&o[HALF..]);
        for (row, &xi) in strip.chunks_exact(HALF).zip(x) {
            prefetch_ahead(row);
            for l in 0..HALF {
                low[l] = madd::<FUSED>(low[l], xi, f32::from_bits(row[l] << 16));
                high[l] = madd::<FUSED>(high[l], xi, f32::from_bits(row[l] & 0xffff_0000));
            }
        }
        o[..HALF].copy_from_slice(&low);
        o[HALF..].copy_from_slice(&high);
    }
}

/// `out[j] += x · w[.., j]` for the columns `j >= from` of row-major `w`, one at a time.
#[inline(always)]
fn columns_from<W: Weight, const FUSED: bool>(w: &[W], x: &[f32], out: &mut [f32], from: usize) {
    let n = out.len();
    for (j, o) in out.iter_mut().enumerate().skip(from) {
        for (i, &xi) in x.iter().enumerate() {
            *o = madd::<FUSED>(*o, xi, w[i * n + j].widen());
        }
    }
}

/// A stored weight, widened to f32 for the product.
pub(super) trait Weight: Copy {
    fn widen(self) -> f32;

    /// [`strip`] for a whole [`GROUP`] of sequences.
    #[inline(always)]
    fn group_strip<const FUSED: bool>(
        panel: &[Self],
        j: usize,
        xt: &[[f32; GROUP]],
        outs: &mut [&mut [f32]],
    ) {
        strip::<Self, FUSED, GROUP>(panel, j, xt, outs);
    }
}

impl Weight for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    /// With FMA on x86-64, written in AVX2 intrinsics: the generic [`strip`] reached about
    /// a third of the FMA units' rate here.
    #[inline(always)]
    fn group_strip<const FUSED: bool>(
        panel: &[f32],
        j: usize,
        xt: &[[f32; GROUP]],
        outs: &mut [&mut [f32]],
    ) {
        #[cfg(target_arch = "x86_64")]
        if FUSED {
            // SAFETY: on x86-64 the fused kernels run only from `matmat_avx2_fma`, after
            // the CPU was found to have AVX2 and FMA.
            unsafe { strip_group_f32_avx2(panel, j, xt, outs) };
            return;
        }
        strip::<f32, FUSED, GROUP>(panel, j, xt, outs);
    }
}

/// [`strip`] for [`GROUP`] = 4 sequences of f32 weights, [`LANES`] = 16 columns: eight
/// accumulators in registers; each row is two weight loads and four broadcasts for eight
/// FMAs. Same sums in the same order, one rounding per FMA, so the same bits as [`strip`]
/// and the one-sequence step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn strip_group_f32_avx2(panel: &[f32], j: usize, xt: &[[f32; GROUP]], outs: &mut [&mut [f32]]) {
    use std::arch::x86_64::*;
    const _: () = assert!(GROUP == 4 && LANES == 16);
    assert!(outs.len() == GROUP && panel.len() >= xt.len() * LANES);
    assert!(outs.iter().all(|o| o.len() >= j + LANES));
    // SAFETY: every load and store below is within the slices checked above (a row of
    // LANES weights, LANES outputs from column j).
    unsafe {
        let mut lo = [_mm256_setzero_ps(); GROUP];
        let mut hi = [_mm256_setzero_ps(); GROUP];
        for b in 0..GROUP {
            lo[b] = _mm256_loadu_ps(outs[b].as_ptr().add(j));
            hi[b] = _mm256_loadu_ps(outs[b].as_ptr().add(j + 8));
        }
        for (i, x) in xt.iter().enumerate() {
            let wl = _mm256_loadu_ps(panel.as_ptr().add(i * LANES));
            let wh = _mm256_loadu_ps(panel.as_ptr().add(i * LANES + 8));
            for b in 0..GROUP {
                let xb = _mm256_set1_ps(x[b]);
                lo[b] = _mm256_fmadd_ps(xb, wl, lo[b]);
                hi[b] = _mm256_fmadd_ps(xb, wh, hi[b]);
            }
        }
        for b in 0..GROUP {
            _mm256_storeu_ps(outs[b].as_mut_ptr().add(j), lo[b]);
            _mm256_storeu_ps(outs[b].as_mut_ptr().add(j + 8), hi[b]);
        }
    }
}

impl Weight for u16 {
    /// bfloat16 is the top half of an f32: widening is exact.
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits((self as u32) << 16)
    }
}

/// Row `i` of a row-major table with rows of `n`.
pub(super) fn row(table: &[f32], i: usize, n: usize) -> &[f32] {
    &table[i * n..(i + 1) * n]
}

/// `acc += x`, element by element.
pub(super) fn add(acc: &mut [f32], x: &[f32]) {
    for (a, x) in acc.iter_mut().zip(x) {
        *a += x;
    }
}

/// One LSTM cell update from pre-activation gates `[i | f | g | o]`, in place on `c`, `h`,
/// vectorised with AVX2 and FMA where available (the same arithmetic either way).
fn cell(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above; std caches the answer).
        return unsafe { cell_avx2_fma(gates, c, h) };
    }
    cell_lanes(gates, c, h)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn cell_avx2_fma(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
    cell_lanes(gates, c, h)
}

#[inline(always)]
fn cell_lanes(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
    let n = c.len();
    let (i, rest) = gates.split_at(n);
    let (f, rest) = rest.split_at(n);
    let (g, o) = rest.split_at(n);
    for (((((c, h), i), f), g), o) in c.iter_mut().zip(h).zip(i).zip(f).zip(g).zip(o) {
        *c = sigmoid(*f) * *c + sigmoid(*i) * tanh(*g);
        *h = sigmoid(*o) * tanh(*c);
    }
}

/// The logistic function through [`exp`] (so a loop of it vectorises).
#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (exp(-x) + 1.0)
}

/// tanh through [`exp`]: 1 − 2 / (e^{2x} + 1), within 1e-7 of libm's.
#[inline(always)]
pub(super) fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// e^x to about 2 ulp, in multiply-adds and bit operations only: a loop of it vectorises
/// (libm's `expf` and `tanhf` are calls, and were a third of a note's time), and every
/// CPU computes the same bits. Inputs are clamped to ±87, where f32's exponent still fits.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n · LN2_HI is exact (Cody–Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 87.0);
    let n = x.mul_add(LOG2_E, ROUND) - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    // e^r on |r| ≤ ln 2 / 2: Taylor terms to r^6 (Cephes' expf coefficients).
    let p = 1.987_569_1e-4_f32
        .mul_add(r, 1.398_199_9e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 1.666_666_5e-1)
        .mul_add(r, 5e-1);
    let e_r = (p * r).mul_add(r, r) + 1.0;
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `out += x · w` for `w` row-major `[x.len(), out.len()]`, with AVX2 FMA where available.
pub(super) fn matvec<W: Weight>(w: &[W], x: &[f32], out: &mut [f32]) {
    debug_assert_eq!(w.len(), x.len() * out.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above; std caches the answer).
            unsafe { matvec_avx2_fma(w, x, out) };
        } else {
            matvec_rows::<W, false>(w, x, out);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    matvec_rows::<W, true>(w, x, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn matvec_avx2_fma<W: Weight>(w: &[W], x: &[f32], out: &mut [f32]) {
    matvec_rows::<W, true>(w, x, out);
}

/// `acc + x * w`, rounded once when `FUSED` (`mul_add`) and twice otherwise.
#[inline(always)]
fn madd<const FUSED: bool>(acc: f32, x: f32, w: f32) -> f32 {
    if FUSED {
        x.mul_add(w, acc)
    } else {
        acc + x * w
    }
}

/// Four input rows per pass over `out`: a quarter of the loads and stores of `out`, and
/// an inner loop over five zipped slices that compiles to straight vector code.
#[inline(always)]
fn matvec_rows<W: Weight, const FUSED: bool>(w: &[W], x: &[f32], out: &mut [f32]) {
    let n = out.len();
    if n == 0 {
        return;
    }
    let mut rows = w.chunks_exact(4 * n);
    let mut xs = x.chunks_exact(4);
    for (r, x) in (&mut rows).zip(&mut xs) {
        let (r0, r) = r.split_at(n);
        let (r1, r) = r.split_at(n);
        let (r2, r3) = r.split_at(n);
        let (x0, x1, x2, x3) = (x[0], x[1], x[2], x[3]);
        for ((((o, a), b), c), d) in out.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
            let acc = madd::<FUSED>(*o, x0, a.widen());
            let acc = madd::<FUSED>(acc, x1, b.widen());
            let acc = madd::<FUSED>(acc, x2, c.widen());
            *o = madd::<FUSED>(acc, x3, d.widen());
        }
    }
    for (r, &x) in rows.remainder().chunks_exact(n).zip(xs.remainder()) {
        for (o, a) in out.iter_mut().zip(r) {
            *o = madd::<FUSED>(*o, x, a.widen());
        }
    }
}

/// `outs[b] += xs[b] · w` for a batch, `w` row-major `[k, n]`, with AVX2 FMA where available.
fn matmat<W: Weight>(w: &[W], panels: &OnceLock<Vec<W>>, xs: &[&[f32]], outs: &mut [&mut [f32]]) {
    let Some(n) = outs.first().map(|o| o.len()) else {
        return;
    };
    let panels = panels.get_or_init(|| pack(w, n, LANES));
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above; std caches the answer).
            unsafe { matmat_avx2_fma(w, panels, xs, outs) };
        } else {
            matmat_rows::<W, false>(w, panels, xs, outs);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    matmat_rows::<W, true>(w, panels, xs, outs);
}

/// The whole `width`-column strips of a row-major `[k, n]` matrix, each strip's rows one
/// after the other (`[n / width][k][width]`), so a kernel reads every strip as one
/// contiguous run: [`STRIP`] wide for one sequence's step, [`LANES`] wide for the batched
/// kernel (built on the first batched step: the plugin never pays for it).
fn pack<W: Weight>(w: &[W], n: usize, width: usize) -> Vec<W> {
    let k = w.len() / n.max(1);
    let mut panels = Vec::with_capacity(n / width * width * k);
    for j in (0..n / width * width).step_by(width) {
        for i in 0..k {
            panels.extend_from_slice(&w[i * n + j..i * n + j + width]);
        }
    }
    panels
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn matmat_avx2_fma<W: Weight>(w: &[W], panels: &[W], xs: &[&[f32]], outs: &mut [&mut [f32]]) {
    matmat_rows::<W, true>(w, panels, xs, outs);
}

/// Columns per pass of the batched kernel (16 f32 = two AVX2 registers).
const LANES: usize = 16;
/// Sequences per pass of the batched kernel: 4 × 2 accumulators, two weight vectors and
/// a broadcast input fit in the 16 vector registers of AVX2.
const GROUP: usize = 4;

/// [`matvec_rows`] for a batch, as a GEMM micro-kernel: for each strip of [`LANES`] output
/// columns and each group of [`GROUP`] sequences, the accumulators stay in registers
/// while the strip's weights stream past once, each weight vector serving the whole
/// group. Each output still adds `x[i]·w[i]` for `i` in order, one rounding per FMA as
/// [`matvec_rows`] does: the results are identical.
#[inline(always)]
fn matmat_rows<W: Weight, const FUSED: bool>(
    w: &[W],
    panels: &[W],
    xs: &[&[f32]],
    outs: &mut [&mut [f32]],
) {
    let Some(n) = outs.first().map(|o| o.len()) else {
        return;
    };
    let k = w.len() / n.max(1);
    debug_assert!(xs.iter().all(|x| x.len() == k) && outs.iter().all(|o| o.len() == n));
    let strips = n / LANES * LANES;
    debug_assert_eq!(
        xs.len() % GROUP,
        0,
        "whole groups only (see Matrix::matmat)"
    );
    for (x, o) in xs.chunks_exact(GROUP).zip(outs.chunks_exact_mut(GROUP)) {
        let xt = interleave::<GROUP>(x, k);
        for j in (0..strips).step_by(LANES) {
            W::group_strip::<FUSED>(&panels[j * k..(j + LANES) * k], j, &xt, o);
        }
    }
    for (x, o) in xs.iter().zip(outs.iter_mut()) {
        columns_from::<W, FUSED>(w, x, o, strips);
    }
}

/// `S` sequences' inputs side by side, `[k][S]`: what the kernel reads with each row.
fn interleave<const S: usize>(xs: &[&[f32]], k: usize) -> Vec<[f32; S]> {
    (0..k).map(|i| std::array::from_fn(|b| xs[b][i])).collect()
}

/// Columns `j..j + LANES` of `S` sequences' outputs over all rows (`panel`: that strip,
/// packed; `xt`: their inputs from [`interleave`]), in registers.
#[inline(always)]
fn strip<W: Weight, const FUSED: bool, const S: usize>(
    panel: &[W],
    j: usize,
    xt: &[[f32; S]],
    outs: &mut [&mut [f32]],
) {
    let mut acc = [[0f32; LANES]; S];
    for (a, o) in acc.iter_mut().zip(outs.iter()) {
        a.copy_from_slice(&o[j..j + LANES]);
    }
    for (row, x) in panel.chunks_exact(LANES).zip(xt) {
        let mut wv = [0f32; LANES];
        for l in 0..LANES {
            wv[l] = row[l].widen();
        }
        for b in 0..S {
            let xb = x[b];
            for l in 0..LANES {
                acc[b][l] = madd::<FUSED>(acc[b][l], xb, wv[l]);
            }
        }
    }
    for (a, o) in acc.iter().zip(outs.iter_mut()) {
        o[j..j + LANES].copy_from_slice(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::music::SeedRng;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    /// A candle model with random weights (biases too, so every term is exercised).
    fn random(config: LstmConfig, seed: u64) -> Lstm {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        // Creates the variables (with their initialisers), then overwritten below.
        Lstm::new(config.clone(), vb).unwrap();
        let mut rng = SeedRng::new(seed);
        for var in varmap.all_vars() {
            let n = var.elem_count();
            let v: Vec<f32> = (0..n).map(|_| rng.next_f32() * 0.4 - 0.2).collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        // Rebuild so the precomputed tables see the random weights.
        Lstm::new(
            config,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap()
    }

    /// Steps both implementations through random notes and compares every logit.
    fn assert_matches_candle(config: LstmConfig, seed: u64) {
        let model = random(config, seed);
        let fast = FastLstm::from_lstm(&model).unwrap();
        let mut rng = SeedRng::new(seed + 1);
        let mut tok = || (rng.next_u64() % model.config.vocab as u64) as u32;
        let cond = [tok(), tok(), tok()];
        let mut reference = model.start(cond).unwrap();
        let mut state = fast.state();
        fast.start(cond, &mut state);
        for note in 0..40 {
            let (p, d, next) = (tok(), tok(), tok());
            let at = Onset {
                pos: (tok() % 60) as u16,
                cadence: (tok() % 8) as u8,
                chord: (tok() * 37 % 4096) as u16,
            };
            let want = model.step(p, d, at, &mut reference).unwrap();
            assert_close(fast.step(p, d, at, &mut state), &want, note);
            let want = model.duration_logits(next, &reference).unwrap();
            assert_close(fast.duration_logits(next, &mut state), &want, note);
        }
    }

    fn assert_close(got: &[f32], want: &[f32], note: usize) {
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() < 1e-4, "note {note}, logit {i}: {a} vs {b}");
        }
    }

    #[test]
    fn fast_path_matches_candle_on_random_weights_tiny() {
        let config = LstmConfig {
            embed: 8,
            hidden: 13,
            layers: 3,
            dur_hidden: 7,
            ..Default::default()
        };
        assert_matches_candle(config.clone(), 1);
        // Format 2 (no strain or chord inputs) still decodes.
        let v2 = LstmConfig {
            strain_and_chord: false,
            ..config
        };
        assert_matches_candle(v2, 4);
    }

    #[test]
    fn fast_path_matches_candle_on_random_weights_full_size() {
        assert_matches_candle(LstmConfig::default(), 2);
    }

    #[test]
    fn exp_sigmoid_and_tanh_match_libm() {
        let mut worst = [0.0f64; 3];
        for k in -20_000..=20_000 {
            let x = k as f32 * 0.005;
            let rel = |got: f32, want: f32| ((got - want).abs() / want.abs().max(1e-30)) as f64;
            let abs = |got: f32, want: f32| (got - want).abs() as f64;
            if x.abs() <= 87.0 {
                worst[0] = worst[0].max(rel(exp(x), x.exp()));
            }
            worst[1] = worst[1].max(abs(sigmoid(x), 1.0 / (1.0 + (-x).exp())));
            worst[2] = worst[2].max(abs(tanh(x), x.tanh()));
        }
        assert!(worst[0] < 5e-7, "exp: relative error {}", worst[0]);
        assert!(worst[1] < 2e-7, "sigmoid: absolute error {}", worst[1]);
        assert!(worst[2] < 5e-7, "tanh: absolute error {}", worst[2]);
        // Far out it saturates instead of overflowing.
        assert!(sigmoid(-1e4) < 1e-37 && sigmoid(1e4) == 1.0);
        assert_eq!((tanh(-1e4), tanh(1e4)), (-1.0, 1.0));
        assert!(exp(1e4).is_finite() && exp(-1e4) > 0.0);
    }

    #[test]
    fn simd_and_portable_products_agree_bit_for_bit() {
        let mut rng = SeedRng::new(3);
        let (rows, cols) = (37, 29);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next_f32() - 0.5).collect();
        let x: Vec<f32> = (0..rows).map(|_| rng.next_f32() - 0.5).collect();
        let mut a = vec![0.0; cols];
        let mut b = vec![0.0; cols];
        matvec(&w, &x, &mut a);
        // What the dispatch runs on this CPU, in portable code.
        #[cfg(target_arch = "x86_64")]
        let fused = std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let fused = true;
        if fused {
            matvec_rows::<f32, true>(&w, &x, &mut b);
        } else {
            matvec_rows::<f32, false>(&w, &x, &mut b);
        }
        assert_eq!(a, b);
        for (j, got) in a.iter().enumerate() {
            let want: f32 = (0..rows).map(|i| x[i] * w[i * cols + j]).sum();
            assert!((got - want).abs() < 1e-5);
        }
    }

    #[test]
    fn strip_products_equal_the_row_products_bit_for_bit() {
        let mut rng = SeedRng::new(5);
        // Two whole strips and 22 columns past them.
        let (rows, cols) = (37, 2 * STRIP + 22);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next_f32() - 0.5).collect();
        let x: Vec<f32> = (0..rows).map(|_| rng.next_f32() - 0.5).collect();
        let start: Vec<f32> = (0..cols).map(|_| rng.next_f32()).collect();
        let bits: Vec<u16> = w.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
        let product = |m: &Matrix| {
            let mut out = start.clone();
            m.matvec(&x, &mut out);
            out
        };
        let rows_product = |w: &[f32]| {
            let mut out = start.clone();
            matvec(w, &x, &mut out);
            out
        };
        assert_eq!(product(&Matrix::f32(w.clone(), cols)), rows_product(&w));
        let widened: Vec<f32> = bits.iter().map(|&b| b.widen()).collect();
        assert_eq!(product(&Matrix::bf16(bits, cols)), rows_product(&widened));
    }

    #[test]
    fn bf16_product_is_the_f32_product_of_the_rounded_weights() {
        let mut rng = SeedRng::new(5);
        let (rows, cols) = (33, 40);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next_f32() - 0.5).collect();
        let x: Vec<f32> = (0..rows).map(|_| rng.next_f32() - 0.5).collect();
        let bits: Vec<u16> = w.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
        let widened: Vec<f32> = bits.iter().map(|b| b.widen()).collect();
        let (mut a, mut b) = (vec![0.0; cols], vec![0.0; cols]);
        matvec(&bits, &x, &mut a);
        matvec(&widened, &x, &mut b);
        assert_eq!(a, b);
        // Truncated to 8 significant bits, still close to the exact product.
        let mut exact = vec![0.0; cols];
        matvec(&w, &x, &mut exact);
        for (got, want) in a.iter().zip(&exact) {
            assert!((got - want).abs() < 0.05, "{got} vs {want}");
        }
    }

    /// The largest difference between the pitch logits of `precision` and of f32 over 20
    /// notes, relative to the largest f32 logit; and the bytes each reads per note.
    fn rounding_error(precision: Precision) -> (f32, usize, usize) {
        let model = random(LstmConfig::default(), 6);
        let f32_path = FastLstm::from_lstm(&model).unwrap();
        let rounded_path = FastLstm::with_precision(&model, precision).unwrap();
        let cond = [1, 2, 3];
        let (mut exact, mut rounded) = (f32_path.state(), rounded_path.state());
        f32_path.start(cond, &mut exact);
        rounded_path.start(cond, &mut rounded);
        let at = Onset {
            pos: 12,
            cadence: 3,
            chord: 0b1001_0001,
        };
        let mut worst = 0f32;
        for note in 0..20u32 {
            let want = f32_path.step(note + 5, note + 90, at, &mut exact).to_vec();
            let got = rounded_path.step(note + 5, note + 90, at, &mut rounded);
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in got.iter().zip(&want) {
                worst = worst.max((a - b).abs() / scale);
            }
        }
        let bytes = (rounded_path.bytes_per_note(), f32_path.bytes_per_note());
        (worst, bytes.0, bytes.1)
    }

    #[test]
    fn bf16_weights_stay_close_to_candle_and_halve_the_bytes() {
        let (worst, bytes, f32_bytes) = rounding_error(Precision::Bf16);
        assert_eq!(2 * bytes, f32_bytes);
        // Different (so it really is rounded) but within a few percent of the logit range.
        assert!(worst > 0.0 && worst < 0.05, "worst relative error {worst}");
    }

    #[test]
    fn int8_weights_stay_close_to_candle_in_under_a_third_of_the_bytes() {
        let (worst, bytes, f32_bytes) = rounding_error(Precision::Int8);
        // A quarter for the strips; the scales and the f32 tail columns add a little.
        assert!(3 * bytes < f32_bytes, "{bytes} of {f32_bytes} bytes");
        assert!(worst > 0.0 && worst < 0.05, "worst relative error {worst}");
    }

    /// Random inputs for `n` sequences.
    fn inputs(rng: &mut SeedRng, vocab: u32, n: usize) -> Vec<StepInput> {
        (0..n)
            .map(|_| StepInput {
                prev_pitch: (rng.next_u64() % vocab as u64) as u32,
                prev_dur: (rng.next_u64() % vocab as u64) as u32,
                at: Onset {
                    pos: (rng.next_u64() % 60) as u16,
                    cadence: (rng.next_u64() % 8) as u8,
                    chord: (rng.next_u64() % 4096) as u16,
                },
            })
            .collect()
    }

    /// Batched and one-by-one steps give the same logits, to the bit, for both precisions
    /// and for odd sizes (no multiple of 4 or of the tile).
    #[test]
    fn a_batched_step_equals_one_step_per_sequence_bit_for_bit() {
        let tiny = LstmConfig {
            embed: 8,
            hidden: 13,
            layers: 3,
            dur_hidden: 7,
            ..Default::default()
        };
        for (config, precision) in [
            (tiny, Precision::F32),
            (LstmConfig::default(), Precision::F32),
            (LstmConfig::default(), Precision::Bf16),
            (LstmConfig::default(), Precision::Int8),
        ] {
            let fast = FastLstm::with_precision(&random(config, 11), precision).unwrap();
            let vocab = fast.config.vocab as u32;
            let mut rng = SeedRng::new(12);
            let batch = 9;
            let mut single: Vec<FastState> = (0..batch).map(|_| fast.state()).collect();
            let mut batched: Vec<FastState> = (0..batch).map(|_| fast.state()).collect();
            for (b, (a, c)) in single.iter_mut().zip(batched.iter_mut()).enumerate() {
                let cond = [b as u32 + 1, 2 * b as u32 + 3, 5];
                fast.start(cond, a);
                fast.start(cond, c);
            }
            for _ in 0..12 {
                let inputs = inputs(&mut rng, vocab, batch);
                fast.step_batch(&inputs, &mut batched);
                for ((input, a), c) in inputs.iter().zip(&mut single).zip(&batched) {
                    let want = fast.step(input.prev_pitch, input.prev_dur, input.at, a);
                    assert_eq!(c.pitch_logits(), want);
                }
            }
        }
    }

    /// Sampled decoding of 32 sequences, batched and one by one: the same notes.
    #[test]
    fn batched_decode_gives_the_same_notes_as_unbatched_for_the_same_seeds() {
        let fast = FastLstm::from_lstm(&random(LstmConfig::default(), 21)).unwrap();
        let vocab = fast.config.vocab;
        // Sample a token from logits with the sequence's own random stream.
        let sample = |logits: &[f32], rng: &mut SeedRng| -> u32 {
            let max = logits.iter().fold(f32::MIN, |m, &v| m.max(v));
            let weights: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
            let mut r = rng.next_f32() * weights.iter().sum::<f32>();
            for (i, w) in weights.iter().enumerate() {
                r -= w;
                if r <= 0.0 {
                    return i as u32;
                }
            }
            vocab as u32 - 1
        };
        let decode = |batched: bool| -> Vec<Vec<u32>> {
            let n = 32;
            let mut states: Vec<FastState> = (0..n).map(|_| fast.state()).collect();
            let mut rngs: Vec<SeedRng> = (0..n).map(|b| SeedRng::new(100 + b as u64)).collect();
            let mut notes = vec![Vec::new(); n];
            for (b, s) in states.iter_mut().enumerate() {
                fast.start([1, 2 + b as u32 % 3, 7], s);
            }
            let mut prev = vec![(1u32, 2u32); n];
            for t in 0..16u16 {
                let inputs: Vec<StepInput> = (prev.iter())
                    .map(|&(prev_pitch, prev_dur)| StepInput {
                        prev_pitch,
                        prev_dur,
                        at: Onset {
                            pos: t * 3,
                            cadence: 3,
                            chord: 0,
                        },
                    })
                    .collect();
                if batched {
                    fast.step_batch(&inputs, &mut states);
                } else {
                    for (i, s) in inputs.iter().zip(states.iter_mut()) {
                        fast.step(i.prev_pitch, i.prev_dur, i.at, s);
                    }
                }
                for b in 0..n {
                    let pitch = sample(states[b].pitch_logits(), &mut rngs[b]);
                    let dur = sample(fast.duration_logits(pitch, &mut states[b]), &mut rngs[b]);
                    notes[b].push(pitch);
                    prev[b] = (pitch, dur);
                }
            }
            notes
        };
        let (one_by_one, together) = (decode(false), decode(true));
        assert_eq!(one_by_one, together);
        // The sequences really differ (the test would pass vacuously otherwise).
        assert_ne!(one_by_one[0], one_by_one[1]);
    }
}
