//! `melodist serve`: the models as a service, for a studio's workstations, a classroom or
//! a web sketchpad (issue 17). One process holds the models and the users' history;
//! clients speak JSON over HTTP.
//!
//! | endpoint | what |
//! | --- | --- |
//! | `GET /healthz` | liveness, and how many models are loaded |
//! | `GET /metrics` | Prometheus text ([`metrics`]) |
//! | `GET /v1/models` | name, format, version (weights checksum), source, card |
//! | `POST /v1/generate` | `melodist generate`'s settings → notes in beat time, or a MIDI file with `Accept: audio/midi` |
//! | `POST /v1/phrase` | one phrase as the plugin's worker writes it (its *Model server* setting) |
//! | `POST /v1/vary`, `/v1/morph` | the VAE: notes in, notes out |
//! | `POST/GET/DELETE /v1/sessions` | record, list (export) and forget the caller's history |
//! | `POST /v1/recommend` | presets ranked from the caller's own history, with reasons |
//! | `GET /v1/me` | who the server thinks the caller is |
//! | `GET /v1/openapi.json` | the API, described from the types in [`api`] |
//!
//! Layout, one concern per file: [`config`] (options), [`api`] (bodies and validation),
//! [`routes`] (paths and layers), [`pool`] (the decode threads and their bounded queue),
//! [`models`] (what is loaded), [`auth`] (tokens), [`history`] (per-user sessions),
//! [`store`] (where tokens and history live: SQLite, or PostgreSQL shared by instances),
//! [`metrics`], [`error`].

pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod history;
pub mod metrics;
pub mod models;
pub mod pool;
pub mod routes;
pub mod store;

use anyhow::{Context, Result, bail};
use auth::{Access, TokenStore};
pub use config::ServeConfig;
use history::History;
use metrics::Metrics;
use models::Models;
use pool::{DecodePool, PoolConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use store::{PostgresStore, SqliteStore, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Everything a request handler can reach.
pub struct AppState {
    pub config: ServeConfig,
    pub access: Access,
    /// Swapped whole when the models folder changes ([`AppState::reload_if_changed`]).
    models: RwLock<Arc<Models>>,
    /// Why the models on disk were refused, until a load succeeds again.
    reload_error: Mutex<Option<String>>,
    pub pool: DecodePool,
    pub history: History,
    pub tokens: TokenStore,
    pub metrics: Metrics,
}

impl AppState {
    /// Opens the database, loads the models and starts the decode threads.
    pub fn build(config: ServeConfig) -> Result<Self> {
        let store = open_store(config.postgres.as_deref(), &config.db)?;
        let tokens = TokenStore::new(store.clone());
        let access = if config.require_token || !config.bind.ip().is_loopback() {
            Access::TokenRequired
        } else {
            Access::LocalAnonymous
        };
        if access == Access::TokenRequired && tokens.count()? == 0 {
            let (place, option) = match &config.postgres {
                Some(url) => (url.clone(), format!("--postgres {url}")),
                None => (
                    config.db.display().to_string(),
                    format!("--db {}", config.db.display()),
                ),
            };
            bail!(
                "serving on {} needs API tokens and {place} has none: add one with 'melodist serve token add NAME {option}' (or bind to 127.0.0.1 for this machine only)",
                config.bind,
            );
        }
        let history = History::new(store);
        let models = Models::load(&config.models)
            .with_context(|| format!("cannot load the models in {}", config.models.display()))?;
        let metrics = Metrics::new().context("cannot set up the metrics")?;
        let pool = DecodePool::start(
            PoolConfig {
                threads: config.threads,
                batch: config.batch,
                queue: config.queue,
            },
            models.factory(),
            models.fast_model(),
            metrics.queue_depth.clone(),
            metrics.batch_size.clone(),
        )?;
        Ok(Self {
            config,
            access,
            models: RwLock::new(Arc::new(models)),
            reload_error: Mutex::new(None),
            pool,
            history,
            tokens,
            metrics,
        })
    }

    /// The models being served.
    pub fn models(&self) -> Arc<Models> {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why the models on disk were last refused (the server keeps the ones it had).
    pub fn reload_error(&self) -> Option<String> {
        self.reload_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads the models folder again if it changed since `seen` (see
    /// [`Models::signature`]) and serves the new models; a folder that does not load is
    /// refused with its reason, and the running models stay.
    pub fn reload_if_changed(&self, seen: &mut String) {
        let now = Models::signature(&self.config.models);
        if now == *seen {
            return;
        }
        *seen = now;
        let dir = self.config.models.display();
        let outcome = match Models::load(&self.config.models) {
            Ok(models) => {
                self.pool.swap(models.factory(), models.fast_model());
                let versions: Vec<String> = (models.infos.iter())
                    .map(|m| format!("{} {}", m.name, m.version))
                    .collect();
                eprintln!(
                    "melodist serve: now serving the models in {dir} ({})",
                    versions.join(", ")
                );
                *self.models.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(models);
                pool::release_freed_memory();
                None
            }
            Err(err) => {
                let why = format!("{err:#}");
                eprintln!(
                    "melodist serve: the models in {dir} changed but do not load ({why}); still serving the previous ones"
                );
                Some(why)
            }
        };
        self.metrics.model_reloaded(outcome.is_none());
        *self.reload_error.lock().unwrap_or_else(|e| e.into_inner()) = outcome;
    }
}

/// A server running on the current tokio runtime.
pub struct RunningServer {
    /// Where it listens (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    watcher: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish, and waits for that.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        (&mut self.task).await.context("the server task failed")??;
        Ok(())
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
    }
}

/// Loads everything (off the async threads), binds, and serves in the background.
pub async fn start(config: ServeConfig) -> Result<RunningServer> {
    let bind = config.bind;
    let state = tokio::task::spawn_blocking(move || AppState::build(config)).await??;
    let state = Arc::new(state);
    let watcher = state.config.model_poll.map(|every| {
        let state = state.clone();
        tokio::spawn(async move {
            let mut seen = Models::signature(&state.config.models);
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let state = state.clone();
                let check = move || {
                    state.reload_if_changed(&mut seen);
                    seen
                };
                match tokio::task::spawn_blocking(check).await {
                    Ok(now) => seen = now,
                    Err(_) => return, // the runtime is shutting down
                }
            }
        })
    });
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let addr = listener.local_addr()?;
    let app = routes::router(state.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(tx),
        task,
        watcher,
    })
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address to listen on. Without API tokens only a loopback address is allowed.
    #[arg(long, default_value = "127.0.0.1:8088")]
    pub bind: SocketAddr,
    /// The server's database (history and token hashes); default: server.db in the
    /// Melodist data folder.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Keep tokens and history in this PostgreSQL database instead of --db
    /// (postgres://user@host:port/db): every instance given the same URL serves every user.
    #[arg(long, env = POSTGRES_ENV)]
    pub postgres: Option<String>,
    /// Models folder: neural/ (else the built-in model) and vae/.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Decode threads, 1-64 (default: one per core).
    #[arg(long, value_parser = crate::cli::ranged(1..=64usize))]
    pub threads: Option<usize>,
    /// Requests one decode thread decodes at once, their network steps batched into one
    /// matrix-matrix product; 1-64, 1 decodes one at a time.
    #[arg(long, default_value_t = ServeConfig::default().batch, value_parser = crate::cli::ranged(1..=64usize))]
    pub batch: usize,
    /// Decode jobs that may wait before requests get 429, 1-100000.
    #[arg(long, default_value_t = 64, value_parser = crate::cli::ranged(1..=100_000usize))]
    pub queue: usize,
    /// Need a token for every /v1 call, even on a loopback address.
    #[arg(long)]
    pub require_token: bool,
    /// Seconds between looks for new models in --models (a changed folder is loaded and
    /// served without a restart); 0 never looks, 0-3600.
    #[arg(long, default_value_t = 2.0, value_parser = crate::cli::ranged(0.0..=3600.0f64))]
    pub model_poll: f64,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Manage API tokens (one per user; the token is shown once, only its hash is kept).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token for NAME and print it.
    Add {
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List token names and when they were made.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Delete NAME's token (their history stays until they forget it).
    Remove {
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// The environment variable `--postgres` may come from (keeps a password out of `ps`).
pub const POSTGRES_ENV: &str = "MELODIST_POSTGRES";

/// Which database the token commands use: the server's.
#[derive(clap::Args)]
pub struct DbArgs {
    /// The server's SQLite database (default: server.db in the Melodist data folder).
    #[arg(long)]
    db: Option<PathBuf>,
    /// The PostgreSQL database of servers started with --postgres.
    #[arg(long, env = POSTGRES_ENV)]
    postgres: Option<String>,
}

impl DbArgs {
    /// The tokens, and where they are (for messages).
    fn open(self) -> Result<(TokenStore, String)> {
        let path = db_path(self.db)?;
        let place = match &self.postgres {
            Some(url) => url.clone(),
            None => path.display().to_string(),
        };
        let store = open_store(self.postgres.as_deref(), &path)?;
        Ok((TokenStore::new(store), place))
    }
}

/// PostgreSQL when a URL is given, else the SQLite file at `db`.
fn open_store(postgres: Option<&str>, db: &std::path::Path) -> Result<Arc<dyn Store>> {
    Ok(match postgres {
        Some(url) => Arc::new(PostgresStore::connect(url)?),
        None => Arc::new(SqliteStore::open(db)?),
    })
}

fn db_path(db: Option<PathBuf>) -> Result<PathBuf> {
    match db {
        Some(path) => Ok(path),
        None => Ok(crate::sessions::data_dir()?.join("server.db")),
    }
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Some(Command::Token(command)) => tokens(command),
        None => serve(args),
    }
}

fn tokens(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Add { name, db } => {
            let (tokens, place) = db.open()?;
            let token = tokens.add(&name)?;
            println!("{token}");
            eprintln!(
                "token for {name:?} stored (as a hash) in {place}; this is the only time it is shown"
            );
        }
        TokenCommand::List { db } => {
            for t in db.open()?.0.list()? {
                println!(
                    "{}\tcreated {} ms after the Unix epoch",
                    t.name, t.created_at_ms
                );
            }
        }
        TokenCommand::Remove { name, db } => {
            if !db.open()?.0.remove(&name)? {
                bail!("no token named {name:?}");
            }
            println!("removed the token of {name:?}");
        }
    }
    Ok(())
}

fn serve(args: Args) -> Result<()> {
    let started = Instant::now();
    let config = ServeConfig {
        bind: args.bind,
        db: db_path(args.db)?,
        postgres: args.postgres,
        models: args.models,
        threads: args.threads.unwrap_or(ServeConfig::default().threads),
        batch: args.batch,
        queue: args.queue,
        require_token: args.require_token,
        model_poll: (args.model_poll > 0.0).then(|| Duration::from_secs_f64(args.model_poll)),
        ..ServeConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = start(config).await?;
        println!(
            "melodist serve: listening on http://{} ({} decode threads, up to {} requests at once on each; ready in {} ms); Ctrl-C stops",
            server.addr,
            server.state.config.threads,
            server.state.config.batch,
            started.elapsed().as_millis()
        );
        tokio::signal::ctrl_c().await?;
        server.stop().await
    })
}
