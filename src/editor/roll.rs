//! The piano roll: the last bars that played and the bars already generated ahead, against
//! the playhead. Time runs left to right in beats, pitch bottom to top.

use crate::engine::EngineView;
use crate::music::Key;
use egui::{Color32, Pos2, Rect, Sense, Stroke, StrokeKind, Ui, Vec2, pos2};

/// Bars shown before the playhead's bar, and after its start.
const BARS_BEFORE: f64 = 3.0;
const BARS_AFTER: f64 = 2.0;
/// The fewest pitch rows shown, so a narrow register still reads as a keyboard.
const MIN_ROWS: u8 = 24;

pub const GENERATED: Color32 = Color32::from_rgb(70, 160, 255);
pub const INPUT: Color32 = Color32::from_rgb(255, 150, 50);
/// Generated but not yet played: the same hue, see-through.
pub const UPCOMING: Color32 = Color32::from_rgba_premultiplied(35, 80, 128, 128);
pub const PLAYHEAD: Color32 = Color32::from_rgb(240, 70, 70);
const BACKGROUND: Color32 = Color32::from_rgb(24, 26, 30);
const SCALE_ROW: Color32 = Color32::from_rgb(36, 40, 48);
const TONIC_ROW: Color32 = Color32::from_rgb(48, 54, 66);
const BAR_LINE: Color32 = Color32::from_rgb(120, 124, 132);
const BEAT_LINE: Color32 = Color32::from_rgb(52, 55, 62);

/// Maps beats and pitches to screen positions.
struct Grid {
    rect: Rect,
    first_beat: f64,
    last_beat: f64,
    low: u8,
    high: u8,
}

impl Grid {
    fn x(&self, beat: f64) -> f32 {
        let t = (beat - self.first_beat) / (self.last_beat - self.first_beat);
        self.rect.left() + t as f32 * self.rect.width()
    }

    fn row_height(&self) -> f32 {
        self.rect.height() / (self.high - self.low + 1) as f32
    }

    /// Top edge of a pitch's row.
    fn y(&self, pitch: u8) -> f32 {
        self.rect.bottom() - (pitch - self.low + 1) as f32 * self.row_height()
    }

    fn note_rect(&self, start: f64, end: f64, pitch: u8) -> Option<Rect> {
        if end <= self.first_beat
            || start >= self.last_beat
            || pitch < self.low
            || pitch > self.high
        {
            return None;
        }
        let (x0, x1) = (
            self.x(start.max(self.first_beat)),
            self.x(end.min(self.last_beat)),
        );
        let y = self.y(pitch);
        Some(Rect::from_min_max(
            pos2(x0, y + 1.0),
            pos2(x1.max(x0 + 2.0), y + self.row_height() - 1.0),
        ))
    }
}

/// Draws the roll into the space `size` and returns its rect. `register` is the parameter
/// range; the view widens to show any note outside it.
pub fn show(ui: &mut Ui, size: Vec2, view: &EngineView, key: Key, register: (u8, u8)) -> Rect {
    let (resp, painter) = ui.allocate_painter(size, Sense::hover());
    resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Piano roll"));
    let bar_len = view.meter.beats_per_bar();
    let bar_start = (view.playhead / bar_len).floor() * bar_len;
    let first_beat = bar_start - BARS_BEFORE * bar_len;
    let last_beat = bar_start + BARS_AFTER * bar_len;

    let upcoming = view.upcoming.values().flat_map(|(start, notes)| {
        notes
            .iter()
            .map(move |n| (start + n.start, start + n.start + n.duration, n.pitch))
    });
    // Notes already played are in `played`; only draw what is still ahead.
    let upcoming: Vec<_> = upcoming.filter(|n| n.0 >= view.playhead - 1e-6).collect();
    let played = view
        .played
        .iter()
        .filter(|n| n.end.unwrap_or(view.playhead) > first_beat);

    let (mut low, mut high) = register;
    for pitch in played
        .clone()
        .map(|n| n.pitch)
        .chain(upcoming.iter().map(|n| n.2))
    {
        (low, high) = (low.min(pitch), high.max(pitch));
    }
    if high - low + 1 < MIN_ROWS {
        let pad = (MIN_ROWS - (high - low + 1)).div_ceil(2);
        (low, high) = (low.saturating_sub(pad), high.saturating_add(pad).min(127));
    }
    let grid = Grid {
        rect: resp.rect,
        first_beat,
        last_beat,
        low,
        high,
    };

    painter.rect_filled(grid.rect, 2.0, BACKGROUND);
    for pitch in low..=high {
        let fill = if pitch % 12 == key.tonic.semitone() {
            TONIC_ROW
        } else if key.contains(pitch) {
            SCALE_ROW
        } else {
            continue;
        };
        let y = grid.y(pitch);
        let row = Rect::from_min_max(
            pos2(grid.rect.left(), y),
            pos2(grid.rect.right(), y + grid.row_height()),
        );
        painter.rect_filled(row, 0.0, fill);
    }
    let mut beat = first_beat.ceil();
    while beat < last_beat {
        let on_bar = ((beat / bar_len).round() * bar_len - beat).abs() < 1e-6;
        let (color, width) = if on_bar {
            (BAR_LINE, 1.5)
        } else {
            (BEAT_LINE, 1.0)
        };
        let x = grid.x(beat);
        painter.line_segment(
            [pos2(x, grid.rect.top()), pos2(x, grid.rect.bottom())],
            Stroke::new(width, color),
        );
        beat += 1.0;
    }

    for n in played {
        let end = n.end.unwrap_or(view.playhead);
        if let Some(r) = grid.note_rect(n.start, end, n.pitch) {
            painter.rect_filled(r, 2.0, if n.input { INPUT } else { GENERATED });
        }
    }
    for (start, end, pitch) in upcoming {
        if let Some(r) = grid.note_rect(start, end, pitch) {
            painter.rect_filled(r, 2.0, UPCOMING);
            painter.rect_stroke(r, 2.0, Stroke::new(1.0, GENERATED), StrokeKind::Inside);
        }
    }

    let x = grid.x(view.playhead);
    painter.line_segment(
        [pos2(x, grid.rect.top()), pos2(x, grid.rect.bottom())],
        Stroke::new(2.0, PLAYHEAD),
    );
    let label = |pitch: u8| {
        format!(
            "{}{}",
            crate::music::PitchClass::from_index(pitch % 12).name(),
            pitch as i32 / 12 - 1
        )
    };
    for pitch in [low, high] {
        let y = grid.y(pitch) + grid.row_height() / 2.0;
        painter.text(
            Pos2::new(grid.rect.left() + 4.0, y),
            egui::Align2::LEFT_CENTER,
            label(pitch),
            egui::FontId::monospace(10.0),
            Color32::GRAY,
        );
    }
    grid.rect
}
