//! HTTP API: Open Inference Protocol v2, JSON prediction by feature name, ranking, label feedback,
//! health and metrics. `app(state)` builds the service (the router, with the predict route answered
//! ahead of it: see [`Sidecar`]) so tests drive it in-process or on port 0.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::batcher::{Arrival, Batcher};
use crate::bookkeeping::{Bookkeeping, RowIds, instance_id};
use crate::drift::Drift;
use crate::error::{ApiError, Reason};
use crate::feedback::{Lookup, PredictionMemory};
use crate::metrics::{self, Metrics};
use crate::validate::{InputKind, Rows, Validator, Violation};

mod content_encoding;
mod fast_path;
mod feedback;
pub mod grpc;
pub mod grpc_server;
mod oip;
pub mod public;
mod v1;

use fast_path::Refused;
pub use fast_path::{Sidecar, app};
use feedback::feedback;
use oip::{
    infer, infer_version, model_metadata, model_metadata_version, model_ready, model_ready_version, server_metadata,
};
use v1::{predict, predict_body, predict_prefix, rank};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const MODEL_VERSION: HeaderName = HeaderName::from_static("x-model-version");

/// Everything the handlers share.
pub struct AppState {
    pub model_name: String,
    pub model_version: String,
    pub validator: Validator,
    pub metrics: Arc<Metrics>,
    pub memory: Arc<PredictionMemory>,
    pub drift: Arc<std::sync::Mutex<Option<Drift>>>,
    /// The model's reference, once loaded (the evidence sender tells the service).
    pub reference: Arc<std::sync::OnceLock<crate::drift::Loaded>>,
    pub ready: AtomicBool,
    /// Set on SIGTERM: every answer then carries `Connection: close`, so clients leave their
    /// keep-alive connections during the grace period instead of sending on one the drain closes.
    pub draining: AtomicBool,
    /// Set once the model is loaded.
    pub batcher: std::sync::OnceLock<Batcher>,
    /// Where scored rows go for the evidence service, when the sidecar reports to one (set before
    /// the model loads).
    pub evidence: std::sync::OnceLock<crate::evidence::EvidenceQueue>,
    pub max_payload_bytes: usize,
    pub max_candidates: usize,
    pub threshold: f32,
    version_header: Option<HeaderValue>,
    id_prefix: String,
    next_id: AtomicU64,
    /// The constant start of every predict answer (see [`predict_answer`]).
    predict_prefix: Vec<u8>,
    /// The APIs the contract publishes (`contract.apis`), as served.
    published: Vec<Arc<public::Published>>,
}

impl AppState {
    pub fn new(
        model_name: String,
        model_version: String,
        validator: Validator,
        metrics: Arc<Metrics>,
        memory: PredictionMemory,
        max_payload_bytes: usize,
        max_candidates: usize,
    ) -> Self {
        let threshold = validator.contract.output.threshold as f32;
        // The contract was checked at start ([`crate::config`]); an API that is not one is not served.
        let published = validator
            .contract
            .apis
            .iter()
            .filter_map(|a| public::Published::new(a.clone()).ok().map(Arc::new))
            .collect();
        let version_header = HeaderValue::from_str(&model_version).ok();
        let predict_prefix = predict_prefix(&model_name, &model_version);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Self {
            model_name,
            model_version,
            validator,
            metrics,
            memory: Arc::new(memory),
            drift: Arc::default(),
            reference: Arc::default(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            batcher: std::sync::OnceLock::new(),
            evidence: std::sync::OnceLock::new(),
            max_payload_bytes,
            max_candidates,
            threshold,
            version_header,
            id_prefix: format!("{:x}-{:x}", std::process::id(), nanos & 0xffff_ffff),
            predict_prefix,
            published,
            next_id: AtomicU64::new(0),
        }
    }

    /// The batcher once the model is loaded. Deliberately not tied to readiness: after SIGTERM
    /// readiness drops (so no new traffic is routed here) but requests that still arrive are served.
    fn batcher(&self) -> Result<&Batcher, ApiError> {
        self.batcher.get().ok_or(ApiError::Unavailable)
    }

    /// What the inference threads record about each scored batch.
    pub fn bookkeeping(&self) -> Bookkeeping {
        Bookkeeping::new(self.threshold, self.metrics.clone(), self.memory.clone(), self.drift.clone())
            .with_evidence(self.evidence.get().cloned())
    }

    /// Announces a request that will reach the batcher once decoded (nothing before the model loads).
    fn arrival(&self) -> Option<Arrival> {
        self.batcher.get().map(Batcher::arrival)
    }
}

/// The request id of this request (from `x-request-id`, or generated).
#[derive(Clone)]
pub struct RequestId(pub Arc<str>);

/// An API error as a response with the version and request id headers added by the middleware.
struct Failure(ApiError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        failure_response(self.0, false)
    }
}

/// How long a shed request's client is asked to wait (`Retry-After`, seconds).
pub const RETRY_AFTER_SECS: &str = "1";

/// An error's response: our body, or (`oip`) the Open Inference Protocol's.
fn failure_response(e: ApiError, oip: bool) -> Response {
    if let ApiError::Internal(detail) = &e {
        tracing::error!(%detail, "internal error");
    }
    let body = if oip { e.oip_body() } else { e.body() };
    let mut resp = (e.status(), Json(body)).into_response();
    if matches!(e, ApiError::ResourceExhausted) {
        // Shed load says when to come back: a client (or Envoy's retry policy) waits a second
        // rather than hammering a full queue.
        resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static(RETRY_AFTER_SECS));
    }
    resp.extensions_mut().insert(e);
    resp
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_payload_bytes;
    let mut router = Router::new();
    for api in &state.published {
        let api = api.clone();
        let path = api.api.path.clone();
        router = router.route(
            &path,
            post(move |State(state): State<Arc<AppState>>, Extension(RequestId(rid)): Extension<RequestId>, b| {
                public::serve(state, rid, b, api.clone())
            }),
        );
    }
    // A published ranking API may take the standard ranking route's path.
    if !state.published.iter().any(|p| p.api.path == modelrollout_contract::api::RANK_PATH) {
        router = router.route(modelrollout_contract::api::RANK_PATH, post(rank));
    }
    router
        .route("/healthz", get(live))
        .route("/v2/health/live", get(live))
        .route("/readyz", get(ready))
        .route("/v2/health/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_version))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_version))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_version))
        .route("/v1/models/{target}", post(predict))
        .route("/v1/feedback", post(feedback))
        .layer(middleware::from_fn_with_state(state.clone(), around))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The counted route of a matched path, as an index into [`metrics::Route::ALL`]; `None` for
/// health and metrics (not counted).
fn route_index(state: &AppState, path: &str) -> Option<usize> {
    if let Some(p) = state.published.iter().find(|p| p.api.path == path) {
        return Some(p.route.index());
    }
    let route = match path {
        "/v1/models/{target}" => metrics::Route::Predict,
        "/v2/models/{name}/infer" | "/v2/models/{name}/versions/{version}/infer" => metrics::Route::Infer,
        "/v1/rank:score" => metrics::Route::Rank,
        "/v1/feedback" => metrics::Route::Feedback,
        _ => return None,
    };
    Some(route.index())
}

/// Request id in, version and request id out, latency and status counted per route.
async fn around(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let (id, id_header) = request_id(&state, req.headers());
    let route = req.extensions().get::<MatchedPath>().and_then(|p| route_index(&state, p.as_str()));
    req.extensions_mut().insert(RequestId(id));
    let oip = route == Some(metrics::Route::Infer.index());
    if let Some(Refused(read)) = req.extensions_mut().remove::<Refused>() {
        return finish(&state, fast_path::refusal(read, state.max_payload_bytes, oip), id_header, route, start);
    }
    let mut resp = next.run(req).await;
    // A body over the limit is refused by axum before our handler runs: render it our way.
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && resp.extensions().get::<ApiError>().is_none() {
        resp = failure_response(ApiError::PayloadTooLarge { limit: state.max_payload_bytes }, oip);
    }
    finish(&state, resp, id_header, route, start)
}

/// The request's id, from `x-request-id` or generated, shared (Arc) by the handler, the prediction
/// memory and the response header.
fn request_id(state: &AppState, headers: &HeaderMap) -> (Arc<str>, Option<HeaderValue>) {
    let given = headers.get(&REQUEST_ID).and_then(|v| {
        let id = v.to_str().ok().filter(|id| !id.is_empty() && id.len() <= 128)?;
        Some((Arc::<str>::from(id), v.clone()))
    });
    let (id, id_header) = given.unzip();
    let id = id.unwrap_or_else(|| state.next_request_id().into());
    let id_header = id_header.or_else(|| HeaderValue::from_str(&id).ok());
    (id, id_header)
}

/// The version and request id headers, and the route's count and latency.
fn finish(
    state: &AppState,
    mut resp: Response,
    id_header: Option<HeaderValue>,
    route: Option<usize>,
    start: Instant,
) -> Response {
    let headers = resp.headers_mut();
    // A published API answers under the body's request id, when it gave one.
    if let Some(v) = id_header
        && !headers.contains_key(REQUEST_ID)
    {
        headers.insert(REQUEST_ID, v);
    }
    if let Some(v) = &state.version_header {
        headers.insert(MODEL_VERSION, v.clone());
    }
    if state.draining.load(Ordering::Relaxed) {
        headers.insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(i) = route {
        state.count(i, resp.status().as_u16(), start);
    }
    resp
}

async fn live() -> impl IntoResponse {
    Json(json!({"live": true}))
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        Json(json!({"ready": true})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false}))).into_response()
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let mut resp = state.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

fn check_name(state: &AppState, name: &str) -> Result<(), ApiError> {
    if name == state.model_name { Ok(()) } else { Err(ApiError::NotFound(name.to_string())) }
}

/// The body, or the right error for an unreadable one.
fn body(b: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    b.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::invalid("body", Reason::Malformed, r.body_text())
        }
    })
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("body", Reason::Malformed, format!("invalid JSON: {e}")))
}

impl AppState {
    /// A generated request id: this process's prefix and a counter.
    fn next_request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(self.id_prefix.len() + 21);
        id.push_str(&self.id_prefix);
        id.push('-');
        id.push_str(itoa::Buffer::new().format(n));
        id
    }

    /// Counts an answer of route `i` (an index into [`metrics::Route::ALL`]) with its status code
    /// and latency.
    fn count(&self, i: usize, code: u16, start: Instant) {
        let (m, series) = (&self.metrics, &self.metrics.routes[i]);
        match code {
            200 => series.ok.inc(),
            code => {
                m.requests.get_or_create(&metrics::RouteCode { route: metrics::Route::ALL[i].as_str(), code }).inc()
            }
        };
        series.latency.observe(start.elapsed().as_secs_f64());
    }

    /// Counts a contract violation (bounded labels) and turns it into the API error.
    fn refuse(&self, v: Violation) -> ApiError {
        self.metrics
            .violations
            .get_or_create(&metrics::Violation { feature: v.feature, reason: v.reason.as_str() })
            .inc();
        v.error
    }

    /// Scores validated rows (recorded by the inference thread, see [`crate::bookkeeping`]); the
    /// scores and the decisions at the contract's threshold.
    async fn score(
        &self,
        rows: Rows,
        ids: RowIds,
        arrival: Option<Arrival>,
    ) -> Result<(Vec<f32>, Vec<bool>), ApiError> {
        let scores = self.batcher()?.score(rows, ids, arrival).await?;
        let decisions = scores.iter().map(|s| *s >= self.threshold).collect();
        Ok((scores, decisions))
    }
}
