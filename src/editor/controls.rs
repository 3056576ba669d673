//! One control per parameter. Every widget reads the parameter's current value each frame
//! (the host may automate it) and writes through [`ParamAccess`], never into a local copy.

use super::EditorState;
use super::access::ParamAccess;
use crate::music::{PitchClass, SeedRng};
use crate::plugin::MelodistParams;
use egui::{Response, Ui};
use nice_plug::prelude::*;

/// A trigger parameter (new idea, panic) is held on this long, so the audio thread sees the
/// rising edge even when it runs only every few tens of milliseconds.
pub const TRIGGER_HOLD_S: f64 = 0.15;

/// The momentary buttons the plugin turns into events on their rising edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    NewIdea,
    Vary,
    Panic,
}

impl Trigger {
    pub fn param(self, params: &MelodistParams) -> &BoolParam {
        match self {
            Trigger::NewIdea => &params.new_idea,
            Trigger::Vary => &params.vary,
            Trigger::Panic => &params.panic,
        }
    }
}

/// Switches a trigger on; [`release_triggers`] switches it off again after the hold time.
pub fn fire(state: &mut EditorState, trigger: Trigger, now: f64) {
    let param = trigger.param(&state.params).as_ptr();
    state.access.set_once(param, 1.0);
    state.held.retain(|(t, _)| *t != trigger);
    state.held.push((trigger, now + TRIGGER_HOLD_S));
}

pub fn release_triggers(state: &mut EditorState, now: f64) {
    let (due, keep): (Vec<_>, Vec<_>) = state.held.iter().partition(|(_, at)| *at <= now);
    state.held = keep;
    for (trigger, _) in due {
        let param = trigger.param(&state.params).as_ptr();
        state.access.set_once(param, 0.0);
    }
}

/// Turns a widget's response into a host gesture: begin on drag start, end on drag stop,
/// and a complete gesture for a change that is not part of a drag (click, typed value).
fn gesture(access: &mut dyn ParamAccess, param: ParamPtr, resp: &Response, new: Option<f32>) {
    if resp.drag_started() {
        access.begin(param);
    }
    if let Some(normalized) = new {
        if resp.dragged() {
            access.set(param, normalized);
        } else {
            access.set_once(param, normalized);
        }
    }
    if resp.drag_stopped() {
        access.end(param);
    }
}

/// A slider over the parameter's normalized range, labelled and formatted by the parameter
/// itself (so units, note names and integer steps match the host's generic UI).
pub fn slider<P: Param>(ui: &mut Ui, access: &mut dyn ParamAccess, param: &P) -> Response {
    let mut value = param.unmodulated_normalized_value() as f64;
    let resp = ui.add(
        egui::Slider::new(&mut value, 0.0..=1.0)
            .text(param.name())
            .custom_formatter(|n, _| param.normalized_value_to_string(n as f32, true))
            .custom_parser(|s| param.string_to_normalized_value(s).map(f64::from)),
    );
    let new = resp.changed().then(|| {
        // Snap to the parameter's steps (integer and enum parameters).
        param.preview_normalized(param.preview_plain(value as f32))
    });
    gesture(access, param.as_ptr(), &resp, new);
    resp
}

pub fn checkbox(ui: &mut Ui, access: &mut dyn ParamAccess, param: &BoolParam) -> Response {
    let mut on = param.value();
    let resp = ui.checkbox(&mut on, param.name());
    if resp.changed() {
        access.set_once(param.as_ptr(), if on { 1.0 } else { 0.0 });
    }
    resp
}

/// A drop-down of an enum parameter's variants.
pub fn choice<T: Enum + PartialEq + 'static>(
    ui: &mut Ui,
    access: &mut dyn ParamAccess,
    param: &EnumParam<T>,
) {
    let names = T::variants();
    let current = param.value().to_index();
    let mut picked = None;
    ui.horizontal(|ui| {
        let label = ui.label(param.name());
        egui::ComboBox::from_id_salt(param.name())
            .selected_text(names[current])
            .show_ui(ui, |ui| {
                for (i, name) in names.iter().enumerate() {
                    if ui.selectable_label(i == current, *name).clicked() && i != current {
                        picked = Some(i);
                    }
                }
            })
            .response
            .labelled_by(label.id);
    });
    if let Some(i) = picked {
        let normalized = param.preview_normalized(T::from_index(i));
        access.set_once(param.as_ptr(), normalized);
    }
}

/// The key's tonic as a row of twelve buttons: faster than a menu while playing.
fn tonic_buttons(ui: &mut Ui, access: &mut dyn ParamAccess, param: &EnumParam<PitchClass>) {
    let current = param.value();
    ui.horizontal_wrapped(|ui| {
        ui.label("Key");
        for i in 0..12 {
            let pc = PitchClass::from_index(i);
            if ui.selectable_label(pc == current, pc.name()).clicked() && pc != current {
                access.set_once(param.as_ptr(), param.preview_normalized(pc));
            }
        }
    });
}

/// All parameter controls, in three columns: key and register, feel, output and transport.
pub fn show(ui: &mut Ui, state: &mut EditorState) {
    let now = ui.input(|i| i.time);
    let params = state.params.clone();
    let access = state.access.as_mut();
    ui.columns(3, |cols| {
        for col in cols.iter_mut() {
            // Leave room for the value box and the parameter's name.
            col.spacing_mut().slider_width = (col.available_width() - 180.0).max(50.0);
        }
        let ui = &mut cols[0];
        ui.strong("Key and register");
        tonic_buttons(ui, access, &params.root);
        choice(ui, access, &params.scale);
        checkbox(ui, access, &params.follow_input);
        slider(ui, access, &params.low);
        slider(ui, access, &params.high);

        let ui = &mut cols[1];
        ui.strong("Feel");
        slider(ui, access, &params.preset).on_hover_text(
            "The host's preset selector: anything but Manual plays that style over these knobs",
        );
        slider(ui, access, &params.density);
        slider(ui, access, &params.variation);
        slider(ui, access, &params.gate);
        slider(ui, access, &params.velocity);
        slider(ui, access, &params.humanize);
        choice(ui, access, &params.mode);
        choice(ui, access, &params.form);
        slider(ui, access, &params.chord_fit)
            .on_hover_text("0 ignores chords; 1 puts chord tones on strong beats nearly always");
        slider(ui, access, &params.chord_channel).on_hover_text(
            "Any: three or more held notes form the chord. A channel: only its notes do",
        );
        choice(ui, access, &params.loop_length);
        slider(ui, access, &params.evolve)
            .on_hover_text("How much each loop repeat changes: 0 repeats exactly");
        ui.horizontal(|ui| {
            slider(ui, access, &params.seed);
            if ui
                .button("Dice")
                .on_hover_text("Pick a random seed")
                .clicked()
            {
                let seed = SeedRng::derive(&[params.seed.value() as u64, now.to_bits()]).next_u64()
                    % 100_000;
                let seed = params.seed.preview_normalized(seed as i32);
                access.set_once(params.seed.as_ptr(), seed);
            }
        });

        let ui = &mut cols[2];
        ui.strong("Output and transport");
        checkbox(ui, access, &params.play);
        choice(ui, access, &params.quantize);
        slider(ui, access, &params.channel);
        checkbox(ui, access, &params.midi_thru);
        slider(ui, access, &params.free_run_tempo);
        checkbox(ui, access, &params.bypass);
    });
    ui.horizontal(|ui| {
        if ui.button("Panic").on_hover_text("All notes off").clicked() {
            fire(state, Trigger::Panic, now);
        }
    });
}
