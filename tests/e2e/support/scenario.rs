//! Shared scenario helpers for the rollout end-to-end tests.

use std::time::{Duration, Instant};

use crate::harness::{ControllerProc, Harness, service_account_kubeconfig};
use crate::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::DynamicObject;
use kube::{Api, Client};
use modelrollout::api::{ModelRollout, Phase};
use serde_json::{Value, json};

pub use crate::model_sha as sha;

/// The fraud models' data contract (models/fraud.contract.yaml), optionally needing one more input.
pub fn contract(extra: Option<&str>) -> Value {
    let text = std::fs::read_to_string(root().join("models/fraud.contract.yaml")).unwrap();
    let mut contract: Value = serde_yaml::from_str(&text).unwrap();
    if let Some(name) = extra {
        contract["inputs"].as_array_mut().unwrap().push(json!({"name": name, "type": "float"}));
    }
    contract
}

/// The ModelRollout as a GitOps repository would hold it.
pub fn manifest(version: &str, file: &str, stages: Value, gates: Value) -> Value {
    json!({
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": "fraud"},
        "spec": {
            "model": {
                "name": "fraud", "version": version,
                "artifact": {"uri": root().join("models").join(file).canonicalize().unwrap().display().to_string(), "sha256": sha(file)},
                "contract": contract(None)
            },
            "workload": {"replicas": 2, "progressDeadline": "60s"},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud"}},
            "stages": stages,
            "analysis": {"interval": "3s", "failureLimit": 2, "inconclusiveLimit": 6, "gates": gates},
            "rollback": {"scaleDownDelay": "2s", "previousStableScaleDownDelay": "3s"}
        }
    })
}

pub fn default_gates() -> Value {
    json!({
        "errorRate": {"max": 0.01, "minSamples": 20},
        // The suite shares two cores with the control plane: the limit guards against a broken
        // candidate, not this machine's noise.
        "latencyP95": {"max": 1000, "minSamples": 20},
        "falsePositiveRate": {"maxAboveStable": 0.08, "minSamples": 15},
        "captureRate": {"maxBelowStable": 0.15, "minSamples": 8}
    })
}

pub fn four_stages(secs: u32) -> Value {
    let d = format!("{secs}s");
    json!([
        {"name": "shadow", "weight": 0, "mirrorPercent": 100, "minDuration": d},
        {"name": "canary-5", "weight": 5, "minDuration": d},
        {"name": "canary-25", "weight": 25, "minDuration": d},
        {"name": "full", "weight": 100, "minDuration": d}
    ])
}

/// Live-traffic stages only (no shadow): 5%, 25%, 100%, each `secs` long.
pub fn canary_stages(secs: u32) -> Value {
    let d = format!("{secs}s");
    json!([
        {"name": "canary-5", "weight": 5, "minDuration": d},
        {"name": "canary-25", "weight": 25, "minDuration": d},
        {"name": "full", "weight": 100, "minDuration": d}
    ])
}

/// `kubectl apply --server-side` as a GitOps tool does, with its own field manager.
pub fn gitops_apply(ns: &str, obj: &Value) {
    kubectl_ok(&["apply", "--server-side", "--field-manager", "gitops", "-n", ns, "-f", "-"], Some(&obj.to_string()));
}

pub struct Env {
    pub ns: TestNamespace,
    pub client: Client,
    pub controller: ControllerProc,
    pub harness: Harness,
    pub kubeconfig: std::path::PathBuf,
}

/// A namespace with a user-owned HTTPRoute, the controller and the harness, and v1 as stable.
pub async fn setup(prefix: &str, rps: u32) -> Env {
    setup_with(prefix, rps, &["--leader-election=false"]).await
}

/// `setup` with the controller's extra flags.
pub async fn setup_with(prefix: &str, rps: u32, controller_args: &[&str]) -> Env {
    setup_stable(prefix, rps, controller_args, manifest("v1", "fraud-v1.onnx", four_stages(5), default_gates())).await
}

/// `setup_with` and a stable of the caller's: `v1`, the first manifest applied.
pub async fn setup_stable(prefix: &str, rps: u32, controller_args: &[&str], v1: Value) -> Env {
    let ns = TestNamespace::new(prefix).await;
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "fraud", "namespace": ns.name},
        "spec": {"parentRefs": [{"name": "public"}],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                            "backendRefs": [{"name": "fraud-stable", "port": 8080, "weight": 100}]}]}
    });
    kubectl_ok(&["apply", "--server-side", "--field-manager", "platform-team", "-f", "-"], Some(&route.to_string()));
    let kubeconfig = service_account_kubeconfig(&ns.name);
    let controller = ControllerProc::start(&ns.name, &kubeconfig, controller_args);
    let client = client().await;
    let harness = Harness::start(client.clone(), &ns.name, "fraud", "fraud", rps);
    let stable = v1["spec"]["model"]["version"].as_str().expect("a version").to_string();
    gitops_apply(&ns.name, &v1);
    let env = Env { ns, client, controller, harness, kubeconfig };
    wait_phase(&env, Duration::from_secs(60), |s| s.phase == Some(Phase::Idle)).await;
    wait_for("the stable sidecar", Duration::from_secs(30), || async {
        env.harness.running_versions().contains(&stable).then_some(())
    })
    .await;
    env
}

pub async fn get(env: &Env) -> ModelRollout {
    Api::<ModelRollout>::namespaced(env.client.clone(), &env.ns.name).get("fraud").await.unwrap()
}

/// Changes the spec in a way that does not change the decision (the Prometheus query timeout,
/// from 5s to 6s and back: a field the GitOps manifest leaves alone, so its next apply does not
/// conflict), then waits until the controller has reconciled that generation: whatever the status
/// says afterwards, the controller decided it with the spec as it stands.
pub async fn reconciled(env: &Env) -> ModelRollout {
    let now = get(env).await;
    let timeout = if now.spec.analysis.prometheus.timeout.as_str() == "6s" { "5s" } else { "6s" };
    let patch = json!({"spec": {"analysis": {"prometheus": {"timeout": timeout}}}});
    let patched = Api::<ModelRollout>::namespaced(env.client.clone(), &env.ns.name)
        .patch("fraud", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    let generation = patched.metadata.generation;
    wait_phase(env, Duration::from_secs(30), |s| s.observed_generation >= generation).await
}

pub async fn wait_phase(
    env: &Env,
    timeout: Duration,
    mut ok: impl FnMut(&modelrollout::api::ModelRolloutStatus) -> bool,
) -> ModelRollout {
    let start = Instant::now();
    loop {
        let mr = get(env).await;
        if let Some(s) = &mr.status
            && ok(s)
        {
            return mr;
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out; status: {}\ncontroller log tail:\n{}",
                serde_json::to_string_pretty(&mr.status).unwrap(),
                env.controller
                    .logs()
                    .lines()
                    .rev()
                    .take(8)
                    .map(|l| l.chars().take(400).collect::<String>())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The route's first rule, with backendRefs reduced to name/port/weight (the CRD defaults group/kind).
pub async fn route_rule(env: &Env) -> Value {
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &env.ns.name, &modelrollout::routers::http_route_resource());
    let mut rule = api.get("fraud").await.unwrap().data["spec"]["rules"][0].clone();
    if let Some(refs) = rule["backendRefs"].as_array_mut() {
        for r in refs {
            *r = json!({"name": r["name"], "port": r["port"], "weight": r["weight"]});
        }
    }
    rule
}

pub async fn deployment(env: &Env, name: &str) -> Option<Deployment> {
    Api::<Deployment>::namespaced(env.client.clone(), &env.ns.name).get_opt(name).await.unwrap()
}

pub async fn replicas(env: &Env, name: &str) -> Option<i32> {
    deployment(env, name).await.and_then(|d| d.spec?.replicas)
}

/// A webhook receiver on 127.0.0.1: answers 500 to the first `fail_first` requests (to exercise
/// retries), then 200, and keeps every JSON body it accepted.
pub struct Webhook {
    pub url: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    _server: TestServer,
}

impl Webhook {
    pub async fn start(fail_first: usize) -> Self {
        let received: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let store = received.clone();
        let server = TestServer::start(move |body| {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < fail_first {
                return (500, String::new());
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                store.lock().unwrap().push(v);
            }
            (200, String::new())
        })
        .await;
        Self { url: format!("http://{}/hook", server.addr), received, _server: server }
    }

    pub fn events(&self) -> Vec<String> {
        self.received.lock().unwrap().iter().filter_map(|v| v["event"].as_str().map(str::to_string)).collect()
    }
}

/// Gating webhooks' server (preRollout, confirmPromotion, rollback, postRollout at one URL): each
/// kind answers the status the test sets for it (`set`), and every payload is kept.
pub struct GatingHooks {
    pub url: String,
    codes: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u16>>>,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    _server: TestServer,
}

impl GatingHooks {
    pub async fn start() -> Self {
        let codes: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u16>>> = Default::default();
        let received: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
        let (c, r) = (codes.clone(), received.clone());
        let server = TestServer::start(move |body| {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let kind = v["type"].as_str().unwrap_or_default().to_string();
            r.lock().unwrap().push(v);
            let code = c.lock().unwrap().get(&kind).copied().unwrap_or(200);
            (code, format!("{kind} answered {code}"))
        })
        .await;
        Self { url: format!("http://{}/gate", server.addr), codes, received, _server: server }
    }

    /// What `kind` (e.g. `preRollout`) answers from now on.
    pub fn set(&self, kind: &str, code: u16) {
        self.codes.lock().unwrap().insert(kind.to_string(), code);
    }

    /// The payloads of `kind` received so far.
    pub fn of(&self, kind: &str) -> Vec<Value> {
        self.received.lock().unwrap().iter().filter(|v| v["type"] == kind).cloned().collect()
    }

    /// One hook of each kind, as `spec.webhooks`.
    pub fn spec(&self) -> Value {
        let hook = |name: &str, kind: &str| json!({"name": name, "type": kind, "url": self.url, "timeout": "2s", "retries": 1, "metadata": {"suite": "e2e"}});
        json!([
            hook("smoke-tests", "preRollout"),
            hook("change-window", "confirmPromotion"),
            hook("kill-switch", "rollback"),
            hook("report", "postRollout")
        ])
    }
}
