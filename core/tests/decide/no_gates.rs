//! The decision core: no gates: no evidence.

use super::*;

#[test]
fn a_rollout_without_gates_never_promotes_on_time_alone() {
    let (mut s, st) = started();
    s.analysis.gates = Gates::default();
    let mut st = st;
    for i in 1..=10 {
        st = step(&s, &st, analysed(vec![]), at(5 * i)).status;
    }
    assert_eq!(st.stage_index, Some(0), "minDuration passed long ago, but no gate ever passed");
    assert_eq!((st.phase, st.hold), (Some(Phase::Paused), Some(Hold::Inconclusive)));
    assert!(!st.promoting_without_gates);
    assert_eq!(st.last_analysis.as_ref().map(|r| r.verdict), Some(Verdict::Inconclusive));
}

#[test]
fn promote_without_gates_is_an_explicit_opt_out_shown_in_status() {
    let (mut s, st) = started();
    s.analysis.gates = Gates::default();
    s.analysis.promote_without_gates = true;
    let d = step(&s, &st, analysed(vec![]), at(10)).status;
    assert!(d.promoting_without_gates, "status says so");
    assert_eq!(d.stage_index, Some(1), "advances on minDuration alone");
    assert!(d.message.as_deref().unwrap_or_default().contains("no gates"), "{:?}", d.message);
}
