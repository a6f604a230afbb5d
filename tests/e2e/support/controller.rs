//! The controller under test: this build's binary as a process (kwok suites), with exactly the
//! rights the chart grants, or the chart installed as a pod (real node); and the plugin as users
//! run it.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};

use crate::real_node::{CONTROLLER_IMAGE, IN_CLUSTER_PROMETHEUS, running_pods};
use crate::*;

/// The profile directory of this build (`target/debug`), for tests (in `deps/`) and binaries alike.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    if dir.ends_with("deps") { dir.parent().unwrap().to_path_buf() } else { dir.to_path_buf() }
}

/// A workspace binary of this build (tests/run.sh builds them all).
pub fn bin(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    assert!(p.exists(), "{} not built: run `cargo build --workspace` (tests/run.sh does)", p.display());
    p
}

/// The sidecar's optimised build (tests/run.sh builds it): the sidecars serve traffic whose latency
/// is gated, so the debug build would be the wrong thing to measure.
pub fn release_bin(name: &str) -> PathBuf {
    let p = profile_dir().parent().unwrap().join("release").join(name);
    assert!(p.exists(), "{} not built: run `cargo build --release -p {name}` (tests/run.sh does)", p.display());
    p
}

/// The Helm release the tests install (or render) in `ns`; the chart names everything after it.
pub fn chart_release(ns: &str) -> String {
    format!("modelrollout-{ns}")
}

/// The chart's `modelrollout.fullname` of that release: the prefix of its objects' names.
pub fn chart_fullname(ns: &str) -> String {
    let release = chart_release(ns);
    release[..release.len().min(50)].trim_end_matches('-').to_string()
}

/// The chart's service account and RBAC for `ns` (`helm template`, applied), and a kubeconfig for
/// that service account: the controller then runs with exactly the rights the chart grants.
pub fn service_account_kubeconfig(ns: &str) -> PathBuf {
    let release = chart_release(ns);
    let chart = root().join("charts/modelrollout");
    let rbac = helm_ok(&[
        "template",
        &release,
        chart.to_str().unwrap(),
        "--namespace",
        ns,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ]);
    kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&rbac));
    token_kubeconfig(ns, &format!("{release}-controller"))
}

/// A kubeconfig that authenticates as service account `sa` in `ns` (a fresh token).
pub fn token_kubeconfig(ns: &str, sa: &str) -> PathBuf {
    let token = kubectl_ok(&["create", "token", sa, "-n", ns, "--duration", "2h"], None);
    let admin: Value =
        serde_json::from_str(&kubectl_ok(&["config", "view", "--raw", "--minify", "-o", "json"], None)).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": ns}}],
        "current-context": "sa"
    });
    let path = PathBuf::from(cluster_env("MODELROLLOUT_CLUSTER_DIR")).join(format!("kubeconfig-{sa}-{ns}.json"));
    std::fs::write(&path, kc.to_string()).unwrap();
    path
}

/// The controller binary as a process; killed when dropped.
pub struct ControllerProc {
    pub child: Child,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl ControllerProc {
    /// The controller watching `ns` with the test Prometheus, plus `extra` flags.
    pub fn start(ns: &str, kubeconfig: &std::path::Path, extra: &[&str]) -> Self {
        let metrics_port = free_port();
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let prometheus = cluster_env("MODELROLLOUT_PROMETHEUS_URL");
        let mut args = vec!["--namespaces", ns, "--prometheus-url", &prometheus, "--metrics-addr", &metrics_addr];
        args.extend(["--log-format", "text", "--leader-election-namespace", ns]);
        // The tests' webhook receivers listen on loopback, which the default policy refuses.
        args.push("--outbound-allow=127.0.0.0/8");
        args.extend(extra);
        Self::spawn(ns, kubeconfig, &args, metrics_port)
    }

    /// The controller with exactly these flags (e.g. a Deployment's container args).
    pub fn start_with_args(ns: &str, kubeconfig: &std::path::Path, args: &[&str]) -> Self {
        let metrics_port =
            args.iter().find_map(|a| a.strip_prefix("--metrics-addr=")?.rsplit(':').next()?.parse().ok()).unwrap_or(0);
        Self::spawn(ns, kubeconfig, args, metrics_port)
    }

    fn spawn(ns: &str, kubeconfig: &std::path::Path, args: &[&str], metrics_port: u16) -> Self {
        let log =
            PathBuf::from(cluster_env("MODELROLLOUT_CLUSTER_DIR")).join(format!("controller-{ns}-{metrics_port}.log"));
        let child = Command::new(bin("modelrollout-controller"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the controller binary runs");
        Self { child, metrics_port, log }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `helm install` of the chart in `ns`, with the controller image built here, on the real node,
/// watching `ns` only, querying Prometheus through its in-cluster Service. Waits for the pod.
/// A volume for the evidence service of `ns`'s release, as a cluster without a provisioner gives
/// one: a PersistentVolume of a class of its own (only that release's claim binds it), on a
/// directory of the real node's host (under the cluster's directory, gone with it).
fn evidence_volume(ns: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = PathBuf::from(cluster_env("MODELROLLOUT_CLUSTER_DIR")).join("evidence-volumes").join(ns);
    std::fs::create_dir_all(&dir).unwrap();
    // The service runs as 65532 (the chart's pod security context); a hostPath gets no fsGroup.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let class = format!("evidence-{ns}");
    let pv = serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("evidence-{ns}")},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": class,
                 "hostPath": {"path": dir.display().to_string(), "type": "Directory"}}
    });
    kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&pv.to_string()));
    class
}

pub async fn helm_install_controller(ns: &str) {
    let chart = root().join("charts/modelrollout");
    let release = chart_release(ns);
    let class = evidence_volume(ns);
    helm_ok(&[
        "install",
        &release,
        chart.to_str().unwrap(),
        "--namespace",
        ns,
        "--set",
        &format!("image.repository={CONTROLLER_IMAGE}"),
        "--set",
        &format!("prometheus.address={IN_CLUSTER_PROMETHEUS}"),
        "--set",
        &format!("watchNamespaces={{{ns}}}"),
        "--set",
        "nodeSelector.type=real",
        "--set",
        "tolerations[0].key=modelrollout.dev/real-node,tolerations[0].operator=Exists,tolerations[0].effect=NoSchedule",
        "--set",
        "logFormat=text",
        // The evidence service, on the volume above: the label gates read what it joins.
        "--set",
        "evidence.enabled=true",
        "--set",
        &format!("evidence.storageClassName={class}"),
        "--set",
        "evidence.storage=1Gi",
        "--wait",
        "--timeout",
        "180s",
    ]);
    let pods = running_pods(ns, "app.kubernetes.io/component=controller").await;
    assert!(!pods.is_empty());
}

/// The controller pod's log (`kubectl logs`: the apiserver reads it from the kubelet).
pub fn controller_logs(ns: &str) -> String {
    let out = kubectl(&["logs", "-n", ns, "-l", "app.kubernetes.io/component=controller", "--tail", "40"], None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl modelrollout ARGS`: kubectl finds the plugin on PATH, as on a user's machine.
pub fn plugin_command(args: &[&str], kubeconfig: Option<&std::path::Path>) -> tokio::process::Command {
    let plugin_dir = bin("kubectl-modelrollout").parent().unwrap().to_path_buf();
    let path = format!("{}:{}", plugin_dir.display(), std::env::var("PATH").unwrap());
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("modelrollout").args(args).env("PATH", path).stdin(Stdio::null());
    if let Some(kc) = kubeconfig {
        cmd.env("KUBECONFIG", kc);
    }
    cmd
}

/// Runs the plugin without blocking the test's runtime (the harness's traffic runs on it too).
pub async fn plugin(args: &[&str]) -> (i32, String, String) {
    plugin_as(args, None).await
}

pub async fn plugin_as(args: &[&str], kubeconfig: Option<&std::path::Path>) -> (i32, String, String) {
    let out: Output = plugin_command(args, kubeconfig).output().await.expect("kubectl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
