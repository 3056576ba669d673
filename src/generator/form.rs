//! Form: phrases that continue each other, hooks that repeat and vary, cadences that land.
//!
//! The song is cut into **sections** of 8, 16 or 32 bars (the *Form* control; "free" keeps
//! 16-bar sections with no repeats). Each section follows a **plan** drawn from the seed,
//! the section number and the style (how often it repeats itself is matched to the
//! corpus: reels nearly always, Bach chorales rarely): a list of 4-bar phrases, each one of
//! - `New`: written by the model, which first reads the phrase before it (continuity);
//! - `Answer(i)`: the first two bars of phrase `i`, then a new ending that closes
//!   (antecedent–consequent: "A" ends open on degree 2 or 5, "A′" closes on the tonic);
//! - `Repeat(i)`: phrase `i` again, note for note;
//! - `Vary(i)`: phrase `i` rewritten through the VAE at a short latent distance, its
//!   cadence bar kept ([`LoadedVae::vary_phrase`]); without a VAE, a few of its notes
//!   moved by a scale step (rhythm and cadence kept).
//!
//! Pairs of phrases make an 8-bar strain, as in the corpus's tunes: the first half ends
//! open, the second closes. The model is told at every note how many bars are left to the
//! strain's cadence (`PhraseShape::strain_bar`), and the cadence note itself is placed by
//! the decoder (strong beat, held, on a stable degree).
//!
//! A section is a pure function of (settings, meter, section number, the producer's
//! context): it is computed whole, phrase after phrase, from its first bar, so bar N sounds
//! the same whether reached by playing through or by jumping there, online or offline.

use super::hooks::LoadedVae;
use super::looping::vary_pitches;
use super::{
    Cadence, ContextNote, GenSettings, Generator, PHRASE_BARS, Phrase, PhraseRequest, PhraseShape,
    render_phrase,
};
use crate::model::copyguard::COPY_NOTES;
use crate::model::grid::{TPQ, bar_ticks};
use crate::model::tokenizer::Style;
use crate::music::{BeatNote, Meter, SeedRng};
use std::sync::Arc;

/// Section lengths the *Form* control offers, in bars (0 = free: no repeats).
pub const FORM_LENGTHS: [u8; 4] = [0, 8, 16, 32];
/// Bars per section when the form is free.
const FREE_SECTION: u8 = 16;
/// Share of a varied phrase's notes (outside its cadence bar) that move.
const VARY_SHARE: f32 = 0.2;

/// What one phrase of a plan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    New,
    Answer(usize),
    Repeat(usize),
    Vary(usize),
}

/// One phrase of a section's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub role: Role,
    pub cadence: Cadence,
}

/// Bars per section for the *Form* setting.
pub fn section_bars(form: u8) -> u8 {
    if FORM_LENGTHS[1..].contains(&form) {
        form
    } else {
        FREE_SECTION
    }
}

/// How often a style's sections are through-composed (new phrases only) rather than built
/// on repeats, matched to the corpus: with repeats the plans give about 32.5% bars identical
/// to an earlier bar, through-composed about 5% (`melodist stats`), and each style's tunes
/// have their own share (reels 31%, airs 18%, Bach chorales 7%; all tunes 22%), so the
/// through-composed share is (32.5 − share) / 27.5.
fn through_composed_share(style: Style) -> f32 {
    let corpus_identical_bars = match style {
        Style::Reel => 31.0,
        Style::Jig => 27.0,
        Style::SlipJig => 33.0,
        Style::Hornpipe => 21.0,
        Style::March => 26.0,
        Style::Air => 18.0,
        Style::Chorale => 7.0,
        Style::Dance => 24.0,
        Style::Any | Style::Waltz | Style::Polka => 22.0,
    };
    ((32.5 - corpus_identical_bars) / 27.5f32).clamp(0.0, 1.0)
}

/// The plan of section `section` for the *Form* setting `form` (see the module doc).
pub fn plan(form: u8, style: Style, seed: u64, section: i64) -> Vec<Planned> {
    use Cadence::{Close, Open};
    use Role::*;
    let phrases = section_bars(form) as usize / PHRASE_BARS;
    let strains = |roles: &[Role]| -> Vec<Planned> {
        (roles.iter().enumerate())
            .map(|(i, &role)| Planned {
                role,
                cadence: if i % 2 == 0 { Open } else { Close },
            })
            .collect()
    };
    if form == 0 {
        return strains(&vec![New; phrases]);
    }
    let mut rng = SeedRng::derive(&[seed, 0xf0f0, section as u64]);
    let through = rng.next_f32() < through_composed_share(style);
    let first: Vec<Role> = match (through, rng.next_u64() % 4) {
        (true, _) => vec![New, New, New, New],
        (false, 0) => vec![New, Answer(0), New, Answer(2)], // AA′BB′
        (false, 1) => vec![New, Answer(0), New, Repeat(1)], // AA′BA′
        (false, 2) => vec![New, New, Repeat(0), Vary(1)],   // ABAB″
        (false, _) => vec![New, Answer(0), Vary(0), Answer(2)], // AA′A″A‴
    };
    // Eight bars: the first strain of the plan.
    let mut roles: Vec<Role> = first.into_iter().take(phrases.min(4)).collect();
    // Thirty-two bars: the sixteen again, its new phrases varied.
    while roles.len() < phrases {
        let i = roles.len() - 4;
        roles.push(match roles[i] {
            New => Vary(i),
            Answer(j) => Answer(j + 4),
            Repeat(j) => Repeat(j + 4),
            Vary(j) => Vary(j + 4),
        });
    }
    strains(&roles)
}

/// The settings a section depends on (everything but the bar asked for).
#[derive(Debug, Clone, Copy, PartialEq)]
struct SectionKey {
    settings: GenSettings,
    meter: Meter,
    section: i64,
    context_version: u64,
}

/// Plays the form: remembers the section being played, written phrase by phrase as the
/// bars are asked for, so playing on costs one phrase every 4 bars.
pub struct FormPlayer {
    section: Option<(SectionKey, Phrase)>,
    /// Writes the varied phrases (A′).
    vae: Arc<LoadedVae>,
    /// How long writing the last section took (µs), for the editor's status line.
    pub last_write_us: u32,
}

impl Default for FormPlayer {
    /// Varied phrases through the shared VAE ([`LoadedVae::shared`]).
    fn default() -> Self {
        Self::new(LoadedVae::shared())
    }
}

impl FormPlayer {
    pub fn new(vae: Arc<LoadedVae>) -> Self {
        Self {
            section: None,
            vae,
            last_write_us: 0,
        }
    }

    /// The notes of `bar_index`. `context` is the producer's phrase (Continue mode; it
    /// leads into each section's first phrase), `chords` the chords under the song, and
    /// `context_version` says when either changed.
    #[allow(clippy::too_many_arguments)]
    pub fn bar(
        &mut self,
        generator: &mut dyn Generator,
        settings: GenSettings,
        meter: Meter,
        bar_index: i64,
        context: &[ContextNote],
        chords: &dyn ChordSource,
        context_version: u64,
    ) -> Vec<BeatNote> {
        let length = section_bars(settings.form) as i64;
        let section = bar_index.div_euclid(length);
        let key = SectionKey {
            settings,
            meter,
            section,
            context_version,
        };
        if self.section.as_ref().is_none_or(|(k, _)| *k != key) {
            self.section = Some((key, Vec::new()));
        }
        let (_, bars) = self.section.as_mut().expect("just set");
        // Only the phrases up to this bar: after a change the first bar is ready after
        // one phrase, not a whole section (later bars extend it).
        let needed = bar_index.rem_euclid(length) as usize + 1;
        if bars.len() < needed {
            let started = std::time::Instant::now();
            let chords = chords.ticks(section * length, length as usize, meter);
            let section = Section {
                generator,
                vae: &self.vae,
                settings,
                meter,
                index: section,
            };
            extend_section(section, context, &chords, bars, needed);
            self.last_write_us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        }
        bars[bar_index.rem_euclid(length) as usize].clone()
    }
}

/// Where the chords under the melody come from: a progression given up front (`generate
/// --chords`), or the chords the producer plays live (`engine::worker`).
pub trait ChordSource {
    /// The chord masks of bars `first_bar..first_bar + bars`, one per tick (see
    /// [`PhraseRequest::chords`]); empty when there are none.
    fn ticks(&self, first_bar: i64, bars: usize, meter: Meter) -> Vec<u16>;
}

/// A whole song's chords, one mask per tick from bar 0 (`SongChords(&[])`: none).
pub struct SongChords<'a>(pub &'a [u16]);

impl ChordSource for SongChords<'_> {
    fn ticks(&self, first_bar: i64, bars: usize, meter: Meter) -> Vec<u16> {
        let per_bar = bar_ticks(meter) as usize;
        let from = (first_bar.max(0) as usize * per_bar).min(self.0.len());
        let to = (from + bars * per_bar).min(self.0.len());
        self.0[from..to].to_vec()
    }
}

/// A section to write: what writes it, and for which settings, meter and section number.
pub struct Section<'a> {
    pub generator: &'a mut dyn Generator,
    /// Writes the varied phrases (or says why it cannot: then notes move by scale steps).
    pub vae: &'a LoadedVae,
    pub settings: GenSettings,
    pub meter: Meter,
    pub index: i64,
}

/// All the bars of one section, phrase by phrase (`chords` per tick from its first bar).
pub fn write_section(section: Section, context: &[ContextNote], chords: &[u16]) -> Phrase {
    let mut bars = Vec::new();
    extend_section(section, context, chords, &mut bars, usize::MAX);
    bars
}

/// Writes the next phrases of a section into `bars` (its first bars, whole phrases) until
/// it holds `bars_needed` bars or the section ends. A phrase only copies phrases before
/// it, so a section written in steps is the section [`write_section`] writes at once, and
/// a player asked for an early bar need not wait for the whole section.
pub fn extend_section(
    section: Section,
    context: &[ContextNote],
    chords: &[u16],
    bars: &mut Phrase,
    bars_needed: usize,
) {
    let Section {
        generator,
        vae,
        settings,
        meter,
        index: section,
    } = section;
    let ticks_of = |bar: usize| bar * bar_ticks(meter) as usize;
    let chords_from = |bar: usize| chords.get(ticks_of(bar)..).unwrap_or(&[]);
    let plan = plan(settings.form, settings.style, settings.seed, section);
    // A copy (answer, repeat, variation) is only heard over the chords it was written
    // on: under other chords the phrase is written anew.
    let same_chords = |from: usize, to: usize, bars: usize| {
        let span = |b: usize| chords.get(ticks_of(b)..ticks_of(b + bars)).unwrap_or(&[]);
        span(from) == span(to)
    };
    for (k, planned) in plan.iter().enumerate().skip(bars.len() / PHRASE_BARS) {
        if bars.len() >= bars_needed {
            break;
        }
        let phrase_index = section * plan.len() as i64 + k as i64;
        let role = match planned.role {
            Role::Answer(i) if !same_chords(i * PHRASE_BARS, k * PHRASE_BARS, 2) => Role::New,
            Role::Repeat(i) | Role::Vary(i)
                if !same_chords(i * PHRASE_BARS, k * PHRASE_BARS, PHRASE_BARS) =>
            {
                Role::New
            }
            role => role,
        };
        let phrase_of =
            |bars: &Phrase, i: usize| bars[i * PHRASE_BARS..(i + 1) * PHRASE_BARS].to_vec();
        let cadence_bars = |c: Cadence| if c == Cadence::Open { 4 } else { 0 };
        let write_new = |generator: &mut dyn Generator, bars: &Phrase| {
            let lead_in = if k == 0 {
                context.to_vec()
            } else {
                context_of(&bars[(k - 1) * PHRASE_BARS..], meter)
            };
            let request = PhraseRequest {
                settings,
                meter,
                phrase_index,
                bars: PHRASE_BARS,
                context: &lead_in,
                shape: PhraseShape {
                    strain_bar: cadence_bars(planned.cadence) + 3,
                    cadence: Some(planned.cadence),
                },
                chords: chords_from(k * PHRASE_BARS),
            };
            render_phrase(generator, &request)
        };
        let new_phrase = match role {
            Role::New => write_new(generator, bars),
            Role::Answer(i) => {
                // The opening of phrase `i`, then an ending written after it.
                let mut phrase: Phrase = phrase_of(bars, i)[..2].to_vec();
                let start = bars.len().saturating_sub(PHRASE_BARS);
                let mut before: Phrase = bars[start..].to_vec();
                before.extend(phrase.iter().cloned());
                let lead_in = context_of(&before, meter);
                let request = PhraseRequest {
                    settings,
                    meter,
                    phrase_index,
                    bars: 2,
                    context: &lead_in,
                    shape: PhraseShape {
                        strain_bar: cadence_bars(planned.cadence) + 1,
                        cadence: Some(planned.cadence),
                    },
                    chords: chords_from(k * PHRASE_BARS + 2),
                };
                phrase.extend(render_phrase(generator, &request));
                phrase
            }
            Role::Repeat(i) => phrase_of(bars, i),
            Role::Vary(i) => {
                let mut phrase = phrase_of(bars, i);
                let mut rng = SeedRng::derive(&[settings.seed, 0xa7, phrase_index as u64]);
                let chords = chords_from(k * PHRASE_BARS);
                let chords = &chords[..chords.len().min(ticks_of(PHRASE_BARS))];
                match vae.vary_phrase(&phrase, &settings, meter, chords, rng.next_u64()) {
                    Some(varied) => varied,
                    None => {
                        // The cadence bar stays: the variation ends as the original did.
                        let body = &mut phrase[..PHRASE_BARS - 1];
                        vary_pitches(body, settings, VARY_SHARE, &mut rng);
                        phrase
                    }
                }
            }
        };
        // A copy joined to the phrase before can rebuild a training tune across the
        // join (a reel's AABB from its A and B): then the phrase is written anew.
        let new_phrase =
            if role != Role::New && copies_across(&*generator, bars, &new_phrase, meter) {
                write_new(generator, bars)
            } else {
                new_phrase
            };
        bars.extend(new_phrase);
    }
}

/// Would `phrase`, played after `bars`, complete a run of a training tune the generator's
/// originality guard refuses? Only runs that end inside `phrase` are looked at: the ones
/// before were checked when their phrase was joined.
fn copies_across(generator: &dyn Generator, bars: &Phrase, phrase: &Phrase, meter: Meter) -> bool {
    let mut joined = bars.clone();
    joined.extend(phrase.iter().cloned());
    let line = guard_line(&joined, meter);
    let notes_before: usize = bars.iter().map(Vec::len).sum();
    let from = notes_before.saturating_sub(COPY_NOTES - 1);
    generator.copies_training(&line[from..])
}

/// Notes of consecutive bars as the originality guard reads them: (pitch, ticks to the next
/// onset), as [`crate::model::copyguard::melody_line`] writes a melody.
fn guard_line(bars: &[Vec<BeatNote>], meter: Meter) -> Vec<(u8, u32)> {
    (context_of(bars, meter).iter())
        .map(|n| (n.pitch, (n.duration * TPQ as f64).round() as u32))
        .collect()
}

/// Notes of consecutive bars as the model's context: pitches with inter-onset durations,
/// the last note lasting to the final bar line (so the context ends where the next
/// phrase starts).
pub fn context_of(bars: &[Vec<BeatNote>], meter: Meter) -> Vec<ContextNote> {
    let bar_len = meter.beats_per_bar();
    let onsets: Vec<(f64, u8)> = (bars.iter().enumerate())
        .flat_map(|(b, notes)| {
            notes
                .iter()
                .map(move |n| (b as f64 * bar_len + n.start, n.pitch))
        })
        .collect();
    let end = bars.len() as f64 * bar_len;
    (onsets.iter().enumerate())
        .map(|(i, &(start, pitch))| ContextNote {
            pitch,
            duration: onsets.get(i + 1).map_or(end, |n| n.0) - start,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::loader::embedded_markov;
    use crate::model::copyguard::CopyGuard;

    fn settings(form: u8, seed: u64) -> GenSettings {
        GenSettings {
            seed,
            form,
            ..GenSettings::default()
        }
    }

    /// Section 0 in `meter` for `s`, its varied phrases written by `vae`.
    fn first<'a>(
        generator: &'a mut dyn Generator,
        vae: &'a LoadedVae,
        s: GenSettings,
        meter: Meter,
    ) -> Section<'a> {
        Section {
            generator,
            vae,
            settings: s,
            meter,
            index: 0,
        }
    }

    #[test]
    fn plans_pair_open_and_closing_phrases_and_refer_back_only() {
        for form in FORM_LENGTHS {
            for seed in 0..40 {
                let plan = plan(form, Style::Any, seed, seed as i64 % 3);
                assert_eq!(plan.len() * PHRASE_BARS, section_bars(form) as usize);
                for (k, p) in plan.iter().enumerate() {
                    let want = if k % 2 == 0 {
                        Cadence::Open
                    } else {
                        Cadence::Close
                    };
                    assert_eq!(p.cadence, want, "form {form} seed {seed} phrase {k}");
                    match p.role {
                        Role::New => {}
                        Role::Answer(i) | Role::Repeat(i) | Role::Vary(i) => assert!(i < k),
                    }
                    if form == 0 {
                        assert_eq!(p.role, Role::New);
                    }
                }
            }
        }
    }

    #[test]
    fn chorales_rarely_repeat_and_reels_nearly_always_do() {
        let through = |style| {
            (0..400)
                .filter(|&seed| plan(16, style, seed, 0).iter().all(|p| p.role == Role::New))
                .count()
        };
        assert!(through(Style::Chorale) > 320, "{}", through(Style::Chorale));
        assert!(through(Style::Reel) < 60, "{}", through(Style::Reel));
        let any = through(Style::Any);
        assert!((100..200).contains(&any), "{any}");
    }

    #[test]
    fn planned_repeats_are_repeats_and_answers_share_their_opening() {
        let meter = Meter::new(4, 4);
        let mut g = embedded_markov();
        let notes_only = LoadedVae::none("test: variations move notes");
        let mut checked = [0; 3];
        for seed in 0..30 {
            let s = settings(16, seed);
            let bars = write_section(first(g.as_mut(), &notes_only, s, meter), &[], &[]);
            assert_eq!(bars.len(), 16);
            for (k, p) in plan(16, Style::Any, seed, 0).iter().enumerate() {
                let phrase = &bars[k * 4..k * 4 + 4];
                match p.role {
                    Role::Repeat(i) => {
                        assert_eq!(phrase, &bars[i * 4..i * 4 + 4]);
                        checked[0] += 1;
                    }
                    Role::Answer(i) => {
                        assert_eq!(phrase[..2], bars[i * 4..i * 4 + 2]);
                        checked[1] += 1;
                    }
                    Role::Vary(i) => {
                        let original = &bars[i * 4..i * 4 + 4];
                        assert_eq!(phrase[3], original[3], "the cadence bar stays");
                        for (a, b) in phrase.iter().zip(original) {
                            let onsets =
                                |v: &[BeatNote]| v.iter().map(|n| n.start).collect::<Vec<_>>();
                            assert_eq!(onsets(a), onsets(b), "a variation keeps the rhythm");
                        }
                        checked[2] += 1;
                    }
                    Role::New => {}
                }
            }
        }
        assert!(
            checked.iter().all(|&n| n > 0),
            "every role was drawn: {checked:?}"
        );
    }

    #[test]
    fn varied_phrases_are_rewritten_through_the_vae_keeping_most_notes_and_the_cadence() {
        let meter = Meter::new(4, 4);
        let mut g = embedded_markov();
        let vae = LoadedVae::shared();
        assert_eq!(vae.fallback_reason(), None, "the shipped VAE must load");
        let at = |bar: &[BeatNote]| bar.iter().map(|n| (n.start, n.pitch)).collect::<Vec<_>>();
        let (mut kept, mut total, mut moved_phrases, mut varied) = (0, 0, 0, 0);
        for seed in 0..30 {
            let s = settings(32, seed);
            let bars = write_section(first(g.as_mut(), &vae, s, meter), &[], &[]);
            let again = write_section(first(g.as_mut(), &vae, s, meter), &[], &[]);
            assert_eq!(bars, again, "seed {seed}: a section is a pure function");
            for (k, p) in plan(32, Style::Any, seed, 0).iter().enumerate() {
                let Role::Vary(i) = p.role else { continue };
                let (phrase, original) = (&bars[k * 4..k * 4 + 4], &bars[i * 4..i * 4 + 4]);
                assert_eq!(phrase[3], original[3], "seed {seed}: the cadence bar stays");
                for bar in phrase {
                    for n in bar {
                        assert!(s.key.contains(n.pitch) && (s.low..=s.high).contains(&n.pitch));
                        assert!(n.start >= 0.0 && n.start + n.duration <= 4.0 + 1e-9);
                    }
                }
                let notes = |bars: &[Vec<BeatNote>]| bars.iter().map(|b| at(b)).collect::<Vec<_>>();
                let (new, old) = (notes(&phrase[..3]), notes(&original[..3]));
                total += old.iter().map(Vec::len).sum::<usize>();
                kept += (old.iter().zip(&new))
                    .map(|(o, n)| o.iter().filter(|e| n.contains(e)).count())
                    .sum::<usize>();
                moved_phrases += usize::from(new != old);
                varied += 1;
            }
        }
        let share = kept as f64 / total as f64;
        assert!(varied >= 20, "{varied} varied phrases drawn");
        // The same idea (most notes stay), yet a variation (nearly every phrase moves).
        assert!((0.5..0.95).contains(&share), "{kept} of {total} notes kept");
        assert!(
            moved_phrases * 10 >= varied * 9,
            "{moved_phrases} of {varied} moved"
        );
    }

    #[test]
    fn a_copy_is_only_planned_over_the_chords_it_was_written_on() {
        let meter = Meter::new(4, 4);
        let mut g = embedded_markov();
        let per_bar = bar_ticks(meter) as usize;
        // A different chord in every bar: nothing may be copied.
        let changing: Vec<u16> = (0..16 * per_bar)
            .map(|t| 1 << ((t / per_bar) % 12))
            .collect();
        // The same 4-bar progression looping: copies stay.
        let looping: Vec<u16> = (0..16 * per_bar)
            .map(|t| 1 << ((t / per_bar) % 4))
            .collect();
        let mut repeats = 0;
        let vae = LoadedVae::none("test: only repeats are checked");
        for seed in 0..30 {
            let s = settings(16, seed);
            let a = write_section(first(g.as_mut(), &vae, s, meter), &[], &changing);
            let b = write_section(first(g.as_mut(), &vae, s, meter), &[], &looping);
            for (k, p) in plan(16, Style::Any, seed, 0).iter().enumerate() {
                if let Role::Repeat(i) = p.role {
                    assert_ne!(a[k * 4..k * 4 + 4], a[i * 4..i * 4 + 4], "seed {seed}");
                    assert_eq!(b[k * 4..k * 4 + 4], b[i * 4..i * 4 + 4], "seed {seed}");
                    repeats += 1;
                }
            }
        }
        assert!(repeats > 0);
    }

    /// The Markov generator with an originality guard of our choosing.
    struct Guarded(Box<dyn Generator>, CopyGuard);

    impl Generator for Guarded {
        fn name(&self) -> &str {
            "guarded markov"
        }
        fn generate(&mut self, request: &PhraseRequest<'_>, rng: &mut SeedRng) -> Phrase {
            self.0.generate(request, rng)
        }
        fn copies_training(&self, line: &[(u8, u32)]) -> bool {
            self.1.copies(line)
        }
    }

    #[test]
    fn a_repeat_that_would_rebuild_a_training_tune_across_the_join_is_written_anew() {
        let meter = Meter::new(4, 4);
        let vae = LoadedVae::none("test: repeats are checked");
        let line_of = |bars: &[Vec<BeatNote>]| guard_line(bars, meter);
        let mut checked = 0;
        for seed in 0..40 {
            let s = settings(16, seed);
            let plan = plan(16, Style::Any, seed, 0);
            let Some(k) = plan.iter().position(|p| matches!(p.role, Role::Repeat(_))) else {
                continue;
            };
            let mut unguarded = Guarded(embedded_markov(), CopyGuard::default());
            let bars = write_section(first(&mut unguarded, &vae, s, meter), &[], &[]);
            // A "training tune": 6 notes before the join into the repeat and 7 after it.
            let join: usize = bars[..k * PHRASE_BARS].iter().map(Vec::len).sum();
            let line = line_of(&bars);
            let Some(tune) = line.get(join.saturating_sub(6)..join + 7) else {
                continue;
            };
            let guard = CopyGuard::build([tune]);
            assert!(
                guard.copies(&line),
                "seed {seed}: the unguarded section copies"
            );
            let mut guarded = Guarded(embedded_markov(), guard.clone());
            let again = write_section(first(&mut guarded, &vae, s, meter), &[], &[]);
            let phrase = k * PHRASE_BARS..(k + 1) * PHRASE_BARS;
            assert_eq!(again[..phrase.start], bars[..phrase.start], "seed {seed}");
            assert_ne!(
                again[phrase.clone()],
                bars[phrase],
                "seed {seed}: written anew"
            );
            assert!(!guard.copies(&line_of(&again)), "seed {seed}: no copy left");
            checked += 1;
        }
        assert!(checked >= 5, "{checked} sections with a repeat checked");
    }

    #[test]
    fn a_bar_is_the_same_reached_by_playing_or_by_jumping() {
        let meter = Meter::new(3, 4);
        let s = settings(8, 11);
        let mut g = embedded_markov();
        let mut player = FormPlayer::default();
        let through: Vec<Vec<BeatNote>> = (0..40)
            .map(|b| player.bar(g.as_mut(), s, meter, b, &[], &SongChords(&[]), 0))
            .collect();
        let mut fresh = FormPlayer::default();
        for bar in [33i64, 2, 17, 39, 9] {
            let jumped = fresh.bar(g.as_mut(), s, meter, bar, &[], &SongChords(&[]), 0);
            assert_eq!(jumped, through[bar as usize], "bar {bar}");
        }
    }

    #[test]
    fn context_ends_on_the_bar_line() {
        let n = |start, pitch| BeatNote {
            start,
            duration: 0.5,
            pitch,
            velocity: 90,
        };
        let bars = vec![vec![n(1.0, 60), n(2.5, 62)], vec![], vec![n(0.0, 64)]];
        let ctx = context_of(&bars, Meter::new(4, 4));
        let d: Vec<f64> = ctx.iter().map(|c| c.duration).collect();
        assert_eq!(d, vec![1.5, 5.5, 4.0]);
        let total: f64 = d.iter().sum();
        assert_eq!(1.0 + total, 12.0);
    }
}
