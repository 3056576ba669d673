//! Loop mode: what producers keep is a hook that repeats and evolves, not an endless wander.
//!
//! With *Loop length* L bars, bar `n` plays bar `n mod L` of the hook as it stands in
//! repeat `n / L`. Repeat 0 is the hook itself (slot A, or the first L bars the generator
//! writes for the seed, varied and morphed as [`super::hooks`] says); every later repeat is the previous one with a few changes, set by *Evolve*:
//! - about `0.4 × evolve` of the notes (never more than `0.5 × evolve`) move by a scale step
//!   (rhythm, length and velocity stay; the step keeps the melody's direction into that
//!   note), so Evolve 0.5 changes about a fifth of the notes per repeat, at most a quarter,
//!   and never the rhythm;
//! - above 0.6, one bar per repeat may be replaced by a newly written one (chance rising to
//!   1 at Evolve 1), so the loop drifts towards a new hook.
//!
//! Repeat `k` is a pure function of (settings, meter, k, the chords under it): it is
//! computed by chaining from the hook, so a bar sounds the same whether reached by playing
//! through or by jumping.

use super::form::ChordSource;
use super::hooks::{HookBank, Variations};
use super::{GenSettings, Generator, PHRASE_BARS, Phrase, PhraseRequest, render_phrase};
use crate::model::grid::bar_ticks;
use crate::music::{BeatNote, Meter, SeedRng};

/// Loop lengths a producer can pick, in bars (0 = loop mode off).
pub const LOOP_LENGTHS: [u8; 5] = [0, 1, 2, 4, 8];
/// Share of notes re-pitched per repeat at Evolve 1.
const PITCH_CHANGE_AT_FULL: f32 = 0.4;
/// Evolve above which whole bars start being rewritten.
const REWRITE_FROM: f32 = 0.6;

/// The settings that shape the loop (everything but the repeat count).
#[derive(Debug, Clone, PartialEq)]
struct LoopKey {
    settings: GenSettings,
    meter: Meter,
    /// The chords under the loop's bars (per tick; empty with *Chord fit* 0 or no chords).
    chords: Vec<u16>,
}

/// Remembers the latest repeat computed, so playing on costs one step per repeat.
pub struct LoopPlayer {
    hook: Option<(LoopKey, Phrase)>,
    /// The repeat whose chords the hook was written over.
    chords_from: i64,
    latest: Option<(i64, Phrase)>,
    /// Builds repeat 0 from the slots, Vary and Morph (see [`super::hooks`]).
    variations: Variations,
    slots: HookBank,
}

impl Default for LoopPlayer {
    /// No captured hooks, and Vary / Morph on notes (no VAE loaded).
    fn default() -> Self {
        Self::new(Variations::none("no VAE loaded"), HookBank::default())
    }
}

impl LoopPlayer {
    pub fn new(variations: Variations, slots: HookBank) -> Self {
        Self {
            hook: None,
            chords_from: 0,
            latest: None,
            variations,
            slots,
        }
    }

    /// Why Vary and Morph act on notes rather than through the VAE, if they do.
    pub fn variations(&self) -> &Variations {
        &self.variations
    }

    /// The notes of `bar_index` in loop mode (`settings.loop_bars > 0`). The hook sits on
    /// the chords when the progression goes round with the loop (the same chords under
    /// this repeat and the next; when they change, the hook is written again from the next
    /// pass on, so it is rewritten at most once per pass however often chords arrive).
    /// Under a
    /// progression that does not fit the loop a fixed hook cannot sit on every pass, and
    /// rewriting it each pass would stop it being a loop, so it ignores the chords.
    pub fn bar(
        &mut self,
        generator: &mut dyn Generator,
        settings: GenSettings,
        meter: Meter,
        bar_index: i64,
        chords: &dyn ChordSource,
    ) -> Vec<BeatNote> {
        let length = settings.loop_bars.max(1) as i64;
        let repeat = bar_index.div_euclid(length).max(0);
        // Chords that changed within the pass the hook was written for wait for another
        // pass (a later repeat, or an earlier one after a jump): nothing to read until then.
        let same_pass = repeat == self.chords_from
            && (self.hook.as_ref())
                .is_some_and(|(k, _)| k.settings == settings && k.meter == meter);
        if !same_pass {
            let under = |repeat: i64| chords.ticks(repeat * length, length as usize, meter);
            let chords = match settings.chord_fit > 0.0 {
                true => Some(under(repeat)).filter(|c| *c == under(repeat + 1)),
                false => None,
            };
            let key = LoopKey {
                settings,
                meter,
                chords: chords.unwrap_or_default(),
            };
            if self.hook.as_ref().is_none_or(|(k, _)| *k != key) {
                // Slot A or the start of the song's first section, varied / morphed as asked.
                let slots = self.slots.slots();
                let (v, chords) = (&mut self.variations, &key.chords);
                let hook = v.loop_hook(generator, settings, meter, &slots, chords);
                self.hook = Some((key, hook));
                self.chords_from = repeat;
                self.latest = None;
            }
        }
        let (key, hook) = self.hook.as_ref().expect("just written");
        let (mut at, mut bars) = match self.latest.take() {
            Some((k, bars)) if k <= repeat => (k, bars),
            _ => (0, hook.clone()),
        };
        while at < repeat {
            at += 1;
            evolve(generator, &mut bars, settings, meter, &key.chords, at);
        }
        let notes = bars[bar_index.rem_euclid(length) as usize].clone();
        self.latest = Some((at, bars));
        notes
    }
}

/// `count` bars from phrase `first_phrase` on, through the same path as the rest of the
/// plugin, over `chords` (per tick from the first bar).
fn write_bars(
    generator: &mut dyn Generator,
    settings: GenSettings,
    meter: Meter,
    first_phrase: i64,
    count: usize,
    chords: &[u16],
) -> Phrase {
    let mut bars = Vec::with_capacity(count);
    let mut phrase_index = first_phrase;
    while bars.len() < count {
        let request = PhraseRequest {
            settings,
            meter,
            phrase_index,
            bars: PHRASE_BARS,
            context: &[],
            shape: Default::default(),
            chords: chords
                .get(bars.len() * bar_ticks(meter) as usize..)
                .unwrap_or(&[]),
        };
        bars.extend(render_phrase(generator, &request));
        phrase_index += 1;
    }
    bars.truncate(count);
    bars
}

/// Turns repeat `repeat - 1` into repeat `repeat` (over the loop's `chords`).
fn evolve(
    generator: &mut dyn Generator,
    bars: &mut Phrase,
    settings: GenSettings,
    meter: Meter,
    chords: &[u16],
    repeat: i64,
) {
    let amount = settings.evolve.clamp(0.0, 1.0);
    if amount <= 0.0 {
        return;
    }
    let mut rng = SeedRng::derive(&[settings.seed, 0x100b, repeat as u64]);
    let rewrite_chance = ((amount - REWRITE_FROM) / (1.0 - REWRITE_FROM)).max(0.0);
    if rng.next_f32() < rewrite_chance {
        let which = (rng.next_u64() % bars.len() as u64) as usize;
        // Fresh material from phrases no repeat of the hook uses.
        let under = chords
            .get(which * bar_ticks(meter) as usize..)
            .unwrap_or(&[]);
        let fresh = write_bars(generator, settings, meter, 1_000 + repeat, 1, under);
        bars[which] = fresh.into_iter().next().unwrap_or_default();
    }
    // About 40% × Evolve of the notes move, never more than half of Evolve (≤ 25% at 0.5).
    vary_pitches(bars, settings, PITCH_CHANGE_AT_FULL * amount, &mut rng);
}

/// Moves about `share` of the notes of `bars` (never more than 1.25 × `share`) by a scale
/// step, keeping the direction the melody moved into each note; rhythm, length and
/// velocity stay. Pitches stay in the key and register.
pub fn vary_pitches(
    bars: &mut [Vec<BeatNote>],
    settings: GenSettings,
    share: f32,
    rng: &mut SeedRng,
) {
    let total = bars.iter().map(Vec::len).sum::<usize>();
    let expected = share * total as f32;
    let stochastic = expected.floor() as usize + usize::from(rng.next_f32() < expected.fract());
    let count = stochastic.min((1.25 * share * total as f32).floor() as usize);
    let mut order: Vec<usize> = (0..total).collect();
    for i in 0..count {
        let j = i + (rng.next_u64() % (total - i) as u64) as usize;
        order.swap(i, j);
    }
    let chosen = &order[..count];
    let (low, high) = settings.register();
    let mut previous: Option<u8> = None;
    for (i, note) in bars.iter_mut().flatten().enumerate() {
        let before = note.pitch;
        if chosen.contains(&i) {
            let up = match previous {
                // Keep the direction the melody moved into this note.
                Some(p) if p != before => before > p,
                _ => rng.next_f32() < 0.5,
            };
            if let Some(p) = scale_step(settings, before, up, low, high)
                .or_else(|| scale_step(settings, before, !up, low, high))
            {
                note.pitch = p;
            }
        }
        previous = Some(note.pitch);
    }
}

/// The next pitch of the key above (or below) `pitch`, inside the register.
fn scale_step(settings: GenSettings, pitch: u8, up: bool, low: u8, high: u8) -> Option<u8> {
    (1..=4u8)
        .filter_map(|d| {
            if up {
                pitch.checked_add(d)
            } else {
                pitch.checked_sub(d)
            }
        })
        .find(|&p| settings.key.contains(p))
        .filter(|p| (low..=high).contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::form::SongChords;
    use crate::generator::loader::embedded_markov;

    fn loop_settings(bars: u8, evolve: f32) -> GenSettings {
        GenSettings {
            seed: 5,
            loop_bars: bars,
            evolve,
            ..GenSettings::default()
        }
    }

    #[test]
    fn the_hook_sits_on_chords_that_go_round_with_the_loop_only() {
        let meter = Meter::new(4, 4);
        let per_bar = bar_ticks(meter) as usize;
        // C, F, G, Am in C major, a bar each; `period` bars of it, repeating.
        let progression: [u16; 4] = [
            0b1001_0001,
            0b10_0010_0001,
            0b1000_1000_0100,
            0b10_0001_0001,
        ];
        let song = |period: usize| -> Vec<u16> {
            (0..16 * per_bar)
                .map(|t| progression[(t / per_bar) % period])
                .collect()
        };
        // A varied hook (decoded by the VAE, which takes the chords), Evolve 0.
        let s = GenSettings {
            vary_step: 1,
            chord_fit: 1.0,
            ..loop_settings(4, 0.0)
        };
        let hear = |chords: &[u16]| {
            let mut g = embedded_markov();
            let mut player = LoopPlayer::new(Variations::load(), HookBank::default());
            (0..12)
                .map(|b| player.bar(g.as_mut(), s, meter, b, &SongChords(chords)))
                .collect::<Vec<_>>()
        };
        let (none, fits, off) = (hear(&[]), hear(&song(4)), hear(&song(3)));
        assert_ne!(
            fits, none,
            "a 4-bar progression under a 4-bar loop is heard"
        );
        assert_eq!(fits[..4], fits[4..8], "and the loop still repeats");
        assert_eq!(off, none, "a 3-bar progression under a 4-bar loop is not");
    }

    fn play(settings: GenSettings, bars: std::ops::Range<i64>) -> Vec<Vec<BeatNote>> {
        let mut g = embedded_markov();
        let mut player = LoopPlayer::default();
        bars.map(|b| player.bar(g.as_mut(), settings, Meter::new(4, 4), b, &SongChords(&[])))
            .collect()
    }

    #[test]
    fn evolve_zero_repeats_the_hook_exactly() {
        for length in [1u8, 2, 4, 8] {
            let bars = play(loop_settings(length, 0.0), 0..24);
            let l = length as usize;
            assert!(bars[..l].iter().any(|b| !b.is_empty()));
            for (i, bar) in bars.iter().enumerate().skip(l) {
                assert_eq!(bar, &bars[i % l], "loop of {length}: bar {i}");
            }
        }
    }

    #[test]
    fn evolve_half_changes_few_pitches_and_keeps_the_rhythm() {
        let settings = loop_settings(2, 0.5);
        let bars = play(settings, 0..40);
        let (mut notes, mut changed) = (0, 0);
        for repeat in 1..20 {
            let (now, before) = (
                &bars[repeat * 2..repeat * 2 + 2],
                &bars[repeat * 2 - 2..repeat * 2],
            );
            let (mut n, mut c) = (0, 0);
            for (a, b) in now.iter().zip(before) {
                let onsets = |v: &[BeatNote]| v.iter().map(|x| x.start).collect::<Vec<_>>();
                assert_eq!(onsets(a), onsets(b), "repeat {repeat} changed the rhythm");
                n += a.len();
                c += a.iter().zip(b).filter(|(x, y)| x.pitch != y.pitch).count();
            }
            assert!(c * 4 <= n, "repeat {repeat}: {c} of {n} notes changed");
            for note in now.iter().flatten() {
                assert!(settings.key.contains(note.pitch));
                assert!((settings.low..=settings.high).contains(&note.pitch));
            }
            (notes, changed) = (notes + n, changed + c);
        }
        assert!(
            changed > 0,
            "Evolve 0.5 never changed anything in {notes} notes"
        );
    }

    #[test]
    fn a_bar_is_the_same_reached_by_playing_or_by_jumping() {
        let settings = loop_settings(4, 0.9);
        let through = play(settings, 0..48);
        let mut g = embedded_markov();
        let mut player = LoopPlayer::default();
        for bar in [37i64, 5, 46, 12] {
            let jumped = player.bar(
                g.as_mut(),
                settings,
                Meter::new(4, 4),
                bar,
                &SongChords(&[]),
            );
            assert_eq!(jumped, through[bar as usize], "bar {bar}");
        }
        // High Evolve rewrites whole bars: the loop really drifts.
        assert_ne!(through[44..48], through[0..4]);
    }
}
