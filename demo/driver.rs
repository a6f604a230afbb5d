//! The demo's helper: `demo-driver manifest v1|v2|bad` prints the fraud example adapted to the
//! local demo (the real node's selector and toleration, stages of seconds instead of minutes; the
//! model comes from the models image, as in the example); `demo-driver traffic NS` sends live
//! traffic with label feedback to the versions' Services (the same load generator the real-node
//! end-to-end tests use), until Ctrl-C or SIGTERM.

use modelrollout_e2e::harness::Harness;
use modelrollout_e2e::node::{from_image, on_real_node};
use modelrollout_e2e::root;
use serde_json::{Value, json};

fn manifest(which: &str) -> Value {
    let (version, file) = match which {
        "v1" => ("v1", "fraud-v1.onnx"),
        "v2" => ("v2", "fraud-v2.onnx"),
        "bad" => ("v2-bad-fpr", "fraud-v2-bad-fpr.onnx"),
        other => panic!("unknown model {other}: v1, v2 or bad"),
    };
    let text = std::fs::read_to_string(root().join("examples/fraud-gateway-api.yaml")).expect("the example");
    let mut m: Value = serde_yaml::from_str(&text).expect("the example parses");
    let model = &mut m["spec"]["model"];
    model["version"] = json!(version);
    model["artifact"] = from_image(file);
    let spec = &mut m["spec"];
    let (selector, tolerations) = on_real_node();
    spec["workload"] =
        json!({"replicas": 1, "progressDeadline": "120s", "nodeSelector": selector, "tolerations": tolerations});
    spec["trafficRouting"] =
        json!({"gatewayAPI": {"httpRoute": "fraud", "create": true, "parentRefs": [{"name": "public"}]}});
    // The example's plan with demo timings: seconds instead of minutes, fewer samples per gate.
    spec["stages"] = json!([
        {"name": "shadow", "weight": 0, "mirrorPercent": 100, "minDuration": "15s"},
        {"name": "canary-5", "weight": 5, "minDuration": "20s"},
        {"name": "canary-25", "weight": 25, "minDuration": "20s"},
        {"name": "full", "weight": 100, "minDuration": "15s"}
    ]);
    spec["analysis"]["interval"] = json!("5s");
    spec["analysis"]["gates"] = json!({
        "errorRate": {"max": 0.002, "minSamples": 50},
        "latencyP95": {"max": 120, "minSamples": 50},
        "captureRate": {"maxBelowStable": 0.1, "minSamples": 10},
        "falsePositiveRate": {"maxAboveStable": 0.05, "minSamples": 20}
    });
    spec["rollback"] =
        json!({"scaleDownDelay": "5s", "previousStableScaleDownDelay": "30s", "onInconclusive": "Pause"});
    spec.as_object_mut().unwrap().remove("notifications");
    m
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["manifest", which] => print!("{}", serde_yaml::to_string(&manifest(which)).unwrap()),
        ["traffic", ns] => {
            let client = kube::Client::try_default().await.expect("KUBECONFIG from cluster.sh");
            let harness = Harness::start_on_node(client, ns, "fraud", "fraud", 200);
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            harness.shutdown().await;
        }
        _ => {
            eprintln!("usage: demo-driver manifest v1|v2|bad | demo-driver traffic NAMESPACE");
            std::process::exit(2);
        }
    }
}
