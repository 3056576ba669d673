//! AdamW (decoupled weight decay) whose moments can be saved and restored, so that
//! `melodist train --resume` continues with the optimizer exactly where it stopped.
//!
//! The update is the one of `candle_nn::AdamW`; that type keeps its moments private, and a
//! resume with fresh moments takes a few hundred steps of bias-corrected warmup again.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::{ParamsAdamW, VarMap};
use std::collections::HashMap;
use std::path::Path;

pub struct AdamW {
    /// `(name, parameter, first moment, second moment)`, sorted by name.
    vars: Vec<(String, Var, Tensor, Tensor)>,
    /// Updates made so far (for bias correction).
    pub steps: usize,
    pub params: ParamsAdamW,
}

impl AdamW {
    /// An optimizer for every float parameter of `varmap`, with zero moments.
    pub fn new(varmap: &VarMap, params: ParamsAdamW) -> Result<Self> {
        let data = varmap.data().lock().expect("var map lock");
        let mut vars = data
            .iter()
            .filter(|(_, v)| v.dtype().is_float())
            .map(|(name, v)| {
                let zeros = v.as_tensor().zeros_like()?;
                Ok((name.clone(), v.clone(), zeros.clone(), zeros))
            })
            .collect::<Result<Vec<_>>>()?;
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            vars,
            steps: 0,
            params,
        })
    }

    /// One update from `grads`; parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.steps += 1;
        let ParamsAdamW {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.params;
        let scale_m = 1.0 / (1.0 - beta1.powi(self.steps as i32));
        let scale_v = 1.0 / (1.0 - beta2.powi(self.steps as i32));
        for (_, theta, m, v) in &mut self.vars {
            let Some(g) = grads.get(theta) else {
                continue;
            };
            *m = ((&*m * beta1)? + (g * (1.0 - beta1))?)?;
            *v = ((&*v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let update = ((&*m * scale_m)? / ((&*v * scale_v)?.sqrt()? + eps)?)?;
            let decayed = (theta.as_tensor() * (1.0 - lr * weight_decay))?;
            theta.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Writes both moments of every parameter as `m.NAME` / `v.NAME` safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (name, _, m, v) in &self.vars {
            tensors.insert(format!("m.{name}"), m.clone());
            tensors.insert(format!("v.{name}"), v.clone());
        }
        candle_core::safetensors::save(&tensors, path)
    }

    /// Restores the moments written by [`AdamW::save`]; `steps` comes from the checkpoint.
    pub fn load(&mut self, path: &Path, steps: usize) -> Result<()> {
        let mut saved = candle_core::safetensors::load(path, &candle_core::Device::Cpu)?;
        for (name, theta, m, v) in &mut self.vars {
            for (prefix, slot) in [("m", m), ("v", v)] {
                let key = format!("{prefix}.{name}");
                let t = saved.remove(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state has no {key}"))
                })?;
                if t.shape() != theta.shape() {
                    candle_core::bail!("optimizer state {key} has shape {:?}", t.shape());
                }
                *slot = t;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{Init, Optimizer};

    /// Minimises `sum((w - 3)^2)` with both optimizers from the same start.
    fn run(ours: bool, steps: usize) -> Vec<f32> {
        let varmap = VarMap::new();
        let w = varmap
            .get(4, "w", Init::Const(0.5), DType::F32, &Device::Cpu)
            .unwrap();
        let params = ParamsAdamW {
            lr: 0.1,
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut mine = AdamW::new(&varmap, params.clone()).unwrap();
        let mut theirs = candle_nn::AdamW::new(varmap.all_vars(), params).unwrap();
        for _ in 0..steps {
            let loss = (&w - 3.0).unwrap().sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            if ours {
                mine.step(&grads).unwrap();
            } else {
                theirs.step(&grads).unwrap();
            }
        }
        w.to_vec1().unwrap()
    }

    #[test]
    fn same_updates_as_candle_adamw() {
        let (a, b) = (run(true, 25), run(false, 25));
        assert!(
            a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5),
            "{a:?} vs {b:?}"
        );
        assert!(a[0] > 2.0, "it optimises: {a:?}");
    }

    #[test]
    fn moments_survive_save_and_load() {
        let varmap = VarMap::new();
        let w = varmap
            .get(
                (2, 3),
                "layer.w",
                Init::Const(1.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let mut opt = AdamW::new(&varmap, ParamsAdamW::default()).unwrap();
        let grads = w.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        opt.step(&grads).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        opt.save(&path).unwrap();

        let mut fresh = AdamW::new(&varmap, ParamsAdamW::default()).unwrap();
        fresh.load(&path, opt.steps).unwrap();
        assert_eq!(fresh.steps, 1);
        for (a, b) in opt.vars.iter().zip(&fresh.vars) {
            for (x, y) in [(&a.2, &b.2), (&a.3, &b.3)] {
                assert_eq!(
                    x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                );
            }
        }
        // A state from another model is refused.
        let other = VarMap::new();
        other
            .get(5, "b", Init::Const(0.0), DType::F32, &Device::Cpu)
            .unwrap();
        let mut wrong = AdamW::new(&other, ParamsAdamW::default()).unwrap();
        assert!(wrong.load(&path, 1).is_err());
    }
}
