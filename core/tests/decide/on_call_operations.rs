//! The decision core: operations.

use super::*;

#[test]
fn paused_holds_weights_and_does_not_advance() {
    let (s, st) = started();
    let (st, now) = pass_stages(&s, st, 2, 0);
    let mut paused = s.clone();
    paused.paused = true;
    let d = step(&paused, &st, analysed(healthy()), at(now + 60));
    assert_eq!(d.status.phase, Some(Phase::Paused));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::PAUSED_BY_SPEC));
    assert_eq!((d.status.stage_index, traffic(&d).2), (Some(2), 25));
    // Passing analyses while paused change nothing but what status says of them.
    let d = step(&paused, &d.status, analysed(healthy()), at(now + 120));
    assert_eq!((d.status.phase, d.status.stage_index), (Some(Phase::Paused), Some(2)));
    assert_eq!(d.status.message.as_deref(), Some("paused by spec.paused; analysis Pass"));
    let resumed = step(&s, &d.status, obs(true), at(now + 121));
    assert_eq!(resumed.status.phase, Some(Phase::Progressing));
    assert!(resumed.actions.iter().any(|a| matches!(a, Action::Event { reason, .. } if *reason == reasons::RESUMED)));
    // The stage passed an analysis while paused, past its minDuration: resuming goes on from there.
    assert_eq!(resumed.status.reason.as_deref(), Some(reasons::STAGE_ADVANCED));
    assert_eq!(resumed.status.stage_index, Some(3));
    // Resumed before any analysis of the stage: it waits for one.
    let fresh = step(&paused, &st, obs(true), at(now + 1)).status;
    let resumed = step(&s, &fresh, obs(true), at(now + 2));
    assert_eq!(resumed.status.reason.as_deref(), Some(reasons::RESUMED));
}

#[test]
fn abort_at_any_stage_rolls_back() {
    for stages_passed in 0..=3 {
        let (s, st) = started();
        let (st, now) = pass_stages(&s, st, stages_passed, 0);
        let d = step(&with_abort(s, "a1"), &st, obs(true), at(now + 1));
        assert_eq!(d.status.phase, Some(Phase::RolledBack), "stage {stages_passed}");
        assert_eq!(d.status.reason.as_deref(), Some(reasons::ABORTED));
        assert!(d.status.message.as_ref().unwrap().contains("pager went off"));
        assert_eq!(d.status.history[0].outcome, Outcome::Aborted);
        assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    }
}

#[test]
fn abort_works_while_paused() {
    let (mut s, st) = started();
    s.paused = true;
    let st = step(&s, &st, obs(true), at(1)).status;
    let d = step(&with_abort(s, "a1"), &st, obs(true), at(2));
    assert_eq!(d.status.phase, Some(Phase::RolledBack));
}

#[test]
fn retry_after_rollback_starts_again_and_old_requests_do_not_refire() {
    let (s, st) = started();
    let aborted = with_abort(s, "a1");
    let st = step(&aborted, &st, obs(true), at(1)).status;
    assert_eq!(st.phase, Some(Phase::RolledBack));
    // Nothing happens while the abort request just sits in the spec.
    let same = step(&aborted, &st, obs(true), at(2));
    assert_eq!(same.status.phase, Some(Phase::RolledBack));
    let mut retried = aborted.clone();
    retried.operations.retry = Some(OperationRequest { id: "r1".into(), reason: None, requested_by: None });
    let d = step(&retried, &same.status, obs(true), at(3));
    assert_eq!(d.status.phase, Some(Phase::Progressing));
    assert_eq!(d.status.stage_index, Some(0));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::RETRIED));
    assert!(d.status.pending_scale_downs.is_empty(), "the retried candidate is not scaled down");
    // The old abort id (still in the spec) does not abort the retried rollout.
    let next = step(&retried, &d.status, obs(true), at(4));
    assert_eq!(next.status.phase, Some(Phase::Progressing));
}

#[test]
fn retry_while_progressing_is_recorded_and_ignored() {
    let (mut s, st) = started();
    let (st, now) = pass_stages(&s, st, 2, 0);
    assert_eq!(st.stage_index, Some(2));
    s.operations.retry = Some(OperationRequest { id: "r1".into(), reason: None, requested_by: None });
    let d = step(&s, &st, obs(true), at(now + 1));
    // A retry that acted would start over at the first stage with a new start time.
    assert_eq!(d.status.stage_index, Some(2), "the rollout goes on where it was");
    assert_eq!(d.status.rollout_start_time, st.rollout_start_time);
    assert_eq!(d.status.handled_operations.retry.as_deref(), Some("r1"), "and the request cannot fire later");
    let mut failed = d.status.clone();
    failed.phase = Some(Phase::RolledBack);
    let later = step(&s, &failed, obs(true), at(now + 2));
    assert_eq!(later.status.phase, Some(Phase::RolledBack), "r1 was handled while progressing");
}

#[test]
fn promote_moves_one_stage_once_per_request() {
    let (mut s, st) = started();
    s.operations.promote = Some(PromoteRequest { id: "p1".into(), reason: Some("looks good".into()), full: false });
    let d = step(&s, &st, obs(true), at(1));
    assert_eq!(d.status.stage_index, Some(1));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::MANUALLY_PROMOTED));
    let again = step(&s, &d.status, obs(true), at(2));
    assert_eq!(again.status.stage_index, Some(1), "the same request does not promote twice");
}

#[test]
fn promote_full_makes_the_candidate_stable() {
    let (mut s, st) = started();
    s.operations.promote = Some(PromoteRequest { id: "p1".into(), reason: None, full: true });
    let d = step(&s, &st, obs(true), at(1));
    assert_eq!(d.status.phase, Some(Phase::Promoted));
    assert_eq!(d.status.stable_version.as_deref(), Some("v2"));
}

#[test]
fn requests_already_in_the_spec_do_not_fire_on_a_new_rollout() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-10));
    let s = with_abort(spec("v2", SHA_V2), "old");
    let d = decide(&s, &first.status, &obs(true), t0());
    let d = decide(&s, &d.status, &obs(true), at(1));
    assert_eq!(d.status.phase, Some(Phase::Progressing));
}

#[test]
fn manual_approval_holds_until_promoted() {
    let (mut s, st) = started();
    s.stages[1].manual_approval = true;
    let (st, now) = pass_stages(&s, st, 1, 0);
    let d = step(&s, &st, analysed(healthy()), at(now + 10));
    assert_eq!((d.status.phase, d.status.stage_index), (Some(Phase::Paused), Some(1)));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::AWAITING_APPROVAL));
    let d = step(&s, &d.status, analysed(healthy()), at(now + 100));
    assert_eq!(d.status.stage_index, Some(1), "still waiting");
    s.operations.promote = Some(PromoteRequest { id: "ok".into(), reason: None, full: false });
    let d = step(&s, &d.status, obs(true), at(now + 101));
    assert_eq!((d.status.phase, d.status.stage_index), (Some(Phase::Progressing), Some(2)));
}
