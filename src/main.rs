//! The `melodist` command line: generate melodies to MIDI files, train and evaluate models,
//! and work with the local session history.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use melodist::cli;

#[derive(Parser)]
#[command(
    name = "melodist",
    version,
    about = "Melodist: live AI melodies, on your machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a melody and write it to a standard MIDI file.
    Generate(cli::generate::Args),
    /// Train the Markov baseline from folders of MIDI files.
    TrainMarkov(cli::train_markov::Args),
    /// Train or fine-tune the neural melody model from folders of MIDI files.
    Train(cli::train::Args),
    /// Build a neural model's originality guard (never copy 13 notes of these tunes).
    Copyguard(cli::copyguard::Args),
    /// Bits per note of a model (neural or Markov) over folders of MIDI files.
    Eval(cli::eval::Args),
    /// Generate many phrases and compare their statistics with a corpus.
    Stats(cli::stats::Args),
    /// Rank the style presets for a context, with reasons, from your session history.
    Recommend(cli::recommend::Args),
    /// Export, import or forget your local session history.
    Sessions(cli::sessions::Args),
    /// Evaluate the preset recommenders offline (simulator, local history, --log FILE).
    EvalRecs(cli::eval_recs::Args),
    /// A learned realism critic: train one for a generator, or compare generators with it.
    Critic(cli::critic::Args),
    /// Train the melody VAE (variations and morphs) from folders of MIDI files.
    TrainVae(cli::train_vae::Args),
    /// Write variations of a hook with the melody VAE.
    Vary(cli::vary::VaryArgs),
    /// Write the morph between two hooks with the melody VAE, step by step.
    Morph(cli::vary::MorphArgs),
    /// Serve the models and users' history over HTTP (`serve token add NAME` for tokens).
    Serve(melodist::serve::Args),
    // New subcommands go here, one line each, implemented in `src/cli/<name>.rs`.
}

/// Lets an option's value that looks like a negative number reach its value parser, so
/// `--density -1` is reported as out of range rather than as an unknown argument `-1`.
fn allow_negative_numbers(mut cmd: clap::Command) -> clap::Command {
    let ids: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| a.get_action().takes_values() && !a.is_positional())
        .map(|a| a.get_id().clone())
        .collect();
    for id in ids {
        cmd = cmd.mut_arg(id, |a| a.allow_negative_numbers(true));
    }
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subcommands {
        cmd = cmd.mut_subcommand(name, allow_negative_numbers);
    }
    cmd
}

fn main() {
    let mut command = allow_negative_numbers(Cli::command());
    let cli = Cli::from_arg_matches_mut(&mut command.get_matches_mut())
        .unwrap_or_else(|err| err.format(&mut command).exit());
    let result = match cli.command {
        Command::Generate(args) => cli::generate::run(args),
        Command::TrainMarkov(args) => cli::train_markov::run(args),
        Command::Train(args) => cli::train::run(args),
        Command::Copyguard(args) => cli::copyguard::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Stats(args) => cli::stats::run(args),
        Command::Recommend(args) => cli::recommend::run(args),
        Command::Sessions(args) => cli::sessions::run(args),
        Command::EvalRecs(args) => cli::eval_recs::run(args),
        Command::TrainVae(args) => cli::train_vae::run(args),
        Command::Vary(args) => cli::vary::run_vary(args),
        Command::Morph(args) => cli::vary::run_morph(args),
        Command::Critic(args) => cli::critic::run(args),
        Command::Serve(args) => melodist::serve::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
