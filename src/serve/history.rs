//! Per-user session history on the server: record a session, list (export) it, forget it,
//! and rank presets from it. Every call is scoped to the caller ([`User`]) by the
//! store's queries themselves ([`Store::sessions_of`], [`Store::forget`]):
//! a user's id never comes from the request body, so no body can name someone else.
//!
//! Recommendations are fitted on the caller's history alone: the hybrid's popularity and
//! co-occurrence parts then say "in your sessions", never "in other people's".

use super::api::{
    RankedPreset, RecommendRequest, RecommendResponse, check, parse_key, parse_meter,
};
use super::auth::User;
use super::error::ApiError;
use super::store::{SqliteStore, Store};
use crate::limits;
use crate::presets::PresetLibrary;
use crate::recommend::{Catalogue, Context, Dataset, Hybrid, HybridWeights, Recommender};
use crate::sessions::{Event, Session, SessionContext, SessionLog};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// Events one recorded session may hold.
pub const MAX_EVENTS: usize = 10_000;

/// `POST /v1/sessions`: one session as the plugin logs it (the `melodist sessions export`
/// line format, without the producer: that is the caller).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordSession {
    /// Unix time in milliseconds.
    pub started_at_ms: i64,
    #[serde(default)]
    pub ended_at_ms: Option<i64>,
    /// `tempo`, `meter` ("4/4"), and optionally `key` ("A minor"), `input_density`,
    /// `input_register`, as fields of this object.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub context: SessionContext,
    /// `{"t_ms", "kind", "preset", "seconds"}`; kinds as `melodist sessions export` writes.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Event>,
}

impl From<&Session> for RecordSession {
    /// A local session as a server records it (under the caller, whoever it was here).
    fn from(s: &Session) -> Self {
        Self {
            started_at_ms: s.started_at_ms,
            ended_at_ms: s.ended_at_ms,
            context: s.context,
            events: s.events.clone(),
        }
    }
}

/// The server's history (in its [`Store`]) and the preset catalogue it ranks.
pub struct History {
    store: Arc<dyn Store>,
    library: PresetLibrary,
}

fn db_error(err: anyhow::Error) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the history database is not available now ({err:#}); nothing was changed, try again"
        ),
    )
}

impl History {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            library: PresetLibrary::factory(),
        }
    }

    /// The history in the SQLite database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self::new(Arc::new(SqliteStore::open(path)?)))
    }

    /// Stores one session under the caller's name.
    pub fn record(&self, user: &User, s: RecordSession) -> Result<usize, ApiError> {
        check("tempo", s.context.tempo, limits::TEMPO)?;
        if s.events.len() > MAX_EVENTS {
            return Err(ApiError::invalid(format!(
                "a session may hold at most {MAX_EVENTS} events, not {}",
                s.events.len()
            )));
        }
        if let Some(e) = s.events.iter().find(|e| e.t_ms < 0) {
            return Err(ApiError::invalid(format!(
                "event times are milliseconds from the session's start, not {}",
                e.t_ms
            )));
        }
        let events = s.events.len();
        let session = Session {
            producer: user.0.clone(),
            session: 0,
            started_at_ms: s.started_at_ms,
            ended_at_ms: s.ended_at_ms,
            context: s.context,
            events: s.events,
        };
        self.store.record(&session).map_err(db_error)?;
        Ok(events)
    }

    /// The caller's sessions, oldest first.
    pub fn list(&self, user: &User) -> Result<SessionLog, ApiError> {
        self.store.sessions_of(&user.0).map_err(db_error)
    }

    /// Deletes the caller's sessions; returns how many.
    pub fn forget(&self, user: &User) -> Result<usize, ApiError> {
        self.store.forget(&user.0).map_err(db_error)
    }

    /// Ranks the presets for a context from the caller's own history.
    pub fn recommend(
        &self,
        user: &User,
        req: &RecommendRequest,
    ) -> Result<RecommendResponse, ApiError> {
        let ctx = context(user, req)?;
        let count = check("count", req.count.unwrap_or(5), 1..=50)? as usize;
        let log = self.list(user)?;
        let data = Dataset::new(&log, Catalogue::from_library(&self.library));
        let mut hybrid = Hybrid::new(HybridWeights::TUNED);
        hybrid.fit(&data);
        let presets = hybrid
            .recommend(&ctx, count)
            .into_iter()
            .map(|rec| RankedPreset {
                name: self
                    .library
                    .get(&rec.preset_id)
                    .map_or(rec.preset_id.clone(), |p| p.name.clone()),
                preset_id: rec.preset_id,
                score: rec.score,
                reason: rec.explanation,
            })
            .collect();
        Ok(RecommendResponse {
            user: user.0.clone(),
            sessions: log.sessions.len(),
            presets,
        })
    }
}

/// The recommendation context of a request, for the caller.
fn context(user: &User, req: &RecommendRequest) -> Result<Context, ApiError> {
    let key = match &req.key {
        Some(tonic) => Some(parse_key(tonic, req.scale.as_deref().unwrap_or("major"))?),
        None => None,
    };
    let tempo = req
        .tempo
        .map(|t| check("tempo", t as f32, limits::TEMPO))
        .transpose()?;
    Ok(Context {
        producer: user.0.clone(),
        tempo,
        meter: req.meter.as_deref().map(parse_meter).transpose()?,
        key,
        input_density: req
            .density
            .map(|d| check("density", d as f32, 0.0..=16.0))
            .transpose()?,
        input_register: req
            .register
            .map(|r| check("register", r as f32, 0.0..=127.0))
            .transpose()?,
        session: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::EventKind;

    fn session(preset: &str) -> RecordSession {
        RecordSession {
            started_at_ms: 1_000,
            ended_at_ms: Some(60_000),
            context: SessionContext::default(),
            events: vec![Event::about(10, EventKind::Kept, preset, None)],
        }
    }

    #[test]
    fn each_user_sees_and_forgets_only_their_own_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("s.db")).unwrap();
        let (a, b) = (User("a".into()), User("b".into()));
        h.record(&a, session("reel-drive")).unwrap();
        h.record(&a, session("reel-drive")).unwrap();
        h.record(&b, session("slow-air")).unwrap();
        assert_eq!(h.list(&a).unwrap().sessions.len(), 2);
        let of_b = h.list(&b).unwrap();
        assert_eq!(of_b.sessions.len(), 1);
        assert_eq!(of_b.sessions[0].producer, "b");
        assert_eq!(h.forget(&a).unwrap(), 2);
        assert!(h.list(&a).unwrap().sessions.is_empty());
        assert_eq!(h.list(&b).unwrap().sessions[0].events.len(), 1);
    }
}
