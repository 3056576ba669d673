//! The models a server serves: loaded once at start from `--models DIR`, described by
//! `GET /v1/models`, and copied into each decode thread ([`Worker`]).
//!
//! - `neural`: `DIR/neural` when it holds a model, else the one built into the binary
//!   (the same the CLI and the plugin use by default, so the same seed gives the same notes);
//! - `markov`: the shipped Markov baseline, built in;
//! - `vae`: `DIR/vae` when present (variations and morphs); without it those endpoints
//!   answer 503 with the reason.
//!
//! A model's version is the FNV-1a checksum of its weights, as its `config.json` records
//! it: a client can pin a version and gets a 404 rather than other notes if the server
//! runs another.

use super::error::ApiError;
use super::pool::WorkerFactory;
use crate::generator::Generator;
use crate::generator::loader::{
    self, EMBEDDED_MARKOV, EMBEDDED_NEURAL_CONFIG, LoadedModel, ModelChoice,
};
use crate::generator::markov::MarkovGenerator;
use crate::generator::neural::NeuralGenerator;
use crate::model::ModelFile;
use crate::model::lstm_fast::FastLstm;
use crate::model::variation::{VaeFile, VaeModel};
use crate::model::{CONFIG_FILE, WEIGHTS_FILE};
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// What a request names in its `model` field: `neural`, `markov`, `vae`.
    pub name: String,
    /// The model file's format tag (e.g. `melodist-neural-lstm/3`).
    pub format: String,
    /// The weights' FNV-1a checksum (hex): what a request's `version` must equal.
    pub version: String,
    /// Where it was loaded from: a folder, or `built-in`.
    pub source: String,
    /// The model card (how it was trained and measured), when the models folder has one.
    pub card: Option<String>,
}

/// The answer of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModelsResponse {
    pub models: Vec<ModelInfo>,
}

/// A generator a request can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneratorKind {
    Neural,
    Markov,
}

/// One decode thread's own generators (they keep per-phrase scratch state) over the
/// server's shared, read-only weights.
pub struct Worker {
    pub neural: Box<dyn Generator>,
    pub markov: Box<dyn Generator>,
    pub vae: Option<Arc<VaeModel>>,
    /// What these models are (their versions go into the answers they write).
    pub infos: Arc<Vec<ModelInfo>>,
}

impl Worker {
    pub fn generator(&mut self, kind: GeneratorKind) -> &mut dyn Generator {
        match kind {
            GeneratorKind::Neural => self.neural.as_mut(),
            GeneratorKind::Markov => self.markov.as_mut(),
        }
    }

    /// The version of model `name` these generators run ("" when none).
    pub fn version(&self, name: &str) -> String {
        (self.infos.iter())
            .find(|i| i.name == name)
            .map_or_else(String::new, |i| i.version.clone())
    }
}

/// What the server loaded: the weights, once, and generators the decode threads replicate.
pub struct Models {
    pub infos: Vec<ModelInfo>,
    neural: NeuralGenerator,
    markov: MarkovGenerator,
    vae: Option<Arc<VaeModel>>,
}

impl Models {
    /// Loads (and checks) the models of `dir`; a folder that is there but broken is an
    /// error, a missing one falls back as the module docs say.
    pub fn load(dir: &Path) -> Result<Self> {
        let card = Some(dir.join("README.md"))
            .filter(|p| p.is_file())
            .map(|p| p.display().to_string());
        let neural_dir = dir.join("neural");
        let (choice, config, source) = if neural_dir.join(CONFIG_FILE).is_file() {
            let config = std::fs::read(neural_dir.join(CONFIG_FILE))
                .with_context(|| format!("cannot read {}", neural_dir.display()))?;
            let source = neural_dir.display().to_string();
            (ModelChoice::Path(neural_dir.clone()), config, source)
        } else {
            let config = EMBEDDED_NEURAL_CONFIG.to_vec();
            (ModelChoice::Default, config, "built-in".to_string())
        };
        let file: ModelFile = serde_json::from_slice(&config)
            .context("the neural model's config.json is not a model config")?;
        let mut infos = vec![
            ModelInfo {
                name: "neural".into(),
                format: file.format,
                version: file.weights_fnv1a,
                source,
                card: card.clone(),
            },
            ModelInfo {
                name: "markov".into(),
                format: "melodist-markov".into(),
                version: format!("{:016x}", crate::music::fnv1a(EMBEDDED_MARKOV)),
                source: "built-in".into(),
                card: card.clone(),
            },
        ];
        let vae_dir = dir.join("vae");
        let vae = if vae_dir.join(WEIGHTS_FILE).is_file() {
            let model = VaeModel::load_dir(&vae_dir)?;
            let file: VaeFile = serde_json::from_slice(&std::fs::read(vae_dir.join(CONFIG_FILE))?)
                .context("the VAE's config.json is not a VAE config")?;
            infos.push(ModelInfo {
                name: "vae".into(),
                format: file.format,
                version: file.weights_fnv1a,
                source: vae_dir.display().to_string(),
                card,
            });
            Some(Arc::new(model))
        } else {
            None
        };
        let LoadedModel::Neural(neural) = loader::load_model(&choice)? else {
            anyhow::bail!(
                "{} holds a Markov model, not a neural one",
                neural_dir.display()
            );
        };
        let LoadedModel::Markov(markov) = loader::load_model(&ModelChoice::Markov)? else {
            unreachable!("ModelChoice::Markov loads a Markov model")
        };
        Ok(Self {
            infos,
            neural: *neural,
            markov: MarkovGenerator::new(markov),
            vae,
        })
    }

    /// Builds a decode thread's generators: replicas over the shared weights, whose
    /// neural steps the thread's scheduler may batch.
    pub fn factory(&self) -> WorkerFactory {
        let neural = self.neural.replica();
        let markov = self.markov.replica();
        let vae = self.vae.clone();
        let infos = Arc::new(self.infos.clone());
        Arc::new(move || {
            Ok(Worker {
                neural: Box::new(neural.replica().with_batching()),
                markov: Box::new(markov.replica()),
                vae: vae.clone(),
                infos: infos.clone(),
            })
        })
    }

    /// The neural decoder's weights, which the decode threads' batched steps run.
    pub fn fast_model(&self) -> Arc<FastLstm> {
        self.neural.shared_fast_model()
    }

    /// The generator a request names (`neural` when it names none), checked against the
    /// version it pins, if any.
    pub fn generator(
        &self,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<GeneratorKind, ApiError> {
        let name = name.unwrap_or("neural");
        let kind = match name {
            "neural" => GeneratorKind::Neural,
            "markov" => GeneratorKind::Markov,
            other => {
                return Err(ApiError::not_found(format!(
                    "unknown model {other:?}: this server generates with \"neural\" or \"markov\" (see GET /v1/models)"
                )));
            }
        };
        self.check_version(name, version)?;
        Ok(kind)
    }

    /// The VAE, checked against a pinned version; 503 when the server has none.
    pub fn vae(&self, version: Option<&str>) -> Result<(), ApiError> {
        if self.vae.is_none() {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "this server has no VAE loaded (start it with --models pointing at a folder with vae/)",
            ));
        }
        self.check_version("vae", version)
    }

    fn check_version(&self, name: &str, version: Option<&str>) -> Result<(), ApiError> {
        let Some(wanted) = version else {
            return Ok(());
        };
        let info = self.infos.iter().find(|i| i.name == name);
        match info {
            Some(i) if i.version == wanted => Ok(()),
            Some(i) => Err(ApiError::not_found(format!(
                "model {name:?} version {wanted:?} is not served here; this server has version {:?}",
                i.version
            ))),
            None => Err(ApiError::not_found(format!(
                "model {name:?} is not served here"
            ))),
        }
    }

    /// What identifies the models in `dir` as they are on disk now: each model's config
    /// and its weights' size and time. A change means "load again"; reading it costs two
    /// small files and two `stat`s.
    pub fn signature(dir: &Path) -> String {
        let mut signature = String::new();
        for model in ["neural", "vae"] {
            let config = std::fs::read_to_string(dir.join(model).join(CONFIG_FILE));
            let weights = std::fs::metadata(dir.join(model).join(WEIGHTS_FILE));
            signature.push_str(&format!(
                "{model}:{:?}:{:?}\n",
                config.ok(),
                weights.ok().map(|m| (m.len(), m.modified().ok()))
            ));
        }
        signature
    }

    /// The folder the server was asked to load from, for messages.
    pub fn default_dir() -> PathBuf {
        PathBuf::from("models")
    }
}

/// Another version of the neural model in `dir` (a `neural/` folder): every weight scaled
/// by `factor`, with `config.json`'s checksum to match, as (weights, config) bytes. The
/// tests and the soak serve it to swap models while serving.
pub fn scaled_neural_model(dir: &Path, factor: f32) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut weights = std::fs::read(dir.join(WEIGHTS_FILE))?;
    // safetensors: an 8-byte little-endian header length, a JSON header, then the data
    // (all f32 in this model).
    let header = u64::from_le_bytes(weights[..8].try_into()?) as usize;
    for chunk in weights[8 + header..].chunks_exact_mut(4) {
        let x = f32::from_le_bytes(chunk.try_into()?) * factor;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE))?)?;
    config["weights_fnv1a"] = format!("{:016x}", crate::music::fnv1a(&weights)).into();
    Ok((weights, serde_json::to_vec(&config)?))
}
