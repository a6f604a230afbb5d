//! Gating webhooks (`spec.webhooks`): when each kind is called (a pure function of the spec and
//! status, which the adapters ask before a decision), and what its answer does to the rollout.

use super::ctx::Opening;
use super::steps::Flow;
use super::*;

/// While preRollout webhooks are awaited (or postRollout ones are pending), how soon to look again.
pub const WEBHOOK_POLL: SignedDuration = SignedDuration::from_secs(2);

/// A gating webhook's answer, called this reconcile because [`webhooks_due`] said so.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookCall {
    pub name: String,
    pub kind: WebhookKind,
    /// It answered 2xx.
    pub ok: bool,
    pub code: Option<u16>,
    pub message: String,
    pub attempts: u32,
}

fn hooks(spec: &ModelRolloutSpec, kind: WebhookKind) -> impl Iterator<Item = &GatingWebhook> {
    spec.webhooks.iter().filter(move |h| h.kind == kind)
}

fn answer<'a>(st: &'a ModelRolloutStatus, hook: &GatingWebhook, version: &str) -> Option<&'a WebhookResult> {
    st.webhooks.iter().find(|r| r.name == hook.name && r.kind == hook.kind && r.version == version)
}

/// Whether every webhook of `kind` answered 2xx about `version` (true when there are none).
fn all_ok(spec: &ModelRolloutSpec, st: &ModelRolloutStatus, kind: WebhookKind, version: &str) -> bool {
    hooks(spec, kind).all(|h| answer(st, h, version).is_some_and(|r| r.ok))
}

/// The webhook kinds to call now. `candidate_ready` and `analysis_due` are what the controller
/// observed this reconcile.
pub fn webhooks_due(
    spec: &ModelRolloutSpec,
    st: &ModelRolloutStatus,
    candidate_ready: bool,
    analysis_due: bool,
    now: Timestamp,
) -> Vec<WebhookKind> {
    let mut due = Vec::new();
    let version = spec.model.version.as_str();
    let this_candidate = st.candidate_version.as_deref() == Some(version) && st.phase.is_some_and(Phase::is_active);
    let has = |kind| hooks(spec, kind).next().is_some();
    if has(WebhookKind::PreRollout)
        && this_candidate
        && candidate_ready
        && !awaiting_acceptance(spec, st)
        && !all_ok(spec, st, WebhookKind::PreRollout, version)
    {
        due.push(WebhookKind::PreRollout);
    }
    if has(WebhookKind::ConfirmPromotion) && this_candidate && st.hold == Some(Hold::Confirmation) {
        // Asked again an interval after its last answer.
        let interval = signed(&spec.analysis.interval);
        let asked =
            hooks(spec, WebhookKind::ConfirmPromotion).filter_map(|h| answer(st, h, version)).map(|r| r.time.0).min();
        if asked.is_none_or(|t| elapsed(t, now) >= interval) {
            due.push(WebhookKind::ConfirmPromotion);
        }
    }
    if has(WebhookKind::Rollback) && this_candidate && analysis_due {
        due.push(WebhookKind::Rollback);
    }
    if has(WebhookKind::PostRollout) && st.post_rollout.is_some() {
        due.push(WebhookKind::PostRollout);
    }
    due
}

impl Ctx<'_> {
    /// Records this reconcile's answers in status (one per hook and version, the latest), and
    /// hands postRollout's on: the rollout they were about is done with.
    pub(super) fn record_webhooks(&mut self, obs: &Observations) {
        for call in &obs.webhooks {
            let version = match call.kind {
                WebhookKind::PostRollout => self.st.post_rollout.as_ref().map(|e| e.version.clone()),
                _ => self.st.candidate_version.clone(),
            };
            let Some(version) = version else { continue };
            self.st.webhooks.retain(|r| !(r.name == call.name && r.kind == call.kind && r.version == version));
            self.st.webhooks.push(WebhookResult {
                name: call.name.clone(),
                kind: call.kind,
                version: version.clone(),
                ok: call.ok,
                code: call.code,
                message: call.message.clone(),
                attempts: call.attempts,
                time: Time(self.now),
            });
            if call.kind == WebhookKind::PostRollout && !call.ok {
                let msg = format!("postRollout webhook {} about {version} failed: {}", call.name, call.message);
                let action = format!("{version} postRollout {}", call.name);
                self.fx.events.push(Action::Event {
                    kind: EventType::Warning,
                    reason: reasons::WEBHOOK_FAILED,
                    action,
                    message: msg,
                });
            }
        }
        if obs.webhooks.iter().any(|c| c.kind == WebhookKind::PostRollout) {
            self.st.post_rollout = None;
        }
        // Answers about versions no longer stable or candidate say nothing any more.
        let keep = [self.st.candidate_version.clone(), self.st.stable_version.clone()];
        self.st.webhooks.retain(|r| keep.iter().flatten().any(|v| *v == r.version));
    }

    /// Whether every confirmPromotion webhook answered 2xx about this candidate.
    pub(super) fn promotion_confirmed(&self) -> bool {
        all_ok(self.spec, &self.st, WebhookKind::ConfirmPromotion, &self.spec.model.version)
    }

    /// A rollout ended: its postRollout webhooks are to hear of it.
    pub(super) fn ended(&mut self, version: &str, outcome: Outcome, message: &str) {
        if hooks(self.spec, WebhookKind::PostRollout).next().is_some() {
            self.st.post_rollout =
                Some(EndedRollout { version: version.to_string(), outcome, message: message.to_string() });
        }
    }
}

/// The preRollout step: holds the candidate out of traffic until every preRollout webhook answered
/// 2xx about it; fails the rollout on any other answer. Their 2xx on this step opens the first
/// stage's traffic.
pub(super) fn pre_rollout(ctx: &mut Ctx<'_>, obs: &Observations) -> Flow {
    let spec = ctx.spec;
    if hooks(spec, WebhookKind::PreRollout).next().is_none() {
        return Flow::Continue;
    }
    let version = spec.model.version.clone();
    let answered_now = obs.webhooks.iter().any(|c| c.kind == WebhookKind::PreRollout);
    if all_ok(spec, &ctx.st, WebhookKind::PreRollout, &version) && !answered_now {
        return Flow::Continue;
    }
    ctx.hold_before_traffic();
    let refused: Vec<String> = obs
        .webhooks
        .iter()
        .filter(|c| c.kind == WebhookKind::PreRollout && !c.ok)
        .map(|c| format!("{}: {}", c.name, c.message))
        .collect();
    if !refused.is_empty() {
        let msg = format!("preRollout webhook refused candidate {version}: {}", refused.join("; "));
        ctx.roll_back(Phase::Failed, reasons::PRE_ROLLOUT_WEBHOOK_FAILED, Outcome::Failed, msg);
        return Flow::Stop;
    }
    if all_ok(spec, &ctx.st, WebhookKind::PreRollout, &version) {
        let what = "preRollout webhooks answered 2xx".to_string();
        ctx.fx.opening = Some(Opening { reason: reasons::PRE_ROLLOUT_WEBHOOK_PASSED, what });
        return Flow::Continue;
    }
    ctx.wake_in(WEBHOOK_POLL);
    if !ctx.is_paused() {
        let msg = format!("waiting for the preRollout webhooks' answer about candidate {version}");
        ctx.set_phase(Phase::Progressing, reasons::AWAITING_PRE_ROLLOUT_WEBHOOK, msg);
    }
    Flow::Stop
}

/// The rollback-webhook step: a rollback webhook that answered 2xx this reconcile rolls back.
pub(super) fn rollback_webhook(ctx: &mut Ctx<'_>, obs: &Observations) -> Flow {
    let Some(msg) = obs
        .webhooks
        .iter()
        .find(|c| c.kind == WebhookKind::Rollback && c.ok)
        .map(|c| format!("rollback webhook {} answered {}: {}", c.name, c.code.unwrap_or(200), c.message))
    else {
        return Flow::Continue;
    };
    if ctx.fail_judged(reasons::ROLLBACK_WEBHOOK, msg, true) { Flow::Stop } else { Flow::Continue }
}
