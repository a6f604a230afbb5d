//! The real node (tests/node/node.sh): pods that run this project's own images in containerd,
//! the controller installed by its Helm chart as a pod, models from a model-store Service and from
//! an OCI image volume, Prometheus finding the pods by kubernetes_sd.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use modelrollout::api::{ModelRollout, ModelRolloutStatus};
use serde_json::{Value, json};

use crate::harness::{Harness, chart_release};
use crate::scenario::{contract, default_gates, gitops_apply};
use crate::*;

pub const NODE: &str = "real-node-0";
/// The images scripts/build-images.sh builds from the shipped Dockerfiles.
pub const CONTROLLER_IMAGE: &str = "ghcr.io/modelrollout/controller";
pub const MODELS_IMAGE: &str = "ghcr.io/modelrollout/models:0.1.0";
/// Debian's busybox-static, the model store's file server (a test image).
pub const BUSYBOX_IMAGE: &str = "localhost/modelrollout/busybox:test";
/// The model store's base URL, as pods resolve it through CoreDNS.
pub const MODEL_STORE: &str = "http://model-store.models.svc.cluster.local:8080";
/// Prometheus as pods reach it (cluster.sh's Service in front of the host's Prometheus).
pub const IN_CLUSTER_PROMETHEUS: &str = "http://prometheus.monitoring.svc.cluster.local:9090";

/// Fails the test, saying how to run it, unless the cluster has its real node.
pub fn require_real_node() {
    assert_eq!(
        std::env::var("MODELROLLOUT_REAL_NODE").as_deref(),
        Ok("1"),
        "these tests need the real node: run them through `bash tests/run.sh` (as root), which starts the \
         cluster with MODELROLLOUT_REAL_NODE=1"
    );
}

/// `kubectl get node real-node-0 -o wide`, one line: kubelet version, runtime, addresses.
pub fn node_line() -> String {
    kubectl_ok(&["get", "node", NODE, "-o", "wide"], None)
}

/// What a pod spec needs to run on the real node (it is tainted so kwok-only tests stay off it).
pub fn on_real_node() -> (Value, Value) {
    (
        json!({"type": "real"}),
        json!([{"key": "modelrollout.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}]),
    )
}

/// examples/model-store.yaml, as shipped, except for the server image (Debian's busybox) and the
/// real node's selector and toleration. Applied once; every test shares it.
pub async fn ensure_model_store() {
    let text = std::fs::read_to_string(root().join("examples/model-store.yaml")).unwrap();
    let (selector, tolerations) = on_real_node();
    for doc in text.split("\n---\n") {
        let mut v: Value = serde_yaml::from_str(doc).unwrap();
        if v["kind"] == "Deployment" {
            let spec = &mut v["spec"]["template"]["spec"];
            spec["containers"][0]["image"] = json!(BUSYBOX_IMAGE);
            spec["nodeSelector"] = selector.clone();
            spec["tolerations"] = tolerations.clone();
        }
        kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&v.to_string()));
    }
    wait_for("the model store Ready", Duration::from_secs(120), || async {
        let d = Api::<Deployment>::namespaced(client().await, "models").get("model-store").await.ok()?;
        (d.status?.ready_replicas.unwrap_or(0) >= 1).then_some(())
    })
    .await;
}

/// `helm install` of the chart in `ns`, with the controller image built here, on the real node,
/// watching `ns` only, querying Prometheus through its in-cluster Service. Waits for the pod.
pub async fn helm_install_controller(ns: &str) {
    let chart = root().join("charts/modelrollout");
    let release = chart_release(ns);
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
        "--wait",
        "--timeout",
        "180s",
    ]);
    let pods = running_pods(ns, "app.kubernetes.io/component=controller").await;
    assert!(!pods.is_empty());
}

/// The pods matching `selector` in `ns`, once all of them run on the real node.
pub async fn running_pods(ns: &str, selector: &str) -> Vec<Pod> {
    wait_for(&format!("pods {selector} running on {NODE}"), Duration::from_secs(120), || async {
        let pods =
            Api::<Pod>::namespaced(client().await, ns).list(&ListParams::default().labels(selector)).await.ok()?;
        let all_running = !pods.items.is_empty()
            && pods.items.iter().all(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE)
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            });
        all_running.then_some(pods.items)
    })
    .await
}

/// The pods matching `selector` in `ns` now, none awaited.
pub async fn pods_now(ns: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client().await, ns)
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// The controller pod's log (`kubectl logs`: the apiserver reads it from the kubelet).
pub fn controller_logs(ns: &str) -> String {
    let out = kubectl(&["logs", "-n", ns, "-l", "app.kubernetes.io/component=controller", "--tail", "40"], None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fraud rollout for the real node: 1 replica per version (the load generator posts each
/// label to the pod that answered, through its version's Service), `artifact` as given.
pub fn manifest(version: &str, artifact: Value, stages: Value) -> Value {
    let (selector, tolerations) = on_real_node();
    json!({
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": "fraud"},
        "spec": {
            "model": {"name": "fraud", "version": version, "artifact": artifact, "contract": contract(None)},
            "workload": {"replicas": 1, "progressDeadline": "120s", "nodeSelector": selector, "tolerations": tolerations},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud"}},
            "stages": stages,
            "analysis": {"interval": "3s", "failureLimit": 2, "inconclusiveLimit": 8, "gates": default_gates()},
            "rollback": {"scaleDownDelay": "2s", "previousStableScaleDownDelay": "3s"}
        }
    })
}

/// A model from the model store (downloaded by the sidecar).
pub fn from_store(file: &str) -> Value {
    json!({"uri": format!("{MODEL_STORE}/{file}"), "sha256": model_sha(file)})
}

/// A model from the models image, mounted as an image volume.
pub fn from_image(file: &str) -> Value {
    json!({"uri": format!("oci://{MODELS_IMAGE}"), "path": file, "sha256": model_sha(file)})
}

/// One test's namespace with the chart's controller and the fraud rollout's v1 stable on the real
/// node, and nothing sending traffic yet.
pub struct RolloutEnv {
    pub ns: TestNamespace,
    pub client: Client,
    /// The ModelRollout's name.
    pub name: String,
}

impl RolloutEnv {
    /// The namespace, the chart's controller, `route` (a user-owned HTTPRoute, applied by the
    /// platform team's field manager, when given) and `v1` (a ModelRollout manifest, applied by
    /// GitOps); returns once v1 is Idle and its pods run.
    pub async fn setup(prefix: &str, route: impl FnOnce(&str) -> Option<Value>, v1: Value) -> Self {
        Self::setup_named(prefix, "fraud", route, v1).await
    }

    /// [`RolloutEnv::setup`] for a rollout named `name`.
    pub async fn setup_named(prefix: &str, name: &str, route: impl FnOnce(&str) -> Option<Value>, v1: Value) -> Self {
        require_real_node();
        ensure_model_store().await;
        let ns = TestNamespace::new(prefix).await;
        helm_install_controller(&ns.name).await;
        if let Some(route) = route(&ns.name) {
            kubectl_ok(
                &["apply", "--server-side", "--field-manager", "platform-team", "-f", "-"],
                Some(&route.to_string()),
            );
        }
        let client = client().await;
        gitops_apply(&ns.name, &v1);
        let env = Self { ns, client, name: name.to_string() };
        env.wait(Duration::from_secs(180), "v1 stable", |s| s.phase == Some(modelrollout::api::Phase::Idle)).await;
        running_pods(&env.ns.name, "modelrollout.dev/version=v1").await;
        env
    }

    pub async fn get(&self) -> ModelRollout {
        Api::<ModelRollout>::namespaced(self.client.clone(), &self.ns.name).get(&self.name).await.unwrap()
    }

    /// Waits until the status satisfies `ok`; on timeout shows the status and the controller pod's log.
    pub async fn wait(
        &self,
        timeout: Duration,
        what: &str,
        mut ok: impl FnMut(&ModelRolloutStatus) -> bool,
    ) -> ModelRollout {
        let start = Instant::now();
        loop {
            let mr = self.get().await;
            if let Some(s) = &mr.status
                && ok(s)
            {
                return mr;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out waiting for {what}; status: {}\ncontroller pod log tail:\n{}",
                    serde_json::to_string_pretty(&mr.status).unwrap(),
                    controller_logs(&self.ns.name)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A [`RolloutEnv`] with a user-owned HTTPRoute (not attached to any Gateway) and the harness's
/// load generator sending to the versions' Services in the route's proportions.
pub struct NodeEnv {
    pub env: RolloutEnv,
    pub harness: Harness,
}

impl std::ops::Deref for NodeEnv {
    type Target = RolloutEnv;
    fn deref(&self) -> &RolloutEnv {
        &self.env
    }
}

impl NodeEnv {
    pub async fn setup(prefix: &str, rps: u32, v1: Value) -> Self {
        let route = |ns: &str| {
            Some(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "fraud", "namespace": ns},
                "spec": {"parentRefs": [{"name": "public"}],
                         "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                    "backendRefs": [{"name": "fraud-stable", "port": 8080, "weight": 100}]}]}
            }))
        };
        let env = RolloutEnv::setup(prefix, route, manifest("v1", v1, crate::scenario::four_stages(6))).await;
        let harness = Harness::start_on_node(env.client.clone(), &env.ns.name, "fraud", "fraud", rps);
        Self { env, harness }
    }
}
