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
//! | `POST /v1/vary`, `/v1/morph` | the VAE: notes in, notes out |
//! | `POST/GET/DELETE /v1/sessions` | record, list (export) and forget the caller's history |
//! | `POST /v1/recommend` | presets ranked from the caller's own history, with reasons |
//! | `GET /v1/me` | who the server thinks the caller is |
//! | `GET /v1/openapi.json` | the API, described from the types in [`api`] |
//!
//! Layout, one concern per file: [`config`] (options), [`api`] (bodies and validation),
//! [`routes`] (paths and layers), [`pool`] (the decode threads and their bounded queue),
//! [`models`] (what is loaded), [`auth`] (tokens), [`history`] (per-user sessions),
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

use anyhow::{Context, Result, bail};
use auth::{Access, TokenStore};
pub use config::ServeConfig;
use history::History;
use metrics::Metrics;
use models::Models;
use pool::{DecodePool, PoolConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Everything a request handler can reach.
pub struct AppState {
    pub config: ServeConfig,
    pub access: Access,
    pub models: Models,
    pub pool: DecodePool,
    pub history: History,
    pub tokens: TokenStore,
    pub metrics: Metrics,
}

impl AppState {
    /// Opens the database, loads the models and starts the decode threads.
    pub fn build(config: ServeConfig) -> Result<Self> {
        let tokens = TokenStore::open(&config.db)?;
        let access = if config.require_token || !config.bind.ip().is_loopback() {
            Access::TokenRequired
        } else {
            Access::LocalAnonymous
        };
        if access == Access::TokenRequired && tokens.count()? == 0 {
            bail!(
                "serving on {} needs API tokens and {} has none: add one with 'melodist serve token add NAME --db {}' (or bind to 127.0.0.1 for this machine only)",
                config.bind,
                config.db.display(),
                config.db.display()
            );
        }
        let history = History::open(&config.db)?;
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
            models,
            pool,
            history,
            tokens,
            metrics,
        })
    }
}

/// A server running on the current tokio runtime.
pub struct RunningServer {
    /// Where it listens (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish, and waits for that.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
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
    }
}

/// Loads everything (off the async threads), binds, and serves in the background.
pub async fn start(config: ServeConfig) -> Result<RunningServer> {
    let bind = config.bind;
    let state = tokio::task::spawn_blocking(move || AppState::build(config)).await??;
    let state = Arc::new(state);
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
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// List token names and when they were made.
    List {
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Delete NAME's token (their history stays until they forget it).
    Remove {
        name: String,
        #[arg(long)]
        db: Option<PathBuf>,
    },
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
            let path = db_path(db)?;
            let token = TokenStore::open(&path)?.add(&name)?;
            println!("{token}");
            eprintln!(
                "token for {name:?} stored (as a hash) in {}; this is the only time it is shown",
                path.display()
            );
        }
        TokenCommand::List { db } => {
            for t in TokenStore::open(&db_path(db)?)?.list()? {
                println!(
                    "{}\tcreated {} ms after the Unix epoch",
                    t.name, t.created_at_ms
                );
            }
        }
        TokenCommand::Remove { name, db } => {
            if !TokenStore::open(&db_path(db)?)?.remove(&name)? {
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
        models: args.models,
        threads: args.threads.unwrap_or(ServeConfig::default().threads),
        batch: args.batch,
        queue: args.queue,
        require_token: args.require_token,
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
