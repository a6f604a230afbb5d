//! The decision core: holds: what keeps a rollout paused, typed.

use super::*;

/// Every way into and out of a hold, from a running rollout at stage 2.
#[test]
fn holds_are_typed_and_each_is_released_by_its_own_cause() {
    struct Case {
        name: &'static str,
        hold: fn(&ModelRolloutSpec, ModelRolloutStatus, i64) -> (ModelRolloutSpec, ModelRolloutStatus),
        want: Hold,
        release: fn(&mut ModelRolloutSpec) -> Observations,
        released_reason: &'static str,
    }
    let gap = || with_gate(healthy(), GATE_CAPTURE_RATE, Measurement::NoData, Measurement::NoData);
    let cases = [
        Case {
            name: "spec.paused",
            hold: |s, st, now| {
                let mut p = s.clone();
                p.paused = true;
                let st = step(&p, &st, obs(true), at(now + 1)).status;
                (p, st)
            },
            want: Hold::Spec,
            release: |s| {
                s.paused = false;
                obs(true)
            },
            released_reason: reasons::RESUMED,
        },
        Case {
            name: "inconclusive",
            hold: |s, mut st, now| {
                let gap = with_gate(healthy(), GATE_CAPTURE_RATE, Measurement::NoData, Measurement::NoData);
                for i in 1..=3 {
                    st = step(s, &st, analysed(gap.clone()), at(now + 5 * i)).status;
                }
                (s.clone(), st)
            },
            want: Hold::Inconclusive,
            // Released by a passing analysis, which (past minDuration) also advances the stage.
            release: |_| analysed(healthy()),
            released_reason: reasons::STAGE_ADVANCED,
        },
        Case {
            name: "manual approval",
            hold: |s, st, now| {
                let mut a = s.clone();
                a.stages[2].manual_approval = true;
                let st = step(&a, &st, analysed(healthy()), at(now + 10)).status;
                (a, st)
            },
            want: Hold::Approval,
            release: |s| {
                s.operations.promote = Some(PromoteRequest { id: "go".into(), reason: None, full: false });
                obs(true)
            },
            released_reason: reasons::MANUALLY_PROMOTED,
        },
    ];
    let _ = gap;
    for c in cases {
        let (s, st) = started();
        let (st, now) = pass_stages(&s, st, 2, 0);
        let (mut held_spec, held) = (c.hold)(&s, st, now);
        assert_eq!((held.phase, held.hold), (Some(Phase::Paused), Some(c.want)), "{}: held", c.name);
        // A hold is not released by another cause: an unrelated promote-free, unpaused step.
        let still = step(&held_spec, &held, obs(true), at(now + 100));
        if c.want != Hold::Spec {
            assert_eq!(still.status.hold, Some(c.want), "{}: nothing releases it but its cause", c.name);
        }
        let o = (c.release)(&mut held_spec);
        let released = step(&held_spec, &still.status, o, at(now + 101)).status;
        assert_ne!(released.phase, Some(Phase::Paused), "{}: released", c.name);
        assert_eq!(released.hold, None, "{}: no hold outside Paused", c.name);
        assert_eq!(released.reason.as_deref(), Some(c.released_reason), "{}", c.name);
    }
}

#[test]
fn the_hold_is_set_exactly_while_paused() {
    let (mut s, st) = started();
    s.paused = true;
    let paused = step(&s, &st, obs(true), at(1)).status;
    assert_eq!(paused.hold, Some(Hold::Spec));
    // Aborted while paused: no hold is left on a rolled-back rollout.
    let aborted = step(&with_abort(s, "a1"), &paused, obs(true), at(2)).status;
    assert_eq!((aborted.phase, aborted.hold), (Some(Phase::RolledBack), None));
}

#[test]
fn a_status_from_before_typed_holds_is_read_by_its_reason() {
    let (s, st) = started();
    let (mut st, now) = pass_stages(&s, st, 1, 0);
    st.phase = Some(Phase::Paused);
    st.reason = Some(reasons::AWAITING_APPROVAL.into());
    st.hold = None;
    let mut s = s;
    s.stages[1].manual_approval = true;
    let d = step(&s, &st, analysed(healthy()), at(now + 5)).status;
    assert_eq!((d.phase, d.hold), (Some(Phase::Paused), Some(Hold::Approval)));
}
