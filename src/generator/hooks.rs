//! Hook slots A and B, *Vary* and *Morph*: the hook that loop mode repeats.
//!
//! Loop mode's hook (repeat 0, see [`super::looping`]) is built here:
//! - **A** is the captured hook in slot A, or else the seed's own hook (the first bars
//!   Generate mode would play);
//! - **Vary** (pressed `vary_step` times) replaces A by a variation of it, each press
//!   moving the latent code a distance set by the *Variation* knob towards a random point
//!   of the prior ([`crate::model::variation::vary`]), chained from the previous press;
//! - **Morph** `t` plays the spherical interpolation from (varied) A to **B** — slot B,
//!   or else the hook of a new idea (the seed's neighbour) — re-decoded at each loop
//!   boundary (the scheduler holds a Morph change back until the loop ends).
//!
//! With the VAE unusable (missing or damaged weights) the same controls act on the notes
//! instead: Vary moves a share of the pitches by a scale step, Morph swaps bars from A to
//! B one by one. Every path is a pure function of (settings, slots, meter), so a bar
//! sounds the same whether reached by playing through or by jumping there.

use super::form::{Section, extend_section};
use super::loader::EMBEDDED_NEURAL_GUARD;
use super::looping::vary_pitches;
use super::{GenSettings, Generator, Phrase, perform};
use crate::midi::MelodyNote;
use crate::model::copyguard::CopyGuard;
use crate::model::morph::MorphPath;
use crate::model::variation::{ChordFit, DecodeRules, Encoded, PhraseContext, VaeModel, vary};
use crate::music::{BeatNote, Meter, Scale, SeedRng};
use nice_plug::params::persist::PersistentField;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The shipped VAE, embedded so the plugin bundle is self-contained.
pub const EMBEDDED_VAE_CONFIG: &[u8] = include_bytes!("../../models/vae/config.json");
pub const EMBEDDED_VAE_WEIGHTS: &[u8] = include_bytes!("../../models/vae/model.safetensors");
/// Environment variable naming a VAE folder to use instead of the shipped one.
pub const VAE_ENV: &str = "MELODIST_VAE";
/// The form's A′ phrases: how far their codes move from A's, and how strongly the decoder
/// leans towards A's notes (a logit bonus, as a morph's ends). Measured over 193 varied
/// phrases of the shipped LSTM: 80% of A's notes stay at *Variation* 0, 67% at 0.5, 52% at
/// 1 (the temperature follows the knob), so the phrase is heard as the same idea, moved.
const FORM_VARY_DISTANCE: f32 = 0.3;
const FORM_VARY_LEAN: f32 = 4.0;
/// Morph positions are heard in steps of 1/32, so automation noise never re-decodes.
pub const MORPH_STEPS: f32 = 32.0;

/// A captured hook: whole bars in the meter it was played in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    pub meter: Meter,
    /// One list per bar, notes relative to their bar line.
    pub bars: Vec<Vec<BeatNote>>,
}

impl Hook {
    /// Notes in quarter notes from the hook's start (for capture and `.mid` files).
    pub fn from_notes(notes: &[MelodyNote], meter: Meter, bars: usize) -> Self {
        let bar_len = meter.beats_per_bar();
        let mut out = vec![Vec::new(); bars.max(1)];
        for n in notes {
            let bar = (n.start / bar_len).floor();
            if bar < 0.0 || bar as usize >= out.len() {
                continue;
            }
            let start = n.start - bar * bar_len;
            out[bar as usize].push(BeatNote {
                start,
                duration: n.duration.min(bar_len - start),
                pitch: n.pitch,
                velocity: n.velocity,
            });
        }
        Self { meter, bars: out }
    }

    pub fn note_count(&self) -> usize {
        self.bars.iter().map(Vec::len).sum()
    }

    /// The notes in quarter notes from the hook's start.
    pub fn notes(&self) -> Vec<MelodyNote> {
        let bar_len = self.meter.beats_per_bar();
        (self.bars.iter().enumerate())
            .flat_map(|(b, bar)| {
                bar.iter().map(move |n| MelodyNote {
                    start: b as f64 * bar_len + n.start,
                    duration: n.duration,
                    pitch: n.pitch,
                    velocity: n.velocity,
                })
            })
            .collect()
    }

    /// The hook as `length` bars of `meter`: re-barred if it was captured in another meter,
    /// repeated when shorter, cut when longer.
    pub fn fit(&self, meter: Meter, length: usize) -> Phrase {
        let mut bars = if self.meter == meter {
            self.bars.clone()
        } else {
            let total = self.bars.len() as f64 * self.meter.beats_per_bar();
            let count = (total / meter.beats_per_bar()).ceil().max(1.0) as usize;
            Hook::from_notes(&self.notes(), meter, count).bars
        };
        if bars.is_empty() {
            bars.push(Vec::new());
        }
        let source = bars.clone();
        while bars.len() < length {
            bars.extend(source.iter().cloned());
        }
        bars.truncate(length);
        bars
    }
}

/// What slots A and B hold (`None`: the seed's hook for A, a new idea's for B).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HookSlots {
    pub a: Option<Hook>,
    pub b: Option<Hook>,
}

/// Which slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

/// The slots as the plugin shares them: the editor writes (capture, clear), the worker
/// reads, the project saves them (`#[persist]`), and the audio thread reads only the
/// version, an atomic that changes with every write, so the scheduler redoes the loop.
#[derive(Debug, Clone, Default)]
pub struct HookBank(Arc<BankInner>);

#[derive(Debug, Default)]
struct BankInner {
    slots: Mutex<HookSlots>,
    version: AtomicU32,
}

impl HookBank {
    /// Changes whenever the slots do. Lock-free: read by `process()`.
    pub fn version(&self) -> u32 {
        self.0.version.load(Ordering::Acquire)
    }

    pub fn slots(&self) -> HookSlots {
        self.0.slots.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn set(&self, slot: Slot, hook: Option<Hook>) {
        if let Ok(mut slots) = self.0.slots.lock() {
            match slot {
                Slot::A => slots.a = hook,
                Slot::B => slots.b = hook,
            }
        }
        self.0.version.fetch_add(1, Ordering::AcqRel);
    }
}

impl<'a> PersistentField<'a, HookSlots> for HookBank {
    fn set(&self, new_value: HookSlots) {
        if let Ok(mut slots) = self.0.slots.lock() {
            *slots = new_value;
        }
        self.0.version.fetch_add(1, Ordering::AcqRel);
    }

    fn map<F, R>(&self, f: F) -> R
    where
        F: Fn(&HookSlots) -> R,
    {
        f(&self.slots())
    }
}

/// The VAE and the originality guard its decodings pass, or why there is no VAE (then
/// Vary, Morph and the form's varied phrases move notes instead). Loaded once per process
/// and shared: the loop's hooks and the form plan read the same model.
pub struct LoadedVae {
    model: Result<VaeModel, String>,
    /// The LSTM's originality guard, so decoded phrases never copy a training tune either.
    guard: CopyGuard,
}

impl LoadedVae {
    /// The VAE in `MELODIST_VAE` if set, else the shipped one: loaded on first use, then
    /// shared by every caller in the process.
    pub fn shared() -> Arc<LoadedVae> {
        static SHARED: OnceLock<Arc<LoadedVae>> = OnceLock::new();
        let load = || match std::env::var_os(VAE_ENV) {
            Some(dir) => Self::from_dir(std::path::Path::new(&dir)),
            None => Self::from(VaeModel::load(EMBEDDED_VAE_CONFIG, EMBEDDED_VAE_WEIGHTS)),
        };
        SHARED.get_or_init(|| Arc::new(load())).clone()
    }

    /// The VAE in `dir`, or the note-level fallback and why.
    pub fn from_dir(dir: &std::path::Path) -> Self {
        Self::from(VaeModel::load_dir(dir))
    }

    fn from(vae: anyhow::Result<VaeModel>) -> Self {
        // Only decoded phrases need the guard; the note-level fallback keeps the notes' runs.
        let guard = match vae {
            Ok(_) => CopyGuard::from_bytes(EMBEDDED_NEURAL_GUARD).unwrap_or_default(),
            Err(_) => CopyGuard::default(),
        };
        Self {
            guard,
            model: vae.map_err(|err| {
                format!("Vary and Morph move notes instead of using the VAE: {err:#}")
            }),
        }
    }

    /// No VAE: the note-level fallback (tests, and the command line without one).
    pub fn none(why: &str) -> Self {
        Self::from(Err(anyhow::anyhow!("{why}")))
    }

    /// Why the VAE is not in use, if it is not.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.model.as_ref().err().map(String::as_str)
    }

    /// The form's A′ (`form::Role::Vary`): `phrase` with its bars but the last rewritten
    /// through the VAE, its codes moved [`FORM_VARY_DISTANCE`] towards the prior and
    /// decoded leaning towards its notes, under the key, register and `chords` (per tick
    /// from its first bar); the last bar, the cadence, stays. `None` without a VAE or for
    /// a phrase with no notes: the caller then moves notes by scale steps.
    pub fn vary_phrase(
        &self,
        phrase: &Phrase,
        settings: &GenSettings,
        meter: Meter,
        chords: &[u16],
        seed: u64,
    ) -> Option<Phrase> {
        let vae = self.model.as_ref().ok()?;
        let context = PhraseContext {
            meter,
            key: settings.key,
            style: settings.style,
        };
        let hook = Hook {
            meter,
            bars: phrase.clone(),
        };
        let notes = hook.notes();
        let code = vae.encode(&notes, context).ok()?;
        let varied = vary(&code, FORM_VARY_DISTANCE, seed);
        let rules = decode_rules(settings, meter, chords);
        let leans = vae.leans(&notes, context, FORM_VARY_LEAN);
        let notes = (vae.decode_original(&varied, &rules, seed, &leans, &self.guard)).ok()?;
        let mut bars = Hook::from_notes(&notes, meter, phrase.len()).bars;
        perform::apply(
            &mut bars,
            settings,
            meter,
            &mut SeedRng::derive(&[seed, 0x9e]),
        );
        let cadence = phrase.len().checked_sub(1)?;
        bars[cadence] = phrase[cadence].clone();
        Some(bars)
    }
}

/// The loop's hook controls: the VAE, and the ends A and B kept while only Morph, Vary or
/// Evolve change.
pub struct Variations {
    vae: Arc<LoadedVae>,
    ends: Option<Ends>,
}

impl Variations {
    /// The VAE in `MELODIST_VAE` if set, else the shipped one ([`LoadedVae::shared`]).
    pub fn load() -> Self {
        Self::with(LoadedVae::shared())
    }

    pub fn with(vae: Arc<LoadedVae>) -> Self {
        Self { vae, ends: None }
    }

    /// The VAE in `dir`, or the note-level fallback and why.
    pub fn from_dir(dir: &std::path::Path) -> Self {
        Self::with(Arc::new(LoadedVae::from_dir(dir)))
    }

    /// No VAE: the note-level fallback (tests, and the command line without one).
    pub fn none(why: &str) -> Self {
        Self::with(Arc::new(LoadedVae::none(why)))
    }

    /// The VAE these controls use (the form plan's varied phrases use it too).
    pub fn vae(&self) -> &Arc<LoadedVae> {
        &self.vae
    }

    /// Why the VAE is not in use, if it is not.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.vae.fallback_reason()
    }

    /// Repeat 0 of the loop: A, varied and morphed towards B as the settings ask.
    /// `chords`: one mask per tick under the loop's bars (empty: none).
    pub fn loop_hook(
        &mut self,
        generator: &mut dyn Generator,
        settings: GenSettings,
        meter: Meter,
        slots: &HookSlots,
        chords: &[u16],
    ) -> Phrase {
        let length = settings.loop_bars.max(1) as usize;
        // A and B stay while only Morph, Vary or Evolve move (automating Morph is cheap).
        let key = EndsKey {
            settings: GenSettings {
                morph: 0.0,
                vary_step: 0,
                evolve: 0.0,
                hooks_version: 0,
                ..settings
            },
            meter,
            slots: slots.clone(),
            chords: chords.to_vec(),
        };
        let vae = &self.vae;
        if self.ends.as_ref().is_none_or(|e| e.key != key) {
            let a = match &slots.a {
                Some(hook) => hook.fit(meter, length),
                None => seed_hook(generator, vae, settings, meter, length, chords),
            };
            self.ends = Some(Ends {
                key,
                a,
                b: None,
                path: None,
            });
        }
        let ends = self.ends.as_mut().expect("just set");
        let t = morph_position(settings.morph);
        if settings.vary_step == 0 && t == 0.0 {
            return ends.a.clone();
        }
        let b = ends.b.get_or_insert_with(|| match &slots.b {
            Some(hook) => hook.fit(meter, length),
            None => {
                let idea = SeedRng::derive(&[settings.seed, 0xb]).next_u64() % 100_000;
                let settings = GenSettings {
                    seed: idea,
                    ..settings
                };
                seed_hook(generator, vae, settings, meter, length, chords)
            }
        });
        if settings.vary_step == 0 && t == 1.0 {
            return b.clone();
        }
        match &vae.model {
            Ok(model) => {
                let (a, path) = (&ends.a, &mut ends.path);
                latent_hook(model, &vae.guard, settings, meter, a, b, chords, path)
                    .unwrap_or_else(|_| note_hook(settings, a, b))
            }
            Err(_) => note_hook(settings, &ends.a, b),
        }
    }
}

/// What A and B were computed from.
#[derive(Debug, Clone, PartialEq)]
struct EndsKey {
    settings: GenSettings,
    meter: Meter,
    slots: HookSlots,
    chords: Vec<u16>,
}

/// The loop's two ends, B written only once Vary or Morph needs it.
struct Ends {
    key: EndsKey,
    a: Phrase,
    b: Option<Phrase>,
    /// The morph path from A (after that many Vary presses) to B, decoded as Morph moves.
    path: Option<(u16, MorphPath)>,
}

/// The loop's first `length` bars as Generate mode writes them for `settings.seed`.
fn seed_hook(
    generator: &mut dyn Generator,
    vae: &LoadedVae,
    settings: GenSettings,
    meter: Meter,
    length: usize,
    chords: &[u16],
) -> Phrase {
    let mut hook = Vec::new();
    let section = Section {
        generator,
        vae,
        settings,
        meter,
        index: 0,
    };
    extend_section(section, &[], chords, &mut hook, length);
    while hook.len() < length {
        hook.extend(hook.clone());
    }
    hook.truncate(length);
    hook
}

/// The Morph parameter as heard: 0..=1 in steps of 1/[`MORPH_STEPS`].
pub fn morph_position(morph: f32) -> f32 {
    (morph.clamp(0.0, 1.0) * MORPH_STEPS).round() / MORPH_STEPS
}

/// How far one press of Vary moves: Variation 0 → 0.1 (a close variant), 0.5 → 0.35,
/// 1 → 0.6 (recognisably related, many notes new).
pub fn vary_distance(settings: &GenSettings) -> f32 {
    0.1 + 0.5 * settings.variation.clamp(0.0, 1.0)
}

/// The decoder's masks for `settings`: register, scale lock, chords (*Chord fit*), and a
/// temperature set by the *Variation* knob (lower than the LSTM's: the code already says
/// what to play).
fn decode_rules<'a>(settings: &GenSettings, meter: Meter, chords: &'a [u16]) -> DecodeRules<'a> {
    let (low, high) = settings.register();
    DecodeRules {
        low,
        high,
        scale_lock: settings.key.scale != Scale::Chromatic,
        temperature: 0.15 + 0.3 * settings.variation.clamp(0.0, 1.0),
        chords: ChordFit::new(chords, settings.chord_fit, meter),
        ..DecodeRules::default()
    }
}

/// The seed of press `step`'s variation (and of its decode).
fn step_seed(settings: &GenSettings, step: u64) -> u64 {
    SeedRng::derive(&[settings.seed, 0x7a41, step]).next_u64()
}

/// Vary and Morph in the VAE's latent space, decoded under the key and register. Morph
/// positions are points of one [`MorphPath`], so turning the knob towards B never steps back.
#[allow(clippy::too_many_arguments)] // the hook's ends, masks and cached path
fn latent_hook(
    vae: &VaeModel,
    guard: &CopyGuard,
    settings: GenSettings,
    meter: Meter,
    a: &Phrase,
    b: &Phrase,
    chords: &[u16],
    path: &mut Option<(u16, MorphPath)>,
) -> anyhow::Result<Phrase> {
    let context = PhraseContext {
        meter,
        key: settings.key,
        style: settings.style,
    };
    let to_notes = |bars: &Phrase| {
        Hook {
            meter,
            bars: bars.clone(),
        }
        .notes()
    };
    let mut code = vae.encode(&to_notes(a), context)?;
    for step in 1..=settings.vary_step as u64 {
        code = vary(&code, vary_distance(&settings), step_seed(&settings, step));
    }
    let rules = decode_rules(&settings, meter, chords);
    let rng_at =
        |t: f32| SeedRng::derive(&[settings.seed, settings.vary_step as u64, t.to_bits() as u64]);
    // What plays at Morph 0: A itself, or its latest variation.
    let varied = |code: &Encoded| match settings.vary_step {
        0 => Ok(to_notes(a)),
        _ => vae.decode_original(code, &rules, rng_at(0.0).next_u64(), &[], guard),
    };
    let t = morph_position(settings.morph);
    let notes = if t == 0.0 {
        varied(&code)?
    } else {
        let path = match path {
            Some((step, path)) if *step == settings.vary_step => path,
            _ => {
                let start = varied(&code)?;
                let b_code = vae.encode(&to_notes(b), context)?;
                let seed =
                    SeedRng::derive(&[settings.seed, settings.vary_step as u64, 0x6d]).next_u64();
                let new = MorphPath::new(
                    vae,
                    code,
                    b_code,
                    start,
                    to_notes(b),
                    MORPH_STEPS as usize,
                    seed,
                );
                &mut path.insert((settings.vary_step, new)).1
            }
        };
        let point = (t * MORPH_STEPS).round() as usize;
        path.point(point, vae, &rules, guard)?.to_vec()
    };
    let mut bars = Hook::from_notes(&notes, meter, a.len()).bars;
    let mut feel = SeedRng::derive(&[
        settings.seed,
        settings.vary_step as u64,
        t.to_bits() as u64,
        0x9e,
    ]);
    perform::apply(&mut bars, &settings, meter, &mut feel);
    Ok(bars)
}

/// Vary and Morph without the VAE: Vary moves pitches by scale steps, Morph takes bars
/// from B one by one (in an order drawn from the seed) until all are B's.
fn note_hook(settings: GenSettings, a: &Phrase, b: &Phrase) -> Phrase {
    let mut bars = a.clone();
    for step in 1..=settings.vary_step as u64 {
        let mut rng = SeedRng::derive(&[step_seed(&settings, step)]);
        vary_pitches(
            &mut bars,
            settings,
            0.6 * vary_distance(&settings),
            &mut rng,
        );
    }
    let t = morph_position(settings.morph);
    let mut order: Vec<usize> = (0..bars.len()).collect();
    let mut rng = SeedRng::derive(&[settings.seed, 0x0b]);
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let from_b = (t * bars.len() as f32).round() as usize;
    for &i in &order[..from_b] {
        bars[i] = b[i].clone();
    }
    bars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::loader::embedded_markov;
    use crate::model::grid::{TPQ, bar_ticks, strong_beat_ticks};
    use crate::model::morph::monotonicity;
    use crate::music::{Key, PitchClass};

    fn settings(morph: f32, vary_step: u16) -> GenSettings {
        GenSettings {
            seed: 11,
            loop_bars: 4,
            morph,
            vary_step,
            key: Key::new(PitchClass::D, Scale::Minor),
            low: 62,
            high: 81,
            ..GenSettings::default()
        }
    }

    /// `bars` bars of eighth notes cycling through `pitches`.
    fn hook_of(pitches: &[u8], meter: Meter, bars: usize) -> Hook {
        let count = (bars as f64 * meter.beats_per_bar() * 2.0) as usize;
        let notes: Vec<MelodyNote> = (0..count)
            .map(|i| MelodyNote {
                start: i as f64 * 0.5,
                duration: 0.5,
                pitch: pitches[i % pitches.len()],
                velocity: 90,
            })
            .collect();
        Hook::from_notes(&notes, meter, bars)
    }

    fn hook(pitches: &[u8], meter: Meter) -> Hook {
        hook_of(pitches, meter, 4)
    }

    /// Slots A and B holding two captured 4-bar hooks in D minor.
    fn captured(meter: Meter) -> HookSlots {
        HookSlots {
            a: Some(hook(&[62, 65, 69, 67, 65, 64, 62, 69], meter)),
            b: Some(hook(&[74, 72, 70, 69, 67, 65, 64, 62], meter)),
        }
    }

    fn shipped() -> Variations {
        let v = Variations::load();
        assert_eq!(v.fallback_reason(), None, "the shipped VAE must load");
        v
    }

    fn all_in_rules(bars: &Phrase, s: &GenSettings, meter: Meter) {
        for (i, bar) in bars.iter().enumerate() {
            for n in bar {
                assert!(s.key.contains(n.pitch), "bar {i}: {} off the key", n.pitch);
                assert!((s.low..=s.high).contains(&n.pitch), "bar {i}: {}", n.pitch);
                assert!(n.start >= 0.0 && n.start + n.duration <= meter.beats_per_bar() + 1e-9);
            }
        }
    }

    #[test]
    fn morph_ends_are_a_and_b_exactly() {
        let meter = Meter::new(4, 4);
        let slots = captured(meter);
        let mut g = embedded_markov();
        let mut v = shipped();
        let mut at = |t| v.loop_hook(g.as_mut(), settings(t, 0), meter, &slots, &[]);
        assert_eq!(at(0.0), slots.a.as_ref().unwrap().fit(meter, 4));
        assert_eq!(at(1.0), slots.b.as_ref().unwrap().fit(meter, 4));
        // In between is a third melody, in the key and register, the same every time.
        let mid = at(0.5);
        assert_ne!(mid, at(0.0));
        assert_ne!(mid, at(1.0));
        assert_eq!(mid, at(0.5));
        assert!(mid.iter().flatten().count() > 0);
        all_in_rules(&mid, &settings(0.5, 0), meter);
    }

    #[test]
    fn turning_morph_towards_b_never_steps_back() {
        let meter = Meter::new(4, 4);
        let mut g = embedded_markov();
        let mut v = shipped();
        let slots = HookSlots::default();
        let notes = |bars: Phrase| Hook { meter, bars }.notes();
        let sweep: Vec<_> = (0..=MORPH_STEPS as usize)
            .map(|i| {
                let t = i as f32 / MORPH_STEPS;
                notes(v.loop_hook(g.as_mut(), settings(t, 1), meter, &slots, &[]))
            })
            .collect();
        let m = monotonicity(&sweep);
        assert!(
            m.monotone(),
            "distances to A {:?}, to B {:?}",
            m.to_a,
            m.to_b
        );
        // And it does move: most knob steps change notes.
        let moves = sweep.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(moves >= 16, "{moves} of 32 steps change notes");
    }

    #[test]
    fn vary_chains_variations_of_the_seed_hook_within_the_masks() {
        let meter = Meter::new(3, 4);
        let mut g = embedded_markov();
        let mut v = shipped();
        let slots = HookSlots::default();
        let plain = v.loop_hook(g.as_mut(), settings(0.0, 0), meter, &slots, &[]);
        let once = v.loop_hook(g.as_mut(), settings(0.0, 1), meter, &slots, &[]);
        let twice = v.loop_hook(g.as_mut(), settings(0.0, 2), meter, &slots, &[]);
        assert_eq!(
            once,
            v.loop_hook(g.as_mut(), settings(0.0, 1), meter, &slots, &[])
        );
        assert_ne!(once, plain);
        assert_ne!(twice, once);
        for bars in [&once, &twice] {
            assert_eq!(bars.len(), 4);
            all_in_rules(bars, &settings(0.0, 1), meter);
        }
    }

    #[test]
    fn varied_and_morphed_hooks_sit_on_the_loops_chords() {
        let meter = Meter::new(4, 4);
        let slots = captured(meter);
        // Dm | Gm | B♭ | F, one mask per tick.
        let per_bar = bar_ticks(meter) as usize;
        let progression: [u16; 4] = [
            1 << 2 | 1 << 5 | 1 << 9,
            1 << 7 | 1 << 10 | 1 << 2,
            1 << 10 | 1 << 2 | 1 << 5,
            1 << 5 | 1 << 9 | 1,
        ];
        let chords: Vec<u16> = (0..4 * per_bar).map(|t| progression[t / per_bar]).collect();
        let strong = strong_beat_ticks(meter) as f64 / TPQ as f64;
        let mut g = embedded_markov();
        let mut v = shipped();
        // Strong-beat notes on a tone of the chord under them, as a share.
        let mut on_chord = |chords_heard: &[u16]| {
            let (mut hits, mut total) = (0, 0);
            let cases = [(0.0, 1), (0.0, 2), (0.5, 0), (0.25, 1)];
            let seeded = cases
                .into_iter()
                .flat_map(|c| (0..4).map(move |seed| (c, seed)));
            for ((morph, vary_step), seed) in seeded {
                let s = GenSettings {
                    chord_fit: 0.6,
                    seed,
                    ..settings(morph, vary_step)
                };
                let bars = v.loop_hook(g.as_mut(), s, meter, &slots, chords_heard);
                all_in_rules(&bars, &s, meter);

                for (b, bar) in bars.iter().enumerate() {
                    for n in bar.iter().filter(|n| (n.start / strong).fract() == 0.0) {
                        total += 1;
                        hits += usize::from(progression[b] >> (n.pitch % 12) & 1 == 1);
                    }
                }
            }
            hits as f64 / total as f64
        };
        let (with, without) = (on_chord(&chords), on_chord(&[]));
        assert!(with >= 0.9 && with > without + 0.3, "{with} vs {without}");
    }

    #[test]
    fn without_the_vae_the_controls_act_on_notes() {
        let meter = Meter::new(4, 4);
        let slots = captured(meter);
        let mut v = Variations::none("test");
        let mut g = embedded_markov();
        let (a, b) = (slots.a.as_ref().unwrap(), slots.b.as_ref().unwrap());
        let half = v.loop_hook(g.as_mut(), settings(0.5, 0), meter, &slots, &[]);
        // Two of the four bars are B's, two are A's.
        let from = |h: &Hook| (0..4).filter(|&i| half[i] == h.fit(meter, 4)[i]).count();
        assert_eq!((from(a), from(b)), (2, 2));
        let varied = v.loop_hook(g.as_mut(), settings(0.0, 3), meter, &slots, &[]);
        assert_ne!(varied, a.fit(meter, 4));
        all_in_rules(&varied, &settings(0.0, 3), meter);
    }

    #[test]
    fn a_damaged_vae_is_a_reason_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), EMBEDDED_VAE_CONFIG).unwrap();
        std::fs::write(
            dir.path().join("model.safetensors"),
            &EMBEDDED_VAE_WEIGHTS[..1000],
        )
        .unwrap();
        let mut v = Variations::from_dir(dir.path());
        let why = v
            .fallback_reason()
            .expect("truncated weights must not load");
        assert!(
            why.contains("does not match") && why.contains("move notes"),
            "{why}"
        );
        // The controls still work, on notes.
        let mut g = embedded_markov();
        let slots = HookSlots::default();
        let varied = v.loop_hook(g.as_mut(), settings(0.5, 1), Meter::new(4, 4), &slots, &[]);
        assert!(varied.iter().flatten().count() > 0);
        let missing = Variations::from_dir(&dir.path().join("nowhere"));
        assert!(missing.fallback_reason().unwrap().contains("cannot read"));
    }

    #[test]
    fn a_hook_from_another_meter_is_rebarred() {
        let h = hook_of(&[60, 62, 64, 65, 67, 69], Meter::new(3, 4), 1);
        let fitted = h.fit(Meter::new(4, 4), 2);
        let starts: Vec<(f64, u8)> = fitted[0].iter().map(|n| (n.start, n.pitch)).collect();
        assert_eq!(
            starts,
            vec![
                (0.0, 60),
                (0.5, 62),
                (1.0, 64),
                (1.5, 65),
                (2.0, 67),
                (2.5, 69)
            ]
        );
        assert_eq!(fitted[1], fitted[0], "a short hook repeats");
    }

    #[test]
    fn the_bank_bumps_its_version_on_every_write_and_restore() {
        let bank = HookBank::default();
        let v0 = bank.version();
        bank.set(Slot::A, Some(hook(&[60, 62], Meter::new(4, 4))));
        assert_ne!(bank.version(), v0);
        let saved = bank.map(|s| serde_json::to_string(s).unwrap());
        let restored = HookBank::default();
        let before = restored.version();
        PersistentField::set(&restored, serde_json::from_str(&saved).unwrap());
        assert_ne!(restored.version(), before);
        assert_eq!(restored.slots(), bank.slots());
    }
}
