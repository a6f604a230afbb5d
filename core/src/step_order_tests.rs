//! The step order is the rules: for every two neighbouring steps, a situation that the swapped order
//! decides differently (and wrongly).

use super::*;
use crate::fixtures::*;
use crate::pods::{Trouble, TroubleKind};

fn trouble() -> Option<Trouble> {
    Some(Trouble { pod: "fraud-v2-0".into(), kind: TroubleKind::Crashed, detail: "exit 1".into() })
}

fn pre_rollout(s: &mut ModelRolloutSpec) {
    s.webhooks = vec![hook("gate", WebhookKind::PreRollout)];
}

fn promote_requested(s: &mut ModelRolloutSpec) {
    s.operations.promote = Some(PromoteRequest { id: "p1".into(), reason: None, full: false });
}

fn failing(st: &mut ModelRolloutStatus) -> Vec<GateObservation> {
    st.consecutive_failures = 1;
    with_gate(healthy(), GATE_ERROR_RATE, v(0.5, 1000), v(0.0005, 5000))
}

/// An experiment stage (`match`, a reward) whose maxDuration ran out at t0 + 1000 s.
fn experiment_overdue(s: &mut ModelRolloutSpec, st: &mut ModelRolloutStatus) -> Timestamp {
    s.stages[1].match_ = Some(TrafficMatch {
        header: Some(HeaderValue { name: "x-arm".into(), value: "b".into() }),
        cookie: None,
        key_share: None,
    });
    s.stages[1].max_duration = Some(d("100s"));
    s.analysis.reward = Some(Reward {
        name: "ctr".into(),
        query: "q".into(),
        samples_query: "n".into(),
        direction: RewardDirection::Higher,
        min_effect: None,
        confidence: None,
    });
    st.stage_index = Some(1);
    st.stage_name = Some(s.stages[1].name.clone());
    st.stage_start_time = Some(MicroTime(t0()));
    at(1000)
}

/// The stage has an alert-free window and this reconcile's look found an alert firing.
fn alert_fired(s: &mut ModelRolloutSpec, o: &mut Observations) {
    s.stages[0].alert_free = Some(AlertFree { match_labels: Default::default(), for_: d("1h") });
    o.alerts = Some(AlertObservation::Fired(vec!["FraudLatencyHigh".into()]));
}

fn held_inconclusive(st: &mut ModelRolloutStatus) {
    st.phase = Some(Phase::Paused);
    st.hold = Some(Hold::Inconclusive);
    st.reason = Some(reasons::INCONCLUSIVE_ANALYSIS.into());
}

/// The situation for the steps at `i` and `i + 1`, and the reason the right order gives it.
fn situation(i: usize) -> (ModelRolloutSpec, ModelRolloutStatus, Observations, Timestamp, &'static str) {
    let (mut s, mut st) = started();
    let mut o = obs(true);
    let mut now = at(1);
    let reason = match STEPS[i].0 {
        "abort" => {
            s = with_abort(s, "a1");
            o = Observations { candidate_trouble: trouble(), ..obs(false) };
            reasons::ABORTED
        }
        "trouble" => {
            o = Observations { candidate_trouble: trouble(), ..obs(false) };
            reasons::CANDIDATE_FAILED
        }
        "ready" => {
            s.acceptance = Some(acceptance());
            o = obs(false);
            reasons::WAITING_FOR_CANDIDATE
        }
        "acceptance" => {
            s.acceptance = Some(acceptance());
            pre_rollout(&mut s);
            reasons::ACCEPTANCE_RUNNING
        }
        "preRollout" => {
            pre_rollout(&mut s);
            o.webhooks = vec![answered("gate", WebhookKind::PreRollout, 200)];
            reasons::PRE_ROLLOUT_WEBHOOK_PASSED
        }
        "first traffic" => {
            pre_rollout(&mut s);
            promote_requested(&mut s);
            o.webhooks = vec![answered("gate", WebhookKind::PreRollout, 200)];
            reasons::PRE_ROLLOUT_WEBHOOK_PASSED
        }
        "promote" => {
            promote_requested(&mut s);
            o.webhooks = vec![answered("undo", WebhookKind::Rollback, 200)];
            reasons::MANUALLY_PROMOTED
        }
        "rollback webhook" => {
            o.webhooks = vec![answered("undo", WebhookKind::Rollback, 200)];
            o.analysis = Some(failing(&mut st));
            reasons::ROLLBACK_WEBHOOK
        }
        "analysis" => {
            s.paused = true;
            o.analysis = Some(failing(&mut st));
            alert_fired(&mut s, &mut o);
            reasons::GATES_FAILED
        }
        "alert-free clock" => {
            s.paused = true;
            alert_fired(&mut s, &mut o);
            reasons::PAUSED_BY_SPEC
        }
        "paused" => {
            s.paused = true;
            now = experiment_overdue(&mut s, &mut st);
            reasons::PAUSED_BY_SPEC
        }
        "experiment" => {
            now = experiment_overdue(&mut s, &mut st);
            held_inconclusive(&mut st);
            reasons::NO_WINNER
        }
        "inconclusive hold" => {
            held_inconclusive(&mut st);
            st.last_analysis = Some(AnalysisRun {
                time: MicroTime(at(20)),
                stage_index: 0,
                verdict: Verdict::Pass,
                gates: vec![],
                gate_set: Default::default(),
            });
            now = at(30);
            reasons::INCONCLUSIVE_ANALYSIS
        }
        other => panic!("no situation for the step {other}"),
    };
    (s, st, o, now, reason)
}

#[test]
fn swapping_any_two_neighbouring_steps_decides_a_situation_differently() {
    for i in 0..STEPS.len() - 1 {
        let (s, st, o, now, reason) = situation(i);
        let right = decide_with(&STEPS, &s, &st, &o, now);
        assert_eq!(
            right.status.reason.as_deref(),
            Some(reason),
            "{} before {}: {:?}",
            STEPS[i].0,
            STEPS[i + 1].0,
            right.status.message
        );
        let mut swapped = STEPS;
        swapped.swap(i, i + 1);
        let wrong = decide_with(&swapped, &s, &st, &o, now);
        assert_ne!(
            (&wrong.status, &wrong.actions),
            (&right.status, &right.actions),
            "{} and {} swapped decide the same",
            STEPS[i].0,
            STEPS[i + 1].0
        );
    }
}
