//! The worked examples of examples/, run end to end on the real node through the Gateway, with
//! minutes in place of days: the fraud team's plan (examples/fraud-plan.yaml), stage by stage,
//! each stage judged on its own gate set; a good candidate promoted, a bad one rolled back at the
//! gate that should catch it; the toxicity moderator (examples/toxicity-realtime.yaml) at its
//! published `POST /moderate`, accepted on its 1,000-comment golden set and a 200 req/s load check,
//! then shadow, 5%, 50%, 100%. Each prints its per-stage figures (PLAN_*, TOXICITY_*). The ranking
//! example runs in experiment.rs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelrollout::api::{AlertResetCause, AnalysisRun, GateSet, Phase, Verdict};
use modelrollout_e2e::*;

const RPS: u32 = 100;

/// The last analysis seen in each stage, and when each stage was first seen, polled from status.
#[derive(Default)]
struct Stages {
    analyses: BTreeMap<u32, AnalysisRun>,
    entered: BTreeMap<String, f64>,
    /// The latest alert-free clock restart the status recorded, in seconds since the epoch.
    last_reset: Option<f64>,
}

impl Stages {
    /// Each of `names` had an analysis that passed (printed per gate). The last stage's analysis is
    /// written with the promotion (`last`): the watcher may not have polled that status.
    fn every_stage_passed(&mut self, last: Option<AnalysisRun>, names: &[&str]) {
        if let Some(run) = last {
            self.analyses.insert(run.stage_index, run);
        }
        for (i, stage) in names.iter().enumerate() {
            let run = self.analyses.get(&(i as u32)).unwrap_or_else(|| panic!("no analysis seen in {stage}"));
            print_stage(stage, run);
            assert_eq!(run.verdict, Verdict::Pass, "{stage}: {:?}", run.gates);
        }
    }
}

fn watch_stages(env: &Env) -> (Arc<Mutex<Stages>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Stages>> = Arc::default();
    let (s, api, name) = (seen.clone(), env.api(), env.name.clone());
    let task = tokio::spawn(async move {
        loop {
            if let Ok(mr) = api.get(&name).await
                && let Some(st) = mr.status
            {
                let mut s = s.lock().unwrap();
                if let Some(stage) = st.stage_name.clone().filter(|_| st.phase.is_some_and(Phase::is_active)) {
                    s.entered.entry(stage).or_insert_with(now);
                }
                if st.phase == Some(Phase::Promoted) {
                    s.entered.entry("promoted".into()).or_insert_with(now);
                }
                if let Some(r) = st.alert_free.as_ref().and_then(|c| c.reset.as_ref()) {
                    s.last_reset = Some(r.time.0.as_millisecond() as f64 / 1000.0);
                }
                if let Some(run) = st.last_analysis {
                    s.analyses.insert(run.stage_index, run);
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    (seen, task)
}

fn print_stage(stage: &str, run: &AnalysisRun) {
    for g in &run.gates {
        println!(
            "PLAN_GATE stage={stage} gate_set={} gate={} verdict={} candidate={} stable={} limit={:?} samples={}",
            run.gate_set.as_str(),
            g.name,
            g.verdict.as_str(),
            g.value.map_or("-".into(), |v| format!("{v:.4}")),
            g.stable_value.map_or("-".into(), |v| format!("{v:.4}")),
            g.limit.clone().unwrap_or_default(),
            g.samples.unwrap_or(0)
        );
    }
}

fn gate_names(run: &AnalysisRun) -> Vec<&str> {
    run.gates.iter().map(|g| g.name.as_str()).collect()
}

/// v1 -> v2 through the fraud team's plan: shadow judged on precision, recall and latency against
/// v1 on the same mirrored requests; 5% on the rollout's guardrails; 25% with the chargeback KPI
/// and input drift added, held by its alert-free window after a real alert fires; then 100%.
#[tokio::test]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn the_fraud_plan_promotes_a_good_candidate_stage_by_stage() {
    let (env, load, ns) = through_gateway("plan-good", RPS, None).await;
    let (seen, watcher) = watch_stages(&env);
    gitops_apply(&ns, &fraud_plan("v2", "fraud-v2.onnx"));

    // The label gates judged sequentially settle when their evidence does: at 5% of 100 requests
    // a second, the false-positive rate's takes minutes (the stage prints how long).
    env.wait(Duration::from_secs(900), "the 25% stage", |s| s.stage_name.as_deref() == Some("canary-25")).await;
    // An alert with the plan's label fires and resolves: the window counts from the last look
    // that saw it.
    let fired_at = now();
    let alert = FiringAlert::fire("FraudPlanTestPage", &[("team", "fraud"), ("severity", "page")]).await;
    let reset = env
        .wait(Duration::from_secs(60), "the alert-free clock restarted by the alert", |s| {
            s.alert_free
                .as_ref()
                .and_then(|c| c.reset.as_ref())
                .is_some_and(|r| r.cause == AlertResetCause::AlertFiring)
        })
        .await;
    let held = reset.status.unwrap();
    assert_eq!(held.stage_name.as_deref(), Some("canary-25"), "the window holds the stage");
    let detail = held.alert_free.unwrap().reset.unwrap().detail;
    assert!(detail.contains("FraudPlanTestPage"), "{detail}");
    alert.resolve().await;
    let resolved_at = now();

    let mr = env.decided(Duration::from_secs(300), "v2 decided").await;
    let st = mr.status.unwrap();
    assert_eq!(st.phase, Some(Phase::Promoted), "{:?}", st.message);
    watcher.abort();
    let answers = load.shutdown().await;

    let mut seen = seen.lock().unwrap();
    let names = ["shadow", "canary-5", "canary-25", "full"];
    seen.every_stage_passed(st.last_analysis.clone(), &names);
    let (shadow, five, quarter) = (&seen.analyses[&0], &seen.analyses[&1], &seen.analyses[&2]);
    assert_eq!(
        (shadow.gate_set, gate_names(shadow)),
        (GateSet::StageReplaced, vec!["latencyP95", "captureRate", "precision"])
    );
    assert_eq!(
        (five.gate_set, gate_names(five)),
        (GateSet::Rollout, vec!["errorRate", "latencyP95", "falsePositiveRate", "captureRate"])
    );
    assert_eq!(
        (quarter.gate_set, gate_names(quarter)),
        (
            GateSet::StageAdjusted,
            vec!["errorRate", "latencyP95", "falsePositiveRate", "captureRate", "inputDrift", "chargebackRate"]
        )
    );
    // The 25% stage went on only a full window after the last look that saw the alert, and that
    // look came after the alert fired.
    let (quarter_from, full_from) = (seen.entered["canary-25"], seen.entered["full"]);
    let last_reset = seen.last_reset.expect("the watcher saw the clock restarted");
    println!(
        "PLAN_ALERT_FREE stage_entered=0.0 alert_fired={:.1} alert_resolved={:.1} last_restart={:.1} next_stage={:.1} window=25s",
        fired_at - quarter_from,
        resolved_at - quarter_from,
        last_reset - quarter_from,
        full_from - quarter_from
    );
    assert!(last_reset >= fired_at, "the clock restarted at {last_reset:.1}, before the alert fired at {fired_at:.1}");
    assert!(full_from - last_reset >= 25.0, "advanced {:.1} s after the clock's last restart", full_from - last_reset);
    for pair in names.windows(2) {
        println!("PLAN_STAGE stage={} seconds={:.1}", pair[0], seen.entered[pair[1]] - seen.entered[pair[0]]);
    }
    let failed = answer_failures(&answers);
    println!("PLAN_REQUESTS total={} failed={}", answers.len(), failed.len());
    assert!(failed.is_empty(), "failed requests: {failed:?}");
}

/// The bad-false-positive-rate candidate through the same plan: its precision on the mirrored
/// requests is far below v1's, so shadow's own gate set rolls it back before any client sees it.
#[tokio::test]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn the_fraud_plan_rolls_a_bad_candidate_back_in_shadow_on_precision() {
    let (env, load, ns) = through_gateway("plan-bad", RPS, None).await;
    gitops_apply(&ns, &fraud_plan("v2-bad", "fraud-v2-bad-fpr.onnx"));
    let mr = env.decided(Duration::from_secs(300), "the bad candidate decided").await;
    let st = mr.status.unwrap();
    assert_eq!(st.phase, Some(Phase::RolledBack), "{:?}", st.message);
    let run = st.last_analysis.unwrap();
    print_stage("shadow", &run);
    assert_eq!((run.stage_index, run.gate_set), (0, GateSet::StageReplaced), "rolled back in shadow");
    let precision = run.gates.iter().find(|g| g.name == "precision").unwrap();
    assert_eq!(precision.verdict, Verdict::Fail, "{precision:?}");
    assert!(precision.limit.as_deref().unwrap_or_default().contains("- 1%"), "{precision:?}");
    let answers = load.shutdown().await;
    let leaked = answers.iter().filter(|a| a.version.as_deref() == Some("v2-bad")).count();
    let failed = answer_failures(&answers);
    println!("PLAN_REQUESTS total={} candidate_answers={leaked} failed={}", answers.len(), failed.len());
    assert_eq!(leaked, 0, "a shadow candidate answered clients");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
}

/// examples/toxicity-realtime.yaml: v1 serves the published `POST /moderate` through the route
/// the controller created (that path only, for its host); v2 passes acceptance on the
/// 1,000-comment golden set (AUC >= 0.92, no more than 0.01 below v1 on the same comments, scored
/// by each version's own pods) and a 200 req/s load check at `/moderate`, then goes through
/// shadow, 5%, 50% and 100% with every comment answered in the published shape.
#[tokio::test]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn the_toxicity_example_is_accepted_and_promoted_at_its_published_api() {
    let env = Env::on_node("toxicity", "toxicity", |_| None, toxicity_example("v1", "toxicity-v1.onnx")).await;
    let ns = env.ns.name.clone();
    let route = kubectl_ok(&["get", "httproute", "toxicity", "-n", &ns, "-o", "json"], None);
    let route: serde_json::Value = serde_json::from_str(&route).unwrap();
    assert_eq!(route["spec"]["hostnames"], serde_json::json!([TOXICITY_HOST]));
    assert_eq!(
        route["spec"]["rules"][0]["matches"],
        serde_json::json!([{"path": {"type": "Exact", "value": "/moderate"}, "method": "POST"}]),
        "the created route matches the contract's published API"
    );
    let comments = Comments::start(TOXICITY_HOST, "/moderate", RPS);
    wait_for("comments answered by v1 at /moderate", Duration::from_secs(90), || async {
        let a = comments.answers();
        let last: Vec<_> = a.iter().rev().take(50).collect();
        if let Some(e) = last.first().and_then(|m| m.error.as_ref()) {
            println!("TOXICITY_WAITING last answer: {e}");
        }
        (last.len() == 50 && last.iter().all(|m| m.version.as_deref() == Some("v1") && m.error.is_none())).then_some(())
    })
    .await;
    // Nothing else of the pods is exposed: the standard predict route is not routed for this host.
    let (addr, ..) = gateway();
    let other = reqwest::Client::new()
        .post(format!("http://{addr}/v1/models/toxicity:predict"))
        .header(reqwest::header::HOST, TOXICITY_HOST)
        .json(&serde_json::json!({"instances": [{"text": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404, "only the published path is routed");

    let (seen, watcher) = watch_stages(&env);
    gitops_apply(&ns, &toxicity_example("v2", "toxicity-v2.onnx"));
    let mr = env.decided(Duration::from_secs(480), "v2 decided").await;
    let st = mr.status.unwrap();
    watcher.abort();
    assert_eq!(st.phase, Some(Phase::Promoted), "{:?}", st.message);
    let acc = st.acceptance.as_ref().expect("the acceptance results");
    let check = |name: &str| acc.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("{name}: {acc:?}"));
    let auc = check("goldenSet.auc");
    let golden = acc.golden_set.as_ref().unwrap();
    let load = acc.load.as_ref().expect("the load check ran");
    println!(
        "TOXICITY_ACCEPTANCE rows={} auc={:.4} stable_auc={:.4} max_score_difference={:.2e} load_requests={} achieved_rate={:.1} errors={} p50_ms={:.2} p95_ms={:.2}",
        golden.rows,
        auc.value.unwrap_or(f64::NAN),
        golden.stable.as_ref().and_then(|s| s.auc).unwrap_or(f64::NAN),
        golden.candidate.max_score_difference.unwrap_or(f64::NAN),
        load.requests,
        load.achieved_rate,
        load.errors,
        load.latency_p50_seconds * 1e3,
        load.latency_p95_seconds * 1e3
    );
    assert_eq!(acc.verdict, Some(Verdict::Pass), "{:?}", acc.checks);
    assert_eq!((golden.rows, golden.candidate.rows), (1000, 1000), "every comment scored by v2's pods");
    assert!(auc.value.is_some_and(|a| a >= 0.92), "{auc:?}");

    {
        let mut seen = seen.lock().unwrap();
        let names = ["shadow", "canary-5", "canary-50", "full"];
        seen.every_stage_passed(st.last_analysis.clone(), &names);
        for (i, stage) in names.iter().enumerate() {
            let run = &seen.analyses[&(i as u32)];
            assert_eq!(gate_names(run), ["errorRate", "latencyP95", "rejectedTooLong"], "{stage}");
        }
        for pair in names.windows(2) {
            println!("TOXICITY_STAGE stage={} seconds={:.1}", pair[0], seen.entered[pair[1]] - seen.entered[pair[0]]);
        }
    }
    let answers = comments.shutdown().await;
    let failed: Vec<_> = answers.iter().filter_map(|m| m.error.clone()).collect();
    let by_version = |v: &str| answers.iter().filter(|m| m.version.as_deref() == Some(v)).count();
    let toxic = answers.iter().filter(|m| m.label.as_deref() == Some("toxic")).count();
    println!(
        "TOXICITY_REQUESTS total={} v1={} v2={} toxic={} failed={}",
        answers.len(),
        by_version("v1"),
        by_version("v2"),
        toxic,
        failed.len()
    );
    assert!(failed.is_empty(), "failed comments: {:?}", &failed[..failed.len().min(5)]);
    assert!(by_version("v2") > 0 && toxic > 0, "v2 answered and some comments were toxic");
    env.ns.delete().await;
}
