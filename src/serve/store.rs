//! Where a server keeps its users: API token hashes and each user's session history.
//!
//! - [`SqliteStore`]: one SQLite file per instance (`--db`), for a single server or
//!   instances whose users each stick to one of them;
//! - [`PostgresStore`]: one PostgreSQL server (`--postgres URL`) that every instance
//!   behind a load balancer shares, so any instance serves any user's history.
//!
//! [`super::auth::TokenStore`] and [`super::history::History`] hold the rules (names,
//! hashing, limits, who may see what); a store only files rows under the producer it is
//! given. Every call may block: the server makes them on blocking threads.

use super::auth::TokenInfo;
use crate::sessions::{Session, SessionDb, SessionLog};
use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub trait Store: Send + Sync {
    /// Files a token hash under `name`; false if `name` has one already.
    fn add_token(&self, name: &str, sha256: &str, created_at_ms: i64) -> Result<bool>;
    /// Every token's name and creation time, by name.
    fn tokens(&self) -> Result<Vec<TokenInfo>>;
    /// False if `name` had no token.
    fn remove_token(&self, name: &str) -> Result<bool>;
    fn token_count(&self) -> Result<usize>;
    /// The name a token hash is filed under.
    fn user_of_hash(&self, sha256: &str) -> Result<Option<String>>;
    /// Stores one session under its `producer`.
    fn record(&self, session: &Session) -> Result<()>;
    /// `producer`'s sessions, oldest first.
    fn sessions_of(&self, producer: &str) -> Result<SessionLog>;
    /// Deletes `producer`'s sessions; how many there were.
    fn forget(&self, producer: &str) -> Result<usize>;
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the database consistent (statements are atomic).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The token table and the session history in one SQLite file.
pub struct SqliteStore {
    tokens: Mutex<Connection>,
    sessions: Mutex<SessionDb>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the server database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS api_tokens (
                name TEXT PRIMARY KEY,
                sha256 TEXT NOT NULL UNIQUE,
                created_at INTEGER NOT NULL
            );",
        )
        .context("cannot create the api_tokens table")?;
        let sessions = SessionDb::open(path)?;
        if let Some(note) = &sessions.recovered {
            eprintln!("melodist serve: warning: {note}");
        }
        Ok(Self {
            tokens: Mutex::new(conn),
            sessions: Mutex::new(sessions),
        })
    }
}

impl Store for SqliteStore {
    fn add_token(&self, name: &str, sha256: &str, created_at_ms: i64) -> Result<bool> {
        Ok(locked(&self.tokens).execute(
            "INSERT OR IGNORE INTO api_tokens (name, sha256, created_at) VALUES (?1, ?2, ?3)",
            params![name, sha256, created_at_ms],
        )? > 0)
    }

    fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let conn = locked(&self.tokens);
        let mut stmt = conn.prepare("SELECT name, created_at FROM api_tokens ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(TokenInfo {
                name: r.get(0)?,
                created_at_ms: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn remove_token(&self, name: &str) -> Result<bool> {
        Ok(
            locked(&self.tokens)
                .execute("DELETE FROM api_tokens WHERE name = ?1", params![name])?
                > 0,
        )
    }

    fn token_count(&self) -> Result<usize> {
        let count: i64 =
            locked(&self.tokens).query_row("SELECT COUNT(*) FROM api_tokens", [], |r| r.get(0))?;
        Ok(count as usize)
    }

    fn user_of_hash(&self, sha256: &str) -> Result<Option<String>> {
        Ok(locked(&self.tokens)
            .query_row(
                "SELECT name FROM api_tokens WHERE sha256 = ?1",
                params![sha256],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn record(&self, session: &Session) -> Result<()> {
        let log = SessionLog {
            sessions: vec![session.clone()],
        };
        locked(&self.sessions).import_log(&log)?;
        Ok(())
    }

    fn sessions_of(&self, producer: &str) -> Result<SessionLog> {
        locked(&self.sessions).load_log_of(producer)
    }

    fn forget(&self, producer: &str) -> Result<usize> {
        locked(&self.sessions).forget_producer(producer)
    }
}

/// How long connecting to PostgreSQL may take before a call fails (and says so).
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// Tokens and history in a PostgreSQL database that several instances share. A session is
/// one row (its JSON, as `melodist sessions export` writes it), filed under its producer.
/// A broken connection (the database restarted) is replaced at the next call.
pub struct PostgresStore {
    config: postgres::Config,
    client: Mutex<Option<postgres::Client>>,
}

impl PostgresStore {
    /// Connects and creates the tables if they are missing (one instance at a time).
    pub fn connect(url: &str) -> Result<Self> {
        let mut config: postgres::Config = url
            .parse()
            .with_context(|| "--postgres is not a PostgreSQL URL (postgres://user@host:port/db)")?;
        config.connect_timeout(CONNECT_LIMIT);
        if config.get_application_name().is_none() {
            config.application_name("melodist-serve");
        }
        let store = Self {
            config,
            client: Mutex::new(None),
        };
        store
            .call(|c| {
                let mut t = c.transaction()?;
                // Instances starting together must not race to create the same tables.
                t.execute("SELECT pg_advisory_xact_lock(7311929571946262374)", &[])?;
                t.batch_execute(
                    "CREATE TABLE IF NOT EXISTS melodist_api_tokens (
                    name TEXT PRIMARY KEY,
                    sha256 TEXT NOT NULL UNIQUE,
                    created_at BIGINT NOT NULL
                );
                CREATE TABLE IF NOT EXISTS melodist_sessions (
                    id BIGSERIAL PRIMARY KEY,
                    producer TEXT NOT NULL,
                    started_at_ms BIGINT NOT NULL,
                    session TEXT NOT NULL
                );
                CREATE INDEX IF NOT EXISTS melodist_sessions_by_producer
                    ON melodist_sessions (producer, started_at_ms, id);",
                )?;
                t.commit()
            })
            .context("cannot set up the Melodist tables")?;
        Ok(store)
    }

    /// Runs `f` on the connection, connecting first if there is none or it broke.
    fn call<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut client = locked(&self.client);
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            let connected = self.config.connect(postgres::NoTls);
            let described = connected.map_err(|e| anyhow::anyhow!("cannot reach PostgreSQL: {e}"));
            *client = Some(described?);
        }
        let result = f(client.as_mut().expect("connected above"));
        if client.as_ref().is_some_and(|c| c.is_closed()) {
            *client = None;
        }
        result.map_err(|e| anyhow::anyhow!("PostgreSQL: {}", error_text(&e)))
    }
}

/// The server's own message when there is one ("relation ... does not exist").
fn error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

impl Drop for PostgresStore {
    /// The client runs a runtime of its own, which may not be dropped on an async thread
    /// (where a server's state is dropped): it is let go on a thread of its own.
    fn drop(&mut self) {
        if let Some(client) = self
            .client
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = std::thread::Builder::new()
                .name("melodist-postgres-close".into())
                .spawn(move || drop(client));
        }
    }
}

impl Store for PostgresStore {
    fn add_token(&self, name: &str, sha256: &str, created_at_ms: i64) -> Result<bool> {
        self.call(|c| {
            c.execute(
                "INSERT INTO melodist_api_tokens (name, sha256, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&name, &sha256, &created_at_ms],
            )
        })
        .map(|n| n > 0)
    }

    fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let rows = self.call(|c| {
            c.query(
                "SELECT name, created_at FROM melodist_api_tokens ORDER BY name",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| TokenInfo {
                name: r.get(0),
                created_at_ms: r.get(1),
            })
            .collect())
    }

    fn remove_token(&self, name: &str) -> Result<bool> {
        self.call(|c| c.execute("DELETE FROM melodist_api_tokens WHERE name = $1", &[&name]))
            .map(|n| n > 0)
    }

    fn token_count(&self) -> Result<usize> {
        let row = self.call(|c| c.query_one("SELECT COUNT(*) FROM melodist_api_tokens", &[]))?;
        Ok(row.get::<_, i64>(0) as usize)
    }

    fn user_of_hash(&self, sha256: &str) -> Result<Option<String>> {
        let row = self.call(|c| {
            c.query_opt(
                "SELECT name FROM melodist_api_tokens WHERE sha256 = $1",
                &[&sha256],
            )
        })?;
        Ok(row.map(|r| r.get(0)))
    }

    fn record(&self, session: &Session) -> Result<()> {
        let json = serde_json::to_string(session)?;
        self.call(|c| {
            c.execute(
                "INSERT INTO melodist_sessions (producer, started_at_ms, session) VALUES ($1, $2, $3)",
                &[&session.producer, &session.started_at_ms, &json],
            )
        })?;
        Ok(())
    }

    fn sessions_of(&self, producer: &str) -> Result<SessionLog> {
        let rows = self.call(|c| {
            c.query(
                "SELECT id, session FROM melodist_sessions WHERE producer = $1
                 ORDER BY started_at_ms, id",
                &[&producer],
            )
        })?;
        let sessions = rows
            .iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let mut session: Session = serde_json::from_str(r.get(1))
                    .with_context(|| format!("session {id} in PostgreSQL is damaged"))?;
                session.session = id;
                // The row's producer column is what the query matched; it decides.
                session.producer = producer.to_string();
                Ok(session)
            })
            .collect::<Result<_>>()?;
        Ok(SessionLog { sessions })
    }

    fn forget(&self, producer: &str) -> Result<usize> {
        self.call(|c| {
            c.execute(
                "DELETE FROM melodist_sessions WHERE producer = $1",
                &[&producer],
            )
        })
        .map(|n| n as usize)
    }
}
