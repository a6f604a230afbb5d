//! The real node (tests/node/node.sh): pods that run this project's own images in containerd,
//! the controller installed by its Helm chart as a pod, models from a model-store Service and from
//! an OCI image volume, Prometheus finding the pods by kubernetes_sd.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

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

/// A golden set from the model store (the models image serves them), named by its digest.
pub fn golden_from_store(file: &str) -> serde_json::Value {
    use sha2::Digest;
    let bytes = std::fs::read(root().join("models").join(file)).unwrap();
    json!({"uri": format!("{MODEL_STORE}/{file}"), "sha256": hex::encode(sha2::Sha256::digest(&bytes))})
}

/// When a failure happened, relative to the pod's deletion (for the assertion message).
pub fn since(deleted_at: &std::sync::Mutex<Option<std::time::Instant>>) -> String {
    match *deleted_at.lock().unwrap() {
        Some(t) => format!("[{} ms after the delete]", t.elapsed().as_millis()),
        None => "[before the delete]".into(),
    }
}

pub fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `ip:port` of the one Ready pod of `version` (its sidecar's port).
pub async fn candidate_pod(ns: &str, version: &str) -> String {
    wait_for(&format!("the Ready pod of {version}"), Duration::from_secs(60), || async {
        let pods = pods_now(ns, &format!("modelrollout.dev/version={version}")).await;
        let ready: Vec<_> = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .collect();
        let [pod] = ready.as_slice() else { return None };
        let ip = pod.status.as_ref()?.pod_ip.clone()?;
        let port = pod.spec.as_ref()?.containers.first()?.ports.as_ref()?.first()?.container_port;
        Some(format!("{ip}:{port}"))
    })
    .await
}
