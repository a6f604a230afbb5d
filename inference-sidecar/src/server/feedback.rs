//! `/v1/feedback`: labels joined to the predictions they judge (the confusion counts the gates read).

use super::*;

#[derive(Deserialize)]
struct FeedbackRequest {
    labels: Vec<LabelItem>,
}

#[derive(Deserialize)]
struct LabelItem {
    id: String,
    label: Value,
}

pub(super) async fn feedback(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
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
                let outcome = modelrollout_contract::metrics::Outcome::of(decision, label).as_str();
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
