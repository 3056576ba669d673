//! A tiny, versionless random number generator.
//!
//! "Same seed, same melody" must hold across releases of Melodist, so the generator's
//! randomness cannot depend on a third-party crate's algorithm choice. SplitMix64 is
//! fully specified, fast and good enough for sampling.

#[derive(Debug, Clone)]
pub struct SeedRng {
    state: u64,
}

impl SeedRng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An RNG derived from several values (seed, phrase index, ...), so that each phrase has
    /// its own independent stream.
    pub fn derive(parts: &[u64]) -> Self {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for &p in parts {
            s = mix(s ^ p.wrapping_mul(0xD1B5_4A32_D192_ED03));
        }
        Self::new(s)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Samples an index from unnormalised non-negative weights; `None` if they sum to zero.
    pub fn weighted(&mut self, weights: &[f32]) -> Option<usize> {
        let total: f32 = weights.iter().filter(|w| w.is_finite()).sum();
        if total <= 0.0 {
            return None;
        }
        let mut x = self.next_f32() * total;
        let mut last = None;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 && w.is_finite() {
                if x < w {
                    return Some(i);
                }
                x -= w;
                last = Some(i);
            }
        }
        last
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bits: a fixed, versionless checksum for model files (like [`SeedRng`], it
/// must not change with a dependency).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_uniformish() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = SeedRng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = SeedRng::new(7);
        let b: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        assert_eq!(a, b);
        let mut r = SeedRng::new(1);
        let mean = (0..10_000).map(|_| r.next_f32()).sum::<f32>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn weighted_never_picks_zero_weight() {
        let mut r = SeedRng::new(3);
        for _ in 0..1000 {
            let i = r.weighted(&[0.0, 1.0, 0.0, 2.0]).unwrap();
            assert!(i == 1 || i == 3);
        }
        assert_eq!(r.weighted(&[0.0, 0.0]), None);
    }
}
