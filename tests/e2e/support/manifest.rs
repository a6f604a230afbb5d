//! The ModelRollout manifests the suites and the demo apply, from one builder ([`Manifest`]); the
//! artifacts, stages and gates they are made of; and applying one as GitOps does.

use serde_json::{Value, json};

use crate::load::users::{KEY_HEADER, SHARE_PERCENT};
use crate::real_node::{MODEL_STORE, MODELS_IMAGE, on_real_node};
use crate::*;

/// A ModelRollout manifest as a GitOps repository holds it: a base (the fraud rollout as the suites
/// run it, or an example as shipped), then what a test changes. The one builder the suites and the
/// demo use.
#[derive(Clone, Debug)]
pub struct Manifest(Value);

impl Manifest {
    /// The fraud rollout as the kwok suites run it: 2 replicas, the platform team's HTTPRoute
    /// `fraud`, 3 s analyses with the suites' gates, the four stages of 5 s, scale-downs within
    /// seconds.
    pub fn fraud(version: &str, artifact: Value) -> Self {
        Self(json!({
            "apiVersion": "modelrollout.dev/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": "fraud"},
            "spec": {
                "model": {"name": "fraud", "version": version, "artifact": artifact, "contract": contract(None)},
                "workload": {"replicas": 2, "progressDeadline": "60s"},
                "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud"}},
                "stages": four_stages(5),
                "analysis": {"interval": "3s", "failureLimit": 2, "inconclusiveLimit": 6, "gates": default_gates()},
                "rollback": {"scaleDownDelay": "2s", "previousStableScaleDownDelay": "3s"}
            }
        }))
    }

    /// [`Manifest::fraud`] on the real node: one replica per version (the load generator posts
    /// each label to the pod that answered, through its version's Service), a deadline for image
    /// pulls and model loads, and room for 8 inconclusive analyses on two shared cores.
    pub fn fraud_on_node(version: &str, artifact: Value) -> Self {
        let mut m = Self::fraud(version, artifact).on_real_node();
        m.0["spec"]["analysis"]["inconclusiveLimit"] = json!(8);
        m
    }

    /// `examples/<file>` as shipped.
    pub fn example(file: &str) -> Self {
        let text = std::fs::read_to_string(root().join("examples").join(file)).expect("the example");
        Self(serde_yaml::from_str(&text).expect("the example parses"))
    }

    pub fn version(mut self, version: &str) -> Self {
        self.0["spec"]["model"]["version"] = json!(version);
        self
    }

    pub fn artifact(mut self, artifact: Value) -> Self {
        self.0["spec"]["model"]["artifact"] = artifact;
        self
    }

    /// Served on the real node: one replica, its selector and toleration, 120 s to become Ready.
    pub fn on_real_node(mut self) -> Self {
        let (selector, tolerations) = on_real_node();
        self.0["spec"]["workload"] =
            json!({"replicas": 1, "progressDeadline": "120s", "nodeSelector": selector, "tolerations": tolerations});
        self
    }

    pub fn stages(mut self, stages: Value) -> Self {
        self.0["spec"]["stages"] = stages;
        self
    }

    pub fn gates(mut self, gates: Value) -> Self {
        self.0["spec"]["analysis"]["gates"] = gates;
        self
    }

    pub fn build(self) -> Value {
        self.0
    }
}

/// The committed reference distribution beside a model file (`fraud-v2.onnx` ->
/// `fraud-v2.reference.json`), if there is one.
fn reference_of(file: &str) -> Option<String> {
    let name = format!("{}.reference.json", file.strip_suffix(".onnx")?);
    root().join("models").join(&name).exists().then_some(name)
}

/// An artifact with its reference (`reference(name)` says where the reference file is), when the
/// model has one.
fn with_reference(mut artifact: Value, file: &str, reference: impl Fn(&str) -> Value) -> Value {
    if let Some(name) = reference_of(file) {
        let mut r = reference(&name);
        r["sha256"] = json!(model_sha(&name));
        artifact["reference"] = r;
    }
    artifact
}

fn local_path(file: &str) -> String {
    root().join("models").join(file).canonicalize().unwrap().display().to_string()
}

/// A model file of models/ as a local path (the kwok suites' sidecars are local processes).
pub fn local_file(file: &str) -> Value {
    with_reference(json!({"uri": local_path(file), "sha256": model_sha(file)}), file, |r| json!({"uri": local_path(r)}))
}

/// A model from the model store (downloaded by the sidecar).
pub fn from_store(file: &str) -> Value {
    with_reference(
        json!({"uri": format!("{MODEL_STORE}/{file}"), "sha256": model_sha(file)}),
        file,
        |r| json!({"uri": format!("{MODEL_STORE}/{r}")}),
    )
}

/// A model from the models image, mounted as an image volume.
pub fn from_image(file: &str) -> Value {
    with_reference(
        json!({"uri": format!("oci://{MODELS_IMAGE}"), "path": file, "sha256": model_sha(file)}),
        file,
        |r| json!({"path": r}),
    )
}

/// The fraud models' data contract (models/fraud.contract.yaml), optionally needing one more input.
pub fn contract(extra: Option<&str>) -> Value {
    let text = std::fs::read_to_string(root().join("models/fraud.contract.yaml")).unwrap();
    let mut contract: Value = serde_yaml::from_str(&text).unwrap();
    if let Some(name) = extra {
        contract["inputs"].as_array_mut().unwrap().push(json!({"name": name, "type": "float"}));
    }
    contract
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

/// The sha256 the minimal manifest names (any well-formed digest does for the apiserver).
pub const MINIMAL_SHA: &str = "0f9100e383817d9059ffcac9fe402244ff564d86026dfecd23a7608e318e480d";

/// The smallest valid rollout: the fraud model, one input, one gate (the smoke suite derives its
/// invalid manifests from it).
pub fn minimal() -> Value {
    json!({
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": "fraud"},
        "spec": {
            "model": {
                "name": "fraud",
                "version": "v2",
                "artifact": {"uri": "/models/fraud-v2.onnx", "sha256": MINIMAL_SHA},
                "contract": {"inputs": [{"name": "amount", "type": "float", "min": 0, "max": 20000}]}
            },
            "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud"}},
            "analysis": {"gates": {"errorRate": {"max": 0.002}}}
        }
    })
}

/// examples/ranking-scorer.yaml as shipped, but for: the version and model file, one replica on the
/// real node, this suite's durations (5 s analyses, stages of seconds), and latency and sample
/// floors for two shared cores. The guardrail, the reward and the match are the example's own.
pub fn ranking_experiment(version: &str, file: &str, experiment_secs: u32) -> Value {
    let mut v =
        Manifest::example("ranking-scorer.yaml").version(version).artifact(from_image(file)).on_real_node().build();
    let spec = &mut v["spec"];
    spec["rollback"] = json!({"scaleDownDelay": "2s", "previousStableScaleDownDelay": "3s"});
    let stages = spec["stages"].as_array_mut().unwrap();
    assert_eq!(
        stages[0]["match"]["keyShare"],
        json!({"header": KEY_HEADER, "percent": SHARE_PERCENT}),
        "the example's match"
    );
    stages[0]["minDuration"] = json!(format!("{experiment_secs}s"));
    stages[0]["maxDuration"] = json!("240s");
    stages[1]["minDuration"] = json!("6s");
    let analysis = &mut spec["analysis"];
    assert_eq!(analysis["failureLimit"], 1, "one guardrail breach ends the example's experiment");
    // 5 s, the least the CRD admits with a reward: its windows (each since the last analysis)
    // must hold a few of Prometheus's 1 s scrapes.
    analysis["interval"] = json!("5s");
    analysis["inconclusiveLimit"] = json!(10);
    let gates = &mut analysis["gates"];
    gates["latencyP95"] = json!({"max": 1000, "minSamples": 20});
    gates["errorRate"] = json!({"max": 0.01, "minSamples": 20});
    let guard = &mut gates["custom"][0];
    assert_eq!((&guard["name"], &guard["maxBelowStable"]), (&json!("clickThrough"), &json!(0.05)));
    guard["minSamples"] = json!(100);
    assert_eq!(analysis["reward"]["direction"], "Higher");
    // The example's load check of full pages (50 candidates a request at 50 a second), for 10 s
    // instead of a minute, its p95 limit widened for two shared cores as every real-node latency
    // limit is: alone a run measured 7.45 ms against the example's 50 ms, but in CI (both tests of
    // the suite at once, each with its users) 184 ms, failing a candidate for the machine's load.
    let load = &mut v["spec"]["acceptance"]["load"];
    assert_eq!((&load["rate"], &load["maxLatencyP95"]), (&json!(50), &json!("50ms")), "the example's load check");
    load["duration"] = json!("10s");
    load["maxLatencyP95"] = json!("1000ms");
    v
}

pub fn demo(which: &str) -> Value {
    let (version, file) = match which {
        "v1" => ("v1", "fraud-v1.onnx"),
        "v2" => ("v2", "fraud-v2.onnx"),
        "bad" => ("v2-bad-fpr", "fraud-v2-bad-fpr.onnx"),
        other => panic!("unknown model {other}: v1, v2 or bad"),
    };
    let mut m =
        Manifest::example("fraud-gateway-api.yaml").version(version).artifact(from_image(file)).on_real_node().build();
    let spec = &mut m["spec"];
    // The route is the rollout's own, attached to the cluster's Gateway (tests/gateway/gateway.sh).
    let gateway = cluster_env("MODELROLLOUT_GATEWAY_REF");
    let (gw_ns, gw_name) = gateway.split_once('/').expect("namespace/name");
    spec["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "fraud", "create": true,
        "parentRefs": [{"name": gw_name, "namespace": gw_ns}]}});
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

/// `kubectl apply --server-side` of `obj` in `ns`, as its output (the smoke suite reads refusals).
pub fn apply_json(ns: &str, obj: &Value) -> std::process::Output {
    kubectl(&["apply", "--server-side", "-n", ns, "-f", "-"], Some(&obj.to_string()))
}

/// examples/fraud-plan.yaml as shipped, but for: the version and model file, one replica on the
/// real node, and time: every day of the plan a minute or less (shadow 3 days -> 40 s, 24 hours ->
/// 40 s and 50 s, 12 alert-free hours -> 25 s), analyses every 20 s, and each gate's `minSamples`
/// cut to what 100 requests a second give in such windows; and the latency limits, widened for two
/// shared cores as every real-node test's are (a first run measured stable's p95 at 37 ms and the
/// mirrored candidate's at 54 ms, with two plans and Envoy on the machine: CPU contention, not
/// the model). Every other gate, limit, ratio, comparison and judge, the stages' own gate sets
/// and the alert selector are the example's.
///
/// Why 20 s: the chargeback KPI is a threshold gate judged per window, at "no more than 10% above
/// v1's". On the clients' rows v1's false-negative share is 0.155 and v2's 0.130 (both models
/// scored on `models/fraud-v1.golden.json`), so the limit, 0.1705, is 0.040 above v2. At 25% a 5 s
/// window holds ~125 candidate labels: the difference's standard error is ~0.037 and one window in
/// seven failed by chance (a CI run rolled v2 back on two in a row). A 20 s window holds ~500
/// candidate and ~1,500 stable labels: standard error ~0.018, the margin 2.2 of them, a window
/// failing by chance ~1.4% of the time and two in a row ~0.02%.
pub fn fraud_plan(version: &str, file: &str) -> Value {
    let mut m = Manifest::example("fraud-plan.yaml").version(version).artifact(from_image(file)).on_real_node().build();
    let spec = &mut m["spec"];
    let stages = spec["stages"].as_array_mut().unwrap();
    let plan: Vec<(&str, &str)> =
        stages.iter().map(|s| (s["name"].as_str().unwrap(), s["minDuration"].as_str().unwrap())).collect();
    assert_eq!(
        plan,
        [("shadow", "72h"), ("canary-5", "24h"), ("canary-25", "24h"), ("full", "1h")],
        "the example's plan"
    );
    for (stage, secs) in stages.iter_mut().zip([40, 40, 50, 10]) {
        stage["minDuration"] = json!(format!("{secs}s"));
    }
    assert_eq!(stages[2]["alertFree"], json!({"matchLabels": {"team": "fraud"}, "for": "12h"}));
    stages[2]["alertFree"]["for"] = json!("25s");
    let scale = |gate: &mut Value, samples: u64| {
        if gate.get("minSamples").is_some() {
            gate["minSamples"] = json!(samples);
        }
    };
    let shadow = &mut stages[0]["gates"]["replace"];
    scale(&mut shadow["precision"], 40);
    scale(&mut shadow["latencyP95"], 50);
    assert_eq!(shadow["latencyP95"]["maxAboveStable"], 10);
    shadow["latencyP95"]["maxAboveStable"] = json!(100);
    let added = &mut stages[2]["gates"]["add"];
    scale(&mut added["inputDrift"], 100);
    scale(&mut added["custom"][0], 50);
    let analysis = &mut spec["analysis"];
    assert_eq!(analysis["interval"], "1m");
    analysis["interval"] = json!("20s");
    // 5% of 100 requests a second is 100 in a 20 s window.
    scale(&mut analysis["gates"]["errorRate"], 20);
    scale(&mut analysis["gates"]["latencyP95"], 20);
    assert_eq!(analysis["gates"]["latencyP95"]["max"], 120);
    analysis["gates"]["latencyP95"]["max"] = json!(1000);
    spec["rollback"]["scaleDownDelay"] = json!("2s");
    spec["rollback"]["previousStableScaleDownDelay"] = json!("5s");
    m
}

/// The host name the toxicity example's created route answers for on the shared Gateway.
pub const TOXICITY_HOST: &str = "toxicity.models.test";

/// examples/toxicity-realtime.yaml as shipped, but for: the version and model file, one replica on
/// the real node, the route on the cluster's Gateway for [`TOXICITY_HOST`] (the example names the
/// platform's `public-gateway`), and time: stages of 15-25 s instead of minutes and hours, 5 s
/// analyses, the load check 10 s instead of a minute, and sample floors cut to what 100 comments a
/// second give in 5 s windows, and the load check's p95 limit widened for two shared cores (below).
/// The contract, the published API, the gates' limits, the golden set and its AUC limits, and the
/// load check's rate and error limit are the example's.
pub fn toxicity_example(version: &str, file: &str) -> Value {
    let mut m =
        Manifest::example("toxicity-realtime.yaml").version(version).artifact(from_image(file)).on_real_node().build();
    let spec = &mut m["spec"];
    let (_, gw_ns, gw_name) = crate::load::clients::gateway();
    let routing = &mut spec["trafficRouting"]["gatewayAPI"];
    assert_eq!(routing["create"], true, "the example's route is the rollout's own");
    routing["parentRefs"] = json!([{"name": gw_name, "namespace": gw_ns}]);
    routing["hostnames"] = json!([TOXICITY_HOST]);
    let stages = spec["stages"].as_array_mut().unwrap();
    let plan: Vec<(&str, i64, i64)> = stages
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["weight"].as_i64().unwrap(), s["mirrorPercent"].as_i64().unwrap_or(0)))
        .collect();
    assert_eq!(
        plan,
        [("shadow", 0, 100), ("canary-5", 5, 0), ("canary-50", 50, 0), ("full", 100, 0)],
        "the example's plan"
    );
    for (stage, secs) in stages.iter_mut().zip([20, 25, 20, 10]) {
        stage["minDuration"] = json!(format!("{secs}s"));
    }
    let analysis = &mut spec["analysis"];
    assert_eq!(analysis["interval"], "30s");
    analysis["interval"] = json!("5s");
    analysis["inconclusiveLimit"] = json!(12);
    // 5% of 100 comments a second is 25 in a 5 s window.
    let gates = &mut analysis["gates"];
    gates["latencyP95"]["minSamples"] = json!(20);
    gates["errorRate"]["minSamples"] = json!(20);
    gates["custom"][0]["minSamples"] = json!(20);
    let acceptance = &mut spec["acceptance"];
    assert_eq!(acceptance["goldenSet"]["auc"], json!({"min": 0.92, "maxBelowStable": 0.01}));
    assert_eq!(
        acceptance["load"],
        json!({"rate": 200, "duration": "60s", "maxLatencyP95": "80ms", "maxErrorRate": 0.001})
    );
    acceptance["load"]["duration"] = json!("10s");
    // The load check's p95 limit widened for two shared cores, as every real-node latency limit
    // is: runs measured 0.66 ms alone and 4.95 ms beside the fraud plans against the example's
    // 80 ms, but CI 189 ms (the plans suite's other test, Envoy and the mirror on the same cores),
    // failing the candidate for the machine's load. The measured p95 is printed (TOXICITY_ACCEPTANCE).
    acceptance["load"]["maxLatencyP95"] = json!("1000ms");
    acceptance["goldenSet"]["artifact"] = crate::real_node::golden_from_store("toxicity-v2.golden.json");
    spec["rollback"] = json!({"scaleDownDelay": "2s", "previousStableScaleDownDelay": "5s"});
    m
}
