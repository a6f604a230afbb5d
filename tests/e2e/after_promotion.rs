//! After a promotion, on the real node through Envoy Gateway: an undo with the plugin sends every
//! client back to the retained version (measured where clients see it: the last answer from the
//! promoted version after the undo, and failed requests); an undo written into the manifest (as a
//! GitOps repository holds it) to a cold retained version, which applied again undoes nothing
//! more; and labels posted after the promotion failing the promoted version's after-promotion
//! gates, which undoes by itself.

use std::time::Duration;

use modelrollout::api::conditions::reasons;
use modelrollout::api::{Outcome, Phase, RetentionMode, Verdict};
use modelrollout_e2e::*;
use serde_json::{Value, json};

const RPS: u32 = 120;

/// Two short stages, then v2 is stable; v1 retained for ten minutes in `mode`. The stages are
/// judged on what a good candidate passes whatever the sample (errors, latency): the label gates'
/// windows of a few dozen labels are the gate suites' subject, not this one's.
fn v2_retaining(file: &str, mode: &str) -> Value {
    let stages = json!([{"name": "canary-50", "weight": 50, "minDuration": "10s"}, {"name": "full", "weight": 100, "minDuration": "5s"}]);
    let mut m = Manifest::fraud_on_node("v2", from_image(file)).stages(stages).gates(guardrails()).build();
    m["spec"]["afterPromotion"] = json!({"retention": "10m", "mode": mode});
    m
}

fn guardrails() -> Value {
    json!({"errorRate": {"max": 0.01, "minSamples": 20}, "latencyP95": {"max": 1000, "minSamples": 20}})
}

/// Waits until the clients' answers of the last `secs` seconds all come from `version`.
async fn clients_only_on(load: &ClientLoad, version: &str, secs: f64, timeout: Duration) {
    wait_for(&format!("{secs} s of answers all from {version}"), timeout, || async {
        let t = now();
        let recent: Vec<_> =
            load.answers().into_iter().filter(|a| a.start >= t - secs - 0.5 && a.start < t - 0.5).collect();
        (recent.len() as f64 >= secs * f64::from(RPS) * 0.5
            && recent.iter().all(|a| a.version.as_deref() == Some(version)))
        .then_some(())
    })
    .await;
}

/// The last request start answered by `version`.
fn last_from(answers: &[Answer], version: &str) -> f64 {
    answers.iter().filter(|a| a.version.as_deref() == Some(version)).map(|a| a.start).fold(f64::MIN, f64::max)
}

#[tokio::test]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn an_undo_sends_every_client_back_to_the_warm_retained_version_within_a_second() {
    let (env, load, ns) = through_gateway("ap-undo", RPS, None).await;
    gitops_apply(&ns, &v2_retaining("fraud-v2.onnx", "Warm"));
    env.wait(Duration::from_secs(240), "v2 promoted", |s| s.phase == Some(Phase::Promoted)).await;
    clients_only_on(&load, "v2", 5.0, Duration::from_secs(60)).await;
    let st = env.get().await.status.unwrap();
    let retained = st.retained.clone().expect("v1 retained");
    assert_eq!((retained.model.version.as_str(), retained.mode), ("v1", RetentionMode::Warm));
    assert_eq!(
        env.replicas("fraud-v1").await,
        Some(1),
        "v1 warm: its pod kept past previousStableScaleDownDelay (3 s)"
    );

    // The on-call engineer undoes with the plugin.
    let asked = now();
    let (code, out, err) =
        plugin(&["undo", "fraud", "-n", &ns, "--reason", "chargebacks up since the promotion"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("undo to v1 (Warm) requested") && out.contains("controller acted"), "{out}");
    let mr = env.wait(Duration::from_secs(30), "undone", |s| s.reason.as_deref() == Some(reasons::UNDONE)).await;
    let decided = controller_metric(&env, "modelrollout_rollback_decided_timestamp_seconds").await;
    clients_only_on(&load, "v1", 5.0, Duration::from_secs(30)).await;
    let answers = load.shutdown().await;
    let last_v2 = last_from(&answers, "v2");
    let failed = answer_failures(&answers);
    println!(
        "UNDO_WARM last_promoted_answer_after_undo_ms={:.0} after_decision_ms={:.0} decision_after_request_ms={:.0} requests={} failed={}",
        (last_v2 - asked) * 1e3,
        (last_v2 - decided) * 1e3,
        (decided - asked) * 1e3,
        answers.len(),
        failed.len()
    );
    assert!(last_v2 - asked <= 1.0, "a request started {:.3} s after the undo got v2's answer", last_v2 - asked);
    assert!(failed.is_empty(), "failed requests through the undo: {failed:?}");

    // Status, history and an Event record who undid what, and when.
    let st = mr.status.unwrap();
    assert_eq!(
        (st.phase, st.stable_version.as_deref(), st.candidate_version.as_deref()),
        (Some(Phase::RolledBack), Some("v1"), Some("v2"))
    );
    let h = &st.history[0];
    assert_eq!((h.version.as_str(), h.outcome), ("v2", Outcome::Undone));
    assert!(h.reason.contains("by admin") && h.reason.contains("chargebacks up"), "{}", h.reason);
    let events = kubectl(&["get", "events", "-n", &ns, "--field-selector", "reason=Undone", "-o", "json"], None);
    let events: Value = serde_json::from_slice(&events.stdout).unwrap();
    let notes: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["note"].as_str().or(e["message"].as_str()))
        .collect();
    assert!(notes.iter().any(|n| n.contains("v2 undone") && n.contains("by admin")), "{notes:?}");
    let (_, history, _) = plugin(&["history", "fraud", "-n", &ns]).await;
    let row = history.lines().find(|l| l.trim_start().starts_with("v2 ")).unwrap_or_default();
    assert!(row.contains("Promoted") && row.contains("ago"), "{history}");
    // The manifest in Git still says v2: applied again (with another change), it does not roll
    // v2 out again.
    let generation = env.get().await.metadata.generation.unwrap_or(0);
    let mut m = v2_retaining("fraud-v2.onnx", "Warm");
    m["spec"]["analysis"]["interval"] = json!("4s");
    gitops_apply(&ns, &m);
    let mr = env.wait(Duration::from_secs(30), "the re-apply seen", |s| s.observed_generation > Some(generation)).await;
    let st = mr.status.unwrap();
    assert_eq!((st.phase, st.stable_version.as_deref()), (Some(Phase::RolledBack), Some("v1")));
    let undos: Vec<_> = st.history.iter().filter(|h| h.outcome == Outcome::Undone).collect();
    assert_eq!(undos.len(), 1, "{:#?}", st.history);
}

#[tokio::test]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn an_undo_in_the_manifest_scales_a_cold_version_up_moves_clients_once_it_is_ready_and_is_done_once() {
    let (env, load, ns) = through_gateway("ap-gitops", RPS, None).await;
    let mut m = v2_retaining("fraud-v2.onnx", "Cold");
    gitops_apply(&ns, &m);
    env.wait(Duration::from_secs(240), "v2 promoted", |s| s.phase == Some(Phase::Promoted)).await;
    wait_for("v1 cold: scaled to zero", Duration::from_secs(60), || async {
        (env.replicas("fraud-v1").await == Some(0) && pods_now(&ns, "modelrollout.dev/version=v1").await.is_empty())
            .then_some(())
    })
    .await;
    clients_only_on(&load, "v2", 5.0, Duration::from_secs(60)).await;

    // The incident's fix in Git: an undo request in the manifest.
    m["spec"]["operations"] = json!({"undo": {"id": "incident-7", "reason": "fraud team: capture rate down"}});
    let asked = now();
    gitops_apply(&ns, &m);
    let mr = env.wait(Duration::from_secs(150), "undone", |s| s.reason.as_deref() == Some(reasons::UNDONE)).await;
    let undone_at = now();
    clients_only_on(&load, "v1", 5.0, Duration::from_secs(30)).await;
    let answers = load.shutdown().await;
    let last_v2 = last_from(&answers, "v2");
    let failed = answer_failures(&answers);
    println!(
        "UNDO_COLD last_promoted_answer_after_undo_s={:.1} status_undone_after_s={:.1} requests={} failed={}",
        last_v2 - asked,
        undone_at - asked,
        answers.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "v2 kept serving until v1's pod was Ready: {failed:?}");
    let st = mr.status.unwrap();
    assert_eq!(st.handled_operations.undo.as_deref(), Some("incident-7"));
    assert!(st.history[0].reason.contains("by the spec (operations id incident-7)"), "{}", st.history[0].reason);

    // Applied again, with another change: no second undo, v2 not rolled out again.
    let generation = env.get().await.metadata.generation.unwrap_or(0);
    m["spec"]["analysis"]["interval"] = json!("4s");
    gitops_apply(&ns, &m);
    env.wait(Duration::from_secs(30), "the re-apply seen", |s| s.observed_generation > Some(generation)).await;
    let st = env.get().await.status.unwrap();
    assert_eq!((st.phase, st.stable_version.as_deref()), (Some(Phase::RolledBack), Some("v1")));
    assert_eq!(st.history.iter().filter(|h| h.outcome == Outcome::Undone).count(), 1);
    assert_eq!(env.replicas("fraud-v2").await.unwrap_or(0), 0, "v2 stays scaled down");
}

#[tokio::test]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn labels_posted_after_the_promotion_fail_the_watch_and_undo_by_itself() {
    let (env, load, ns) = through_gateway_with("ap-late", RPS, None, false).await;
    let evidence = ChartEvidence::of(&ns).await;
    // The stages judge what needs no label; the false-positive rate is judged after the
    // promotion, as the labels come (v2-bad-fpr flags 58% of the legitimate golden rows, v1 14%).
    let mut m = v2_retaining("fraud-v2-bad-fpr.onnx", "Warm");
    m["spec"]["model"]["version"] = json!("v2-bad");
    m["spec"]["analysis"]["failureLimit"] = json!(1);
    m["spec"]["afterPromotion"]["gates"] = json!({"falsePositiveRate": {"max": 0.3, "minSamples": 40}});
    m["spec"]["afterPromotion"]["onFailure"] = json!("Undo");
    gitops_apply(&ns, &m);
    env.wait(Duration::from_secs(240), "v2-bad promoted", |s| s.phase == Some(Phase::Promoted)).await;
    clients_only_on(&load, "v2-bad", 3.0, Duration::from_secs(60)).await;
    // Without labels the watch has nothing to judge: it holds.
    let mr = env
        .wait(Duration::from_secs(60), "two watch analyses", |s| {
            s.watch.as_ref().and_then(|w| w.last_analysis.as_ref()).is_some_and(|r| r.verdict == Verdict::Inconclusive)
        })
        .await;
    assert_eq!(mr.status.unwrap().stable_version.as_deref(), Some("v2-bad"));

    // The labels of everything answered so far arrive at once, after the promotion.
    let labels = load.take_labels();
    let (code, body) = evidence.post_labels("fraud", &labels).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let posted = now();
    let mr = env
        .wait(Duration::from_secs(60), "undone by the watch", |s| s.reason.as_deref() == Some(reasons::UNDONE))
        .await;
    let st = mr.status.unwrap();
    assert_eq!(st.stable_version.as_deref(), Some("v1"));
    assert!(
        st.history[0].reason.contains("after-promotion gates") && st.history[0].reason.contains("falsePositiveRate"),
        "{}",
        st.history[0].reason
    );
    clients_only_on(&load, "v1", 3.0, Duration::from_secs(30)).await;
    let answers = load.shutdown().await;
    let failed = answer_failures(&answers);
    println!(
        "UNDO_LATE_LABELS labels={} undone_after_labels_s={:.1} failed={}",
        labels.len(),
        last_from(&answers, "v2-bad") - posted,
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn retention_expiry_deprecates_the_old_version_and_removal_deletes_its_objects_while_clients_are_served() {
    let (env, load, ns) = through_gateway("ap-retire", RPS, None).await;
    let mut m = v2_retaining("fraud-v2.onnx", "Warm");
    m["spec"]["afterPromotion"] = json!({"retention": "20s", "mode": "Warm", "removeAfter": "20s"});
    gitops_apply(&ns, &m);
    env.wait(Duration::from_secs(240), "v2 promoted", |s| s.phase == Some(Phase::Promoted)).await;
    assert_eq!(env.replicas("fraud-v1").await, Some(1), "v1 warm during its retention");
    let mr = env.wait(Duration::from_secs(60), "v1 deprecated", |s| !s.retired.is_empty()).await;
    let st = mr.status.unwrap();
    assert_eq!(st.retired[0].version, "v1");
    assert!(st.retained.is_none(), "nothing left to undo to");
    wait_for("v1's pods gone", Duration::from_secs(60), || async {
        pods_now(&ns, "modelrollout.dev/version=v1").await.is_empty().then_some(())
    })
    .await;
    wait_for("v1's Deployment deleted", Duration::from_secs(60), || async {
        env.deployment("fraud-v1").await.is_none().then_some(())
    })
    .await;
    let st = env.get().await.status.unwrap();
    let life: Vec<_> = st.history.iter().filter(|h| h.version == "v1").map(|h| h.outcome).collect();
    assert_eq!(life, [Outcome::Removed, Outcome::Deprecated], "{:#?}", st.history);
    // An undo now is refused, and says why; v2 serves on.
    let (code, _, err) = plugin(&["undo", "fraud", "-n", &ns]).await;
    assert_ne!(code, 0);
    assert!(err.contains("retains no previous version"), "{err}");
    clients_only_on(&load, "v2", 3.0, Duration::from_secs(30)).await;
    let answers = load.shutdown().await;
    let failed = answer_failures(&answers);
    println!("RETIRE requests={} failed={}", answers.len(), failed.len());
    assert!(failed.is_empty(), "{failed:?}");
}

/// The fraud manifest sized by an autoscaler: no `workload.replicas` in Git (the autoscaler owns
/// it), a CPU request for the autoscaler to measure against.
fn autoscaled(mut m: Value) -> Value {
    let w = m["spec"]["workload"].as_object_mut().unwrap();
    w.remove("replicas");
    w.insert("resources".into(), json!({"requests": {"cpu": "20m", "memory": "64Mi"}}));
    m
}

/// What the HPA last decided (`status.desiredReplicas`).
async fn hpa_desired(ns: &str) -> Option<i32> {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let hpa = kube::Api::<HorizontalPodAutoscaler>::namespaced(client().await, ns).get("fraud").await.ok()?;
    Some(hpa.status?.desired_replicas)
}

/// Waits until `spec.workload.replicas` is what the HPA decided and each named Deployment has its
/// share (percent) of it, rounded up; returns the size.
async fn at_autoscalers_size(env: &Env, deployments: &[(&str, i32)], what: &str) -> i32 {
    wait_for(what, Duration::from_secs(60), || async {
        let want = env.get().await.spec.workload.replicas;
        if hpa_desired(&env.ns.name).await != Some(want) {
            return None;
        }
        for (d, share) in deployments {
            if env.replicas(d).await != Some((want * share + 99) / 100) {
                return None;
            }
        }
        Some(want)
    })
    .await
}

#[tokio::test]
#[ignore = "needs the local cluster with its real node, Gateway and metrics-server: bash tests/run.sh"]
async fn a_horizontal_pod_autoscaler_sizes_every_version_through_a_stage_a_promotion_and_an_undo() {
    let v1 = autoscaled(Manifest::fraud_on_node("v1", from_image("fraud-v1.onnx")).stages(four_stages(6)).build());
    let (env, load, ns) = through_gateway_from("ap-hpa", v1, 150, None, true).await;
    let spec_replicas = |mr: &modelrollout::api::ModelRollout| mr.spec.workload.replicas;
    assert_eq!(spec_replicas(&env.get().await), 2, "the schema's default until the autoscaler sets it");
    // The platform team's HPA scales the ModelRollout (its scale subresource) on its stable pods' CPU.
    kubectl_ok(
        &["apply", "--server-side", "--field-manager", "platform-team", "-n", &ns, "-f", "-"],
        Some(
            &json!({
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "fraud"},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "modelrollout.dev/v1alpha1", "kind": "ModelRollout", "name": "fraud"},
                    "minReplicas": 1,
                    "maxReplicas": 3,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]
                }
            })
            .to_string(),
        ),
    );
    let scale = kubectl(
        &["get", "--raw", &format!("/apis/modelrollout.dev/v1alpha1/namespaces/{ns}/modelrollouts/fraud/scale")],
        None,
    );
    let scale: Value = serde_json::from_slice(&scale.stdout).unwrap();
    assert_eq!(scale["status"]["selector"], "modelrollout.dev/rollout=fraud,modelrollout.dev/version=v1", "{scale}");

    // v2 through a long 50% stage, the clients' load on both versions.
    let stages = json!([{"name": "canary-50", "weight": 50, "minDuration": "150s"}, {"name": "full", "weight": 100, "minDuration": "5s"}]);
    let mut v2 = autoscaled(
        Manifest::fraud_on_node("v2", from_image("fraud-v2.onnx")).stages(stages).gates(guardrails()).build(),
    );
    v2["spec"]["afterPromotion"] = json!({"retention": "10m", "mode": "Warm"});
    gitops_apply(&ns, &v2);
    let at_50 = env.wait(Duration::from_secs(120), "v2 at 50%", |s| s.canary_weight == 50).await;
    let stage_clock = at_50.status.unwrap().stage_start_time;
    let start = spec_replicas(&env.get().await);
    // The autoscaler changes the size during the stage; every version follows it.
    let mr = wait_for("the autoscaler resizing the rollout during the 50% stage", Duration::from_secs(140), || async {
        let mr = env.get().await;
        let st = mr.status.clone().unwrap();
        assert_eq!(st.stage_name.as_deref(), Some("canary-50"), "the stage ended before the autoscaler acted");
        (spec_replicas(&mr) != start).then_some(mr)
    })
    .await;
    let sized = spec_replicas(&mr);
    println!("HPA_STAGE replicas_before={start} replicas_after={sized}");
    // Stable at the autoscaler's size, the candidate at half of it (its stage's share); the
    // candidate's new pod joins its stage: neither its traffic nor the stage's clock stop for it.
    at_autoscalers_size(&env, &[("fraud-v1", 100), ("fraud-v2", 50)], "every version at its size").await;
    let st = env.get().await.status.unwrap();
    assert_eq!((st.stage_name.as_deref(), st.canary_weight), (Some("canary-50"), 50));
    assert_eq!(st.stage_start_time, stage_clock, "the stage's clock was not restarted by the resize");

    // Promoted: v2 keeps the autoscaler's size; v1 is kept warm at it.
    env.wait(Duration::from_secs(240), "v2 promoted", |s| s.phase == Some(Phase::Promoted)).await;
    let mr = env.get().await;
    assert_eq!(
        mr.status.as_ref().unwrap().selector.as_deref(),
        Some("modelrollout.dev/rollout=fraud,modelrollout.dev/version=v2")
    );
    at_autoscalers_size(&env, &[("fraud-v2", 100)], "v2 promoted at the autoscaler's size").await;

    // Undo: v1 serves again, at the size the autoscaler last set.
    let (code, out, err) = plugin(&["undo", "fraud", "-n", &ns, "--reason", "autoscaled undo"]).await;
    assert_eq!(code, 0, "{out}{err}");
    env.wait(Duration::from_secs(30), "undone", |s| s.reason.as_deref() == Some(reasons::UNDONE)).await;
    let size = at_autoscalers_size(&env, &[("fraud-v1", 100)], "v1 back at the autoscaler's size").await;
    println!("HPA_UNDO replicas={size}");
    let answers = load.shutdown().await;
    assert!(answer_failures(&answers).is_empty(), "{:?}", answer_failures(&answers));
}
