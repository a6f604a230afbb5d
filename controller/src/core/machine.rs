//! The state machine: a step of a rollout, and the transitions between its phases and stages.

use super::experiment::ExperimentGate;
use super::*;

impl Ctx<'_> {
    pub(super) fn step(&mut self, obs: &Observations) {
        let spec = self.spec;
        self.st.promoting_without_gates =
            spec.analysis.promote_without_gates && gate_defs(&spec.analysis.gates).is_empty();
        if self.st.phase == Some(Phase::Paused) && self.st.hold.is_none() {
            // A status written before holds were typed says what holds it in its reason only.
            self.st.hold = Some(match self.st.reason.as_deref() {
                Some(reasons::AWAITING_APPROVAL) => Hold::Approval,
                Some(reasons::INCONCLUSIVE_ANALYSIS) => Hold::Inconclusive,
                _ => Hold::Spec,
            });
        }
        let Some(stable) = self.st.stable.clone() else {
            // First sight: what the spec names is the stable version; nothing to roll out.
            self.st.stable = Some(spec.model.clone());
            self.st.stable_version = Some(spec.model.version.clone());
            self.set_phase(Phase::Idle, reasons::STABLE, format!("serving {}", spec.model.version));
            return;
        };

        if spec.model.same_build(&stable) {
            if self.phase().is_some_and(Phase::is_active) {
                let msg = format!("spec.model returned to the stable version {}", stable.version);
                self.roll_back(Phase::Idle, reasons::REVERTED, Outcome::RolledBack, msg);
            } else if matches!(self.phase(), Some(Phase::RolledBack | Phase::Failed)) {
                self.clear_candidate();
                self.set_phase(Phase::Idle, reasons::STABLE, format!("serving {}", stable.version));
            }
            self.mark_operations_handled();
            return;
        }

        let is_new_candidate = self.st.candidate_version.as_deref() != Some(spec.model.version.as_str())
            || self.st.candidate_sha256.as_deref() != Some(spec.model.artifact.sha256.as_str());
        if is_new_candidate {
            // Requests already in the spec belong to an older rollout.
            self.mark_operations_handled();
            if self.phase().is_some_and(Phase::is_active)
                && let Some(old) = self.st.candidate_version.clone()
            {
                let msg = format!("superseded by {}", spec.model.version);
                self.push_history(&old, Outcome::Superseded, &msg);
                self.schedule_scale_down(&old, SignedDuration::ZERO);
            }
            self.start_rollout(reasons::ROLLOUT_STARTED, &stable, obs);
            return;
        }

        match self.phase() {
            Some(Phase::RolledBack | Phase::Failed) => {
                if let Some(id) =
                    pending(spec.operations.retry.as_ref().map(|r| r.id.as_str()), &self.st.handled_operations.retry)
                {
                    self.st.handled_operations.retry = Some(id.to_string());
                    self.mark_operations_handled();
                    self.start_rollout(reasons::RETRIED, &stable, obs);
                } else {
                    self.mark_operations_handled();
                }
                return;
            }
            Some(Phase::Progressing | Phase::Paused) => {}
            Some(Phase::Idle | Phase::Promoted) | None => {
                // The candidate matches status but no rollout is active: only possible if status was
                // edited by hand. Start over rather than guess.
                self.start_rollout(reasons::ROLLOUT_STARTED, &stable, obs);
                return;
            }
        }
        self.progress(obs);
    }

    /// One step of an active rollout.
    pub(super) fn progress(&mut self, obs: &Observations) {
        let spec = self.spec;
        let ops = &spec.operations;
        if let Some(id) = pending(ops.abort.as_ref().map(|r| r.id.as_str()), &self.st.handled_operations.abort) {
            self.st.handled_operations.abort = Some(id.to_string());
            let why = ops.abort.as_ref().and_then(|r| r.reason.clone()).unwrap_or_else(|| "no reason given".into());
            self.roll_back(Phase::RolledBack, reasons::ABORTED, Outcome::Aborted, format!("aborted: {why}"));
            return;
        }
        // A retry requested while a rollout runs means nothing; record it so it cannot fire later.
        if let Some(r) = &ops.retry {
            self.st.handled_operations.retry = Some(r.id.clone());
        }
        self.ensure_candidate = true;

        // A pod that cannot start will not turn Ready by waiting, and one that crashed (even if it
        // came back) is not fit for more traffic: fail now and say why. Traffic leaves it first
        // (roll_back); it never got any if it never ran.
        if let Some(trouble) = &obs.candidate_trouble {
            let msg = format!("candidate {}: {trouble}", spec.model.version);
            self.roll_back(Phase::Failed, reasons::CANDIDATE_FAILED, Outcome::Failed, msg);
            return;
        }
        // No traffic moves to a candidate whose pods are not Ready.
        if !obs.candidate_ready {
            let since = self.st.candidate_unready_since.get_or_insert(Time(self.now)).0;
            if elapsed(since, self.now) >= self.timings.progress_deadline {
                let msg = format!(
                    "candidate {} not Ready within the progress deadline {}",
                    spec.model.version, spec.workload.progress_deadline
                );
                self.roll_back(Phase::Failed, reasons::PROGRESS_DEADLINE_EXCEEDED, Outcome::Failed, msg);
                return;
            }
            // With replica ratios the weight is the pods: a stage that adds candidate pods leaves
            // the candidate unready until they come up, and its Service sends nothing to a pod
            // before it is Ready. The stage's weight stays (zeroing it would scale the new pods
            // away again, and back once the rest are Ready: pods churning for ever).
            let ratio = self.spec.traffic_routing.kind() == RouterKind::ReplicaRatio;
            if !(ratio && self.st.canary_weight > 0 && !self.starting) {
                self.st.canary_weight = 0;
                self.st.mirror_percent = 0;
            }
            self.st.match_ = None;
            if !self.is_paused() {
                self.set_phase(
                    Phase::Progressing,
                    reasons::WAITING_FOR_CANDIDATE,
                    format!("waiting for candidate {} pods to be Ready", spec.model.version),
                );
            }
            return;
        }
        // Acceptance checks (spec.acceptance) before any traffic.
        if self.hold_for_acceptance(obs) || self.hold_for_pre_rollout(obs) {
            return;
        }
        if self.st.candidate_unready_since.take().is_some() {
            // The stage's clock starts when its traffic can actually flow.
            self.st.stage_start_time = Some(Time(self.now));
            if !self.is_paused() {
                self.apply_stage_traffic();
                let stage = self.stage_name();
                let msg = format!("candidate {} Ready; stage {stage}: {}", spec.model.version, self.traffic_text());
                self.set_phase(Phase::Progressing, reasons::CANDIDATE_READY, msg);
            }
        }

        if let Some(p) = &ops.promote
            && pending(Some(p.id.as_str()), &self.st.handled_operations.promote).is_some()
        {
            self.st.handled_operations.promote = Some(p.id.clone());
            let why = p.reason.clone().unwrap_or_else(|| "no reason given".into());
            if p.full {
                self.complete(reasons::MANUALLY_PROMOTED, format!("promoted to 100% by request: {why}"));
            } else {
                self.advance(reasons::MANUALLY_PROMOTED, format!("promoted by request: {why}"));
            }
            return;
        }

        if spec.paused {
            self.apply_stage_traffic();
            if self.st.hold != Some(Hold::Spec) {
                self.pause(Hold::Spec, reasons::PAUSED_BY_SPEC, "paused by spec.paused".into());
            }
            return;
        }
        if self.st.hold == Some(Hold::Spec) {
            self.set_phase(Phase::Progressing, reasons::RESUMED, "resumed".into());
            self.event(EventType::Normal, reasons::RESUMED, "resumed: spec.paused is false".into());
        }
        self.apply_stage_traffic();

        if let Some(msg) = self.rollback_requested(obs) {
            self.roll_back(Phase::RolledBack, reasons::ROLLBACK_WEBHOOK, Outcome::RolledBack, msg);
            return;
        }
        if let Some(measurements) = &obs.analysis
            && self.analyse(measurements)
        {
            return;
        }
        let (experiment, ended) = self.experiment_gate();
        if ended {
            return;
        }
        if self.st.hold == Some(Hold::Inconclusive) {
            return;
        }

        // Advance only after the minimum duration AND a passing analysis taken in this stage.
        let idx = self.st.stage_index.unwrap_or(0) as usize;
        let stage_start = self.st.stage_start_time.as_ref().map_or(self.now, |t| t.0);
        let min = self.timings.stage_min.get(idx).copied().unwrap_or(SignedDuration::ZERO);
        let passed_here = self.st.last_analysis.as_ref().is_some_and(|run| {
            run.stage_index as usize == idx && run.time.0 >= stage_start && run.verdict == Verdict::Pass
        });
        let won = self.experiment_result().filter(|_| experiment == ExperimentGate::CandidateWon);
        if experiment == ExperimentGate::Undecided {
            return;
        }
        if elapsed(stage_start, self.now) >= min && passed_here && self.now >= stage_start {
            if spec.stages.get(idx).is_some_and(|s| s.manual_approval) {
                if self.st.hold != Some(Hold::Approval) {
                    let msg = match &won {
                        Some(r) => format!("stage {}: {}; waiting for promote", spec.stages[idx].name, r.message),
                        None => format!("stage {} passed; waiting for promote", spec.stages[idx].name),
                    };
                    self.pause(Hold::Approval, reasons::AWAITING_APPROVAL, msg);
                }
                return;
            }
            let name = spec.stages.get(idx).map_or("?", |s| s.name.as_str());
            if idx + 1 >= spec.stages.len() && !self.promotion_confirmed() {
                if self.st.hold != Some(Hold::Confirmation) {
                    let msg = format!("stage {name} passed; waiting for the confirmPromotion webhooks' 2xx");
                    self.pause(Hold::Confirmation, reasons::AWAITING_CONFIRMATION, msg);
                }
                return;
            }
            let msg = if let Some(r) = &won {
                format!("stage {name}: {} and its guardrails passed", r.message)
            } else if self.st.promoting_without_gates {
                format!("stage {name} passed its minDuration (no gates: analysis.promoteWithoutGates)")
            } else {
                format!("stage {name} passed its gates")
            };
            let reason = if won.is_some() { reasons::EXPERIMENT_WON } else { reasons::STAGE_ADVANCED };
            self.advance(reason, msg);
        }
    }

    pub(super) fn start_rollout(&mut self, reason: &'static str, stable: &ModelSpec, obs: &Observations) {
        let spec = self.spec;
        let candidate = &spec.model;
        self.st.candidate_version = Some(candidate.version.clone());
        self.st.candidate_sha256 = Some(candidate.artifact.sha256.clone());
        self.st.rollout_start_time = Some(Time(self.now));
        self.st.consecutive_failures = 0;
        self.st.consecutive_inconclusive = 0;
        self.st.last_analysis = None;
        self.st.candidate_unready_since = None;
        // A retry checks the candidate again, and asks its webhooks again.
        self.st.acceptance = None;
        self.st.experiment = None;
        self.st.match_ = None;
        self.st.webhooks.retain(|w| w.version != candidate.version);
        self.st.pending_scale_downs.retain(|p| p.version != candidate.version);

        let unmet = candidate.contract.unmet_by(&stable.contract);
        if !unmet.is_empty() {
            // Refused before anything is created or any traffic moves.
            let msg = format!(
                "candidate {} cannot take stable {}'s traffic: {}",
                candidate.version,
                stable.version,
                unmet.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            );
            self.st.stage_index = None;
            self.st.stage_name = None;
            self.st.stage_start_time = None;
            self.st.canary_weight = 0;
            self.st.mirror_percent = 0;
            self.push_history(&candidate.version, Outcome::Failed, &msg);
            self.ended(&candidate.version, Outcome::Failed, &msg);
            self.set_phase(Phase::Failed, reasons::CONTRACT_MISMATCH, msg.clone());
            self.event(EventType::Warning, reasons::CONTRACT_MISMATCH, msg.clone());
            self.notify(NotificationEvent::RolledBack, msg);
            return;
        }
        self.ensure_candidate = true;
        let msg = format!("rolling out {} against stable {}", candidate.version, stable.version);
        self.event(EventType::Normal, reason, msg.clone());
        self.enter_stage(0, reason, msg);
        // The first stage's traffic waits for Ready candidate pods like any other stage's. Deciding
        // that now rather than on the next reconcile never sends traffic the candidate cannot take
        // (nor, with replica ratios, scales stable down for it), and the start is one status write.
        // An analysis taken before the start belongs to no stage of this rollout.
        self.starting = true;
        self.progress(&Observations { analysis: None, ..obs.clone() });
    }

    /// Moves to stage `idx`, skipping shadow-only stages the router cannot mirror to.
    pub(super) fn enter_stage(&mut self, mut idx: usize, reason: &'static str, mut msg: String) {
        let stages = &self.spec.stages;
        let can_mirror = self.spec.traffic_routing.kind() != RouterKind::ReplicaRatio;
        while !can_mirror && idx + 1 < stages.len() && stages[idx].weight == 0 {
            msg = format!("{msg}; stage {} skipped: replicaRatio routing cannot mirror (no shadow)", stages[idx].name);
            idx += 1;
        }
        let stage = &stages[idx];
        self.st.stage_index = Some(idx as u32);
        self.st.stage_name = Some(stage.name.clone());
        self.st.stage_start_time = Some(Time(self.now));
        self.st.consecutive_failures = 0;
        self.st.consecutive_inconclusive = 0;
        self.st.candidate_unready_since = None;
        self.start_experiment(stage);
        self.apply_stage_traffic();
        let full = match &stage.match_ {
            Some(m) => format!("stage {} (experiment: {}): {msg}", stage.name, m.describe()),
            None => format!(
                "stage {} ({}% traffic, {}% mirror): {msg}",
                stage.name, self.st.canary_weight, self.st.mirror_percent
            ),
        };
        self.set_phase(Phase::Progressing, reason, full.clone());
        self.event(EventType::Normal, reasons::STAGE_ADVANCED, full.clone());
        self.notify(NotificationEvent::StageChanged, full);
    }

    /// The checks before traffic (acceptance, preRollout webhooks) are done: the first stage's
    /// traffic flows from now, and its clock starts.
    pub(super) fn begin_first_stage(&mut self, reason: &'static str, what: String) {
        self.st.stage_start_time = Some(Time(self.now));
        self.st.candidate_unready_since = None;
        self.apply_stage_traffic();
        let msg = format!("{what}; stage {}: {}", self.stage_name(), self.traffic_text());
        self.event(EventType::Normal, reason, msg.clone());
        if !self.is_paused() {
            self.set_phase(Phase::Progressing, reason, msg);
        }
    }

    pub(super) fn apply_stage_traffic(&mut self) {
        let idx = self.st.stage_index.unwrap_or(0) as usize;
        let Some(stage) = self.spec.stages.get(idx) else { return };
        let can_mirror = self.spec.traffic_routing.kind() != RouterKind::ReplicaRatio;
        self.st.canary_weight = stage.weight;
        self.st.mirror_percent = if can_mirror { stage.mirror_percent.unwrap_or(0) } else { 0 };
        self.st.match_ = stage.match_.clone();
    }

    /// The traffic in force, for messages: weights, or an experiment's rule.
    fn traffic_text(&self) -> String {
        match &self.st.match_ {
            Some(m) => format!("experiment, candidate for {}", m.describe()),
            None => format!("{}% traffic, {}% mirror", self.st.canary_weight, self.st.mirror_percent),
        }
    }

    pub(super) fn advance(&mut self, reason: &'static str, msg: String) {
        let idx = self.st.stage_index.unwrap_or(0) as usize;
        if idx + 1 >= self.spec.stages.len() {
            self.complete(reason, msg);
        } else {
            self.enter_stage(idx + 1, reason, msg);
        }
    }

    /// The candidate becomes stable; the old stable is kept for a while for a fast rollback.
    pub(super) fn complete(&mut self, reason: &'static str, msg: String) {
        let new = self.spec.model.clone();
        let old = self.st.stable.replace(new.clone());
        self.push_history(&new.version, Outcome::Promoted, &msg);
        self.ended(&new.version, Outcome::Promoted, &msg);
        if let Some(old) = old.filter(|o| o.version != new.version) {
            self.schedule_scale_down(&old.version, self.timings.previous_stable_delay);
        }
        self.st.pending_scale_downs.retain(|p| p.version != new.version);
        self.st.stable_version = Some(new.version.clone());
        self.clear_candidate();
        self.ensure_candidate = false;
        let full = format!("{} promoted to stable: {msg}", new.version);
        let reason = if reason == reasons::MANUALLY_PROMOTED { reason } else { reasons::PROMOTED };
        self.set_phase(Phase::Promoted, reason, full.clone());
        self.event(EventType::Normal, reasons::PROMOTED, full.clone());
        self.notify(NotificationEvent::Promoted, full);
    }

    /// Weight 0 and mirror off now; candidate scaled down after the delay; stable untouched.
    pub(super) fn roll_back(&mut self, phase: Phase, reason: &'static str, outcome: Outcome, msg: String) {
        let version = self.st.candidate_version.clone().unwrap_or_else(|| self.spec.model.version.clone());
        self.st.canary_weight = 0;
        self.st.mirror_percent = 0;
        self.st.match_ = None;
        self.ensure_candidate = false;
        self.schedule_scale_down(&version, self.timings.scale_down_delay);
        self.push_history(&version, outcome, &msg);
        self.ended(&version, outcome, &msg);
        if phase == Phase::Idle {
            self.clear_candidate();
        }
        let full = format!("{version} rolled back: {msg}");
        self.set_phase(phase, reason, full.clone());
        self.event(EventType::Warning, reason, full.clone());
        self.notify(NotificationEvent::RolledBack, full);
    }

    pub(super) fn clear_candidate(&mut self) {
        self.st.candidate_version = None;
        self.st.candidate_sha256 = None;
        self.st.stage_index = None;
        self.st.stage_name = None;
        self.st.stage_start_time = None;
        self.st.candidate_unready_since = None;
        self.st.canary_weight = 0;
        self.st.mirror_percent = 0;
        self.st.match_ = None;
    }

    pub(super) fn mark_operations_handled(&mut self) {
        let ops = &self.spec.operations;
        let handled = &mut self.st.handled_operations;
        if let Some(r) = &ops.abort {
            handled.abort = Some(r.id.clone());
        }
        if let Some(r) = &ops.promote {
            handled.promote = Some(r.id.clone());
        }
        if let Some(r) = &ops.retry {
            handled.retry = Some(r.id.clone());
        }
    }

    pub(super) fn schedule_scale_down(&mut self, version: &str, delay: SignedDuration) {
        let at = self.now.checked_add(delay).unwrap_or(self.now);
        self.st.pending_scale_downs.retain(|p| p.version != version);
        self.st.pending_scale_downs.push(PendingScaleDown { version: version.to_string(), at: Time(at) });
    }

    pub(super) fn push_history(&mut self, version: &str, outcome: Outcome, reason: &str) {
        self.st.history.insert(
            0,
            HistoryEntry {
                version: version.to_string(),
                outcome,
                reason: reason.to_string(),
                time: Time(self.now),
                experiment: self.experiment_result(),
            },
        );
        self.st.history.truncate(HISTORY_LIMIT);
    }

    pub(super) fn phase(&self) -> Option<Phase> {
        self.st.phase
    }

    pub(super) fn is_paused(&self) -> bool {
        self.st.phase == Some(Phase::Paused)
    }

    pub(super) fn set_phase(&mut self, phase: Phase, reason: &'static str, message: String) {
        if phase != Phase::Paused {
            self.st.hold = None;
        }
        self.st.phase = Some(phase);
        self.st.reason = Some(reason.to_string());
        self.st.message = Some(message);
    }

    /// An Event about the transition just made: its action names the candidate and the stage, so
    /// that each stage of each rollout is an Event of its own (see [`Action::Event`]).
    pub(super) fn event(&mut self, kind: EventType, reason: &'static str, message: String) {
        let version = self.st.candidate_version.clone().unwrap_or_else(|| self.spec.model.version.clone());
        let action = match &self.st.stage_name {
            Some(stage) => format!("{version} {stage}"),
            None => version,
        };
        self.events.push(Action::Event { kind, reason, action, message });
    }

    pub(super) fn stage_name(&self) -> String {
        let idx = self.st.stage_index.unwrap_or(0) as usize;
        self.spec.stages.get(idx).map_or_else(|| "?".into(), |s| s.name.clone())
    }

    pub(super) fn notify(&mut self, event: NotificationEvent, message: String) {
        self.events.push(Action::Notify { event, message });
    }

    pub(super) fn pause(&mut self, hold: Hold, reason: &'static str, message: String) {
        self.set_phase(Phase::Paused, reason, message.clone());
        self.st.hold = Some(hold);
        self.event(EventType::Normal, reason, message.clone());
        self.notify(NotificationEvent::Paused, message);
    }
}
