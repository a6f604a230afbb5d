//! The decision core: readiness, contracts, routers.

use super::*;

#[test]
fn no_weight_moves_to_an_unready_candidate_and_the_deadline_fails_the_rollout() {
    let (mut s, st) = started();
    s.workload.progress_deadline = d("60s");
    let (st, now) = pass_stages(&s, st, 1, 0);
    let d = step(&s, &st, obs(false), at(now + 1));
    assert_eq!(traffic(&d).2, 0, "unready candidate gets no traffic");
    assert_eq!(d.status.reason.as_deref(), Some(reasons::WAITING_FOR_CANDIDATE));
    assert_eq!(
        d.requeue_after,
        Some(std::time::Duration::from_secs(5)),
        "its pods are looked at again soon (nothing watches them), not only at the deadline"
    );
    let before = step(&s, &d.status, obs(false), at(now + 60));
    assert_eq!(before.status.phase, Some(Phase::Progressing), "deadline not yet passed");
    let after = step(&s, &before.status, obs(false), at(now + 61));
    assert_eq!(after.status.phase, Some(Phase::Failed));
    assert_eq!(after.status.reason.as_deref(), Some(reasons::PROGRESS_DEADLINE_EXCEEDED));
    assert_eq!(traffic(&after), ("v1".into(), None, 0, 0));
    assert!(
        after
            .actions
            .iter()
            .any(|a| matches!(a, Action::EnsureWorkload { role: Role::Stable, model } if model.version == "v1"))
    );
}

#[test]
fn a_candidate_pod_that_cannot_start_or_crashes_fails_the_rollout_at_once_naming_why() {
    use modelrollout_core::pods::{Trouble, TroubleKind};
    let trouble = |kind, detail: &str| Observations {
        candidate_trouble: Some(Trouble { pod: "fraud-v2-abc".into(), kind, detail: detail.into() }),
        ..obs(false)
    };
    // Before any traffic: the image cannot be pulled.
    let (s, st) = started();
    let d = step(&s, &st, trouble(TroubleKind::CannotStart, "container sidecar: ImagePullBackOff: x"), at(1));
    assert_eq!((d.status.phase, d.status.reason.as_deref()), (Some(Phase::Failed), Some(reasons::CANDIDATE_FAILED)));
    assert_eq!(
        d.status.message.as_deref(),
        Some("v2 rolled back: candidate v2: pod fraud-v2-abc cannot start: container sidecar: ImagePullBackOff: x")
    );
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0), "no traffic ever moved");
    // After traffic moved: a crash takes it back at once, well before the progress deadline.
    let (st, now) = pass_stages(&s, started().1, 1, 0);
    assert!(st.canary_weight > 0, "the candidate had traffic");
    let d = step(&s, &st, trouble(TroubleKind::Crashed, "container sidecar exited with code 137 (Error)"), at(now + 2));
    assert_eq!((d.status.phase, d.status.reason.as_deref()), (Some(Phase::Failed), Some(reasons::CANDIDATE_FAILED)));
    assert!(d.status.message.as_deref().unwrap().contains("crashed: container sidecar exited with code 137"));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    // A pod that merely is not Ready yet is waited for, as before.
    let d = step(&s, &st, obs(false), at(now + 2));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::WAITING_FOR_CANDIDATE));
}

#[test]
fn a_candidate_ready_again_restarts_the_stage_clock() {
    let (s, st) = started();
    let st = step(&s, &st, obs(false), at(1)).status;
    let st = step(&s, &st, obs(true), at(20)).status;
    assert_eq!(st.stage_start_time.unwrap().0, at(20));
    assert_eq!(st.mirror_percent, 100);
}

#[test]
fn a_candidate_needing_inputs_stable_lacks_is_refused_before_anything_moves() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-10));
    let mut s = spec("v2", SHA_V2);
    s.model.contract.inputs.push(feature("device_fingerprint"));
    let d = decide(&s, &first.status, &obs(false), t0());
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::CONTRACT_MISMATCH));
    assert!(d.status.message.as_ref().unwrap().contains("device_fingerprint"));
    assert!(!has_candidate_workload(&d));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    // And it stays refused on the next reconcile.
    let again = decide(&s, &d.status, &obs(false), at(1));
    assert_eq!(again.status.phase, Some(Phase::Failed));
    assert!(!has_candidate_workload(&again));
}

#[test]
fn replica_ratio_skips_shadow_and_says_so() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-10));
    let mut s = spec("v2", SHA_V2);
    s.traffic_routing = TrafficRouting { replica_ratio: Some(ReplicaRatioRouting {}), ..Default::default() };
    let d = decide(&s, &first.status, &obs(true), t0());
    assert_eq!(d.status.stage_index, Some(1));
    assert_eq!(traffic(&d).2, 5);
    assert!(d.status.message.as_ref().unwrap().contains("cannot mirror"));
}

#[test]
fn replica_ratio_keeps_the_stage_weight_while_the_stage_s_new_candidate_pods_come_up() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-10));
    let mut s = spec("v2", SHA_V2);
    s.traffic_routing = TrafficRouting { replica_ratio: Some(ReplicaRatioRouting {}), ..Default::default() };
    let st = decide(&s, &first.status, &obs(true), t0()).status;
    let (st, now) = pass_stages(&s, st, 1, 0);
    let weight = st.canary_weight;
    assert!(weight > 5, "a later stage: more candidate pods, so the candidate is unready a moment");
    let d = step(&s, &st, obs(false), at(now + 1));
    assert_eq!(d.status.canary_weight, weight, "the weight (the pods) stays: zeroing it would scale them away");
    assert_eq!(d.status.reason.as_deref(), Some(reasons::WAITING_FOR_CANDIDATE));
    assert!(d.status.candidate_unready_since.is_some(), "the progress deadline still runs");
    let ready = step(&s, &d.status, obs(true), at(now + 5));
    assert_eq!(ready.status.canary_weight, weight);
    assert!(ready.status.candidate_unready_since.is_none());
    // Before any traffic (the candidate's first pod) there is no weight to keep.
    let fresh = decide(&s, &first.status, &obs(false), t0());
    assert_eq!(fresh.status.canary_weight, 0);
}

#[test]
fn a_candidate_growing_mid_stage_keeps_its_traffic_clock_and_analyses() {
    // At 5%, an autoscaler raised the rollout's size: the candidate's new pod is not Ready yet,
    // its first one is.
    let (s, st) = started();
    let (st, now) = pass_stages(&s, st, 1, 0);
    assert_eq!((st.stage_index, st.canary_weight), (Some(1), 5));
    let growing = Observations { candidate_available: true, ..analysed(healthy()) };
    let mut g = growing.clone();
    g.candidate_ready = false;
    let d = step(&s, &st, g.clone(), at(now + 5));
    assert_eq!(traffic(&d).2, 5, "the Ready pods keep the stage's traffic");
    assert_eq!(d.status.candidate_unready_since, None);
    assert_eq!(d.status.stage_start_time, st.stage_start_time, "the stage's clock goes on");
    assert!(d.status.last_analysis.as_ref().is_some_and(|r| r.time.0 == at(now + 5)), "analysed");
    assert!(growing_while_serving(&s, &st, true));
    // No Ready pod at all: no traffic, as before.
    let none = step(&s, &st, obs(false), at(now + 5));
    assert_eq!(traffic(&none).2, 0);
    // Before any traffic flows it waits for every pod, as before.
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-100));
    let waiting = step(&s, &first.status, Observations { candidate_available: true, ..obs(false) }, at(1));
    assert_eq!(waiting.status.reason.as_deref(), Some(reasons::WAITING_FOR_CANDIDATE));
    assert_eq!(traffic(&waiting).3, 0, "no mirror either");
    // With replica ratios the pods are the weight: unchanged.
    let mut ratio = s.clone();
    ratio.traffic_routing = TrafficRouting { gateway_api: None, istio: None, replica_ratio: Some(Default::default()) };
    assert!(!growing_while_serving(&ratio, &st, true));
}
