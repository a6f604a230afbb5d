//! The APIs a team published for its model (`contract.apis`), served beside the standard routes
//! with the same validation, batching, prediction memory and metrics:
//!
//! * Classify: `POST /moderate {"text": …, "request_id"?: …}` answers
//!   `{"score", "label", "model_version", "request_id"}`;
//! * Rank: `POST /v1/rank:score {"request_id"?, "context"?, "candidates": [{"item_id", …}, …]}`
//!   answers `{"request_id", "served_model_version", "latency_ms", "results": [{"item_id",
//!   "score"}, …]}`, best first.
//!
//! A `request_id` in the body is the request's id (answered, echoed in `x-request-id`, and the id
//! labels are posted under); without one, the `x-request-id` header's or a generated one. A
//! deprecated API's answers, refusals included, carry its `Deprecation`, `Sunset` and `Link`.

use modelrollout_contract::{ApiShape, PublicApi};

use super::*;

/// One published API as served: its route label and the headers its answers carry.
pub struct Published {
    pub api: PublicApi,
    pub route: metrics::Route,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Published {
    /// The API as served; a deprecation whose dates do not parse is refused at start.
    pub fn new(api: PublicApi) -> Result<Self, modelrollout_contract::api::ApiError> {
        let route = match api.shape {
            ApiShape::Classify => metrics::Route::Classify,
            ApiShape::Rank => metrics::Route::Rank,
        };
        let mut headers = Vec::new();
        if let Some(d) = &api.deprecation {
            let h = d.headers(&api.path)?;
            let value = |s: String| HeaderValue::from_str(&s).expect("dates and a successor without spaces or <>");
            headers.push((HeaderName::from_static("deprecation"), value(h.deprecation)));
            if let Some(s) = h.sunset {
                headers.push((HeaderName::from_static("sunset"), value(s)));
            }
            if let Some(l) = h.link {
                headers.push((header::LINK, value(l)));
            }
        }
        Ok(Self { api, route, headers })
    }
}

/// Answers one request to a published API.
pub(super) async fn serve(
    state: Arc<AppState>,
    rid: Arc<str>,
    b: Result<Bytes, BytesRejection>,
    api: Arc<Published>,
) -> Response {
    let start = Instant::now();
    let answer = match api.api.shape {
        ApiShape::Classify => classify(&state, rid, b, &api.api).await,
        ApiShape::Rank => rank(&state, rid, b, &api.api, start).await,
    };
    let mut resp = answer.unwrap_or_else(|f| f.into_response());
    for (name, value) in &api.headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

/// The body's `request_id` (taken out of it), else the request's.
fn body_request_id(given: Option<Value>, rid: Arc<str>) -> Result<Arc<str>, ApiError> {
    match given {
        None | Some(Value::Null) => Ok(rid),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => Ok(s.into()),
        Some(_) => Err(ApiError::invalid("request_id", Reason::WrongType, "a string of 1 to 128 bytes")),
    }
}

/// A JSON answer with the request's id in `x-request-id` (the body's, when it gave one).
fn answer(rid: &str, body: Value) -> Response {
    let mut resp = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(rid) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

async fn classify(
    state: &AppState,
    rid: Arc<str>,
    b: Result<Bytes, BytesRejection>,
    api: &PublicApi,
) -> Result<Response, Failure> {
    let arrival = state.arrival();
    let bytes = body(b, state.max_payload_bytes)?;
    let Value::Object(mut features) = parse::<Value>(&bytes)? else {
        return Err(ApiError::invalid("body", Reason::WrongType, "a JSON object of features").into());
    };
    let rid = body_request_id(features.remove("request_id"), rid)?;
    let mut rows = Rows::empty_like(state.validator.kind);
    state.validator.encode_instance(&features, "body", &mut rows).map_err(|v| state.refuse(v))?;
    let (scores, decisions) = state.score(rows, RowIds::instances(rid.clone()), arrival).await?;
    Ok(answer(
        &rid,
        json!({
            "score": scores[0],
            "label": api.label(decisions[0]),
            "model_version": state.model_version,
            "request_id": &*rid,
        }),
    ))
}

#[derive(Deserialize)]
struct RankRequest {
    #[serde(default)]
    request_id: Option<Value>,
    #[serde(default)]
    context: Map<String, Value>,
    candidates: Vec<Value>,
}

async fn rank(
    state: &AppState,
    rid: Arc<str>,
    b: Result<Bytes, BytesRejection>,
    api: &PublicApi,
    start: Instant,
) -> Result<Response, Failure> {
    let arrival = state.arrival();
    let bytes = body(b, state.max_payload_bytes)?;
    let req: RankRequest = parse(&bytes)?;
    let rid = body_request_id(req.request_id, rid)?;
    let field = api.item_field();
    let mut items = Vec::with_capacity(req.candidates.len());
    for (i, c) in req.candidates.iter().enumerate() {
        match c.get(field) {
            Some(id @ (Value::String(_) | Value::Number(_))) => items.push(id.clone()),
            Some(_) => {
                let path = format!("candidates[{i}].{field}");
                return Err(ApiError::invalid(path, Reason::WrongType, "an item id is a string or a number").into());
            }
            // Not an object, or no id: the candidate's own check says which when it is not one.
            None if c.is_object() => {
                let path = format!("candidates[{i}].{field}");
                return Err(ApiError::invalid(path, Reason::Missing, "every candidate names its item").into());
            }
            None => items.push(Value::Null),
        }
    }
    let rows = v1::candidate_rows(state, &req.context, &req.candidates, Some(field))?;
    let (scores, _) = state.score(rows, RowIds::candidates(rid.clone()), arrival).await?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let results: Vec<Value> =
        order.into_iter().map(|i| json!({"item_id": items[i].take(), "score": scores[i]})).collect();
    // Until the answer is written: what the server spent, queueing and scoring included.
    let latency_ms = (start.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    Ok(answer(
        &rid,
        json!({
            "request_id": &*rid,
            "served_model_version": state.model_version,
            "latency_ms": latency_ms,
            "results": results,
        }),
    ))
}
