//! The sidecar binary reporting to the evidence service (its library, served on a port here, on a
//! SQLite store; tokens answered from a table, the apiserver's reviews being the end-to-end
//! suite's): every scored row arrives once, a service that goes away and comes back loses nothing
//! the sidecar still held and counts nothing twice, and a sidecar whose queue fills keeps serving
//! and counts what it dropped.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::future::BoxFuture;
use modelrollout_contract::evidence::access;
use modelrollout_evidence::api::{AppState, router};
use modelrollout_evidence::auth::{Access, Authorizer};
use modelrollout_evidence::store::Store;
use serde_json::json;

/// One token, allowed to send predictions in team-a.
struct OneToken;

impl Authorizer for OneToken {
    fn review(
        &self,
        token: String,
        namespace: String,
        what: &'static str,
    ) -> BoxFuture<'static, Result<Access, modelrollout_evidence::Error>> {
        let ok = token == "sidecar-token" && namespace == "team-a" && what == access::PREDICTIONS;
        Box::pin(
            async move { Ok(if ok { Access::Allowed { user: "sa".into() } } else { Access::Forbidden("no".into()) }) },
        )
    }
}

/// The service on `addr` over `store`, until the returned sender is dropped or sent to.
async fn serve_evidence(store: Arc<Store>, addr: SocketAddr) -> tokio::sync::oneshot::Sender<()> {
    let state = Arc::new(AppState::new(store, Box::new(OneToken), 7 * 86_400_000));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, router(state, 16 << 20))
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .unwrap()
    });
    tx
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Sidecar {
    child: Child,
    base: String,
    _contract: tempfile_lite::TempFile,
    _token: tempfile_lite::TempFile,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sidecar(evidence_port: u16, queue: usize) -> Sidecar {
    require_ort();
    let contract = contract_file(FRAUD_CONTRACT);
    let token = tempfile_lite::TempFile::with_contents("sidecar-token\n");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_inference-sidecar"))
        .args(["--model-name", "fraud", "--model-version", "v2", "--role", "canary", "--log-format", "text"])
        .args(["--model-sha256", &sha("fraud-v2.onnx")])
        .arg("--model-uri")
        .arg(models().join("fraud-v2.onnx"))
        .arg("--contract")
        .arg(&contract.0)
        .arg("--reference")
        .arg(models().join("fraud-v2.reference.json"))
        .args(["--reference-sha256", &sha("fraud-v2.reference.json")])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--evidence-url", &format!("http://127.0.0.1:{evidence_port}")])
        .args(["--namespace", "team-a", "--rollout", "fraud", "--evidence-queue", &queue.to_string()])
        .arg("--evidence-token-file")
        .arg(&token.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while !http().get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(start.elapsed() < Duration::from_secs(30), "not ready in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Sidecar { child, base, _contract: contract, _token: token }
}

/// Sends predict requests `r{from}..r{to}`, one row each; every one must be answered 200.
async fn predict(base: &str, ids: std::ops::Range<usize>) {
    let row = json!({"amount": 120.5, "hour": 3, "merchant_risk": 0.8, "distance_km": 300, "card_age_days": 20, "foreign": 1});
    for i in ids {
        let r = http()
            .post(format!("{base}/v1/models/fraud:predict"))
            .header("x-request-id", format!("r{i}"))
            .json(&json!({"instances": [row]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request r{i} while the evidence service is up or not");
    }
}

async fn wait_rows(store: &Store, want: i64) {
    let start = Instant::now();
    loop {
        let (rows, _) = store.rows().await.unwrap();
        if rows == want {
            return;
        }
        assert!(rows < want, "{rows} predictions stored, more than the {want} served");
        assert!(start.elapsed() < Duration::from_secs(15), "{rows} of {want} predictions stored after 15 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn sidecar_metric(base: &str, series: &str) -> f64 {
    let text = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
#[ignore = "needs ONNX Runtime: bash tests/run.sh"]
async fn every_scored_row_reaches_the_evidence_service_once_across_its_outage() {
    let dir = tempfile_lite::TempDir::new();
    let store = Arc::new(Store::open(&format!("sqlite://{}/e.db", dir.0.display())).await.unwrap());
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stop = serve_evidence(store.clone(), addr).await;
    let s = sidecar(port, 100_000).await;
    predict(&s.base, 0..50).await;
    wait_rows(&store, 50).await;
    // The service goes away: the sidecar answers every request, holds the records, and sends them
    // when it is back (the same store, as a restarted pod on its volume).
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(100)).await;
    predict(&s.base, 50..80).await;
    let _stop = serve_evidence(store.clone(), addr).await;
    wait_rows(&store, 80).await;
    let snap = store.snapshot().await.unwrap();
    let predictions: i64 = snap
        .counts
        .iter()
        .filter(|c| c.key.series == modelrollout_evidence::tally::Series::Predictions)
        .map(|c| c.n)
        .sum();
    assert_eq!(predictions, 80, "each prediction counted once, retried batches included");
    // The model's reference reached the service, and each prediction's bins were counted once:
    // every row is the same, so each feature has its 80 in the one bin its value falls in.
    assert_eq!(snap.drift.len(), 1, "{:?}", snap.drift);
    let drift = &snap.drift[0];
    let names: Vec<&str> = drift.reference.features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["amount", "hour", "merchant_risk", "distance_km", "card_age_days", "foreign"]);
    let amount = &drift.reference.features[0];
    let mut want = vec![0; amount.proportions.len()];
    want[usize::from(amount.bin(120.5))] = 80;
    assert_eq!(drift.counts[0], want);
    assert!(drift.counts.iter().all(|c| c.iter().sum::<i64>() == 80), "{:?}", drift.counts);
    let labels = r#"modelrollout_sidecar_evidence_records_total{model="fraud",version="v2",role="canary",outcome="#;
    assert_eq!(sidecar_metric(&s.base, &format!("{labels}\"sent\"}}")).await, 80.0);
    assert_eq!(sidecar_metric(&s.base, &format!("{labels}\"dropped\"}}")).await, 0.0);
}

/// With no service to send to, the sidecar holds one batch (retrying it) and a queue of 10: of 40
/// rows, at least 20 are dropped, each counted, and every request is answered.
#[tokio::test]
#[ignore = "needs ONNX Runtime: bash tests/run.sh"]
async fn a_full_queue_drops_and_counts_and_never_holds_a_request() {
    let s = sidecar(free_port(), 10).await;
    predict(&s.base, 0..40).await;
    let labels = r#"modelrollout_sidecar_evidence_records_total{model="fraud",version="v2",role="canary",outcome="#;
    let dropped = sidecar_metric(&s.base, &format!("{labels}\"dropped\"}}")).await;
    assert!((20.0..=40.0).contains(&dropped), "dropped {dropped}");
    assert_eq!(sidecar_metric(&s.base, &format!("{labels}\"sent\"}}")).await, 0.0);
}
