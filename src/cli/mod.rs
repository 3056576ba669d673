//! Implementations of the `melodist` subcommands (the binary in `src/main.rs` only parses).

pub mod copyguard;
pub mod eval;
pub mod eval_recs;
pub mod generate;
pub mod recommend;
pub mod sessions;
pub mod stats;
pub mod train;
pub mod train_markov;
