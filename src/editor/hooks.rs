//! The hook slots row: capture what just played into slot A or B, clear a slot, Vary, and
//! the Morph knob between them (see [`crate::generator::hooks`]).

use super::EditorState;
use super::controls::{self, Trigger, slider};
use crate::engine::EngineView;
use crate::engine::worker::CHORD_WINDOW;
use crate::generator::hooks::{Hook, Slot};
use crate::midi::MelodyNote;
use anyhow::{Result, bail};
use egui::Ui;

/// The hook a capture puts in a slot: the last `bars` bars the producer played (their top
/// line), or, when they played fewer than two notes, the melody Melodist played.
pub fn capture_hook(view: &EngineView, bars: u32) -> Result<Hook> {
    let (generated, input) = view.capture(bars);
    let notes = if input.len() >= 2 { input } else { generated };
    if notes.is_empty() {
        bail!("nothing played in the last {bars} bars");
    }
    Ok(Hook::from_notes(
        &top_line(notes),
        view.meter,
        bars as usize,
    ))
}

/// One note at a time: the highest of each chord (notes struck within the worker's
/// `CHORD_WINDOW`, as it reads the producer's line), each note cut where the next starts.
fn top_line(mut notes: Vec<MelodyNote>) -> Vec<MelodyNote> {
    notes.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut line: Vec<MelodyNote> = Vec::with_capacity(notes.len());
    for n in notes {
        match line.last_mut() {
            Some(top) if n.start - top.start < CHORD_WINDOW => {
                if n.pitch > top.pitch {
                    *top = MelodyNote {
                        start: top.start,
                        ..n
                    };
                }
            }
            Some(top) => {
                top.duration = top.duration.min(n.start - top.start);
                line.push(n);
            }
            None => line.push(n),
        }
    }
    line
}

/// Bars a capture takes: the loop's length, or a 4-bar phrase when loop mode is off.
fn capture_bars(state: &EditorState) -> u32 {
    match state.params.loop_length.value().bars() {
        0 => 4,
        n => n as u32,
    }
}

fn capture_into(state: &mut EditorState, slot: Slot) {
    let bars = capture_bars(state);
    let hook = {
        let view = state.view.lock().expect("not poisoned");
        capture_hook(&view, bars)
    };
    state.message = match hook {
        Ok(hook) => {
            let text = format!("Hook {slot:?}: {} notes in {bars} bars", hook.note_count());
            state.params.hooks.set(slot, Some(hook));
            text
        }
        Err(err) => format!("Hook {slot:?} unchanged: {err:#}"),
    };
}

/// What a slot holds, in a few words.
fn describe(hook: Option<&Hook>, empty: &str) -> String {
    hook.map_or(empty.to_string(), |h| {
        format!("{} bars, {} notes", h.bars.len(), h.note_count())
    })
}

pub fn show(ui: &mut Ui, state: &mut EditorState, now: f64) {
    let slots = state.params.hooks.slots();
    let looping = state.params.loop_length.value().bars() > 0;
    ui.horizontal_wrapped(|ui| {
        ui.strong("Hooks");
        for (slot, hook, empty) in [
            (Slot::A, slots.a.as_ref(), "the seed's hook"),
            (Slot::B, slots.b.as_ref(), "a new idea"),
        ] {
            ui.label(format!("{slot:?}: {}", describe(hook, empty)));
            if ui
                .button(format!("Capture {slot:?}"))
                .on_hover_text("What you just played (or else what Melodist played)")
                .clicked()
            {
                capture_into(state, slot);
            }
            if hook.is_some() && ui.button(format!("Clear {slot:?}")).clicked() {
                state.params.hooks.set(slot, None);
                state.message = format!("Hook {slot:?}: back to {empty}");
            }
        }
        let params = state.params.clone();
        slider(ui, state.access.as_mut(), &params.morph)
            .on_hover_text("Loop mode: A at 0, B at 100 %, the VAE's blend between");
        if ui
            .button("Vary")
            .on_hover_text(
                "Loop mode: a variation of the hook from the next loop (Variation sets how far)",
            )
            .clicked()
        {
            controls::fire(state, Trigger::Vary, now);
        }
        if !looping {
            ui.label("(Hooks play in loop mode: set Loop length)");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(start: f64, duration: f64, pitch: u8) -> MelodyNote {
        MelodyNote {
            start,
            duration,
            pitch,
            velocity: 90,
        }
    }

    #[test]
    fn the_top_line_keeps_the_highest_note_of_each_chord() {
        let line = top_line(vec![
            note(0.0, 2.0, 60),
            note(0.01, 2.0, 67),
            note(0.02, 2.0, 64),
            note(1.0, 1.0, 62),
        ]);
        let got: Vec<(f64, f64, u8)> = line
            .iter()
            .map(|n| (n.start, n.duration, n.pitch))
            .collect();
        assert_eq!(got, vec![(0.0, 1.0, 67), (1.0, 1.0, 62)]);
    }
}
