//! Implementations of the `melodist` subcommands (the binary in `src/main.rs` only parses).

pub mod copyguard;
pub mod critic;
pub mod eval;
pub mod eval_recs;
pub mod form_measures;
pub mod generate;
pub mod recommend;
pub mod sessions;
pub mod stats;
pub mod train;
pub mod train_markov;
pub mod train_vae;
pub mod vary;

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// A clap value parser for a number inside `range`, so a bad value is an error at parse
/// time that names the range: `invalid value '5' for '--density <DENSITY>': must be
/// between 0 and 1`. Use it as `#[arg(value_parser = ranged(limits::UNIT))]`.
pub fn ranged<T>(
    range: RangeInclusive<T>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Display + Clone + Send + Sync + 'static,
{
    move |text: &str| {
        let must = || format!("must be between {} and {}", range.start(), range.end());
        match (text.trim().parse::<T>(), text.trim().parse::<f64>()) {
            // A NaN is in no range, so it fails here too.
            (Ok(value), _) if range.contains(&value) => Ok(value),
            (Ok(_), _) => Err(must()),
            // A number the type cannot hold: too large, negative or fractional for an integer.
            (Err(_), Ok(x)) if x.fract() == 0.0 => Err(must()),
            (Err(_), Ok(_)) => Err(format!("{} (a whole number)", must())),
            (Err(_), Err(_)) => Err(format!("not a number; {}", must())),
        }
    }
}

/// An `f32` range as `f64`, for options read as `f64` (e.g. `--tempo`).
pub fn widen(range: RangeInclusive<f32>) -> RangeInclusive<f64> {
    f64::from(*range.start())..=f64::from(*range.end())
}

/// [`ranged`] for a value in 0..=1 (density, variation, humanize).
pub fn unit_interval(text: &str) -> Result<f32, String> {
    ranged(crate::limits::UNIT)(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits;
    use crate::plugin::params::MelodistParams;
    use nice_plug::prelude::{FloatRange, IntRange};

    #[test]
    fn ranged_accepts_the_ends_and_names_the_range_otherwise() {
        assert_eq!(unit_interval("0"), Ok(0.0));
        assert_eq!(unit_interval("1"), Ok(1.0));
        assert_eq!(unit_interval("5"), Err("must be between 0 and 1".into()));
        assert_eq!(unit_interval("-0.1"), Err("must be between 0 and 1".into()));
        assert_eq!(unit_interval("NaN"), Err("must be between 0 and 1".into()));
        assert_eq!(
            unit_interval("busy"),
            Err("not a number; must be between 0 and 1".into())
        );
        let gate = ranged(limits::GATE);
        assert_eq!(gate("0.01"), Err("must be between 0.05 and 1".into()));
        let note = ranged(limits::MIDI_NOTE);
        assert_eq!(note("127"), Ok(127));
        assert_eq!(note("128"), Err("must be between 0 and 127".into()));
        assert_eq!(note("-1"), Err("must be between 0 and 127".into()));
        assert_eq!(
            note("60.5"),
            Err("must be between 0 and 127 (a whole number)".into())
        );
    }

    /// The command line allows what the plugin's knobs allow.
    #[test]
    fn limits_match_the_plugin_parameters() {
        let p = MelodistParams::default();
        let float = |r: FloatRange| match r {
            FloatRange::Linear { min, max } => min..=max,
            other => panic!("unexpected range {other:?}"),
        };
        let int = |r: IntRange| match r {
            IntRange::Linear { min, max } => min..=max,
            other => panic!("unexpected range {other:?}"),
        };
        let wide = |r: RangeInclusive<u8>| i32::from(*r.start())..=i32::from(*r.end());
        assert_eq!(float(p.density.range()), limits::UNIT);
        assert_eq!(float(p.variation.range()), limits::UNIT);
        assert_eq!(float(p.humanize.range()), limits::UNIT);
        assert_eq!(float(p.gate.range()), limits::GATE);
        assert_eq!(float(p.free_run_tempo.range()), limits::TEMPO);
        assert_eq!(int(p.velocity.range()), wide(limits::VELOCITY));
        assert_eq!(int(p.channel.range()), wide(limits::CHANNEL));
        assert_eq!(int(p.low.range()), limits::REGISTER_NOTE);
        assert_eq!(int(p.high.range()), limits::REGISTER_NOTE);
        let seed = int(p.seed.range());
        assert_eq!((*seed.start() as u64)..=(*seed.end() as u64), limits::SEED);
    }
}
