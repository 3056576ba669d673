//! What every recommender knows about the history: per-producer preset statistics,
//! popularity and the sessions themselves, kept current by online updates. Explanations
//! quote these numbers, so they are exact counts, not model internals.
//!
//! It also keeps the aggregates that make one ranking cheap however long the history is,
//! each updated in place by [`Evidence::update`] exactly as a refit would build it:
//! co-occurrence counts (item-cf), positive counts per distinct context (context
//! popularity) and a compact per-session row for the session-kNN scan.

use super::data::{Catalogue, Context, Dataset, Feedback, SessionRow, add_signal, signal_bit};
use crate::music::{Key, Meter};
use crate::sessions::{EventKind, SessionContext};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A producer's record with one preset.
#[derive(Debug, Clone, Default)]
pub struct ItemStats {
    /// Sessions where the preset worked (net feedback > 0) / did not (< 0).
    pub good_sessions: u32,
    pub bad_sessions: u32,
    /// Sum of the sessions' net feedback, each clipped to [-2, 3] so one frantic session
    /// cannot dominate.
    pub weight: f32,
    /// Tempo range of the good sessions.
    pub tempo_lo: f32,
    pub tempo_hi: f32,
    /// Keys of the good sessions, with counts.
    pub keys: Vec<(Key, u32)>,
    /// Per [`EventKind::ALL`] kind: good sessions with that kind of positive evidence.
    pub signals: [u32; EventKind::ALL.len()],
}

/// How one online update changed a session: its positive presets before and after.
#[derive(Debug, Clone)]
pub struct SessionChange {
    pub before: Vec<u16>,
    pub after: Vec<u16>,
}

/// What context popularity needs of a session's context: tempo (exact), meter, and the
/// key's scale. Ordered so sums over groups run in the same order however they were built.
pub(super) type ContextKey = (u32, u8, u8, u8);

pub(super) fn context_key(c: &SessionContext) -> ContextKey {
    (
        c.tempo.to_bits(),
        c.meter.numerator,
        c.meter.denominator,
        c.key.map_or(0, |k| k.scale as u8 + 1),
    )
}

/// How many positives a [`KnnRow`] holds inline; longer sessions are read from the row.
pub(super) const INLINE: usize = 6;

/// One session as the session-kNN scan reads it: contiguous, no pointers to chase.
#[derive(Debug, Clone, Copy)]
pub(super) struct KnnRow {
    /// Index into [`Evidence::tempos`].
    pub tempo: u32,
    pub meter: Meter,
    pub key: Option<Key>,
    /// `exp(density)` and `exp(-density)`, so `exp(-|d - density|)` is one product.
    pub density: Option<(f32, f32)>,
    pub producer: u32,
    /// Number of presets that worked (0: the session is no one's neighbour).
    pub len: u32,
    pub sqrt_len: f32,
    /// The first [`INLINE`] of them.
    pub positives: [u16; INLINE],
}

#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub catalogue: Arc<Catalogue>,
    pub sessions: Vec<SessionRow>,
    /// Per item: number of sessions (all producers) where it worked.
    pub popularity: Vec<f32>,
    /// Per producer: their statistics per preset.
    pub history: Vec<HashMap<u16, ItemStats>>,
    /// Per producer: their session rows, oldest first.
    pub rows_of: Vec<Vec<u32>>,
    /// Per item: (other item, sessions where both worked), sorted by item, no zeros.
    pub(super) together: Vec<Vec<(u16, f32)>>,
    /// Per distinct context: (item, sessions in that context where it worked), sorted.
    pub(super) by_context: BTreeMap<ContextKey, Vec<(u16, f32)>>,
    /// Per session row: what the session-kNN scan needs.
    pub(super) knn: Vec<KnnRow>,
    /// Distinct session tempos ([`KnnRow::tempo`] indexes this).
    pub(super) tempos: Vec<f32>,
    tempo_index: HashMap<u32, u32>,
    producer_index: HashMap<String, u32>,
    /// The session each producer's online feedback currently goes to: (session id, row).
    open: HashMap<u32, (i64, usize)>,
}

fn clip(w: f32) -> f32 {
    w.clamp(-2.0, 3.0)
}

/// Adds `delta` to `item`'s count in a sorted sparse list, dropping counts that reach zero.
fn bump_sparse(list: &mut Vec<(u16, f32)>, item: u16, delta: f32) {
    match list.binary_search_by_key(&item, |(i, _)| *i) {
        Ok(at) => {
            list[at].1 += delta;
            if list[at].1 == 0.0 {
                list.remove(at);
            }
        }
        Err(at) => list.insert(at, (item, delta)),
    }
}

impl Evidence {
    pub fn build(data: &Dataset) -> Evidence {
        let n = data.catalogue.len();
        let mut ev = Evidence {
            catalogue: data.catalogue.clone(),
            sessions: data.sessions.clone(),
            popularity: vec![0.0; n],
            history: vec![HashMap::new(); data.producers.len()],
            rows_of: vec![Vec::new(); data.producers.len()],
            together: vec![Vec::new(); n],
            by_context: BTreeMap::new(),
            knn: Vec::with_capacity(data.sessions.len()),
            tempos: Vec::new(),
            tempo_index: HashMap::new(),
            producer_index: data
                .producers
                .iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), i as u32))
                .collect(),
            open: HashMap::new(),
        };
        for row in 0..ev.sessions.len() {
            ev.rows_of[ev.sessions[row].producer as usize].push(row as u32);
            ev.apply(row, 1);
            let k = ev.knn_row(row);
            ev.knn.push(k);
        }
        ev
    }

    /// The compact row of session `row` (registering its tempo).
    fn knn_row(&mut self, row: usize) -> KnnRow {
        let s = &self.sessions[row];
        let bits = s.context.tempo.to_bits();
        let tempo = match self.tempo_index.get(&bits) {
            Some(&t) => t,
            None => {
                self.tempos.push(s.context.tempo);
                let t = self.tempos.len() as u32 - 1;
                self.tempo_index.insert(bits, t);
                t
            }
        };
        let mut positives = [0u16; INLINE];
        let mut len = 0u32;
        for i in s.positives() {
            if (len as usize) < INLINE {
                positives[len as usize] = i;
            }
            len += 1;
        }
        KnnRow {
            tempo,
            meter: s.context.meter,
            key: s.context.key,
            density: s
                .context
                .input_density
                .map(super::session_knn::density_exps),
            producer: s.producer,
            len,
            sqrt_len: (len as f32).sqrt(),
            positives,
        }
    }

    /// Adds (`sign` = 1) or removes (-1) one session's contribution. Tempo ranges only grow:
    /// they describe every session that was ever good.
    fn apply(&mut self, row: usize, sign: i32) {
        let SessionRow {
            producer,
            context,
            ref items,
            ref signals,
            ..
        } = self.sessions[row];
        let history = &mut self.history[producer as usize];
        let mut positives: Vec<u16> = Vec::new();
        for &(item, w) in items {
            let w = clip(w);
            let stats = history.entry(item).or_default();
            stats.weight += sign as f32 * w;
            let bump = |n: &mut u32| *n = n.saturating_add_signed(sign);
            if w > 0.0 {
                positives.push(item);
                bump(&mut stats.good_sessions);
                let bits = signals
                    .iter()
                    .find(|(i, _)| *i == item)
                    .map_or(0, |(_, b)| *b);
                for (k, n) in stats.signals.iter_mut().enumerate() {
                    if bits & (1 << k) != 0 {
                        bump(n);
                    }
                }
                self.popularity[item as usize] += sign as f32;
                if sign > 0 {
                    let first = stats.good_sessions == 1;
                    stats.tempo_lo = if first {
                        context.tempo
                    } else {
                        stats.tempo_lo.min(context.tempo)
                    };
                    stats.tempo_hi = if first {
                        context.tempo
                    } else {
                        stats.tempo_hi.max(context.tempo)
                    };
                }
                if let Some(key) = context.key {
                    match stats.keys.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, n)) => bump(n),
                        None if sign > 0 => stats.keys.push((key, 1)),
                        None => {}
                    }
                }
            } else if w < 0.0 {
                bump(&mut stats.bad_sessions);
            }
        }
        if positives.is_empty() {
            return;
        }
        let delta = sign as f32;
        for (a, &i) in positives.iter().enumerate() {
            for &j in &positives[a + 1..] {
                bump_sparse(&mut self.together[i as usize], j, delta);
                bump_sparse(&mut self.together[j as usize], i, delta);
            }
        }
        let key = context_key(&context);
        let group = self.by_context.entry(key).or_default();
        for &i in &positives {
            bump_sparse(group, i, delta);
        }
        if group.is_empty() {
            self.by_context.remove(&key);
        }
    }

    /// Sessions in which both `i` and `j` worked.
    pub fn together(&self, i: u16, j: u16) -> f32 {
        let row = &self.together[i as usize];
        row.binary_search_by_key(&j, |(k, _)| *k)
            .map_or(0.0, |at| row[at].1)
    }

    /// Records one feedback event in the producer's open session (a new session id opens a
    /// new session). Returns how the session's positive presets changed, or `None` for a
    /// preset outside the catalogue.
    pub fn update(&mut self, fb: &Feedback) -> Option<SessionChange> {
        if fb.preset as usize >= self.catalogue.len() {
            return None;
        }
        let producer = match self.producer_index.get(&fb.producer) {
            Some(&p) => p,
            None => {
                self.history.push(HashMap::new());
                self.rows_of.push(Vec::new());
                let p = self.history.len() as u32 - 1;
                self.producer_index.insert(fb.producer.clone(), p);
                p
            }
        };
        let row = match self.open.get(&producer) {
            Some(&(id, row)) if id == fb.session => row,
            _ => {
                self.sessions.push(SessionRow {
                    id: fb.session,
                    producer,
                    context: fb.context,
                    items: Vec::new(),
                    signals: Vec::new(),
                    started_at_ms: fb.at_ms,
                });
                self.rows_of[producer as usize].push(self.sessions.len() as u32 - 1);
                let k = self.knn_row(self.sessions.len() - 1);
                self.knn.push(k);
                self.open
                    .insert(producer, (fb.session, self.sessions.len() - 1));
                self.sessions.len() - 1
            }
        };
        let before: Vec<u16> = self.sessions[row].positives().collect();
        self.apply(row, -1);
        let session = &mut self.sessions[row];
        session.context = fb.context;
        match session.items.iter_mut().find(|(i, _)| *i == fb.preset) {
            Some((_, w)) => *w += fb.weight(),
            None => session.items.push((fb.preset, fb.weight())),
        }
        add_signal(
            &mut session.signals,
            fb.preset,
            signal_bit(fb.kind, fb.seconds),
        );
        self.apply(row, 1);
        self.knn[row] = self.knn_row(row);
        let after = self.sessions[row].positives().collect();
        Some(SessionChange { before, after })
    }

    pub fn producer(&self, name: &str) -> Option<u32> {
        self.producer_index.get(name).copied()
    }

    /// The producer's per-preset statistics (empty for a new producer).
    pub fn history_of(&self, ctx: &Context) -> Option<&HashMap<u16, ItemStats>> {
        self.producer(&ctx.producer)
            .map(|p| &self.history[p as usize])
    }

    /// Cold start: nothing known about this producer and nothing tried yet this session.
    pub fn is_cold(&self, ctx: &Context) -> bool {
        ctx.session.is_empty()
            && self
                .history_of(ctx)
                .is_none_or(|h| h.values().all(|s| s.good_sessions == 0))
    }

    /// What the producer likes, as positive weights per preset: their history plus (doubled)
    /// what worked so far in this session.
    pub fn profile(&self, ctx: &Context) -> Vec<(u16, f32)> {
        let mut profile: Vec<(u16, f32)> = self
            .history_of(ctx)
            .map(|h| {
                h.iter()
                    .filter(|(_, s)| s.weight > 0.0)
                    .map(|(&i, s)| (i, s.weight))
                    .collect()
            })
            .unwrap_or_default();
        for &(item, w) in &ctx.session {
            if w > 0.0 && (item as usize) < self.catalogue.len() {
                match profile.iter_mut().find(|(i, _)| *i == item) {
                    Some((_, p)) => *p += 2.0 * clip(w),
                    None => profile.push((item, 2.0 * clip(w))),
                }
            }
        }
        profile.sort_unstable_by_key(|(i, _)| *i);
        profile
    }

    /// The producer's sessions: (all, those where some preset worked).
    pub fn session_counts(&self, ctx: &Context) -> (usize, usize) {
        self.producer(&ctx.producer).map_or((0, 0), |p| {
            let rows = &self.rows_of[p as usize];
            let good = rows
                .iter()
                .filter(|&&r| self.sessions[r as usize].positives().next().is_some())
                .count();
            (rows.len(), good)
        })
    }

    /// The producer's distinct sessions where some preset matching `pred` worked.
    pub fn sessions_where(&self, ctx: &Context, pred: impl Fn(u16) -> bool) -> usize {
        self.producer(&ctx.producer).map_or(0, |p| {
            self.rows_of[p as usize]
                .iter()
                .filter(|&&r| self.sessions[r as usize].positives().any(&pred))
                .count()
        })
    }

    /// "Reel Drive worked in 4 of your sessions (you liked it in 3, captured it in 1) at
    /// 118–126 BPM, mostly in A minor", citing only evidence logged; `None` when it never
    /// worked for the producer.
    pub fn describe(&self, ctx: &Context, item: u16) -> Option<String> {
        let stats = self
            .history_of(ctx)?
            .get(&item)
            .filter(|s| s.good_sessions > 0)?;
        let name = self.catalogue.name(item);
        let n = stats.good_sessions;
        let mut text = format!("{name} worked in {n} of your sessions");
        let cited: Vec<String> = [
            EventKind::Exported,
            EventKind::Kept,
            EventKind::Liked,
            EventKind::KeptPlaying,
            EventKind::PresetUsed,
        ]
        .into_iter()
        .filter_map(|k| {
            let i = EventKind::ALL.iter().position(|x| *x == k)?;
            let c = stats.signals[i];
            (c > 0).then(|| format!("{} in {c}", k.evidence_phrase().unwrap_or_default()))
        })
        .collect();
        if !cited.is_empty() {
            text += &format!(" (you {})", cited.join(", "));
        }
        text += &tempo_range(stats.tempo_lo, stats.tempo_hi);
        if let Some((key, count)) = stats
            .keys
            .iter()
            .filter(|(_, c)| *c > 0)
            .max_by_key(|(_, c)| *c)
        {
            let mostly = if *count < n { "mostly " } else { "" };
            text += &format!(", {mostly}in {}", key_name(*key));
        }
        Some(text)
    }
}

/// "1 session", "4 sessions".
pub fn sessions(n: f32) -> String {
    if n == 1.0 {
        "1 session".to_string()
    } else {
        format!("{n:.0} sessions")
    }
}

/// " at 118–126 BPM" or " at 120 BPM".
pub fn tempo_range(lo: f32, hi: f32) -> String {
    if (hi - lo).abs() < 0.5 {
        format!(" at {lo:.0} BPM")
    } else {
        format!(" at {lo:.0}–{hi:.0} BPM")
    }
}

/// "A minor" rather than "A Natural minor".
pub fn key_name(key: Key) -> String {
    key.to_string().replace("Natural minor", "minor")
}
