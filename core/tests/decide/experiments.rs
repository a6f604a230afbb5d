//! The decision core: experiments (a stage with `match`): routing by match, the reward's winner, guardrails.

use super::*;

/// An A/B experiment of v2 against v1: half the user keys for at most 10 minutes, then full;
/// click-through as the reward.
fn experiment_spec(version: &str, sha: &str) -> ModelRolloutSpec {
    let mut s = spec(version, sha);
    let mut ab = default_stages().remove(1);
    ab.name = "ab".into();
    ab.weight = 0;
    ab.min_duration = d("10s");
    ab.max_duration = Some(d("10m"));
    ab.match_ = Some(TrafficMatch {
        header: None,
        cookie: None,
        key_share: Some(KeyShare { header: "x-user-id".into(), percent: 50 }),
    });
    let mut full = default_stages().remove(3);
    full.min_duration = d("10s");
    s.stages = vec![ab, full];
    s.analysis.reward = Some(Reward {
        name: "ctr".into(),
        query: "ctr($version)".into(),
        samples_query: "impressions($version)".into(),
        direction: RewardDirection::Higher,
        min_effect: None,
        confidence: Some(0.95),
    });
    s
}

fn experiment_started(s: &ModelRolloutSpec) -> ModelRolloutStatus {
    let first = decide(&experiment_spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-100));
    decide(s, &first.status, &obs(true), t0()).status
}

/// Healthy guardrails and a window of `n` impressions per arm at these click-through rates.
fn with_reward(candidate: f64, stable: f64, n: u64) -> Vec<GateObservation> {
    let mut g = healthy();
    g.push(GateObservation { gate: "reward:ctr".into(), candidate: v(candidate, n), stable: v(stable, n) });
    g
}

fn matched(d: &Decision) -> Option<TrafficMatch> {
    d.actions.iter().find_map(|a| match a {
        Action::SetTraffic { matched, .. } => Some(matched.clone()),
        _ => None,
    })?
}

/// Analyses every 5 s from `from` with these rates until the phase or stage changes.
fn run_until_change(
    s: &ModelRolloutSpec,
    mut st: ModelRolloutStatus,
    from: i64,
    c: f64,
    stable: f64,
) -> (Decision, i64) {
    let (phase, stage) = (st.phase, st.stage_name.clone());
    let mut now = from;
    loop {
        now += 5;
        let d = step(s, &st, analysed(with_reward(c, stable, 300)), at(now));
        if d.status.phase != phase || d.status.stage_name != stage || now > from + 3_600 {
            return (d, now);
        }
        st = d.status;
    }
}

#[test]
fn an_experiment_stage_routes_by_its_match_not_a_weight() {
    let s = experiment_spec("v2", SHA_V2);
    let st = experiment_started(&s);
    assert_eq!(st.stage_name.as_deref(), Some("ab"));
    let d = step(&s, &st, obs(true), at(1));
    assert_eq!(traffic(&d), ("v1".into(), Some("v2".into()), 0, 0));
    assert_eq!(matched(&d), s.stages[0].match_.clone());
    let exp = d.status.experiment.as_ref().expect("the experiment in status");
    assert_eq!(exp.key_share_percent, Some(50.0));
    assert!(exp.rule.contains("x-user-id") && exp.rule.contains("128/256"), "{}", exp.rule);
    assert_eq!(exp.guardrails, ["errorRate", "latencyP95", "falsePositiveRate", "captureRate"]);
    // Passing guardrails alone do not end an experiment: it waits for its winner.
    let mut st = d.status;
    for now in [15, 20, 25] {
        st = step(&s, &st, analysed(with_reward(0.25, 0.25, 300)), at(now)).status;
    }
    assert_eq!(st.stage_name.as_deref(), Some("ab"));
    let r = st.experiment.as_ref().unwrap().reward.as_ref().unwrap();
    assert_eq!((r.winner, r.evidence.candidate.trials), (None, 900));
    // A candidate not Ready takes no matched requests.
    let d = step(&s, &st, obs(false), at(26));
    assert_eq!(matched(&d), None);
}

#[test]
fn the_winning_candidate_advances_with_its_result_in_status_and_history() {
    let s = experiment_spec("v2", SHA_V2);
    let st = experiment_started(&s);
    let (d, now) = run_until_change(&s, st, 0, 0.30, 0.20);
    assert_eq!(d.status.stage_name.as_deref(), Some("full"), "{:?}", d.status.message);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::EXPERIMENT_WON));
    assert_eq!(traffic(&d).2, 100);
    assert_eq!(matched(&d), None, "the match ends with its stage");
    let r = d.status.experiment.as_ref().unwrap().reward.clone().unwrap();
    assert_eq!(r.winner, Some(Arm::Candidate));
    let i = r.evidence.difference_interval.unwrap();
    assert!(i.low > 0.0 && i.low <= r.effect && r.effect <= i.high, "{r:?}");
    let (st, _) = pass_stages(&s, d.status, 1, now);
    assert_eq!(st.phase, Some(Phase::Promoted), "{:?}", st.message);
    assert_eq!(st.history[0].experiment.as_ref().and_then(|e| e.winner), Some(Arm::Candidate));
}

#[test]
fn stable_winning_rolls_the_candidate_back_with_the_result() {
    let s = experiment_spec("v2", SHA_V2);
    let (d, _) = run_until_change(&s, experiment_started(&s), 0, 0.18, 0.26);
    assert_eq!(d.status.phase, Some(Phase::RolledBack));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::EXPERIMENT_LOST));
    assert_eq!((traffic(&d).2, matched(&d)), (0, None));
    let h = &d.status.history[0];
    assert_eq!((h.outcome, h.experiment.as_ref().and_then(|e| e.winner)), (Outcome::RolledBack, Some(Arm::Stable)));
    assert!(h.reason.contains("stable won: ctr"), "{}", h.reason);
}

#[test]
fn a_guardrail_breach_sends_every_request_to_stable_in_that_analysis() {
    let mut s = experiment_spec("v2", SHA_V2);
    s.analysis.failure_limit = 1;
    s.analysis.gates.custom.push(CustomGate {
        name: "ctrGuardrail".into(),
        query: "ctr($version)".into(),
        samples_query: None,
        min: None,
        max: None,
        max_above_stable: None,
        max_below_stable: Some(0.02),
        min_samples: 100,
        max_above_stable_ratio: None,
        max_below_stable_ratio: None,
        comparison: Default::default(),
    });
    let st = experiment_started(&s);
    let mut g = with_reward(0.25, 0.25, 300);
    g.push(GateObservation { gate: "ctrGuardrail".into(), candidate: v(0.10, 300), stable: v(0.25, 300) });
    let d = step(&s, &st, analysed(g), at(5));
    assert_eq!(d.status.phase, Some(Phase::RolledBack), "{:?}", d.status.message);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::GATES_FAILED));
    assert_eq!((traffic(&d).2, matched(&d)), (0, None));
    assert!(d.status.message.as_deref().unwrap().contains("ctrGuardrail"), "{:?}", d.status.message);
}

#[test]
fn no_winner_by_max_duration_keeps_stable() {
    let s = experiment_spec("v2", SHA_V2);
    let (d, now) = run_until_change(&s, experiment_started(&s), 0, 0.25, 0.25);
    assert_eq!(d.status.phase, Some(Phase::RolledBack));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::NO_WINNER));
    assert!((600..=605).contains(&now), "ended at {now} s, maxDuration 600 s");
    // The controller wakes for the deadline even with no analysis due.
    let st = experiment_started(&s);
    let d = step(&s, &st, obs(true), at(1));
    assert!(d.requeue_after.is_some());
}

#[test]
fn a_manual_experiment_holds_its_winner_until_promoted() {
    let mut s = experiment_spec("v2", SHA_V2);
    s.stages[0].manual_approval = true;
    let (d, now) = run_until_change(&s, experiment_started(&s), 0, 0.30, 0.20);
    assert_eq!((d.status.phase, d.status.hold), (Some(Phase::Paused), Some(Hold::Approval)));
    assert!(d.status.message.as_deref().unwrap().contains("the candidate won"), "{:?}", d.status.message);
    assert!(matched(&d).is_some(), "the experiment's routing holds while it waits");
    s.operations.promote = Some(PromoteRequest { id: "p1".into(), reason: None, full: false });
    let d = step(&s, &d.status, obs(true), at(now + 1));
    assert_eq!((d.status.stage_name.as_deref(), traffic(&d).2), (Some("full"), 100));
}
