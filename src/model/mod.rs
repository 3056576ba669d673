//! The neural melody model: token representation, network, sampling controls, training.
//!
//! A trained model is a directory with two files the plugin needs:
//! - `config.json`: a [`ModelFile`] (format tag, network shape, checksum of the weights);
//! - `model.safetensors`: the weights.
//!
//! Training adds `copyguard.bin` (the originality guard, used when present),
//! `metrics.json` and, while running, `checkpoint.*` for resuming.

pub mod adamw;
pub mod batcher;
pub mod copyguard;
pub mod critic;
pub mod grid;
mod int8;
pub mod lstm;
pub mod lstm_fast;
pub mod morph;
pub mod realism;
pub mod sampler;
pub mod segment;
pub mod tokenizer;
pub mod train;
pub mod train_vae;
pub mod vae;
pub mod vae_fast;
pub mod variation;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use lstm::{Lstm, LstmConfig};
use lstm_fast::Precision;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const METRICS_FILE: &str = "metrics.json";
/// Optional: the originality guard built from the training tunes (`model::copyguard`).
pub const GUARD_FILE: &str = "copyguard.bin";
/// Version 2: one step per note, conditioning at every step (version 1 read tokens).
const FORMAT_2: &str = "melodist-neural-lstm/2";
/// Version 3: every step also reads bars-to-cadence and the chord (`tokenizer::Onset`).
const FORMAT_3: &str = "melodist-neural-lstm/3";

fn format_of(config: &LstmConfig) -> &'static str {
    if config.strain_and_chord {
        FORMAT_3
    } else {
        FORMAT_2
    }
}

/// `config.json`: everything needed to rebuild the network around the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelFile {
    pub format: String,
    pub model: LstmConfig,
    /// FNV-1a of `model.safetensors`, hex: catches damaged or mismatched weight files.
    pub weights_fnv1a: String,
    /// How the plugin's decoder stores the weight matrices: `"f32"` (absent: exactly the
    /// trained weights) or `"int8"`/`"bf16"`, set by hand once `melodist eval --fast-path`
    /// has shown what it costs in bits (the checksum covers only the weights).
    #[serde(default)]
    pub decode: Precision,
}

/// Writes `config.json` + `model.safetensors` into `dir`.
pub fn save_model(dir: &Path, config: &LstmConfig, varmap: &candle_nn::VarMap) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let weights = dir.join(WEIGHTS_FILE);
    varmap
        .save(&weights)
        .with_context(|| format!("cannot write {}", weights.display()))?;
    let bytes = std::fs::read(&weights)?;
    let file = ModelFile {
        format: format_of(config).into(),
        model: config.clone(),
        weights_fnv1a: checksum(&bytes),
        decode: Precision::F32,
    };
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_string_pretty(&file)?)?;
    Ok(())
}

/// Rebuilds the network from the two files' bytes, with a clear error for anything wrong.
pub fn load_model(config_json: &[u8], safetensors: &[u8]) -> Result<Lstm> {
    let file = read_config(config_json)?;
    if file.format != format_of(&file.model) {
        bail!(
            "config.json has format {:?}, this Melodist reads {FORMAT_2:?} and {FORMAT_3:?}",
            file.format
        );
    }
    if file.model.vocab != tokenizer::VOCAB || file.model.max_pos != tokenizer::MAX_POS {
        bail!(
            "model was trained with a different tokenizer (vocab {}, this build {})",
            file.model.vocab,
            tokenizer::VOCAB
        );
    }
    if checksum(safetensors) != file.weights_fnv1a {
        bail!(
            "model.safetensors does not match config.json (damaged, truncated or from another model)"
        );
    }
    let vb = VarBuilder::from_slice_safetensors(safetensors, DType::F32, &Device::Cpu)
        .context("model.safetensors is not readable")?;
    Lstm::new(file.model, vb).context("model.safetensors does not fit the network in config.json")
}

fn read_config(config_json: &[u8]) -> Result<ModelFile> {
    serde_json::from_slice(config_json).context("config.json is not a valid neural model config")
}

/// The decoder precision `config.json` asks for ([`ModelFile::decode`]).
pub fn decode_precision(config_json: &[u8]) -> Result<Precision> {
    Ok(read_config(config_json)?.decode)
}

fn checksum(bytes: &[u8]) -> String {
    format!("{:016x}", crate::music::fnv1a(bytes))
}
