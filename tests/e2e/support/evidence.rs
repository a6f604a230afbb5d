//! The evidence service for the kwok suites: this build's binary as a process, with the chart's
//! identity and rights for it (its ServiceAccount token: TokenReview and SubjectAccessReview
//! against the real apiserver), a SQLite file that outlives its restarts, and a Prometheus target.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde_json::{Value, json};

use crate::controller::{bin, chart_fullname, chart_release, token_kubeconfig};
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

    /// Killed outright; [`EvidenceProc::start_again`] brings it back on the same file.
    pub fn stop(&mut self) {
        self.kill();
    }

    pub async fn start_again(&mut self) {
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
        post_labels_at(&self.base, ns, rollout, token, labels).await.expect("the evidence service answers")
    }

    /// The sum of a series' samples whose line contains every one of `matching`.
    pub async fn metric_sum(&self, series: &str, matching: &[&str]) -> f64 {
        metric_sum_at(&self.base, series, matching).await
    }
}

/// Posts labels to the evidence service at `base`: (status, answer), or why nothing came back.
pub async fn post_labels_at(
    base: &str,
    ns: &str,
    rollout: &str,
    token: Option<&str>,
    labels: &[(String, bool)],
) -> Result<(u16, Value), String> {
    let body = json!({"labels": labels.iter().map(|(id, l)| json!({"requestId": id, "label": l})).collect::<Vec<_>>()});
    let mut req = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .post(format!("{base}{}", modelrollout_contract::evidence::paths::labels(ns, rollout)))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// The sum of the samples of `series` at `base`'s /metrics whose line contains every one of `matching`.
pub async fn metric_sum_at(base: &str, series: &str, matching: &[&str]) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{series}{{")) && matching.iter().all(|m| l.contains(m)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A label poster of `ns`: ServiceAccount `labeller` bound to the label-writer ClusterRole of the
/// chart installed as `ns`'s test release, in `ns` only (applied, so a second call changes
/// nothing); a fresh token of it.
pub fn labeller_token(ns: &str) -> String {
    labeller_token_of(ns, &chart_fullname(ns))
}

/// The same for the chart whose objects are named `fullname`.
fn labeller_token_of(ns: &str, fullname: &str) -> String {
    let binding = json!({
    "apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "labeller", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "labeller", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": format!("{fullname}-label-writer")},
         "subjects": [{"kind": "ServiceAccount", "name": "labeller", "namespace": ns}]}
    ]});
    kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&binding.to_string()));
    kubectl_ok(&["create", "token", "labeller", "-n", ns, "--duration", "2h"], None).trim().to_string()
}

/// The chart's evidence service on the real node (every real-node test installs it with its
/// controller: [`crate::controller::helm_install_controller`]), reached at its Service's ClusterIP
/// through kube-proxy as any client in the cluster would, and a label poster's token.
pub struct ChartEvidence {
    /// The rollouts' namespace (whose labels this poster may post).
    pub ns: String,
    pub base: String,
    pub labeller: String,
    /// Where the service's pod runs.
    pods_ns: String,
}

impl ChartEvidence {
    /// The evidence service for the rollouts of `ns`, once it answers `/readyz` at its ClusterIP:
    /// the one of `ns`'s own release (each test installs the chart in its namespace), else the
    /// cluster's one (the demo installs it in modelrollout-system).
    pub async fn of(ns: &str) -> Self {
        use k8s_openapi::api::core::v1::Service;
        let client = client().await;
        let selector = ListParams::default().labels("app.kubernetes.io/component=evidence");
        let (svc_ns, name) = wait_for("an evidence Service", Duration::from_secs(120), || async {
            let own = Api::<Service>::namespaced(client.clone(), ns).list(&selector).await.ok()?.items;
            let found = match own.into_iter().next() {
                Some(s) => s,
                None => {
                    let all = Api::<Service>::all(client.clone()).list(&selector).await.ok()?.items;
                    assert!(all.len() <= 1, "{} evidence Services in the cluster and none in {ns}", all.len());
                    all.into_iter().next()?
                }
            };
            Some((found.metadata.namespace?, found.metadata.name?))
        })
        .await;
        let base = wait_for(&format!("Service {svc_ns}/{name} answering"), Duration::from_secs(120), || async {
            crate::load::clients::service_address(&client, &svc_ns, &name).await
        })
        .await;
        let fullname = name.strip_suffix("-evidence").expect("the chart names it <fullname>-evidence");
        Self { ns: ns.to_string(), base, labeller: labeller_token_of(ns, fullname), pods_ns: svc_ns }
    }

    /// Posts labels once, with the label poster's token.
    pub async fn post_labels(&self, rollout: &str, labels: &[(String, bool)]) -> Result<(u16, Value), String> {
        post_labels_at(&self.base, &self.ns, rollout, Some(&self.labeller), labels).await
    }

    pub async fn metric_sum(&self, series: &str, matching: &[&str]) -> f64 {
        metric_sum_at(&self.base, series, matching).await
    }

    /// Its pod deleted (the Deployment makes another, on the same volume); returns once the new
    /// one answers at the Service.
    pub async fn restart(&self) {
        let pods: Api<Pod> = Api::namespaced(client().await, &self.pods_ns);
        let selector = ListParams::default().labels("app.kubernetes.io/component=evidence");
        let old: Vec<String> =
            pods.list(&selector).await.unwrap().items.into_iter().filter_map(|p| p.metadata.uid).collect();
        assert!(!old.is_empty(), "no evidence pod in {}", self.ns);
        pods.delete_collection(&DeleteParams::default(), &selector).await.unwrap();
        wait_for("a new evidence pod ready", Duration::from_secs(120), || async {
            let now = pods.list(&selector).await.ok()?.items;
            now.iter()
                .any(|p| p.metadata.uid.as_ref().is_some_and(|u| !old.contains(u)) && crate::is_ready(p))
                .then_some(())
        })
        .await;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
        wait_for("the evidence Service answering again", Duration::from_secs(60), || async {
            http.get(format!("{}/readyz", self.base)).send().await.ok()?.status().is_success().then_some(())
        })
        .await;
    }
}
