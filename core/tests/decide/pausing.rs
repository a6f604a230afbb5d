//! The decision core: a paused rollout goes on analysing. Its weights are held, not its
//! judgement: a bad candidate paused at 25% is still rolled back by its gates (or held and said
//! so, when the spec asks), and analyses go on falling on their beat, so a resume is not followed by
//! a burst of analyses over one window.

use super::*;

fn bad() -> Vec<GateObservation> {
    with_gate(healthy(), GATE_ERROR_RATE, v(0.5, 1000), v(0.0005, 5000))
}

/// A rollout at its 25% stage, paused there by spec at `now`.
fn paused_at_25() -> (ModelRolloutSpec, ModelRolloutStatus, i64) {
    let (s, st) = started();
    let (st, now) = pass_stages(&s, st, 2, 0);
    let mut paused = s.clone();
    paused.paused = true;
    let d = step(&paused, &st, obs(true), at(now + 1));
    assert_eq!((d.status.phase, d.status.hold), (Some(Phase::Paused), Some(Hold::Spec)));
    (paused, d.status, now + 1)
}

#[test]
fn analysis_falls_due_while_paused() {
    let (paused, st, now) = paused_at_25();
    let next = next_analysis_at(&paused, &st, AnalysisSlot::default()).expect("a paused rollout analyses");
    assert!(analysis_due(&paused, &st, AnalysisSlot::default(), next));
    let d = step(&paused, &st, obs(true), at(now));
    assert_eq!(d.requeue_after, Some(next.duration_since(at(now)).unsigned_abs()), "it wakes for it");
}

#[test]
fn failing_analyses_while_paused_roll_back_as_usual() {
    let (paused, st, now) = paused_at_25();
    let d = step(&paused, &st, analysed(bad()), at(now + 5));
    assert_eq!(d.status.phase, Some(Phase::Paused), "one failure of failureLimit 2");
    assert_eq!(traffic(&d).2, 25);
    let msg = d.status.message.clone().unwrap();
    assert!(msg.starts_with("paused by spec.paused; analysis Fail: errorRate"), "{msg}");
    let d = step(&paused, &d.status, analysed(bad()), at(now + 10));
    assert_eq!(d.status.phase, Some(Phase::RolledBack));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::GATES_FAILED));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    assert_eq!(d.status.hold, None);
}

#[test]
fn a_rollback_webhook_while_paused_rolls_back() {
    let (mut paused, st, now) = paused_at_25();
    paused.webhooks = vec![hook("undo", WebhookKind::Rollback)];
    let o = Observations { webhooks: vec![answered("undo", WebhookKind::Rollback, 200)], ..analysed(healthy()) };
    let d = step(&paused, &st, o, at(now + 5));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::ROLLBACK_WEBHOOK));
}

#[test]
fn on_failure_while_paused_hold_keeps_the_stage_says_so_once_and_resume_decides() {
    let (mut paused, st, now) = paused_at_25();
    paused.rollback.on_failure_while_paused = PausedFailurePolicy::Hold;
    let d1 = step(&paused, &st, analysed(bad()), at(now + 5));
    let d2 = step(&paused, &d1.status, analysed(bad()), at(now + 10));
    assert_eq!((d2.status.phase, d2.status.hold), (Some(Phase::Paused), Some(Hold::Spec)));
    assert_eq!(traffic(&d2).2, 25, "held: the stage keeps its traffic");
    let msg = d2.status.message.clone().unwrap();
    assert!(msg.contains("2 consecutive failing analyses") && msg.contains("onFailureWhilePaused"), "{msg}");
    let warnings =
        |d: &Decision| d.actions.iter().filter(|a| matches!(a, Action::Event { kind: EventType::Warning, .. })).count();
    assert_eq!(warnings(&d2), 1, "{:?}", d2.actions);
    let d3 = step(&paused, &d2.status, analysed(bad()), at(now + 15));
    assert_eq!((d3.status.phase, warnings(&d3)), (Some(Phase::Paused), 0), "said once");

    // Resumed: the next analysis decides. A failing one rolls back at once...
    let mut resumed = paused.clone();
    resumed.paused = false;
    let r = step(&resumed, &d3.status, obs(true), at(now + 16));
    assert_eq!(r.status.phase, Some(Phase::Progressing), "no rollback without a new analysis");
    let r = step(&resumed, &r.status, analysed(bad()), at(now + 20));
    assert_eq!(r.status.reason.as_deref(), Some(reasons::GATES_FAILED));
    // ...a passing one clears the streak.
    let r = step(&resumed, &d3.status, analysed(healthy()), at(now + 20));
    assert_eq!((r.status.phase, r.status.consecutive_failures), (Some(Phase::Progressing), 0));
}

#[test]
fn inconclusive_while_paused_keeps_the_spec_hold() {
    let (paused, mut st, now) = paused_at_25();
    for i in 1..=4 {
        st = step(&paused, &st, analysed(vec![]), at(now + 5 * i)).status;
        assert_eq!((st.phase, st.hold), (Some(Phase::Paused), Some(Hold::Spec)), "analysis {i}");
        assert_eq!(st.reason.as_deref(), Some(reasons::PAUSED_BY_SPEC));
    }
    assert!(st.message.as_deref().unwrap().contains("4 consecutive inconclusive"), "{:?}", st.message);
    // Resumed with data still missing: the inconclusive hold takes over.
    let mut resumed = paused.clone();
    resumed.paused = false;
    let d = step(&resumed, &st, analysed(vec![]), at(now + 25));
    assert_eq!(d.status.hold, Some(Hold::Inconclusive));
}
