//! An object the watch cannot deserialize is skipped and reported, not a crash.
//!
//! On the real apiserver no such ModelRollout can be written today: the CRD schema is generated
//! from the same types and refuses every candidate tried (an int32 overflow in status, times
//! without an offset, unknown enum values). Objects stored under an older, looser schema can still
//! reach the watch, so the reconcile entry point is exercised here with one built by hand.

use std::sync::Arc;

use kube::core::DeserializeGuard;
use kube::runtime::events::Reporter;
use modelrollout::api::ModelRollout;
use modelrollout::reconcile::{Context, reconcile};
use modelrollout::telemetry::Metrics;
use serde_json::json;

#[tokio::test]
async fn a_model_rollout_that_does_not_deserialize_is_skipped_and_counted() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bad = json!({
        "apiVersion": "modelrollout.dev/v1alpha1", "kind": "ModelRollout",
        "metadata": {"name": "old", "namespace": "team-a"},
        "spec": {"model": {"name": "fraud", "version": 7}},
        "status": {"consecutiveFailures": 5_000_000_000u64}
    });
    let guard: DeserializeGuard<ModelRollout> = serde_json::from_value(bad).expect("the guard itself always parses");
    assert!(guard.0.is_err(), "the object must not deserialize");
    // No request is made for a skipped object: a client pointed at nothing is enough.
    let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context {
        metrics: metrics.clone(),
        ..Context::new(client, Reporter { controller: "test".into(), instance: None })
    });
    let action = reconcile(Arc::new(guard), ctx).await.expect("skipped, not an error that retries");
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let text = metrics.encode();
    assert!(text.contains("modelrollout_reconcile_errors_total{error=\"invalid_object\"} 1"), "{text}");
}
