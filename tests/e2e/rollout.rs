//! Rollouts end to end: the controller binary (as the chart's service account), real sidecars
//! serving the committed ONNX models, real Prometheus, traffic from the harness.

use std::time::Duration;

use modelrollout::api::{Outcome, Phase};
use modelrollout_e2e::*;
use serde_json::{Value, json};

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn a_good_candidate_goes_through_every_stage_and_becomes_stable() {
    // 250 req/s: at 5% a 5 s window holds ~45 candidate requests (~33 negatives for the
    // false-positive-rate gate), as the analysis windows no longer overlap.
    let env = Env::kwok_fraud("good", 250).await;
    // A webhook that refuses the first two deliveries: they are retried, and never hold the rollout.
    let hook = Webhook::start(2).await;
    let mut m =
        Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(four_stages(5)).gates(default_gates()).build();
    m["spec"]["notifications"] =
        json!({"webhooks": [{"url": hook.url, "events": ["StageChanged", "Promoted", "RolledBack"]}]});
    gitops_apply(&env.ns.name, &m);
    let mut seen = Vec::new();
    let mr = env
        .wait(Duration::from_secs(180), "the status", |s| {
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
    let rule = env.route_rule().await;
    assert_eq!(rule["backendRefs"], json!([{"name": "fraud-stable", "port": 8080, "weight": 100}]));
    assert_eq!(rule["matches"][0]["path"]["value"], "/", "the user's fields are untouched");
    wait_for("v1 scaled to zero", Duration::from_secs(30), || async {
        (env.replicas("fraud-v1").await == Some(0)).then_some(())
    })
    .await;
    assert!(
        env.harness().traffic.canary_ok.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the candidate served live traffic"
    );
    assert!(
        env.harness().traffic.mirrored.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "shadow traffic was mirrored"
    );
    let t = &env.harness().traffic;
    assert_eq!(t.stable_errors.load(std::sync::atomic::Ordering::Relaxed), 0, "{:?}", t.error_samples.lock().unwrap());
    // Every stage change and the promotion reached the webhook (after its refusals), Slack-style.
    let events = wait_for("webhook deliveries", Duration::from_secs(30), || async {
        let e = hook.events();
        (e.iter().filter(|e| *e == "StageChanged").count() >= 4 && e.iter().any(|e| e == "Promoted")).then_some(e)
    })
    .await;
    assert!(!events.iter().any(|e| e == "RolledBack"), "{events:?}");
    let first = hook.received.lock().unwrap()[0].clone();
    assert!(first["text"].as_str().unwrap().contains(&env.ns.name), "{first}");
    // The Kubernetes Events say the same: each stage an Event of its own, with its own note (not
    // one Event whose series counts the later stages under the first stage's note).
    let events: Value =
        serde_json::from_str(&kubectl_ok(&["get", "events.v1.events.k8s.io", "-n", &env.ns.name, "-o", "json"], None))
            .unwrap();
    let notes: Vec<String> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "StageAdvanced")
        .map(|e| e["note"].as_str().unwrap_or_default().to_string())
        .collect();
    for stage in ["shadow", "canary-5", "canary-25", "full"] {
        let prefix = format!("stage {stage} (");
        assert_eq!(notes.iter().filter(|n| n.starts_with(&prefix)).count(), 1, "one Event for {stage}: {notes:#?}");
    }
    assert!(
        events["items"].as_array().unwrap().iter().any(|e| e["reason"] == "Promoted"),
        "a Promoted Event: {events}"
    );
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn j_deleting_a_rollout_mid_stage_restores_all_traffic_to_stable_first() {
    let env = Env::kwok_fraud("delete", 100).await;
    let mut stages = four_stages(60);
    stages[0] = json!({"name": "canary-5", "weight": 5, "minDuration": "60s"});
    stages[1] = json!({"name": "canary-10", "weight": 10, "minDuration": "60s"});
    gitops_apply(
        &env.ns.name,
        &Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(stages).gates(default_gates()).build(),
    );
    env.wait(Duration::from_secs(60), "the status", |s| s.canary_weight == 5).await;
    wait_for("the canary in the route", Duration::from_secs(20), || async {
        (env.route_rule().await["backendRefs"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    kubectl_ok(&["delete", "modelrollout", "fraud", "-n", &env.ns.name, "--wait=true", "--timeout=60s"], None);
    let rule = env.route_rule().await;
    assert_eq!(
        rule["backendRefs"],
        json!([{"name": "fraud-stable", "port": 8080, "weight": 100}]),
        "restored before deletion"
    );
    assert_eq!(rule["matches"][0]["path"]["value"], "/", "the user's route itself stays");
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn b_a_candidate_with_a_higher_false_positive_rate_is_rolled_back_at_5_percent() {
    let env = Env::kwok_fraud("badfpr", 150).await;
    let stages = canary_stages(20);
    // Watch the route as a gateway would, noting when the canary's weight goes back to 0.
    let routes: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(env.client.clone(), &env.ns.name, &modelrollout::routers::http_route_resource());
    let weight_zero_at = tokio::spawn(async move {
        use futures::StreamExt;
        let cfg = kube::runtime::watcher::Config::default().fields("metadata.name=fraud");
        let mut stream = std::pin::pin!(kube::runtime::watcher(routes, cfg));
        let mut canary_seen = false;
        while let Some(Ok(ev)) = stream.next().await {
            let o = match ev {
                kube::runtime::watcher::Event::Apply(o) | kube::runtime::watcher::Event::InitApply(o) => o,
                _ => continue,
            };
            let w = o.data["spec"]["rules"][0]["backendRefs"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["name"] == "fraud-canary"))
                .and_then(|r| r["weight"].as_u64())
                .unwrap_or(0);
            if w > 0 {
                canary_seen = true;
            } else if canary_seen {
                return std::time::SystemTime::now();
            }
        }
        panic!("route watch ended");
    });
    gitops_apply(
        &env.ns.name,
        &Manifest::fraud("v2-bad", local_file("fraud-v2-bad-fpr.onnx")).stages(stages).gates(default_gates()).build(),
    );
    let mr = env
        .wait(Duration::from_secs(120), "the status", |s| matches!(s.phase, Some(Phase::RolledBack | Phase::Promoted)))
        .await;
    // Rollback speed, for BENCHMARKS.md (printed, not asserted: benches/rollback.sh collects it).
    let seen =
        tokio::time::timeout(Duration::from_secs(10), weight_zero_at).await.expect("the route went back").unwrap();
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", env.controller().metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let decided: f64 = metrics
        .lines()
        .find(|l| l.starts_with("modelrollout_rollback_decided_timestamp_seconds{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("the controller exports the rollback decision time");
    let seen = seen.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    println!("ROLLBACK_SPEED decision_to_route_weight_0_ms={:.1}", (seen - decided) * 1e3);
    let st = mr.status.unwrap();
    assert_eq!(st.phase, Some(Phase::RolledBack), "{:?}", st.message);
    assert_eq!(st.stage_name.as_deref(), Some("canary-5"));
    // The last analysis is exported as a timestamp (what an "analysis overdue" alert reads).
    let analysed = st.last_analysis.as_ref().expect("analysed").time.0.as_millisecond() as f64 / 1e3;
    let series = format!("modelrollout_rollout_last_analysis_timestamp_seconds{{namespace=\"{}\",name=", env.ns.name);
    let exported: f64 = metrics
        .lines()
        .find(|l| l.starts_with(&series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("the controller exports the last analysis time");
    // Status keeps the analysis time to the microsecond; the export keeps its milliseconds.
    assert!((exported - analysed).abs() < 0.002, "exported {exported}, status {analysed}");
    let msg = st.message.unwrap();
    assert!(msg.contains("falsePositiveRate"), "{msg}");
    let fpr = st.last_analysis.unwrap().gates.into_iter().find(|g| g.name == "falsePositiveRate").unwrap();
    assert_eq!(fpr.verdict, modelrollout::api::Verdict::Fail);
    assert!(fpr.value.unwrap() > fpr.stable_value.unwrap() + 0.08, "{fpr:?}");
    let rule = env.route_rule().await;
    assert_eq!(rule["backendRefs"], json!([{"name": "fraud-stable", "port": 8080, "weight": 100}]));
    wait_for("the failed candidate scaled to zero", Duration::from_secs(30), || async {
        (env.replicas("fraud-v2-bad").await == Some(0)).then_some(())
    })
    .await;
    assert_eq!(env.replicas("fraud-v1").await, Some(2), "stable untouched");
    // Stable kept serving without errors through the rollback.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = &env.harness().traffic;
    assert!(t.stable_ok.load(std::sync::atomic::Ordering::Relaxed) > 100);
    assert_eq!(t.stable_errors.load(std::sync::atomic::Ordering::Relaxed), 0, "{:?}", t.error_samples.lock().unwrap());
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn b2_a_bad_candidate_paused_at_5_percent_is_still_rolled_back_by_its_gates() {
    let env = Env::kwok_fraud("pausedbad", 150).await;
    // Applied paused: it holds 5% for as long as it is paused, and its gates keep judging it.
    let mut m = Manifest::fraud("v2-bad", local_file("fraud-v2-bad-fpr.onnx"))
        .stages(canary_stages(20))
        .gates(default_gates())
        .build();
    m["spec"]["paused"] = json!(true);
    gitops_apply(&env.ns.name, &m);
    let held = env.wait(Duration::from_secs(60), "the status", |s| s.phase == Some(Phase::Paused)).await;
    assert_eq!(held.status.unwrap().canary_weight, 5, "paused at the first stage's weight");
    let mr = env.wait(Duration::from_secs(120), "the status", |s| s.phase == Some(Phase::RolledBack)).await;
    assert!(mr.spec.paused, "still paused");
    let st = mr.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some(modelrollout::conditions::reasons::GATES_FAILED), "{:?}", st.message);
    assert!(st.message.unwrap().contains("falsePositiveRate"));
    assert_eq!(env.route_rule().await["backendRefs"], json!([{"name": "fraud-stable", "port": 8080, "weight": 100}]));
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn c_a_candidate_with_a_latency_regression_over_the_p95_gate_is_rolled_back() {
    let env = Env::kwok_fraud("slow", 150).await;
    // fraud-v2-slow scores exactly as v2 does (same decisions: the quality gates pass) but really
    // computes ~10 ms more per row; the p95 gate allows 6 ms. The other gates stay as in (a).
    let mut gates = default_gates();
    gates["latencyP95"] = json!({"max": 6, "minSamples": 20});
    let stages = canary_stages(20);
    gitops_apply(
        &env.ns.name,
        &Manifest::fraud("v2-slow", local_file("fraud-v2-slow.onnx")).stages(stages).gates(gates).build(),
    );
    let mr = env
        .wait(Duration::from_secs(120), "the status", |s| matches!(s.phase, Some(Phase::RolledBack | Phase::Promoted)))
        .await;
    let st = mr.status.unwrap();
    assert_eq!(st.phase, Some(Phase::RolledBack), "{:?}", st.message);
    assert_eq!(st.stage_name.as_deref(), Some("canary-5"), "rolled back in the first stage");
    let gates = st.last_analysis.unwrap().gates;
    let p95 = gates.iter().find(|g| g.name == "latencyP95").unwrap();
    assert_eq!(p95.verdict, modelrollout::api::Verdict::Fail, "{p95:?}");
    assert!(p95.value.unwrap() > 6.0, "{p95:?}");
    for g in gates.iter().filter(|g| g.name != "latencyP95") {
        assert_ne!(g.verdict, modelrollout::api::Verdict::Fail, "only latency regressed: {g:?}");
    }
    assert!(st.message.unwrap().contains("latencyP95"));
    assert_eq!(env.route_rule().await["backendRefs"], json!([{"name": "fraud-stable", "port": 8080, "weight": 100}]));
    let t = &env.harness().traffic;
    assert_eq!(t.stable_errors.load(std::sync::atomic::Ordering::Relaxed), 0, "{:?}", t.error_samples.lock().unwrap());
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn g_a_candidate_needing_an_input_stable_lacks_is_refused_before_traffic_moves() {
    let env = Env::kwok_fraud("contract", 50).await;
    let mut m =
        Manifest::fraud("v3", local_file("fraud-v2.onnx")).stages(four_stages(5)).gates(default_gates()).build();
    m["spec"]["model"]["contract"] = contract(Some("device_fingerprint"));
    gitops_apply(&env.ns.name, &m);
    let mr = env.wait(Duration::from_secs(30), "the status", |s| s.phase == Some(Phase::Failed)).await;
    let st = mr.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("ContractMismatch"));
    assert!(st.message.unwrap().contains("device_fingerprint"));
    // A reconcile after the refusal: it still creates nothing.
    let again = env.reconciled().await.status.unwrap();
    assert_eq!(again.phase, Some(Phase::Failed));
    assert_eq!(env.replicas("fraud-v3").await, None, "no candidate Deployment was created");
    let rule = env.route_rule().await;
    assert_eq!(rule["backendRefs"], json!([{"name": "fraud-stable", "port": 8080, "weight": 100}]));
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn e_a_controller_killed_mid_stage_resumes_the_same_stage() {
    let mut env = Env::kwok_fraud("crash", 150).await;
    gitops_apply(
        &env.ns.name,
        &Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(four_stages(12)).gates(default_gates()).build(),
    );
    let before = env.wait(Duration::from_secs(90), "the status", |s| s.stage_index == Some(1)).await.status.unwrap();
    env.controller_mut().kill();
    let restarted = jiff::Timestamp::now();
    env.controller = Some(env.start_controller(&["--leader-election=false"]));
    // The restarted controller's first analysis: taken in the same stage, on the same stage clock.
    let after = env
        .wait(Duration::from_secs(30), "the status", |s| {
            s.last_analysis.as_ref().is_some_and(|run| run.time.0 > restarted)
        })
        .await
        .status
        .unwrap();
    assert_eq!(after.last_analysis.as_ref().map(|r| r.stage_index), Some(1), "neither skipped nor repeated");
    assert_eq!(after.stage_start_time, before.stage_start_time, "the stage did not restart: {:?}", after.message);
    let mut seen = vec!["canary-5".to_string()];
    env.wait(Duration::from_secs(120), "the status", |s| {
        if let Some(name) = &s.stage_name
            && seen.last() != Some(name)
        {
            seen.push(name.clone());
        }
        s.phase == Some(Phase::Promoted)
    })
    .await;
    assert_eq!(seen, ["canary-5", "canary-25", "full"]);
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn f_pause_abort_retry_and_promote_through_the_spec_survive_gitops_reapply() {
    let env = Env::kwok_fraud("ops", 100).await;
    let m2 = Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(four_stages(30)).gates(default_gates()).build();
    gitops_apply(&env.ns.name, &m2);
    env.wait(Duration::from_secs(60), "the status", |s| {
        s.phase == Some(Phase::Progressing) && s.stage_index == Some(0)
    })
    .await;
    let patch = |body: Value| {
        kubectl_ok(
            &["patch", "modelrollout", "fraud", "-n", &env.ns.name, "--type", "merge", "-p", &body.to_string()],
            None,
        )
    };
    // Pause: held, and a GitOps re-apply of the manifest (which does not mention paused) keeps it.
    patch(json!({"spec": {"paused": true}}));
    env.wait(Duration::from_secs(20), "the status", |s| s.phase == Some(Phase::Paused)).await;
    gitops_apply(&env.ns.name, &m2);
    assert!(env.get().await.spec.paused, "GitOps did not undo the pause");
    assert_eq!(env.reconciled().await.status.unwrap().phase, Some(Phase::Paused), "held after a reconcile");
    // Resume, then promote one stage.
    patch(json!({"spec": {"paused": false}}));
    patch(json!({"spec": {"operations": {"promote": {"id": "p1", "reason": "looks fine"}}}}));
    env.wait(Duration::from_secs(20), "the status", |s| s.stage_index == Some(1)).await;
    // Abort: rolled back; a GitOps re-apply neither removes the request nor re-runs it.
    patch(json!({"spec": {"operations": {"abort": {"id": "a1", "reason": "pager"}}}}));
    let mr = env.wait(Duration::from_secs(20), "the status", |s| s.phase == Some(Phase::RolledBack)).await;
    assert!(mr.status.unwrap().message.unwrap().contains("pager"));
    gitops_apply(&env.ns.name, &m2);
    let mr = env.reconciled().await;
    assert_eq!(mr.spec.operations.abort.as_ref().map(|a| a.id.as_str()), Some("a1"));
    assert_eq!(mr.status.unwrap().phase, Some(Phase::RolledBack), "the abort did not run again");
    // Retry starts again from the first stage; promote --full finishes it.
    patch(json!({"spec": {"operations": {"retry": {"id": "r1"}}}}));
    env.wait(Duration::from_secs(20), "the status", |s| {
        s.phase == Some(Phase::Progressing) && s.stage_index == Some(0)
    })
    .await;
    patch(json!({"spec": {"operations": {"promote": {"id": "p2", "full": true}}}}));
    let mr = env.wait(Duration::from_secs(20), "the status", |s| s.phase == Some(Phase::Promoted)).await;
    assert_eq!(mr.status.unwrap().stable_version.as_deref(), Some("v2"));
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn h_the_controller_runs_with_exactly_the_chart_role() {
    let ns = TestNamespace::new("rbac").await;
    service_account_kubeconfig(&ns.name);
    let sa = format!("system:serviceaccount:{}:{}-controller", ns.name, chart_release(&ns.name));
    let can = |verb: &str, resource: &str| {
        let out = kubectl(&["auth", "can-i", verb, resource, "-n", &ns.name, "--as", &sa], None);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can("patch", "deployments.apps"));
    // A deprecated version's Deployment is removed (afterPromotion.removeAfter).
    assert!(can("delete", "deployments.apps"));
    assert!(can("patch", "modelrollouts.modelrollout.dev/status"));
    assert!(can("patch", "httproutes.gateway.networking.k8s.io"));
    assert!(can("patch", "leases.coordination.k8s.io"));
    let elsewhere =
        kubectl(&["auth", "can-i", "patch", "leases.coordination.k8s.io", "-n", "default", "--as", &sa], None);
    assert_eq!(String::from_utf8_lossy(&elsewhere.stdout).trim(), "no", "leases only in the release namespace");
    for (verb, resource) in
        [("get", "secrets"), ("create", "pods"), ("delete", "modelrollouts.modelrollout.dev"), ("update", "services")]
    {
        assert!(!can(verb, resource), "the role must not allow {verb} {resource}");
    }
    ns.delete().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn i_two_controllers_one_leader_and_the_other_takes_over_when_it_dies() {
    let lease = ["--leader-election=true", "--lease-seconds", "4"];
    let mut env = Env::kwok("leader", 150, &lease, Manifest::fraud("v1", local_file("fraud-v1.onnx")).build()).await;
    let mut second = env.start_controller(&lease);
    gitops_apply(
        &env.ns.name,
        &Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(four_stages(8)).gates(default_gates()).build(),
    );
    env.wait(Duration::from_secs(90), "the status", |s| s.stage_index == Some(1)).await;
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(env.client.clone(), &env.ns.name);
    let holder =
        |l: k8s_openapi::api::coordination::v1::Lease| l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    let first_holder = holder(leases.get("modelrollout-controller").await.unwrap());
    // Only the leader acts: the other has not published a leader gauge of 1.
    let leader_gauge = |port: u16| async move {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok()?.text().await.ok()?;
        text.lines().find(|l| l.starts_with("modelrollout_leader ")).map(|l| l.ends_with(" 1"))
    };
    let (a, b) = (leader_gauge(env.controller().metrics_port).await, leader_gauge(second.metrics_port).await);
    assert_eq!((a, b), (Some(true), Some(false)), "exactly one leader (the first started)");
    env.controller_mut().kill();
    let mr = env.wait(Duration::from_secs(120), "the status", |s| s.phase == Some(Phase::Promoted)).await;
    assert_eq!(mr.status.unwrap().stable_version.as_deref(), Some("v2"));
    assert_ne!(holder(leases.get("modelrollout-controller").await.unwrap()), first_holder, "the lease changed hands");
    assert_eq!(leader_gauge(second.metrics_port).await, Some(true));
    second.kill();
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn n_sigterm_exits_cleanly_and_hands_the_lease_over_at_once() {
    // A long lease: only an explicit release lets the standby act within it.
    let lease = ["--leader-election=true", "--lease-seconds", "40"];
    let mut env = Env::kwok("sigterm", 120, &lease, Manifest::fraud("v1", local_file("fraud-v1.onnx")).build()).await;
    let second = env.start_controller(&lease);
    let pid = env.controller().child.id().to_string();
    let asked = std::time::Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = loop {
        if let Some(status) = env.controller_mut().child.try_wait().unwrap() {
            break status;
        }
        assert!(asked.elapsed() < Duration::from_secs(15), "still running 15 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exited_after = asked.elapsed();
    assert!(status.success(), "exit status {status:?}: {}", env.controller().logs());
    // The standby acts long before the 40 s lease would have expired: the leader released it.
    gitops_apply(
        &env.ns.name,
        &Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(four_stages(5)).gates(default_gates()).build(),
    );
    env.wait(Duration::from_secs(20), "the status", |s| s.phase == Some(Phase::Progressing)).await;
    println!("SIGTERM exit after {exited_after:?}; standby took over within the lease");
    drop(second);
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn o_a_hand_edited_deployment_is_put_back_at_once() {
    // The controller skips re-applying a Deployment it applied recently — but only while the
    // cached Deployment still has the generation its apply produced: an edit is repaired at once.
    let env = Env::kwok_fraud("edit", 20).await;
    let want = env.replicas("fraud-v1").await.expect("the stable Deployment");
    kubectl_ok(&["scale", "deployment", "fraud-v1", "-n", &env.ns.name, "--replicas", &(want + 3).to_string()], None);
    wait_for("the replicas put back", Duration::from_secs(30), || async {
        (env.replicas("fraud-v1").await == Some(want)).then_some(())
    })
    .await;
    // A label edit does not move the generation; the watch still sees it and the label comes back.
    let label = "modelrollout.dev/version";
    let version = || {
        kubectl_ok(
            &[
                "get",
                "deployment",
                "fraud-v1",
                "-n",
                &env.ns.name,
                "-o",
                "jsonpath={.metadata.labels.modelrollout\\.dev/version}",
            ],
            None,
        )
    };
    let want = version();
    kubectl_ok(
        &["label", "deployment", "fraud-v1", "-n", &env.ns.name, &format!("{label}=edited"), "--overwrite"],
        None,
    );
    wait_for("the label put back", Duration::from_secs(30), || async { (version() == want).then_some(()) }).await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn p_a_hand_edited_service_is_put_back_by_the_first_reconcile_after_reapply_after() {
    // Services are not watched: a reconcile after `--reapply-after` reads each one (from the
    // apiserver's watch cache) and applies it again only if it drifted. The test asks for that
    // reconcile by touching the rollout; in a cluster the periodic resync brings it.
    let env = Env::kwok(
        "svc",
        20,
        &["--leader-election=false", "--reapply-after", "2s"],
        Manifest::fraud("v1", local_file("fraud-v1.onnx")).build(),
    )
    .await;
    let ns = env.ns.name.clone();
    let selector =
        || kubectl_ok(&["get", "service", "fraud-stable", "-n", &ns, "-o", "jsonpath={.spec.selector}"], None);
    let want = selector();
    assert!(want.contains(r#""modelrollout.dev/version":"v1""#), "stable selects v1: {want}");
    let edit = r#"{"spec":{"selector":{"modelrollout.dev/version":"v9"}}}"#;
    kubectl_ok(&["patch", "service", "fraud-stable", "-n", &ns, "--type", "merge", "-p", edit], None);
    assert_ne!(selector(), want, "the edit took");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    kubectl_ok(&["annotate", "modelrollout", "fraud", "-n", &ns, "test/touched=1", "--overwrite"], None);
    wait_for("the selector put back", Duration::from_secs(30), || async { (selector() == want).then_some(()) }).await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn q_a_cuda_candidate_gets_the_cuda_image_and_a_gpu_and_is_gated_on_what_it_serves_on() {
    // The candidate asks for CUDA and one GPU. The scheduler places its pods on the fake node's
    // GPUs; the sidecar the harness runs for it (on this GPU-less machine) serves on the CPU and
    // says so; the rollout is gated on its metrics as any other.
    let env = Env::kwok_fraud("cuda", 150).await;
    let mut m =
        Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(canary_stages(5)).gates(default_gates()).build();
    m["spec"]["model"]["runtime"] = json!({"device": "cuda"});
    m["spec"]["workload"]["gpus"] = json!(1);
    gitops_apply(&env.ns.name, &m);
    let candidate =
        wait_for("the candidate's Deployment", Duration::from_secs(30), || env.deployment("fraud-v2")).await;
    let container = candidate.spec.unwrap().template.spec.unwrap().containers.remove(0);
    assert_eq!(container.image.as_deref(), Some(modelrollout::api::SIDECAR_IMAGE_CUDA));
    let limits = container.resources.unwrap().limits.unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    let env_var = |name: &str| container.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(env_var("SIDECAR_DEVICE").as_deref(), Some("cuda"));

    let mr = env.decided(Duration::from_secs(120), "the status").await;
    assert_eq!(mr.status.unwrap().phase, Some(Phase::Promoted), "a CPU fallback is gated, not refused");
    let pods = kubectl_ok(
        &[
            "get",
            "pods",
            "-n",
            &env.ns.name,
            "-l",
            "modelrollout.dev/version=v2",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ],
        None,
    );
    assert!(pods.contains("kwok-node-0"), "the candidate's pods were scheduled on the GPU node: {pods:?}");
    let prom = prometheus();
    let query = format!(
        r#"modelrollout_sidecar_device{{namespace="{}",version="v2",device="cpu",requested="cuda"}}"#,
        env.ns.name
    );
    let device = wait_for("the candidate's device gauge in Prometheus", Duration::from_secs(30), || async {
        first_sample(&prom, &query).await.ok().flatten()
    })
    .await;
    assert_eq!(device, 1.0);
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn r_a_candidate_required_to_serve_on_the_gpu_is_rolled_back_when_it_falls_back_to_the_cpu() {
    // The README's recipe: a custom gate on the sidecar's device gauge makes "on the GPU" a
    // condition of promotion. Here no GPU is usable, so the candidate serves on the CPU and fails it.
    let env = Env::kwok_fraud("ongpu", 150).await;
    let mut gates = default_gates();
    gates["custom"] = json!([{"name": "onGpu", "query": ON_GPU_GATE_QUERY, "min": 1, "minSamples": 0}]);
    let mut m = Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(canary_stages(5)).gates(gates).build();
    m["spec"]["model"]["runtime"] = json!({"device": "cuda"});
    gitops_apply(&env.ns.name, &m);
    let mr = env
        .wait(Duration::from_secs(120), "the status", |s| matches!(s.phase, Some(Phase::RolledBack | Phase::Promoted)))
        .await;
    let st = mr.status.unwrap();
    assert_eq!(st.phase, Some(Phase::RolledBack), "{:?}", st.message);
    assert_eq!(st.stage_name.as_deref(), Some("canary-5"));
    let gate = st.last_analysis.unwrap().gates.into_iter().find(|g| g.name == "onGpu").expect("the custom gate ran");
    assert_eq!(gate.verdict, modelrollout::api::Verdict::Fail);
    assert_eq!(gate.value, Some(0.0), "{gate:?}");
    assert!(st.message.unwrap().contains("onGpu"));
    let rule = env.route_rule().await;
    assert_eq!(rule["backendRefs"], json!([{"name": "fraud-stable", "port": 8080, "weight": 100}]));
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn s_a_2_point_fpr_regression_at_5_percent_is_rolled_back_by_the_sequential_judge() {
    // Half a point allowed above stable; the 5% stage is long enough that only the judge ends it.
    let stages = json!([
        {"name": "canary-5", "weight": 5, "minDuration": "10m"},
        {"name": "full", "weight": 100, "minDuration": "5s"}
    ]);
    let started = std::time::Instant::now();
    let (env, st) = sequential_scenario("seqbad", 0.005, stages).await;
    assert_eq!(st.phase, Some(Phase::RolledBack), "{:?}", st.message);
    assert_eq!(st.stage_name.as_deref(), Some("canary-5"), "rolled back at 5%");
    let fpr = fpr_result(&st);
    assert_eq!(fpr.verdict, modelrollout::api::Verdict::Fail, "{fpr:?}");
    let ev = fpr.sequential.as_ref().expect("judged sequentially");
    let diff = ev.difference_interval.as_ref().expect("the difference's interval");
    assert!(diff.low > 0.005, "the interval of candidate − stable lies above the margin: {ev:?}");
    let msg = st.message.clone().unwrap_or_default();
    assert!(msg.contains("falsePositiveRate"), "{msg}");
    println!(
        "SEQUENTIAL rollback: candidate {:.4} stable {:.4} difference in [{:.4}, {:.4}] after {} labelled candidate samples, {:.0} s",
        fpr.value.unwrap(),
        fpr.stable_value.unwrap(),
        diff.low,
        diff.high,
        ev.candidate.trials,
        started.elapsed().as_secs_f64()
    );
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn t_the_same_candidate_within_a_5_point_margin_is_promoted_by_the_sequential_judge() {
    let (env, st) = sequential_scenario("seqgood", 0.05, canary_stages(5)).await;
    assert_eq!(st.phase, Some(Phase::Promoted), "{:?}", st.message);
    assert_eq!(st.stable_version.as_deref(), Some("v1-t073"));
    // Each stage advanced on a Pass: the interval shown below stable + 5 points.
    let promoted = st.history.first().expect("history");
    assert_eq!(promoted.outcome, Outcome::Promoted);
    let fpr = fpr_result(&st);
    assert_eq!(fpr.verdict, modelrollout::api::Verdict::Pass, "{fpr:?}");
    let ev = fpr.sequential.as_ref().expect("judged sequentially");
    let diff = ev.difference_interval.as_ref().expect("the difference's interval");
    assert!(diff.high <= 0.05, "{ev:?}");
    println!(
        "SEQUENTIAL promotion: difference in [{:.4}, {:.4}] after {} labelled candidate samples",
        diff.low, diff.high, ev.candidate.trials
    );
    env.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn u_gating_webhooks_start_hold_end_and_follow_rollouts() {
    let env = Env::kwok_fraud("hooks", 150).await;
    let hooks = GatingHooks::start().await;
    let with_hooks = |version: &str| {
        let mut m = Manifest::fraud(version, local_file("fraud-v2.onnx"))
            .stages(canary_stages(4))
            .gates(default_gates())
            .build();
        m["spec"]["webhooks"] = hooks.spec();
        m
    };
    let ended = |version: &'static str| {
        move |s: &modelrollout::api::ModelRolloutStatus| {
            s.history.first().is_some_and(|h| h.version == version)
                && !matches!(s.phase, Some(Phase::Progressing | Phase::Paused))
        }
    };

    // preRollout refuses: the rollout fails before any traffic, and postRollout hears of it.
    hooks.set("preRollout", 412);
    gitops_apply(&env.ns.name, &with_hooks("v2"));
    let st = env.wait(Duration::from_secs(90), "the status", ended("v2")).await.status.unwrap();
    assert_eq!(st.phase, Some(Phase::Failed), "{:?}", st.message);
    assert_eq!(st.reason.as_deref(), Some("PreRolloutWebhookFailed"));
    assert!(st.message.as_deref().unwrap().contains("smoke-tests: HTTP 412"), "{:?}", st.message);
    let t = &env.harness().traffic;
    assert_eq!(t.canary_ok.load(std::sync::atomic::Ordering::Relaxed), 0, "no traffic moved");
    let pre = hooks.of("preRollout");
    assert_eq!(pre[0]["candidateVersion"], "v2");
    assert_eq!(pre[0]["metadata"]["suite"], "e2e");
    wait_for("postRollout about v2", Duration::from_secs(30), || async {
        hooks.of("postRollout").iter().any(|p| p["candidateVersion"] == "v2" && p["outcome"] == "Failed").then_some(())
    })
    .await;

    // preRollout answers 2xx, rollback says "carry on" (404) at every analysis, and
    // confirmPromotion says "not yet" (423): the last stage passes and the rollout holds there.
    hooks.set("preRollout", 200);
    hooks.set("rollback", 404);
    hooks.set("confirmPromotion", 423);
    gitops_apply(&env.ns.name, &with_hooks("v3"));
    let st = env
        .wait(Duration::from_secs(150), "the status", |s| {
            s.hold == Some(modelrollout::api::Hold::Confirmation) || ended("v3")(s)
        })
        .await
        .status
        .unwrap();
    assert_eq!(st.reason.as_deref(), Some("AwaitingConfirmation"), "{:?}", st.message);
    assert_eq!((st.stage_name.as_deref(), st.canary_weight), (Some("full"), 100));
    assert!(hooks.of("rollback").len() >= 3, "asked at every analysis");
    wait_for("confirmPromotion asked again an interval later", Duration::from_secs(30), || async {
        (hooks.of("confirmPromotion").len() >= 2).then_some(())
    })
    .await;
    assert_eq!(env.get().await.status.unwrap().phase, Some(Phase::Paused), "held while it says not yet");
    let asked = hooks.of("confirmPromotion");
    assert_eq!((asked[0]["stage"].as_str(), asked[0]["gates"].as_array().map(Vec::len)), (Some("full"), Some(4)));
    hooks.set("confirmPromotion", 200);
    let st = env.wait(Duration::from_secs(60), "the status", ended("v3")).await.status.unwrap();
    assert_eq!(st.phase, Some(Phase::Promoted), "{:?}", st.message);
    assert_eq!(st.stable_version.as_deref(), Some("v3"));

    // The kill switch: a rollback webhook's 2xx rolls v4 back at the next analysis.
    gitops_apply(&env.ns.name, &with_hooks("v4"));
    env.wait(Duration::from_secs(90), "the status", |s| {
        s.candidate_version.as_deref() == Some("v4") && s.canary_weight > 0
    })
    .await;
    hooks.set("rollback", 200);
    let st = env.wait(Duration::from_secs(60), "the status", ended("v4")).await.status.unwrap();
    assert_eq!(st.phase, Some(Phase::RolledBack), "{:?}", st.message);
    assert_eq!(st.reason.as_deref(), Some("RollbackRequestedByWebhook"));
    assert!(st.message.as_deref().unwrap().contains("kill-switch"), "{:?}", st.message);
    assert_eq!(st.stable_version.as_deref(), Some("v3"));
    wait_for("postRollout about v3 and v4", Duration::from_secs(30), || async {
        let post = hooks.of("postRollout");
        let about = |v: &str, outcome: &str| post.iter().any(|p| p["candidateVersion"] == v && p["outcome"] == outcome);
        (about("v3", "Promoted") && about("v4", "RolledBack")).then_some(())
    })
    .await;
    // Each answer is in status, for the version it was about.
    let st = env.get().await.status.unwrap();
    assert!(st.webhooks.iter().any(|w| w.name == "kill-switch" && w.version == "v4" && w.ok), "{:?}", st.webhooks);
    env.shutdown().await;
}

/// SIGTERM at any moment of a leader's start-up (before it holds the lease, the instant it took
/// it, while its watches start, once it runs) ends it within a second, exit 0, with the lease
/// released (renewTime set back to the epoch) whenever it held it. Twice a controller signalled
/// right after it acquired its lease ran until it was killed: that signal reached no listener.
#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn n2_sigterm_at_any_moment_of_start_up_exits_within_a_second_releasing_the_lease() {
    let ns = TestNamespace::new("sigterm-any").await;
    let kubeconfig = service_account_kubeconfig(&ns.name);
    let lease = ["--leader-election=true", "--lease-seconds", "40"];
    let lease_renew_time = || {
        let out = kubectl(
            &["get", "lease", "modelrollout-controller", "-n", &ns.name, "-o", "jsonpath={.spec.renewTime}"],
            None,
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // 0 ms: the instant the log says it holds the lease (its watches not started yet).
    for after_acquiring in [None, Some(0), Some(30), Some(150), Some(1_500)] {
        // Without a lease to take (None): another identity holds it, the controller waits for it.
        if after_acquiring.is_none() {
            let holder = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "modelrollout-controller", "namespace": ns.name},
                "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 40,
                         "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
            kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&holder.to_string()));
        }
        let mut c = ControllerProc::start(&ns.name, &kubeconfig, &lease);
        match after_acquiring {
            None => tokio::time::sleep(Duration::from_secs(2)).await,
            Some(ms) => {
                wait_for("the lease acquired", Duration::from_secs(60), || async {
                    c.logs().contains("acquired the leader lease").then_some(())
                })
                .await;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        let pid = c.child.id().to_string();
        let asked = std::time::Instant::now();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = loop {
            if let Some(status) = c.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{after_acquiring:?} ms after acquiring: still running 1 s after SIGTERM: {}",
                c.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!("SIGTERM {after_acquiring:?} ms after acquiring the lease: exit after {:?}", asked.elapsed());
        assert!(status.success(), "{after_acquiring:?}: exit status {status:?}: {}", c.logs());
        if after_acquiring.is_some() {
            assert!(
                lease_renew_time().starts_with("1970-01-01"),
                "{after_acquiring:?}: lease not released: {}",
                lease_renew_time()
            );
        } else {
            kubectl_ok(&["delete", "lease", "modelrollout-controller", "-n", &ns.name], None);
        }
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn v_after_a_promotion_the_old_version_is_retained_then_deprecated_then_removed() {
    let env = Env::kwok_fraud("retire", 250).await;
    let mut m =
        Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(four_stages(5)).gates(default_gates()).build();
    m["spec"]["afterPromotion"] = json!({"retention": "15s", "mode": "Warm", "removeAfter": "15s"});
    gitops_apply(&env.ns.name, &m);
    let mr = env.wait(Duration::from_secs(180), "v2 promoted", |s| s.phase == Some(Phase::Promoted)).await;
    let promoted = mr.status.unwrap();
    let retained = promoted.retained.clone().expect("v1 retained");
    assert_eq!(retained.model.version, "v1");
    // Warm: v1 keeps its pods past previousStableScaleDownDelay (3 s) for its 15 s retention.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(env.replicas("fraud-v1").await, Some(2), "v1 kept warm");
    let (_, status, _) = plugin(&["status", "fraud", "-n", &env.ns.name]).await;
    assert!(status.contains("Retained:   v1 (Warm)"), "{status}");
    // Deprecated at the retention's end: scaled to zero, its removal scheduled.
    let mr = env.wait(Duration::from_secs(30), "v1 deprecated", |s| !s.retired.is_empty()).await;
    let st = mr.status.unwrap();
    let deprecated = st.retired[0].deprecated_at.0;
    assert!(deprecated >= retained.until.0, "not before its retention's end");
    assert!(st.history.iter().any(|h| h.version == "v1" && h.outcome == Outcome::Deprecated));
    wait_for("v1 scaled to zero", Duration::from_secs(15), || async {
        (env.replicas("fraud-v1").await == Some(0)).then_some(())
    })
    .await;
    // Removed removeAfter later: its Deployment deleted; v2 untouched.
    wait_for("v1's Deployment deleted", Duration::from_secs(40), || async {
        env.deployment("fraud-v1").await.is_none().then_some(())
    })
    .await;
    let st = env.get().await.status.unwrap();
    let removed = st.history.iter().find(|h| h.version == "v1" && h.outcome == Outcome::Removed).expect("Removed");
    assert!(removed.time.0.duration_since(deprecated).as_secs() >= 15, "removeAfter counts from the deprecation");
    assert!(st.retired.is_empty());
    assert_eq!(env.replicas("fraud-v2").await, Some(2));
    assert_eq!(st.phase, Some(Phase::Promoted));
    // `history` shows each version's life.
    let (code, out, _) = plugin(&["history", "fraud", "-n", &env.ns.name]).await;
    assert_eq!(code, 0);
    let row =
        |v: &str| out.lines().find(|l| l.trim_start().starts_with(&format!("{v} "))).unwrap_or_default().to_string();
    let v1 = row("v1");
    assert_eq!(v1.matches(" ago").count(), 2, "v1 deprecated and removed: {out}");
    let v2 = row("v2");
    assert!(v2.contains("Promoted") && v2.matches(" ago").count() == 2, "v2 rolled out and promoted: {out}");
}
