//! The decision core after a promotion: retention (warm, cold), undo (asked for, a GitOps revert,
//! the watch's own), the watch on the promoted version, deprecation and removal.

use super::*;

/// The fraud spec retaining v1 for an hour (`mode`), removed two hours after it is deprecated.
fn retaining(version: &str, sha: &str, mode: RetentionMode) -> ModelRolloutSpec {
    let mut s = spec(version, sha);
    s.after_promotion = Some(AfterPromotion {
        retention: d("1h"),
        mode,
        warm_replicas: None,
        remove_after: Some(d("2h")),
        gates: None,
        on_failure: AfterPromotionFailure::Alert,
    });
    s
}

/// v2 promoted over v1 under `s` (a v2 spec); returns the status and the promotion's time.
fn promoted(s: &ModelRolloutSpec) -> (ModelRolloutStatus, i64) {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-100));
    let st = decide(s, &first.status, &obs(true), t0()).status;
    let (st, now) = pass_stages(s, st, 4, 0);
    assert_eq!(st.phase, Some(Phase::Promoted), "{:?}", st.message);
    (st, now)
}

fn with_undo(mut s: ModelRolloutSpec, id: &str) -> ModelRolloutSpec {
    s.operations.undo =
        Some(OperationRequest { id: id.into(), reason: Some("fraud losses up".into()), requested_by: None });
    s
}

fn retained_ready() -> Observations {
    Observations { retained_ready: true, ..obs(false) }
}

fn ensures_retained(d: &Decision) -> bool {
    d.actions
        .iter()
        .any(|a| matches!(a, Action::EnsureWorkload { role: Role::Retained, model } if model.version == "v1"))
}

fn removed(d: &Decision) -> Vec<String> {
    d.actions
        .iter()
        .filter_map(|a| match a {
            Action::RemoveWorkload { version } => Some(version.clone()),
            _ => None,
        })
        .collect()
}

fn events(d: &Decision) -> Vec<&'static str> {
    d.actions
        .iter()
        .filter_map(|a| match a {
            Action::Event { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn warm_retention_keeps_the_previous_version_until_it_ends_then_deprecates_and_removes_it() {
    let s = retaining("v2", SHA_V2, RetentionMode::Warm);
    let (st, now) = promoted(&s);
    let r = st.retained.as_ref().expect("v1 retained");
    assert_eq!((r.model.version.as_str(), r.mode), ("v1", RetentionMode::Warm));
    assert_eq!(r.until.0, at(now + 3600));
    // Its pods stay through the retention (previousStableScaleDownDelay does not apply).
    let during = step(&s, &st, obs(false), at(now + 3599));
    assert!(ensures_retained(&during) && scaled_down(&during).is_empty(), "{:?}", during.actions);
    assert_eq!(during.requeue_after, Some(std::time::Duration::from_secs(1)), "wakes at the retention's end");
    // At its end: deprecated, scaled down, its removal two hours on.
    let ended = step(&s, &during.status, obs(false), at(now + 3600));
    assert_eq!(ended.status.retained, None);
    assert_eq!(scaled_down(&ended), vec!["v1".to_string()]);
    assert!(!ensures_retained(&ended));
    let retired = &ended.status.retired[0];
    assert_eq!((retired.version.as_str(), retired.deprecated_at.0), ("v1", at(now + 3600)));
    assert_eq!(retired.remove_at.as_ref().map(|t| t.0), Some(at(now + 3600 + 7200)));
    assert_eq!(
        (ended.status.history[0].version.as_str(), ended.status.history[0].outcome),
        ("v1", Outcome::Deprecated)
    );
    assert!(events(&ended).contains(&reasons::DEPRECATED));
    assert_eq!(ended.status.phase, Some(Phase::Promoted), "v2 serves on");
    // Not removed a second early; removed at its time, once.
    let early = step(&s, &ended.status, obs(false), at(now + 3600 + 7199));
    assert!(removed(&early).is_empty());
    let gone = step(&s, &early.status, obs(false), at(now + 3600 + 7200));
    assert_eq!(removed(&gone), vec!["v1".to_string()]);
    assert!(gone.status.retired.is_empty());
    assert_eq!(gone.status.history[0].outcome, Outcome::Removed);
    let after = step(&s, &gone.status, obs(false), at(now + 20000));
    assert!(removed(&after).is_empty() && !status_changed(&gone.status, &after.status));
}

#[test]
fn cold_retention_scales_the_previous_version_to_zero_and_an_undo_waits_for_its_pods() {
    let s = retaining("v2", SHA_V2, RetentionMode::Cold);
    let (st, now) = promoted(&s);
    let kept = step(&s, &st, obs(false), at(now + 599));
    assert!(!ensures_retained(&kept) && scaled_down(&kept).is_empty(), "pods kept for previousStableScaleDownDelay");
    let cold = step(&s, &kept.status, obs(false), at(now + 600));
    assert_eq!(scaled_down(&cold), vec!["v1".to_string()]);
    assert!(cold.status.retained.is_some(), "still retained, at zero pods");
    // Undo: v1 scaled up, traffic stays on v2 until its pods are Ready.
    let s = with_undo(s, "u1");
    let waiting = step(&s, &cold.status, obs(false), at(now + 1000));
    assert!(ensures_retained(&waiting), "{:?}", waiting.actions);
    assert_eq!(traffic(&waiting), ("v2".into(), None, 0, 0));
    assert_eq!(waiting.status.reason.as_deref(), Some(reasons::UNDOING));
    assert_eq!(waiting.status.handled_operations.undo.as_deref(), Some("u1"));
    assert_eq!(waiting.status.undo.as_ref().map(|u| u.version.as_str()), Some("v1"));
    let still = step(&s, &waiting.status, obs(false), at(now + 1005));
    assert!(ensures_retained(&still) && still.status.undo.is_some());
    let done = step(&s, &still.status, retained_ready(), at(now + 1010));
    assert_eq!(traffic(&done), ("v1".into(), None, 0, 0));
    assert_eq!(done.status.stable_version.as_deref(), Some("v1"));
    assert_eq!((done.status.phase, done.status.reason.as_deref()), (Some(Phase::RolledBack), Some(reasons::UNDONE)));
    assert_eq!(done.status.candidate_version.as_deref(), Some("v2"), "v2 is the rolled-back candidate");
    assert_eq!((done.status.retained.clone(), done.status.undo.clone()), (None, None));
    assert_eq!((done.status.history[0].version.as_str(), done.status.history[0].outcome), ("v2", Outcome::Undone));
    assert!(done.status.history[0].reason.contains("fraud losses up"));
    assert!(done.status.pending_scale_downs.iter().any(|p| p.version == "v2" && p.at.0 == at(now + 1010 + 30)));
    assert!(events(&done).contains(&reasons::UNDONE));
}

#[test]
fn a_warm_undo_moves_all_traffic_in_the_same_decision() {
    let s = retaining("v2", SHA_V2, RetentionMode::Warm);
    let (st, now) = promoted(&s);
    let d = step(&with_undo(s, "u1"), &st, retained_ready(), at(now + 60));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::UNDONE));
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::EnsureWorkload { role: Role::Stable, model } if model.version == "v1"))
    );
    assert!(d.actions.iter().any(|a| matches!(a, Action::Notify { event: NotificationEvent::RolledBack, .. })));
}

#[test]
fn without_after_promotion_the_previous_stable_can_be_undone_to_while_its_pods_are_kept() {
    let s = spec("v2", SHA_V2);
    let (st, now) = promoted(&s);
    let r = st.retained.as_ref().expect("kept for previousStableScaleDownDelay");
    assert_eq!((r.mode, r.until.0), (RetentionMode::Warm, at(now + 600)));
    assert!(st.watch.is_none(), "nothing watches without afterPromotion");
    let d = step(&with_undo(s.clone(), "u1"), &st, retained_ready(), at(now + 300));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    // After the delay: scaled down as before, no deprecation recorded, nothing left to undo to.
    let later = step(&s, &st, obs(false), at(now + 600));
    assert_eq!(scaled_down(&later), vec!["v1".to_string()]);
    assert!(later.status.retained.is_none() && later.status.retired.is_empty());
    assert_eq!(later.status.history[0].outcome, Outcome::Promoted);
    let refused = step(&with_undo(s, "u2"), &later.status, obs(false), at(now + 700));
    assert!(events(&refused).contains(&reasons::UNDO_REFUSED));
    assert_eq!(traffic(&refused), ("v2".into(), None, 0, 0));
    assert_eq!(refused.status.handled_operations.undo.as_deref(), Some("u2"));
}

#[test]
fn a_reapplied_manifest_neither_undoes_twice_nor_rolls_the_undone_version_out_again() {
    let s = with_undo(retaining("v2", SHA_V2, RetentionMode::Warm), "u1");
    let (st, now) = promoted(&retaining("v2", SHA_V2, RetentionMode::Warm));
    let undone = step(&s, &st, retained_ready(), at(now + 60)).status;
    // The same manifest (v2, undo u1) applied again and again: v1 serves, v2 stays rolled back.
    let mut cur = undone.clone();
    for t in [61, 120, 4000, 20000] {
        let d = step(&s, &cur, retained_ready(), at(now + t));
        assert_eq!(traffic(&d), ("v1".into(), None, 0, 0), "at +{t}");
        assert!(!has_candidate_workload(&d), "v2 is not rolled out again");
        assert_eq!(d.status.phase, Some(Phase::RolledBack));
        assert_eq!(d.status.history.iter().filter(|h| h.outcome == Outcome::Undone).count(), 1);
        cur = d.status;
    }
    // `retry` rolls v2 out again, stage by stage.
    let mut retry = s.clone();
    retry.operations.retry = Some(OperationRequest { id: "r1".into(), reason: None, requested_by: None });
    let again = step(&retry, &cur, obs(true), at(now + 20010));
    assert_eq!((again.status.phase, again.status.stage_index), (Some(Phase::Progressing), Some(0)));
    assert_eq!(traffic(&again).0, "v1");
}

#[test]
fn an_undo_waiting_for_pods_is_not_lost_when_the_request_leaves_the_spec() {
    let s = retaining("v2", SHA_V2, RetentionMode::Cold);
    let (st, now) = promoted(&s);
    let waiting = step(&with_undo(s.clone(), "u1"), &st, obs(false), at(now + 700)).status;
    assert!(waiting.undo.is_some());
    // A GitOps sync that drops the request (it owned the field): the undo goes on.
    let d = step(&s, &waiting, retained_ready(), at(now + 710));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::UNDONE));
}

#[test]
fn an_undo_whose_pods_never_come_gives_up_at_the_progress_deadline_and_keeps_serving() {
    let s = retaining("v2", SHA_V2, RetentionMode::Cold);
    let (st, now) = promoted(&s);
    let waiting = step(&with_undo(s.clone(), "u1"), &st, obs(false), at(now + 700)).status;
    let deadline = signed(&s.workload.progress_deadline).as_secs();
    let d = step(&s, &waiting, obs(false), at(now + 700 + deadline));
    assert!(d.status.undo.is_none());
    assert_eq!(traffic(&d), ("v2".into(), None, 0, 0));
    assert!(events(&d).contains(&reasons::UNDO_REFUSED));
    assert!(d.status.retained.is_some(), "still retained: another undo may try again");
}

#[test]
fn spec_model_back_at_the_retained_version_is_an_undo() {
    let s = retaining("v2", SHA_V2, RetentionMode::Warm);
    let (st, now) = promoted(&s);
    let back = retaining("v1", SHA_V1, RetentionMode::Warm);
    let d = step(&back, &st, retained_ready(), at(now + 60));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    assert!(!has_candidate_workload(&d), "no staged rollout of v1");
    assert_eq!((d.status.phase, d.status.reason.as_deref()), (Some(Phase::Idle), Some(reasons::UNDONE)));
    assert_eq!(d.status.candidate_version, None);
    assert_eq!(d.status.history[0].outcome, Outcome::Undone);
    let again = step(&back, &d.status, obs(false), at(now + 70));
    assert!(!status_changed(&d.status, &again.status));
}

#[test]
fn undo_is_refused_while_a_rollout_is_underway() {
    let s = retaining("v2", SHA_V2, RetentionMode::Warm);
    let (st, now) = promoted(&s);
    let v3 = retaining("v3", SHA_V3, RetentionMode::Warm);
    let rolling = step(&v3, &st, obs(true), at(now + 10)).status;
    assert_eq!(rolling.phase, Some(Phase::Progressing));
    let d = step(&with_undo(v3, "u1"), &rolling, Observations { retained_ready: true, ..obs(true) }, at(now + 12));
    assert!(events(&d).contains(&reasons::UNDO_REFUSED));
    assert_eq!(d.status.stable_version.as_deref(), Some("v2"));
    assert_eq!(d.status.candidate_version.as_deref(), Some("v3"));
}

#[test]
fn a_second_promotion_deprecates_the_version_retained_before() {
    let s = retaining("v2", SHA_V2, RetentionMode::Warm);
    let (st, now) = promoted(&s);
    let v3 = retaining("v3", SHA_V3, RetentionMode::Warm);
    let mut cur = step(&v3, &st, obs(true), at(now + 10)).status;
    let mut t = now + 10;
    while cur.phase != Some(Phase::Promoted) {
        t += 10;
        cur = step(&v3, &cur, analysed(healthy()), at(t)).status;
    }
    assert_eq!(cur.retained.as_ref().map(|r| r.model.version.as_str()), Some("v2"));
    assert_eq!(cur.retired.iter().map(|r| r.version.as_str()).collect::<Vec<_>>(), ["v1"]);
    assert!(cur.history.iter().any(|h| h.version == "v1" && h.outcome == Outcome::Deprecated));
}

#[test]
fn a_retired_version_rolled_out_again_is_not_removed() {
    let s = retaining("v2", SHA_V2, RetentionMode::Warm);
    let (st, now) = promoted(&s);
    let deprecated = step(&s, &st, obs(false), at(now + 3600)).status;
    assert_eq!(deprecated.retired.len(), 1);
    // v1 rolled out again (a new rollout, not an undo: its retention is over).
    let back = retaining("v1", SHA_V1, RetentionMode::Warm);
    let rolling = step(&back, &deprecated, obs(true), at(now + 3700));
    assert_eq!(
        (rolling.status.phase, rolling.status.candidate_version.as_deref()),
        (Some(Phase::Progressing), Some("v1"))
    );
    assert!(rolling.status.retired.is_empty());
    let later = step(&back, &rolling.status, obs(true), at(now + 3600 + 7200));
    assert!(removed(&later).is_empty());
}

mod watch {
    use super::*;

    fn watched(on_failure: AfterPromotionFailure) -> ModelRolloutSpec {
        let mut s = retaining("v2", SHA_V2, RetentionMode::Warm);
        s.after_promotion.as_mut().unwrap().on_failure = on_failure;
        s
    }

    fn watch_obs(gates: Vec<GateObservation>) -> Observations {
        Observations { watch_analysis: Some(gates), retained_ready: true, ..obs(false) }
    }

    /// The promoted version's error rate broken, the retained one without traffic.
    fn broken() -> Vec<GateObservation> {
        let mut g = with_gate(healthy(), GATE_ERROR_RATE, v(0.05, 1000), Measurement::NoData);
        for o in &mut g {
            if o.gate != GATE_ERROR_RATE {
                o.stable = Measurement::NoData;
            }
        }
        g
    }

    #[test]
    fn the_watch_judges_the_last_stages_gates_every_interval_during_retention() {
        let s = watched(AfterPromotionFailure::Alert);
        let (st, now) = promoted(&s);
        let w = st.watch.as_ref().expect("watching v2");
        assert_eq!((w.version.as_str(), w.until.0), ("v2", at(now + 3600)));
        assert_eq!(condition(&st, types::AFTER_PROMOTION_HEALTHY), "True");
        let names: Vec<_> = watch_gate_defs(&s).into_iter().map(|d| d.name).collect();
        assert_eq!(names, [GATE_ERROR_RATE, GATE_LATENCY_P95, GATE_FALSE_POSITIVE_RATE, GATE_CAPTURE_RATE]);
        let slot = AnalysisSlot::default();
        assert!(!watch_analysis_due(&s, &st, slot, at(now + 4)));
        assert!(watch_analysis_due(&s, &st, slot, at(now + 5)));
        // Relative limits compare with v1's values from the rollout's last analysis.
        let mut quiet = healthy();
        for o in &mut quiet {
            o.stable = Measurement::NoData;
        }
        let d = step(&s, &st, watch_obs(quiet), at(now + 5));
        let run = d.status.watch.as_ref().unwrap().last_analysis.clone().unwrap();
        assert_eq!((run.verdict, run.gate_set), (Verdict::Pass, GateSet::AfterPromotion), "{run:?}");
        assert!(!watch_analysis_due(&s, &d.status, slot, at(now + 9)));
        assert!(watch_analysis_due(&s, &d.status, slot, at(now + 10)));
        // No analysis is due after the retention.
        assert!(!watch_analysis_due(&s, &d.status, slot, at(now + 3600)));
        // `gates: {}` watches nothing.
        let mut none = s.clone();
        none.after_promotion.as_mut().unwrap().gates = Some(Gates::default());
        assert!(promoted(&none).0.watch.is_none());
    }

    #[test]
    fn failing_after_promotion_alerts_and_keeps_serving_when_asked_to_alert() {
        let s = watched(AfterPromotionFailure::Alert);
        let (st, now) = promoted(&s);
        let once = step(&s, &st, watch_obs(broken()), at(now + 5));
        assert_eq!(condition(&once.status, types::AFTER_PROMOTION_HEALTHY), "True", "one failure is not a streak");
        let twice = step(&s, &once.status, watch_obs(broken()), at(now + 10));
        assert_eq!(condition(&twice.status, types::AFTER_PROMOTION_HEALTHY), "False");
        assert!(events(&twice).contains(&reasons::AFTER_PROMOTION_FAILED));
        assert!(
            twice
                .actions
                .iter()
                .any(|a| matches!(a, Action::Notify { event: NotificationEvent::AfterPromotionFailed, .. }))
        );
        assert_eq!(traffic(&twice), ("v2".into(), None, 0, 0), "Alert: v2 keeps serving");
        assert_eq!(twice.status.phase, Some(Phase::Promoted));
        // The failure is said once; a pass after it says so too.
        let thrice = step(&s, &twice.status, watch_obs(broken()), at(now + 15));
        assert!(!events(&thrice).contains(&reasons::AFTER_PROMOTION_FAILED));
        let fine = step(&s, &thrice.status, watch_obs(healthy()), at(now + 20));
        assert_eq!(condition(&fine.status, types::AFTER_PROMOTION_HEALTHY), "True");
        assert!(events(&fine).contains(&reasons::AFTER_PROMOTION_PASSING));
    }

    #[test]
    fn failing_after_promotion_undoes_by_itself_when_asked_to() {
        let s = watched(AfterPromotionFailure::Undo);
        let (st, now) = promoted(&s);
        let once = step(&s, &st, watch_obs(broken()), at(now + 5));
        assert_eq!(traffic(&once), ("v2".into(), None, 0, 0));
        let twice = step(&s, &once.status, watch_obs(broken()), at(now + 10));
        assert_eq!(traffic(&twice), ("v1".into(), None, 0, 0));
        assert_eq!(
            (twice.status.phase, twice.status.reason.as_deref()),
            (Some(Phase::RolledBack), Some(reasons::UNDONE))
        );
        assert!(twice.status.history[0].reason.contains("after-promotion gates"), "{}", twice.status.history[0].reason);
        assert!(twice.status.watch.is_none());
        assert!(twice.status.conditions.iter().all(|c| c.type_ != types::AFTER_PROMOTION_HEALTHY));
    }

    #[test]
    fn missing_data_after_promotion_is_not_a_failure() {
        let s = watched(AfterPromotionFailure::Undo);
        let (st, now) = promoted(&s);
        let none: Vec<GateObservation> = healthy()
            .into_iter()
            .map(|g| GateObservation { candidate: Measurement::NoData, stable: Measurement::NoData, ..g })
            .collect();
        let mut cur = st;
        for i in 1..=5 {
            let d = step(&s, &cur, watch_obs(none.clone()), at(now + 5 * i));
            assert_eq!(traffic(&d).0, "v2");
            cur = d.status;
        }
        assert_eq!(cur.watch.as_ref().unwrap().consecutive_failures, 0);
    }
}

#[test]
fn with_replica_ratios_the_retained_version_keeps_no_pods_and_an_undo_removes_the_undone_ones_at_once() {
    let mut s = retaining("v2", SHA_V2, RetentionMode::Warm);
    s.traffic_routing = TrafficRouting { gateway_api: None, istio: None, replica_ratio: Some(Default::default()) };
    let (st, now) = promoted(&s);
    assert_eq!(st.retained.as_ref().map(|r| r.mode), Some(RetentionMode::Cold), "every pod takes traffic");
    let after = step(&s, &st, obs(false), at(now + 1));
    assert!(!ensures_retained(&after), "v1 gets no pods back: they would take traffic");
    let waiting = step(&with_undo(s.clone(), "u1"), &after.status, obs(false), at(now + 2));
    assert!(ensures_retained(&waiting), "scaled up for the undo");
    let done = step(&s, &waiting.status, retained_ready(), at(now + 3));
    assert_eq!(done.status.stable_version.as_deref(), Some("v1"));
    assert_eq!(scaled_down(&done), vec!["v2".to_string()], "v2's pods leave at once");
}
