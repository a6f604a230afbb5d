//! The days after a promotion: the previous version retained for an undo (warm or cold), the undo
//! itself (asked for, a GitOps revert of `spec.model`, or the watch's own), the watch that keeps
//! judging the promoted version on its gates, and the previous version's retirement (deprecated
//! when its retention ends, its Deployment removed later).

use super::*;

/// The id a pending undo carries when the watch asked for it (`afterPromotion.onFailure: Undo`).
pub const AUTOMATIC_UNDO: &str = "AfterPromotionFailed";
/// The id a pending undo carries when `spec.model` went back to the retained version.
pub const REVERT_UNDO: &str = "spec.model";

/// Whether a watch analysis of the promoted version is due now.
pub fn watch_analysis_due(
    spec: &ModelRolloutSpec,
    status: &ModelRolloutStatus,
    slot: AnalysisSlot,
    now: Timestamp,
) -> bool {
    let ends = status.watch.as_ref().map(|w| w.until.0);
    next_watch_analysis_at(spec, status, slot).is_some_and(|at| now >= at) && ends.is_some_and(|end| now < end)
}

/// When the watch's next analysis falls: every interval after the promotion (plus the rollout's
/// slot), at least half an interval after the last, while the retention lasts.
pub fn next_watch_analysis_at(
    spec: &ModelRolloutSpec,
    status: &ModelRolloutStatus,
    slot: AnalysisSlot,
) -> Option<Timestamp> {
    let watch = status.watch.as_ref()?;
    if status.phase.is_some_and(Phase::is_active) || status.undo.is_some() || watch_gate_defs(spec).is_empty() {
        return None;
    }
    let last = watch.last_analysis.as_ref().map(|run| run.time.0);
    let next = next_on_grid(watch.since.0, slot, analysis_interval(spec), last)?;
    (next < watch.until.0).then_some(next)
}

/// The window a watch analysis taken `now` measures: since the last one (at most two
/// intervals), or one interval for the first.
pub fn watch_window(spec: &ModelRolloutSpec, status: &ModelRolloutStatus, now: Timestamp) -> Duration {
    let interval = analysis_interval(spec);
    let last = status.watch.as_ref().and_then(|w| w.last_analysis.as_ref()).map(|r| r.time.0);
    window_after(last, interval, interval, now)
}

/// The gates the watch judges: `afterPromotion.gates`, else the last stage's; each by its
/// threshold (a sequential judge's evidence belongs to the rollout that ended).
pub fn watch_gate_defs(spec: &ModelRolloutSpec) -> Vec<GateDef> {
    let Some(after) = &spec.after_promotion else { return Vec::new() };
    let defs = match &after.gates {
        Some(gates) => gate_defs(gates),
        None => stage_gate_defs(spec, spec.stages.len().saturating_sub(1)).0,
    };
    defs.into_iter().map(|d| GateDef { judge: Judge::Threshold, ..d }).collect()
}

impl Ctx<'_> {
    /// At a promotion: the replaced stable version is retained (a version retained before it is
    /// retired now), and the watch on the promoted one starts.
    pub(super) fn retain(&mut self, old: ModelSpec, promoted: &str) {
        if let Some(before) = self.st.retained.take() {
            self.retire(before, format!("replaced by {promoted}'s predecessor"));
        }
        self.st.retired.retain(|r| r.version != promoted);
        // With replica ratios every pod of the rollout takes traffic: the retained version keeps
        // none (at the last stage it had none left), whatever the spec asks.
        let ratio = self.spec.traffic_routing.kind() == RouterKind::ReplicaRatio;
        let mode = match self.spec.after_promotion.as_ref().map_or(RetentionMode::Warm, |a| a.mode) {
            _ if ratio => RetentionMode::Cold,
            mode => mode,
        };
        let until = self.now.checked_add(self.timings.retention).unwrap_or(self.now);
        let pods_until = match mode {
            RetentionMode::Warm => self.timings.retention,
            RetentionMode::Cold => self.timings.previous_stable_delay.min(self.timings.retention),
        };
        self.schedule_scale_down(&old.version, pods_until);
        self.st.retained = Some(RetainedVersion { model: old, mode, since: Time(self.now), until: Time(until) });
        self.st.undo = None;
        self.st.watch = (!watch_gate_defs(self.spec).is_empty()).then(|| PromotedWatch {
            version: promoted.to_string(),
            since: MicroTime(self.now),
            until: Time(until),
            consecutive_failures: 0,
            failing: false,
            last_analysis: None,
        });
    }

    /// A retained version leaves retention: with `afterPromotion` it is deprecated now, and its
    /// removal scheduled.
    fn retire(&mut self, r: RetainedVersion, why: String) {
        let version = r.model.version;
        let Some(after) = &self.spec.after_promotion else { return };
        let remove_at = after.remove_after.as_ref().map(|d| Time(self.now.checked_add(signed(d)).unwrap_or(self.now)));
        let msg = match &remove_at {
            Some(at) => format!("{version} deprecated ({why}); its Deployment is removed at {}", at.0),
            None => format!("{version} deprecated ({why})"),
        };
        self.st.retired.retain(|x| x.version != version);
        self.st.retired.push(RetiredVersion { version: version.clone(), deprecated_at: Time(self.now), remove_at });
        self.push_history(&version, Outcome::Deprecated, &msg);
        self.event_about(&version, EventType::Normal, reasons::DEPRECATED, msg);
    }

    /// Retention ends and removals fall due, whatever else the rollout does.
    pub(super) fn timeline(&mut self) {
        if self.st.undo.is_none()
            && let Some(r) = self.st.retained.take_if(|r| r.until.0 <= self.now)
        {
            self.st.watch = None;
            self.retire(r, "its retention ended".into());
        }
        let serving = |v: &str, st: &ModelRolloutStatus| {
            st.stable_version.as_deref() == Some(v) || st.candidate_version.as_deref() == Some(v)
        };
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.st.retired)
            .into_iter()
            .partition(|r| r.remove_at.as_ref().is_some_and(|at| at.0 <= self.now));
        self.st.retired = waiting;
        for r in due {
            if serving(&r.version, &self.st) {
                continue;
            }
            let msg = format!("{} removed: deprecated at {}", r.version, r.deprecated_at.0);
            self.st.pending_scale_downs.retain(|p| p.version != r.version);
            self.fx.actions.push(Action::RemoveWorkload { version: r.version.clone() });
            self.push_history(&r.version, Outcome::Removed, &msg);
            self.event_about(&r.version, EventType::Normal, reasons::REMOVED, msg);
        }
    }

    /// An undo asked for (`operations.undo`), a `spec.model` back at the retained version, or one
    /// already waiting for the retained pods. Returns true when it decided this reconcile.
    pub(super) fn undo(&mut self, obs: &Observations) -> bool {
        let spec = self.spec;
        if let Some(op) = &spec.operations.undo
            && let Some(id) = pending(Some(op.id.as_str()), &self.st.handled_operations.undo)
        {
            self.st.handled_operations.undo = Some(id.to_string());
            if let Some(refusal) = self.undo_refusal() {
                let msg = format!("undo {id} refused: {refusal}");
                self.event(EventType::Warning, reasons::UNDO_REFUSED, msg.clone());
                if !self.phase().is_some_and(Phase::is_active) {
                    self.st.message = Some(msg);
                }
                return false;
            }
            self.begin_undo(id.to_string(), format!("undone {}", op.describe()));
        } else if self.st.undo.is_none()
            && !self.phase().is_some_and(Phase::is_active)
            && let Some(r) = &self.st.retained
            && spec.model.same_build(&r.model)
        {
            let msg = format!("spec.model returned to the retained version {}", r.model.version);
            self.begin_undo(REVERT_UNDO.into(), msg);
        }
        let Some(pending) = self.st.undo.clone() else { return false };
        if obs.retained_ready {
            self.finish_undo(&pending);
            return true;
        }
        let waited = elapsed(pending.requested_at.0, self.now);
        if waited >= self.timings.progress_deadline {
            let msg = format!(
                "undo to {} failed: its pods were not Ready within the progress deadline {}; {} still serves",
                pending.version,
                spec.workload.progress_deadline,
                self.st.stable_version.clone().unwrap_or_default()
            );
            self.st.undo = None;
            self.st.reason = Some(reasons::UNDO_REFUSED.into());
            self.st.message = Some(msg.clone());
            self.event(EventType::Warning, reasons::UNDO_REFUSED, msg);
            return true;
        }
        self.st.reason = Some(reasons::UNDOING.into());
        self.st.message =
            Some(format!("undo: waiting for {}'s pods to be Ready ({})", pending.version, pending.reason));
        true
    }

    /// Why an undo cannot run now, if it cannot.
    fn undo_refusal(&self) -> Option<String> {
        if self.phase().is_some_and(Phase::is_active) {
            let candidate = self.st.candidate_version.clone().unwrap_or_default();
            return Some(format!("a rollout of {candidate} is underway (abort it instead)"));
        }
        if self.st.retained.is_none() {
            return Some("no previous version is retained (none was promoted over, or its retention ended)".into());
        }
        None
    }

    fn begin_undo(&mut self, id: String, reason: String) {
        let Some(r) = &self.st.retained else { return };
        if self.st.undo.is_some() {
            return;
        }
        let version = r.model.version.clone();
        let msg = format!("undo to {version} ({reason}): waiting for its pods to be Ready");
        self.st.pending_scale_downs.retain(|p| p.version != version);
        self.st.undo = Some(PendingUndo { id, reason, version, requested_at: MicroTime(self.now) });
        self.event(EventType::Normal, reasons::UNDOING, msg);
    }

    /// The retained version's pods are Ready: it becomes stable again and takes all traffic. The
    /// version undone stays named as the rolled-back candidate, so the manifest that promoted it,
    /// applied again, does not roll it out again; a `spec.model` already back at the retained
    /// version leaves nothing to roll back.
    fn finish_undo(&mut self, pending: &PendingUndo) {
        let Some(r) = self.st.retained.take() else { return };
        self.st.undo = None;
        self.st.watch = None;
        let back = r.model.version.clone();
        let undone = self.st.stable.replace(r.model).expect("stable is set by step");
        self.st.stable_version = Some(back.clone());
        self.st.pending_scale_downs.retain(|p| p.version != back);
        self.st.retired.retain(|x| x.version != back);
        // With replica ratios the undone version's pods take traffic until they are gone.
        let ratio = self.spec.traffic_routing.kind() == RouterKind::ReplicaRatio;
        let delay = if ratio { SignedDuration::ZERO } else { self.timings.scale_down_delay };
        self.schedule_scale_down(&undone.version, delay);
        self.clear_candidate();
        let msg = format!("{} undone, {back} serves all traffic: {}", undone.version, pending.reason);
        self.push_history(&undone.version, Outcome::Undone, &msg);
        if self.spec.model.same_build(&undone) {
            self.st.candidate_version = Some(undone.version.clone());
            self.st.candidate_sha256 = Some(undone.artifact.sha256.clone());
            self.set_phase(Phase::RolledBack, reasons::UNDONE, msg.clone());
        } else {
            self.set_phase(Phase::Idle, reasons::UNDONE, msg.clone());
        }
        self.event_about(&undone.version, EventType::Warning, reasons::UNDONE, msg.clone());
        self.notify(NotificationEvent::RolledBack, msg);
    }

    /// A watch analysis taken this reconcile: judged, its failure streak counted; a streak at
    /// `failureLimit` says so (and undoes, with `onFailure: Undo`), a pass after it says so too.
    pub(super) fn judge_watch(&mut self, measurements: &[GateObservation]) {
        let spec = self.spec;
        let Some(mut watch) = self.st.watch.clone() else { return };
        let defs = watch_gate_defs(spec);
        let baseline_run = watch.last_analysis.clone().or_else(|| self.st.last_analysis.clone());
        let gates: Vec<GateResult> = defs
            .iter()
            .map(|d| {
                let mut obs = measurements.iter().find(|m| m.gate == d.name).cloned();
                let carried = baseline_run
                    .as_ref()
                    .and_then(|run| run.gates.iter().find(|g| g.name == d.name))
                    .and_then(|g| g.stable_value);
                let carried_now = super::analysis::carry_baseline(d, obs.as_mut(), carried);
                let mut r = judge(d, obs.as_ref());
                if carried_now {
                    r.message.push_str(" (previous version's value from the rollout's last analysis)");
                }
                r
            })
            .collect();
        let verdict = overall_verdict(&gates);
        watch.consecutive_failures = if verdict == Verdict::Fail {
            watch.consecutive_failures + 1
        } else if verdict == Verdict::Pass {
            0
        } else {
            watch.consecutive_failures
        };
        watch.last_analysis = Some(AnalysisRun {
            time: MicroTime(self.now),
            stage_index: self.st.stage_index.unwrap_or(0),
            verdict,
            gate_set: GateSet::AfterPromotion,
            gates: gates.clone(),
        });
        let version = watch.version.clone();
        let failed_now = !watch.failing && watch.consecutive_failures >= spec.analysis.failure_limit;
        let recovered = watch.failing && verdict == Verdict::Pass;
        if failed_now {
            watch.failing = true;
        }
        if recovered {
            watch.failing = false;
        }
        self.st.watch = Some(watch);
        if failed_now {
            let failing: Vec<String> = gates
                .iter()
                .filter(|g| g.verdict == Verdict::Fail)
                .map(|g| format!("{}: {}", g.name, g.message))
                .collect();
            let msg = format!(
                "{version} failed its after-promotion gates ({} analyses in a row): {}",
                spec.analysis.failure_limit,
                failing.join("; ")
            );
            self.st.reason = Some(reasons::AFTER_PROMOTION_FAILED.into());
            self.st.message = Some(msg.clone());
            self.event_about(&version, EventType::Warning, reasons::AFTER_PROMOTION_FAILED, msg.clone());
            self.notify(NotificationEvent::AfterPromotionFailed, msg.clone());
            if spec.after_promotion.as_ref().is_some_and(|a| a.on_failure == AfterPromotionFailure::Undo) {
                self.begin_undo(AUTOMATIC_UNDO.into(), msg);
            }
        } else if recovered {
            let msg = format!("{version} passes its after-promotion gates again");
            self.st.reason = Some(reasons::AFTER_PROMOTION_PASSING.into());
            self.st.message = Some(msg.clone());
            self.event_about(&version, EventType::Normal, reasons::AFTER_PROMOTION_PASSING, msg);
        }
    }
}
