//! One analysis: every gate judged, the streaks counted, and what the verdict does to the rollout.

use super::steps::Flow;
use super::*;

/// The analysis step: an analysis taken this reconcile is judged and recorded; one that ends the
/// rollout (failures or inconclusive analyses past their limits) ends the step.
pub(super) fn analysis(ctx: &mut Ctx<'_>, obs: &Observations) -> Flow {
    match &obs.analysis {
        Some(measurements) if ctx.analyse(measurements) => Flow::Stop,
        _ => Flow::Continue,
    }
}

/// A relative gate whose stable side has too few samples (stable answers no traffic: at 100%, or
/// after the promotion) is judged against `carried`, stable's value from an earlier analysis.
/// Returns whether it was.
pub(super) fn carry_baseline(d: &GateDef, obs: Option<&mut GateObservation>, carried: Option<f64>) -> bool {
    let fresh = |m: &Measurement| matches!(m, Measurement::Value { samples, .. } if *samples >= d.min_samples);
    match (obs, carried) {
        (Some(o), Some(baseline)) if d.is_relative() && !fresh(&o.stable) => {
            o.stable = Measurement::Value { value: baseline, samples: d.min_samples };
            true
        }
        _ => false,
    }
}

impl Ctx<'_> {
    /// Records an analysis. Returns true when it ended the rollout.
    pub(super) fn analyse(&mut self, measurements: &[GateObservation]) -> bool {
        let spec = self.spec;
        // At 100% the stable version answers no live traffic, so a relative gate has no fresh
        // baseline: it keeps the one measured last (carried forward analysis to analysis).
        let idx = self.st.stage_index.unwrap_or(0) as usize;
        let (defs, gate_set) = stage_gate_defs(spec, idx);
        let full = spec.stages.get(idx).is_some_and(|s| s.weight >= 100);
        let previous = self.st.last_analysis.clone();
        let evidence = |name: &str| {
            previous
                .as_ref()
                .and_then(|run| run.gates.iter().find(|g| g.name == name))
                .and_then(|g| g.sequential.clone())
        };
        // Sequential gates still gathering evidence (this window added candidate trials and it
        // settles nothing yet) are not a data gap: they do not count towards `inconclusiveLimit`.
        let mut gathering = Vec::new();
        let gates: Vec<GateResult> = defs
            .iter()
            .map(|d| {
                if d.judge == Judge::Sequential {
                    let before = evidence(&d.name);
                    let obs = measurements.iter().find(|m| m.gate == d.name);
                    let r = sequential::judge_sequential(d, d.confidence, before.as_ref(), obs);
                    let trials = |e: Option<&SequentialEvidence>| e.map_or(0, |e| e.candidate.trials);
                    if r.verdict == Verdict::Inconclusive && trials(r.sequential.as_ref()) > trials(before.as_ref()) {
                        gathering.push(d.name.clone());
                    }
                    return r;
                }
                let mut obs = measurements.iter().find(|m| m.gate == d.name).cloned();
                let carried = previous
                    .as_ref()
                    .and_then(|run| run.gates.iter().find(|g| g.name == d.name))
                    .and_then(|g| g.stable_value);
                let carried_now = full && carry_baseline(d, obs.as_mut(), carried);
                let mut r = judge(d, obs.as_ref());
                if carried_now {
                    r.message.push_str(" (stable baseline carried from the last analysis: no stable traffic at 100%)");
                }
                r
            })
            .collect();
        let verdict = if gates.is_empty() && spec.analysis.promote_without_gates {
            Verdict::Pass
        } else {
            overall_verdict(&gates)
        };
        match verdict {
            Verdict::Pass => {
                self.st.consecutive_failures = 0;
                self.st.consecutive_inconclusive = 0;
            }
            Verdict::Fail => {
                self.st.consecutive_failures += 1;
                self.st.consecutive_inconclusive = 0;
            }
            Verdict::Inconclusive
                if !gathering.is_empty()
                    && gates.iter().all(|g| g.verdict != Verdict::Inconclusive || gathering.contains(&g.name)) => {}
            // A data gap does not clear a failure streak.
            Verdict::Inconclusive | Verdict::Error => self.st.consecutive_inconclusive += 1,
        }
        let summary = |wanted: &[Verdict]| {
            gates
                .iter()
                .filter(|g| wanted.contains(&g.verdict))
                .map(|g| format!("{}: {}", g.name, g.message))
                .collect::<Vec<_>>()
                .join("; ")
        };
        self.judge_experiment_reward(measurements);
        self.st.last_analysis = Some(AnalysisRun {
            time: MicroTime(self.now),
            stage_index: self.st.stage_index.unwrap_or(0),
            verdict,
            gate_set,
            gates: gates.clone(),
        });

        let paused = spec.paused;
        if self.st.consecutive_failures >= spec.analysis.failure_limit {
            let msg =
                format!("{} consecutive failing analyses: {}", self.st.consecutive_failures, summary(&[Verdict::Fail]));
            return self.fail_judged(
                reasons::GATES_FAILED,
                msg,
                self.st.consecutive_failures == spec.analysis.failure_limit,
            );
        }
        if self.st.consecutive_inconclusive >= spec.analysis.inconclusive_limit {
            let msg = format!(
                "{} consecutive inconclusive analyses: {}",
                self.st.consecutive_inconclusive,
                summary(&[Verdict::Inconclusive, Verdict::Error])
            );
            match spec.rollback.on_inconclusive {
                InconclusivePolicy::Rollback => {
                    let first = self.st.consecutive_inconclusive == spec.analysis.inconclusive_limit;
                    return self.fail_judged(reasons::INCONCLUSIVE_ANALYSIS, msg, first);
                }
                // While paused by spec the spec's hold stands (the streak is kept); the
                // inconclusive hold is taken when it resumes, if data is still missing.
                InconclusivePolicy::Pause if paused => self.paused_message(&msg),
                InconclusivePolicy::Pause => {
                    if self.st.hold != Some(Hold::Inconclusive) {
                        self.pause(Hold::Inconclusive, reasons::INCONCLUSIVE_ANALYSIS, msg);
                    }
                }
            }
        } else if verdict == Verdict::Pass && self.st.hold == Some(Hold::Inconclusive) {
            self.set_phase(Phase::Progressing, reasons::RESUMED, "analysis conclusive again; resumed".into());
        } else if self.st.hold.is_none() || paused {
            let msg = match (verdict, gates.is_empty()) {
                (Verdict::Pass, true) => "no gates: passed on time alone (analysis.promoteWithoutGates)".to_string(),
                (_, true) => "no gates: no evidence to promote on (set a gate, or analysis.promoteWithoutGates)".into(),
                _ => format!("analysis {}", verdict.as_str()),
            };
            let msg = match verdict {
                _ if gates.is_empty() => msg,
                Verdict::Pass => msg,
                Verdict::Fail => format!("{msg}: {}", summary(&[Verdict::Fail])),
                _ => format!("{msg}: {}", summary(&[Verdict::Inconclusive, Verdict::Error])),
            };
            if paused {
                self.paused_message(&msg);
            } else {
                self.st.reason = Some(reasons::ANALYSING.into());
                self.st.message = Some(msg);
            }
        }
        false
    }

    /// Analysis (or a rollback webhook) says roll back: it does, unless `spec.paused` holds the
    /// stage and the spec says a paused rollout holds (`rollback.onFailureWhilePaused: Hold`);
    /// then status says so, and a Warning Event does once (`first`). Returns true when it ended
    /// the rollout.
    pub(super) fn fail_judged(&mut self, reason: &'static str, msg: String, first: bool) -> bool {
        if self.spec.paused && self.spec.rollback.on_failure_while_paused == PausedFailurePolicy::Hold {
            let msg = format!("{msg}; held by rollback.onFailureWhilePaused: Hold (resume to roll back)");
            self.paused_message(&msg);
            if first {
                self.event(EventType::Warning, reason, format!("would roll back: {msg}"));
            }
            return false;
        }
        self.roll_back(Phase::RolledBack, reason, Outcome::RolledBack, msg);
        true
    }

    /// The message of a rollout paused by spec, with what its latest analysis found. (The hold
    /// itself is the paused step's, after this one.)
    fn paused_message(&mut self, what: &str) {
        if self.st.hold == Some(Hold::Spec) {
            self.st.message = Some(format!("paused by spec.paused; {what}"));
        }
    }
}
