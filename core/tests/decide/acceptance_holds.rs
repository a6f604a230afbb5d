//! The decision core: acceptance before traffic.

use super::*;

pub(crate) fn scores(auc: f64, accuracy: f64) -> GoldenScores {
    GoldenScores {
        rows: 200,
        auc: Some(auc),
        accuracy: Some(accuracy),
        max_score_difference: Some(0.0002),
        contract_failure_rate: 0.0,
    }
}

pub(crate) fn measured(auc: f64, stable_auc: f64, p95: f64, errors: u64) -> AcceptanceReport {
    AcceptanceReport::Measured {
        golden_set: Some(GoldenSetMeasurement {
            rows: 200,
            threshold: 0.5,
            candidate: scores(auc, 0.95),
            stable: Some(scores(stable_auc, 0.95)),
        }),
        load: Some(LoadMeasurement {
            requests: 6000,
            errors,
            achieved_rate: 200.0,
            latency_p50_seconds: p95 / 2.0,
            latency_p95_seconds: p95,
        }),
    }
}

pub(crate) fn accepting() -> (ModelRolloutSpec, ModelRolloutStatus) {
    let mut v1 = spec("v1", SHA_V1);
    v1.acceptance = Some(acceptance());
    let first = decide(&v1, &ModelRolloutStatus::default(), &obs(false), at(-100));
    let mut s = spec("v2", SHA_V2);
    s.acceptance = Some(acceptance());
    let d = decide(&s, &first.status, &obs(false), at(-10));
    (s, d.status)
}

pub(crate) fn runs_acceptance(d: &Decision) -> bool {
    d.actions.iter().any(|a| matches!(a, Action::RunAcceptance { version, .. } if version == "v2"))
}

#[test]
fn acceptance_holds_all_traffic_until_the_checks_pass_then_the_first_stage_starts() {
    let (s, st) = accepting();
    // Not Ready yet: no checks, no traffic.
    assert!(!runs_acceptance(&decide(&s, &st, &obs(false), at(-5))));
    // Ready: the checks start; no traffic, no mirror, no analysis due, a poll soon.
    let d = step(&s, &st, obs(true), t0());
    assert!(runs_acceptance(&d));
    assert_eq!(traffic(&d), ("v1".into(), Some("v2".into()), 0, 0));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::ACCEPTANCE_RUNNING));
    assert_eq!(d.status.acceptance.as_ref().unwrap().start_time.0, t0());
    assert!(!analysis_due(&s, &d.status, AnalysisSlot::default(), at(60)));
    assert!(d.requeue_after.unwrap() <= std::time::Duration::from_secs(2));
    // Still running 40 s later: still held (an analysis taken meanwhile is not looked at).
    let d = step(&s, &d.status, analysed(healthy()), at(40));
    assert!(runs_acceptance(&d));
    assert_eq!(traffic(&d).2 + traffic(&d).3, 0);
    assert_eq!(d.status.acceptance.as_ref().unwrap().start_time.0, t0(), "the start is kept");
    // Passed: the shadow stage's mirror starts now, and its clock with it.
    let o = Observations { acceptance: Some(measured(0.97, 0.96, 0.030, 3)), ..obs(true) };
    let d = step(&s, &d.status, o, at(45));
    assert!(!runs_acceptance(&d), "the checks end once recorded");
    let a = d.status.acceptance.as_ref().unwrap();
    assert_eq!(a.verdict, Some(Verdict::Pass));
    assert_eq!(a.checks.len(), 6, "{:?}", a.checks);
    assert!(a.checks.iter().all(|c| c.verdict == Verdict::Pass), "{:?}", a.checks);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::ACCEPTANCE_PASSED));
    assert_eq!(traffic(&d), ("v1".into(), Some("v2".into()), 0, 100));
    assert_eq!(d.status.stage_start_time.as_ref().unwrap().0, at(45));
    // From here the rollout goes on as any other: its first analysis is an interval after.
    let d = step(&s, &d.status, obs(true), at(46));
    assert!(!runs_acceptance(&d));
    assert!(analysis_due(&s, &d.status, AnalysisSlot::default(), at(51)));
}

#[test]
fn a_failed_acceptance_check_fails_the_rollout_naming_it_and_no_traffic_ever_moved() {
    // (check, report, what the message names)
    let cases = [
        ("auc below its floor", measured(0.90, 0.91, 0.030, 0), "goldenSet.auc"),
        ("auc more than 0.01 below stable", measured(0.94, 0.96, 0.030, 0), "goldenSet.auc"),
        ("p95 over 80 ms", measured(0.97, 0.96, 0.081, 0), "load.latencyP95"),
        ("errors over 1%", measured(0.97, 0.96, 0.030, 61), "load.errorRate"),
        ("could not run", AcceptanceReport::Error("golden set: sha256 abc, the spec says 333".into()), "sha256"),
    ];
    for (case, report, named) in cases {
        let (s, st) = accepting();
        let d = step(&s, &st, obs(true), t0());
        let d = step(&s, &d.status, Observations { acceptance: Some(report), ..obs(true) }, at(30));
        assert_eq!(d.status.phase, Some(Phase::Failed), "{case}");
        assert_eq!(d.status.reason.as_deref(), Some(reasons::ACCEPTANCE_FAILED), "{case}");
        let msg = d.status.message.clone().unwrap();
        assert!(msg.contains(named), "{case}: {msg}");
        assert_eq!(traffic(&d), ("v1".into(), None, 0, 0), "{case}");
        assert_eq!(scaled_down(&d), Vec::<String>::new(), "{case}: scaled down after the delay");
        assert_eq!(d.status.history[0].outcome, Outcome::Failed, "{case}");
        assert_ne!(d.status.acceptance.as_ref().unwrap().verdict, Some(Verdict::Pass), "{case}");
        assert!(!runs_acceptance(&d), "{case}");
    }
}

#[test]
fn acceptance_that_never_finishes_fails_at_its_timeout_and_a_retry_checks_again() {
    let (mut s, st) = accepting();
    let d = step(&s, &st, obs(true), t0());
    let d = step(&s, &d.status, obs(true), at(599));
    assert_eq!(d.status.phase, Some(Phase::Progressing));
    let d = step(&s, &d.status, obs(true), at(600));
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(d.status.message.as_deref().unwrap().contains("spec.acceptance.timeout 10m"), "{:?}", d.status.message);
    s.operations.retry = Some(OperationRequest { id: "r1".into(), reason: None, requested_by: None });
    let d = step(&s, &d.status, obs(true), at(700));
    assert_eq!(d.status.phase, Some(Phase::Progressing));
    assert!(runs_acceptance(&d), "a retry runs the checks again");
    assert_eq!(d.status.acceptance.as_ref().unwrap().verdict, None);
}

#[test]
fn acceptance_limits_at_their_boundaries() {
    let spec = acceptance();
    let judge = |report: &AcceptanceReport| match report {
        AcceptanceReport::Measured { golden_set, load } => judge_acceptance(&spec, golden_set.as_ref(), load.as_ref()),
        AcceptanceReport::Error(_) => unreachable!(),
    };
    let verdict = |checks: &[GateResult], name: &str| checks.iter().find(|c| c.name == name).unwrap().verdict;
    // Exactly at each limit passes: AUC 0.92 with stable 0.93 (floor max(0.92, 0.92)), p95 80 ms,
    // errors 60 of 6,000 = 1%.
    let c = judge(&measured(0.92, 0.93, 0.080, 60));
    assert!(c.iter().all(|c| c.verdict == Verdict::Pass), "{c:?}");
    assert_eq!(c.iter().find(|c| c.name == "goldenSet.auc").unwrap().limit.as_deref(), Some(">= 0.92"));
    // The relative floor is the tighter one: stable 0.96 makes it 0.95.
    let c = judge(&measured(0.949, 0.96, 0.080, 60));
    assert_eq!(verdict(&c, "goldenSet.auc"), Verdict::Fail);
    assert_eq!(c.iter().find(|c| c.name == "goldenSet.auc").unwrap().bound, Some(0.95));
    // One class only: the AUC cannot be measured, which is not a pass.
    let mut r = measured(0.97, 0.96, 0.03, 0);
    if let AcceptanceReport::Measured { golden_set: Some(g), .. } = &mut r {
        g.candidate.auc = None;
    }
    assert_eq!(verdict(&judge(&r), "goldenSet.auc"), Verdict::Error);
    // No request answered at all is a 100% error rate, not 0 of 0.
    let mut r = measured(0.97, 0.96, 0.03, 0);
    if let AcceptanceReport::Measured { load: Some(l), .. } = &mut r {
        l.requests = 0;
    }
    assert_eq!(verdict(&judge(&r), "load.errorRate"), Verdict::Fail);
}
