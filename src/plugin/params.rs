//! The plugin's parameters. The `#[id]` strings are stable: hosts store automation and
//! projects by them, so never rename one.

use crate::editor::EditorSize;
use crate::engine::Quantize;
use crate::generator::hooks::HookBank;
use crate::generator::{FormLength, GenSettings, LoopLength, Mode};
use crate::music::{Key, PitchClass, Scale};
use crate::presets::PresetLibrary;
use nice_plug::prelude::*;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Params)]
pub struct MelodistParams {
    /// Generate while the transport plays. Off: only MIDI thru.
    #[id = "play"]
    pub play: BoolParam,
    #[id = "mode"]
    pub mode: EnumParam<Mode>,
    /// Sampling temperature: how far the melody strays from the most likely path.
    #[id = "variation"]
    pub variation: FloatParam,
    /// Busy (short notes, few rests) versus sparse.
    #[id = "density"]
    pub density: FloatParam,
    #[id = "root"]
    pub root: EnumParam<PitchClass>,
    #[id = "scale"]
    pub scale: EnumParam<Scale>,
    /// Take the key from what the producer plays.
    #[id = "follow"]
    pub follow_input: BoolParam,
    #[id = "low"]
    pub low: IntParam,
    #[id = "high"]
    pub high: IntParam,
    /// Note length as a fraction of the time until the next note.
    #[id = "gate"]
    pub gate: FloatParam,
    #[id = "velocity"]
    pub velocity: IntParam,
    #[id = "humanize"]
    pub humanize: FloatParam,
    /// Output MIDI channel, 1-16.
    #[id = "channel"]
    pub channel: IntParam,
    #[id = "seed"]
    pub seed: IntParam,
    /// Trigger: switching it on picks a new idea (seed) at the next bar or beat.
    #[id = "newidea"]
    pub new_idea: BoolParam,
    #[id = "quantize"]
    pub quantize: EnumParam<Quantize>,
    /// Pass the producer's MIDI through to the output.
    #[id = "thru"]
    pub midi_thru: BoolParam,
    /// Trigger: note-off for every note and "all notes off" on the output channel.
    #[id = "panic"]
    pub panic: BoolParam,
    /// Tempo used when the host reports no transport (free-run).
    #[id = "tempo"]
    pub free_run_tempo: FloatParam,
    #[id = "bypass"]
    pub bypass: BoolParam,
    /// Factory style preset for hosts without the editor: "Manual" plays the knobs; any
    /// other value plays that preset's style (register, density, variation, gate, velocity,
    /// humanize, mode, scale) over them. Key and seed always stay the producer's.
    #[id = "preset"]
    pub preset: IntParam,
    /// Loop mode: repeat a hook of this many bars (Off = keep writing new phrases).
    #[id = "looplen"]
    pub loop_length: EnumParam<LoopLength>,
    /// How much each loop repeat changes: 0 = exact repeats, 1 = drifts to a new hook.
    #[id = "evolve"]
    pub evolve: FloatParam,
    /// How strongly notes sit on the chords held on MIDI in (or given to `generate`).
    #[id = "chordfit"]
    pub chord_fit: FloatParam,
    /// Where chords come from: 0 = any input note (three or more held form a chord), else
    /// only this MIDI channel (and melody input only from the others).
    #[id = "chordch"]
    pub chord_channel: IntParam,
    /// Form plan: sections of 8/16/32 bars whose phrases repeat, answer and vary each other.
    #[id = "form"]
    pub form: EnumParam<FormLength>,
    /// Loop mode: where the hook sits between slot A (0) and slot B (1), re-decoded through
    /// the VAE at each loop boundary. Automatable.
    #[id = "morph"]
    pub morph: FloatParam,
    /// Loop mode: a trigger; each press replaces the hook by a variation of it (from the
    /// next loop), as far from it as the Variation knob says.
    #[id = "vary"]
    pub vary: BoolParam,
    /// How many times Vary was pressed, saved with the project like "new idea".
    #[persist = "varies"]
    pub varies: Arc<AtomicU32>,
    /// Hook slots A and B (captured in the editor), saved with the project.
    #[persist = "hooks"]
    pub hooks: HookBank,
    /// How many times "new idea" was pressed: part of the seed, saved with the project so
    /// the same idea plays back after reopening it.
    #[persist = "idea"]
    pub idea: Arc<AtomicU32>,
    /// The editor window's size, so it reopens as the producer left it.
    #[persist = "editor-state"]
    pub editor_size: Arc<Mutex<EditorSize>>,
    /// The factory presets the `preset` parameter indexes (1-based).
    pub factory: Arc<PresetLibrary>,
}

impl Default for MelodistParams {
    fn default() -> Self {
        let factory = Arc::new(PresetLibrary::factory());
        let names = factory.clone();
        let preset_name = move |v: i32| match v {
            1.. => names
                .presets()
                .get(v as usize - 1)
                .map_or_else(|| "?".to_string(), |p| p.name.clone()),
            _ => MANUAL.to_string(),
        };
        let names = factory.clone();
        let preset_index = move |text: &str| preset_index(&names, text);
        let unit = |name: &str, default: f32| {
            FloatParam::new(name, default, FloatRange::Linear { min: 0.0, max: 1.0 })
                .with_unit(" %")
                .with_value_to_string(formatters::v2s_f32_percentage(0))
                .with_string_to_value(formatters::s2v_f32_percentage())
        };
        let note = |name: &str, default: i32| {
            IntParam::new(name, default, IntRange::Linear { min: 12, max: 120 })
                .with_value_to_string(formatters::v2s_i32_key_formatter())
                .with_string_to_value(formatters::s2v_i32_key_formatter())
        };
        Self {
            play: BoolParam::new("Play", true),
            mode: EnumParam::new("Mode", Mode::Generate),
            variation: unit("Variation", 0.5),
            density: unit("Density", 0.5),
            root: EnumParam::new("Key", PitchClass::C),
            scale: EnumParam::new("Scale", Scale::Major),
            follow_input: BoolParam::new("Follow input key", false),
            low: note("Lowest note", 60),
            high: note("Highest note", 84),
            gate: FloatParam::new(
                "Gate",
                0.9,
                FloatRange::Linear {
                    min: 0.05,
                    max: 1.0,
                },
            )
            .with_unit(" %")
            .with_value_to_string(formatters::v2s_f32_percentage(0))
            .with_string_to_value(formatters::s2v_f32_percentage()),
            velocity: IntParam::new("Velocity", 96, IntRange::Linear { min: 1, max: 127 }),
            humanize: unit("Humanize", 0.2),
            channel: IntParam::new("MIDI channel", 1, IntRange::Linear { min: 1, max: 16 }),
            seed: IntParam::new(
                "Seed",
                1,
                IntRange::Linear {
                    min: 0,
                    max: 99_999,
                },
            ),
            new_idea: BoolParam::new("New idea", false),
            quantize: EnumParam::new("Change at", Quantize::Bar),
            midi_thru: BoolParam::new("MIDI thru", true),
            panic: BoolParam::new("Panic", false),
            free_run_tempo: FloatParam::new(
                "Free-run tempo",
                120.0,
                FloatRange::Linear {
                    min: 20.0,
                    max: 300.0,
                },
            )
            .with_unit(" BPM")
            .with_step_size(0.1),
            bypass: BoolParam::new("Bypass", false).make_bypass(),
            preset: IntParam::new(
                "Style preset",
                0,
                IntRange::Linear {
                    min: 0,
                    max: factory.presets().len() as i32,
                },
            )
            .with_value_to_string(Arc::new(preset_name))
            .with_string_to_value(Arc::new(preset_index)),
            loop_length: EnumParam::new("Loop length", LoopLength::Off),
            evolve: unit("Evolve", 0.0),
            form: EnumParam::new("Form", FormLength::Sixteen),
            morph: FloatParam::new("Morph A-B", 0.0, FloatRange::Linear { min: 0.0, max: 1.0 })
                .with_unit(" %")
                .with_value_to_string(formatters::v2s_f32_percentage(0))
                .with_string_to_value(formatters::s2v_f32_percentage()),
            vary: BoolParam::new("Vary", false),
            varies: Arc::new(AtomicU32::new(0)),
            hooks: HookBank::default(),
            chord_fit: unit("Chord fit", 0.6),
            chord_channel: IntParam::new("Chord channel", 0, IntRange::Linear { min: 0, max: 16 })
                .with_value_to_string(Arc::new(|v| match v {
                    0 => "Any".to_string(),
                    ch => ch.to_string(),
                }))
                .with_string_to_value(Arc::new(|s| match s.trim() {
                    t if t.eq_ignore_ascii_case("any") => Some(0),
                    t => t.parse().ok().filter(|ch| (0..=16).contains(ch)),
                })),
            factory,
            idea: Arc::new(AtomicU32::new(0)),
            editor_size: Arc::default(),
        }
    }
}

impl MelodistParams {
    /// The generator settings the parameters describe right now (the selected style preset
    /// over the knobs). Allocation-free: called from `process()`.
    pub fn gen_settings(&self) -> GenSettings {
        let mut settings = self.knob_settings();
        if let Some(preset) = self.selected_preset() {
            preset.apply_to(&mut settings);
        }
        settings
    }

    /// The factory preset picked with the "Style preset" parameter, if any.
    pub fn selected_preset(&self) -> Option<&crate::presets::StylePreset> {
        let v = self.preset.value();
        (v >= 1)
            .then(|| self.factory.presets().get(v as usize - 1))
            .flatten()
    }

    fn knob_settings(&self) -> GenSettings {
        GenSettings {
            key: Key::new(self.root.value(), self.scale.value()),
            low: self.low.value().clamp(0, 127) as u8,
            high: self.high.value().clamp(0, 127) as u8,
            density: self.density.value(),
            variation: self.variation.value(),
            gate: self.gate.value(),
            velocity: self.velocity.value().clamp(1, 127) as u8,
            humanize: self.humanize.value(),
            seed: effective_seed(self.seed.value(), self.idea.load(Ordering::Relaxed)),
            mode: self.mode.value(),
            follow_input: self.follow_input.value(),
            style: crate::model::tokenizer::Style::Any,
            loop_bars: self.loop_length.value().bars(),
            evolve: self.evolve.value(),
            form: self.form.value().bars(),
            chord_fit: self.chord_fit.value(),
            morph: crate::generator::hooks::morph_position(self.morph.value()),
            vary_step: self.varies.load(Ordering::Relaxed).min(u16::MAX as u32) as u16,
            hooks_version: self.hooks.version(),
        }
    }

    /// The MIDI channel (0-15) chords are read from, or `None` for any input note.
    pub fn chord_channel(&self) -> Option<u8> {
        match self.chord_channel.value() {
            ch @ 1..=16 => Some(ch as u8 - 1),
            _ => None,
        }
    }

    pub fn output_channel(&self) -> u8 {
        (self.channel.value().clamp(1, 16) - 1) as u8
    }
}

/// The "Style preset" value that plays the knobs rather than a preset.
const MANUAL: &str = "Manual";

/// The "Style preset" parameter value for a name a host's user typed: "Manual", a factory
/// preset's name or id (any case), or its number.
fn preset_index(library: &PresetLibrary, text: &str) -> Option<i32> {
    let text = text.trim();
    if text.eq_ignore_ascii_case(MANUAL) {
        return Some(0);
    }
    let presets = library.presets();
    if let Some(i) = presets
        .iter()
        .position(|p| p.name.eq_ignore_ascii_case(text) || p.id.eq_ignore_ascii_case(text))
    {
        return Some(i as i32 + 1);
    }
    text.parse::<i32>()
        .ok()
        .filter(|i| (0..=presets.len() as i32).contains(i))
}

/// The seed the generator uses: the Seed parameter plus the "new idea" count, so the CLI's
/// `--seed 7` and the plugin's Seed 7 (before any new idea) play the same melody.
pub fn effective_seed(seed: i32, idea: u32) -> u64 {
    seed.max(0) as u64 + ((idea as u64) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn style_preset_overrides_the_style_knobs_but_not_key_or_seed() {
        let params = MelodistParams::default();
        let manual = params.gen_settings();
        let reel = params.factory.get("reel-drive").expect("factory preset");
        let index = params.factory.index_of("reel-drive").unwrap() as i32 + 1;
        let normalized = params.preset.preview_normalized(index);
        // SAFETY: the pointer comes from a live parameter; this is what a host's automation does.
        unsafe {
            params
                .preset
                .as_ptr()
                ._internal_set_normalized_value(normalized)
        };
        let styled = params.gen_settings();
        assert_eq!(
            params.selected_preset().map(|p| p.id.as_str()),
            Some("reel-drive")
        );
        assert_eq!(styled.key.tonic, manual.key.tonic);
        assert_eq!(styled.seed, manual.seed);
        assert_eq!(
            (styled.low, styled.high, styled.density),
            (reel.settings.low, reel.settings.high, reel.settings.density)
        );
        // The neural model is conditioned on the preset's style.
        assert_eq!(manual.style, crate::model::tokenizer::Style::Any);
        assert_eq!(styled.style, crate::model::tokenizer::Style::Reel);
    }

    /// What a host does when the user types a value: every parameter's text for a value
    /// reads back as that value (the clap-validator's param-conversions test, everywhere).
    #[test]
    fn chord_channel_any_or_one_channel() {
        let params = MelodistParams::default();
        assert_eq!(params.chord_channel(), None, "Any by default");
        let set = |v: i32| {
            let normalized = params.chord_channel.preview_normalized(v);
            // SAFETY: the pointer comes from a live parameter, as a host's automation does.
            unsafe {
                params
                    .chord_channel
                    .as_ptr()
                    ._internal_set_normalized_value(normalized)
            };
        };
        set(3);
        assert_eq!(
            params.chord_channel(),
            Some(2),
            "channel 3 is MIDI channel index 2"
        );
        set(16);
        assert_eq!(params.chord_channel(), Some(15));
        assert_eq!(params.chord_channel.to_string(), "16");
        set(0);
        assert_eq!(params.chord_channel(), None);
    }

    #[test]
    fn every_parameter_converts_to_text_and_back() {
        let params = MelodistParams::default();
        let map = params.param_map();
        assert!(map.len() >= 20, "only {} parameters", map.len());
        for (id, ptr, _) in &map {
            // SAFETY: the pointers come from `params`, which outlives this loop.
            unsafe {
                let steps = ptr.step_count().unwrap_or(20).min(200);
                for k in 0..=steps {
                    let normalized =
                        ptr.preview_normalized(ptr.preview_plain(k as f32 / steps as f32));
                    for with_unit in [true, false] {
                        let text = ptr.normalized_value_to_string(normalized, with_unit);
                        let back = ptr
                            .string_to_normalized_value(&text)
                            .unwrap_or_else(|| panic!("{id}: text {text:?} does not convert back"));
                        let plain = |n: f32| ptr.preview_plain(n);
                        // Text rounds (a percentage to 1%), so compare what it shows.
                        let again = ptr.normalized_value_to_string(back, with_unit);
                        assert_eq!(again, text, "{id}: {normalized} -> {text:?} -> {back}");
                        if ptr.step_count().is_some() {
                            assert_eq!(plain(back), plain(normalized), "{id}: {text:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn style_preset_reads_names_in_any_case() {
        let params = MelodistParams::default();
        let first = &params.factory.presets()[0];
        assert_eq!(preset_index(&params.factory, "manual"), Some(0));
        assert_eq!(
            preset_index(&params.factory, &first.name.to_uppercase()),
            Some(1)
        );
        assert_eq!(preset_index(&params.factory, &first.id), Some(1));
        assert_eq!(preset_index(&params.factory, "3"), Some(3));
        assert_eq!(preset_index(&params.factory, "no such preset"), None);
        assert_eq!(preset_index(&params.factory, "9999"), None);
    }

    #[test]
    fn seed_combines_parameter_and_new_idea_count() {
        assert_eq!(effective_seed(7, 0), 7);
        assert_ne!(effective_seed(7, 1), effective_seed(8, 0));
        assert_eq!(effective_seed(-3, 0), 0);
    }
}
