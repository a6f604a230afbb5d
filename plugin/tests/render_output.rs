//! What `kubectl modelrollout` prints, from fixtures built with the real types.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kubectl_modelrollout::render::{self, Style};
use modelrollout_api::{
    AnalysisRun, GateResult, HistoryEntry, ModelRollout, ModelRolloutStatus, Outcome, Phase, Verdict,
};

const PLAIN: Style = Style { colour: false };

fn now() -> Timestamp {
    "2026-11-25T12:00:00Z".parse().unwrap()
}

fn ago(secs: i64) -> Time {
    Time(now() - jiff::SignedDuration::from_secs(secs))
}

fn fraud(status: ModelRolloutStatus, generation: i64) -> ModelRollout {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fraud-gateway-api.yaml");
    let mut mr: ModelRollout = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    mr.metadata.namespace = Some("payments".into());
    mr.metadata.generation = Some(generation);
    mr.metadata.creation_timestamp = Some(ago(3 * 3600));
    mr.status = Some(status);
    mr
}

fn gate(name: &str, verdict: Verdict, value: f64, stable: Option<f64>, limit: &str, samples: u64) -> GateResult {
    GateResult {
        name: name.into(),
        verdict,
        value: Some(value),
        stable_value: stable,
        limit: Some(limit.into()),
        samples: Some(samples),
        bound: None,
        message: format!("{name} judged"),
        sequential: None,
    }
}

fn progressing_at_5_percent() -> ModelRolloutStatus {
    ModelRolloutStatus {
        observed_generation: Some(4),
        phase: Some(Phase::Progressing),
        reason: Some("StageAdvanced".into()),
        message: Some("entered stage canary-5".into()),
        stage_index: Some(1),
        stage_name: Some("canary-5".into()),
        stage_start_time: Some(MicroTime(ago(95).0)),
        rollout_start_time: Some(ago(400)),
        canary_weight: 5,
        stable_version: Some("v1".into()),
        candidate_version: Some("v2".into()),
        last_analysis: Some(AnalysisRun {
            time: MicroTime(ago(12).0),
            stage_index: 1,
            verdict: Verdict::Inconclusive,
            gates: vec![
                gate("errorRate", Verdict::Pass, 0.0004, Some(0.0005), "<= 0.002", 1834),
                gate("falsePositiveRate", Verdict::Inconclusive, 0.031, None, "<= stable + 0.002", 12),
            ],
            gate_set: Default::default(),
        }),
        consecutive_inconclusive: 1,
        history: vec![HistoryEntry {
            version: "v1".into(),
            outcome: Outcome::Promoted,
            reason: "passed every stage".into(),
            time: ago(86400 * 3),
            started: Some(ago(86400 * 4)),
            experiment: None,
        }],
        ..Default::default()
    }
}

#[test]
fn status_shows_timeline_weights_gates_and_history() {
    let out = render::status(&fraud(progressing_at_5_percent(), 4), now(), PLAIN);
    assert!(out.contains("ModelRollout payments/fraud"), "{out}");
    assert!(out.contains("Phase:      Progressing  (StageAdvanced)"), "{out}");
    assert!(out.contains("stable v1 -> candidate v2"), "{out}");
    assert!(out.contains("candidate 5%, stable 95%, mirror 0%   (router: gatewayAPI)"), "{out}");
    // shadow done, 5% current with its age, the rest pending.
    let stages = out.lines().find(|l| l.starts_with("Stages:")).unwrap();
    let shadow = stages.find("✔ shadow").expect(stages);
    let current = stages.find("▶ canary-5 (5%, 95s)").expect(stages);
    let pending = stages.find("· canary-25").expect(stages);
    assert!(shadow < current && current < pending, "{stages}");
    assert!(out.contains("Last analysis: Inconclusive (12s ago, stage canary-5, the rollout's gates;"), "{out}");
    let fpr = out.lines().find(|l| l.trim_start().starts_with("falsePositiveRate")).unwrap();
    for part in ["Inconclusive", "0.03100", "<= stable + 0.002", "12", "falsePositiveRate judged"] {
        assert!(fpr.contains(part), "{part} missing in {fpr}");
    }
    let err = out.lines().find(|l| l.trim_start().starts_with("errorRate")).unwrap();
    assert!(err.contains("0.00040") && err.contains("0.00050") && err.contains("1834"), "{err}");
    assert!(!err.contains("judged"), "passing gates carry no note: {err}");
    assert!(out.contains("v1") && out.contains("Promoted") && out.contains("3d ago"), "{out}");
    assert!(!out.contains('\x1b'), "no colour when not asked");
}

/// The fraud team's plan (examples/fraud-plan.yaml) at 25%: the stage's adjusted gate set, and its
/// alert-free clock restarted by an alert.
#[test]
fn status_shows_a_stages_own_gates_and_its_alert_free_clock() {
    use modelrollout_api::{AlertFreeStatus, AlertReset, AlertResetCause, GateSet};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fraud-plan.yaml");
    let mut mr: ModelRollout = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    mr.metadata.namespace = Some("payments".into());
    let mut st = progressing_at_5_percent();
    st.stage_index = Some(2);
    st.stage_name = Some("canary-25".into());
    st.canary_weight = 25;
    let run = st.last_analysis.as_mut().unwrap();
    run.stage_index = 2;
    run.gate_set = GateSet::StageAdjusted;
    run.gates.push(gate("chargebackRate", Verdict::Pass, 0.15, Some(0.2), "<= 0.22 (stable 0.2 + 10%)", 400));
    st.alert_free = Some(AlertFreeStatus {
        stage_index: 2,
        since: MicroTime(ago(600).0),
        checked_until: MicroTime(ago(12).0),
        clean_at: MicroTime(now() + jiff::SignedDuration::from_secs(12 * 3600 - 600)),
        reset: Some(AlertReset {
            cause: AlertResetCause::AlertFiring,
            detail: "alert FraudChargebacksHigh".into(),
            time: MicroTime(ago(600).0),
        }),
    });
    mr.status = Some(st);
    let out = render::status(&mr, now(), PLAIN);
    assert!(out.contains("stage canary-25, the rollout's gates with the stage's add/remove;"), "{out}");
    let kpi = out.lines().find(|l| l.trim_start().starts_with("chargebackRate")).unwrap();
    assert!(kpi.contains("(stable 0.2 + 10%)"), "{kpi}");
    let clock = out.lines().find(|l| l.starts_with("Alert-free:")).expect(&out);
    for part in
        ["11h left", "{team=fraud}", "for 12h", "since 10m ago", "restarted by alert FraudChargebacksHigh 10m ago"]
    {
        assert!(clock.contains(part), "{part} missing in {clock}");
    }
}

#[test]
fn colour_only_when_asked_and_columns_stay_aligned() {
    let mr = fraud(progressing_at_5_percent(), 4);
    let coloured = render::status(&mr, now(), Style { colour: true });
    assert!(coloured.contains("\x1b[36mProgressing\x1b[0m"));
    assert_eq!(render::strip_ansi(&coloured), render::status(&mr, now(), PLAIN));
}

#[test]
fn rolled_back_marks_the_failing_stage() {
    let mut st = progressing_at_5_percent();
    st.phase = Some(Phase::RolledBack);
    st.reason = Some("GatesFailed".into());
    st.canary_weight = 0;
    let out = render::status(&fraud(st, 4), now(), PLAIN);
    assert!(out.contains("✘ canary-5 (5%)"), "{out}");
    assert!(out.contains("candidate 0%, stable 100%"), "{out}");
}

#[test]
fn settled_waits_for_the_controller_to_see_the_latest_spec() {
    let mut st = progressing_at_5_percent();
    assert_eq!(render::settled(&fraud(st.clone(), 4)), None, "progressing is not settled");
    st.phase = Some(Phase::Promoted);
    assert_eq!(render::settled(&fraud(st.clone(), 4)), Some(Phase::Promoted));
    // A new version applied (generation 5) that the controller has not observed: an old Promoted
    // must not end a pipeline's wait.
    assert_eq!(render::settled(&fraud(st.clone(), 5)), None);
    st.phase = Some(Phase::RolledBack);
    assert_eq!(render::settled(&fraud(st.clone(), 4)), Some(Phase::RolledBack));
    st.phase = Some(Phase::Paused);
    assert_eq!(render::settled(&fraud(st, 4)), None, "paused waits for a human, not settled");
    assert_eq!(render::settled(&fraud(ModelRolloutStatus::default(), 1)), None, "no status yet");
}

#[test]
fn list_is_a_kubectl_like_table() {
    let a = fraud(progressing_at_5_percent(), 4);
    let mut b = fraud(ModelRolloutStatus { phase: Some(Phase::Idle), ..Default::default() }, 1);
    b.metadata.name = Some("toxicity".into());
    let out = render::list(&[a.clone(), b], true, now(), PLAIN);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["NAMESPACE", "NAME", "PHASE", "STAGE", "WEIGHT", "STABLE", "CANDIDATE", "LAST", "ANALYSIS", "AGE"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row, ["payments", "fraud", "Progressing", "canary-5", "5%", "v1", "v2", "Inconclusive", "3h"]);
    // Columns start where the header's do.
    assert_eq!(lines[0].find("PHASE"), lines[1].find("Progressing"));
    assert_eq!(lines[0].find("PHASE"), lines[2].find("Idle"));
    assert!(!render::list(&[a], false, now(), PLAIN).contains("NAMESPACE"));
    assert_eq!(render::list(&[], false, now(), PLAIN), "No ModelRollouts found.\n");
}

#[test]
fn history_lists_each_versions_life_then_every_entry() {
    let mut st = progressing_at_5_percent();
    let entry = |version: &str, outcome, secs, started: Option<i64>| HistoryEntry {
        version: version.into(),
        outcome,
        reason: format!("{outcome:?}"),
        time: ago(secs),
        started: started.map(ago),
        experiment: None,
    };
    // Newest first: v0 removed, v2 undone (an hour after its promotion), v0 deprecated, v2
    // promoted, on top of v1's promotion three days ago.
    for e in [
        entry("v0", Outcome::Deprecated, 7200, None),
        entry("v2", Outcome::Promoted, 5400, Some(9000)),
        entry("v2", Outcome::Undone, 1800, None),
        entry("v0", Outcome::Removed, 60, None),
    ] {
        st.history.insert(0, e);
    }
    let out = render::history(&fraud(st, 4), now(), PLAIN);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Versions:", "{out}");
    assert!(
        lines[1].contains("ROLLED OUT") && lines[1].contains("DEPRECATED") && lines[1].contains("REMOVED"),
        "{out}"
    );
    let row = |v: &str| lines.iter().find(|l| l.trim_start().starts_with(&format!("{v} "))).copied().unwrap();
    let cells = |v: &str| row(v).split("  ").map(str::trim).filter(|c| !c.is_empty()).collect::<Vec<_>>();
    assert_eq!(cells("v0"), ["v0", "-", "-", "-", "-", "2h ago", "60s ago"], "{out}");
    assert_eq!(cells("v2"), ["v2", "2h ago", "90m ago", "Promoted", "30m ago", "-", "-"], "{out}");
    assert_eq!(cells("v1"), ["v1", "4d ago", "3d ago", "Promoted", "-", "-", "-"], "{out}");
    let entries = lines.iter().position(|l| *l == "Entries:").expect(&out);
    assert_eq!(lines.len(), entries + 2 + 5, "every entry listed: {out}");
    assert!(lines[entries + 2].contains("v0") && lines[entries + 2].contains("Removed"), "{out}");
    let empty = render::history(&fraud(ModelRolloutStatus::default(), 1), now(), PLAIN);
    assert_eq!(empty, "No rollouts recorded for fraud yet.\n");
}

#[test]
fn ages_read_like_kubectl() {
    assert_eq!(render::age(&ago(45), now()), "45s");
    assert_eq!(render::age(&ago(600), now()), "10m");
    assert_eq!(render::age(&ago(3 * 3600), now()), "3h");
    assert_eq!(render::age(&ago(5 * 86400), now()), "5d");
}

#[test]
fn status_shows_the_sequential_interval_acceptance_and_webhook_answers() {
    use modelrollout_api::{
        AcceptanceStatus, Counts, GoldenScores, GoldenSetMeasurement, Interval, LoadMeasurement, SequentialEvidence,
        WebhookKind, WebhookResult,
    };
    let mut st = progressing_at_5_percent();
    let fpr = &mut st.last_analysis.as_mut().unwrap().gates[1];
    fpr.sequential = Some(SequentialEvidence {
        confidence: 0.95,
        candidate: Counts { events: 31, trials: 1000 },
        stable: Counts { events: 400, trials: 20000 },
        candidate_interval: Interval { low: 0.018, high: 0.05 },
        difference_interval: Some(Interval { low: -0.004, high: 0.017 }),
        more_samples: Some(2400),
    });
    let mut auc = gate("goldenSet.auc", Verdict::Pass, 0.97, Some(0.96), ">= 0.95", 0);
    auc.samples = None;
    st.acceptance = Some(AcceptanceStatus {
        version: "v2".into(),
        sha256: "ab".repeat(32),
        start_time: ago(300),
        verdict: Some(Verdict::Pass),
        end_time: Some(ago(200)),
        checks: vec![auc],
        golden_set: Some(GoldenSetMeasurement {
            rows: 200,
            threshold: 0.5,
            candidate: GoldenScores::default(),
            stable: None,
        }),
        load: Some(LoadMeasurement {
            requests: 12000,
            errors: 2,
            achieved_rate: 199.9,
            latency_p50_seconds: 0.011,
            latency_p95_seconds: 0.042,
        }),
        error: None,
    });
    st.webhooks = vec![WebhookResult {
        name: "smoke-tests".into(),
        kind: WebhookKind::PreRollout,
        version: "v2".into(),
        ok: true,
        code: Some(200),
        message: "HTTP 200 OK: 40 of 40 passed".into(),
        attempts: 2,
        time: ago(190),
    }];
    let out = render::status(&fraud(st, 4), now(), PLAIN);
    let seq = out.lines().find(|l| l.contains("(sequential, 95%)")).expect(&out);
    for part in ["31/1000 candidate", "400/20000 stable", "candidate − stable in [-0.00400, 0.01700]", "~2400 more"] {
        assert!(seq.contains(part), "{part} missing in {seq}");
    }
    assert!(out.contains("Acceptance (v2, before any traffic): Pass, started 5m ago"), "{out}");
    let auc = out.lines().find(|l| l.trim_start().starts_with("goldenSet.auc")).expect(&out);
    assert!(auc.contains("0.97000") && auc.contains(">= 0.95"), "{auc}");
    assert!(out.contains("load: 12000 requests at 199.9 req/s, 2 failed, p50 11.0 ms, p95 42.0 ms"), "{out}");
    let hook = out.lines().find(|l| l.trim_start().starts_with("smoke-tests")).expect(&out);
    for part in ["preRollout", "v2", "200", "40 of 40 passed"] {
        assert!(hook.contains(part), "{part} missing in {hook}");
    }
}

/// An A/B stage: each arm's version, share of keys and rule, the guardrails, and the reward's
/// counts, interval and winner.
#[test]
fn status_shows_the_experiment_arms_guardrails_and_reward() {
    use modelrollout_api::{
        Arm, Counts, ExperimentStatus, Interval, RewardDirection, RewardResult, SequentialEvidence,
    };
    let mut st = progressing_at_5_percent();
    st.stage_name = Some("ab".into());
    st.canary_weight = 0;
    let reward = |winner| RewardResult {
        name: "clickThrough".into(),
        direction: RewardDirection::Higher,
        effect: 0.2312,
        evidence: SequentialEvidence {
            confidence: 0.95,
            candidate: Counts { events: 748, trials: 1000 },
            stable: Counts { events: 517, trials: 990 },
            candidate_interval: Interval { low: 0.70, high: 0.79 },
            difference_interval: Some(Interval { low: 0.161, high: 0.301 }),
            more_samples: None,
        },
        winner,
        message: "the candidate won".into(),
    };
    st.experiment = Some(ExperimentStatus {
        stage: "ab".into(),
        rule: "key header x-user-id: last two hex digits below 0x80 (128/256 buckets, 50% of keys)".into(),
        key_share_percent: Some(50.0),
        guardrails: vec!["errorRate".into(), "clickThrough".into()],
        reward: Some(reward(None)),
    });
    let out = render::status(&fraud(st.clone(), 4), now(), PLAIN);
    assert!(out.contains("Experiment (stage ab)"), "{out}");
    let candidate = out.lines().find(|l| l.trim_start().starts_with("candidate ")).expect("the candidate's arm");
    assert!(candidate.contains("v2") && candidate.contains("50% of keys") && candidate.contains("128/256"), "{out}");
    let stable = out.lines().find(|l| l.trim_start().starts_with("stable ")).expect("the stable arm");
    assert!(stable.contains("v1") && stable.contains("50% of keys"), "{out}");
    assert!(out.contains("Guardrails: errorRate, clickThrough"), "{out}");
    assert!(out.contains("candidate 748/1000, stable 517/990"), "{out}");
    assert!(out.contains("in [0.16100, 0.30100]") && out.contains("no winner yet"), "{out}");
    st.experiment.as_mut().unwrap().reward = Some(reward(Some(Arm::Candidate)));
    let out = render::status(&fraud(st, 4), now(), PLAIN);
    assert!(out.contains("winner: candidate"), "{out}");
}
