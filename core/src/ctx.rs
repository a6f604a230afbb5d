//! One decision's working state: the status being written, and the effects the steps accumulate
//! (applied once, by [`Ctx::finish`](super::outcome)), with the small helpers every step shares.

use super::*;

/// What the steps of one decision ask for beyond the status, collected as they run and applied
/// once at the end (the way Argo Rollouts' `pauseContext` collects and applies). Traffic, the
/// workloads and scale-downs follow from the status itself; these are the rest.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// Keep the candidate's Deployment: the rollout is underway and did not end on this step.
    pub(super) ensure_candidate: bool,
    /// Actions a step asked for, in order (acceptance runs).
    pub(super) actions: Vec<Action>,
    /// Events and notifications, in the order the transitions happened.
    pub(super) events: Vec<Action>,
    /// When a step wants the rollout looked at again, whatever else is scheduled.
    pub(super) wake: Vec<Timestamp>,
    /// A check before traffic passed on this step: the first stage's traffic begins, unless a
    /// later check holds it (see [`Ctx::hold_before_traffic`]).
    pub(super) opening: Option<Opening>,
}

/// Why the first stage's traffic may begin, for its Event and message.
#[derive(Debug)]
pub(super) struct Opening {
    pub(super) reason: &'static str,
    pub(super) what: String,
}

pub(super) struct Ctx<'a> {
    pub(super) spec: &'a ModelRolloutSpec,
    pub(super) st: ModelRolloutStatus,
    pub(super) now: Timestamp,
    pub(super) timings: Timings,
    pub(super) analysis_slot: AnalysisSlot,
    /// The steps of an active rollout, in order (see [`STEPS`](super::steps::STEPS)).
    pub(super) steps: &'a [(&'static str, Step)],
    pub(super) fx: Effects,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(
        spec: &'a ModelRolloutSpec,
        st: ModelRolloutStatus,
        now: Timestamp,
        timings: Timings,
        steps: &'a [(&'static str, Step)],
    ) -> Self {
        Self { spec, st, now, timings, analysis_slot: AnalysisSlot::default(), steps, fx: Effects::default() }
    }

    /// A check before traffic holds it: no traffic to the candidate, and a check that passed
    /// earlier on this step is announced on its own, since the first stage does not begin yet.
    pub(super) fn hold_before_traffic(&mut self) {
        if let Some(Opening { reason, what }) = self.fx.opening.take() {
            self.event(EventType::Normal, reason, what);
        }
        self.no_traffic();
    }

    /// No traffic to the candidate: no weight, no mirror, no experiment rule.
    pub(super) fn no_traffic(&mut self) {
        self.st.canary_weight = 0;
        self.st.mirror_percent = 0;
        self.st.match_ = None;
    }

    /// Look again `after` from now.
    pub(super) fn wake_in(&mut self, after: SignedDuration) {
        self.fx.wake.push(self.now.checked_add(after).unwrap_or(self.now));
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
        if let Some(r) = &ops.undo {
            handled.undo = Some(r.id.clone());
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
                // Where the entry ends a rollout, when that rollout started.
                started: match outcome {
                    Outcome::Undone | Outcome::Deprecated | Outcome::Removed => None,
                    _ => self.st.rollout_start_time.clone(),
                },
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
        self.fx.events.push(Action::Event { kind, reason, action, message });
    }

    /// An Event about one version's life after its rollout (undone, deprecated, removed).
    pub(super) fn event_about(&mut self, version: &str, kind: EventType, reason: &'static str, message: String) {
        self.fx.events.push(Action::Event { kind, reason, action: format!("{version} {reason}"), message });
    }

    pub(super) fn notify(&mut self, event: NotificationEvent, message: String) {
        self.fx.events.push(Action::Notify { event, message });
    }

    pub(super) fn pause(&mut self, hold: Hold, reason: &'static str, message: String) {
        self.set_phase(Phase::Paused, reason, message.clone());
        self.st.hold = Some(hold);
        self.event(EventType::Normal, reason, message.clone());
        self.notify(NotificationEvent::Paused, message);
    }

    pub(super) fn stage_index(&self) -> usize {
        self.st.stage_index.unwrap_or(0) as usize
    }

    pub(super) fn stage_name(&self) -> String {
        self.spec.stages.get(self.stage_index()).map_or_else(|| "?".into(), |s| s.name.clone())
    }

    /// When the current stage's clock started (now, if it has not).
    pub(super) fn stage_start(&self) -> Timestamp {
        self.st.stage_start_time.as_ref().map_or(self.now, |t| t.0)
    }

    /// The traffic in force, for messages: weights, or an experiment's rule.
    pub(super) fn traffic_text(&self) -> String {
        match &self.st.match_ {
            Some(m) => format!("experiment, candidate for {}", m.describe()),
            None => format!("{}% traffic, {}% mirror", self.st.canary_weight, self.st.mirror_percent),
        }
    }
}
