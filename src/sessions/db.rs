//! The session store: one SQLite file, shared by every Melodist instance on the machine.
//!
//! Why these settings:
//! - WAL journal: readers never block the writer, and several plugin instances in several
//!   processes can append at once (SQLite serialises writers with file locks).
//! - `busy_timeout`: a writer waits for another process's write instead of failing.
//! - every event is its own transaction, so a crash loses at most the event being written;
//!   WAL + `synchronous=NORMAL` never corrupts the file on a process crash.
//! - the schema version lives in `PRAGMA user_version`; [`MIGRATIONS`] brings any older file
//!   up to date, inside an immediate transaction so two processes cannot migrate twice.
//! - a file that is not a database, or fails `quick_check`, is renamed
//!   `<name>.corrupt-<unix seconds>` and a fresh one is started: history is lost but kept
//!   for inspection, and the plugin keeps working.

use super::{Event, EventKind, Session, SessionContext, SessionLog};
use crate::music::Meter;
use anyhow::{Context as _, Result};
use rusqlite::{Connection, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Schema migrations; entry `i` upgrades `user_version` `i` to `i + 1`. Append only.
pub const MIGRATIONS: &[&str] = &[
    // v1: sessions and their events.
    "CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        producer TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        tempo REAL NOT NULL,
        meter TEXT NOT NULL,
        key TEXT
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        t_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        preset TEXT,
        seconds REAL
    );",
    // v2: what the producer played, for content-based matching; faster per-session reads.
    "ALTER TABLE sessions ADD COLUMN input_density REAL;
    ALTER TABLE sessions ADD COLUMN input_register REAL;
    CREATE INDEX events_by_session ON events(session_id);",
    // v3: `context` events carry the new tempo, meter, key and input statistics.
    "ALTER TABLE events ADD COLUMN tempo REAL;
    ALTER TABLE events ADD COLUMN meter TEXT;
    ALTER TABLE events ADD COLUMN key TEXT;
    ALTER TABLE events ADD COLUMN input_density REAL;
    ALTER TABLE events ADD COLUMN input_register REAL;",
    // v4: the recommenders' compact copy of the history, and the last session and event
    // ids it has read, so `recommend` reads only what changed since.
    "CREATE TABLE recommender_cache (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        data BLOB NOT NULL
    );",
];

/// What was added to the history after given session and event ids (see
/// [`SessionDb::changes_since`]), read from one snapshot of the database.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Sessions added since, and older sessions that received events since (their context
    /// may have been updated), in id order, without their events.
    pub sessions: Vec<Session>,
    /// Events added since, in id order, with the id of their session.
    pub events: Vec<(i64, Event)>,
    /// The largest session and event ids in the snapshot (0 when there are none).
    pub last_session: i64,
    pub last_event: i64,
    /// Sessions with an id up to the `last_session` asked about: less than before means
    /// history was deleted.
    pub sessions_upto: usize,
}

const SESSION_COLUMNS: &str =
    "id, producer, started_at, ended_at, tempo, meter, key, input_density, input_register";
const EVENT_COLUMNS: &str =
    "session_id, t_ms, kind, preset, seconds, tempo, meter, key, input_density, input_register";

/// One `sessions` row (columns [`SESSION_COLUMNS`]) as a session without events.
fn session_from_row(r: &rusqlite::Row) -> rusqlite::Result<Session> {
    let meter: String = r.get(5)?;
    let key: Option<String> = r.get(6)?;
    Ok(Session {
        producer: r.get(1)?,
        session: r.get(0)?,
        started_at_ms: r.get(2)?,
        ended_at_ms: r.get(3)?,
        context: SessionContext {
            tempo: r.get::<_, f64>(4)? as f32,
            meter: Meter::parse(&meter).unwrap_or_default(),
            key: key.as_deref().and_then(super::parse_key),
            input_density: r.get::<_, Option<f64>>(7)?.map(|d| d as f32),
            input_register: r.get::<_, Option<f64>>(8)?.map(|r| r as f32),
        },
        events: Vec::new(),
    })
}

/// One `events` row (columns [`EVENT_COLUMNS`]) as (session id, event); `None` for a kind
/// this version does not know.
fn event_from_row(r: &rusqlite::Row) -> rusqlite::Result<Option<(i64, Event)>> {
    let key = r.get::<_, Option<String>>(7)?;
    let density = r.get::<_, Option<f64>>(8)?;
    let register = r.get::<_, Option<f64>>(9)?;
    let context = match (r.get::<_, Option<f64>>(5)?, r.get::<_, Option<String>>(6)?) {
        (Some(tempo), Some(meter)) => Meter::parse(&meter).map(|meter| SessionContext {
            tempo: tempo as f32,
            meter,
            key: key.as_deref().and_then(super::parse_key),
            input_density: density.map(|d| d as f32),
            input_register: register.map(|d| d as f32),
        }),
        _ => None,
    };
    let Some(kind) = EventKind::parse(&r.get::<_, String>(2)?) else {
        return Ok(None);
    };
    Ok(Some((
        r.get(0)?,
        Event {
            t_ms: r.get(1)?,
            kind,
            preset: r.get(3)?,
            seconds: r.get::<_, Option<f64>>(4)?.map(|s| s as f32),
            context,
        },
    )))
}

/// Inserts one event (with its context columns) into `conn`.
fn insert_event(conn: &Connection, session: i64, e: &Event) -> rusqlite::Result<usize> {
    let c = e.context.as_ref();
    conn.execute(
        "INSERT INTO events (session_id, t_ms, kind, preset, seconds, tempo, meter, key, input_density, input_register)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            session,
            e.t_ms,
            e.kind.as_str(),
            e.preset,
            e.seconds,
            c.map(|c| c.tempo),
            c.map(|c| c.meter.to_string()),
            c.and_then(|c| c.key).map(|k| k.to_string()),
            c.and_then(|c| c.input_density),
            c.and_then(|c| c.input_register)
        ],
    )
}

/// Whether opening reads the whole file to check it (`PRAGMA quick_check`).
#[derive(Debug, Clone, Copy)]
enum Verify {
    Yes,
    No,
}

/// How long a writer waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// An open session database.
pub struct SessionDb {
    conn: Connection,
    path: PathBuf,
    /// Set when the file was corrupt and has been moved aside: say so to the producer.
    pub recovered: Option<String>,
}

impl SessionDb {
    /// Opens (or creates) the database at the default location.
    pub fn open_default() -> Result<SessionDb> {
        SessionDb::open(&super::default_db_path()?)
    }

    /// Opens or creates `path`, migrating it to the current schema. A corrupt file is moved
    /// aside and replaced (see the module docs); [`SessionDb::recovered`] then says so.
    pub fn open(path: &Path) -> Result<SessionDb> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create data folder {}", dir.display()))?;
        }
        match Self::open_waiting(path, Verify::Yes) {
            Ok(db) => Ok(db),
            Err(err) if is_corruption(&err) => {
                let aside = move_aside(path)?;
                let mut db = Self::open_checked(path, Verify::Yes).with_context(|| {
                    format!(
                        "cannot start a fresh session database at {}",
                        path.display()
                    )
                })?;
                db.recovered = Some(format!(
                    "the session database {} was damaged ({err}); it was moved to {} and a new, empty history was started",
                    path.display(),
                    aside.display()
                ));
                Ok(db)
            }
            Err(err) => {
                Err(err).with_context(|| format!("cannot open session database {}", path.display()))
            }
        }
    }

    /// Opens `path` as [`SessionDb::open`] does but without its integrity check, which reads
    /// the whole file (60 ms at 40k sessions): for a quick read such as `melodist
    /// recommend`. A file that is not a database still fails here and damage met later
    /// fails the read; the caller then opens it with [`SessionDb::open`], which moves a
    /// damaged file aside.
    pub fn open_unverified(path: &Path) -> Result<SessionDb> {
        Self::open_waiting(path, Verify::No)
            .with_context(|| format!("cannot open session database {}", path.display()))
    }

    /// [`SessionDb::open_checked`], tried again for up to [`BUSY_TIMEOUT`] while another
    /// process holds the lock: switching a new file to WAL needs it exclusively, and SQLite
    /// answers "database is locked" at once there instead of waiting (two plugin instances
    /// starting together on a fresh machine).
    fn open_waiting(path: &Path, verify: Verify) -> rusqlite::Result<SessionDb> {
        let started = std::time::Instant::now();
        loop {
            match Self::open_checked(path, verify) {
                Err(err) if is_busy(&err) && started.elapsed() < BUSY_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                result => return result,
            }
        }
    }

    fn open_checked(path: &Path, verify: Verify) -> rusqlite::Result<SessionDb> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
        if let Verify::Yes = verify {
            let check: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
            if check != "ok" {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                    Some(format!("quick_check: {check}")),
                ));
            }
        }
        migrate(&mut conn)?;
        Ok(SessionDb {
            conn,
            path: path.to_path_buf(),
            recovered: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Records a new session and returns its id.
    pub fn start_session(
        &self,
        producer: &str,
        started_at_ms: i64,
        ctx: &SessionContext,
    ) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO sessions (producer, started_at, tempo, meter, key, input_density, input_register)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    producer,
                    started_at_ms,
                    ctx.tempo,
                    ctx.meter.to_string(),
                    ctx.key.map(|k| k.to_string()),
                    ctx.input_density,
                    ctx.input_register
                ],
            )
            .context("cannot record session start")?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Updates what is known about a running session (detected key, input statistics).
    pub fn update_context(&self, session: i64, ctx: &SessionContext) -> Result<()> {
        self.conn
            .execute(
                "UPDATE sessions SET tempo = ?2, meter = ?3, key = ?4, input_density = ?5, input_register = ?6 WHERE id = ?1",
                params![
                    session,
                    ctx.tempo,
                    ctx.meter.to_string(),
                    ctx.key.map(|k| k.to_string()),
                    ctx.input_density,
                    ctx.input_register
                ],
            )
            .context("cannot update session")?;
        Ok(())
    }

    pub fn end_session(&self, session: i64, ended_at_ms: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE sessions SET ended_at = ?2 WHERE id = ?1",
                params![session, ended_at_ms],
            )
            .context("cannot record session end")?;
        Ok(())
    }

    /// Appends one event (one transaction: durable once this returns).
    pub fn add_event(&self, session: i64, event: &Event) -> Result<()> {
        insert_event(&self.conn, session, event).context("cannot record event")?;
        Ok(())
    }

    /// (sessions, events) stored.
    pub fn counts(&self) -> Result<(usize, usize)> {
        let count = |table: &str| -> Result<usize> {
            Ok(self
                .conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                    r.get::<_, i64>(0)
                })? as usize)
        };
        Ok((count("sessions")?, count("events")?))
    }

    /// The whole history, in [`SessionLog`] order. Rows with unreadable values (written by a
    /// future version, say) are skipped rather than failing the whole read.
    pub fn load_log(&self) -> Result<SessionLog> {
        let mut log = SessionLog::default();
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions ORDER BY producer, started_at, id"
        ))?;
        let mut index = std::collections::HashMap::new();
        for session in stmt.query_map([], session_from_row)? {
            let session = session?;
            index.insert(session.session, log.sessions.len());
            log.sessions.push(session);
        }
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY id"))?;
        for row in stmt.query_map([], event_from_row)? {
            let Some((session, event)) = row? else {
                continue;
            };
            if let Some(&i) = index.get(&session) {
                log.sessions[i].events.push(event);
            }
        }
        Ok(log)
    }

    /// One producer's history (a user of `melodist serve`), in [`SessionLog`] order: only
    /// their rows are read, so nothing of anyone else's ever leaves the database.
    pub fn load_log_of(&self, producer: &str) -> Result<SessionLog> {
        let mut log = SessionLog::default();
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE producer = ?1 ORDER BY started_at, id"
        ))?;
        let mut index = std::collections::HashMap::new();
        for session in stmt.query_map(params![producer], session_from_row)? {
            let session = session?;
            index.insert(session.session, log.sessions.len());
            log.sessions.push(session);
        }
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE session_id IN
               (SELECT id FROM sessions WHERE producer = ?1) ORDER BY id"
        ))?;
        for row in stmt.query_map(params![producer], event_from_row)? {
            let Some((session, event)) = row? else {
                continue;
            };
            if let Some(&i) = index.get(&session) {
                log.sessions[i].events.push(event);
            }
        }
        Ok(log)
    }

    /// Deletes one producer's history (sessions and their events) and no one else's.
    /// Returns the number of sessions removed.
    pub fn forget_producer(&mut self, producer: &str) -> Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM events WHERE session_id IN (SELECT id FROM sessions WHERE producer = ?1)",
            params![producer],
        )?;
        let n = tx.execute(
            "DELETE FROM sessions WHERE producer = ?1",
            params![producer],
        )?;
        // The incremental recommender cache covers everyone's rows: rebuild it next time.
        tx.execute("DELETE FROM recommender_cache", [])?;
        tx.commit().context("cannot delete history")?;
        Ok(n)
    }

    /// What changed after session `last_session` and event `last_event` (0, 0: everything),
    /// read inside one transaction so the ids returned cover exactly what was read.
    pub fn changes_since(&self, last_session: i64, last_event: i64) -> Result<Changes> {
        let tx = self.conn.unchecked_transaction()?;
        let changes = {
            let max = |table: &str| -> rusqlite::Result<i64> {
                tx.query_row(
                    &format!("SELECT COALESCE(MAX(id), 0) FROM {table}"),
                    [],
                    |r| r.get(0),
                )
            };
            let mut changes = Changes {
                last_session: max("sessions")?,
                last_event: max("events")?,
                sessions_upto: tx.query_row(
                    "SELECT COUNT(*) FROM sessions WHERE id <= ?1",
                    [last_session],
                    |r| r.get::<_, i64>(0),
                )? as usize,
                ..Changes::default()
            };
            let mut stmt = tx.prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions
                 WHERE id > ?1 OR id IN (SELECT session_id FROM events WHERE id > ?2)
                 ORDER BY id"
            ))?;
            for session in stmt.query_map([last_session, last_event], session_from_row)? {
                changes.sessions.push(session?);
            }
            let mut stmt = tx.prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE id > ?1 ORDER BY id"
            ))?;
            for row in stmt.query_map([last_event], event_from_row)? {
                changes.events.extend(row?);
            }
            changes
        };
        tx.commit()?;
        Ok(changes)
    }

    /// The recommenders' cached copy of the history ([`crate::recommend::cache`]), if any.
    pub fn recommender_cache(&self) -> Result<Option<Vec<u8>>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row("SELECT data FROM recommender_cache WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Replaces the recommenders' cached copy of the history.
    pub fn store_recommender_cache(&self, data: &[u8]) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO recommender_cache (id, data) VALUES (1, ?1)",
                [data],
            )
            .context("cannot store the recommender cache")?;
        Ok(())
    }

    /// Adds every session of `log` (with new ids) in one transaction; returns how many.
    pub fn import_log(&mut self, log: &SessionLog) -> Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for s in &log.sessions {
            tx.execute(
                "INSERT INTO sessions (producer, started_at, ended_at, tempo, meter, key, input_density, input_register)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    s.producer,
                    s.started_at_ms,
                    s.ended_at_ms,
                    s.context.tempo,
                    s.context.meter.to_string(),
                    s.context.key.map(|k| k.to_string()),
                    s.context.input_density,
                    s.context.input_register
                ],
            )?;
            let id = tx.last_insert_rowid();
            for e in &s.events {
                insert_event(&tx, id, e)?;
            }
        }
        tx.commit().context("cannot import sessions")?;
        Ok(log.sessions.len())
    }

    /// Deletes all history and compacts the file so nothing remains on disk. Returns the
    /// number of sessions removed.
    pub fn forget(&mut self) -> Result<usize> {
        let (sessions, _) = self.counts()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "DELETE FROM events; DELETE FROM sessions; DELETE FROM recommender_cache;",
        )?;
        tx.commit().context("cannot delete history")?;
        // VACUUM rewrites the file without the deleted pages; the checkpoint empties the WAL.
        self.conn.execute_batch("VACUUM;")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(sessions)
    }

    /// Full `integrity_check`: "ok" on a healthy file.
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

/// Brings the schema up to [`MIGRATIONS`]`.len()`.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0));
    if current(conn)? as usize >= MIGRATIONS.len() {
        return Ok(());
    }
    // Immediate: take the write lock first, then re-read the version another process may
    // have just bumped.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let from = current(&tx)? as usize;
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version as u32 + 1)?;
    }
    tx.commit()
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn is_corruption(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// Renames the database and its WAL / shared-memory files to `*.corrupt-<unix seconds>`.
fn move_aside(path: &Path) -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let renamed = |p: &Path| PathBuf::from(format!("{}.corrupt-{stamp}", p.display()));
    let aside = renamed(path);
    std::fs::rename(path, &aside)
        .with_context(|| format!("cannot move damaged {} aside", path.display()))?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", path.display()));
        if side.exists() {
            // Best effort: a stale WAL next to a fresh file would be replayed into it.
            if std::fs::rename(&side, renamed(&side)).is_err() {
                let _ = std::fs::remove_file(&side);
            }
        }
    }
    Ok(aside)
}
