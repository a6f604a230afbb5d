//! The decision core: versions.

use super::*;

#[test]
fn first_sight_makes_the_spec_version_stable() {
    let d = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), t0());
    assert_eq!(d.status.phase, Some(Phase::Idle));
    assert_eq!(d.status.stable_version.as_deref(), Some("v1"));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    assert!(!has_candidate_workload(&d));
    assert_eq!(condition(&d.status, types::READY), "True");
    assert_eq!(d.status.conditions.iter().find(|c| c.type_ == types::READY).unwrap().observed_generation, Some(1));
}

#[test]
fn same_version_is_a_no_op() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), t0());
    let again = decide(&spec("v1", SHA_V1), &first.status, &obs(false), at(60));
    assert_eq!(again.status, first.status);
    assert!(!status_changed(&first.status, &again.status));
    assert!(!again.actions.iter().any(|a| matches!(a, Action::Event { .. } | Action::Notify { .. })));
}

#[test]
fn new_version_starts_at_the_first_stage_against_stable() {
    let (_, st) = started();
    assert_eq!(st.phase, Some(Phase::Progressing));
    assert_eq!(st.stage_index, Some(0));
    assert_eq!(st.stage_name.as_deref(), Some("shadow"));
    assert_eq!((st.canary_weight, st.mirror_percent), (0, 100));
    assert_eq!(st.candidate_version.as_deref(), Some("v2"));
    assert_eq!(st.stable_version.as_deref(), Some("v1"));
    assert_eq!(condition(&st, types::PROGRESSING), "True");
    assert_eq!(condition(&st, types::RECONCILING), "True");
    assert_eq!(condition(&st, types::READY), "False");
}

#[test]
fn a_changed_digest_with_the_same_version_is_a_new_candidate() {
    let (s, st) = started();
    let (st, _) = pass_stages(&s, st, 1, 0);
    assert_eq!(st.stage_index, Some(1));
    let mut rebuilt = s.clone();
    rebuilt.model.artifact.sha256 = SHA_V3.into();
    let d = decide(&rebuilt, &st, &obs(true), at(30));
    assert_eq!(d.status.stage_index, Some(0));
    assert_eq!(d.status.candidate_sha256.as_deref(), Some(SHA_V3));
}

#[test]
fn newer_version_mid_rollout_restarts_from_the_first_stage_against_the_same_stable() {
    let (s, st) = started();
    let (st, now) = pass_stages(&s, st, 2, 0);
    assert_eq!(st.stage_index, Some(2));
    let d = decide(&spec("v3", SHA_V3), &st, &obs(false), at(now + 1));
    assert_eq!(d.status.stage_index, Some(0));
    assert_eq!(d.status.candidate_version.as_deref(), Some("v3"));
    assert_eq!(d.status.stable_version.as_deref(), Some("v1"));
    assert_eq!(d.status.history[0].outcome, Outcome::Superseded);
    assert_eq!(d.status.history[0].version, "v2");
    assert_eq!(scaled_down(&d), vec!["v2".to_string()]);
}

#[test]
fn spec_returning_to_stable_mid_rollout_rolls_back_to_idle() {
    let (s, st) = started();
    let (st, now) = pass_stages(&s, st, 1, 0);
    let d = decide(&spec("v1", SHA_V1), &st, &obs(true), at(now + 1));
    assert_eq!(d.status.phase, Some(Phase::Idle));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::REVERTED));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    assert_eq!(d.status.history[0].outcome, Outcome::RolledBack);
}
