//! The decision core: advancing.

use super::*;

#[test]
fn stage_advances_only_after_min_duration_and_a_passing_analysis() {
    // (seconds into the stage, analysis, advances?)
    let inconclusive = with_gate(healthy(), GATE_ERROR_RATE, Measurement::NoData, v(0.0, 100));
    let cases: Vec<(&str, i64, Option<Vec<GateObservation>>, bool)> = vec![
        ("before min duration, passing", 9, Some(healthy()), false),
        ("at min duration exactly, passing", 10, Some(healthy()), true),
        ("after min duration, passing", 11, Some(healthy()), true),
        ("after min duration, no analysis yet", 11, None, false),
        ("after min duration, inconclusive", 11, Some(inconclusive), false),
    ];
    for (name, secs, analysis, advances) in cases {
        let (s, st) = started();
        let d = step(&s, &st, Observations { analysis, ..obs(true) }, at(secs));
        assert_eq!(d.status.stage_index == Some(1), advances, "{name}");
    }
}

#[test]
fn a_pass_from_an_earlier_minute_of_the_stage_counts_once_min_duration_is_reached() {
    let (s, st) = started();
    let st = step(&s, &st, analysed(healthy()), at(5)).status;
    assert_eq!(st.stage_index, Some(0));
    let d = step(&s, &st, obs(true), at(10));
    assert_eq!(d.status.stage_index, Some(1));
}

#[test]
fn a_pass_from_the_previous_stage_does_not_advance_the_next() {
    let (s, st) = started();
    let st = step(&s, &st, analysed(healthy()), at(10)).status;
    assert_eq!(st.stage_index, Some(1));
    let d = step(&s, &st, obs(true), at(25));
    assert_eq!(d.status.stage_index, Some(1), "needs its own analysis");
}

#[test]
fn each_stage_sets_its_weight_and_mirror() {
    let (s, st) = started();
    let mut expected = vec![(1, 5, 0), (2, 25, 0), (3, 100, 0)].into_iter();
    let mut st = st;
    for i in 1..=3 {
        let d = step(&s, &st, analysed(healthy()), at(10 * i));
        let (idx, w, m) = expected.next().unwrap();
        assert_eq!(d.status.stage_index, Some(idx));
        assert_eq!(traffic(&d), ("v1".into(), Some("v2".into()), w, m));
        assert!(d.actions.iter().any(|a| matches!(a, Action::Notify { event: NotificationEvent::StageChanged, .. })));
        st = d.status;
    }
}

#[test]
fn passing_the_last_stage_promotes_and_keeps_the_old_stable_for_a_while() {
    let (s, st) = started();
    let (st, now) = pass_stages(&s, st, 3, 0);
    assert_eq!(st.stage_name.as_deref(), Some("full"));
    let d = step(&s, &st, analysed(healthy()), at(now + 10));
    assert_eq!(d.status.phase, Some(Phase::Promoted));
    assert_eq!(d.status.stable_version.as_deref(), Some("v2"));
    assert_eq!(d.status.stable.as_ref().unwrap().version, "v2");
    assert_eq!(d.status.candidate_version, None);
    assert_eq!(traffic(&d), ("v2".into(), None, 0, 0));
    assert_eq!(d.status.history[0].outcome, Outcome::Promoted);
    assert!(scaled_down(&d).is_empty(), "old stable kept for previousStableScaleDownDelay");
    assert_eq!(d.status.pending_scale_downs[0].version, "v1");
    assert_eq!(condition(&d.status, types::READY), "True");
    // 10 minutes later the old stable goes.
    let later = step(&s, &d.status, obs(false), at(now + 10 + 600));
    assert_eq!(scaled_down(&later), vec!["v1".to_string()]);
    assert!(later.status.pending_scale_downs.is_empty());
    // The same version afterwards is a no-op.
    let again = step(&s, &later.status, obs(false), at(now + 700));
    assert!(!status_changed(&later.status, &again.status));
}
