//! Predictions as KServe's inference logger sends them: CloudEvents in binary HTTP mode (the
//! attributes in `ce-*` headers, the payload as the body), read with the CloudEvents SDK.
//!
//! * `ce-type: org.kubeflow.serving.inference.response` carries what was predicted: a v1 body
//!   `{"predictions": [...]}` or an Open Inference Protocol body `{"outputs": [{"data": [...]}]}`
//!   (its first output). Each number is a score; the decision is score >= 0.5 (a class label 0/1
//!   reads as itself). `ce-id` is the request id (`id/i` for the i-th of several, as the sidecar
//!   names rows).
//! * The extensions name the rest: `namespace`, `inferenceservicename` (the rollout and the
//!   model), `endpoint` (the version: KServe's `default` or `canary`; `canary` is the candidate).
//! * `...inference.request` events (the inputs) are acknowledged (202) and not stored.

use cloudevents::{AttributesReader, Data, Event};
use modelrollout_contract::Role;
use modelrollout_contract::evidence::{PredictionBatch, PredictionRecord};

use crate::Error;

pub const RESPONSE: &str = "org.kubeflow.serving.inference.response";
pub const REQUEST: &str = "org.kubeflow.serving.inference.request";

/// What an event asks of the service.
#[derive(Debug, PartialEq)]
pub enum Logged {
    /// A response: its predictions, to store.
    Predictions(PredictionBatch),
    /// A request's inputs: nothing is stored from them.
    Inputs,
}

fn invalid(field: &str, detail: impl Into<String>) -> Error {
    Error::Invalid { field: field.into(), detail: detail.into() }
}

fn extension(e: &Event, name: &str) -> Result<String, Error> {
    match e.extension(name) {
        Some(v) if !v.to_string().is_empty() => Ok(v.to_string()),
        _ => Err(invalid(&format!("ce-{name}"), "missing (KServe's logger sets it)")),
    }
}

/// The scores of a response body.
fn scores(body: &serde_json::Value) -> Result<Vec<f64>, Error> {
    let values = body
        .get("predictions")
        .or_else(|| body.get("outputs").and_then(|o| o.get(0)).and_then(|o| o.get("data")))
        .and_then(|v| v.as_array())
        .ok_or_else(|| invalid("data", "neither {\"predictions\": [...]} nor {\"outputs\": [{\"data\": [...]}]}"))?;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = match v {
                serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
                // A row of class probabilities: the positive class's (the last).
                serde_json::Value::Array(a) => a.last().and_then(serde_json::Value::as_f64),
                other => other.as_f64(),
            };
            x.filter(|x| x.is_finite()).ok_or_else(|| invalid(&format!("data[{i}]"), "not a finite number"))
        })
        .collect()
}

/// Reads one logged event.
pub fn read(event: &Event, now_ms: i64) -> Result<Logged, Error> {
    match event.ty() {
        REQUEST => return Ok(Logged::Inputs),
        RESPONSE => {}
        other => return Err(invalid("ce-type", format!("{other:?}: expected {RESPONSE} or {REQUEST}"))),
    }
    let service = extension(event, "inferenceservicename")?;
    let namespace = extension(event, "namespace")?;
    let endpoint = extension(event, "endpoint").unwrap_or_else(|_| "default".into());
    let body = match event.data() {
        Some(Data::Json(v)) => v.clone(),
        Some(Data::String(s)) => serde_json::from_str(s).map_err(|e| invalid("data", e.to_string()))?,
        Some(Data::Binary(b)) => serde_json::from_slice(b).map_err(|e| invalid("data", e.to_string()))?,
        None => return Err(invalid("data", "empty")),
    };
    let scores = scores(&body)?;
    let time_ms = event.time().map_or(now_ms, |t| t.timestamp_millis());
    let n = scores.len();
    let records = scores
        .into_iter()
        .enumerate()
        .map(|(i, score)| PredictionRecord {
            request_id: if n == 1 { event.id().to_string() } else { format!("{}/{i}", event.id()) },
            time_ms,
            decision: score >= 0.5,
            score,
            bins: Vec::new(),
        })
        .collect();
    let role = if endpoint == "canary" { Role::Canary } else { Role::Stable };
    Ok(Logged::Predictions(PredictionBatch {
        namespace,
        rollout: service.clone(),
        model: service,
        version: endpoint,
        role,
        records,
    }))
}

#[cfg(test)]
mod tests {
    use cloudevents::{EventBuilder, EventBuilderV10};
    use serde_json::json;

    use super::*;

    fn event(ty: &str, body: serde_json::Value, endpoint: &str) -> Event {
        EventBuilderV10::new()
            .id("req-7")
            .source("http://localhost:9081/")
            .ty(ty)
            .extension("inferenceservicename", "fraud")
            .extension("namespace", "team-a")
            .extension("endpoint", endpoint)
            .extension("component", "predictor")
            .data("application/json", body)
            .build()
            .unwrap()
    }

    #[test]
    fn a_logged_response_is_a_batch_of_the_inference_service() {
        let Logged::Predictions(b) = read(&event(RESPONSE, json!({"predictions": [0.9, 0.1]}), "canary"), 1).unwrap()
        else {
            panic!("predictions")
        };
        assert_eq!((b.namespace.as_str(), b.rollout.as_str(), b.version.as_str()), ("team-a", "fraud", "canary"));
        assert_eq!(b.role, Role::Canary);
        let ids: Vec<_> = b.records.iter().map(|r| (r.request_id.as_str(), r.decision)).collect();
        assert_eq!(ids, [("req-7/0", true), ("req-7/1", false)]);
        let Logged::Predictions(b) =
            read(&event(RESPONSE, json!({"outputs": [{"name": "p", "data": [0.7]}]}), "default"), 1).unwrap()
        else {
            panic!("predictions")
        };
        assert_eq!((b.records[0].request_id.as_str(), b.role), ("req-7", Role::Stable));
        assert_eq!(read(&event(REQUEST, json!({"instances": [[1.0]]}), "default"), 1).unwrap(), Logged::Inputs);
        let e = read(&event(RESPONSE, json!({"predictions": ["x"]}), "default"), 1).unwrap_err();
        assert!(e.to_string().starts_with("data[0]"), "{e}");
    }
}
