//! `melodist serve`'s options, and the limits every request lives within.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How a server runs. [`ServeConfig::default`] is what `melodist serve` uses with no
/// options (apart from the database path, which defaults to the user's data folder).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free one (the tests do).
    pub bind: SocketAddr,
    /// The server's SQLite database: users' session history and API token hashes.
    pub db: PathBuf,
    /// A PostgreSQL URL: the history and tokens live there instead of `db`, shared by
    /// every instance given the same URL (see `serve::store`).
    pub postgres: Option<String>,
    /// Folder with `neural/` and `vae/` (see [`super::models`]).
    pub models: PathBuf,
    /// Decode threads: one per core.
    pub threads: usize,
    /// Requests one decode thread decodes at once, their network steps batched into one
    /// matrix-matrix product (see `serve::pool`); 1 decodes one at a time.
    pub batch: usize,
    /// Decode jobs that may wait; one more gets a 429.
    pub queue: usize,
    /// Largest request body, bytes (a 4,096-note hook is ~300 KB of JSON).
    pub body_limit: usize,
    /// A request not answered in this time gets a 408 (slow clients included).
    pub request_timeout: Duration,
    /// Most bars one generate request may ask for (the CLI allows more, for files).
    pub max_bars: usize,
    /// Refuse anonymous calls even on a loopback address.
    pub require_token: bool,
    /// How often to look for new models in `models` (a changed config or weights file is
    /// loaded and served; see `AppState::reload_if_changed`); `None`: never.
    pub model_poll: Option<Duration>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8088)),
            db: PathBuf::from("melodist-server.db"),
            postgres: None,
            models: PathBuf::from("models"),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            batch: 4,
            queue: 64,
            body_limit: 512 * 1024,
            request_timeout: Duration::from_secs(30),
            max_bars: 256,
            require_token: false,
            model_poll: Some(Duration::from_secs(2)),
        }
    }
}
