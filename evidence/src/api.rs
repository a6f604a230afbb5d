//! The HTTP API: prediction batches from sidecars, label batches from whoever has labels, health
//! and `/metrics`. Every write names its caller (a bearer token, see [`crate::auth`]), is checked
//! whole before anything is stored, and is stored in one transaction.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use modelrollout_contract::evidence::{
    BIN_MISSING, LabelBatch, MAX_BATCH, MAX_ID_LEN, MAX_REFERENCE_BINS, MAX_REFERENCE_FEATURES, PredictionBatch,
    ReferenceRecord, access, paths,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::Error;
use crate::auth::{Access, Authorizer};
use crate::store::Store;

/// The service's own series: requests by route and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: &'static str,
    code: u16,
}

pub struct AppState {
    pub store: Arc<Store>,
    pub auth: Box<dyn Authorizer>,
    /// How far back a label may be (ms): older ones are not stored.
    pub horizon_ms: i64,
    registry: Registry,
    requests: Family<RouteCode, Counter>,
}

impl AppState {
    pub fn new(store: Arc<Store>, auth: Box<dyn Authorizer>, horizon_ms: i64) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RouteCode, Counter>::default();
        registry.register("modelrollout_evidence_requests", "Requests by route and HTTP status", requests.clone());
        Self { store, auth, horizon_ms, registry, requests }
    }
}

/// The router, with the body limit in bytes.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route(paths::PREDICTIONS, post(predictions))
        .route(paths::LABELS_ROUTE, post(labels))
        .route(paths::REFERENCES, put(references))
        .route(paths::CLOUDEVENTS, post(cloudevents))
        .route(paths::METRICS, get(metrics))
        .route(paths::HEALTHZ, get(|| async { "ok" }))
        .route(paths::READYZ, get(ready))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Error::Invalid { .. } => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            Error::Kubernetes(_) | Error::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Error::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %self, "a write not stored");
        }
        let field = match &self {
            Error::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let mut body = json!({"error": {"code": code, "message": self.to_string()}});
        if let Some(f) = field {
            body["error"]["field"] = json!(f);
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::Invalid { field: field.into(), detail: detail.into() }
}

/// A Kubernetes object name: lower-case alphanumerics and '-', 1 to `max` characters.
fn check_name(field: &str, value: &str, max: usize) -> Result<(), Error> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(field, format!("{value:?} is not a Kubernetes name of at most {max} characters")))
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), Error> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(invalid(field, format!("1 to {max} printable characters")));
    }
    Ok(())
}

fn check_batch_size(n: usize, what: &str) -> Result<(), Error> {
    if n > MAX_BATCH {
        return Err(Error::TooLarge(format!("{n} {what} in one batch; at most {MAX_BATCH}")));
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| invalid("body", e.to_string()))
}

/// The caller's bearer token, checked for `what` in `namespace`.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    namespace: &str,
    what: &'static str,
) -> Result<String, Error> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::Unauthenticated("no bearer token (Authorization: Bearer <token>)".into()))?;
    match state.auth.review(token.to_string(), namespace.to_string(), what).await? {
        Access::Allowed { user } => Ok(user),
        Access::Unauthenticated(why) => Err(Error::Unauthenticated(why)),
        Access::Forbidden(why) => Err(Error::Forbidden(why)),
    }
}

fn counted(state: &AppState, route: &'static str, r: Result<Response, Error>) -> Response {
    let resp = r.unwrap_or_else(IntoResponse::into_response);
    state.requests.get_or_create(&RouteCode { route, code: resp.status().as_u16() }).inc();
    resp
}

/// Whose records these are: the fields a prediction batch and a reference both name.
fn check_source(namespace: &str, rollout: &str, model: &str, version: &str) -> Result<(), Error> {
    check_name("namespace", namespace, 63)?;
    check_name("rollout", rollout, 253)?;
    check_text("model", model, 253)?;
    check_text("version", version, 63)
}

fn validate_predictions(b: &PredictionBatch) -> Result<(), Error> {
    check_batch_size(b.records.len(), "records")?;
    check_source(&b.namespace, &b.rollout, &b.model, &b.version)?;
    for (i, r) in b.records.iter().enumerate() {
        check_text(&format!("records[{i}].requestId"), &r.request_id, MAX_ID_LEN)?;
        if r.time_ms <= 0 {
            return Err(invalid(format!("records[{i}].timeMs"), "milliseconds since the epoch, more than 0"));
        }
        if !r.score.is_finite() {
            return Err(invalid(format!("records[{i}].score"), "not a finite number"));
        }
        if r.bins.len() > MAX_REFERENCE_FEATURES {
            return Err(invalid(format!("records[{i}].bins"), format!("at most {MAX_REFERENCE_FEATURES} features")));
        }
        if let Some(b) = r.bins.iter().find(|b| **b != BIN_MISSING && usize::from(**b) >= MAX_REFERENCE_BINS) {
            return Err(invalid(
                format!("records[{i}].bins"),
                format!("bin {b}: below {MAX_REFERENCE_BINS}, or {BIN_MISSING} for a missing value"),
            ));
        }
    }
    Ok(())
}

/// A prediction batch checked whole, its caller's right checked, then stored.
async fn store_predictions(state: &AppState, headers: &HeaderMap, batch: PredictionBatch) -> Result<Response, Error> {
    validate_predictions(&batch)?;
    authorize(state, headers, &batch.namespace, access::PREDICTIONS).await?;
    let answer = state.store.record_predictions(&batch).await?;
    Ok(axum::Json(answer).into_response())
}

async fn predictions(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let r = async { store_predictions(&state, &headers, parse(&body)?).await }.await;
    counted(&state, "predictions", r)
}

/// A version's reference distribution, from its sidecars (the same right as their predictions).
/// 201 when stored or replaced, 200 when the same digest was already there.
async fn references(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let r = async {
        let record: ReferenceRecord = parse(&body)?;
        check_source(&record.namespace, &record.rollout, &record.model, &record.version)?;
        if record.sha256.len() != 64 || !record.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("sha256", "64 lower-case hex characters"));
        }
        record.reference.check().map_err(|why| invalid("reference", why))?;
        for (i, f) in record.reference.features.iter().enumerate() {
            check_text(&format!("reference.features[{i}].name"), &f.name, 128)?;
        }
        authorize(&state, &headers, &record.namespace, access::PREDICTIONS).await?;
        let changed = state.store.put_reference(&record).await?;
        Ok(if changed { StatusCode::CREATED } else { StatusCode::OK }.into_response())
    }
    .await;
    counted(&state, "references", r)
}

/// A CloudEvent from KServe's inference logger (see [`crate::cloudevents`]); the caller needs the
/// same right as a sidecar sending predictions in the event's namespace.
async fn cloudevents(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let r = async {
        let event = ::cloudevents::binding::http::to_event(&headers, body.to_vec())
            .map_err(|e| invalid("ce-*", format!("not a CloudEvent in binary mode: {e}")))?;
        match crate::cloudevents::read(&event, now_ms())? {
            crate::cloudevents::Logged::Inputs => Ok(StatusCode::ACCEPTED.into_response()),
            crate::cloudevents::Logged::Predictions(batch) => store_predictions(&state, &headers, batch).await,
        }
    }
    .await;
    counted(&state, "cloudevents", r)
}

async fn labels(
    State(state): State<Arc<AppState>>,
    Path((namespace, rollout)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        check_name("namespace", &namespace, 63)?;
        check_name("rollout", &rollout, 253)?;
        authorize(&state, &headers, &namespace, access::LABELS).await?;
        let batch: LabelBatch = parse(&body)?;
        check_batch_size(batch.labels.len(), "labels")?;
        for (i, l) in batch.labels.iter().enumerate() {
            check_text(&format!("labels[{i}].requestId"), &l.request_id, MAX_ID_LEN)?;
            if l.time_ms.is_some_and(|t| t <= 0) {
                return Err(invalid(format!("labels[{i}].timeMs"), "milliseconds since the epoch, more than 0"));
            }
        }
        let answer = state.store.record_labels(&namespace, &rollout, &batch.labels, now_ms(), state.horizon_ms).await?;
        Ok(axum::Json(answer).into_response())
    }
    .await;
    counted(&state, "labels", r)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.store.snapshot().await {
        Ok(snapshot) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            crate::export::render(snapshot, &state.registry),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.store.ping().await {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the database does not answer").into_response()
    }
}
