//! The decision core: inconclusive data.

use super::*;

#[test]
fn every_kind_of_missing_data_is_inconclusive_and_never_advances() {
    let kinds = vec![
        ("no data", Measurement::NoData),
        ("NaN", Measurement::sample(f64::NAN, 1000)),
        ("+Inf", Measurement::sample(f64::INFINITY, 1000)),
        ("too few samples", v(0.0, 3)),
        ("query error", Measurement::QueryError("connection refused".into())),
    ];
    for (name, m) in kinds {
        let (s, st) = started();
        let gates = with_gate(healthy(), GATE_ERROR_RATE, m, v(0.0, 1000));
        let d = step(&s, &st, analysed(gates), at(60));
        assert_eq!(d.status.stage_index, Some(0), "{name}: must not advance");
        assert_eq!(d.status.consecutive_inconclusive, 1, "{name}");
        assert_eq!(d.status.consecutive_failures, 0, "{name}");
        assert_ne!(d.status.last_analysis.unwrap().verdict, Verdict::Pass, "{name}");
    }
}

#[test]
fn inconclusive_limit_pauses_then_a_passing_analysis_resumes() {
    let (s, st) = started();
    let gap = with_gate(
        healthy(),
        GATE_LATENCY_P95,
        Measurement::QueryError("prometheus down".into()),
        Measurement::QueryError("prometheus down".into()),
    );
    let mut st = st;
    for i in 1..=2 {
        st = step(&s, &st, analysed(gap.clone()), at(5 * i)).status;
        assert_eq!(st.phase, Some(Phase::Progressing), "below the limit");
    }
    let d = step(&s, &st, analysed(gap.clone()), at(15));
    assert_eq!(d.status.phase, Some(Phase::Paused));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::INCONCLUSIVE_ANALYSIS));
    assert_eq!(traffic(&d).3, 100, "pause holds the weights");
    assert!(d.actions.iter().any(|a| matches!(a, Action::Notify { event: NotificationEvent::Paused, .. })));
    assert_eq!(condition(&d.status, types::PAUSED), "True");
    // Still paused while data stays missing, past min duration: never promotes.
    let still = step(&s, &d.status, analysed(gap), at(40));
    assert_eq!((still.status.phase, still.status.stage_index), (Some(Phase::Paused), Some(0)));
    // Data back: resumes (and, past min duration with a pass, advances).
    let back = step(&s, &still.status, analysed(healthy()), at(45));
    assert_eq!(back.status.phase, Some(Phase::Progressing));
    assert_eq!(back.status.stage_index, Some(1));
}

#[test]
fn inconclusive_limit_rolls_back_when_the_policy_says_so() {
    let (mut s, st) = started();
    s.rollback.on_inconclusive = InconclusivePolicy::Rollback;
    let gap = with_gate(healthy(), GATE_CAPTURE_RATE, Measurement::NoData, Measurement::NoData);
    let mut st = st;
    for i in 1..=3 {
        st = step(&s, &st, analysed(gap.clone()), at(5 * i)).status;
    }
    assert_eq!(st.phase, Some(Phase::RolledBack));
    assert_eq!(st.reason.as_deref(), Some(reasons::INCONCLUSIVE_ANALYSIS));
    assert_eq!(st.canary_weight, 0);
}
