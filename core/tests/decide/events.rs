//! The decision core: events and reasons that tell the story.

use super::*;

#[test]
fn each_transition_is_an_event_of_its_own() {
    let (s, st) = started();
    let mut actions = Vec::new();
    let mut st = st;
    let mut now = 0;
    while st.phase != Some(Phase::Promoted) {
        now += 10;
        let d = step(&s, &st, analysed(healthy()), at(now));
        actions.extend(d.actions.iter().filter_map(|a| match a {
            Action::Event { reason, action, message, .. } => Some((*reason, action.clone(), message.clone())),
            _ => None,
        }));
        st = d.status;
    }
    let stage_events: Vec<_> = actions.iter().filter(|(r, ..)| *r == reasons::STAGE_ADVANCED).collect();
    let keys: std::collections::BTreeSet<_> = stage_events.iter().map(|(r, a, _)| (*r, a.clone())).collect();
    assert_eq!(keys.len(), stage_events.len(), "no two stage Events share reason and action: {stage_events:?}");
    for stage in ["canary-5", "canary-25", "full"] {
        assert!(
            stage_events.iter().any(|(_, a, m)| a.contains(stage) && m.contains(&format!("stage {stage}"))),
            "{stage}: {stage_events:?}"
        );
    }
}

#[test]
fn a_promoted_rollout_says_promoted() {
    let (s, st) = started();
    let (st, _) = pass_stages(&s, st, 4, 0);
    assert_eq!((st.phase, st.reason.as_deref()), (Some(Phase::Promoted), Some(reasons::PROMOTED)));
}

#[test]
fn once_the_candidate_is_ready_status_stops_waiting_for_it() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-100));
    let s = spec("v2", SHA_V2);
    let waiting = decide(&s, &first.status, &obs(false), t0()).status;
    assert_eq!(waiting.reason.as_deref(), Some(reasons::WAITING_FOR_CANDIDATE));
    let ready = decide(&s, &waiting, &obs(true), at(3)).status;
    assert_eq!(ready.reason.as_deref(), Some(reasons::CANDIDATE_READY));
    assert!(ready.message.as_deref().unwrap_or_default().contains("stage shadow"), "{:?}", ready.message);
}
