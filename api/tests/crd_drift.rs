//! The committed CRD matches the Rust types, and its schema carries the server-side validation.

use std::path::PathBuf;

use modelrollout_api::crd::{CHART_CRD_PATH, CRD_PATH, crd_yaml};
use modelrollout_api::{ModelRollout, ModelRolloutSpec};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn committed_crd_matches_the_types() {
    let committed = std::fs::read_to_string(root().join(CRD_PATH)).expect("crds/ has the CRD");
    assert!(
        committed == crd_yaml(),
        "{CRD_PATH} is stale: run `cargo run -p modelrollout-controller --bin crdgen -- --write` and commit it"
    );
}

#[test]
fn the_chart_ships_the_same_crd() {
    let chart = std::fs::read_to_string(root().join(CHART_CRD_PATH)).expect("the chart has the CRD");
    let committed = std::fs::read_to_string(root().join(CRD_PATH)).unwrap();
    assert!(
        chart == committed,
        "{CHART_CRD_PATH} differs from {CRD_PATH}: run `cargo run -p modelrollout-controller --bin crdgen -- --write`"
    );
}

fn crd() -> serde_yaml::Value {
    serde_yaml::from_str(&crd_yaml()).unwrap()
}

#[test]
fn names_scope_and_subresources() {
    let crd = crd();
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "modelrollout.dev");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["kind"], "ModelRollout");
    assert_eq!(spec["names"]["shortNames"][0], "mro");
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_mapping());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Phase", "Stage", "Weight", "Stable", "Candidate", "Age"]);
}

fn rules(v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                if k == "x-kubernetes-validations" {
                    for r in v.as_sequence().unwrap() {
                        out.push(r["rule"].as_str().unwrap().to_string());
                    }
                }
                rules(v, out);
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| rules(v, out)),
        _ => {}
    }
}

#[test]
fn schema_carries_ranges_patterns_and_cel_rules() {
    let crd = crd();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let stage = &spec["properties"]["stages"]["items"]["properties"];
    assert_eq!(stage["weight"]["minimum"].as_f64(), Some(0.0));
    assert_eq!(stage["weight"]["maximum"].as_f64(), Some(100.0));
    let artifact = &spec["properties"]["model"]["properties"]["artifact"];
    assert_eq!(artifact["properties"]["sha256"]["pattern"], "^[a-f0-9]{64}$");
    let required: Vec<&str> = artifact["required"].as_sequence().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(required.contains(&"sha256") && required.contains(&"uri"));
    let device = &spec["properties"]["model"]["properties"]["runtime"]["properties"]["device"];
    let devices: Vec<&str> = device["enum"].as_sequence().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(devices, ["cpu", "cuda"]);
    let mut all = Vec::new();
    rules(spec, &mut all);
    for needle in ["weight == 100", "isSorted()", "has(self.gatewayAPI)", "exists_one(b, b.name == a.name)"] {
        assert!(all.iter().any(|r| r.contains(needle)), "no CEL rule with `{needle}` in {all:#?}");
    }
    // Conditions are a list-map keyed by type, as the Kubernetes API conventions ask.
    let conditions =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
}

#[test]
fn every_example_parses_as_a_model_rollout() {
    let dir = root().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            if value["kind"] == "ModelRollout" {
                let mr: ModelRollout =
                    serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let spec: &ModelRolloutSpec = &mr.spec;
                assert!(!spec.stages.is_empty());
                seen += 1;
            }
        }
    }
    assert!(seen >= 1, "no ModelRollout in examples/");
}

use serde::Deserialize;
