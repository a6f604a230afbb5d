//! Rollouts end to end: the controller binary (as the chart's service account), real sidecars
//! serving the committed ONNX models, real Prometheus, traffic from the harness.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::DynamicObject;
use kube::{Api, Client};
use modelrollout::api::{ModelRollout, Outcome, Phase};
use modelrollout_e2e::harness::{ControllerProc, Harness, service_account_kubeconfig};
use modelrollout_e2e::*;
use serde_json::{Value, json};

fn sha(file: &str) -> String {
    let sums = std::fs::read_to_string(root().join("models/SHA256SUMS")).unwrap();
    sums.lines().find(|l| l.ends_with(&format!("  {file}"))).unwrap()[..64].to_string()
}

fn contract(extra: Option<&str>) -> Value {
    let mut inputs = vec![
        json!({"name": "amount", "type": "float", "min": 0, "max": 20000}),
        json!({"name": "hour", "type": "int", "min": 0, "max": 23}),
        json!({"name": "merchant_risk", "type": "float", "min": 0, "max": 1}),
        json!({"name": "distance_km", "type": "float", "min": 0, "max": 20000}),
        json!({"name": "card_age_days", "type": "int", "min": 0, "max": 20000}),
        json!({"name": "foreign", "type": "int", "min": 0, "max": 1}),
    ];
    if let Some(name) = extra {
        inputs.push(json!({"name": name, "type": "float"}));
    }
    json!({"inputs": inputs, "output": {"threshold": 0.5}})
}

/// The ModelRollout as a GitOps repository would hold it.
fn manifest(version: &str, file: &str, stages: Value, gates: Value) -> Value {
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

fn default_gates() -> Value {
    json!({
        "errorRate": {"max": 0.01, "minSamples": 20},
        // The suite shares two cores with the control plane: the limit guards against a broken
        // candidate, not this machine's noise.
        "latencyP95": {"max": 1000, "minSamples": 20},
        "falsePositiveRate": {"maxAboveStable": 0.08, "minSamples": 15},
        "captureRate": {"maxBelowStable": 0.15, "minSamples": 8}
    })
}

fn four_stages(secs: u32) -> Value {
    let d = format!("{secs}s");
    json!([
        {"name": "shadow", "weight": 0, "mirrorPercent": 100, "minDuration": d},
        {"name": "canary-5", "weight": 5, "minDuration": d},
        {"name": "canary-25", "weight": 25, "minDuration": d},
        {"name": "full", "weight": 100, "minDuration": d}
    ])
}

/// `kubectl apply --server-side` as a GitOps tool does, with its own field manager.
fn gitops_apply(ns: &str, obj: &Value) {
    kubectl_ok(&["apply", "--server-side", "--field-manager", "gitops", "-n", ns, "-f", "-"], Some(&obj.to_string()));
}

struct Env {
    ns: TestNamespace,
    client: Client,
    controller: ControllerProc,
    harness: Harness,
    kubeconfig: std::path::PathBuf,
}

/// A namespace with a user-owned HTTPRoute, the controller and the harness, and v1 as stable.
async fn setup(prefix: &str, rps: u32) -> Env {
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
    let controller = ControllerProc::start(&ns.name, &kubeconfig, &["--leader-election=false"]);
    let client = client().await;
    let harness = Harness::start(client.clone(), &ns.name, "fraud", "fraud", rps);
    gitops_apply(&ns.name, &manifest("v1", "fraud-v1.onnx", four_stages(5), default_gates()));
    let env = Env { ns, client, controller, harness, kubeconfig };
    wait_phase(&env, Duration::from_secs(60), |s| s.phase == Some(Phase::Idle)).await;
    wait_for("the stable sidecar", Duration::from_secs(30), || async {
        env.harness.running_versions().contains(&"v1".to_string()).then_some(())
    })
    .await;
    env
}

async fn get(env: &Env) -> ModelRollout {
    Api::<ModelRollout>::namespaced(env.client.clone(), &env.ns.name).get("fraud").await.unwrap()
}

async fn wait_phase(
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
async fn route_rule(env: &Env) -> Value {
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

async fn replicas(env: &Env, name: &str) -> Option<i32> {
    let api: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns.name);
    api.get_opt(name).await.unwrap().and_then(|d| d.spec?.replicas)
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn a_good_candidate_goes_through_every_stage_and_becomes_stable() {
    let env = setup("good", 150).await;
    gitops_apply(&env.ns.name, &manifest("v2", "fraud-v2.onnx", four_stages(5), default_gates()));
    let mut seen = Vec::new();
    let mr = wait_phase(&env, Duration::from_secs(180), |s| {
        if let Some(name) = &s.stage_name
            && seen.last() != Some(name)
        {
            seen.push(name.clone());
        }
        s.phase == Some(Phase::Promoted)
    })
    .await;
    assert_eq!(seen, ["shadow", "canary-5", "canary-25", "full"], "every stage in order");
    let st = mr.status.unwrap();
    assert_eq!(st.stable_version.as_deref(), Some("v2"));
    assert_eq!(st.history[0].outcome, Outcome::Promoted);
    assert_eq!(st.history[0].version, "v2");
    // The route sends everything to stable (now v2), and the old stable is scaled down after its delay.
    let rule = route_rule(&env).await;
    assert_eq!(rule["backendRefs"], json!([{"name": "fraud-stable", "port": 8080, "weight": 100}]));
    assert_eq!(rule["matches"][0]["path"]["value"], "/", "the user's fields are untouched");
    wait_for("v1 scaled to zero", Duration::from_secs(30), || async {
        (replicas(&env, "fraud-v1").await == Some(0)).then_some(())
    })
    .await;
    assert!(
        env.harness.traffic.canary_ok.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the candidate served live traffic"
    );
    assert!(env.harness.traffic.mirrored.load(std::sync::atomic::Ordering::Relaxed) > 0, "shadow traffic was mirrored");
    assert_eq!(env.harness.traffic.stable_errors.load(std::sync::atomic::Ordering::Relaxed), 0);
    env.harness.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn b_a_candidate_with_a_higher_false_positive_rate_is_rolled_back_at_5_percent() {
    let env = setup("badfpr", 150).await;
    let stages = json!([
        {"name": "canary-5", "weight": 5, "minDuration": "20s"},
        {"name": "canary-25", "weight": 25, "minDuration": "20s"},
        {"name": "full", "weight": 100, "minDuration": "20s"}
    ]);
    gitops_apply(&env.ns.name, &manifest("v2-bad", "fraud-v2-bad-fpr.onnx", stages, default_gates()));
    let mr =
        wait_phase(&env, Duration::from_secs(120), |s| matches!(s.phase, Some(Phase::RolledBack | Phase::Promoted)))
            .await;
    let st = mr.status.unwrap();
    assert_eq!(st.phase, Some(Phase::RolledBack), "{:?}", st.message);
    assert_eq!(st.stage_name.as_deref(), Some("canary-5"));
    let msg = st.message.unwrap();
    assert!(msg.contains("falsePositiveRate"), "{msg}");
    let fpr = st.last_analysis.unwrap().gates.into_iter().find(|g| g.name == "falsePositiveRate").unwrap();
    assert_eq!(fpr.verdict, modelrollout::api::Verdict::Fail);
    assert!(fpr.value.unwrap() > fpr.stable_value.unwrap() + 0.08, "{fpr:?}");
    let rule = route_rule(&env).await;
    assert_eq!(rule["backendRefs"], json!([{"name": "fraud-stable", "port": 8080, "weight": 100}]));
    wait_for("the failed candidate scaled to zero", Duration::from_secs(30), || async {
        (replicas(&env, "fraud-v2-bad").await == Some(0)).then_some(())
    })
    .await;
    assert_eq!(replicas(&env, "fraud-v1").await, Some(2), "stable untouched");
    // Stable kept serving without errors through the rollback.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = &env.harness.traffic;
    assert!(t.stable_ok.load(std::sync::atomic::Ordering::Relaxed) > 100);
    assert_eq!(t.stable_errors.load(std::sync::atomic::Ordering::Relaxed), 0, "{:?}", t.error_samples.lock().unwrap());
    env.harness.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn g_a_candidate_needing_an_input_stable_lacks_is_refused_before_traffic_moves() {
    let env = setup("contract", 50).await;
    let mut m = manifest("v3", "fraud-v2.onnx", four_stages(5), default_gates());
    m["spec"]["model"]["contract"] = contract(Some("device_fingerprint"));
    gitops_apply(&env.ns.name, &m);
    let mr = wait_phase(&env, Duration::from_secs(30), |s| s.phase == Some(Phase::Failed)).await;
    let st = mr.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("ContractMismatch"));
    assert!(st.message.unwrap().contains("device_fingerprint"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(replicas(&env, "fraud-v3").await, None, "no candidate Deployment was created");
    let rule = route_rule(&env).await;
    assert_eq!(rule["backendRefs"], json!([{"name": "fraud-stable", "port": 8080, "weight": 100}]));
    env.harness.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn e_a_controller_killed_mid_stage_resumes_the_same_stage() {
    let mut env = setup("crash", 150).await;
    gitops_apply(&env.ns.name, &manifest("v2", "fraud-v2.onnx", four_stages(12), default_gates()));
    let before = wait_phase(&env, Duration::from_secs(90), |s| s.stage_index == Some(1)).await.status.unwrap();
    env.controller.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.controller = ControllerProc::start(&env.ns.name, &env.kubeconfig, &["--leader-election=false"]);
    // Right after the restart: the same stage, the same stage clock.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = get(&env).await.status.unwrap();
    assert_eq!(after.stage_index, Some(1), "neither skipped nor repeated: {:?}", after.message);
    assert_eq!(after.stage_start_time, before.stage_start_time, "the stage did not restart");
    let mut seen = vec!["canary-5".to_string()];
    wait_phase(&env, Duration::from_secs(120), |s| {
        if let Some(name) = &s.stage_name
            && seen.last() != Some(name)
        {
            seen.push(name.clone());
        }
        s.phase == Some(Phase::Promoted)
    })
    .await;
    assert_eq!(seen, ["canary-5", "canary-25", "full"]);
    env.harness.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn f_pause_abort_retry_and_promote_through_the_spec_survive_gitops_reapply() {
    let env = setup("ops", 100).await;
    let m2 = manifest("v2", "fraud-v2.onnx", four_stages(30), default_gates());
    gitops_apply(&env.ns.name, &m2);
    wait_phase(&env, Duration::from_secs(60), |s| s.phase == Some(Phase::Progressing) && s.stage_index == Some(0))
        .await;
    let patch = |body: Value| {
        kubectl_ok(
            &["patch", "modelrollout", "fraud", "-n", &env.ns.name, "--type", "merge", "-p", &body.to_string()],
            None,
        )
    };
    // Pause: held, and a GitOps re-apply of the manifest (which does not mention paused) keeps it.
    patch(json!({"spec": {"paused": true}}));
    wait_phase(&env, Duration::from_secs(20), |s| s.phase == Some(Phase::Paused)).await;
    gitops_apply(&env.ns.name, &m2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(get(&env).await.spec.paused, "GitOps did not undo the pause");
    assert_eq!(get(&env).await.status.unwrap().phase, Some(Phase::Paused));
    // Resume, then promote one stage.
    patch(json!({"spec": {"paused": false}}));
    patch(json!({"spec": {"operations": {"promote": {"id": "p1", "reason": "looks fine"}}}}));
    wait_phase(&env, Duration::from_secs(20), |s| s.stage_index == Some(1)).await;
    // Abort: rolled back; a GitOps re-apply neither removes the request nor re-runs it.
    patch(json!({"spec": {"operations": {"abort": {"id": "a1", "reason": "pager"}}}}));
    let mr = wait_phase(&env, Duration::from_secs(20), |s| s.phase == Some(Phase::RolledBack)).await;
    assert!(mr.status.unwrap().message.unwrap().contains("pager"));
    gitops_apply(&env.ns.name, &m2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mr = get(&env).await;
    assert_eq!(mr.spec.operations.abort.as_ref().map(|a| a.id.as_str()), Some("a1"));
    assert_eq!(mr.status.unwrap().phase, Some(Phase::RolledBack));
    // Retry starts again from the first stage; promote --full finishes it.
    patch(json!({"spec": {"operations": {"retry": {"id": "r1"}}}}));
    wait_phase(&env, Duration::from_secs(20), |s| s.phase == Some(Phase::Progressing) && s.stage_index == Some(0))
        .await;
    patch(json!({"spec": {"operations": {"promote": {"id": "p2", "full": true}}}}));
    let mr = wait_phase(&env, Duration::from_secs(20), |s| s.phase == Some(Phase::Promoted)).await;
    assert_eq!(mr.status.unwrap().stable_version.as_deref(), Some("v2"));
    env.harness.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn h_the_controller_runs_with_exactly_the_chart_role() {
    let ns = TestNamespace::new("rbac").await;
    service_account_kubeconfig(&ns.name);
    let sa = format!("system:serviceaccount:{}:modelrollout-controller", ns.name);
    let can = |verb: &str, resource: &str| {
        let out = kubectl(&["auth", "can-i", verb, resource, "-n", &ns.name, "--as", &sa], None);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can("patch", "deployments.apps"));
    assert!(can("patch", "modelrollouts.modelrollout.dev/status"));
    assert!(can("patch", "httproutes.gateway.networking.k8s.io"));
    for (verb, resource) in [
        ("delete", "deployments.apps"),
        ("get", "secrets"),
        ("create", "pods"),
        ("delete", "modelrollouts.modelrollout.dev"),
        ("update", "services"),
    ] {
        assert!(!can(verb, resource), "the role must not allow {verb} {resource}");
    }
    ns.delete().await;
}
