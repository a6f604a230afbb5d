//! The JSON routes by feature name: `/v1/models/{name}:predict` and `/v1/rank:score`.

use super::*;

#[derive(Deserialize)]
struct PredictRequest {
    instances: Vec<Value>,
}

pub(super) async fn predict(
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
pub(super) async fn predict_body(
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
pub(super) fn predict_prefix(model_name: &str, model_version: &str) -> Vec<u8> {
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

pub(super) async fn rank(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let arrival = state.arrival();
    let bytes = body(b, state.max_payload_bytes)?;
    let req: RankRequest = parse(&bytes)?;
    let rows = candidate_rows(&state, &req.context, &req.candidates, None)?;
    let (scores, _) = state.score(rows, RowIds::candidates(rid.clone()), arrival).await?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    Ok(Json(json!({"model_version": state.model_version, "request_id": &*rid, "scores": scores, "order": order}))
        .into_response())
}

/// Validates ranking candidates (each an object of features, the shared ones in `context`) into
/// rows. `item_field`: a field of each candidate that names the item and is not a feature.
pub(super) fn candidate_rows(
    state: &AppState,
    context: &Map<String, Value>,
    candidates: &[Value],
    item_field: Option<&str>,
) -> Result<Rows, ApiError> {
    if candidates.is_empty() {
        return Err(ApiError::invalid("candidates", Reason::Missing, "at least one candidate is required"));
    }
    if candidates.len() > state.max_candidates {
        let detail = format!("{} candidates > the limit of {}", candidates.len(), state.max_candidates);
        let v = Violation {
            error: ApiError::invalid("candidates", Reason::TooManyCandidates, detail),
            feature: "_request".into(),
            reason: Reason::TooManyCandidates,
        };
        return Err(state.refuse(v));
    }
    let known = |k: &String| state.validator.contract.inputs.iter().any(|f| &f.name == k);
    if let Some(k) = context.keys().find(|k| !known(k)) {
        let v = Violation {
            error: ApiError::invalid(
                format!("context.{k}"),
                Reason::Unknown,
                "unknown feature (not in the data contract)",
            ),
            feature: "_request".into(),
            reason: Reason::Unknown,
        };
        return Err(state.refuse(v));
    }
    let mut rows = Rows::empty_like(state.validator.kind);
    for (i, cand) in candidates.iter().enumerate() {
        let path = format!("candidates[{i}]");
        let Value::Object(obj) = cand else {
            return Err(ApiError::invalid(path, Reason::WrongType, "a candidate is an object of features"));
        };
        for k in obj.keys() {
            let (reason, detail) = if item_field == Some(k.as_str()) {
                continue;
            } else if !known(k) {
                (Reason::Unknown, "unknown feature (not in the data contract)")
            } else if context.contains_key(k) {
                (Reason::Malformed, "given in both context and candidate")
            } else {
                continue;
            };
            let v = Violation {
                error: ApiError::invalid(format!("{path}.{k}"), reason, detail),
                feature: "_request".into(),
                reason,
            };
            return Err(state.refuse(v));
        }
        state
            .validator
            .encode_with(|name| obj.get(name).or_else(|| context.get(name)), &path, &mut rows)
            .map_err(|v| state.refuse(v))?;
    }
    Ok(rows)
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
