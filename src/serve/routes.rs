//! The HTTP surface: which path does what, and the layers around it (metrics, auth, body
//! limit, timeout). Handlers check the request, hand CPU work to the decode pool and
//! database work to tokio's blocking threads, and turn every failure into an [`ApiError`].

use super::AppState;
use super::api::{
    self, GenerateRequest, GenerateResponse, MAX_PHRASES, MorphRequest, Note, PhraseAnswer,
    PhraseCall, PhrasesResponse, RecommendRequest, RecommendResponse, VaeDecode, VaryRequest,
    check,
};
use super::auth::User;
use super::error::{ApiError, ErrorBody};
use super::history::RecordSession;
use super::models::{ModelsResponse, Worker};
use crate::cli::generate::{chord_ticks, generate_with};
use crate::generator::{Generator, render_phrase};
use crate::limits;
use crate::midi::file::melody_to_bytes;
use crate::midi::{Melody, MelodyNote};
use crate::model::morph::morph_phrases;
use crate::model::tokenizer::melody_key;
use crate::model::variation::{DecodeRules, Encoded, PhraseContext, VaeModel, vary};
use crate::music::chord::Progression;
use crate::sessions::jsonl;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;
use utoipa::OpenApi;

type Shared = Arc<AppState>;

/// The whole application.
pub fn router(state: Shared) -> Router {
    let v1 = Router::new()
        .route("/models", get(models))
        .route("/generate", post(generate))
        .route("/phrase", post(phrase))
        .route("/vary", post(vary_hook))
        .route("/morph", post(morph_hooks))
        .route("/recommend", post(recommend))
        .route(
            "/sessions",
            post(record_session)
                .get(list_sessions)
                .delete(forget_sessions),
        )
        .route("/me", get(me))
        .route("/openapi.json", get(openapi_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/v1", v1)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.body_limit,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// A JSON body whose rejections (too large, not JSON, wrong shape) are [`ApiError`]s.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Body(value))
    }
}

/// Counts every answer in the metrics, by endpoint and status.
async fn count(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    s.metrics
        .observe(&path, response.status().as_u16(), seconds);
    response
}

/// Answers `408` with a sentence when a request (a slow upload included) is not answered
/// within the configured time. Decode work already queued still runs; its answer is dropped.
async fn time_limit(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let limit = s.config.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request was not answered within {:.1} s (a slow upload or a busy server); try again",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// Establishes the caller ([`User`]) of every `/v1` request, or refuses it.
async fn authenticate(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("").to_string());
    let state = s.clone();
    let user = tokio::task::spawn_blocking(move || {
        state.tokens.authenticate(header.as_deref(), state.access)
    })
    .await
    .unwrap_or_else(|_| Err(ApiError::internal("checking the API token failed")));
    match user {
        Ok(user) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Err(err) => err.into_response(),
    }
}

/// Runs database work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        Err(ApiError::internal(
            "a history operation failed on the server",
        ))
    })
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (see GET /v1/openapi.json)")
}

async fn healthz(State(s): State<Shared>) -> Json<Value> {
    let mut health = json!({ "status": "ok", "models": s.models().infos.len() });
    if let Some(why) = s.reload_error() {
        health["models_error"] = json!(format!(
            "the models folder changed but does not load: {why}; serving the previous models"
        ));
    }
    Json(health)
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

#[utoipa::path(get, path = "/v1/models", responses(
    (status = 200, description = "The models this server serves", body = ModelsResponse)
))]
async fn models(State(s): State<Shared>) -> Json<ModelsResponse> {
    Json(ModelsResponse {
        models: s.models().infos.clone(),
    })
}

/// `GET /v1/openapi.json`: this API, described from its types.
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Melodist model server",
        description = "melodist serve: melodies, variations and per-user preset recommendations over HTTP. Every /v1 call needs 'Authorization: Bearer <token>' unless the server is bound to a loopback address without --require-token."
    ),
    paths(
        models,
        generate,
        phrase,
        vary_hook,
        morph_hooks,
        record_session,
        list_sessions,
        forget_sessions,
        recommend
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

async fn me(Extension(user): Extension<User>) -> Json<Value> {
    Json(json!({ "user": user.0 }))
}

/// True when the client asked for a MIDI file rather than JSON.
fn wants_midi(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("audio/midi"))
}

/// `POST /v1/generate`: the notes `melodist generate` writes for the same settings.
#[utoipa::path(post, path = "/v1/generate", request_body = GenerateRequest, responses(
    (status = 200, description = "The notes in beat time; with 'Accept: audio/midi', the MIDI file 'melodist generate' writes", body = GenerateResponse),
    (status = 400, description = "Not JSON", body = ErrorBody),
    (status = 404, description = "Unknown model or model version", body = ErrorBody),
    (status = 413, description = "Body too large", body = ErrorBody),
    (status = 422, description = "A value out of range or an unknown field", body = ErrorBody),
    (status = 429, description = "Decode queue full; see Retry-After", body = ErrorBody)
))]
async fn generate(
    State(s): State<Shared>,
    headers: HeaderMap,
    Body(req): Body<GenerateRequest>,
) -> Result<Response, ApiError> {
    let g = req.validate(s.config.max_bars)?;
    let chords = match &req.chords {
        Some(text) => {
            let progression = Progression::parse(text, g.meter.beats_per_bar())
                .map_err(|e| ApiError::invalid(format!("bad chords {text:?}: {e}")))?;
            chord_ticks(&progression, g.meter, g.bars)
        }
        None => Vec::new(),
    };
    let write = move |generator: &mut dyn Generator| {
        generate_with(generator, g.settings, g.meter, g.bars, &chords)
    };
    let (notes, model, version) = decode(&s, req.model, req.version, write).await?;
    let key = g.settings.key;
    if wants_midi(&headers) {
        // The title, tempo and channel of `melodist generate`'s file: the same bytes.
        let title = format!("Melodist seed {} ({})", g.settings.seed, key);
        let bytes = melody_to_bytes(&title, &notes, g.tempo, g.meter, Some(key), g.channel)
            .map_err(|e| ApiError::internal(format!("cannot write the MIDI file: {e:#}")))?;
        let kind = HeaderValue::from_static("audio/midi");
        return Ok(([(header::CONTENT_TYPE, kind)], bytes).into_response());
    }
    Ok(Json(GenerateResponse {
        model,
        version,
        key: key.to_string(),
        meter: g.meter.to_string(),
        tempo: g.tempo,
        bars: g.bars,
        seed: g.settings.seed,
        notes: notes.iter().map(Note::from).collect(),
    })
    .into_response())
}

/// `POST /v1/phrase`: one phrase as the plugin's worker writes it (the plugin's *Model
/// server* setting). The same models give the same bars as the worker's own.
#[utoipa::path(post, path = "/v1/phrase", request_body = PhraseCall, responses(
    (status = 200, description = "The performed phrase, one list of notes per bar", body = PhraseAnswer),
    (status = 400, description = "Not JSON", body = ErrorBody),
    (status = 404, description = "Unknown model or model version", body = ErrorBody),
    (status = 422, description = "A value out of range or an unknown field", body = ErrorBody),
    (status = 429, description = "Decode queue full; see Retry-After", body = ErrorBody)
))]
async fn phrase(
    State(s): State<Shared>,
    Body(call): Body<PhraseCall>,
) -> Result<Json<PhraseAnswer>, ApiError> {
    let phrase = call.validate()?;
    let write = move |generator: &mut dyn Generator| render_phrase(generator, &phrase.request());
    let (bars, model, version) = decode(&s, call.model, call.version, write).await?;
    Ok(Json(PhraseAnswer {
        model,
        version,
        bars,
    }))
}

/// Runs `write` on a decode thread with the generator a request names (`model`, default
/// `neural`, pinned to `version` if given); its result, and the model and version that
/// wrote it.
async fn decode<T: Send + 'static>(
    s: &Shared,
    model: Option<String>,
    version: Option<String>,
    write: impl FnOnce(&mut dyn Generator) -> T + Send + 'static,
) -> Result<(T, String, String), ApiError> {
    let kind = s.models().generator(model.as_deref(), version.as_deref())?;
    let name = model.unwrap_or_else(|| "neural".into());
    s.pool
        .run(move |w| {
            let version = version_run(w, &name, version.as_deref())?;
            Ok((write(w.generator(kind)), name, version))
        })
        .await
}

/// The version of model `name` a decode thread runs, which the answer reports; a request
/// that pinned another version (the models were replaced while it waited) is refused.
fn version_run(w: &Worker, name: &str, pinned: Option<&str>) -> Result<String, ApiError> {
    let version = w.version(name);
    match pinned {
        Some(wanted) if wanted != version => Err(ApiError::not_found(format!(
            "model {name:?} version {wanted:?} was replaced by {version:?} while this request waited; ask again"
        ))),
        _ => Ok(version),
    }
}

/// The phrase context of a hook: the key asked for, else the one its notes imply.
fn phrase_context(opts: &VaeDecode, notes: &[MelodyNote]) -> Result<PhraseContext, ApiError> {
    let key = match opts.key {
        Some(key) => key,
        None => melody_key(&Melody {
            title: String::new(),
            meter: opts.meter,
            key: None,
            notes: notes.to_vec(),
        })
        .ok_or_else(|| {
            ApiError::invalid("cannot tell the hook's key from its notes; send options.key")
        })?,
    };
    Ok(PhraseContext {
        meter: opts.meter,
        key,
        style: opts.style,
    })
}

fn rules(opts: &VaeDecode) -> DecodeRules<'static> {
    DecodeRules {
        low: opts.low,
        high: opts.high,
        scale_lock: opts.scale_lock,
        temperature: opts.temperature,
        ..DecodeRules::default()
    }
}

fn phrases_response(
    version: String,
    ctx: PhraseContext,
    phrases: Vec<Vec<MelodyNote>>,
) -> Json<PhrasesResponse> {
    Json(PhrasesResponse {
        version,
        key: ctx.key.to_string(),
        meter: ctx.meter.to_string(),
        phrases: (phrases.iter())
            .map(|p| p.iter().map(Note::from).collect())
            .collect(),
    })
}

/// `POST /v1/vary`: `melodist vary` for one hook (variation `i` uses seed `seed·1000 + i`).
#[utoipa::path(post, path = "/v1/vary", request_body = VaryRequest, responses(
    (status = 200, description = "The variations, in beat time", body = PhrasesResponse),
    (status = 422, description = "Bad notes or options", body = ErrorBody),
    (status = 503, description = "No VAE loaded", body = ErrorBody)
))]
async fn vary_hook(
    State(s): State<Shared>,
    Body(req): Body<VaryRequest>,
) -> Result<Json<PhrasesResponse>, ApiError> {
    let hook = api::melody_notes("notes", &req.notes)?;
    let opts = req.options.validate()?;
    let count = check("count", req.count, 1..=MAX_PHRASES)? as u64;
    let distance = check("distance", req.distance, 0.0..=1.0)? as f32;
    let ctx = phrase_context(&opts, &hook)?;
    with_vae(&s, req.options.version.as_deref(), ctx, move |vae| {
        let encoded = encode_hook(vae, "the hook", &hook, ctx)?;
        (0..count)
            .map(|i| {
                let seed = opts.seed.wrapping_mul(1000).wrapping_add(i);
                vae.decode(&vary(&encoded, distance, seed), &rules(&opts), seed)
                    .map_err(decoding_failed)
            })
            .collect()
    })
    .await
}

/// `POST /v1/morph`: `melodist morph` from hook `a` to hook `b` (in `a`'s context).
#[utoipa::path(post, path = "/v1/morph", request_body = MorphRequest, responses(
    (status = 200, description = "The phrases from A to B, in beat time", body = PhrasesResponse),
    (status = 422, description = "Bad notes or options", body = ErrorBody),
    (status = 503, description = "No VAE loaded", body = ErrorBody)
))]
async fn morph_hooks(
    State(s): State<Shared>,
    Body(req): Body<MorphRequest>,
) -> Result<Json<PhrasesResponse>, ApiError> {
    let a = api::melody_notes("a", &req.a)?;
    let b = api::melody_notes("b", &req.b)?;
    let opts = req.options.validate()?;
    let steps = check("steps", req.steps, 2..=MAX_PHRASES)? as usize;
    let ctx = phrase_context(&opts, &a)?;
    with_vae(&s, req.options.version.as_deref(), ctx, move |vae| {
        let (a, b) = (
            encode_hook(vae, "hook a", &a, ctx)?,
            encode_hook(vae, "hook b", &b, ctx)?,
        );
        morph_phrases(vae, &a, &b, steps, &rules(&opts), opts.seed).map_err(decoding_failed)
    })
    .await
}

/// Runs `job` with the VAE (of `version`) on a decode thread and answers its phrases.
async fn with_vae(
    s: &AppState,
    version: Option<&str>,
    ctx: PhraseContext,
    job: impl FnOnce(&VaeModel) -> Result<Vec<Vec<MelodyNote>>, ApiError> + Send + 'static,
) -> Result<Json<PhrasesResponse>, ApiError> {
    s.models().vae(version)?;
    let pin = version.map(str::to_string);
    let (phrases, version) = s
        .pool
        .run(move |w| {
            let version = version_run(w, "vae", pin.as_deref())?;
            let vae = (w.vae.clone()).ok_or_else(|| ApiError::internal("no VAE loaded"))?;
            Ok((job(&vae)?, version))
        })
        .await?;
    Ok(phrases_response(version, ctx, phrases))
}

fn encode_hook(
    vae: &VaeModel,
    name: &str,
    notes: &[MelodyNote],
    ctx: PhraseContext,
) -> Result<Encoded, ApiError> {
    (vae.encode(notes, ctx)).map_err(|e| ApiError::invalid(format!("cannot encode {name}: {e:#}")))
}

fn decoding_failed(e: anyhow::Error) -> ApiError {
    ApiError::internal(format!("decoding failed: {e:#}"))
}

/// `POST /v1/sessions`: record one session in the caller's history.
#[utoipa::path(post, path = "/v1/sessions", request_body = RecordSession, responses(
    (status = 201, description = "Stored in the caller's history"),
    (status = 401, description = "No valid token where one is needed", body = ErrorBody)
))]
async fn record_session(
    State(s): State<Shared>,
    Extension(user): Extension<User>,
    Body(session): Body<RecordSession>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let events = blocking(move || s.history.record(&user, session)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "recorded": 1, "events": events })),
    ))
}

#[derive(Deserialize)]
struct ListQuery {
    /// `jsonl`: the `melodist sessions export` file format, ready for `sessions import`.
    format: Option<String>,
}

/// `GET /v1/sessions`: the caller's history (JSON, or JSON lines with `?format=jsonl`).
#[utoipa::path(get, path = "/v1/sessions", params(
    ("format" = Option<String>, Query, description = "json (default) or jsonl (the export format)")
), responses(
    (status = 200, description = "The caller's sessions, oldest first"),
    (status = 401, description = "No valid token where one is needed", body = ErrorBody)
))]
async fn list_sessions(
    State(s): State<Shared>,
    Extension(user): Extension<User>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let log = blocking(move || s.history.list(&user)).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(json!({ "sessions": log.sessions })).into_response()),
        Some("jsonl") => {
            let mut out = Vec::new();
            jsonl::write(&log, &mut out)
                .map_err(|e| ApiError::internal(format!("cannot write the export: {e:#}")))?;
            Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
        }
        Some(other) => Err(ApiError::invalid(format!(
            "format must be json or jsonl, not {other:?}"
        ))),
    }
}

/// `DELETE /v1/sessions`: forget the caller's history (and only theirs).
#[utoipa::path(delete, path = "/v1/sessions", responses(
    (status = 200, description = "How many of the caller's sessions were deleted"),
    (status = 401, description = "No valid token where one is needed", body = ErrorBody)
))]
async fn forget_sessions(
    State(s): State<Shared>,
    Extension(user): Extension<User>,
) -> Result<Json<Value>, ApiError> {
    let deleted = blocking(move || s.history.forget(&user)).await?;
    Ok(Json(json!({ "deleted": deleted })))
}

/// `POST /v1/recommend`: presets ranked from the caller's own history, with reasons.
#[utoipa::path(post, path = "/v1/recommend", request_body = RecommendRequest, responses(
    (status = 200, description = "Presets ranked from the caller's own history, with reasons", body = RecommendResponse),
    (status = 422, description = "A value out of range", body = ErrorBody)
))]
async fn recommend(
    State(s): State<Shared>,
    Extension(user): Extension<User>,
    Body(req): Body<RecommendRequest>,
) -> Result<Json<RecommendResponse>, ApiError> {
    check("count", req.count.unwrap_or(5), 1..=50)?;
    if let Some(t) = req.tempo {
        check("tempo", t as f32, limits::TEMPO)?;
    }
    Ok(Json(
        blocking(move || s.history.recommend(&user, &req)).await?,
    ))
}
