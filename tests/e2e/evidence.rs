//! The evidence service on the local control plane (kwok; its sidecars are this build's processes
//! with their Deployments' environment, so they report to the service as the controller told them
//! to): labels posted once, to the service, after the candidate's pod restarted and with the
//! service restarted between two batches, roll back a bad candidate; the exported totals are what
//! was posted; writes without the right identity are refused and store nothing.
//! Its own test binary: it runs the controller with `--evidence-url`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelrollout::api::{Phase, Verdict};
use modelrollout_contract::evidence::series;
use modelrollout_e2e::*;
use serde_json::{Value, json};

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn labels_posted_once_after_restarts_roll_back_a_bad_candidate_and_nothing_is_lost() {
    let port = free_port();
    let evidence_url = format!("--evidence-url=http://127.0.0.1:{port}");
    let kept: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let v1 = Manifest::fraud("v1", local_file("fraud-v1.onnx")).build();
    let env =
        Env::kwok_with("evid", 150, &["--leader-election=false", &evidence_url], v1, Labels::Kept(kept.clone())).await;
    let ns = env.ns.name.clone();
    let mut evidence = EvidenceProc::start(&ns, port).await;
    // A label poster with the chart's label-writer role in this namespace.
    let labeller = labeller_token(&ns);
    let token = |sa: &str, in_ns: &str| kubectl_ok(&["create", "token", sa, "-n", in_ns], None).trim().to_string();

    let mut m = Manifest::fraud("v2-bad", local_file("fraud-v2-bad-fpr.onnx"))
        .stages(canary_stages(20))
        .gates(default_gates())
        .build();
    m["spec"]["analysis"]["failureLimit"] = json!(1);
    m["spec"]["analysis"]["inconclusiveLimit"] = json!(1000);
    gitops_apply(&ns, &m);
    // Predictions reach the service; no label has: the label gates have no evidence, so the
    // candidate neither advances nor is rolled back.
    let v2 = r#"version="v2-bad""#;
    wait_for("150 candidate predictions at the evidence service", Duration::from_secs(120), || async {
        (evidence.metric_sum(series::PREDICTIONS, &[v2]).await >= 150.0).then_some(())
    })
    .await;
    let st = env.get().await.status.unwrap();
    assert_eq!((st.phase, st.stage_index), (Some(Phase::Progressing), Some(0)), "{:?}", st.message);
    let fpr = st.last_analysis.as_ref().and_then(|r| r.gates.iter().find(|g| g.name == "falsePositiveRate").cloned());
    assert_eq!(fpr.map(|g| g.verdict), Some(Verdict::Inconclusive), "no labels, no verdict on labels");

    // The candidate's pod restarts: the predictions it served are the service's, not its memory's.
    env.harness().restart("v2-bad").await;
    let labels = std::mem::take(&mut *kept.lock().unwrap());
    assert!(labels.len() > 1000, "{} labels", labels.len());

    // Writes without the right identity: refused, nothing stored.
    let (code, _) = evidence.post_labels(&ns, "fraud", None, &labels[..10]).await;
    assert_eq!(code, 401, "no token");
    let (code, v) = evidence.post_labels(&ns, "fraud", Some(&token("default", &ns)), &labels[..10]).await;
    assert_eq!(code, 403, "the sidecars' token may send predictions, not labels: {v}");
    let (code, v) = evidence.post_labels(&ns, "fraud", Some(&token("default", "kube-system")), &labels[..10]).await;
    assert_eq!(code, 403, "another namespace's token: {v}");
    assert_eq!(evidence.metric_sum(series::LABELS_JOINED, &[]).await, 0.0, "nothing stored");

    // Posted once: half, the service killed and started again on its file, the other half.
    let (first, second) = labels.split_at(labels.len() / 2);
    let (code, a) = evidence.post_labels(&ns, "fraud", Some(&labeller), first).await;
    assert_eq!((code, a["recorded"].as_u64()), (200, Some(first.len() as u64)), "{a}");
    evidence.restart().await;
    let (code, b) = evidence.post_labels(&ns, "fraud", Some(&labeller), second).await;
    assert_eq!((code, b["recorded"].as_u64()), (200, Some(second.len() as u64)), "{b}");
    // Each request was scored by one version (no mirror in these stages): every label joins one
    // prediction, across both restarts, none twice.
    let posted = labels.len() as f64;
    wait_for("every label joined", Duration::from_secs(30), || async {
        let joined = evidence.metric_sum(series::LABELS_JOINED, &[]).await;
        assert!(joined <= posted, "{joined} joins of {posted} labels");
        (joined == posted).then_some(())
    })
    .await;

    // The bad candidate is rolled back on those labels.
    let mr = env.wait(Duration::from_secs(90), "the status", |s| s.phase == Some(Phase::RolledBack)).await;
    let st = mr.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("GatesFailed"), "{:?}", st.message);
    let fpr = st.last_analysis.unwrap().gates.into_iter().find(|g| g.name == "falsePositiveRate").unwrap();
    assert_eq!(fpr.verdict, Verdict::Fail, "{fpr:?}");
    assert!(fpr.value.unwrap() > fpr.stable_value.unwrap() + 0.2, "{fpr:?}");
    assert!(!evidence.logs().contains("panicked"), "{}", evidence.logs());
    env.shutdown().await;
}

/// A candidate in shadow, judged on the requests stable answered: `version` (serving `file`) with
/// the agreement, score drift and input drift gates; returns the final status once it left shadow
/// or was rolled back.
async fn shadow_agreement(prefix: &str, version: &str, file: &str) -> modelrollout::api::ModelRolloutStatus {
    let gates = json!({"agreement": {"min": 0.9, "minSamples": 50}, "scoreDrift": {"max": 0.2, "minSamples": 50},
        "inputDrift": {"max": 0.25, "minSamples": 100}});
    shadow(prefix, version, local_file(file), gates).await
}

/// The same for any artifact and gates.
async fn shadow(prefix: &str, version: &str, artifact: Value, gates: Value) -> modelrollout::api::ModelRolloutStatus {
    let port = free_port();
    let evidence_url = format!("--evidence-url=http://127.0.0.1:{port}");
    let v1 = Manifest::fraud("v1", local_file("fraud-v1.onnx")).build();
    let env =
        Env::kwok_with(prefix, 100, &["--leader-election=false", &evidence_url], v1, Labels::Kept(Arc::default()))
            .await;
    let _evidence = EvidenceProc::start(&env.ns.name, port).await;
    let mut m = Manifest::fraud(version, artifact).stages(four_stages(15)).gates(json!({})).build();
    m["spec"]["analysis"]["gates"] = gates;
    m["spec"]["analysis"]["failureLimit"] = json!(2);
    gitops_apply(&env.ns.name, &m);
    let mr = env
        .wait(Duration::from_secs(120), "the status", |s| {
            s.phase == Some(Phase::RolledBack) || s.stage_index.is_some_and(|i| i >= 1)
        })
        .await;
    env.shutdown().await;
    mr.status.unwrap()
}

/// In shadow, before any user sees it: a candidate deciding otherwise than stable on a large
/// slice of the mirrored requests (fraud-v2-bad-fpr flags most of what v1 clears) fails the
/// agreement gate and is rolled back there.
#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn a_candidate_that_disagrees_with_stable_fails_the_agreement_gate_in_shadow() {
    let st = shadow_agreement("disagree", "v2-bad", "fraud-v2-bad-fpr.onnx").await;
    assert_eq!((st.phase, st.stage_index), (Some(Phase::RolledBack), Some(0)), "{:?}", st.message);
    let gates = st.last_analysis.unwrap().gates;
    let g = gates.iter().find(|g| g.name == "agreement").unwrap();
    assert_eq!(g.verdict, Verdict::Fail, "{g:?}");
    assert!(g.value.unwrap() < 0.8 && g.samples.unwrap() >= 50, "{g:?}");
    let drift = gates.iter().find(|g| g.name == "scoreDrift").unwrap();
    assert_eq!(drift.verdict, Verdict::Fail, "its scores shifted against stable's: {drift:?}");
}

/// The same model as stable under another version agrees on every matched request and leaves
/// shadow on the agreement gate alone.
#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn a_candidate_equal_to_stable_passes_the_agreement_gate() {
    let st = shadow_agreement("agree", "v1b", "fraud-v1.onnx").await;
    assert_eq!(st.stage_index, Some(1), "left shadow: {:?}", st.message);
    let gates = st.last_analysis.unwrap().gates;
    let g = gates.iter().find(|g| g.name == "agreement").unwrap();
    assert_eq!((g.verdict, g.value), (Verdict::Pass, Some(1.0)), "{g:?}");
    let drift = gates.iter().find(|g| g.name == "scoreDrift").unwrap();
    assert_eq!(drift.verdict, Verdict::Pass, "the same scores: {drift:?}");
    assert!(drift.value.unwrap() < 0.01, "{drift:?}");
    // The golden set's requests come from the distribution the model was trained on.
    let input = gates.iter().find(|g| g.name == "inputDrift").unwrap();
    assert_eq!(input.verdict, Verdict::Pass, "traffic like the training data: {input:?}");
    assert!(input.samples.unwrap() >= 100, "{input:?}");
}

/// A candidate whose reference says it was trained on other data than the traffic it gets (here:
/// amounts ten times as large, written as the model's reference file and named by its digest) fails
/// the input drift gate in shadow, judged from the bins its sidecars sent the evidence service.
#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn a_candidate_trained_on_other_data_than_its_traffic_fails_the_input_drift_gate() {
    use sha2::Digest;
    let text = std::fs::read_to_string(root().join("models/fraud-v2.reference.json")).unwrap();
    let mut reference: Value = serde_json::from_str(&text).unwrap();
    let amount = &mut reference["features"][0];
    assert_eq!(amount["name"], "amount");
    for e in amount["edges"].as_array_mut().unwrap() {
        *e = json!(e.as_f64().unwrap() * 10.0);
    }
    let bytes = serde_json::to_vec(&reference).unwrap();
    let path = std::env::temp_dir().join(format!("fraud-v2-shifted-{}.reference.json", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let mut artifact = local_file("fraud-v2.onnx");
    artifact["reference"] =
        json!({"uri": path.display().to_string(), "sha256": hex::encode(sha2::Sha256::digest(&bytes))});
    let st = shadow("input-drift", "v2", artifact, json!({"inputDrift": {"max": 0.25, "minSamples": 100}})).await;
    let _ = std::fs::remove_file(&path);
    assert_eq!((st.phase, st.stage_index), (Some(Phase::RolledBack), Some(0)), "{:?}", st.message);
    let gates = st.last_analysis.unwrap().gates;
    let g = gates.iter().find(|g| g.name == "inputDrift").unwrap();
    assert_eq!(g.verdict, Verdict::Fail, "{g:?}");
    assert!(g.value.unwrap() > 0.25 && g.samples.unwrap() >= 100, "{g:?}");
}

/// The evidence service down in the middle of a rollout: the sidecars go on answering every
/// request, the label gates have no evidence and are inconclusive, and the rollout holds its stage
/// (nothing promotes); the service back on its file, the rollout goes on and is promoted.
#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn with_the_evidence_service_down_the_rollout_holds_and_goes_on_once_it_is_back() {
    let mut env = Env::kwok_fraud("evid-down", 150).await;
    let mut m =
        Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(four_stages(8)).gates(default_gates()).build();
    m["spec"]["analysis"]["inconclusiveLimit"] = json!(1000);
    gitops_apply(&env.ns.name, &m);
    env.wait(Duration::from_secs(90), "the candidate at 5%", |s| s.stage_index == Some(1)).await;
    env.evidence.as_mut().expect("the environment's evidence service").stop();
    // Past the analysis whose window still held evidence from before the outage.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let held = env.get().await.status.unwrap();
    let stage = held.stage_index;
    let since = held.last_analysis.as_ref().map(|r| r.time.0);
    let st = env
        .wait(Duration::from_secs(60), "two analyses while the evidence service is down", |s| {
            s.last_analysis
                .as_ref()
                .is_some_and(|r| Some(r.time.0) > since.map(|t| t + jiff::SignedDuration::from_secs(9)))
        })
        .await
        .status
        .unwrap();
    assert_eq!(st.stage_index, stage, "held its stage through the outage: {:?}", st.message);
    assert_eq!(st.phase, Some(Phase::Progressing), "{:?}", st.message);
    let gates = st.last_analysis.unwrap().gates;
    for name in ["falsePositiveRate", "captureRate"] {
        let g = gates.iter().find(|g| g.name == name).unwrap();
        assert_eq!(g.verdict, Verdict::Inconclusive, "no evidence, no verdict: {g:?}");
    }
    let t = &env.harness().traffic;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (t.stable_errors.load(Relaxed), t.canary_errors.load(Relaxed)),
        (0, 0),
        "the sidecars answered every request: {:?}",
        t.error_samples.lock().unwrap()
    );
    env.evidence.as_mut().unwrap().start_again().await;
    let mr = env
        .wait(Duration::from_secs(180), "promoted", |s| {
            matches!(s.phase, Some(Phase::Promoted | Phase::RolledBack | Phase::Failed))
        })
        .await;
    assert_eq!(mr.status.unwrap().phase, Some(Phase::Promoted));
    env.shutdown().await;
}
