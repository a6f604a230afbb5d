//! Support for the end-to-end tests: the environment `tests/cluster/cluster.sh` exports, a fresh
//! namespace per test, kubectl as users run it, and waits with timeouts.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An environment variable the cluster script sets; a clear failure when run outside it.
pub fn cluster_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: end-to-end tests run inside the local control plane, via `bash tests/run.sh`")
    })
}

pub fn prometheus_url() -> String {
    cluster_env("MODELROLLOUT_PROMETHEUS_URL")
}

/// A client of the cluster's Prometheus. Installs the TLS crypto provider reqwest needs first, so
/// that a test does not depend on another having done it.
pub fn prometheus() -> prometheus_http_query::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    prometheus_http_query::Client::try_from(prometheus_url().as_str()).expect("a Prometheus client")
}

/// The first sample of an instant query: `Ok(None)` while nothing matches, `Err` for a query
/// Prometheus refuses or one that does not return a vector.
pub async fn first_sample(prom: &prometheus_http_query::Client, query: &str) -> Result<Option<f64>, String> {
    let res = prom.query(query).get().await.map_err(|e| format!("{query}: {e}"))?;
    let vector = res.data().as_vector().ok_or_else(|| format!("{query}: not a vector"))?;
    Ok(vector.first().map(|s| s.sample().value()))
}

pub fn prometheus_targets_dir() -> PathBuf {
    PathBuf::from(cluster_env("MODELROLLOUT_PROM_TARGETS_DIR"))
}

pub async fn client() -> Client {
    cluster_env("KUBECONFIG");
    Client::try_default().await.expect("a kube client from KUBECONFIG")
}

/// Runs kubectl (the cluster's, first on PATH) with optional stdin.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    tool("kubectl", args, stdin)
}

/// Runs helm (the pinned build, first on PATH inside `cluster.sh run`).
pub fn helm(args: &[&str]) -> Output {
    tool("helm", args, None)
}

/// helm that must succeed; returns stdout.
pub fn helm_ok(args: &[&str]) -> String {
    succeeded("helm", args, helm(args))
}

fn tool(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    cluster_env("KUBECONFIG");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// kubectl that must succeed; returns stdout.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    succeeded("kubectl", args, kubectl(args, stdin))
}

fn succeeded(program: &str, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace of the test's own, deleted when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("{prefix}-{}-{:x}", COUNTER.fetch_add(1, Ordering::SeqCst), nanos % 0xfffff);
        let api: Api<Namespace> = Api::all(client().await);
        // Pod Security baseline: no pod of a test may use the host's network (it would get the
        // machine's routes, outside the bridge's rule), PID or IPC namespaces, paths or ports.
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {
            "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/enforce-version": "latest"
        }}}))
        .unwrap();
        api.create(&PostParams::default(), &ns).await.expect("namespace created");
        Self { name }
    }

    pub async fn delete(&self) {
        let api: Api<Namespace> = Api::all(client().await);
        let _ = api.delete(&self.name, &DeleteParams::background()).await;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Best effort, also when the test panicked; the whole cluster goes away after the run anyway.
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.name, "--wait=false", "--ignore-not-found"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The README's recipe for a custom gate that holds a rollout to the GPU: 1 when every pod of the
/// version serves on CUDA, 0 once one serves on the CPU (a fallback), and no data — inconclusive,
/// not a failure — before the first scrape. It needs no traffic (`minSamples: 0`).
pub const ON_GPU_GATE_QUERY: &str = concat!(
    r#"min(modelrollout_sidecar_device{namespace=$namespace,model=$model,version=$version,device="cuda"}"#,
    r#" or 0 * modelrollout_sidecar_device{namespace=$namespace,model=$model,version=$version,device="cpu"})"#
);

/// A scrape target Prometheus finds through file-based discovery, serving a fixed metrics text;
/// its target file goes, and its server stops, when dropped.
pub struct FakeTarget {
    file: PathBuf,
    _server: TestServer,
}

impl FakeTarget {
    /// Serves `body` on 127.0.0.1 and lists it as target `name` with `labels`.
    pub async fn start(name: &str, labels: serde_json::Value, body: String) -> Self {
        let server = TestServer::start(move |_| (200, body.clone())).await;
        let file = prometheus_targets_dir().join(format!("{name}.json"));
        let targets = serde_json::json!([{"targets": [server.addr.to_string()], "labels": labels}]);
        std::fs::write(&file, targets.to_string()).unwrap();
        Self { file, _server: server }
    }
}

impl Drop for FakeTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// An HTTP server on 127.0.0.1 for the tests' own peers (scrape targets, webhook receivers): each
/// request's body goes to `answer`, which gives the status and a text body. Stops when dropped.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(answer: impl Fn(Vec<u8>) -> (u16, String) + Send + Sync + 'static) -> Self {
        let answer = std::sync::Arc::new(answer);
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let answer = answer.clone();
            async move {
                let (status, text) = answer(body.to_vec());
                (axum::http::StatusCode::from_u16(status).unwrap(), text)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, task }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sha256 of a committed model, from `models/SHA256SUMS`.
pub fn model_sha(file: &str) -> String {
    let sums = std::fs::read_to_string(root().join("models/SHA256SUMS")).expect("models/SHA256SUMS");
    sums.lines().find(|l| l.ends_with(&format!("  {file}"))).expect("the model is listed")[..64].to_string()
}

pub mod controller;
pub mod env;
pub mod evidence;
pub mod given;
pub mod load;
pub mod manifest;
pub mod measure;
pub mod prometheus_proc;
pub mod real_node;
pub mod routes;
pub mod webhook_receivers;

// What every suite uses, at the crate's root.
pub use controller::*;
pub use env::Env;
pub use evidence::{ChartEvidence, EvidenceProc, labeller_token};
pub use given::*;
pub use load::clients::*;
pub use load::comments::{Comments, Moderated};
pub use load::kwok::{Harness, Labels, service_account_token_file};
pub use load::users::*;
pub use load::{golden_rows, now, ready_endpoints};
pub use manifest::*;
pub use measure::*;
pub use prometheus_proc::*;
pub use real_node::*;
pub use routes::*;
pub use webhook_receivers::*;
