//! The evidence service for the kwok suites: this build's binary as a process, with the chart's
//! identity and rights for it (its ServiceAccount token: TokenReview and SubjectAccessReview
//! against the real apiserver), a SQLite file that outlives its restarts, and a Prometheus target.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::controller::{bin, chart_release, token_kubeconfig};
use crate::*;

pub struct EvidenceProc {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    kubeconfig: PathBuf,
    database: PathBuf,
    target: PathBuf,
    log: PathBuf,
}

impl Drop for EvidenceProc {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.target);
    }
}

/// The chart's evidence RBAC for `ns` (`helm template --show-only templates/evidence-rbac.yaml`,
/// applied): the service's ServiceAccount and review rights, the label-writer and
/// prediction-writer ClusterRoles, the latter bound to `ns`'s default ServiceAccount.
pub fn apply_evidence_rbac(ns: &str) {
    let chart = root().join("charts/modelrollout");
    let rbac = helm_ok(&[
        "template",
        &chart_release(ns),
        chart.to_str().unwrap(),
        "--namespace",
        ns,
        "--set",
        "evidence.enabled=true",
        "--set",
        &format!("watchNamespaces={{{ns}}}"),
        "--show-only",
        "templates/evidence-rbac.yaml",
    ]);
    kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&rbac));
}

impl EvidenceProc {
    /// The service on 127.0.0.1:`port` for the rollouts of `ns`, as the chart's ServiceAccount.
    pub async fn start(ns: &str, port: u16) -> Self {
        apply_evidence_rbac(ns);
        let kubeconfig = token_kubeconfig(ns, &format!("{}-evidence", chart_release(ns)));
        let dir = PathBuf::from(cluster_env("MODELROLLOUT_CLUSTER_DIR"));
        let target = prometheus_targets_dir().join(format!("evidence-{ns}.json"));
        // No target labels: the series carry the rollout's namespace themselves.
        std::fs::write(&target, json!([{"targets": [format!("127.0.0.1:{port}")], "labels": {}}]).to_string()).unwrap();
        let mut e = Self {
            child: None,
            port,
            base: format!("http://127.0.0.1:{port}"),
            kubeconfig,
            database: dir.join(format!("evidence-{ns}.db")),
            target,
            log: dir.join(format!("evidence-{ns}.log")),
        };
        e.spawn().await;
        e
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        self.child = Some(
            Command::new(bin("modelrollout-evidence"))
                .args(["--listen", &format!("127.0.0.1:{}", self.port)])
                .arg("--database-url")
                .arg(format!("sqlite://{}", self.database.display()))
                .env("KUBECONFIG", &self.kubeconfig)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("the evidence service binary runs"),
        );
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", self.base);
        wait_for("the evidence service ready", Duration::from_secs(30), || {
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    }

    /// Killed outright (what it had committed is on its file) and started again on the same file.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Posts labels for rollout `rollout` of `ns` with `token` (none: no Authorization header).
    pub async fn post_labels(
        &self,
        ns: &str,
        rollout: &str,
        token: Option<&str>,
        labels: &[(String, bool)],
    ) -> (u16, Value) {
        let body =
            json!({"labels": labels.iter().map(|(id, l)| json!({"requestId": id, "label": l})).collect::<Vec<_>>()});
        let mut req = reqwest::Client::new()
            .post(format!("{}/v1/namespaces/{ns}/rollouts/{rollout}/labels", self.base))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("the evidence service answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The sum of a series' samples whose line contains every one of `matching`.
    pub async fn metric_sum(&self, series: &str, matching: &[&str]) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.base)).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with(&format!("{series}{{")) && matching.iter().all(|m| l.contains(m)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}
