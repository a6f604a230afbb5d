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
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
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

pub mod harness;
