//! A/B experiments (issue 24) through Envoy Gateway on the real node, as the search team runs one:
//! examples/ranking-scorer.yaml, applied with this machine's durations and limits. Users, each with
//! its own random hex key in `x-user-id`, send `POST /v1/rank:score` (ten candidate items, in the
//! API the example's contract publishes: item ids in, `{item_id, score}` best first,
//! `served_model_version`, `latency_ms` and the request's id out) to the Gateway; each answer's
//! `x-model-version` says which arm served it. Before users reach the candidate, it passes the
//! example's load check of 50-candidate pages. A user clicks the item shown
//! first with the probability the rankers' training data gives it (scripts/make_models.py,
//! `ranker_data`), and the click (1) or its absence (0) goes back as label feedback on
//! `<request_id>/<item index>`: the click-through the guardrail and the reward read.
//!
//! The arms: `ranker-popularity` (only an item's popularity) and `ranker-v1` (all four features).
//! Personalised ranking gets more clicks, so
//! - with popularity as stable and ranker-v1 as the candidate, the candidate wins the reward and is
//!   promoted;
//! - the other way round, the click-through guardrail fails and everyone goes back to stable.
//!
//! Tolerances: the share of users on the candidate is checked against the share of the 256 key
//! buckets the stage names, with the 99.9% binomial interval over the users seen; every user's arm
//! must be exactly the one its key's last two hex digits select (`KeyShare::selects`), and no user
//! may see both arms while the experiment runs (its window starts 1.5 s after the experiment's rule
//! is in the route and ends 0.5 s before the status left the stage, as in gateway.rs).

use std::time::Duration;

use modelrollout::api::{Arm, Outcome, Phase, Verdict};
use modelrollout_e2e::*;

/// Popularity as stable, personalised ranking as the candidate: users stay on their arm, the share
/// holds, the candidate wins the click-through reward with its interval, and is promoted with the
/// result in its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn an_ab_test_keeps_users_on_their_arm_and_promotes_the_winner() {
    let (env, users) = ab_experiment("ab-win", "ranker-popularity.onnx", 1).await;
    let ns = env.ns.name.clone();
    let log = StatusLog::start(env.client.clone(), &ns, RANKER);
    gitops_apply(&ns, &ranking_experiment("v2", "ranker-v1.onnx", 40));

    // Before any user reached it, the candidate took the example's load check.
    let mr = env
        .wait(Duration::from_secs(180), "the candidate's acceptance judged", |s| {
            s.acceptance.as_ref().is_some_and(|a| a.version == "v2" && a.verdict.is_some())
        })
        .await;
    let st = mr.status.unwrap();
    // Before any user reached it, the candidate took the example's load check of full pages: 50
    // candidates a request at the published ranking API.
    let acc = st.acceptance.as_ref().expect("the load check's results");
    let load = acc.load.as_ref().expect("the load check ran");
    println!(
        "RANK_ACCEPTANCE_LOAD requests={} candidates_per_request=50 errors={} achieved_rate={:.1} p50_ms={:.2} p95_ms={:.2}",
        load.requests,
        load.errors,
        load.achieved_rate,
        load.latency_p50_seconds * 1e3,
        load.latency_p95_seconds * 1e3
    );
    assert_eq!(acc.verdict, Some(Verdict::Pass), "{:?}", acc.checks);
    assert!(load.requests >= 400 && load.errors == 0, "{load:?}");
    let mr =
        env.wait(Duration::from_secs(180), "the experiment stage", |s| s.stage_name.as_deref() == Some("ab")).await;
    let st = mr.status.unwrap();
    let e = experiment(&st);
    assert_eq!(e.key_share_percent, Some(50.0));
    assert_eq!(e.guardrails, ["errorRate", "latencyP95", "clickThrough"].map(String::from).to_vec(), "{e:?}");
    // The experiment's rule joins the route once the candidate's pods are ready.
    let rules = wait_for("the experiment's rule in the route", Duration::from_secs(120), || async {
        let rules = route_rules(&ns, RANKER);
        (rules.len() == 2).then_some(rules)
    })
    .await;
    let rule_at = now();
    assert_eq!(rules[1]["backendRefs"][0]["name"], "ranker-canary", "{rules:#?}");
    assert_eq!(rules[1]["matches"][0]["headers"][0]["name"], KEY_HEADER, "{rules:#?}");
    // `kubectl modelrollout status` shows the arms, the key rule, the guardrails and the reward.
    // kubectl finds the plugin on PATH, as on a user's machine.
    let plugin_dir = bin("kubectl-modelrollout").parent().unwrap().to_path_buf();
    let plugin = tokio::process::Command::new("kubectl")
        .args(["modelrollout", "status", RANKER, "-n", &ns])
        .env("PATH", format!("{}:{}", plugin_dir.display(), std::env::var("PATH").unwrap()))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&plugin.stdout);
    println!("{text}");
    assert!(plugin.status.success(), "{}", String::from_utf8_lossy(&plugin.stderr));
    for needle in ["x-user-id", "128/256", "clickThrough", "Guardrails"] {
        assert!(text.contains(needle), "`kubectl modelrollout status` lacks `{needle}`:\n{text}");
    }

    let mr = env
        .wait(Duration::from_secs(300), "the experiment to end", |s| {
            s.stage_name.as_deref() != Some("ab") || s.phase != Some(Phase::Progressing)
        })
        .await;
    let st = mr.status.unwrap();
    let reward = experiment(&st).reward.clone().expect("a reward result");
    println!("reward: {}", reward.message);
    assert_eq!(reward.winner, Some(Arm::Candidate), "{reward:?}\nstatus: {st:?}");
    let d = reward.evidence.difference_interval.expect("the difference's interval");
    assert!(d.low > 0.01 && reward.effect >= d.low && reward.effect <= d.high, "{reward:?}");
    assert!(reward.evidence.candidate.trials >= 100 && reward.evidence.stable.trials >= 100, "{reward:?}");

    let mr = env
        .wait(Duration::from_secs(120), "v2 promoted", |s| {
            s.phase == Some(Phase::Promoted) && s.stable_version.as_deref() == Some("v2")
        })
        .await;
    users.wait_answered_by("v2").await;
    let st = mr.status.unwrap();
    let h = &st.history[0];
    assert_eq!((h.version.as_str(), h.outcome), ("v2", Outcome::Promoted), "{:?}", st.history);
    assert_eq!(h.experiment.as_ref().and_then(|x| x.winner), Some(Arm::Candidate), "{h:?}");
    assert_eq!(route_rules(&ns, RANKER).len(), 1, "the experiment's rule is gone once it ended");

    let samples = log.stop().await;
    let keys = users.keys.clone();
    let shown = users.shutdown().await;
    let (from, to) = experiment_window(&samples, rule_at);
    check_users(&shown, &keys, from, to);
    let ctr = click_through(&shown, from, to);
    println!("click-through as users clicked, per arm: {ctr:?}");
    let f = shown_failures(&shown);
    assert!(f.len() < 5, "requests failed through the Gateway: {f:?}");
    env.ns.delete().await;
}

/// Personalised ranking as stable, popularity as the candidate, no reward: the click-through
/// guardrail fails at the first analysis with enough feedback, and that same decision sends every
/// user back to stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn a_guardrail_breach_sends_every_user_to_stable_within_one_analysis() {
    let (env, users) = ab_experiment("ab-guard", "ranker-v1.onnx", 2).await;
    let ns = env.ns.name.clone();
    let log = StatusLog::start(env.client.clone(), &ns, RANKER);
    let mut m = ranking_experiment("v2", "ranker-popularity.onnx", 40);
    m["spec"]["analysis"].as_object_mut().unwrap().remove("reward");
    gitops_apply(&ns, &m);
    env.wait(Duration::from_secs(180), "the experiment stage", |s| s.stage_name.as_deref() == Some("ab")).await;
    let mr =
        env.wait(Duration::from_secs(120), "the guardrail to stop it", |s| s.phase == Some(Phase::RolledBack)).await;
    let st = mr.status.unwrap();
    let last = st.last_analysis.clone().expect("the analysis that stopped it");
    let guard = last.gates.iter().find(|g| g.name == "clickThrough").expect("the guardrail measured");
    println!("guardrail: {guard:?}");
    assert_eq!(guard.verdict, Verdict::Fail, "{last:?}");
    assert!(st.history[0].reason.contains("clickThrough"), "{:?}", st.history[0]);
    assert!(st.experiment.is_some(), "the experiment's record stays in status");
    // The rollback as the status first said it (the log polls every 100 ms, so it may see it a
    // moment after the wait above did), and the analysis that decided it: one decision.
    let rolled_back = wait_for("the status log to see the rollback", Duration::from_secs(10), || async {
        log.samples().iter().find(|s| s.phase == Some(Phase::RolledBack)).map(|s| s.at)
    })
    .await;
    let samples = log.stop().await;
    let analysed = last.time.0.as_millisecond() as f64 / 1000.0;
    assert!((rolled_back - analysed).abs() < 2.0, "analysis at {analysed}, rollback seen at {rolled_back}");
    // Five seconds of answers after the rollback, then stop.
    wait_for("answers 1.5 to 6.5 s after the rollback", Duration::from_secs(30), || async {
        (now() > rolled_back + 6.5).then_some(())
    })
    .await;
    let shown = users.shutdown().await;
    let (from, _) = experiment_window(&samples, 0.0);
    // Before the breach, half the users were on the candidate; from 1.5 s after the decision every
    // one of them is on stable.
    let before = arms_by_user(&shown, from, analysed);
    let on_candidate = before.values().filter(|a| a.contains_key("v2")).count();
    assert!(on_candidate > 100, "users on the candidate before the breach: {on_candidate}");
    let after: Vec<&Shown> = shown.iter().filter(|s| s.start >= rolled_back + 1.5).collect();
    assert!(after.len() > 200, "{} answers after the rollback", after.len());
    let late: Vec<_> = after.iter().filter(|s| s.version.as_deref() != Some("v1")).take(5).collect();
    assert!(late.is_empty(), "answers not from stable after the rollback: {late:?}");
    let f = shown_failures(&shown);
    assert!(f.len() < 5, "requests failed through the Gateway: {f:?}");
    println!(
        "guardrail breach: decided at {analysed:.1}, status {:.2} s later; every user on stable from 1.5 s after",
        rolled_back - analysed
    );
    assert_eq!(route_rules(&ns, RANKER).len(), 1, "the experiment's rule is gone");
    env.ns.delete().await;
}
