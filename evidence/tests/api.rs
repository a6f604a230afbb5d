//! The HTTP API in process, on a SQLite store, with an authorizer that answers from a table (the
//! real one, TokenReview and SubjectAccessReview against a real apiserver, is exercised by the
//! end-to-end suite). Every refused write leaves the store as it was.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use modelrollout_contract::evidence::{MAX_BATCH, access, paths, series};
use modelrollout_evidence::Error;
use modelrollout_evidence::api::{AppState, router};
use modelrollout_evidence::auth::{Access, Authorizer};
use modelrollout_evidence::store::Store;
use serde_json::{Value, json};
use tower::ServiceExt;

/// (namespace, what) a token may write.
type Grants = Vec<(&'static str, &'static str)>;

/// token -> (user, what it may write).
struct Table(HashMap<&'static str, (&'static str, Grants)>);

impl Authorizer for Table {
    fn review(
        &self,
        token: String,
        namespace: String,
        what: &'static str,
    ) -> BoxFuture<'static, Result<Access, Error>> {
        let answer = match self.0.get(token.as_str()) {
            None => Access::Unauthenticated("unknown token".into()),
            Some((user, grants)) if grants.iter().any(|(ns, w)| *ns == namespace && *w == what) => {
                Access::Allowed { user: user.to_string() }
            }
            Some((user, _)) => Access::Forbidden(format!("{user} may not create modelrollouts/{what} in {namespace}")),
        };
        Box::pin(async move { Ok(answer) })
    }
}

struct App {
    router: axum::Router,
    store: Arc<Store>,
    _dir: Dir,
}

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn app() -> App {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("evidence-api-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(Store::open(&format!("sqlite://{}/e.db", dir.display())).await.unwrap());
    let table = Table(HashMap::from([
        ("sidecar-a", ("system:serviceaccount:team-a:default", vec![("team-a", access::PREDICTIONS)])),
        ("labeller-a", ("system:serviceaccount:team-a:labeller", vec![("team-a", access::LABELS)])),
        ("labeller-b", ("system:serviceaccount:team-b:labeller", vec![("team-b", access::LABELS)])),
    ]));
    let state = Arc::new(AppState::new(store.clone(), Box::new(table), 7 * 86_400_000));
    App { router: router(state, 1 << 20), store, _dir: Dir(dir) }
}

impl App {
    async fn post(&self, path: &str, token: Option<&str>, body: impl Into<Body>) -> (StatusCode, Value) {
        self.send("POST", path, token, body).await
    }

    async fn send(&self, method: &str, path: &str, token: Option<&str>, body: impl Into<Body>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self.router.clone().oneshot(req.body(body.into()).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn metrics(&self) -> String {
        let req = Request::get(paths::METRICS).body(Body::empty()).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }
}

fn now() -> i64 {
    modelrollout_evidence::api::now_ms()
}

fn predictions(ns: &str, ids: &[&str]) -> Value {
    json!({"namespace": ns, "rollout": "fraud", "model": "fraud", "version": "v2", "role": "canary",
        "records": ids.iter().map(|id| json!({"requestId": id, "timeMs": now() - 1000, "decision": true, "score": 0.9})).collect::<Vec<_>>()})
}

fn labels(ids: &[&str]) -> Value {
    json!({"labels": ids.iter().map(|id| json!({"requestId": id, "label": false})).collect::<Vec<_>>()})
}

#[tokio::test]
async fn who_may_write_what() {
    let app = app().await;
    let labels_a = paths::labels("team-a", "fraud");
    let body = || labels(&["r1"]).to_string();
    let (status, v) = app.post(&labels_a, None, body()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, v) = app.post(&labels_a, Some("forged"), body()).await;
    assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")), "{v}");
    let (status, v) = app.post(&labels_a, Some("labeller-b"), body()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another namespace's token: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("team-a"), "{v}");
    let (status, _) = app.post(&labels_a, Some("sidecar-a"), body()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a sidecar's token may not post labels");
    let (status, _) =
        app.post(paths::PREDICTIONS, Some("labeller-a"), predictions("team-a", &["r1"]).to_string()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a labeller's token may not send predictions");
    let (status, _) = app.post(paths::PREDICTIONS, Some("sidecar-a"), predictions("team-b", &["r1"]).to_string()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "nor into another namespace");
    assert_eq!(app.store.rows().await.unwrap(), (0, 0), "nothing refused was stored");
    let (status, v) = app.post(&labels_a, Some("labeller-a"), body()).await;
    assert_eq!((status, v["recorded"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
}

#[tokio::test]
async fn bad_input_is_refused_whole_naming_the_field() {
    let app = app().await;
    let mut bad = predictions("team-a", &["r1", "r2", "r3"]);
    bad["records"][1]["requestId"] = json!("");
    let (status, v) = app.post(paths::PREDICTIONS, Some("sidecar-a"), bad.to_string()).await;
    assert_eq!((status, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("records[1].requestId")), "{v}");
    let mut bad = predictions("team-a", &["r1"]);
    bad["records"][0]["timeMs"] = json!(0);
    let (status, v) = app.post(paths::PREDICTIONS, Some("sidecar-a"), bad.to_string()).await;
    assert_eq!(v["error"]["field"].as_str(), Some("records[0].timeMs"), "{status} {v}");
    let (status, v) = app.post(paths::PREDICTIONS, Some("sidecar-a"), "{not json").await;
    assert_eq!((status, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("body")), "{v}");
    let (status, v) =
        app.post(&paths::labels("Team_A", "fraud"), Some("labeller-a"), labels(&["r1"]).to_string()).await;
    assert_eq!(v["error"]["field"].as_str(), Some("namespace"), "{status} {v}");
    let long = "x".repeat(129);
    let (status, v) =
        app.post(&paths::labels("team-a", "fraud"), Some("labeller-a"), labels(&["ok", &long]).to_string()).await;
    assert_eq!((status, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("labels[1].requestId")), "{v}");
    // Too many records, and a body over the limit: 413.
    let ids: Vec<String> = (0..=MAX_BATCH).map(|i| format!("r{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (status, v) = app.post(&paths::labels("team-a", "fraud"), Some("labeller-a"), labels(&ids).to_string()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let (status, _) = app.post(paths::PREDICTIONS, Some("sidecar-a"), vec![b' '; 2 << 20]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.store.rows().await.unwrap(), (0, 0), "nothing half-stored");
}

#[tokio::test]
async fn a_label_posted_once_joins_and_is_exported() {
    let app = app().await;
    let (status, v) =
        app.post(paths::PREDICTIONS, Some("sidecar-a"), predictions("team-a", &["r1", "r2"]).to_string()).await;
    assert_eq!((status, v["recorded"].as_u64()), (StatusCode::OK, Some(2)), "{v}");
    let (_, v) =
        app.post(&paths::labels("team-a", "fraud"), Some("labeller-a"), labels(&["r1", "r1"]).to_string()).await;
    assert_eq!(
        (v["recorded"].as_u64(), v["duplicates"].as_u64(), v["joined"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{v}"
    );
    let text = app.metrics().await;
    let series = r#"namespace="team-a",rollout="fraud",model="fraud",version="v2",role="canary""#;
    for line in [
        format!("modelrollout_evidence_predictions_total{{{series}}} 2"),
        format!("modelrollout_evidence_labels_joined_total{{{series}}} 1"),
        format!("modelrollout_evidence_outcomes_total{{{series},outcome=\"fp\"}} 1"),
        format!("modelrollout_evidence_outcomes_total{{{series},outcome=\"tn\"}} 0"),
        format!("modelrollout_evidence_label_delay_seconds_count{{{series}}} 1"),
        r#"modelrollout_evidence_requests_total{route="labels",code="200"} 1"#.to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
}

/// KServe's inference logger, as it sends (binary-mode CloudEvents): a response stored as the
/// inference service's predictions (and joined by a label posted later), a request's inputs
/// acknowledged and not stored, no token refused.
#[tokio::test]
async fn kserve_logger_cloudevents_are_stored_as_predictions() {
    let app = app().await;
    let send = async |token: Option<&str>, ty: &str, id: &str, body: Value| {
        let mut req = Request::post(paths::CLOUDEVENTS)
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "http://localhost:9081/")
            .header("ce-type", ty)
            .header("ce-inferenceservicename", "fraud")
            .header("ce-namespace", "team-a")
            .header("ce-component", "predictor")
            .header("ce-endpoint", "default");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app.router.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
    };
    let response = "org.kubeflow.serving.inference.response";
    let (status, _) = send(None, response, "k1", json!({"predictions": [0.8]})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, v) = send(Some("sidecar-a"), response, "k1", json!({"predictions": [0.8]})).await;
    assert_eq!((status, v["recorded"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    let (status, _) =
        send(Some("sidecar-a"), "org.kubeflow.serving.inference.request", "k1", json!({"instances": [[1]]})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, v) = send(Some("sidecar-a"), response, "k2", json!({"predictions": ["no"]})).await;
    assert_eq!((status, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("data[0]")), "{v}");
    assert_eq!(app.store.rows().await.unwrap(), (1, 0));
    let (_, v) = app.post(&paths::labels("team-a", "fraud"), Some("labeller-a"), labels(&["k1"]).to_string()).await;
    assert_eq!(v["joined"].as_u64(), Some(1), "{v}");
}

fn reference(ns: &str, sha: char) -> Value {
    json!({"namespace": ns, "rollout": "fraud", "model": "fraud", "version": "v2", "sha256": sha.to_string().repeat(64),
        "reference": {"features": [
            {"name": "amount", "edges": [10.0, 100.0], "proportions": [0.25, 0.5, 0.25]},
            {"name": "hour", "edges": [12.0], "proportions": [0.5, 0.5]}]}})
}

/// A sidecar's reference and its predictions' bins become the input drift series; a reference
/// needs the sidecar's right, and a bad one is refused naming the field.
#[tokio::test]
async fn input_drift_against_the_reference_is_exported() {
    let app = app().await;
    let put = |token, body: Value| app.send("PUT", paths::REFERENCES, token, body.to_string());
    assert_eq!(put(None, reference("team-a", 'a')).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(put(Some("labeller-a"), reference("team-a", 'a')).await.0, StatusCode::FORBIDDEN);
    assert_eq!(put(Some("sidecar-a"), reference("team-b", 'a')).await.0, StatusCode::FORBIDDEN);
    let mut bad = reference("team-a", 'a');
    bad["reference"]["features"][1]["proportions"] = json!([1.0]);
    let (status, v) = put(Some("sidecar-a"), bad).await;
    assert_eq!((status, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("reference")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("hour"), "{v}");
    let mut bad = reference("team-a", 'a');
    bad["sha256"] = json!("not-a-digest");
    assert_eq!(put(Some("sidecar-a"), bad).await.1["error"]["field"].as_str(), Some("sha256"));
    assert_eq!(put(Some("sidecar-a"), reference("team-a", 'a')).await.0, StatusCode::CREATED);
    assert_eq!(put(Some("sidecar-a"), reference("team-a", 'a')).await.0, StatusCode::OK, "the same again");
    // 40 rows: amount all in its top bin (reference 25%), hour spread as the reference.
    let mut batch = predictions(
        "team-a",
        &(0..40).map(|i| format!("r{i}")).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for (i, r) in batch["records"].as_array_mut().unwrap().iter_mut().enumerate() {
        r["bins"] = json!([2, i % 2]);
    }
    let mut out_of_range = batch.clone();
    out_of_range["records"][3]["bins"] = json!([64, 0]);
    let (status, v) = app.post(paths::PREDICTIONS, Some("sidecar-a"), out_of_range.to_string()).await;
    assert_eq!((status, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("records[3].bins")), "{v}");
    let (status, v) = app.post(paths::PREDICTIONS, Some("sidecar-a"), batch.to_string()).await;
    assert_eq!((status, v["recorded"].as_u64()), (StatusCode::OK, Some(40)), "{v}");
    let (status, v) = app.post(paths::PREDICTIONS, Some("sidecar-a"), batch.to_string()).await;
    assert_eq!((status, v["duplicates"].as_u64()), (StatusCode::OK, Some(40)), "a retried batch: {v}");
    let text = app.metrics().await;
    let value = |feature: &str| -> f64 {
        let prefix = format!("{}{{", series::FEATURE_PSI);
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix) && l.contains(&format!("feature=\"{feature}\"")))
            .unwrap_or_else(|| panic!("no {feature} PSI in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // amount: (40.5/41.5 - 0.25) ln(...) + two near-empty bins: well above 0.25; hour matches.
    assert!(value("amount") > 1.0, "{}", value("amount"));
    assert!(value("hour") < 0.01, "{}", value("hour"));
    let rows = text.lines().find(|l| l.starts_with(series::DRIFT_ROWS)).unwrap_or_else(|| panic!("{text}"));
    assert!(rows.ends_with(" 40"), "each prediction's bins counted once: {rows}");
    // A new reference (another digest) restarts the version's bins.
    assert_eq!(put(Some("sidecar-a"), reference("team-a", 'b')).await.0, StatusCode::CREATED);
    assert!(!app.metrics().await.contains(series::FEATURE_PSI), "the old bins are gone");
}
