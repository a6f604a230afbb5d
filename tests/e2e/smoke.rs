//! Smoke tests on the real control plane: the CRD's server-side validation, examples, kwok pods,
//! kube-rs against ModelRollouts, Gateway API routes, and Prometheus scraping.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};
use modelrollout::api::{ModelRollout, ModelRolloutStatus, Phase};
use modelrollout_e2e::*;
use serde_json::json;

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn every_example_is_accepted() {
    let ns = TestNamespace::new("examples").await;
    let dir = root().join("examples");
    let mut applied = 0;
    // Examples of one rollout (the fraud model's, routed three ways, and its team's plan) share
    // its name: each applies over the last.
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // The model store (examples/model-store.yaml) is the real-node tests' to apply.
        let rollout = std::fs::read_to_string(&path).is_ok_and(|t| t.contains("kind: ModelRollout"));
        if path.extension().is_some_and(|e| e == "yaml") && rollout {
            let out = kubectl_ok(&["apply", "--server-side", "-n", &ns.name, "-f", path.to_str().unwrap()], None);
            assert!(out.contains("serverside-applied"), "{}: {out}", path.display());
            applied += 1;
            let doc: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            names.insert(doc["metadata"]["name"].as_str().unwrap().to_string());
        }
    }
    assert!(applied >= 6, "expected the six examples, applied {applied}");
    let api: Api<ModelRollout> = Api::namespaced(client().await, &ns.name);
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), names.len(), "{names:?}");
    // The apiserver filled in the schema defaults.
    let fraud = api.get("fraud").await.unwrap();
    assert_eq!(fraud.spec.workload.progress_deadline.as_str(), "10m");
    assert_eq!(fraud.spec.analysis.gates.error_rate.as_ref().unwrap().min_samples, 500);
    ns.delete().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn invalid_model_rollouts_are_rejected_naming_the_field() {
    let ns = TestNamespace::new("invalid").await;
    let accepted = apply_json(&ns.name, &minimal());
    assert!(accepted.status.success(), "the valid base is accepted: {}", String::from_utf8_lossy(&accepted.stderr));

    type Mutation = fn(&mut serde_json::Value);
    let cases: Vec<(&str, Mutation, &[&str])> = vec![
        (
            "a weight of 150",
            |v| v["spec"]["stages"] = json!([{"name": "a", "weight": 5}, {"name": "b", "weight": 150}]),
            &["spec.stages[1].weight", "less than or equal to 100"],
        ),
        (
            "stage weights going down",
            |v| {
                v["spec"]["stages"] =
                    json!([{"name": "a", "weight": 25}, {"name": "b", "weight": 5}, {"name": "c", "weight": 100}])
            },
            &["spec.stages", "strictly increasing"],
        ),
        (
            "stages not ending at 100",
            |v| v["spec"]["stages"] = json!([{"name": "a", "weight": 5}, {"name": "b", "weight": 50}]),
            &["spec.stages", "100%"],
        ),
        (
            "duplicate stage names",
            |v| v["spec"]["stages"] = json!([{"name": "a", "weight": 5}, {"name": "a", "weight": 100}]),
            &["spec.stages", "unique"],
        ),
        (
            "a missing sha256",
            |v| {
                v["spec"]["model"]["artifact"].as_object_mut().unwrap().remove("sha256");
            },
            &["spec.model.artifact.sha256", "Required value"],
        ),
        (
            "a malformed sha256",
            |v| v["spec"]["model"]["artifact"]["sha256"] = json!("ABC123"),
            &["spec.model.artifact.sha256", "should match"],
        ),
        (
            "two traffic routers at once",
            |v| v["spec"]["trafficRouting"]["istio"] = json!({"virtualService": "fraud"}),
            &["spec.trafficRouting", "at most one traffic router"],
        ),
        (
            "an unknown device",
            |v| v["spec"]["model"]["runtime"] = json!({"device": "tpu"}),
            &["spec.model.runtime.device", "Unsupported value"],
        ),
        (
            "a gate with no limit",
            |v| v["spec"]["analysis"]["gates"]["latencyP95"] = json!({"minSamples": 10}),
            &["spec.analysis.gates.latencyP95", "set max, maxAboveStable, maxAboveStableRatio or several"],
        ),
        (
            "a custom gate named like a built-in",
            |v| v["spec"]["analysis"]["gates"]["custom"] = json!([{"name": "errorRate", "query": "up", "max": 1}]),
            &["spec.analysis.gates.custom", "built-in"],
        ),
        (
            "a mirror on a stage with traffic",
            |v| {
                v["spec"]["stages"] =
                    json!([{"name": "a", "weight": 5, "mirrorPercent": 50}, {"name": "b", "weight": 100}])
            },
            &["spec.stages[0].mirrorPercent", "shadow"],
        ),
        (
            "an artifact uri that is neither URL nor absolute path",
            |v| v["spec"]["model"]["artifact"]["uri"] = json!("models/fraud.onnx"),
            &["spec.model.artifact.uri", "http(s) URL, an s3://bucket/key object, an oci:// image reference"],
        ),
        (
            "an oci:// artifact without the file in the image",
            |v| v["spec"]["model"]["artifact"]["uri"] = json!("oci://ghcr.io/modelrollout/models:0.1.0"),
            &["spec.model.artifact.path", "required with an oci:// uri"],
        ),
        (
            "a path with a URL artifact",
            |v| v["spec"]["model"]["artifact"]["path"] = json!("fraud-v2.onnx"),
            &["spec.model.artifact.path", "only with one"],
        ),
        (
            "a cookie match longer than a route's header match can hold",
            |v| {
                v["spec"]["stages"] = json!([
                    {"name": "ab", "weight": 0, "match": {"cookie": {"name": "arm", "value": "b".repeat(2000)}}},
                    {"name": "full", "weight": 100}
                ])
            },
            &["spec.stages[0].match.cookie.value", "1024"],
        ),
        (
            "a gating webhook at the cloud metadata address",
            |v| {
                v["spec"]["webhooks"] = json!([{"name": "steal", "type": "preRollout",
                                               "url": "http://169.254.169.254/latest/meta-data/iam/"}])
            },
            &["spec.webhooks[0].url", "metadata address"],
        ),
        (
            "a notification to a link-local address",
            |v| v["spec"]["notifications"] = json!({"webhooks": [{"url": "http://169.254.10.1/hook"}]}),
            &["spec.notifications.webhooks[0].url", "link-local"],
        ),
        (
            "a sequential gate's confidence of 0",
            |v| {
                v["spec"]["analysis"]["gates"]["errorRate"] =
                    json!({"max": 0.002, "judge": "Sequential", "confidence": 0})
            },
            &["spec.analysis.gates.errorRate.confidence", "0.5"],
        ),
        (
            "a sequential gate's confidence of 0.0",
            |v| {
                v["spec"]["analysis"]["gates"]["errorRate"] =
                    json!({"max": 0.002, "judge": "Sequential", "confidence": 0.0})
            },
            &["spec.analysis.gates.errorRate.confidence", "0.5"],
        ),
        (
            "a sequential gate's confidence of -0.0",
            |v| {
                v["spec"]["analysis"]["gates"]["errorRate"] =
                    json!({"max": 0.002, "judge": "Sequential", "confidence": -0.0})
            },
            &["spec.analysis.gates.errorRate.confidence", "0.5"],
        ),
        (
            "a malformed duration",
            |v| v["spec"]["analysis"]["interval"] = json!("soon"),
            &["spec.analysis.interval", "duration"],
        ),
        (
            "a missing data contract",
            |v| {
                v["spec"]["model"].as_object_mut().unwrap().remove("contract");
            },
            &["spec.model.contract", "Required value"],
        ),
        (
            "an analysis interval of 0s",
            |v| v["spec"]["analysis"]["interval"] = json!("0s"),
            &["spec.analysis.interval", "more than 0s"],
        ),
        (
            "a progress deadline of 0s",
            |v| v["spec"]["workload"] = json!({"progressDeadline": "0s"}),
            &["spec.workload.progressDeadline", "more than 0s"],
        ),
        (
            "a Prometheus timeout of 0s",
            |v| v["spec"]["analysis"]["prometheus"] = json!({"timeout": "0ms"}),
            &["spec.analysis.prometheus.timeout", "more than 0s"],
        ),
        (
            "a capture rate above 1",
            |v| v["spec"]["analysis"]["gates"]["captureRate"] = json!({"min": 5}),
            &["spec.analysis.gates.captureRate", "fraction"],
        ),
        (
            "an error rate above 1",
            |v| v["spec"]["analysis"]["gates"]["errorRate"] = json!({"max": 2}),
            &["spec.analysis.gates.errorRate", "fraction"],
        ),
        (
            "a false-positive rate margin above 1",
            |v| v["spec"]["analysis"]["gates"]["falsePositiveRate"] = json!({"maxAboveStable": 1.5}),
            &["spec.analysis.gates.falsePositiveRate", "fraction"],
        ),
        (
            "no gates and no opt-out",
            |v| v["spec"]["analysis"] = json!({"interval": "1m"}),
            &["spec.analysis.gates", "promoteWithoutGates"],
        ),
        (
            "empty gates and no opt-out",
            |v| v["spec"]["analysis"]["gates"] = json!({"custom": []}),
            &["spec.analysis.gates", "promoteWithoutGates"],
        ),
        (
            "acceptance with replica-ratio routing",
            |v| {
                v["spec"]["trafficRouting"] = json!({"replicaRatio": {}});
                v["spec"]["acceptance"] = json!({"load": {"rate": 10, "duration": "10s", "maxLatencyP95": "50ms"}});
            },
            &["spec.acceptance", "needs a router"],
        ),
        (
            "acceptance with no check",
            |v| v["spec"]["acceptance"] = json!({"timeout": "5m"}),
            &["spec.acceptance.goldenSet", "goldenSet, load or both"],
        ),
        (
            "a golden set with no limit",
            |v| {
                v["spec"]["acceptance"] =
                    json!({"goldenSet": {"artifact": {"uri": "http://store/g.json", "sha256": MINIMAL_SHA}}})
            },
            &["spec.acceptance.goldenSet.auc", "at least one of"],
        ),
        (
            "an AUC limit with neither min nor maxBelowStable",
            |v| {
                v["spec"]["acceptance"] =
                    json!({"goldenSet": {"artifact": {"uri": "http://store/g.json", "sha256": MINIMAL_SHA}, "auc": {}}})
            },
            &["spec.acceptance.goldenSet.auc.min", "min, maxBelowStable or both"],
        ),
        (
            "a load check longer than 10m",
            |v| v["spec"]["acceptance"] = json!({"load": {"rate": 10, "duration": "11m", "maxLatencyP95": "50ms"}}),
            &["spec.acceptance.load.duration", "at most 10m"],
        ),
        (
            "an s3 uri without a key",
            |v| v["spec"]["model"]["artifact"]["uri"] = json!("s3://models"),
            &["spec.model.artifact.uri", "s3://bucket/key"],
        ),
        (
            "credentials for an artifact that is not on s3",
            |v| v["spec"]["model"]["artifact"]["credentialsSecret"] = json!("aws"),
            &["spec.model.artifact.credentialsSecret", "s3://"],
        ),
        (
            "two webhooks of one name",
            |v| {
                let hook = json!({"name": "smoke", "type": "preRollout", "url": "http://hooks/smoke"});
                v["spec"]["webhooks"] = json!([hook, hook]);
            },
            &["spec.webhooks", "Duplicate"],
        ),
        (
            "a webhook of no known type",
            |v| v["spec"]["webhooks"] = json!([{"name": "x", "type": "preRoll", "url": "http://hooks/x"}]),
            &["spec.webhooks[0].type", "preRollout"],
        ),
        (
            "a webhook url that is not http",
            |v| v["spec"]["webhooks"] = json!([{"name": "x", "type": "rollback", "url": "ftp://hooks/x"}]),
            &["spec.webhooks[0].url", "http(s) URL"],
        ),
        (
            "an experiment stage with a weight",
            |v| {
                v["spec"]["stages"] = json!([{"name": "ab", "weight": 5, "match": {"keyShare": {"header": "x-user-id", "percent": 50}}},
                                              {"name": "all", "weight": 100}])
            },
            &["spec.stages[0]", "its weight is 0"],
        ),
        (
            "a match with two rules",
            |v| {
                v["spec"]["stages"] = json!([{"name": "ab", "weight": 0, "match": {
                    "header": {"name": "x-beta", "value": "1"}, "cookie": {"name": "arm", "value": "b"}}},
                    {"name": "all", "weight": 100}])
            },
            &["spec.stages[0].match", "exactly one of header, cookie and keyShare"],
        ),
        (
            "a key share of 0%",
            |v| {
                v["spec"]["stages"] = json!([{"name": "ab", "weight": 0, "match": {"keyShare": {"header": "x-user-id", "percent": 0}}},
                                              {"name": "all", "weight": 100}])
            },
            &["spec.stages[0].match.keyShare.percent", "greater than or equal to 1"],
        ),
        (
            "maxDuration on a stage that is no experiment",
            |v| {
                v["spec"]["stages"] =
                    json!([{"name": "a", "weight": 5, "maxDuration": "1h"}, {"name": "b", "weight": 100}])
            },
            &["spec.stages[0].maxDuration", "experiment stage"],
        ),
        (
            "an experiment with replica-ratio routing",
            |v| {
                v["spec"]["trafficRouting"] = json!({"replicaRatio": {}});
                v["spec"]["stages"] = json!([{"name": "ab", "weight": 0, "match": {"header": {"name": "x-beta", "value": "1"}}},
                                              {"name": "all", "weight": 100}]);
            },
            &["spec", "gatewayAPI or istio"],
        ),
        (
            "a reward with no experiment stage",
            |v| {
                v["spec"]["analysis"]["reward"] =
                    json!({"name": "ctr", "query": "up", "samplesQuery": "up", "direction": "Higher"})
            },
            &["spec", "set match on a stage"],
        ),
        (
            "a reward judged on overlapping windows",
            |v| {
                v["spec"]["stages"] = json!([{"name": "ab", "weight": 0, "match": {"header": {"name": "x-beta", "value": "1"}}},
                                              {"name": "all", "weight": 100}]);
                v["spec"]["analysis"]["interval"] = json!("3s");
                v["spec"]["analysis"]["reward"] =
                    json!({"name": "ctr", "query": "up", "samplesQuery": "up", "direction": "Higher"});
            },
            &["spec.analysis.interval", "at least 5s"],
        ),
        (
            "a custom gate with no limit",
            |v| v["spec"]["analysis"]["gates"]["custom"] = json!([{"name": "ctr", "query": "up"}]),
            &["spec.analysis.gates.custom[0]", "maxBelowStable"],
        ),
        (
            "a stage that replaces its gates and adds some",
            |v| {
                v["spec"]["stages"] = json!([{"name": "a", "weight": 5, "gates": {
                    "replace": {"errorRate": {"max": 0.01}}, "add": {"latencyP95": {"max": 100}}}},
                    {"name": "b", "weight": 100}])
            },
            &["spec.stages[0].gates.replace", "replace stands alone"],
        ),
        (
            "a stage that adds and removes one gate",
            |v| {
                v["spec"]["stages"] = json!([{"name": "a", "weight": 5, "gates": {
                    "add": {"errorRate": {"max": 0.01}}, "remove": ["errorRate"]}}, {"name": "b", "weight": 100}])
            },
            &["spec.stages[0].gates.remove", "both add and remove"],
        ),
        (
            "a stage that removes a gate the rollout does not set",
            |v| {
                v["spec"]["stages"] = json!([{"name": "a", "weight": 5, "gates": {"remove": ["precision"]}},
                                              {"name": "b", "weight": 100}])
            },
            &["spec.stages", "analysis.gates does not set"],
        ),
        (
            "a stage's empty gates",
            |v| v["spec"]["stages"] = json!([{"name": "a", "weight": 5, "gates": {}}, {"name": "b", "weight": 100}]),
            &["spec.stages[0].gates", "set replace, or add and/or remove"],
        ),
        (
            "a ratio limit on a Sequential gate",
            |v| {
                v["spec"]["analysis"]["gates"]["captureRate"] =
                    json!({"maxBelowStableRatio": 0.01, "judge": "Sequential"})
            },
            &["spec.analysis.gates.captureRate", "Threshold judge"],
        ),
        (
            "a ratio below stable over 100%",
            |v| v["spec"]["analysis"]["gates"]["precision"] = json!({"maxBelowStableRatio": 1.5}),
            &["spec.analysis.gates.precision.maxBelowStableRatio", "less than or equal to 1"],
        ),
        (
            "an unknown comparison",
            |v| v["spec"]["analysis"]["gates"]["errorRate"] = json!({"max": 0.002, "comparison": "Lenient"}),
            &["spec.analysis.gates.errorRate.comparison", "Unsupported value"],
        ),
        (
            "an alert-free window of 0s",
            |v| {
                v["spec"]["stages"] = json!([{"name": "a", "weight": 5, "alertFree": {"for": "0s"}},
                                              {"name": "b", "weight": 100}])
            },
            &["spec.stages[0].alertFree.for", "more than 0s"],
        ),
        (
            "an alert-free selector on alertstate",
            |v| {
                v["spec"]["stages"] = json!([{"name": "a", "weight": 5,
                    "alertFree": {"for": "1h", "matchLabels": {"alertstate": "pending"}}}, {"name": "b", "weight": 100}])
            },
            &["spec.stages[0].alertFree.matchLabels", "alertstate"],
        ),
        (
            "a published API on a standard route",
            |v| v["spec"]["model"]["contract"]["apis"] = json!([{"path": "/metrics", "shape": "Classify"}]),
            &["spec.model.contract.apis[0].path", "standard routes"],
        ),
        (
            "one path published twice",
            |v| {
                v["spec"]["model"]["contract"]["apis"] =
                    json!([{"path": "/moderate", "shape": "Classify"}, {"path": "/moderate", "shape": "Rank"}])
            },
            &["spec.model.contract.apis", "published once"],
        ),
        (
            "labels on a Rank API",
            |v| {
                v["spec"]["model"]["contract"]["apis"] =
                    json!([{"path": "/rank", "shape": "Rank", "labels": {"positive": "a", "negative": "b"}}])
            },
            &["spec.model.contract.apis[0].labels", "Classify"],
        ),
        (
            "an item id on a Classify API",
            |v| {
                v["spec"]["model"]["contract"]["apis"] =
                    json!([{"path": "/score", "shape": "Classify", "itemId": "sku"}])
            },
            &["spec.model.contract.apis[0].itemId", "Rank API"],
        ),
        (
            "a Rank API whose item id is a feature",
            |v| {
                v["spec"]["model"]["contract"]["apis"] = json!([{"path": "/rank", "shape": "Rank", "itemId": "amount"}])
            },
            &["spec.model.contract.apis", "not an input feature"],
        ),
        (
            "a sunset before the deprecation",
            |v| {
                v["spec"]["model"]["contract"]["apis"] = json!([{"path": "/old", "shape": "Classify",
                    "deprecation": {"since": "2027-01-01", "sunset": "2026-06-01"}}])
            },
            &["spec.model.contract.apis[0].deprecation.sunset", "after since"],
        ),
        (
            "hostnames on a route the user manages",
            |v| {
                v["spec"]["trafficRouting"] =
                    json!({"gatewayAPI": {"httpRoute": "fraud", "hostnames": ["fraud.example.com"]}})
            },
            &["spec.trafficRouting.gatewayAPI.hostnames", "create: true"],
        ),
        (
            "a GRPCRoute with no gRPC port",
            |v| v["spec"]["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "fraud", "grpcRoute": "fraud-grpc"}}),
            &["spec.trafficRouting.gatewayAPI.grpcRoute", "workload.grpcPort"],
        ),
        (
            "an unknown shed-load policy",
            |v| v["spec"]["model"]["contract"]["errors"] = json!({"shedLoad": "Sometimes"}),
            &["spec.model.contract.errors.shedLoad", "Unsupported value"],
        ),
    ];
    // Gates set by every stage alone (none in analysis.gates) are gates: accepted.
    let mut own = minimal();
    own["metadata"]["name"] = json!("own-gates");
    own["spec"]["analysis"] = json!({});
    own["spec"]["stages"] = json!([
        {"name": "a", "weight": 5, "gates": {"replace": {"errorRate": {"max": 0.01}}}},
        {"name": "b", "weight": 100, "gates": {"add": {"latencyP95": {"max": 100, "comparison": "Strict"}}},
         "alertFree": {"for": "12h", "matchLabels": {"team": "fraud"}}}
    ]);
    let out = apply_json(&ns.name, &own);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A published API with its deprecated predecessor, and shed load counted: accepted.
    let mut published = minimal();
    published["metadata"]["name"] = json!("published");
    published["spec"]["model"]["contract"]["apis"] = json!([
        {"path": "/v1/rank:score", "shape": "Rank", "itemId": "sku"},
        {"path": "/v0/rank", "shape": "Rank", "deprecation": {"since": "2026-11-01", "sunset": "2027-01-31", "successor": "/v1/rank:score"}}
    ]);
    published["spec"]["model"]["contract"]["errors"] = json!({"shedLoad": "Error"});
    let out = apply_json(&ns.name, &published);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // An empty stage list gets its one clear error, not a CEL evaluation error beside it.
    let mut empty = minimal();
    empty["metadata"]["name"] = json!("bad");
    empty["spec"]["stages"] = json!([]);
    let out = apply_json(&ns.name, &empty);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "no stages: accepted");
    assert!(stderr.contains("spec.stages") && stderr.contains("at least 1 item"), "{stderr}");
    assert!(!stderr.contains("index out of bounds") && !stderr.contains("evaluation error"), "{stderr}");
    // The opt-out is accepted.
    let mut ungated = minimal();
    ungated["metadata"]["name"] = json!("ungated");
    ungated["spec"]["analysis"] = json!({"promoteWithoutGates": true});
    let out = apply_json(&ns.name, &ungated);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (name, mutate, expected) in cases {
        let mut obj = minimal();
        obj["metadata"]["name"] = json!("bad");
        mutate(&mut obj);
        let out = apply_json(&ns.name, &obj);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted but must be rejected");
        for needle in expected {
            assert!(stderr.contains(needle), "{name}: rejection does not mention `{needle}`: {stderr}");
        }
    }
    ns.delete().await;
}

/// The apiserver and both binaries read durations alike: every text the CRD admits (pattern and
/// CEL rule) is one the shared parser reads, and every text it refuses is refused by the parser.
#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn the_apiserver_admits_exactly_the_durations_the_binaries_parse() {
    let ns = TestNamespace::new("durations").await;
    let texts = [
        "1ms",
        "500us",
        "500µs",
        "10ns",
        "1s500ms",
        "1h30m",
        "1.5h",
        "0s",
        "0.5s",
        "2562047h",
        "2562047h47m16.854775807s",
        "2562048h",
        "99999999999999999999h",
        "1d",
        "5",
        "-1s",
        "1 s",
        ".5s",
        "1.s",
        "1μs",
        "soon",
        "",
        "1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h",
    ];
    for (i, text) in texts.iter().enumerate() {
        let mut obj = minimal();
        obj["metadata"]["name"] = json!(format!("d{i}"));
        obj["spec"]["model"]["runtime"] = json!({"maxBatchDelay": text});
        let out = apply_json(&ns.name, &obj);
        let parses = modelrollout::api::Duration::parse(text).is_ok();
        assert_eq!(
            out.status.success(),
            parses,
            "{text:?}: the apiserver {} it, the parser {} it: {}",
            if out.status.success() { "admits" } else { "refuses" },
            if parses { "reads" } else { "refuses" },
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ns.delete().await;
}

/// A pod asking for the host's network gets the machine's routes, outside the bridge's network
/// rule: the tests' namespaces refuse it at admission (Pod Security baseline), as they refuse a
/// privileged one; an ordinary pod is admitted.
#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn a_host_network_pod_is_refused_in_a_test_namespace() {
    let ns = TestNamespace::new("psa").await;
    let pod = |name: &str, spec: serde_json::Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns.name},
               "spec": spec})
        .to_string()
    };
    let container = json!({"name": "c", "image": "localhost/modelrollout/pause:1"});
    for (name, spec, says) in [
        ("host-net", json!({"hostNetwork": true, "containers": [container.clone()]}), "hostNetwork=true"),
        (
            "privileged",
            json!({"containers": [{"name": "c", "image": "localhost/modelrollout/pause:1",
                                              "securityContext": {"privileged": true}}]}),
            "privileged",
        ),
    ] {
        let out = kubectl(&["apply", "--server-side", "--dry-run=server", "-f", "-"], Some(&pod(name, spec)));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} admitted");
        assert!(err.contains("violates PodSecurity \"baseline:latest\"") && err.contains(says), "{name}: {err}");
    }
    let ok = kubectl(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        Some(&pod("plain", json!({"containers": [container]}))),
    );
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn deployment_pods_run_on_the_fake_node() {
    let ns = TestNamespace::new("pods").await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}
            }
        }
    }))
    .unwrap();
    let c = client().await;
    Api::<Deployment>::namespaced(c.clone(), &ns.name).create(&PostParams::default(), &deployment).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let running = wait_for("3 Running pods", Duration::from_secs(60), || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        (running.len() == 3).then_some(running)
    })
    .await;
    for p in &running {
        assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some("kwok-node-0"));
    }
    let deployments: Api<Deployment> = Api::namespaced(c, &ns.name);
    wait_for("Deployment readyReplicas=3", Duration::from_secs(30), || async {
        let d = deployments.get("web").await.ok()?;
        (d.status?.ready_replicas == Some(3)).then_some(())
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn kube_rs_reads_watches_and_patches_status_without_bumping_generation() {
    let ns = TestNamespace::new("kubers").await;
    let api: Api<ModelRollout> = Api::namespaced(client().await, &ns.name);
    let mr: ModelRollout = serde_json::from_value(minimal()).unwrap();
    // A watch from the namespace's current resourceVersion, opened before the create: the creation
    // and the status change must arrive through it (no sleep stands in for "the watch is open").
    let rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut events = api.watch(&WatchParams::default().timeout(30), &rv).await.unwrap().boxed();
    let seen = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(event) = events.next().await {
                if let WatchEvent::Added(obj) | WatchEvent::Modified(obj) = event.expect("watch event deserializes")
                    && obj.status.as_ref().and_then(|s| s.phase) == Some(Phase::Progressing)
                {
                    return obj;
                }
            }
            panic!("watch ended");
        })
        .await
        .expect("watch saw the status change")
    });
    let created = api.create(&PostParams::default(), &mr).await.unwrap();
    let generation = created.metadata.generation;
    assert_eq!(generation, Some(1));

    let status = ModelRolloutStatus {
        observed_generation: generation,
        phase: Some(Phase::Progressing),
        stage_index: Some(0),
        stage_name: Some("shadow".into()),
        canary_weight: 0,
        mirror_percent: 100,
        ..Default::default()
    };
    let patch = json!({"apiVersion": "modelrollout.dev/v1alpha1", "kind": "ModelRollout", "status": status});
    let patched = api
        .patch_status("fraud", &PatchParams::apply("modelrollout-e2e").force(), &Patch::Apply(&patch))
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, generation, "a status write does not bump the generation");
    assert_eq!(patched.status.as_ref().unwrap().mirror_percent, 100);

    let watched = seen.await.unwrap();
    assert_eq!(watched.name_any(), "fraud");
    assert_eq!(watched.status.unwrap().stage_name.as_deref(), Some("shadow"));

    // A spec write does bump it, and the status stays.
    let spec_patch = json!({"spec": {"paused": true}});
    let after = api.patch("fraud", &PatchParams::default(), &Patch::Merge(&spec_patch)).await.unwrap();
    assert_eq!(after.metadata.generation, Some(2));
    assert_eq!(after.status.unwrap().phase, Some(Phase::Progressing));

    // Listing through the typed API works too.
    let names: Vec<String> =
        api.list(&ListParams::default()).await.unwrap().items.iter().map(|m| m.name_any()).collect();
    assert_eq!(names, ["fraud"]);
    ns.delete().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn http_route_with_weights_and_a_request_mirror_is_accepted() {
    let ns = TestNamespace::new("gwapi").await;
    let route = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: fraud
  namespace: {ns}
spec:
  parentRefs: [{{name: public-gateway}}]
  rules:
    - backendRefs:
        - {{name: fraud-stable, port: 8080, weight: 95}}
        - {{name: fraud-canary, port: 8080, weight: 5}}
      filters:
        - type: RequestMirror
          requestMirror:
            backendRef: {{name: fraud-canary, port: 8080}}
            percent: 50
"#,
        ns = ns.name
    );
    kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&route));
    let got = kubectl_ok(&["get", "httproute", "fraud", "-n", &ns.name, "-o", "json"], None);
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    let rule = &got["spec"]["rules"][0];
    assert_eq!(rule["backendRefs"][1]["weight"], 5);
    assert_eq!(rule["filters"][0]["requestMirror"]["percent"], 50);
    // And the CRD validates: a weight beyond its maximum is refused.
    let bad = route.replace("weight: 95", "weight: 1000001");
    let out = kubectl(&["apply", "--server-side", "-f", "-"], Some(&bad));
    assert!(!out.status.success(), "an out-of-range backend weight must be rejected");
    ns.delete().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn istio_virtual_service_with_mirror_percentage_is_accepted() {
    let ns = TestNamespace::new("istio").await;
    let vs = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: fraud
  namespace: {ns}
spec:
  hosts: [fraud]
  http:
    - name: primary
      route:
        - {{destination: {{host: fraud-stable}}, weight: 95}}
        - {{destination: {{host: fraud-canary}}, weight: 5}}
      mirror: {{host: fraud-canary}}
      mirrorPercentage: {{value: 50.0}}
"#,
        ns = ns.name
    );
    kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&vs));
    let got = kubectl_ok(
        &["get", "virtualservice", "fraud", "-n", &ns.name, "-o", "jsonpath={.spec.http[0].mirrorPercentage.value}"],
        None,
    );
    assert_eq!(got, "50");
    ns.delete().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn prometheus_scrapes_a_target_and_answers_promql() {
    let body = "# TYPE modelrollout_smoke_value gauge\nmodelrollout_smoke_value 42.5\n";
    let target = FakeTarget::start("smoke", json!({"smoke": "yes"}), body.into()).await;
    let prom = prometheus();
    let value = wait_for("Prometheus to scrape the smoke target", Duration::from_secs(60), || async {
        first_sample(&prom, r#"modelrollout_smoke_value{smoke="yes"}"#).await.ok().flatten()
    })
    .await;
    assert_eq!(value, 42.5);
    drop(target);
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn the_on_gpu_gate_recipe_reads_1_on_cuda_0_after_a_cpu_fallback_and_nothing_before_a_scrape() {
    // The README gives the recipe as a folded YAML string: the same PromQL as tested here.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let folded = readme.split_once("        query: >-\n").expect("the recipe in the README").1;
    let lines: Vec<&str> = folded.lines().take_while(|l| l.starts_with("          ")).map(str::trim).collect();
    assert_eq!(lines.join(" "), ON_GPU_GATE_QUERY, "the README's recipe and the tested query differ");
    // The recipe's PromQL, substituted as the controller substitutes a custom gate, over sidecar
    // device gauges as the sidecar writes them (one fake target per pod).
    let namespace = format!("gpu-recipe-{}", std::process::id());
    let selector = modelrollout::prometheus::Selector {
        namespace: namespace.clone(),
        rollout: "fraud".into(),
        model: "fraud".into(),
        version: "v2".into(),
        role: "canary".into(),
        evidence: false,
        errors: Default::default(),
    };
    let query = selector.substitute(ON_GPU_GATE_QUERY, Duration::from_secs(30));
    let prom = prometheus();
    let value = || async { first_sample(&prom, &query).await.expect("the recipe is valid PromQL") };
    assert_eq!(value().await, None, "no data before a scrape: inconclusive, not a failure");
    let gauge = |device: &str| {
        format!(
            "# TYPE modelrollout_sidecar_device gauge\nmodelrollout_sidecar_device{{model=\"fraud\",version=\"v2\",role=\"canary\",device=\"{device}\",requested=\"cuda\"}} 1\n"
        )
    };
    let pod = |name: &str, device: &str| {
        let (file, labels, body) =
            (format!("{namespace}-{name}"), json!({"namespace": namespace, "pod": name}), gauge(device));
        async move { FakeTarget::start(&file, labels, body).await }
    };
    let (_a, _b) = (pod("a", "cuda").await, pod("b", "cuda").await);
    wait_for("1 with both pods on CUDA", Duration::from_secs(60), || async {
        let v = value().await?;
        assert_ne!(v, 0.0, "no pod falls back yet");
        (v == 1.0).then_some(())
    })
    .await;
    let _c = pod("c", "cpu").await;
    wait_for("0 once a pod serves on the CPU", Duration::from_secs(60), || async {
        (value().await == Some(0.0)).then_some(())
    })
    .await;
}

/// An object stored before a rule existed stays operable after the upgrade: the spec's rules
/// ratchet (each refuses a change that breaks it, not one to an object that broke it already), so
/// on-call can pause, abort or promote it; a new object, or a valid one made invalid, is still
/// refused. Tested on a copy of the CRD under a kind and group of its own (the cluster's CRD is
/// left alone), stored first without the no-gates rule, then upgraded to the real one.
#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn operations_go_through_on_an_object_stored_before_a_rule_it_breaks() {
    let ns = TestNamespace::new("ratchet").await;
    let text = std::fs::read_to_string(root().join("crds/modelrollout.dev_modelrollouts.yaml")).unwrap();
    let mut crd: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    crd["metadata"]["name"] = json!("ratchetprobes.ratchet.modelrollout.dev");
    crd["spec"]["group"] = json!("ratchet.modelrollout.dev");
    crd["spec"]["names"] = json!({"kind": "RatchetProbe", "listKind": "RatchetProbeList", "plural": "ratchetprobes",
                                  "singular": "ratchetprobe"});
    let upgraded = crd.clone();
    let rules =
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
            .as_array_mut()
            .unwrap();
    let before = rules.len();
    rules.retain(|r| !r["message"].as_str().unwrap().contains("set at least one gate"));
    assert_eq!(rules.len(), before - 1, "the no-gates rule is there to take out");
    let apply_crd = |crd: &serde_json::Value| {
        kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&crd.to_string()));
        // Polled, not `kubectl wait`: that one fails outright on a CRD whose status has no
        // conditions yet ("<nil> is of the type <nil>"), as it did once in CI at 0993e20.
        let established = || {
            let out = kubectl(
                &[
                    "get",
                    "crd/ratchetprobes.ratchet.modelrollout.dev",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
                ],
                None,
            );
            String::from_utf8_lossy(&out.stdout).trim() == "True"
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !established() {
            assert!(std::time::Instant::now() < deadline, "the probe CRD not Established within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let object = |name: &str, gates: bool| {
        let mut v = minimal();
        v["apiVersion"] = json!("ratchet.modelrollout.dev/v1alpha1");
        v["kind"] = json!("RatchetProbe");
        v["metadata"]["name"] = json!(name);
        if !gates {
            v["spec"]["analysis"] = json!({"interval": "30s"});
        }
        v
    };
    apply_crd(&crd);
    // Stored under the old rules: no gate, no opt-out.
    wait_for("the old CRD serving", Duration::from_secs(30), || async {
        apply_json(&ns.name, &object("old", false)).status.success().then_some(())
    })
    .await;
    apply_crd(&upgraded);
    wait_for("the upgraded CRD's rules in force", Duration::from_secs(30), || async {
        let out = apply_json(&ns.name, &object("new", false));
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).to_string())
    })
    .await;
    let merge = |name: &str, patch: serde_json::Value| {
        kubectl(&["patch", "ratchetprobe", name, "-n", &ns.name, "--type", "merge", "-p", &patch.to_string()], None)
    };
    for (what, patch) in [
        ("pause", json!({"spec": {"paused": true}})),
        ("abort", json!({"spec": {"operations": {"abort": {"id": "a1", "reason": "on-call"}}}})),
        ("promote", json!({"spec": {"operations": {"promote": {"id": "p1"}}}})),
    ] {
        let out = merge("old", patch);
        assert!(out.status.success(), "{what} refused on the old object: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Still refused: a valid object made invalid.
    assert!(apply_json(&ns.name, &object("valid", true)).status.success());
    let out = merge("valid", json!({"spec": {"analysis": {"gates": null}}}));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("set at least one gate"), "a valid object made invalid: {err}");
    kubectl_ok(&["delete", "crd", "ratchetprobes.ratchet.modelrollout.dev", "--wait=false"], None);
}
