//! An experiment stage (a stage with `match`): its reward judged candidate against stable by the
//! sequential judge's interval on their difference, and what its result does to the rollout. The
//! gates stay what they are in any stage, and here they are the experiment's guardrails: one that
//! fails stops it and sends every request to stable.

use super::sequential::{
    DEFAULT_EFFECT_SCALE, add, difference, information_factor, mixing_for, proportion, window_counts,
};
use super::steps::Flow;
use super::*;

/// The name the reward's measurement carries among the gates' (a gate name cannot hold `:`).
pub fn reward_measurement(reward: &Reward) -> String {
    format!("reward:{}", reward.name)
}

/// The reward as a query to run beside the gates, when the spec has one.
pub fn reward_def(spec: &ModelRolloutSpec) -> Option<GateDef> {
    let r = spec.analysis.reward.as_ref()?;
    let kind = GateKind::Custom { query: r.query.clone(), samples_query: Some(r.samples_query.clone()) };
    Some(GateDef {
        judge: Judge::Sequential,
        confidence: r.confidence.unwrap_or(DEFAULT_CONFIDENCE),
        ..GateDef::new(&reward_measurement(r), kind)
    })
}

/// Judges the reward on the experiment's evidence so far plus this window: a winner once the
/// difference's interval lies wholly beyond `minEffect` in the better direction (the candidate) or
/// wholly short of it (stable). A winner once named stays named.
pub fn judge_reward(reward: &Reward, before: Option<&RewardResult>, obs: Option<&GateObservation>) -> RewardResult {
    let confidence = reward.confidence.unwrap_or(DEFAULT_CONFIDENCE);
    let alpha = 1.0 - confidence;
    let min_effect = reward.min_effect.unwrap_or(0.0);
    let mixing = mixing_for(if min_effect > 0.0 { min_effect } else { DEFAULT_EFFECT_SCALE });
    if let Some(b) = before
        && b.winner.is_some()
    {
        return b.clone();
    }
    let (mut candidate, mut stable) =
        before.map_or((Counts::default(), Counts::default()), |b| (b.evidence.candidate, b.evidence.stable));
    let mut note = None;
    match obs {
        Some(o) => match (&o.candidate, &o.stable) {
            (Measurement::Value { .. }, Measurement::Value { .. }) => {
                candidate = add(candidate, window_counts(&o.candidate));
                stable = add(stable, window_counts(&o.stable));
            }
            (c, s) => {
                note = Some(format!("this window adds nothing: candidate {}, stable {}", c.describe(), s.describe()))
            }
        },
        None => note = Some("not measured this window".into()),
    }
    let higher = reward.direction == RewardDirection::Higher;
    let cand_look = proportion(candidate, alpha, mixing);
    let diff = difference(candidate, stable, alpha, mixing);
    let mut result = RewardResult {
        name: reward.name.clone(),
        direction: reward.direction,
        effect: diff.map_or(0.0, |d| d.estimate),
        evidence: SequentialEvidence {
            confidence,
            candidate,
            stable,
            candidate_interval: cand_look.map_or(Interval { low: 0.0, high: 1.0 }, |l| l.interval()),
            difference_interval: diff.map(|d| d.interval()),
            more_samples: None,
        },
        winner: None,
        message: String::new(),
    };
    let counts =
        format!("candidate {}/{}, stable {}/{}", candidate.events, candidate.trials, stable.events, stable.trials);
    let Some(d) = diff else {
        result.message = format!("no samples for both arms yet ({counts})");
        return result;
    };
    // The difference as "how much better the candidate is".
    let (better_low, better_high, better) =
        if higher { (d.low, d.high, d.estimate) } else { (-d.high, -d.low, -d.estimate) };
    let shown = format!(
        "{} {:+} [{}, {}] at {}% ({counts})",
        reward.name,
        num(d.estimate),
        num(d.low),
        num(d.high),
        num(confidence * 100.0)
    );
    if better_low > min_effect {
        result.winner = Some(Arm::Candidate);
        result.message = format!("the candidate won: {shown}");
    } else if better_high < min_effect {
        result.winner = Some(Arm::Stable);
        result.message = format!("stable won: {shown}");
    } else {
        let gap = (better - min_effect).abs();
        result.evidence.more_samples =
            information_factor(&d, gap).map(|k| ((k - 1.0) * candidate.trials as f64).ceil() as u64).filter(|m| *m > 0);
        result.message = format!("no winner yet: {shown}");
        if let Some(n) = note {
            result.message = format!("{}; {n}", result.message);
        }
    }
    result
}

/// The experiment step, in an experiment stage with a reward: stable's win or the stage's
/// maxDuration without a winner rolls back; with no winner yet the stage goes on and cannot
/// advance. A candidate's win lets the stage advance like any other (see [`Ctx::experiment_won`]).
pub(super) fn experiment(ctx: &mut Ctx<'_>, _: &Observations) -> Flow {
    let Some(stage) = ctx.experiment_stage().cloned() else { return Flow::Continue };
    if ctx.spec.analysis.reward.is_none() {
        return Flow::Continue;
    }
    let result = ctx.experiment_result();
    match result.as_ref().and_then(|r| r.winner) {
        Some(Arm::Candidate) => return Flow::Continue,
        Some(Arm::Stable) => {
            let msg = format!("experiment {}: {}", stage.name, result.map(|r| r.message).unwrap_or_default());
            ctx.roll_back(Phase::RolledBack, reasons::EXPERIMENT_LOST, Outcome::RolledBack, msg);
            return Flow::Stop;
        }
        None => {}
    }
    if let Some(max) = &stage.max_duration
        && elapsed(ctx.stage_start(), ctx.now) >= signed(max)
    {
        let so_far = result.map_or_else(|| "no reward measured".to_string(), |r| r.message);
        let msg = format!("experiment {} ran its maxDuration {max} without a winner: {so_far}", stage.name);
        ctx.roll_back(Phase::RolledBack, reasons::NO_WINNER, Outcome::RolledBack, msg);
    }
    Flow::Stop
}

impl Ctx<'_> {
    /// The current stage, when it is an experiment stage.
    pub(super) fn experiment_stage(&self) -> Option<&Stage> {
        let idx = self.st.stage_index? as usize;
        self.spec.stages.get(idx).filter(|s| s.match_.is_some())
    }

    /// The names of the gates a stage checks.
    fn stage_gate_names(&self, stage: &Stage) -> Vec<String> {
        let idx = self.spec.stages.iter().position(|s| s.name == stage.name).unwrap_or(0);
        stage_gate_defs(self.spec, idx).0.into_iter().map(|d| d.name).collect()
    }

    /// Entering an experiment stage: its arms and rule in status, no reward evidence yet.
    pub(super) fn start_experiment(&mut self, stage: &Stage) {
        let Some(m) = &stage.match_ else { return };
        self.st.experiment = Some(ExperimentStatus {
            stage: stage.name.clone(),
            rule: m.describe(),
            key_share_percent: m.key_share_percent(),
            guardrails: self.stage_gate_names(stage),
            reward: None,
        });
    }

    /// Adds this analysis's window to the reward's evidence (in an experiment stage with a reward).
    pub(super) fn judge_experiment_reward(&mut self, measurements: &[GateObservation]) {
        let Some(reward) = self.spec.analysis.reward.as_ref() else { return };
        if self.experiment_stage().is_none() {
            return;
        }
        let name = reward_measurement(reward);
        let obs = measurements.iter().find(|m| m.gate == name);
        if let Some(exp) = self.st.experiment.as_mut() {
            exp.reward = Some(judge_reward(reward, exp.reward.as_ref(), obs));
        }
    }

    /// The reward's result when this is an experiment stage with a reward and the candidate won.
    pub(super) fn experiment_won(&self) -> Option<RewardResult> {
        self.experiment_stage()?;
        self.spec.analysis.reward.as_ref()?;
        self.experiment_result().filter(|r| r.winner == Some(Arm::Candidate))
    }

    /// The experiment's reward result, for a history entry of this rollout.
    pub(super) fn experiment_result(&self) -> Option<RewardResult> {
        self.st.experiment.as_ref().and_then(|e| e.reward.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reward(direction: RewardDirection, min_effect: Option<f64>) -> Reward {
        Reward {
            name: "ctr".into(),
            query: "q".into(),
            samples_query: "s".into(),
            direction,
            min_effect,
            confidence: Some(0.95),
        }
    }

    fn window(c: (f64, u64), s: (f64, u64)) -> GateObservation {
        GateObservation {
            gate: "reward:ctr".into(),
            candidate: Measurement::Value { value: c.0, samples: c.1 },
            stable: Measurement::Value { value: s.0, samples: s.1 },
        }
    }

    /// Windows of `n` trials per arm at these rates until a winner (or `max` windows).
    fn run(r: &Reward, c: f64, s: f64, n: u64, max: usize) -> RewardResult {
        let mut res: Option<RewardResult> = None;
        for _ in 0..max {
            let next = judge_reward(r, res.as_ref(), Some(&window((c, n), (s, n))));
            let done = next.winner.is_some();
            res = Some(next);
            if done {
                break;
            }
        }
        res.unwrap()
    }

    #[test]
    fn the_better_arm_wins_either_direction_and_equal_arms_name_no_winner() {
        // (direction, minEffect, candidate rate, stable rate, winner)
        let cases = [
            (RewardDirection::Higher, None, 0.30, 0.20, Some(Arm::Candidate)),
            (RewardDirection::Higher, None, 0.20, 0.30, Some(Arm::Stable)),
            (RewardDirection::Lower, None, 0.20, 0.30, Some(Arm::Candidate)),
            (RewardDirection::Lower, None, 0.30, 0.20, Some(Arm::Stable)),
            (RewardDirection::Higher, None, 0.25, 0.25, None),
            // Better, but shown to be by less than the effect worth switching for: stable.
            (RewardDirection::Higher, Some(0.10), 0.22, 0.20, Some(Arm::Stable)),
        ];
        for (dir, min, c, s, want) in cases {
            let r = run(&reward(dir, min), c, s, 400, 60);
            assert_eq!(r.winner, want, "{dir:?} min {min:?} {c} vs {s}: {}", r.message);
            let d = r.evidence.difference_interval.unwrap();
            assert!(d.low <= r.effect && r.effect <= d.high, "{}", r.message);
            if want.is_none() {
                assert!(r.message.starts_with("no winner yet"), "{}", r.message);
            }
        }
    }

    #[test]
    fn a_winner_stays_and_gaps_in_the_data_add_nothing() {
        let r = reward(RewardDirection::Higher, None);
        let won = run(&r, 0.4, 0.2, 500, 20);
        assert_eq!(won.winner, Some(Arm::Candidate));
        // A later window that says the opposite changes nothing: the verdict is the experiment's.
        let after = judge_reward(&r, Some(&won), Some(&window((0.0, 5000), (1.0, 5000))));
        assert_eq!(after, won);
        let first = judge_reward(&r, None, Some(&window((0.3, 100), (0.2, 100))));
        let gap = GateObservation { stable: Measurement::NoData, ..window((0.3, 100), (0.2, 100)) };
        let same = judge_reward(&r, Some(&first), Some(&gap));
        assert_eq!(same.evidence.candidate, first.evidence.candidate);
        assert!(same.message.contains("adds nothing"), "{}", same.message);
        let none = judge_reward(&r, None, None);
        assert_eq!(none.winner, None);
        assert!(none.message.starts_with("no samples"), "{}", none.message);
    }

    #[test]
    fn an_undecided_reward_says_how_many_more_samples_would_settle_it() {
        let r = reward(RewardDirection::Higher, None);
        let early = judge_reward(&r, None, Some(&window((0.30, 200), (0.25, 200))));
        assert_eq!(early.winner, None);
        let more = early.evidence.more_samples.expect("an estimate");
        assert!(more > 200, "{more}");
    }
}
