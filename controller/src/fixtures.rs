//! Test fixtures for the controller's adapters, the way controller-rs's `fixtures.rs` does it: a
//! recording mock apiserver, a [`Context`] on it, and the objects it answers with. Rollouts,
//! specs and statuses come from the API crate's fixtures (re-exported here).

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

pub use crate::api::fixtures::*;
use crate::reconcile::Context;

/// One request as the apiserver saw it.
#[derive(Debug)]
pub struct Seen {
    pub method: String,
    /// The path and query.
    pub path: String,
    pub body: Value,
}

/// A mock apiserver: each request is recorded and answered by `answer(method, path, body)` with a
/// status code and a JSON body, until the client is dropped; the task returns what it saw.
pub fn apiserver(
    mut answer: impl FnMut(&str, &str, &Value) -> (u16, Value) + Send + 'static,
) -> (Client, tokio::task::JoinHandle<Vec<Seen>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, reply) = answer(parts.method.as_str(), parts.uri.path(), &body);
            seen.push(Seen { method: parts.method.to_string(), path: parts.uri.to_string(), body });
            let response = Response::builder().status(code).body(Body::from(serde_json::to_vec(&reply).unwrap()));
            send.send_response(response.unwrap());
        }
        seen
    });
    (Client::new(service, "team-a"), task)
}

/// What the apiserver answers a write with: the object written, given a resourceVersion and a
/// generation.
pub fn written(body: &Value) -> Value {
    let mut object = body.clone();
    object["metadata"]["resourceVersion"] = json!("1");
    object["metadata"]["generation"] = json!(1);
    object
}

/// The apiserver's answer for a missing object or a conflict.
pub fn status_error(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason})
}

/// A user-owned HTTPRoute: a rule to the stable Service (`ours`, with the weights and filters a
/// stage left there) and one rule of the user's own.
pub fn user_route(ours: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "fraud", "namespace": "team-a", "resourceVersion": "41"},
        "spec": {"rules": [
            ours,
            {"matches": [{"path": {"type": "PathPrefix", "value": "/legacy"}}],
             "backendRefs": [{"name": "legacy", "port": 80}]}
        ]}
    })
}

/// The stable rule with all traffic on stable.
pub fn stable_only() -> Value {
    json!({"backendRefs": [{"name": "fraud-stable", "port": 8080, "weight": 100}]})
}

impl Context {
    /// A context on `client` for tests: Events reported as `test`, nothing remembered yet.
    pub fn test(client: Client) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Context::new(client, kube::runtime::events::Reporter { controller: "test".into(), instance: None })
    }
}
