//! Content-based: how well a preset's features fit the current context (tempo range, meter,
//! key mode, the producer's input density and register), plus how well its mood and style
//! tags and energy match the producer's taste profile (the presets that worked for them).
//! Needs no history at all, so it is what cold start falls back on.

use super::data::{Catalogue, Context, Dataset, Feedback, Item};
use super::evidence::{Evidence, key_name};
use super::{Recommender, Scores};
use crate::music::{Key, Meter};
use crate::presets::KeyMode;

#[derive(Debug, Clone)]
pub struct ContentBased {
    ev: Evidence,
    /// Weight of the taste profile against the context fit (both are 0..=1).
    pub taste_weight: f32,
}

impl Default for ContentBased {
    fn default() -> Self {
        Self {
            ev: Evidence::default(),
            taste_weight: 1.0,
        }
    }
}

/// Relative importance of the context facts.
const TEMPO_W: f32 = 1.0;
const METER_W: f32 = 0.8;
const KEY_W: f32 = 0.6;
const DENSITY_W: f32 = 0.3;
const REGISTER_W: f32 = 0.3;

/// How well an item fits the context, 0..=1 over the facts the context has.
pub fn context_fit(item: &Item, ctx: &Context) -> f32 {
    let (mut fit, mut total) = (0.0, 0.0);
    if let Some(t) = ctx.tempo {
        let (lo, hi) = item.tempo;
        let outside = (lo - t).max(t - hi).max(0.0);
        fit += TEMPO_W * (-outside / 15.0).exp();
        total += TEMPO_W;
    }
    if let Some(m) = ctx.meter {
        let suits = if item.meters.is_empty() {
            0.5
        } else {
            item.meters.contains(&m) as u8 as f32
        };
        fit += METER_W * suits;
        total += METER_W;
    }
    if let Some(k) = ctx.key {
        // A preset written for this mode beats one that takes any key.
        let suits = match item.key_mode {
            KeyMode::Any => 0.75,
            mode => mode.accepts(k.scale) as u8 as f32,
        };
        fit += KEY_W * suits;
        total += KEY_W;
    }
    if let Some(d) = ctx.input_density {
        // Four notes per beat is as busy as the density knob's top.
        fit += DENSITY_W * (1.0 - ((d / 4.0).min(1.0) - item.density).abs());
        total += DENSITY_W;
    }
    if let Some(r) = ctx.input_register {
        fit += REGISTER_W * (-(r - item.register).abs() / 12.0).exp();
        total += REGISTER_W;
    }
    if total > 0.0 { fit / total } else { 0.0 }
}

/// How many of a preset's stated fits a session meets, 0..=3: tempo inside its range,
/// meter listed (a preset listing none takes any), key mode accepted. Facts the session
/// does not know count as not met, the same for every preset.
pub fn context_facts(
    item: &Item,
    tempo: Option<f32>,
    meter: Option<Meter>,
    key: Option<Key>,
) -> f32 {
    let tempo = tempo.is_some_and(|t| (item.tempo.0..=item.tempo.1).contains(&t));
    let meter = meter.is_some_and(|m| item.takes_meter(m));
    let key = key.is_some_and(|k| item.key_mode.accepts(k.scale));
    (tempo as u8 + meter as u8 + key as u8) as f32
}

/// The producer's taste: weight per tag and preferred energy, from the presets that worked.
struct Taste {
    tags: [f32; 64],
    norm: f32,
    energy: f32,
}

impl ContentBased {
    fn taste(ev: &Evidence, ctx: &Context) -> Option<Taste> {
        let mut taste = Taste {
            tags: [0.0; 64],
            norm: 0.0,
            energy: 0.0,
        };
        let mut total = 0.0;
        for (i, w) in ev.profile(ctx) {
            let item = &ev.catalogue.items[i as usize];
            for (b, t) in taste.tags.iter_mut().enumerate() {
                if item.tags & (1 << b) != 0 {
                    *t += w;
                }
            }
            taste.energy += w * item.energy;
            total += w;
        }
        if total <= 0.0 {
            return None;
        }
        taste.energy /= total;
        taste.norm = taste
            .tags
            .iter()
            .map(|t| t * t)
            .sum::<f32>()
            .sqrt()
            .max(1e-6);
        Some(taste)
    }

    fn taste_match(taste: &Taste, item: &Item) -> f32 {
        let n = item.tags.count_ones();
        let mut dot = 0.0f32;
        let mut bits = item.tags;
        while bits != 0 {
            dot += taste.tags[bits.trailing_zeros() as usize];
            bits &= bits - 1;
        }
        let tags = if n == 0 {
            0.0
        } else {
            dot / (taste.norm * (n as f32).sqrt())
        };
        0.7 * tags + 0.3 * (1.0 - (taste.energy - item.energy).abs())
    }
}

impl Recommender for ContentBased {
    fn name(&self) -> &'static str {
        "content"
    }

    evidence_backed!();

    fn score(&self, ctx: &Context) -> Scores {
        self.score_with(&self.ev, ctx)
    }

    fn reason(&self, ctx: &Context, _scores: &Scores, item: u16) -> String {
        self.reason_with(&self.ev, ctx, item)
    }
}

impl ContentBased {
    /// Scores against `ev` (the hybrid's shared evidence, or this recommender's own).
    pub(super) fn score_with(&self, ev: &Evidence, ctx: &Context) -> Scores {
        let taste = Self::taste(ev, ctx);
        let values = ev
            .catalogue
            .items
            .iter()
            .map(|item| {
                let liked = taste.as_ref().map_or(0.0, |t| Self::taste_match(t, item));
                context_fit(item, ctx) + self.taste_weight * liked
            })
            .collect();
        Scores {
            values,
            ..Scores::default()
        }
    }

    pub(super) fn reason_with(&self, ev: &Evidence, ctx: &Context, item: u16) -> String {
        let it = &ev.catalogue.items[item as usize];
        let mut fits = Vec::new();
        if let Some(t) = ctx.tempo {
            let (lo, hi) = it.tempo;
            if (lo..=hi).contains(&t) {
                fits.push(format!(
                    "{t:.0} BPM is inside its {lo:.0}–{hi:.0} BPM range"
                ));
            }
        }
        if let Some(m) = ctx.meter.filter(|m| it.meters.contains(m)) {
            fits.push(format!("it is written for {m}"));
        }
        if let Some(k) = ctx
            .key
            .filter(|k| it.key_mode != KeyMode::Any && it.key_mode.accepts(k.scale))
        {
            fits.push(format!("it suits {}", key_name(k)));
        }
        let mut text = if fits.is_empty() {
            format!("{} is the closest feature match to this context", it.name)
        } else {
            format!("{}: {}", it.name, fits.join(", "))
        };
        if let Some(taste) = Self::taste(ev, ctx) {
            let mut shared: Vec<(f32, u32)> = (0..64)
                .filter(|b| it.tags & (1 << b) != 0 && taste.tags[*b as usize] > 0.0)
                .map(|b| (taste.tags[b as usize], b))
                .collect();
            shared.sort_by(|a, b| b.0.total_cmp(&a.0));
            shared.truncate(2);
            if !shared.is_empty() {
                let bits = shared.iter().fold(0u64, |m, (_, b)| m | (1 << b));
                // Distinct sessions: one with two such presets counts once.
                let items = &ev.catalogue.items;
                let sessions = ev.sessions_where(ctx, |i| items[i as usize].tags & bits != 0);
                let names = ev.catalogue.tag_names(bits).join(", ");
                if sessions > 0 {
                    text += &format!(
                        "; matches your taste for {names} (presets like that worked in {sessions} of your sessions)"
                    );
                } else {
                    text += &format!("; matches your taste for {names} in this session");
                }
            }
        }
        text
    }
}
