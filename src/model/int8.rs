//! int8 weight matrices for the decoder's matrix–vector products ([`super::lstm_fast`],
//! `Precision::Int8`): about a quarter of f32's bytes, so the 2×256 model's 0.91 MB per
//! note sits in a core's 1 MB L2 cache instead of streaming 3.5 MB from L3.
//!
//! Why integer arithmetic and not int8 widened to f32: widening costs two instructions per
//! 8 weights before the multiply-add, and measured no faster than bf16. Here the input
//! vector is quantised too (13 bits, one scale per product), the weights are widened to
//! i16 and `vpmaddwd` multiplies and adds 16 of them per instruction into i32 sums. The
//! sums are exact integers, so the AVX2 kernel and the portable loop give the same sums;
//! each column is scaled back to f32 once at the end.
//!
//! Layout: the whole [`STRIP`]-column strips, each as `[k/2][STRIP][2]` (two consecutive
//! rows interleaved per column, what `vpmaddwd` pairs), one strip after the other. The
//! columns past the last whole strip stay f32, row-major (a few KB).

use super::lstm_fast::matvec;

/// Columns per strip: 64 i32 sums are 8 AVX2 registers.
pub(super) const STRIP: usize = 64;
/// Largest quantised input. Sums of up to [`CHUNK`] products of 8191 × 127 fit in an i32.
const X_MAX: f32 = 8191.0;
/// Rows summed in i32 before the partial sums are scaled into `out`: 2048 × 8191 × 127 <
/// 2³¹. Larger inputs (an LSTM over 1024 units) take several passes.
const CHUNK: usize = 2048;

/// `[k, n]` weights as int8 with one f32 scale per column (`w[i, j] ≈ q[i, j] · scale[j]`).
pub(super) struct Int8Matrix {
    /// Rows, rounded up to even (a zero row pads an odd count).
    k: usize,
    strips: Vec<i8>,
    scales: Vec<f32>,
    /// `[k, n % STRIP]`, f32.
    tail: Vec<f32>,
}

impl Int8Matrix {
    /// Symmetric per-column quantisation of row-major `[k, n]` weights: column `j`'s scale
    /// is its largest |weight| / 127, so every column uses the whole int8 range.
    pub(super) fn quantise(w: &[f32], n: usize) -> Self {
        let k = w.len() / n.max(1);
        let whole = n / STRIP * STRIP;
        let scales: Vec<f32> = (0..whole)
            .map(|j| (0..k).fold(0f32, |m, i| m.max(w[i * n + j].abs())) / 127.0)
            .collect();
        let q = |i: usize, j: usize| -> i8 {
            match i < k && scales[j] > 0.0 {
                true => (w[i * n + j] / scales[j]).round().clamp(-127.0, 127.0) as i8,
                false => 0,
            }
        };
        let padded = k.next_multiple_of(2);
        let mut strips = Vec::with_capacity(padded * whole);
        for s in (0..whole).step_by(STRIP) {
            for i in (0..padded).step_by(2) {
                for j in s..s + STRIP {
                    strips.extend([q(i, j), q(i + 1, j)]);
                }
            }
        }
        let tail = (w.chunks_exact(n.max(1)))
            .flat_map(|row| row[whole..].iter().copied())
            .collect();
        Self {
            k: padded,
            strips,
            scales,
            tail,
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.strips.len() + 4 * (self.scales.len() + self.tail.len())
    }

    /// `out += x · w`. No allocation: the quantised input lives on the stack (4 KB).
    pub(super) fn matvec(&self, x: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above; std caches the answer).
            return unsafe { self.matvec_avx2(x, out) };
        }
        self.matvec_with(x, out, strip_sums_portable)
    }

    /// The whole product compiled for AVX2 (the quantising and scaling loops vectorise too).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn matvec_avx2(&self, x: &[f32], out: &mut [f32]) {
        self.matvec_with(x, out, |rows, pairs| strip_sums_avx2(rows, pairs))
    }

    /// The product with `sums` computing one strip's integer sums. The scaling is a plain
    /// multiply and add (no FMA), so every CPU rounds it the same way.
    #[inline(always)]
    fn matvec_with(
        &self,
        x: &[f32],
        out: &mut [f32],
        sums: impl Fn(&[i8], &[u32]) -> [i32; STRIP],
    ) {
        let (whole, tail_out) = out.split_at_mut(self.scales.len());
        matvec(&self.tail, x, tail_out);
        let x_abs_max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        if x_abs_max == 0.0 || !x_abs_max.is_finite() {
            // A zero input adds nothing; a non-finite one would poison the scale: give up
            // on the int8 product rather than write garbage (never seen from an LSTM).
            return;
        }
        let (x_scale, to_int) = (x_abs_max / X_MAX, X_MAX / x_abs_max);
        let strip_len = self.k * STRIP;
        let mut pairs = [0u32; CHUNK / 2];
        for (c, xs) in x.chunks(CHUNK).enumerate() {
            // Inputs as i16 pairs (rows 2p and 2p + 1), the last padded with a zero.
            let n_pairs = xs.len().div_ceil(2);
            let (even, odd) = (xs.chunks_exact(2), xs.chunks_exact(2).remainder());
            for (pair, xy) in pairs.iter_mut().zip(even) {
                let (a, b) = (round(xy[0] * to_int), round(xy[1] * to_int));
                *pair = a as u16 as u32 | (b as u16 as u32) << 16;
            }
            if let [last] = odd {
                pairs[n_pairs - 1] = round(last * to_int) as u16 as u32;
            }
            let first = c * CHUNK * STRIP;
            for ((strip, o), scale) in (self.strips.chunks_exact(strip_len))
                .zip(whole.chunks_exact_mut(STRIP))
                .zip(self.scales.chunks_exact(STRIP))
            {
                let rows = &strip[first..first + n_pairs * 2 * STRIP];
                let sums = sums(rows, &pairs[..n_pairs]);
                for l in 0..STRIP {
                    o[l] += sums[l] as f32 * (scale[l] * x_scale);
                }
            }
        }
    }
}

/// Round half away from zero, without a libm call.
#[inline(always)]
fn round(v: f32) -> i16 {
    (v + 0.5f32.copysign(v)) as i16
}

/// The 64 columns' i32 sums over the row pairs of one strip (`rows`: `[pairs][STRIP][2]`;
/// `pairs`: two i16 inputs per word), one multiply at a time: the same integers as
/// [`strip_sums_avx2`].
fn strip_sums_portable(rows: &[i8], pairs: &[u32]) -> [i32; STRIP] {
    let mut sums = [0i32; STRIP];
    for (row, &pair) in rows.chunks_exact(2 * STRIP).zip(pairs) {
        let (x0, x1) = (pair as u16 as i16 as i32, (pair >> 16) as u16 as i16 as i32);
        for (s, w) in sums.iter_mut().zip(row.chunks_exact(2)) {
            *s += w[0] as i32 * x0 + w[1] as i32 * x1;
        }
    }
    sums
}

/// Per row pair: eight 16-byte loads widened to i16, eight `vpmaddwd` against the
/// broadcast input pair, eight i32 adds; the 64 sums stay in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn strip_sums_avx2(rows: &[i8], pairs: &[u32]) -> [i32; STRIP] {
    use std::arch::x86_64::*;
    assert!(rows.len() >= pairs.len() * 2 * STRIP);
    let mut sums = [0i32; STRIP];
    // SAFETY: each pair reads the 2 · STRIP bytes of its row pair, within `rows` (checked
    // above); the stores write the 64 sums of `sums`.
    unsafe {
        let mut acc = [_mm256_setzero_si256(); STRIP / 8];
        for (p, &pair) in pairs.iter().enumerate() {
            let x = _mm256_set1_epi32(pair as i32);
            let base = rows.as_ptr().add(p * 2 * STRIP);
            for (r, a) in acc.iter_mut().enumerate() {
                let w = _mm256_cvtepi8_epi16(_mm_loadu_si128(base.add(16 * r).cast()));
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(w, x));
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_si256(sums.as_mut_ptr().add(8 * r).cast(), *a);
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::music::SeedRng;

    fn random(rng: &mut SeedRng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.next_f32() - 0.5).collect()
    }

    /// The integer sums are exact, so the vector kernel and the portable loop agree to the bit.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_and_portable_sums_agree_bit_for_bit() {
        let mut rng = SeedRng::new(4);
        let pairs: Vec<u32> = (0..37).map(|_| rng.next_u64() as u32).collect();
        let rows: Vec<i8> = (0..37 * 2 * STRIP).map(|_| rng.next_u64() as i8).collect();
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        // SAFETY: the CPU has AVX2 (checked just above).
        let vector = unsafe { strip_sums_avx2(&rows, &pairs) };
        assert_eq!(vector, strip_sums_portable(&rows, &pairs));
        // And the whole product through either kernel.
        let m = Int8Matrix::quantise(&random(&mut rng, 37 * 2 * STRIP), 2 * STRIP);
        let x = random(&mut rng, 37);
        let (mut a, mut b) = (vec![0.0; 2 * STRIP], vec![0.0; 2 * STRIP]);
        m.matvec(&x, &mut a);
        m.matvec_with(&x, &mut b, strip_sums_portable);
        assert_eq!(a, b);
    }

    /// Odd rows, two strips and a tail, a zero column: within the rounding of an 8-bit
    /// weight and a 13-bit input of the exact product, and the tail exact.
    #[test]
    fn the_product_is_close_to_the_exact_one_and_the_tail_is_exact() {
        let mut rng = SeedRng::new(8);
        let (rows, cols) = (45, 2 * STRIP + 9);
        let mut w = random(&mut rng, rows * cols);
        (0..rows).for_each(|i| w[i * cols + 3] = 0.0);
        let x = random(&mut rng, rows);
        let m = Int8Matrix::quantise(&w, cols);
        assert_eq!((m.k, m.scales[3]), (46, 0.0));
        assert!(3 * m.bytes() < 4 * rows * cols, "{} bytes", m.bytes());
        let (mut got, mut exact) = (vec![0.25; cols], vec![0.25; cols]);
        m.matvec(&x, &mut got);
        matvec(&w, &x, &mut exact);
        // Each term is off by at most half a weight step times |x|, plus the input's step.
        let x_sum: f32 = x.iter().map(|v| v.abs()).sum();
        for j in 0..2 * STRIP {
            let bound = m.scales[j] / 2.0 * x_sum + 0.5 * rows as f32 / X_MAX * 0.5;
            assert!((got[j] - exact[j]).abs() <= bound, "column {j}");
        }
        assert_eq!(got[3], 0.25);
        assert_eq!(got[2 * STRIP..], exact[2 * STRIP..]);
        assert_ne!(got[..2 * STRIP], exact[..2 * STRIP], "really rounded");
    }

    /// More rows than one i32 pass holds: the chunks add up to the one-pass product.
    #[test]
    fn long_inputs_are_summed_in_chunks() {
        let mut rng = SeedRng::new(9);
        let (rows, cols) = (CHUNK + 101, STRIP);
        let w = random(&mut rng, rows * cols);
        let x = random(&mut rng, rows);
        let m = Int8Matrix::quantise(&w, cols);
        let (mut got, mut exact) = (vec![0.0; cols], vec![0.0; cols]);
        m.matvec(&x, &mut got);
        matvec(&w, &x, &mut exact);
        let x_sum: f32 = x.iter().map(|v| v.abs()).sum();
        for j in 0..cols {
            let bound = m.scales[j] / 2.0 * x_sum + rows as f32 / X_MAX;
            assert!((got[j] - exact[j]).abs() <= bound, "column {j}");
        }
    }
}
