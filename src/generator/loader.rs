//! Finds the generator to use: a model the producer points to, else the models shipped
//! inside the binary (the neural model first, the Markov baseline as its fallback).
//! [`load`] (the plugin's) never fails: a missing or broken model means a fallback and a
//! reason. [`load_strict`] and [`load_model`] (the command line's) fail instead.

use super::Generator;
use super::markov::{MarkovGenerator, MarkovModel};
use super::neural::NeuralGenerator;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// The shipped Markov model, embedded so the plugin bundle is self-contained.
pub const EMBEDDED_MARKOV: &[u8] = include_bytes!("../../models/markov.bin");
/// The shipped neural model (config + weights), embedded for the same reason.
pub const EMBEDDED_NEURAL_CONFIG: &[u8] = include_bytes!("../../models/neural/config.json");
pub const EMBEDDED_NEURAL_WEIGHTS: &[u8] = include_bytes!("../../models/neural/model.safetensors");
pub const EMBEDDED_NEURAL_GUARD: &[u8] = include_bytes!("../../models/neural/copyguard.bin");

/// Environment variable naming a model to use instead of the shipped one: a Markov
/// `.bin` file or a neural model folder.
pub const MODEL_ENV: &str = "MELODIST_MODEL";

/// Which model the producer asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChoice {
    /// The best shipped model: the neural one.
    Default,
    /// The shipped Markov baseline.
    Markov,
    /// A model file or folder on disk.
    Path(PathBuf),
}

impl ModelChoice {
    /// `default`, `markov`, or a path.
    pub fn parse(text: &str) -> Self {
        match text {
            "default" | "" => Self::Default,
            "markov" => Self::Markov,
            path => Self::Path(PathBuf::from(path)),
        }
    }

    /// `MELODIST_MODEL` if set, else the default.
    pub fn from_env() -> Self {
        std::env::var(MODEL_ENV)
            .map(|v| Self::parse(&v))
            .unwrap_or(Self::Default)
    }
}

/// Loads the chosen generator. The second value says why a fallback was used, if one was.
pub fn load(choice: &ModelChoice) -> (Box<dyn Generator>, Option<String>) {
    match choice {
        ModelChoice::Markov => (embedded_markov(), None),
        ModelChoice::Default => match embedded_neural() {
            Ok(g) => (Box::new(g), None),
            Err(err) => fallback(format!("the shipped neural model is unusable: {err:#}")),
        },
        ModelChoice::Path(path) => match load_path(path) {
            Ok(g) => (g.into_generator(), None),
            Err(err) => fallback(format!("could not load model {}: {err:#}", path.display())),
        },
    }
}

/// A model as the command line needs it: the concrete kind, to score notes with it.
pub enum LoadedModel {
    /// Boxed: it is three times the size of a Markov model.
    Neural(Box<NeuralGenerator>),
    Markov(MarkovModel),
}

impl LoadedModel {
    pub fn into_generator(self) -> Box<dyn Generator> {
        match self {
            Self::Neural(g) => g,
            Self::Markov(m) => Box::new(MarkovGenerator::new(m)),
        }
    }
}

/// Loads exactly the model asked for, or says why it cannot: `default` and `markov` are
/// the models embedded in the binary (wherever it runs), a path is read from disk.
pub fn load_model(choice: &ModelChoice) -> anyhow::Result<LoadedModel> {
    match choice {
        ModelChoice::Markov => Ok(LoadedModel::Markov(
            MarkovModel::from_bytes(EMBEDDED_MARKOV)
                .context("the shipped Markov model is damaged")?,
        )),
        ModelChoice::Default => Ok(LoadedModel::Neural(Box::new(
            embedded_neural().context("the shipped neural model is unusable")?,
        ))),
        ModelChoice::Path(path) => {
            load_path(path).with_context(|| format!("could not load model {}", path.display()))
        }
    }
}

/// [`load_model`] as a generator: no fallback, for the command line.
pub fn load_strict(choice: &ModelChoice) -> anyhow::Result<Box<dyn Generator>> {
    Ok(load_model(choice)?.into_generator())
}

/// The Markov model, with the reason it is used instead of the model asked for.
fn fallback(why: String) -> (Box<dyn Generator>, Option<String>) {
    let reason = format!("{why}; using the shipped Markov model");
    nice_plug::nice_log!("melodist: {reason}");
    (embedded_markov(), Some(reason))
}

/// A folder is a neural model (`config.json` + `model.safetensors`); a file a Markov model.
fn load_path(path: &Path) -> anyhow::Result<LoadedModel> {
    if path.is_dir() {
        Ok(LoadedModel::Neural(Box::new(NeuralGenerator::load(path)?)))
    } else {
        Ok(LoadedModel::Markov(MarkovModel::load(path)?))
    }
}

/// The shipped neural model with its originality guard.
fn embedded_neural() -> anyhow::Result<NeuralGenerator> {
    NeuralGenerator::from_bytes(EMBEDDED_NEURAL_CONFIG, EMBEDDED_NEURAL_WEIGHTS)?
        .with_guard(EMBEDDED_NEURAL_GUARD)
}

/// The shipped Markov model. Its bytes are checked at test time; should they ever be
/// damaged the generator still runs on an untrained (uniform, in-key) model.
pub fn embedded_markov() -> Box<dyn Generator> {
    let model = MarkovModel::from_bytes(EMBEDDED_MARKOV).unwrap_or_default();
    Box::new(MarkovGenerator::new(model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_markov_model_is_valid_and_trained() {
        let m = MarkovModel::from_bytes(EMBEDDED_MARKOV).expect("models/markov.bin must load");
        assert!(
            m.trained_melodies > 100,
            "only {} melodies",
            m.trained_melodies
        );
    }

    #[test]
    fn default_is_the_shipped_neural_model() {
        let (g, why) = load(&ModelChoice::Default);
        assert_eq!(why, None);
        assert_ne!(g.name(), "markov");
        assert!(
            embedded_neural().unwrap().guard_windows() > 100_000,
            "the shipped guard indexes the corpus"
        );
    }

    #[test]
    fn missing_or_corrupt_model_falls_back_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (g, why) = load(&ModelChoice::Path(dir.path().join("nope.bin")));
        assert_eq!(g.name(), "markov");
        assert!(why.unwrap().contains("nope.bin"));
        let bad = dir.path().join("bad.bin");
        std::fs::write(&bad, b"MLDMKV01 garbage garbage garbage").unwrap();
        let (_, why) = load(&ModelChoice::Path(bad));
        assert!(why.unwrap().contains("corrupt"));
    }

    #[test]
    fn strict_loading_uses_the_embedded_models_and_fails_on_a_bad_path() {
        assert!(matches!(
            load_model(&ModelChoice::Markov),
            Ok(LoadedModel::Markov(_))
        ));
        assert!(matches!(
            load_model(&ModelChoice::Default),
            Ok(LoadedModel::Neural(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.bin");
        let err = load_strict(&ModelChoice::Path(missing))
            .err()
            .expect("no fallback");
        let message = format!("{err:#}");
        assert!(message.contains("could not load model"), "{message}");
        assert!(message.contains("nope.bin"), "{message}");
        // An empty folder is not a neural model either.
        assert!(load_strict(&ModelChoice::Path(dir.path().to_path_buf())).is_err());
    }
}
