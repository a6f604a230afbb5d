//! The decision core: failing and rolling back.

use super::*;

#[test]
fn failure_limit_consecutive_failures_roll_back() {
    let (s, st) = started();
    let (st, _) = pass_stages(&s, st, 1, 0); // 5% stage
    let bad = with_gate(healthy(), GATE_FALSE_POSITIVE_RATE, v(0.05, 500), v(0.011, 2000));
    let one = step(&s, &st, analysed(bad.clone()), at(15));
    assert_eq!(one.status.phase, Some(Phase::Progressing));
    assert_eq!(one.status.consecutive_failures, 1);
    assert_eq!(traffic(&one).2, 5, "one failure below the limit keeps the weight");
    let two = step(&s, &one.status, analysed(bad), at(20));
    let st = &two.status;
    assert_eq!(st.phase, Some(Phase::RolledBack));
    assert_eq!(st.reason.as_deref(), Some(reasons::GATES_FAILED));
    assert!(
        st.message.as_ref().unwrap().contains("falsePositiveRate: 0.05 > stable 0.011 + 0.002"),
        "{:?}",
        st.message
    );
    assert_eq!((st.canary_weight, st.mirror_percent), (0, 0));
    assert_eq!(traffic(&two), ("v1".into(), None, 0, 0));
    assert!(!has_candidate_workload(&two));
    assert!(scaled_down(&two).is_empty(), "candidate kept for scaleDownDelay");
    assert_eq!(st.pending_scale_downs[0].version, "v2");
    assert_eq!(st.history[0].outcome, Outcome::RolledBack);
    assert_eq!(condition(st, types::DEGRADED), "True");
    assert_eq!(condition(st, types::STALLED), "True");
    assert!(two.actions.iter().any(|a| matches!(a, Action::Notify { event: NotificationEvent::RolledBack, .. })));
    assert!(two.actions.iter().any(|a| matches!(a, Action::Event { kind: EventType::Warning, .. })));
    let later = step(&s, st, obs(true), at(50));
    assert_eq!(scaled_down(&later), vec!["v2".to_string()], "after 30 s");
    assert_eq!(later.status.phase, Some(Phase::RolledBack), "stays rolled back");
}

#[test]
fn a_pass_between_failures_resets_the_streak() {
    let (s, st) = started();
    let bad = with_gate(healthy(), GATE_ERROR_RATE, v(0.01, 1000), v(0.0, 1000));
    let st = step(&s, &st, analysed(bad.clone()), at(5)).status;
    let st = step(&s, &st, analysed(healthy()), at(6)).status;
    assert_eq!(st.consecutive_failures, 0);
    let st = step(&s, &st, analysed(bad), at(7)).status;
    assert_eq!(st.phase, Some(Phase::Progressing));
}

#[test]
fn inconclusive_between_failures_does_not_reset_the_streak() {
    let (s, st) = started();
    let bad = with_gate(healthy(), GATE_ERROR_RATE, v(0.01, 1000), v(0.0, 1000));
    let gap = with_gate(healthy(), GATE_ERROR_RATE, Measurement::NoData, v(0.0, 1000));
    let st = step(&s, &st, analysed(bad.clone()), at(5)).status;
    let st = step(&s, &st, analysed(gap), at(6)).status;
    let st = step(&s, &st, analysed(bad), at(7)).status;
    assert_eq!(st.phase, Some(Phase::RolledBack));
}
