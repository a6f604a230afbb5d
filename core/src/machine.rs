//! The state machine: which kind of decision a rollout is due (first sight, back to stable, a new
//! candidate, a retry, or the next step of an active rollout), and the transitions between phases
//! and stages that the steps make.

use super::*;

impl Ctx<'_> {
    pub(super) fn step(&mut self, obs: &Observations) {
        let spec = self.spec;
        let idx = self.st.stage_index.unwrap_or(0) as usize;
        self.st.promoting_without_gates =
            spec.analysis.promote_without_gates && stage_gate_defs(spec, idx).0.is_empty();
        if self.st.phase == Some(Phase::Paused) && self.st.hold.is_none() {
            // A status written before holds were typed says what holds it in its reason only.
            self.st.hold = Some(match self.st.reason.as_deref() {
                Some(reasons::AWAITING_APPROVAL) => Hold::Approval,
                Some(reasons::INCONCLUSIVE_ANALYSIS) => Hold::Inconclusive,
                _ => Hold::Spec,
            });
        }
        if self.st.stable.is_none() {
            // First sight: what the spec names is the stable version; nothing to roll out.
            self.st.stable = Some(spec.model.clone());
            self.st.stable_version = Some(spec.model.version.clone());
            self.set_phase(Phase::Idle, reasons::STABLE, format!("serving {}", spec.model.version));
            return;
        }
        // After a promotion: retention ends and removals fall due; the watch judges the promoted
        // version; an undo (asked for, a revert of spec.model, or the watch's) runs before
        // anything else.
        self.timeline();
        if let Some(measurements) = &obs.watch_analysis
            && !self.phase().is_some_and(Phase::is_active)
        {
            self.judge_watch(measurements);
        }
        if self.undo(obs) {
            self.mark_operations_handled();
            return;
        }
        let stable = self.st.stable.clone().expect("stable is set");

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

    pub(super) fn start_rollout(&mut self, reason: &'static str, stable: &ModelSpec, obs: &Observations) {
        let spec = self.spec;
        let candidate = &spec.model;
        // A version rolled out again is neither retained nor retired any more.
        self.st.retained.take_if(|r| r.model.version == candidate.version);
        self.st.retired.retain(|r| r.version != candidate.version);
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
            self.no_traffic();
            self.push_history(&candidate.version, Outcome::Failed, &msg);
            self.ended(&candidate.version, Outcome::Failed, &msg);
            self.set_phase(Phase::Failed, reasons::CONTRACT_MISMATCH, msg.clone());
            self.event(EventType::Warning, reasons::CONTRACT_MISMATCH, msg.clone());
            self.notify(NotificationEvent::RolledBack, msg);
            return;
        }
        self.fx.ensure_candidate = true;
        let msg = format!("rolling out {} against stable {}", candidate.version, stable.version);
        self.event(EventType::Normal, reason, msg.clone());
        self.enter_stage(0, reason, msg);
        // The first stage's traffic waits for Ready candidate pods like any other stage's, and for
        // the checks before traffic: none flows until the steps say so. Deciding that now rather
        // than on the next reconcile never sends traffic the candidate cannot take (nor, with
        // replica ratios, scales stable down for it), and the start is one status write. An
        // analysis taken before the start belongs to no stage of this rollout.
        self.no_traffic();
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
        self.st.stage_start_time = Some(MicroTime(self.now));
        self.st.consecutive_failures = 0;
        self.st.consecutive_inconclusive = 0;
        self.st.candidate_unready_since = None;
        self.start_experiment(stage);
        self.start_alert_clock(idx);
        self.apply_stage_traffic();
        let full = match &stage.match_ {
            Some(m) => format!("stage {} (experiment: {}): {msg}", stage.name, m.describe()),
            None => format!(
                "stage {} ({}% traffic, {}% mirror): {msg}",
                stage.name, self.st.canary_weight, self.st.mirror_percent
            ),
        };
        let full = format!("{full}; {}", self.gates_text(idx));
        self.set_phase(Phase::Progressing, reason, full.clone());
        self.event(EventType::Normal, reasons::STAGE_ADVANCED, full.clone());
        self.notify(NotificationEvent::StageChanged, full);
    }

    /// The checks before traffic (acceptance, preRollout webhooks) are done: the first stage's
    /// traffic flows from now, and its clock starts.
    pub(super) fn begin_first_stage(&mut self, reason: &'static str, what: String) {
        self.st.stage_start_time = Some(MicroTime(self.now));
        self.st.candidate_unready_since = None;
        self.apply_stage_traffic();
        let msg = format!("{what}; stage {}: {}", self.stage_name(), self.traffic_text());
        self.event(EventType::Normal, reason, msg.clone());
        if !self.is_paused() {
            self.set_phase(Phase::Progressing, reason, msg);
        }
    }

    pub(super) fn apply_stage_traffic(&mut self) {
        let Some(stage) = self.spec.stages.get(self.stage_index()) else { return };
        let can_mirror = self.spec.traffic_routing.kind() != RouterKind::ReplicaRatio;
        self.st.canary_weight = stage.weight;
        self.st.mirror_percent = if can_mirror { stage.mirror_percent.unwrap_or(0) } else { 0 };
        self.st.match_ = stage.match_.clone();
    }

    pub(super) fn advance(&mut self, reason: &'static str, msg: String) {
        let idx = self.stage_index();
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
            self.retain(old, &new.version);
        }
        self.st.pending_scale_downs.retain(|p| p.version != new.version);
        self.st.stable_version = Some(new.version.clone());
        self.clear_candidate();
        self.fx.ensure_candidate = false;
        let full = format!("{} promoted to stable: {msg}", new.version);
        let reason = if reason == reasons::MANUALLY_PROMOTED { reason } else { reasons::PROMOTED };
        self.set_phase(Phase::Promoted, reason, full.clone());
        self.event(EventType::Normal, reasons::PROMOTED, full.clone());
        self.notify(NotificationEvent::Promoted, full);
    }

    /// The gates stage `idx` checks and where they come from, for messages.
    pub(super) fn gates_text(&self, idx: usize) -> String {
        let (gates, set) = self.spec.stage_gates(idx);
        let names = gates.names();
        let mut text = if names.is_empty() {
            format!("no gates ({})", set.describe())
        } else {
            format!("gates {} ({})", names.join(", "), set.describe())
        };
        if let Some(a) = self.spec.stages.get(idx).and_then(|s| s.alert_free.as_ref()) {
            text.push_str(&format!(", then {} without a firing alert", a.for_));
        }
        text
    }

    /// Weight 0 and mirror off now; candidate scaled down after the delay; stable untouched.
    pub(super) fn roll_back(&mut self, phase: Phase, reason: &'static str, outcome: Outcome, msg: String) {
        self.st.alert_free = None;
        let version = self.st.candidate_version.clone().unwrap_or_else(|| self.spec.model.version.clone());
        self.no_traffic();
        self.fx.ensure_candidate = false;
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
        self.st.alert_free = None;
        self.st.candidate_version = None;
        self.st.candidate_sha256 = None;
        self.st.stage_index = None;
        self.st.stage_name = None;
        self.st.stage_start_time = None;
        self.st.candidate_unready_since = None;
        self.no_traffic();
    }
}
