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
    pub ready: AtomicBool,
    /// Set once the model is loaded.
    pub batcher: std::sync::OnceLock<Batcher>,
    pub max_payload_bytes: usize,
    pub max_candidates: usize,
    pub threshold: f32,
    version_header: Option<HeaderValue>,
    id_prefix: String,
    next_id: AtomicU64,
    /// The constant start of every predict answer (see [`predict_answer`]).
    predict_prefix: Vec<u8>,
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
            ready: AtomicBool::new(false),
            batcher: std::sync::OnceLock::new(),
            max_payload_bytes,
            max_candidates,
            threshold,
            version_header,
            id_prefix: format!("{:x}-{:x}", std::process::id(), nanos & 0xffff_ffff),
            predict_prefix,
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
        if let ApiError::Internal(detail) = &self.0 {
            tracing::error!(%detail, "internal error");
        }
        let mut resp = (self.0.status(), Json(self.0.body())).into_response();
        resp.extensions_mut().insert(self.0);
        resp
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

/// The sidecar's HTTP service: the router, with the prediction route answered ahead of it.
///
/// Production traffic is nearly all `POST /v1/models/{name}:predict`. Through the router each such
/// request also paid for path matching, the request-id middleware (a boxed future, a clone of the
/// inner route) and the layers around the handler: about 2 µs, as much as the whole handler, on
/// the one runtime thread that is the sidecar's bottleneck under load (BENCHMARKS.md). Here the
/// same steps run inline. Anything else — another route, another model's name, a path that needs
/// percent-decoding — goes through the router, which answers it as before.
#[derive(Clone)]
pub struct Sidecar {
    state: Arc<AppState>,
    router: Router,
}

pub fn app(state: Arc<AppState>) -> Sidecar {
    Sidecar { router: router(state.clone()), state }
}

impl Sidecar {
    fn is_predict(&self, req: &Request) -> bool {
        req.method() == Method::POST
            && req
                .uri()
                .path()
                .strip_prefix("/v1/models/")
                .and_then(|target| target.strip_suffix(":predict"))
                .is_some_and(|name| name == self.state.model_name)
    }
}

impl tower::Service<Request> for Sidecar {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if self.is_predict(&req) {
            let state = self.state.clone();
            Box::pin(async move { Ok(predict_inline(state, req).await) })
        } else {
            Box::pin(self.router.call(req))
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_payload_bytes;
    Router::new()
        .route("/healthz", get(live))
        .route("/v2/health/live", get(live))
        .route("/readyz", get(ready))
        .route("/v2/health/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v1/models/{target}", post(predict))
        .route("/v1/rank:score", post(rank))
        .route("/v1/feedback", post(feedback))
        .layer(middleware::from_fn_with_state(state.clone(), around))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The counted route of a matched path, as an index into [`metrics::ROUTES`]; `None` for health and
/// metrics (not counted).
fn route_index(path: &str) -> Option<usize> {
    let route = match path {
        "/v1/models/{target}" => "predict",
        "/v2/models/{name}/infer" => "infer",
        "/v1/rank:score" => "rank",
        "/v1/feedback" => "feedback",
        _ => return None,
    };
    metrics::ROUTES.iter().position(|r| *r == route)
}

/// Request id in, version and request id out, latency and status counted per route.
async fn around(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let (id, id_header) = request_id(&state, req.headers());
    let route = req.extensions().get::<MatchedPath>().and_then(|p| route_index(p.as_str()));
    req.extensions_mut().insert(RequestId(id));
    let mut resp = next.run(req).await;
    // A body over the limit is refused by axum before our handler runs: render it our way.
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && resp.extensions().get::<ApiError>().is_none() {
        resp = Failure(ApiError::PayloadTooLarge { limit: state.max_payload_bytes }).into_response();
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
    let id = id.unwrap_or_else(|| {
        let n = state.next_id.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(state.id_prefix.len() + 21);
        id.push_str(&state.id_prefix);
        id.push('-');
        id.push_str(itoa::Buffer::new().format(n));
        id.into()
    });
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
    if let Some(v) = id_header {
        headers.insert(REQUEST_ID, v);
    }
    if let Some(v) = &state.version_header {
        headers.insert(MODEL_VERSION, v.clone());
    }
    if let Some(i) = route {
        let (m, series) = (&state.metrics, &state.metrics.routes[i]);
        match resp.status().as_u16() {
            200 => series.ok.inc(),
            code => m.requests.get_or_create(&metrics::RouteCode { route: metrics::ROUTES[i], code }).inc(),
        };
        series.latency.observe(start.elapsed().as_secs_f64());
    }
    resp
}

/// `POST /v1/models/{this model}:predict` without the router (see [`Sidecar`]): the same steps as
/// [`around`] and [`predict`].
async fn predict_inline(state: Arc<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let (rid, id_header) = request_id(&state, req.headers());
    let arrival = state.arrival();
    let limit = state.max_payload_bytes;
    let answered = match http_body_util::Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => predict_body(&state, rid, &body.to_bytes(), arrival).await,
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge { limit }.into()),
        Err(e) => Err(ApiError::invalid("body", Reason::Malformed, format!("failed to read the body: {e}")).into()),
    };
    let resp = answered.unwrap_or_else(IntoResponse::into_response);
    finish(&state, resp, id_header, route_index("/v1/models/{target}"), start)
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

async fn model_metadata(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, Failure> {
    check_name(&state, &name)?;
    let inputs: Vec<Value> = match state.validator.kind {
        InputKind::Numeric { width } => state
            .validator
            .contract
            .inputs
            .iter()
            .map(|f| json!({"name": f.name, "datatype": "FP32", "shape": [-1]}))
            .chain(std::iter::once(json!({"name": "input", "datatype": "FP32", "shape": [-1, width]})))
            .collect(),
        InputKind::Text => {
            vec![json!({"name": state.validator.contract.inputs[0].name, "datatype": "BYTES", "shape": [-1]})]
        }
    };
    Ok(Json(json!({
        "name": state.model_name,
        "versions": [state.model_version],
        "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [-1]},
            {"name": "decision", "datatype": "BOOL", "shape": [-1]}
        ]
    }))
    .into_response())
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, Failure> {
    check_name(&state, &name)?;
    Ok(ready(State(state)).await)
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

#[derive(Deserialize)]
struct PredictRequest {
    instances: Vec<Value>,
}

async fn predict(
    State(state): State<Arc<AppState>>,
    Path(target): Path<String>,
    Extension(RequestId(rid)): Extension<RequestId>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let Some(name) = target.strip_suffix(":predict") else {
        return Err(ApiError::NotFound(target).into());
    };
    check_name(&state, name)?;
    let arrival = state.arrival();
    let bytes = body(b, state.max_payload_bytes)?;
    predict_body(&state, rid, &bytes, arrival).await
}

/// Validates, scores and answers a predict request's body.
async fn predict_body(
    state: &AppState,
    rid: Arc<str>,
    bytes: &[u8],
    arrival: Option<Arrival>,
) -> Result<Response, Failure> {
    let req: PredictRequest = parse(bytes)?;
    if req.instances.is_empty() {
        return Err(ApiError::invalid("instances", Reason::Missing, "at least one instance is required").into());
    }
    let mut rows = Rows::empty_like(state.validator.kind);
    for (i, inst) in req.instances.iter().enumerate() {
        let path = format!("instances[{i}]");
        let Value::Object(obj) = inst else {
            return Err(ApiError::invalid(path, Reason::WrongType, "an instance is an object of features").into());
        };
        state.validator.encode_instance(obj, &path, &mut rows).map_err(|v| state.refuse(v))?;
    }
    let (scores, decisions) = state.score(rows, RowIds::instances(rid.clone()), arrival).await?;
    let body = predict_answer(&state.predict_prefix, &rid, &scores, &decisions);
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// `{"model_name":…,"model_version":…,"request_id":` for this model, escaped once.
fn predict_prefix(model_name: &str, model_version: &str) -> Vec<u8> {
    let mut prefix = br#"{"model_name":"#.to_vec();
    let escaped = |s: &str| serde_json::to_vec(s).expect("a string serializes");
    prefix.extend(escaped(model_name));
    prefix.extend(br#","model_version":"#);
    prefix.extend(escaped(model_version));
    prefix.extend(br#","request_id":"#);
    prefix
}

/// The predict answer, `{"model_name", "model_version", "request_id", "predictions": [{"id",
/// "score", "decision"}, …]}`, written into one buffer sized for it: the field names and the
/// model's name and version are written as they are, only the ids (escaped by serde_json) and the
/// scores (serde_json's float formatting) vary per request. A derived `Serialize` escaped every
/// field name again and outgrew axum's 128-byte buffer for one prediction.
fn predict_answer(prefix: &[u8], rid: &str, scores: &[f32], decisions: &[bool]) -> Vec<u8> {
    let n = scores.len();
    let mut out = Vec::with_capacity(prefix.len() + 32 + rid.len() + n * (rid.len() + 56));
    out.extend_from_slice(prefix);
    json(&mut out, &rid);
    out.extend_from_slice(br#","predictions":["#);
    for (i, (score, decision)) in scores.iter().zip(decisions).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"id":"#);
        json(&mut out, &instance_id(rid, n, i));
        out.extend_from_slice(br#","score":"#);
        json(&mut out, score);
        out.extend_from_slice(if *decision { br#","decision":true}"# } else { br#","decision":false}"# });
    }
    out.extend_from_slice(b"]}");
    out
}

/// Appends `value` as serde_json writes it (a string escaped, a float in its shortest form).
fn json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("writing JSON to memory cannot fail");
}

#[derive(Deserialize)]
struct RankRequest {
    #[serde(default)]
    context: Map<String, Value>,
    candidates: Vec<Value>,
}

async fn rank(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let arrival = state.arrival();
    let bytes = body(b, state.max_payload_bytes)?;
    let req: RankRequest = parse(&bytes)?;
    if req.candidates.is_empty() {
        return Err(ApiError::invalid("candidates", Reason::Missing, "at least one candidate is required").into());
    }
    if req.candidates.len() > state.max_candidates {
        let detail = format!("{} candidates > the limit of {}", req.candidates.len(), state.max_candidates);
        let v = Violation {
            error: ApiError::invalid("candidates", Reason::TooManyCandidates, detail),
            feature: "_request".into(),
            reason: Reason::TooManyCandidates,
        };
        return Err(state.refuse(v).into());
    }
    let known = |k: &String| state.validator.contract.inputs.iter().any(|f| &f.name == k);
    if let Some(k) = req.context.keys().find(|k| !known(k)) {
        let v = Violation {
            error: ApiError::invalid(
                format!("context.{k}"),
                Reason::Unknown,
                "unknown feature (not in the data contract)",
            ),
            feature: "_request".into(),
            reason: Reason::Unknown,
        };
        return Err(state.refuse(v).into());
    }
    let mut rows = Rows::empty_like(state.validator.kind);
    for (i, cand) in req.candidates.iter().enumerate() {
        let path = format!("candidates[{i}]");
        let Value::Object(obj) = cand else {
            return Err(ApiError::invalid(path, Reason::WrongType, "a candidate is an object of features").into());
        };
        for k in obj.keys() {
            let (reason, detail) = if !known(k) {
                (Reason::Unknown, "unknown feature (not in the data contract)")
            } else if req.context.contains_key(k) {
                (Reason::Malformed, "given in both context and candidate")
            } else {
                continue;
            };
            let v = Violation {
                error: ApiError::invalid(format!("{path}.{k}"), reason, detail),
                feature: "_request".into(),
                reason,
            };
            return Err(state.refuse(v).into());
        }
        state
            .validator
            .encode_with(|name| obj.get(name).or_else(|| req.context.get(name)), &path, &mut rows)
            .map_err(|v| state.refuse(v))?;
    }
    let (scores, _) = state.score(rows, RowIds::candidates(rid.clone()), arrival).await?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    Ok(Json(json!({"model_version": state.model_version, "request_id": &*rid, "scores": scores, "order": order}))
        .into_response())
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InferInput>,
}

#[derive(Deserialize)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

/// Flattens nested JSON arrays (the OIP allows row-major nesting).
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Extension(RequestId(rid)): Extension<RequestId>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    check_name(&state, &name)?;
    let arrival = state.arrival();
    let bytes = body(b, state.max_payload_bytes)?;
    let req: InferRequest = parse(&bytes)?;
    let rows = infer_rows(&state, &req).map_err(|e| match e {
        Ok(v) => state.refuse(v),
        Err(e) => e,
    })?;
    let id: Arc<str> = req.id.as_deref().map_or(rid, Arc::from);
    let n = rows.len();
    let (scores, decisions) = state.score(rows, RowIds::instances(id.clone()), arrival).await?;
    Ok(Json(json!({
        "model_name": state.model_name,
        "model_version": state.model_version,
        "id": &*id,
        "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [n], "data": scores},
            {"name": "decision", "datatype": "BOOL", "shape": [n], "data": decisions}
        ]
    }))
    .into_response())
}

/// Encodes OIP inputs: one `[N, F]` tensor, or one `[N]` tensor per contract feature; BYTES for text.
fn infer_rows(state: &AppState, req: &InferRequest) -> Result<Rows, Result<Violation, ApiError>> {
    let bad = |field: String, reason: Reason, detail: String| Err(Err(ApiError::invalid(field, reason, detail)));
    if req.inputs.is_empty() {
        return bad("inputs".into(), Reason::Missing, "at least one input tensor is required".into());
    }
    let features = &state.validator.contract.inputs;
    let numeric_type =
        |dt: &str| matches!(dt, "FP32" | "FP64" | "FP16" | "INT8" | "INT16" | "INT32" | "INT64" | "UINT8");
    match state.validator.kind {
        InputKind::Text => {
            let input = &req.inputs[0];
            if req.inputs.len() != 1 || input.datatype != "BYTES" {
                return bad("inputs[0].datatype".into(), Reason::WrongType, "one BYTES tensor is expected".into());
            }
            let mut values = Vec::new();
            flatten(&input.data, &mut values);
            let mut texts = Vec::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                let path = format!("inputs[0].data[{i}]");
                let Value::String(s) = v else {
                    return bad(path, Reason::WrongType, "expected a string".into());
                };
                texts.push(state.validator.check_text(s, &path).map_err(Ok)?);
            }
            Ok(Rows::Text(texts))
        }
        InputKind::Numeric { width } => {
            let mut values = Vec::new();
            if req.inputs.len() == 1 && req.inputs[0].shape.len() == 2 {
                let input = &req.inputs[0];
                if !numeric_type(&input.datatype) {
                    return bad(
                        "inputs[0].datatype".into(),
                        Reason::WrongType,
                        format!("{} is not numeric", input.datatype),
                    );
                }
                if input.shape[1] != width as i64 {
                    return bad("inputs[0].shape".into(), Reason::Malformed, format!("expected [N, {width}]"));
                }
                let mut flat = Vec::new();
                flatten(&input.data, &mut flat);
                if flat.len() as i64 != input.shape[0] * width as i64 {
                    return bad("inputs[0].data".into(), Reason::Malformed, "data does not match shape".into());
                }
                for (k, v) in flat.iter().enumerate() {
                    let path = format!("inputs[0].data[{k}]");
                    let Some(x) = v.as_f64() else {
                        return bad(path, Reason::WrongType, "expected a number".into());
                    };
                    values.push(state.validator.check_number(k % width, x, &path).map_err(Ok)?);
                }
                return Ok(Rows::Numeric { width, values });
            }
            // One tensor per feature, by name.
            let mut columns: Vec<Option<Vec<&Value>>> = vec![None; width];
            for (i, input) in req.inputs.iter().enumerate() {
                let Some(j) = features.iter().position(|f| f.name == input.name) else {
                    let v = Violation {
                        error: ApiError::invalid(
                            format!("inputs[{i}].name"),
                            Reason::Unknown,
                            "unknown feature (not in the data contract)",
                        ),
                        feature: "_request".into(),
                        reason: Reason::Unknown,
                    };
                    return Err(Ok(v));
                };
                if !numeric_type(&input.datatype) {
                    return bad(
                        format!("inputs[{i}].datatype"),
                        Reason::WrongType,
                        format!("{} is not numeric", input.datatype),
                    );
                }
                let mut flat = Vec::new();
                flatten(&input.data, &mut flat);
                columns[j] = Some(flat);
            }
            let n = columns.iter().flatten().map(Vec::len).max().unwrap_or(0);
            for (j, col) in columns.iter().enumerate() {
                match col {
                    Some(c) if c.len() == n => {}
                    Some(_) => {
                        return bad(format!("inputs.{}", features[j].name), Reason::Malformed, "length differs".into());
                    }
                    None if features[j].nullable => {}
                    None => {
                        let v = Violation {
                            error: ApiError::invalid(
                                format!("inputs.{}", features[j].name),
                                Reason::Missing,
                                "required feature missing",
                            ),
                            feature: features[j].name.clone(),
                            reason: Reason::Missing,
                        };
                        return Err(Ok(v));
                    }
                }
            }
            for r in 0..n {
                for (j, col) in columns.iter().enumerate() {
                    let path = format!("inputs.{}[{r}]", features[j].name);
                    let x = match col {
                        Some(c) => match c[r].as_f64() {
                            Some(x) => x,
                            None => return bad(path, Reason::WrongType, "expected a number".into()),
                        },
                        None => {
                            values.push(f32::NAN);
                            continue;
                        }
                    };
                    values.push(state.validator.check_number(j, x, &path).map_err(Ok)?);
                }
            }
            Ok(Rows::Numeric { width, values })
        }
    }
}

#[derive(Deserialize)]
struct FeedbackRequest {
    labels: Vec<LabelItem>,
}

#[derive(Deserialize)]
struct LabelItem {
    id: String,
    label: Value,
}

async fn feedback(State(state): State<Arc<AppState>>, b: Result<Bytes, BytesRejection>) -> Result<Response, Failure> {
    let bytes = body(b, state.max_payload_bytes)?;
    let req: FeedbackRequest = parse(&bytes)?;
    let mut labels = Vec::with_capacity(req.labels.len());
    for (i, item) in req.labels.iter().enumerate() {
        let label = match &item.label {
            Value::Bool(b) => *b,
            Value::Number(n) if n.as_u64() == Some(1) => true,
            Value::Number(n) if n.as_u64() == Some(0) => false,
            _ => {
                return Err(ApiError::invalid(
                    format!("labels[{i}].label"),
                    Reason::WrongType,
                    "expected 0, 1, true or false",
                )
                .into());
            }
        };
        labels.push((item.id.as_str(), label));
    }
    let now = Instant::now();
    let m = &state.metrics;
    let (mut matched, mut unknown, mut expired) = (0u64, 0u64, 0u64);
    for (id, label) in labels {
        match state.memory.take(id, now) {
            Lookup::Found { decision } => {
                matched += 1;
                let outcome = match (decision, label) {
                    (true, true) => "tp",
                    (true, false) => "fp",
                    (false, false) => "tn",
                    (false, true) => "fn",
                };
                m.confusion.get_or_create(&metrics::Outcome { outcome }).inc();
            }
            Lookup::Unknown => unknown += 1,
            Lookup::Expired => expired += 1,
        }
    }
    if unknown > 0 {
        m.feedback_unmatched.get_or_create(&metrics::ReasonLabel { reason: "unknown" }).inc_by(unknown);
    }
    if expired > 0 {
        m.feedback_unmatched.get_or_create(&metrics::ReasonLabel { reason: "expired" }).inc_by(expired);
    }
    Ok(Json(json!({"matched": matched, "unknown": unknown, "expired": expired})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde's derive made of the answer before it was written by hand.
    #[derive(serde::Serialize)]
    struct Prediction<'a> {
        id: std::borrow::Cow<'a, str>,
        score: f32,
        decision: bool,
    }

    #[derive(serde::Serialize)]
    struct PredictResponse<'a> {
        model_name: &'a str,
        model_version: &'a str,
        request_id: &'a str,
        predictions: Vec<Prediction<'a>>,
    }

    #[test]
    fn the_written_predict_answer_is_byte_for_byte_what_serde_derive_wrote() {
        let (name, version) = ("fraud \"quoted\"", "v2");
        let prefix = predict_prefix(name, version);
        let cases = [
            ("req-1", vec![0.25_f32], vec![false]),
            ("a\"b\\c\u{1}é", vec![0.123_456_79, 1e-7, f32::NAN], vec![true, false, true]),
        ];
        for (rid, scores, decisions) in cases {
            let n = scores.len();
            let predictions = (0..n)
                .map(|i| Prediction { id: instance_id(rid, n, i), score: scores[i], decision: decisions[i] })
                .collect();
            let derived = serde_json::to_string(&PredictResponse {
                model_name: name,
                model_version: version,
                request_id: rid,
                predictions,
            })
            .unwrap();
            let written = String::from_utf8(predict_answer(&prefix, rid, &scores, &decisions)).unwrap();
            assert_eq!(written, derived);
        }
    }
}
