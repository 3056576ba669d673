//! What `GET /metrics` reports, in the Prometheus text format: requests by endpoint and
//! status, latency by endpoint, the decode queue's depth and the batch sizes decoded.
//!
//! Each server owns its own [`prometheus::Registry`] (not the process-global one), so two
//! servers in one process, as in the tests, never mix their counts.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Endpoints as metric labels: a fixed set, so a client probing random paths cannot grow
/// the label set without bound.
pub const ENDPOINTS: [&str; 12] = [
    "/healthz",
    "/metrics",
    "/v1/models",
    "/v1/generate",
    "/v1/phrase",
    "/v1/vary",
    "/v1/morph",
    "/v1/sessions",
    "/v1/recommend",
    "/v1/me",
    "/v1/openapi.json",
    "other",
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Jobs waiting for a decode thread.
    pub queue_depth: IntGauge,
    /// Requests decoded together in one step (1 while decoding is one request at a time).
    pub batch_size: Histogram,
    model_reloads: IntCounterVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "melodist_requests_total",
                "HTTP requests by endpoint and status",
            ),
            &["endpoint", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "melodist_request_seconds",
                "Time from request to response, by endpoint",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["endpoint"],
        )?;
        let queue_depth = IntGauge::new(
            "melodist_decode_queue_depth",
            "Decode jobs waiting for a decode thread",
        )?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "melodist_decode_batch_size",
                "Requests decoded together in one step",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )?;
        let model_reloads = IntCounterVec::new(
            Opts::new(
                "melodist_model_reloads_total",
                "Changed model folders loaded (ok) or refused (failed)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(model_reloads.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            queue_depth,
            batch_size,
            model_reloads,
        })
    }

    /// Counts one load of a changed models folder.
    pub fn model_reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.model_reloads.with_label_values(&[result]).inc();
    }

    /// Counts one answered request.
    pub fn observe(&self, path: &str, status: u16, seconds: f64) {
        let endpoint = endpoint_label(path);
        self.requests
            .with_label_values(&[endpoint, &status.to_string()])
            .inc();
        self.latency.with_label_values(&[endpoint]).observe(seconds);
    }

    /// Everything, in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding our own well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The label for a request path: one of [`ENDPOINTS`].
fn endpoint_label(path: &str) -> &'static str {
    let path = path.trim_end_matches('/');
    ENDPOINTS
        .iter()
        .find(|e| path == **e || path.starts_with(&format!("{e}/")))
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_a_bounded_set_of_endpoints() {
        let m = Metrics::new().unwrap();
        m.observe("/v1/generate", 200, 0.01);
        m.observe("/v1/generate", 429, 0.0);
        m.observe("/no/such/path/42", 404, 0.0);
        m.observe("/v1/sessions/", 200, 0.0);
        let text = m.render();
        assert!(
            text.contains(r#"melodist_requests_total{endpoint="/v1/generate",status="200"} 1"#)
        );
        assert!(
            text.contains(r#"melodist_requests_total{endpoint="/v1/generate",status="429"} 1"#)
        );
        assert!(text.contains(r#"melodist_requests_total{endpoint="other",status="404"} 1"#));
        assert!(
            text.contains(r#"melodist_requests_total{endpoint="/v1/sessions",status="200"} 1"#)
        );
        assert!(text.contains("melodist_decode_queue_depth 0"));
    }
}
