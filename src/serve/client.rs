//! The command line as a client of `melodist serve` (`--server URL`): one blocking JSON
//! call at a time, with a time limit. Callers fall back to the local models when a call
//! fails, saying why, so `--server` never costs a melody.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri, header};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The environment variable `--server` commands read the API token from (so it stays out
/// of shell history and process lists).
pub const TOKEN_VAR: &str = "MELODIST_TOKEN";

/// Why a call to the server gave no answer.
#[derive(Debug)]
pub enum CallError {
    /// No connection, or it broke.
    Unreachable(String),
    /// No answer within the time limit.
    TimedOut(Duration),
    /// The server answered with an error status and its sentence.
    Refused { status: u16, message: String },
    /// The answer was not what this version of Melodist expects.
    BadAnswer(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "cannot reach it ({why})"),
            Self::TimedOut(limit) => write!(f, "no answer within {:.1} s", limit.as_secs_f64()),
            Self::Refused { status, message } => write!(f, "it answered {status}: {message}"),
            Self::BadAnswer(why) => write!(f, "its answer is not understood ({why})"),
        }
    }
}

impl std::error::Error for CallError {}

/// A server address, with the caller's token, and one connection kept open to it.
pub struct ServerClient {
    base: String,
    token: Option<String>,
    timeout: Duration,
    /// A runtime of the client's own (the command line and the plugin's worker have none);
    /// it runs only while a call waits.
    runtime: tokio::runtime::Runtime,
    http: HttpClient<HttpConnector, Full<Bytes>>,
}

impl ServerClient {
    /// `url` is `http://host:port` (a path prefix is kept, for a server behind a proxy).
    /// The token, if any, comes from [`TOKEN_VAR`].
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let token = std::env::var(TOKEN_VAR).ok();
        Self::with_token(url, token, timeout)
    }

    /// [`ServerClient::new`] with the token given (the plugin's *Model server* setting).
    pub fn with_token(url: &str, token: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        let base = url.trim().trim_end_matches('/').to_string();
        let uri: Uri = base
            .parse()
            .map_err(|e| anyhow::anyhow!("{url:?} is not a URL ({e})"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            anyhow::bail!(
                "{url:?}: give an http:// address such as http://studio:8088 (for https, run a TLS proxy on this machine and point Melodist at it)"
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let http = HttpClient::builder(TokioExecutor::new()).build_http();
        Ok(Self {
            base,
            token: token
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
            timeout,
            runtime,
            http,
        })
    }

    /// The server's address, for messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `POST path` with `body` as JSON; the JSON answer, or why there is none.
    pub fn post<B: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<A, CallError> {
        let body = serde_json::to_vec(body).map_err(|e| CallError::BadAnswer(e.to_string()))?;
        let bytes = self.call(Method::POST, path, Some(body), "application/json")?;
        serde_json::from_slice(&bytes).map_err(|e| CallError::BadAnswer(e.to_string()))
    }

    /// `DELETE path`; the JSON answer.
    pub fn delete<A: DeserializeOwned>(&self, path: &str) -> Result<A, CallError> {
        let bytes = self.call(Method::DELETE, path, None, "application/json")?;
        serde_json::from_slice(&bytes).map_err(|e| CallError::BadAnswer(e.to_string()))
    }

    /// `GET path`; the answer's bytes, whatever they are.
    pub fn get_bytes(&self, path: &str) -> Result<Bytes, CallError> {
        self.call(Method::GET, path, None, "*/*")
    }

    /// One call with the token; the body of a success, or why there is none.
    fn call(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
        accept: &str,
    ) -> Result<Bytes, CallError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::ACCEPT, accept);
        if json.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(json.unwrap_or_default())))
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let (status, bytes) = self.send(request)?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(CallError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        Ok(bytes)
    }

    /// Sends and reads the whole answer within the time limit.
    fn send(&self, request: Request<Full<Bytes>>) -> Result<(hyper::StatusCode, Bytes), CallError> {
        let exchange = async {
            let response = (self.http.request(request).await)
                .map_err(|e| CallError::Unreachable(source_chain(&e)))?;
            let status = response.status();
            let body = (response.into_body().collect().await)
                .map_err(|e| CallError::Unreachable(e.to_string()))?;
            Ok((status, body.to_bytes()))
        };
        self.runtime.block_on(async {
            tokio::time::timeout(self.timeout, exchange)
                .await
                .map_err(|_| CallError::TimedOut(self.timeout))?
        })
    }
}

/// An error with its causes ("client error (Connect): Connection refused").
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
