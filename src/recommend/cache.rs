//! Fit once, then read only what changed: a compact copy of the history (per session: its
//! context and net feedback per preset, no events), stored in the session database with the
//! last session and event ids it has read.
//!
//! [`load_dataset`] reads that copy, applies the sessions and events added since (and
//! re-reads the context of sessions that received events), stores it back when anything
//! changed, and returns the [`Dataset`] a full read would give: the same rows in the same
//! order, the same catalogue indices, the same float sums, so a model fitted on it ranks
//! exactly like one fitted on [`SessionDb::load_log`]. If the database lost sessions the
//! copy knew (`sessions forget`, a file replaced after damage) or the copy is unreadable, it
//! is rebuilt from the whole history.

use super::data::{Catalogue, Dataset, SessionRow, add_signal, signal_bit};
use crate::music::{Key, Meter, PitchClass, Scale};
use crate::sessions::db::Changes;
use crate::sessions::{SessionContext, SessionDb};
use anyhow::Result;
use std::collections::HashMap;

/// Bumped whenever the encoding or what a row holds changes: older copies are rebuilt.
const FORMAT: u32 = 1;
const MAGIC: &[u8; 4] = b"MLDH";

/// One session, with preset ids as indices into [`HistoryCache::presets`].
#[derive(Debug, Clone, PartialEq)]
struct CachedSession {
    id: i64,
    /// Index into [`HistoryCache::producers`].
    producer: u32,
    started_at_ms: i64,
    context: SessionContext,
    /// Net feedback per preset, in order of first appearance (as `Session::preset_scores`).
    items: Vec<(u32, f32)>,
    /// Positive evidence bits per preset, in order of first appearance.
    signals: Vec<(u32, u16)>,
}

/// The history as the recommenders need it, and how far into the database it has read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryCache {
    last_session: i64,
    last_event: i64,
    presets: Vec<String>,
    producers: Vec<String>,
    /// In the database's canonical order: producer, start time, id.
    sessions: Vec<CachedSession>,
}

/// What [`load_dataset`] did, for benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// The stored copy was missing, unreadable or stale, and the whole history was read.
    pub rebuilt: bool,
    /// Sessions and events read from the database.
    pub sessions_read: usize,
    pub events_read: usize,
    /// The copy was stored back.
    pub stored: bool,
}

impl HistoryCache {
    /// Applies what changed since this copy was made. Returns false (and changes nothing)
    /// when the database no longer holds every session the copy has read.
    fn apply(&mut self, changes: &Changes) -> bool {
        if changes.sessions_upto != self.count_upto(self.last_session)
            || changes.last_session < self.last_session
            || changes.last_event < self.last_event
        {
            return false;
        }
        let mut preset_index: HashMap<&str, u32> = HashMap::new();
        let mut presets = std::mem::take(&mut self.presets);
        for (i, p) in presets.iter().enumerate() {
            preset_index.insert(p.as_str(), i as u32);
        }
        let mut producer_index: HashMap<String, u32> = self
            .producers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        let mut by_id: HashMap<i64, usize> = self
            .sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, i))
            .collect();
        let mut added = false;
        for s in &changes.sessions {
            match by_id.get(&s.session) {
                Some(&at) => self.sessions[at].context = s.context,
                None => {
                    let producer = *producer_index.entry(s.producer.clone()).or_insert_with(|| {
                        self.producers.push(s.producer.clone());
                        self.producers.len() as u32 - 1
                    });
                    by_id.insert(s.session, self.sessions.len());
                    self.sessions.push(CachedSession {
                        id: s.session,
                        producer,
                        started_at_ms: s.started_at_ms,
                        context: s.context,
                        items: Vec::new(),
                        signals: Vec::new(),
                    });
                    added = true;
                }
            }
        }
        // New preset ids are appended to the table after the borrow of the old ones ends.
        let mut new_presets: Vec<String> = Vec::new();
        for (session, e) in &changes.events {
            let (Some(&at), Some(id)) = (by_id.get(session), e.preset.as_deref()) else {
                continue;
            };
            let preset = match preset_index.get(id) {
                Some(&p) => p,
                None => match new_presets.iter().position(|p| p == id) {
                    Some(k) => (presets.len() + k) as u32,
                    None => {
                        new_presets.push(id.to_string());
                        (presets.len() + new_presets.len() - 1) as u32
                    }
                },
            };
            let s = &mut self.sessions[at];
            let w = e.kind.weight(e.seconds);
            match s.items.iter_mut().find(|(p, _)| *p == preset) {
                Some((_, total)) => *total += w,
                None => s.items.push((preset, w)),
            }
            let bit = signal_bit(e.kind, e.seconds);
            if bit != 0 {
                match s.signals.iter_mut().find(|(p, _)| *p == preset) {
                    Some((_, b)) => *b |= bit,
                    None => s.signals.push((preset, bit)),
                }
            }
        }
        drop(preset_index);
        presets.extend(new_presets);
        self.presets = presets;
        if added {
            let producers = &self.producers;
            self.sessions.sort_by(|a, b| {
                (&producers[a.producer as usize], a.started_at_ms, a.id).cmp(&(
                    &producers[b.producer as usize],
                    b.started_at_ms,
                    b.id,
                ))
            });
        }
        self.last_session = changes.last_session;
        self.last_event = changes.last_event;
        true
    }

    fn count_upto(&self, id: i64) -> usize {
        self.sessions.iter().filter(|s| s.id <= id).count()
    }

    /// The dataset [`Dataset::new`] builds from the same history and catalogue: presets
    /// missing from `catalogue` are added in order of first appearance, producers numbered
    /// in order of first appearance.
    pub fn to_dataset(&self, mut catalogue: Catalogue) -> Dataset {
        let mut item_of: Vec<Option<u16>> = vec![None; self.presets.len()];
        let mut producer_of: Vec<Option<u32>> = vec![None; self.producers.len()];
        let mut producers = Vec::new();
        let mut sessions = Vec::with_capacity(self.sessions.len());
        for s in &self.sessions {
            let producer = *producer_of[s.producer as usize].get_or_insert_with(|| {
                producers.push(self.producers[s.producer as usize].clone());
                producers.len() as u32 - 1
            });
            let mut item = |p: u32| {
                *item_of[p as usize]
                    .get_or_insert_with(|| catalogue.ensure(&self.presets[p as usize]))
            };
            let items = s.items.iter().map(|&(p, w)| (item(p), w)).collect();
            let mut signals = Vec::with_capacity(s.signals.len());
            for &(p, bits) in &s.signals {
                add_signal(&mut signals, item(p), bits);
            }
            sessions.push(SessionRow {
                id: s.id,
                producer,
                context: s.context,
                items,
                signals,
                started_at_ms: s.started_at_ms,
            });
        }
        Dataset {
            catalogue: std::sync::Arc::new(catalogue),
            producers,
            sessions,
        }
    }

    /// Sessions in the copy.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The copy brought up to date with `db`: `self` plus what changed, or the whole
    /// history when `self` no longer matches the database.
    pub fn refresh(&mut self, db: &SessionDb) -> Result<LoadStats> {
        let changes = db.changes_since(self.last_session, self.last_event)?;
        let mut stats = LoadStats {
            sessions_read: changes.sessions.len(),
            events_read: changes.events.len(),
            ..LoadStats::default()
        };
        if !self.apply(&changes) {
            *self = HistoryCache::default();
            let changes = db.changes_since(0, 0)?;
            stats = LoadStats {
                rebuilt: true,
                sessions_read: changes.sessions.len(),
                events_read: changes.events.len(),
                stored: false,
            };
            let fresh = self.apply(&changes);
            debug_assert!(fresh, "an empty copy accepts any history");
        }
        Ok(stats)
    }

    /// The binary encoding stored in the database.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.sessions.len() * 48);
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, FORMAT);
        put_i64(&mut out, self.last_session);
        put_i64(&mut out, self.last_event);
        for table in [&self.presets, &self.producers] {
            put_u32(&mut out, table.len() as u32);
            for name in table {
                put_u32(&mut out, name.len() as u32);
                out.extend_from_slice(name.as_bytes());
            }
        }
        put_u32(&mut out, self.sessions.len() as u32);
        for s in &self.sessions {
            put_i64(&mut out, s.id);
            put_u32(&mut out, s.producer);
            put_i64(&mut out, s.started_at_ms);
            let c = &s.context;
            put_f32(&mut out, c.tempo);
            out.push(c.meter.numerator);
            out.push(c.meter.denominator);
            match c.key {
                Some(k) => {
                    out.push(k.tonic.semitone());
                    out.push(k.scale as u8);
                }
                None => out.extend_from_slice(&[u8::MAX, u8::MAX]),
            }
            for v in [c.input_density, c.input_register] {
                match v {
                    Some(v) => {
                        out.push(1);
                        put_f32(&mut out, v);
                    }
                    None => out.push(0),
                }
            }
            put_u32(&mut out, s.items.len() as u32);
            for &(p, w) in &s.items {
                put_u32(&mut out, p);
                put_f32(&mut out, w);
            }
            put_u32(&mut out, s.signals.len() as u32);
            for &(p, bits) in &s.signals {
                put_u32(&mut out, p);
                out.extend_from_slice(&bits.to_le_bytes());
            }
        }
        out
    }

    /// Decodes [`HistoryCache::encode`]'s output; `None` for anything else (another format,
    /// a truncated or damaged blob).
    pub fn decode(data: &[u8]) -> Option<HistoryCache> {
        let mut r = Reader { data, at: 0 };
        if r.bytes(4)? != MAGIC || r.u32()? != FORMAT {
            return None;
        }
        let mut cache = HistoryCache {
            last_session: r.i64()?,
            last_event: r.i64()?,
            ..HistoryCache::default()
        };
        for table in [&mut cache.presets, &mut cache.producers] {
            let n = r.len()?;
            for _ in 0..n {
                let len = r.len()?;
                table.push(std::str::from_utf8(r.bytes(len)?).ok()?.to_string());
            }
        }
        let n = r.len()?;
        cache.sessions.reserve(n);
        for _ in 0..n {
            let id = r.i64()?;
            let producer = r.u32()?;
            let started_at_ms = r.i64()?;
            let tempo = r.f32()?;
            let meter = Meter {
                numerator: r.u8()?,
                denominator: r.u8()?,
            };
            let key = match (r.u8()?, r.u8()?) {
                (u8::MAX, u8::MAX) => None,
                (t, s) if t < 12 => Some(Key::new(
                    PitchClass::from_index(t),
                    *Scale::ALL.get(s as usize)?,
                )),
                _ => return None,
            };
            let mut opt = || -> Option<Option<f32>> {
                match r.u8()? {
                    0 => Some(None),
                    1 => Some(Some(r.f32()?)),
                    _ => None,
                }
            };
            let input_density = opt()?;
            let input_register = opt()?;
            let mut items = Vec::new();
            for _ in 0..r.len()? {
                items.push((r.u32()?, r.f32()?));
            }
            let mut signals = Vec::new();
            for _ in 0..r.len()? {
                signals.push((r.u32()?, u16::from_le_bytes(r.bytes(2)?.try_into().ok()?)));
            }
            let in_range = (producer as usize) < cache.producers.len()
                && items
                    .iter()
                    .map(|(p, _)| p)
                    .chain(signals.iter().map(|(p, _)| p))
                    .all(|&p| (p as usize) < cache.presets.len());
            if !in_range {
                return None;
            }
            cache.sessions.push(CachedSession {
                id,
                producer,
                started_at_ms,
                context: SessionContext {
                    tempo,
                    meter,
                    key,
                    input_density,
                    input_register,
                },
                items,
                signals,
            });
        }
        (r.at == data.len()).then_some(cache)
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_f32(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let b = self.data.get(self.at..end)?;
        self.at = end;
        Some(b)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }

    /// A count, refused when it could not fit in what is left (a damaged blob must not
    /// make us allocate gigabytes).
    fn len(&mut self) -> Option<usize> {
        let n = self.u32()? as usize;
        (n <= self.data.len() - self.at).then_some(n)
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }

    fn f32(&mut self) -> Option<f32> {
        Some(f32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
}

/// The history in `db` indexed against `catalogue`, reading only what changed since the
/// stored copy (see the module docs), and storing the updated copy back. A copy that
/// cannot be stored (a read-only file, a busy writer) only costs the next call a longer
/// read.
pub fn load_dataset(db: &SessionDb, catalogue: Catalogue) -> Result<(Dataset, LoadStats)> {
    let stored = db
        .recommender_cache()
        .ok()
        .flatten()
        .and_then(|blob| HistoryCache::decode(&blob));
    let missing = stored.is_none();
    let mut cache = stored.unwrap_or_default();
    let mut stats = cache.refresh(db)?;
    stats.rebuilt |= missing;
    if stats.rebuilt || stats.sessions_read > 0 || stats.events_read > 0 {
        stats.stored = db.store_recommender_cache(&cache.encode()).is_ok();
    }
    Ok((cache.to_dataset(catalogue), stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recommend::sim::{self, SimConfig};
    use crate::recommend::{Context, Hybrid, HybridWeights, Recommender};
    use crate::sessions::{Event, EventKind, SessionLog};

    fn same_dataset(a: &Dataset, b: &Dataset) {
        let ids = |d: &Dataset| -> Vec<(String, bool)> {
            d.catalogue
                .items
                .iter()
                .map(|i| (i.id.clone(), i.known))
                .collect()
        };
        assert_eq!(ids(a), ids(b));
        assert_eq!(a.producers, b.producers);
        assert_eq!(a.sessions.len(), b.sessions.len());
        for (x, y) in a.sessions.iter().zip(&b.sessions) {
            assert_eq!(x, y);
        }
    }

    /// A world whose catalogue lacks half the presets, so log-only ids get indices too.
    fn world() -> (SessionLog, Catalogue) {
        let world = sim::simulate(&SimConfig {
            producers: 24,
            max_sessions: 30,
            ..SimConfig::default()
        });
        let half = world.presets.len() / 2;
        (world.log, Catalogue::from_presets(&world.presets[..half]))
    }

    fn full_read(db: &SessionDb, catalogue: &Catalogue) -> Dataset {
        Dataset::new(&db.load_log().unwrap(), catalogue.clone())
    }

    /// Read once, then new sessions (some from producers sorting first), events added to
    /// old sessions, a context update and a preset no one used before: the incremental read
    /// gives the full read's dataset, and a hybrid fitted on it the same scores.
    #[test]
    fn incremental_read_equals_a_full_read() {
        let (log, catalogue) = world();
        let dir = tempfile::tempdir().unwrap();
        let mut db = SessionDb::open(&dir.path().join("h.sqlite3")).unwrap();
        let (first, later): (Vec<_>, Vec<_>) = log
            .sessions
            .iter()
            .cloned()
            .partition(|s| s.session % 3 != 0);
        db.import_log(&SessionLog { sessions: first }).unwrap();

        let (data, stats) = load_dataset(&db, catalogue.clone()).unwrap();
        assert!(stats.rebuilt && stats.stored);
        same_dataset(&data, &full_read(&db, &catalogue));
        let (_, stats) = load_dataset(&db, catalogue.clone()).unwrap();
        assert_eq!(
            stats,
            LoadStats {
                rebuilt: false,
                sessions_read: 0,
                events_read: 0,
                stored: false
            }
        );

        db.import_log(&SessionLog { sessions: later }).unwrap();
        let mut renamed = log.sessions[0].clone();
        renamed.producer = "aaa-first".into();
        renamed
            .events
            .push(Event::about(9, EventKind::Liked, "brand-new", None));
        db.import_log(&SessionLog {
            sessions: vec![renamed],
        })
        .unwrap();
        let old = 2; // a session from the first import
        let mut ctx = log.sessions[0].context;
        ctx.tempo += 7.0;
        ctx.key = None;
        db.update_context(old, &ctx).unwrap();
        for (kind, preset) in [
            (EventKind::Liked, "another-new"),
            (
                EventKind::KeptPlaying,
                log.sessions[5].events[0].preset.as_deref().unwrap_or("x"),
            ),
            (EventKind::Disliked, "another-new"),
        ] {
            db.add_event(old, &Event::about(1000, kind, preset, None))
                .unwrap();
        }
        let (data, stats) = load_dataset(&db, catalogue.clone()).unwrap();
        assert!(!stats.rebuilt && stats.stored && stats.events_read > 0);
        let full = full_read(&db, &catalogue);
        same_dataset(&data, &full);

        let fit = |d: &Dataset| {
            let mut h = Hybrid::new(HybridWeights::TUNED);
            h.fit(d);
            h
        };
        let (a, b) = (fit(&data), fit(&full));
        for s in log.sessions.iter().step_by(17) {
            let c = Context::from_session(&s.producer, &s.context);
            assert_eq!(a.score(&c).values, b.score(&c).values);
            assert_eq!(a.recommend(&c, 10), b.recommend(&c, 10));
        }
    }

    #[test]
    fn encoding_round_trips_and_damage_rebuilds() {
        let (log, catalogue) = world();
        let dir = tempfile::tempdir().unwrap();
        let mut db = SessionDb::open(&dir.path().join("h.sqlite3")).unwrap();
        db.import_log(&log).unwrap();
        let mut cache = HistoryCache::default();
        cache.refresh(&db).unwrap();
        let blob = cache.encode();
        assert_eq!(HistoryCache::decode(&blob), Some(cache.clone()));
        for cut in [0, 3, 40, blob.len() / 2, blob.len() - 1] {
            assert_eq!(HistoryCache::decode(&blob[..cut]), None);
        }
        let mut flipped = blob.clone();
        flipped[4] ^= 0xff; // the format number
        assert_eq!(HistoryCache::decode(&flipped), None);

        db.store_recommender_cache(b"not a cache").unwrap();
        let (data, stats) = load_dataset(&db, catalogue.clone()).unwrap();
        assert!(stats.rebuilt);
        same_dataset(&data, &full_read(&db, &catalogue));
    }

    /// Forgetting empties the copy too; a history rebuilt afterwards (ids start again) is
    /// read whole, not mistaken for the old one.
    #[test]
    fn forget_and_new_history_are_not_served_stale() {
        let (log, catalogue) = world();
        let dir = tempfile::tempdir().unwrap();
        let mut db = SessionDb::open(&dir.path().join("h.sqlite3")).unwrap();
        db.import_log(&log).unwrap();
        load_dataset(&db, catalogue.clone()).unwrap();
        db.forget().unwrap();
        assert_eq!(db.recommender_cache().unwrap(), None);
        let (data, _) = load_dataset(&db, catalogue.clone()).unwrap();
        assert!(data.sessions.is_empty());

        // A stale copy (as if the file had been replaced) is detected by its session count.
        let mut big = HistoryCache::default();
        db.import_log(&log).unwrap();
        big.refresh(&db).unwrap();
        let stale = big.encode();
        db.forget().unwrap();
        let small = SessionLog {
            sessions: log.sessions[..10].to_vec(),
        };
        db.import_log(&small).unwrap();
        db.store_recommender_cache(&stale).unwrap();
        let (data, stats) = load_dataset(&db, catalogue.clone()).unwrap();
        assert!(stats.rebuilt);
        same_dataset(&data, &full_read(&db, &catalogue));
    }
}
