//! The adapters that talk HTTP to users' servers, against real HTTP servers started here: gating
//! webhooks (answers, timeouts, retries, the payload) and acceptance checks (a golden set fetched,
//! verified and scored through a Service-like endpoint, and the load check).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use modelrollout::acceptance_runner::{self, Targets};
use modelrollout::api::*;
use modelrollout::core::AcceptanceReport;
use modelrollout::outbound::{DestinationPolicy, Outbound};
use serde_json::{Value, json};

async fn serve(app: Router) -> String {
    // reqwest's TLS takes the process's crypto provider (the controller installs ring at start).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn hook(name: &str, kind: WebhookKind, url: String, timeout: &str, retries: u32) -> GatingWebhook {
    GatingWebhook {
        name: name.into(),
        kind,
        url,
        timeout: timeout.parse().unwrap(),
        retries,
        metadata: [("suite".to_string(), "smoke".to_string())].into(),
    }
}

#[derive(Default)]
struct Hooks {
    flaky_calls: AtomicU32,
    refused_calls: AtomicU32,
    bodies: std::sync::Mutex<Vec<Value>>,
}

#[tokio::test]
async fn webhook_answers_timeouts_and_retries() {
    let state = Arc::new(Hooks::default());
    let app = Router::new()
        .route(
            "/ok",
            post(|State(s): State<Arc<Hooks>>, body: axum::body::Bytes| async move {
                s.bodies.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                "go"
            }),
        )
        .route(
            "/refuse",
            post(|State(s): State<Arc<Hooks>>| async move {
                s.refused_calls.fetch_add(1, Ordering::SeqCst);
                // The reason in the header a hook opts in with; the body is the hook's own business.
                (
                    StatusCode::PRECONDITION_FAILED,
                    [(modelrollout::api::WEBHOOK_MESSAGE_HEADER, "smoke tests failed: 3 of 40")],
                    "internal details: token=s3cr3t",
                )
            }),
        )
        .route(
            "/redirect",
            post(|| async { (StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, "/ok")], "") }),
        )
        .route(
            "/flaky",
            post(|State(s): State<Arc<Hooks>>| async move {
                if s.flaky_calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    (StatusCode::SERVICE_UNAVAILABLE, "warming up")
                } else {
                    (StatusCode::OK, "ok")
                }
            }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .with_state(state.clone());
    let base = serve(app).await;
    // The tests' servers are on loopback, which the default policy refuses: allowed here by name.
    let http = Outbound::new(DestinationPolicy::parse(&["127.0.0.0/8".into()]).unwrap());
    let mut st = ModelRolloutStatus {
        phase: Some(Phase::Progressing),
        stage_name: Some("canary-5".into()),
        canary_weight: 5,
        stable_version: Some("v1".into()),
        candidate_version: Some("v2".into()),
        ..Default::default()
    };
    st.last_analysis = Some(AnalysisRun {
        time: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::UNIX_EPOCH),
        stage_index: 1,
        verdict: Verdict::Pass,
        gates: vec![GateResult {
            name: "falsePositiveRate".into(),
            verdict: Verdict::Pass,
            value: Some(0.011),
            stable_value: Some(0.010),
            limit: Some("<= 0.015".into()),
            samples: Some(900),
            bound: Some(0.015),
            message: "ok".into(),
            sequential: None,
        }],
        gate_set: Default::default(),
    });

    // 2xx: ok at once; the payload names the rollout, stage, versions, gates and metadata.
    let h = hook("smoke", WebhookKind::PreRollout, format!("{base}/ok"), "2s", 2);
    let body = modelrollout::webhook_calls::payload("team-a", "fraud", &st, "v2", &h);
    let call = modelrollout::webhook_calls::call(&http, &h, &body).await;
    assert!(call.ok && call.attempts == 1 && call.code == Some(200), "{call:?}");
    let got = state.bodies.lock().unwrap()[0].clone();
    assert_eq!(got["type"], "preRollout");
    assert_eq!((got["namespace"].as_str(), got["name"].as_str()), (Some("team-a"), Some("fraud")));
    assert_eq!((got["stage"].as_str(), got["canaryWeight"].as_i64()), (Some("canary-5"), Some(5)));
    assert_eq!((got["stableVersion"].as_str(), got["candidateVersion"].as_str()), (Some("v1"), Some("v2")));
    assert_eq!(got["gates"][0]["name"], "falsePositiveRate");
    assert_eq!(got["gates"][0]["value"], 0.011);
    assert_eq!(got["metadata"]["suite"], "smoke");

    // 4xx: the hook's answer, not retried; the reason its header gives is quoted, its body never.
    let h = hook("smoke", WebhookKind::PreRollout, format!("{base}/refuse"), "2s", 3);
    let call = modelrollout::webhook_calls::call(&http, &h, &body).await;
    assert!(!call.ok && call.code == Some(412) && call.attempts == 1, "{call:?}");
    assert_eq!(call.message, "HTTP 412 Precondition Failed: smoke tests failed: 3 of 40");
    assert!(!call.message.contains("s3cr3t"), "{}", call.message);
    assert_eq!(state.refused_calls.load(Ordering::SeqCst), 1);

    // A redirect is not followed (reqwest's default would turn the POST into a GET to wherever
    // it points): the 3xx is the answer, and /ok heard nothing more.
    let before = state.bodies.lock().unwrap().len();
    let h = hook("moved", WebhookKind::PreRollout, format!("{base}/redirect"), "2s", 1);
    let call = modelrollout::webhook_calls::call(&http, &h, &body).await;
    assert!(!call.ok && call.code == Some(307) && call.attempts == 1, "{call:?}");
    assert_eq!(state.bodies.lock().unwrap().len(), before, "the redirect was followed");

    // The cloud metadata address, and by default loopback: never called.
    let default = Outbound::default();
    for url in ["http://169.254.169.254/latest/meta-data/iam/", &format!("{base}/ok")] {
        let h = hook("ssrf", WebhookKind::PreRollout, url.to_string(), "2s", 2);
        let call = modelrollout::webhook_calls::call(&default, &h, &body).await;
        assert!(!call.ok && call.code.is_none() && call.attempts == 1, "{url}: {call:?}");
        assert!(call.message.contains("destination policy"), "{url}: {}", call.message);
    }
    assert_eq!(state.bodies.lock().unwrap().len(), before, "a refused destination was called");

    // 5xx twice, then 200: retried (1 s, then 2 s apart).
    let h = hook("warm", WebhookKind::ConfirmPromotion, format!("{base}/flaky"), "2s", 2);
    let call = modelrollout::webhook_calls::call(&http, &h, &body).await;
    assert!(call.ok && call.attempts == 3, "{call:?}");

    // No answer within the timeout: retried, then given up, saying so.
    let h = hook("slow", WebhookKind::Rollback, format!("{base}/slow"), "300ms", 1);
    let started = std::time::Instant::now();
    let call = modelrollout::webhook_calls::call(&http, &h, &body).await;
    assert!(!call.ok && call.code.is_none() && call.attempts == 2, "{call:?}");
    assert!(call.message.contains("no answer within 300ms"), "{}", call.message);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Nothing listening: a connection error, retried.
    let h = hook("gone", WebhookKind::PostRollout, "http://127.0.0.1:9/hook".into(), "1s", 1);
    let call = modelrollout::webhook_calls::call(&http, &h, &body).await;
    assert!(!call.ok && call.code.is_none() && call.attempts == 2, "{call:?}");
}

/// A stand-in for a model's Service: `/v1/models/fraud:predict` scoring `x` as the row's own
/// score, refusing rows without `x` (400, as the sidecar refuses a contract violation), and
/// serving the golden set file.
async fn model_server(golden: Vec<u8>, version: Option<&'static str>) -> String {
    let golden = Arc::new(golden);
    let app = Router::new().route("/golden.json", get(move || async move { (*golden).clone() })).route(
        "/v1/models/fraud:predict",
        post(move |body: axum::body::Bytes| async move {
            let body: Value = serde_json::from_slice(&body).unwrap();
            match body["instances"][0]["x"].as_f64() {
                Some(x) => (
                    StatusCode::OK,
                    json!({"model_version": version, "predictions": [{"score": x, "decision": x >= 0.5}]}).to_string(),
                ),
                None => (StatusCode::BAD_REQUEST, json!({"error": "missing input x"}).to_string()),
            }
        }),
    );
    serve(app).await
}

fn golden_file() -> Vec<u8> {
    let rows = [(0.9, 1, 0.9), (0.8, 1, 0.8), (0.3, 1, 0.35), (0.6, 0, 0.6), (0.2, 0, 0.2), (0.1, 0, 0.1)];
    let mut rows: Vec<Value> =
        rows.iter().map(|(x, l, p)| json!({"features": {"x": x}, "label": l, "probability": p})).collect();
    rows.push(json!({"features": {"y": 1.0}, "label": 0}));
    serde_json::to_vec(&json!({"threshold": 0.5, "rows": rows})).unwrap()
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn golden_check(base: &str, sha256: String) -> GoldenSetCheck {
    GoldenSetCheck {
        artifact: GoldenSetArtifact { uri: format!("{base}/golden.json"), sha256 },
        threshold: None,
        auc: Some(GoldenLimit { min: Some(0.8), max_below_stable: Some(0.0) }),
        accuracy: None,
        max_score_difference: Some(0.1),
        max_contract_failure_rate: Some(0.0),
    }
}

#[tokio::test]
async fn acceptance_scores_the_golden_set_through_the_service_and_loads_it() {
    let file = golden_file();
    let base = model_server(file.clone(), None).await;
    let targets = Targets {
        model: "fraud".into(),
        candidate: base.clone(),
        candidate_version: "v2".into(),
        stable: base.clone(),
        stable_version: "v1".into(),
        routing_wait: Duration::from_secs(2),
    };
    let contract: DataContract = serde_json::from_value(json!({"inputs": [{"name": "x", "type": "float"}]})).unwrap();
    let http = reqwest::Client::new();
    let outbound = Outbound::new(DestinationPolicy::parse(&["127.0.0.0/8".into()]).unwrap());
    let spec = AcceptanceSpec {
        golden_set: Some(golden_check(&base, sha(&file))),
        load: Some(LoadCheck {
            rate: 200,
            duration: "1s".parse().unwrap(),
            max_latency_p95: "50ms".parse().unwrap(),
            max_error_rate: 0.0,
        }),
        timeout: "1m".parse().unwrap(),
    };
    let report = acceptance_runner::run(&http, &outbound, &spec, &contract, &targets).await;
    let AcceptanceReport::Measured { golden_set: Some(g), load: Some(l) } = &report else { panic!("{report:?}") };
    assert_eq!((g.rows, g.candidate.rows), (7, 6));
    // Positives 0.9, 0.8, 0.3 against negatives 0.6, 0.2, 0.1: 8 of 9 pairs ordered right.
    assert!((g.candidate.auc.unwrap() - 8.0 / 9.0).abs() < 1e-9, "{g:?}");
    assert!((g.candidate.contract_failure_rate - 1.0 / 7.0).abs() < 1e-9);
    assert!((g.candidate.max_score_difference.unwrap() - 0.05).abs() < 1e-9);
    assert!(g.stable.is_some(), "stable scored too: a limit is relative to it");
    // The golden rows were the requests: the row without `x` is refused each time it comes.
    assert!(l.requests >= 150 && l.requests <= 210, "{l:?}");
    assert!(l.errors > 0 && l.errors < l.requests / 4, "{l:?}");
    let checks = modelrollout::core::judge_acceptance(&spec, Some(g), Some(l));
    let verdict = |n: &str| checks.iter().find(|c| c.name == n).unwrap().verdict;
    assert_eq!(verdict("goldenSet.auc"), Verdict::Pass);
    assert_eq!(verdict("goldenSet.contractFailureRate"), Verdict::Fail);
    assert_eq!(verdict("load.errorRate"), Verdict::Fail);

    // A file that is not the one the spec names: the checks do not run.
    let wrong = AcceptanceSpec { golden_set: Some(golden_check(&base, "0".repeat(64))), load: None, ..spec.clone() };
    match acceptance_runner::run(&http, &outbound, &wrong, &contract, &targets).await {
        AcceptanceReport::Error(e) => assert!(e.contains("sha256") && e.contains(&"0".repeat(64)), "{e}"),
        other => panic!("{other:?}"),
    }
    // Answered by another version (a Service still routing to the old pods): waited for, never
    // scored as this one.
    let other = model_server(file.clone(), Some("v1")).await;
    let misrouted = Targets { candidate: other, ..targets.clone() };
    match acceptance_runner::run(
        &http,
        &outbound,
        &AcceptanceSpec { load: None, ..spec.clone() },
        &contract,
        &misrouted,
    )
    .await
    {
        AcceptanceReport::Error(e) => {
            assert!(e.contains("did not answer as version v2 within 2s (answered by version v1)"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // A candidate that does not answer: an error naming it, after the row's retries.
    let gone = Targets { candidate: "http://127.0.0.1:9".into(), ..targets.clone() };
    match acceptance_runner::run(&http, &outbound, &AcceptanceSpec { load: None, ..spec.clone() }, &contract, &gone)
        .await
    {
        AcceptanceReport::Error(e) => assert!(e.starts_with("candidate: http://127.0.0.1:9 did not answer"), "{e}"),
        other => panic!("{other:?}"),
    }
}
