//! The step order of an active rollout, as data: [`STEPS`] lists the named steps in the order they
//! run (the way Argo Rollouts' `rolloutCanary` lists its `reconcileX()` calls), and each returns
//! whether the decision goes on. A feature is a step in its own file and a row here; what a step
//! wants done beyond the status goes to the effects accumulator ([`Effects`](super::ctx::Effects)).

use super::*;

/// Whether the decision goes on to the next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Stop,
}

/// One step of an active rollout.
pub(super) type Step = fn(&mut Ctx<'_>, &Observations) -> Flow;

/// The steps of an active rollout, in order. The order is the rules: an abort beats anything
/// else; a candidate that cannot start fails before waiting on it; no check runs on pods that are
/// not Ready; acceptance, then the preRollout webhooks, hold traffic before the first stage; an
/// on-call promote beats a pause; a rollback webhook beats the gates; analysis goes on while paused
/// (a failure rolls back, unless the spec says a paused rollout holds); a failing analysis beats
/// an experiment's result; nothing advances while held.
pub(super) const STEPS: [(&str, Step); 14] = [
    ("abort", abort),
    ("trouble", trouble),
    ("ready", ready),
    ("acceptance", acceptance::acceptance),
    ("preRollout", webhooks::pre_rollout),
    ("first traffic", first_traffic),
    ("promote", promote),
    ("rollback webhook", webhooks::rollback_webhook),
    ("analysis", analysis::analysis),
    ("alert-free clock", alert_free::record),
    ("paused", paused),
    ("experiment", experiment::experiment),
    ("inconclusive hold", inconclusive_hold),
    ("advance", advance),
];

impl Ctx<'_> {
    /// One decision of an active rollout: its steps in order, until one stops.
    pub(super) fn progress(&mut self, obs: &Observations) {
        self.fx.ensure_candidate = true;
        let steps = self.steps;
        for (_, step) in steps {
            if step(self, obs) == Flow::Stop {
                return;
            }
        }
    }
}

/// An abort request not yet handled rolls back, whatever else holds. (A retry requested while a
/// rollout runs means nothing: it is recorded so it cannot fire later.)
fn abort(ctx: &mut Ctx<'_>, _: &Observations) -> Flow {
    let ops = &ctx.spec.operations;
    if let Some(id) = pending(ops.abort.as_ref().map(|r| r.id.as_str()), &ctx.st.handled_operations.abort) {
        ctx.st.handled_operations.abort = Some(id.to_string());
        let why = ops.abort.as_ref().map(OperationRequest::describe).unwrap_or_default();
        ctx.roll_back(Phase::RolledBack, reasons::ABORTED, Outcome::Aborted, format!("aborted {why}"));
        return Flow::Stop;
    }
    if let Some(r) = &ops.retry {
        ctx.st.handled_operations.retry = Some(r.id.clone());
    }
    Flow::Continue
}

/// A pod that cannot start will not turn Ready by waiting, and one that crashed (even if it came
/// back) is not fit for more traffic: fail now and say why. Traffic leaves it first (roll_back);
/// it never got any if it never ran.
fn trouble(ctx: &mut Ctx<'_>, obs: &Observations) -> Flow {
    let Some(trouble) = &obs.candidate_trouble else { return Flow::Continue };
    let msg = format!("candidate {}: {trouble}", ctx.spec.model.version);
    ctx.roll_back(Phase::Failed, reasons::CANDIDATE_FAILED, Outcome::Failed, msg);
    Flow::Stop
}

/// No traffic moves to a candidate whose pods are not Ready; one not Ready within the progress
/// deadline fails the rollout.
fn ready(ctx: &mut Ctx<'_>, obs: &Observations) -> Flow {
    if obs.candidate_ready || growing_while_serving(ctx.spec, &ctx.st, obs.candidate_available) {
        return Flow::Continue;
    }
    let since = ctx.st.candidate_unready_since.get_or_insert(Time(ctx.now)).0;
    if elapsed(since, ctx.now) >= ctx.timings.progress_deadline {
        let msg = format!(
            "candidate {} not Ready within the progress deadline {}",
            ctx.spec.model.version, ctx.spec.workload.progress_deadline
        );
        ctx.roll_back(Phase::Failed, reasons::PROGRESS_DEADLINE_EXCEEDED, Outcome::Failed, msg);
        return Flow::Stop;
    }
    // With replica ratios the weight is the pods: a stage that adds candidate pods leaves the
    // candidate unready until they come up, and its Service sends nothing to a pod before it is
    // Ready. The stage's weight stays (zeroing it would scale the new pods away again, and back
    // once the rest are Ready: pods churning for ever). A rollout starts with none.
    if ctx.spec.traffic_routing.kind() == RouterKind::ReplicaRatio && ctx.st.canary_weight > 0 {
        ctx.st.match_ = None;
    } else {
        ctx.no_traffic();
    }
    if !ctx.is_paused() {
        let msg = format!("waiting for candidate {} pods to be Ready", ctx.spec.model.version);
        ctx.set_phase(Phase::Progressing, reasons::WAITING_FOR_CANDIDATE, msg);
    }
    Flow::Stop
}

/// The checks before traffic are through: a check that passed on this step opens the first
/// stage's traffic (and this step ends on it); a candidate Ready again restarts its stage's clock.
fn first_traffic(ctx: &mut Ctx<'_>, _: &Observations) -> Flow {
    if let Some(opening) = ctx.fx.opening.take() {
        ctx.begin_first_stage(opening.reason, opening.what);
        return Flow::Stop;
    }
    if ctx.st.candidate_unready_since.take().is_some() {
        // The stage's clock starts when its traffic can actually flow.
        ctx.st.stage_start_time = Some(MicroTime(ctx.now));
        if !ctx.is_paused() {
            ctx.apply_stage_traffic();
            let msg = format!(
                "candidate {} Ready; stage {}: {}",
                ctx.spec.model.version,
                ctx.stage_name(),
                ctx.traffic_text()
            );
            ctx.set_phase(Phase::Progressing, reasons::CANDIDATE_READY, msg);
        }
    }
    Flow::Continue
}

/// An on-call promote: the next stage, or (`full`) straight to stable.
fn promote(ctx: &mut Ctx<'_>, _: &Observations) -> Flow {
    let Some(p) = &ctx.spec.operations.promote else { return Flow::Continue };
    if pending(Some(p.id.as_str()), &ctx.st.handled_operations.promote).is_none() {
        return Flow::Continue;
    }
    ctx.st.handled_operations.promote = Some(p.id.clone());
    let why = p.reason.clone().unwrap_or_else(|| "no reason given".into());
    if p.full {
        ctx.complete(reasons::MANUALLY_PROMOTED, format!("promoted to 100% by request: {why}"));
    } else {
        ctx.advance(reasons::MANUALLY_PROMOTED, format!("promoted by request: {why}"));
    }
    Flow::Stop
}

/// `spec.paused` holds the stage's traffic (after this reconcile's analysis was judged: a paused
/// rollout goes on analysing); clearing it resumes.
fn paused(ctx: &mut Ctx<'_>, _: &Observations) -> Flow {
    if ctx.spec.paused {
        ctx.apply_stage_traffic();
        if ctx.st.hold != Some(Hold::Spec) {
            ctx.pause(Hold::Spec, reasons::PAUSED_BY_SPEC, "paused by spec.paused".into());
        }
        return Flow::Stop;
    }
    if ctx.st.hold == Some(Hold::Spec) {
        ctx.set_phase(Phase::Progressing, reasons::RESUMED, "resumed".into());
        ctx.event(EventType::Normal, reasons::RESUMED, "resumed: spec.paused is false".into());
    }
    ctx.apply_stage_traffic();
    Flow::Continue
}

/// Held on inconclusive analysis: nothing advances until an analysis passes.
fn inconclusive_hold(ctx: &mut Ctx<'_>, _: &Observations) -> Flow {
    if ctx.st.hold == Some(Hold::Inconclusive) { Flow::Stop } else { Flow::Continue }
}

/// A stage advances only after its minimum duration AND a passing analysis taken in it; a stage
/// that asks for approval, or the last one while confirmPromotion webhooks have not confirmed,
/// holds instead.
fn advance(ctx: &mut Ctx<'_>, _: &Observations) -> Flow {
    let spec = ctx.spec;
    let idx = ctx.stage_index();
    let stage_start = ctx.stage_start();
    let min = ctx.timings.stage_min.get(idx).copied().unwrap_or(SignedDuration::ZERO);
    let passed_here = ctx.st.last_analysis.as_ref().is_some_and(|run| {
        run.stage_index as usize == idx && run.time.0 >= stage_start && run.verdict == Verdict::Pass
    });
    if !(elapsed(stage_start, ctx.now) >= min && passed_here && ctx.now >= stage_start) {
        return Flow::Stop;
    }
    if let Some(wait) = ctx.alert_free_wait() {
        if !ctx.is_paused() {
            let msg = format!("stage {} passed its gates; waiting for its alert-free window: {wait}", ctx.stage_name());
            ctx.st.reason = Some(reasons::AWAITING_ALERT_FREE.into());
            ctx.st.message = Some(msg);
        }
        return Flow::Stop;
    }
    let won = ctx.experiment_won();
    if spec.stages.get(idx).is_some_and(|s| s.manual_approval) {
        if ctx.st.hold != Some(Hold::Approval) {
            let msg = match &won {
                Some(r) => format!("stage {}: {}; waiting for promote", spec.stages[idx].name, r.message),
                None => format!("stage {} passed; waiting for promote", spec.stages[idx].name),
            };
            ctx.pause(Hold::Approval, reasons::AWAITING_APPROVAL, msg);
        }
        return Flow::Stop;
    }
    let name = spec.stages.get(idx).map_or("?", |s| s.name.as_str());
    if idx + 1 >= spec.stages.len() && !ctx.promotion_confirmed() {
        if ctx.st.hold != Some(Hold::Confirmation) {
            let msg = format!("stage {name} passed; waiting for the confirmPromotion webhooks' 2xx");
            ctx.pause(Hold::Confirmation, reasons::AWAITING_CONFIRMATION, msg);
        }
        return Flow::Stop;
    }
    let msg = if let Some(r) = &won {
        format!("stage {name}: {} and its guardrails passed", r.message)
    } else if ctx.st.promoting_without_gates {
        format!("stage {name} passed its minDuration (no gates: analysis.promoteWithoutGates)")
    } else {
        format!("stage {name} passed its gates")
    };
    let reason = if won.is_some() { reasons::EXPERIMENT_WON } else { reasons::STAGE_ADVANCED };
    ctx.advance(reason, msg);
    Flow::Stop
}

#[cfg(test)]
#[path = "step_order_tests.rs"]
mod tests;
