//! API tokens: who is calling, so each user's history stays theirs.
//!
//! `melodist serve token add NAME` draws 32 random bytes from the OS, prints the token
//! once (`mld_` + 64 hex digits) and stores only its SHA-256 in the server's database: a
//! copied database file does not let anyone call the server. A token is sent as
//! `Authorization: Bearer mld_…`; the server hashes it and looks the hash up.
//!
//! Without tokens a server is for this machine only: it answers anonymous calls (as the
//! user [`LOCAL_PRODUCER`], the plugin's own history name) only when bound to a loopback
//! address. On any other address every `/v1` call needs a token ([`Access::TokenRequired`]).

use super::error::ApiError;
use super::store::{SqliteStore, Store};
use crate::sessions::LOCAL_PRODUCER;
use anyhow::{Result, bail};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// Who may call without a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anonymous calls are the local user (loopback binds only).
    LocalAnonymous,
    /// Every `/v1` call needs a valid token.
    TokenRequired,
}

/// The caller of a request, as the auth layer established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub String);

/// Token names: what history rows are filed under.
const NAME_HELP: &str = "1-64 letters, digits, '-', '_' or '.'";

/// The server's API tokens, kept (as hashes) in its [`Store`].
pub struct TokenStore {
    store: Arc<dyn Store>,
}

/// One row of `token list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub created_at_ms: i64,
}

impl TokenStore {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The tokens of the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self::new(Arc::new(SqliteStore::open(path)?)))
    }

    /// Creates a token for `name` and returns it: the only time it is ever seen.
    pub fn add(&self, name: &str) -> Result<String> {
        check_name(name)?;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
        let token = format!("mld_{}", hex(&bytes));
        if !self.store.add_token(name, &hash(&token), now_ms())? {
            bail!("a token named {name:?} exists already (remove it first to replace it)");
        }
        Ok(token)
    }

    pub fn list(&self) -> Result<Vec<TokenInfo>> {
        self.store.tokens()
    }

    /// Removes `name`'s token (its history stays until forgotten); false if none.
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.store.remove_token(name)
    }

    pub fn count(&self) -> Result<usize> {
        self.store.token_count()
    }

    /// The user a token belongs to, if it is one of ours.
    pub fn user_of(&self, token: &str) -> Result<Option<String>> {
        self.store.user_of_hash(&hash(token))
    }

    /// The caller of a request with this `Authorization` header value (if any).
    pub fn authenticate(&self, header: Option<&str>, access: Access) -> Result<User, ApiError> {
        let Some(value) = header else {
            return match access {
                Access::LocalAnonymous => Ok(User(LOCAL_PRODUCER.into())),
                Access::TokenRequired => Err(ApiError::unauthorized(
                    "this server needs an API token: send 'Authorization: Bearer <token>' (tokens are made with 'melodist serve token add NAME')",
                )),
            };
        };
        let token = value
            .strip_prefix("Bearer ")
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be 'Bearer <token>'")
            })?;
        match self.user_of(token) {
            Ok(Some(name)) => Ok(User(name)),
            Ok(None) => Err(ApiError::unauthorized(
                "this API token is not valid on this server",
            )),
            Err(err) => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check the API token now (database: {err:#}); try again"),
            )),
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("a token name is {NAME_HELP}, not {name:?}");
    }
    if name == LOCAL_PRODUCER {
        bail!("{LOCAL_PRODUCER:?} is the name of this machine's own history; choose another name");
    }
    Ok(())
}

fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_shown_once_and_stored_only_as_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        let store = TokenStore::open(&path).unwrap();
        let token = store.add("alice").unwrap();
        assert!(token.starts_with("mld_") && token.len() == 68, "{token}");
        assert_eq!(store.user_of(&token).unwrap().as_deref(), Some("alice"));
        assert_eq!(store.user_of("mld_nope").unwrap(), None);
        // Another token for another user differs; a second one for alice is refused.
        assert_ne!(store.add("bob").unwrap(), token);
        assert!(store.add("alice").is_err());
        let names: Vec<String> = store.list().unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["alice", "bob"]);
        // The file never holds the token itself.
        drop(store);
        let bytes = std::fs::read(&path).unwrap();
        let needle = &token.as_bytes()[4..];
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        let store = TokenStore::open(&path).unwrap();
        assert!(store.remove("alice").unwrap());
        assert!(!store.remove("alice").unwrap());
        assert_eq!(store.user_of(&token).unwrap(), None);
    }

    #[test]
    fn bad_names_and_the_local_name_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(&dir.path().join("s.db")).unwrap();
        assert!(store.add("").is_err());
        assert!(store.add("a b").is_err());
        assert!(store.add(LOCAL_PRODUCER).is_err());
    }

    #[test]
    fn anonymous_calls_are_local_only_where_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(
            store.authenticate(None, Access::LocalAnonymous).unwrap(),
            User(LOCAL_PRODUCER.into())
        );
        assert_eq!(
            store
                .authenticate(None, Access::TokenRequired)
                .unwrap_err()
                .status,
            401
        );
        let token = store.add("carol").unwrap();
        let header = format!("Bearer {token}");
        assert_eq!(
            store
                .authenticate(Some(&header), Access::TokenRequired)
                .unwrap(),
            User("carol".into())
        );
        assert_eq!(
            store
                .authenticate(Some("Bearer mld_x"), Access::LocalAnonymous)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            store
                .authenticate(Some(&token), Access::LocalAnonymous)
                .unwrap_err()
                .status,
            401
        );
    }
}
