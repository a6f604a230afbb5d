//! The decision core: a stage's own gates (replace, add, remove), and the alert-free window.

use super::*;

fn custom(name: &str) -> CustomGate {
    CustomGate {
        name: name.into(),
        query: "q".into(),
        samples_query: None,
        min: None,
        max: Some(0.01),
        max_above_stable: None,
        max_below_stable: None,
        max_above_stable_ratio: None,
        max_below_stable_ratio: None,
        comparison: Comparison::Inclusive,
        min_samples: 10,
    }
}

fn agreement() -> Gates {
    Gates { agreement: Some(AgreementGate { min: 0.95, min_samples: 10 }), ..Default::default() }
}

/// stage 0 (shadow) replaces the gates with agreement; stage 2 (25%) adds a KPI and drops FPR.
fn planned() -> ModelRolloutSpec {
    let mut s = spec("v2", SHA_V2);
    s.stages[0].gates = Some(StageGates { replace: Some(agreement()), ..Default::default() });
    s.stages[2].gates = Some(StageGates {
        add: Some(Gates { custom: vec![custom("chargebackRate")], ..Default::default() }),
        remove: vec!["falsePositiveRate".into()],
        ..Default::default()
    });
    s
}

fn names(defs: &[GateDef]) -> Vec<&str> {
    defs.iter().map(|d| d.name.as_str()).collect()
}

#[test]
fn each_stage_checks_its_own_gate_set() {
    let s = planned();
    let table: Vec<(usize, Vec<&str>, GateSet)> = vec![
        (0, vec!["agreement"], GateSet::StageReplaced),
        (1, vec!["errorRate", "latencyP95", "falsePositiveRate", "captureRate"], GateSet::Rollout),
        (2, vec!["errorRate", "latencyP95", "captureRate", "chargebackRate"], GateSet::StageAdjusted),
        (3, vec!["errorRate", "latencyP95", "falsePositiveRate", "captureRate"], GateSet::Rollout),
    ];
    for (idx, want, set) in table {
        let (defs, got) = stage_gate_defs(&s, idx);
        assert_eq!((names(&defs), got), (want, set), "stage {idx}");
    }
    // A gate added under a name the rollout sets is judged by the stage's limits.
    let mut s = planned();
    let stricter = UpperGate { max: Some(0.001), ..s.analysis.gates.error_rate.clone().unwrap() };
    s.stages[1].gates = Some(StageGates {
        add: Some(Gates { error_rate: Some(stricter), ..Default::default() }),
        ..Default::default()
    });
    let (defs, _) = stage_gate_defs(&s, 1);
    assert_eq!(defs.iter().filter(|d| d.name == GATE_ERROR_RATE).map(|d| d.max).collect::<Vec<_>>(), vec![Some(0.001)]);
}

#[test]
fn shadow_judged_on_its_own_gates_advances_without_the_rollouts_and_the_status_says_which() {
    let s = planned();
    let (_, st) = started();
    // Only agreement is measured in shadow: the rollout's gates are not asked for.
    let o = analysed(vec![GateObservation {
        gate: GATE_AGREEMENT.into(),
        candidate: v(0.99, 500),
        stable: Measurement::NoData,
    }]);
    let d = step(&s, &st, o, at(11));
    let run = d.status.last_analysis.clone().unwrap();
    assert_eq!(run.verdict, Verdict::Pass, "{:?}", run.gates);
    assert_eq!(run.gate_set, GateSet::StageReplaced);
    assert_eq!(names_of(&run), vec!["agreement"]);
    assert_eq!(d.status.stage_name.as_deref(), Some("canary-5"), "{:?}", d.status.message);
    // The next stage's Event names its gates and where they come from.
    let msg = events(&d).into_iter().find(|(r, _)| *r == reasons::STAGE_ADVANCED).unwrap().1;
    assert!(msg.contains("gates errorRate, latencyP95, falsePositiveRate, captureRate (the rollout's gates)"), "{msg}");
}

fn names_of(run: &AnalysisRun) -> Vec<&str> {
    run.gates.iter().map(|g| g.name.as_str()).collect()
}

fn events(d: &Decision) -> Vec<(&'static str, String)> {
    d.actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { reason, message, .. } => Some((*reason, message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_kpi_added_at_25_percent_is_judged_there_and_a_removed_gate_is_not() {
    let s = planned();
    let (_, st) = started();
    let shadow = analysed(vec![GateObservation {
        gate: GATE_AGREEMENT.into(),
        candidate: v(0.99, 500),
        stable: Measurement::NoData,
    }]);
    let st = step(&s, &st, shadow, at(11)).status;
    let st = step(&s, &st, analysed(healthy()), at(22)).status;
    assert_eq!(st.stage_name.as_deref(), Some("canary-25"));
    // FPR far out of bounds but removed here; the KPI missing: inconclusive, never a pass.
    let bad_fpr = with_gate(healthy(), GATE_FALSE_POSITIVE_RATE, v(0.5, 500), v(0.01, 500));
    let d = step(&s, &st, analysed(bad_fpr.clone()), at(33));
    let run = d.status.last_analysis.clone().unwrap();
    assert_eq!(run.gate_set, GateSet::StageAdjusted);
    assert!(!names_of(&run).contains(&GATE_FALSE_POSITIVE_RATE));
    assert_eq!(run.verdict, Verdict::Inconclusive, "the KPI was not measured");
    assert_eq!(d.status.stage_name.as_deref(), Some("canary-25"));
    // The KPI over its limit fails the stage.
    let mut kpi = bad_fpr;
    kpi.push(GateObservation { gate: "chargebackRate".into(), candidate: v(0.05, 500), stable: Measurement::NoData });
    let d = step(&s, &st, analysed(kpi), at(33));
    assert_eq!(d.status.last_analysis.unwrap().verdict, Verdict::Fail);
}

#[test]
fn contradictory_stage_gates_are_an_invalid_spec() {
    type Mutation = fn(&mut ModelRolloutSpec);
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "removing a gate the rollout does not set",
            |s| s.stages[1].gates = Some(StageGates { remove: vec!["precision".into()], ..Default::default() }),
            "spec.stages[1].gates.remove: precision is not a gate of spec.analysis.gates",
        ),
        (
            "adding and removing one gate",
            |s| {
                s.stages[1].gates = Some(StageGates {
                    add: Some(Gates { error_rate: s.analysis.gates.error_rate.clone(), ..Default::default() }),
                    remove: vec!["errorRate".into()],
                    ..Default::default()
                })
            },
            "errorRate is both added and removed",
        ),
        (
            "replace beside add",
            |s| {
                s.stages[1].gates =
                    Some(StageGates { replace: Some(agreement()), add: Some(agreement()), ..Default::default() })
            },
            "replace stands alone",
        ),
        (
            "a stage left with no gates",
            |s| s.stages[1].gates = Some(StageGates { replace: Some(Gates::default()), ..Default::default() }),
            "spec.stages[1] (canary-5) checks no gate",
        ),
        (
            "a bad confidence inside a stage's gates",
            |s| {
                let mut g = s.analysis.gates.false_positive_rate.clone().unwrap();
                g.confidence = Some(0.3);
                s.stages[2].gates = Some(StageGates {
                    replace: Some(Gates { false_positive_rate: Some(g), ..Default::default() }),
                    ..Default::default()
                })
            },
            "spec.stages[2].gates.replace.falsePositiveRate.confidence",
        ),
    ];
    let (_, st) = started();
    for (name, mutate, want) in cases {
        let mut s = spec("v2", SHA_V2);
        mutate(&mut s);
        let d = step(&s, &st, analysed(healthy()), at(11));
        assert_eq!(d.status.reason.as_deref(), Some(reasons::INVALID_SPEC), "{name}");
        let msg = d.status.message.unwrap();
        assert!(msg.contains(want), "{name}: {msg}");
        assert_eq!(d.status.stage_name, st.stage_name, "{name}: nothing moves");
    }
}

// --- the alert-free window ------------------------------------------------------------------

/// Stage 1 (canary-5) must be 60 s without an alert labelled team=fraud.
fn alert_free_spec() -> ModelRolloutSpec {
    let mut s = spec("v2", SHA_V2);
    s.stages[1].alert_free =
        Some(AlertFree { match_labels: [("team".to_string(), "fraud".to_string())].into(), for_: d("60s") });
    s
}

fn with_alerts(gates: Vec<GateObservation>, alerts: AlertObservation) -> Observations {
    Observations { alerts: Some(alerts), ..analysed(gates) }
}

fn clean() -> AlertObservation {
    AlertObservation::Fired(vec![])
}

/// Into stage 1 at t = 11 s: the clock starts there.
fn in_canary(s: &ModelRolloutSpec) -> ModelRolloutStatus {
    let (_, st) = started();
    let st = step(s, &st, analysed(healthy()), at(11)).status;
    assert_eq!(st.stage_name.as_deref(), Some("canary-5"));
    st
}

#[test]
fn the_alert_free_clock_starts_with_the_stage_holds_it_and_lets_it_go_when_clean() {
    let s = alert_free_spec();
    let st = in_canary(&s);
    let clock = st.alert_free.clone().unwrap();
    assert_eq!((clock.stage_index, clock.since.0, clock.clean_at.0), (1, at(11), at(71)));
    // What the controller is asked to look at: matching alerts since the stage started.
    let ask = alert_query(&s, &st).unwrap();
    assert_eq!((ask.since, ask.match_labels.get("team").map(String::as_str)), (at(11), Some("fraud")));
    // Gates pass after minDuration (10 s) but the window holds the stage.
    let d = step(&s, &st, with_alerts(healthy(), clean()), at(25));
    assert_eq!(d.status.stage_name.as_deref(), Some("canary-5"));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::AWAITING_ALERT_FREE));
    let msg = d.status.message.clone().unwrap();
    assert!(msg.contains("46s left") && msg.contains("team=\"fraud\""), "{msg}");
    assert_eq!(d.status.alert_free.as_ref().unwrap().checked_until.0, at(25));
    assert_eq!(alert_query(&s, &d.status).unwrap().since, at(25), "the next look starts where this one ended");
    // At 71 s, a clean look covering it: on to the next stage.
    let d = step(&s, &d.status, with_alerts(healthy(), clean()), at(71));
    assert_eq!(d.status.stage_name.as_deref(), Some("canary-25"), "{:?}", d.status.message);
    assert!(d.status.alert_free.is_none(), "the next stage has no window");
}

#[test]
fn a_firing_alert_restarts_the_clock_and_the_status_names_it() {
    let s = alert_free_spec();
    let st = in_canary(&s);
    let fired = AlertObservation::Fired(vec!["FraudChargebacksHigh".into()]);
    let d = step(&s, &st, with_alerts(healthy(), fired.clone()), at(50));
    let clock = d.status.alert_free.clone().unwrap();
    assert_eq!((clock.since.0, clock.clean_at.0), (at(50), at(110)));
    let reset = clock.reset.unwrap();
    assert_eq!((reset.cause, reset.detail.as_str()), (AlertResetCause::AlertFiring, "alert FraudChargebacksHigh"));
    let evs = events(&d);
    assert!(evs.iter().any(|(r, m)| *r == reasons::ALERT_CLOCK_RESET && m.contains("FraudChargebacksHigh")), "{evs:?}");
    assert!(d.status.message.clone().unwrap().contains("restarted by alert FraudChargebacksHigh"));
    // Still firing at the next look: the clock moves again, but no second Event for the same alert.
    let d = step(&s, &d.status, with_alerts(healthy(), fired), at(60));
    assert_eq!(d.status.alert_free.as_ref().unwrap().since.0, at(60));
    assert!(!events(&d).iter().any(|(r, _)| *r == reasons::ALERT_CLOCK_RESET));
    // Clean from then: 60 s after the last firing look, not after the first.
    let d = step(&s, &d.status, with_alerts(healthy(), clean()), at(110));
    assert_eq!(d.status.stage_name.as_deref(), Some("canary-5"), "59 s after the last firing look");
    let d = step(&s, &d.status, with_alerts(healthy(), clean()), at(120));
    assert_eq!(d.status.stage_name.as_deref(), Some("canary-25"));
}

#[test]
fn prometheus_down_is_not_clean() {
    let s = alert_free_spec();
    let st = in_canary(&s);
    let down = AlertObservation::Unavailable("connection refused".into());
    let d = step(&s, &st, with_alerts(healthy(), down), at(70));
    let clock = d.status.alert_free.clone().unwrap();
    assert_eq!(clock.since.0, at(70), "the unknown gap restarts the clock");
    assert_eq!(clock.reset.unwrap().cause, AlertResetCause::PrometheusUnavailable);
    let d = step(&s, &d.status, with_alerts(healthy(), clean()), at(80));
    assert_eq!(d.status.stage_name.as_deref(), Some("canary-5"));
}

#[test]
fn a_window_not_yet_confirmed_by_a_look_holds_and_paused_rollouts_keep_the_clock() {
    let s = alert_free_spec();
    let st = in_canary(&s);
    // Past clean_at, but the last look was at 25 s: wait for one that covers it.
    let st = step(&s, &st, with_alerts(healthy(), clean()), at(25)).status;
    let d = step(&s, &st, analysed(healthy()), at(80));
    assert_eq!(d.status.stage_name.as_deref(), Some("canary-5"));
    assert!(d.status.message.unwrap().contains("the next look at Prometheus"));
    // Paused by spec: the look is still recorded.
    let mut paused = s.clone();
    paused.paused = true;
    let fired = AlertObservation::Fired(vec!["Page".into()]);
    let d = step(&paused, &st, with_alerts(healthy(), fired), at(40));
    assert_eq!(d.status.alert_free.unwrap().since.0, at(40));
    // An on-call promote does not wait for the window.
    let mut promote = s.clone();
    promote.operations.promote = Some(PromoteRequest { id: "p".into(), reason: None, full: false });
    let d = step(&promote, &st, analysed(healthy()), at(30));
    assert_eq!(d.status.stage_name.as_deref(), Some("canary-25"));
}
