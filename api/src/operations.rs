//! What happens on failure, the on-call's one-shot requests, and notifications.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// How long a failed candidate keeps its pods (for inspection) before scaling to zero.
    #[serde(default = "default_scale_down_delay")]
    pub scale_down_delay: Duration,
    /// How long the previous stable keeps its pods after a promotion, for a fast rollback.
    #[serde(default = "default_previous_stable_delay")]
    pub previous_stable_scale_down_delay: Duration,
    /// What `inconclusiveLimit` consecutive inconclusive analyses do. Never promote.
    #[serde(default)]
    pub on_inconclusive: InconclusivePolicy,
    /// What failing analyses (or a rollback webhook's 2xx) do while `spec.paused` holds the
    /// stage: analysis goes on while paused, and by default a failure rolls back as usual.
    #[serde(default)]
    pub on_failure_while_paused: PausedFailurePolicy,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        Self {
            scale_down_delay: default_scale_down_delay(),
            previous_stable_scale_down_delay: default_previous_stable_delay(),
            on_inconclusive: InconclusivePolicy::Pause,
            on_failure_while_paused: PausedFailurePolicy::Rollback,
        }
    }
}

fn default_scale_down_delay() -> Duration {
    duration("30s")
}
fn default_previous_stable_delay() -> Duration {
    duration("10m")
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InconclusivePolicy {
    /// Hold the current weights and keep analysing; go on once an analysis passes.
    #[default]
    Pause,
    /// Roll back to stable.
    Rollback,
}

/// What a failure does while `spec.paused` holds a stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PausedFailurePolicy {
    /// Roll back to stable, as when not paused: a paused bad candidate does not keep its traffic.
    #[default]
    Rollback,
    /// Keep the stage's traffic while paused and say that the rollout would roll back; on resume,
    /// the next analysis decides (a failing one rolls back at once, the streak being past its limit).
    Hold,
}

/// One-shot requests, written into the spec so they are declarative and survive GitOps.
///
/// Each request carries an `id`; the controller acts on a request once, when its `id` differs from
/// the one recorded in `status.handledOperations`, and leaves it in place. A GitOps tool applying
/// the manifest by server-side apply owns only the fields in Git, so a request written by another
/// field manager (`kubectl modelrollout abort`, `kubectl patch`) is neither removed nor re-run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operations {
    /// Roll back now, at any stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<OperationRequest>,
    /// Skip the gates of the current stage (or, with `full`, of all stages) and advance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<PromoteRequest>,
    /// Start a rolled-back or failed rollout again from the first stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<OperationRequest>,
    /// After a promotion: send all traffic back to the retained previous version (at once when
    /// it is warm, once its pods are Ready when cold). The undone version is then rolled back:
    /// the same manifest applied again does not roll it out again (`retry` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<OperationRequest>,
}

impl Operations {
    pub fn is_empty(&self) -> bool {
        self.abort.is_none() && self.promote.is_none() && self.retry.is_none() && self.undo.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationRequest {
    /// Any string unique per request (the kubectl plugin writes a timestamp).
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    /// Who asked (the kubectl plugin writes the user the apiserver authenticated it as), for the
    /// Event and history entry that record the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub requested_by: Option<String>,
}

impl OperationRequest {
    /// `reason`, and who asked when known, for messages: `by alice: fraud losses up`.
    pub fn describe(&self) -> String {
        let why = self.reason.clone().unwrap_or_else(|| "no reason given".into());
        match &self.requested_by {
            Some(who) => format!("by {who}: {why}"),
            None => format!("by the spec (operations id {}): {why}", self.id),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromoteRequest {
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    /// Promote to 100% at once instead of to the next stage.
    #[serde(default)]
    pub full: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub webhooks: Vec<Webhook>,
}

impl Notifications {
    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!self.url.matches('^https?://([^/@]*@)?[[]?(169[.]254[.]|0[.]0[.]0[.]0|[fF][eE]80:)')",
    "message": "the host is a link-local or unspecified address (the cloud metadata address among them): the controller does not call it",
    "fieldPath": ".url",
    "reason": "FieldValueForbidden"
}]))]
pub struct Webhook {
    #[schemars(regex(pattern = r"^https?://"), length(max = 2048))]
    pub url: String,
    /// Events to send; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<NotificationEvent>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum NotificationEvent {
    StageChanged,
    Paused,
    RolledBack,
    Promoted,
    /// The promoted version failed its after-promotion gates (`afterPromotion`).
    AfterPromotionFailed,
}
