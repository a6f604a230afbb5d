//! What a rollout reports: its phase and hold, its stage and traffic, operations handled, history.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::*;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelRolloutStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// What holds a `Paused` rollout (set exactly while the phase is `Paused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// The spec sets no gate and `analysis.promoteWithoutGates`: stages advance on `minDuration`
    /// alone, with no evidence.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promoting_without_gates: bool,
    /// Why the rollout is in its phase (CamelCase, see `modelrollout::reasons`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last transition, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_name: Option<String>,
    /// When the stage's clock started, to the microsecond: `minDuration` counts from it exactly
    /// (a whole-second time let a stage advance up to a second early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_start_time: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_start_time: Option<Time>,
    /// Percent of live traffic the candidate answers.
    #[serde(default)]
    pub canary_weight: i32,
    /// Percent of traffic mirrored to the candidate.
    #[serde(default)]
    pub mirror_percent: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_version: Option<String>,
    /// The stable model as last promoted: what the stable pods serve and what a rollback returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<ModelSpec>,
    /// Digest of the candidate this rollout is about (with `candidateVersion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<AnalysisRun>,
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub consecutive_inconclusive: u32,
    /// When the candidate's pods were last seen not Ready (cleared once they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_unready_since: Option<Time>,
    /// Scale-downs waiting for their delay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_scale_downs: Vec<PendingScaleDown>,
    #[serde(default, skip_serializing_if = "HandledOperations::is_empty")]
    pub handled_operations: HandledOperations,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Each version's life, newest first, at most 20 entries: how its rollout ended (promoted,
    /// rolled back, ...), then undone, deprecated, removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// The candidate's acceptance checks (`spec.acceptance`): running, passed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptance: Option<AcceptanceStatus>,
    /// Each gating webhook's last answer (see `spec.webhooks`), for the version it was about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookResult>,
    /// A rollout that ended and whose postRollout webhooks are still to be called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_rollout: Option<EndedRollout>,
    /// The requests routed to the candidate by match (an experiment stage's `match`), while
    /// they are; the candidate's weight is then 0.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<TrafficMatch>,
    /// This rollout's experiment (a stage with `match`): its arms, rule and reward so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentStatus>,
    /// The current stage's alert-free clock (a stage with `alertFree`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_free: Option<AlertFreeStatus>,
    /// The previous stable version, kept ready for an undo until its retention ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained: Option<RetainedVersion>,
    /// Versions past their retention: deprecated, and when their objects are removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<RetiredVersion>,
    /// An undo waiting for the retained version's pods to be Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<PendingUndo>,
    /// The promoted version's gates, judged during the retention (`afterPromotion.gates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<PromotedWatch>,
    /// The stable version's pods (its Deployment's), for the scale subresource: what a
    /// HorizontalPodAutoscaler scaling this rollout sees as its current size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The label selector of the stable version's pods, for the scale subresource: the pods whose
    /// CPU a HorizontalPodAutoscaler averages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// A stage's alert-free clock: how long no matching alert has fired, and what last restarted it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertFreeStatus {
    /// The stage it belongs to.
    pub stage_index: u32,
    /// Since when no matching alert is known to have fired: the stage's start, or the last look
    /// that found one firing (or could not look).
    pub since: MicroTime,
    /// Up to when Prometheus has been asked: the next look covers from here to its own time.
    pub checked_until: MicroTime,
    /// When the stage's `for` is met (`since + for`).
    pub clean_at: MicroTime,
    /// What last restarted the clock, if anything did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<AlertReset>,
}

/// Why an alert-free clock restarted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertReset {
    pub cause: AlertResetCause,
    /// The alerts seen firing (by `alertname`), or why Prometheus could not say.
    pub detail: String,
    pub time: MicroTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AlertResetCause {
    /// A matching alert fired.
    AlertFiring,
    /// Prometheus could not be asked: the time since the last look is not known clean.
    PrometheusUnavailable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// The stable version serves everything; nothing to roll out.
    Idle,
    /// A candidate is moving through the stages.
    Progressing,
    /// Held: by `spec.paused`, a manual-approval stage, or inconclusive data.
    Paused,
    /// The candidate became stable.
    Promoted,
    /// The candidate was rolled back (failed gates or abort); stable serves everything.
    RolledBack,
    /// The rollout could not run (contract mismatch, candidate never Ready); stable serves everything.
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "Idle",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Promoted => "Promoted",
            Phase::RolledBack => "RolledBack",
            Phase::Failed => "Failed",
        }
    }

    /// A rollout in this phase is underway (traffic may be on the candidate).
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused)
    }
}

/// What holds a paused rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Hold {
    /// `spec.paused` is true.
    Spec,
    /// `inconclusiveLimit` analyses in a row were inconclusive and `rollback.onInconclusive` is
    /// `Pause`: released by a passing analysis.
    Inconclusive,
    /// A `manualApproval` stage passed its gates: released by `promote`.
    Approval,
    /// The last stage passed and a confirmPromotion webhook has not answered 2xx yet: released by
    /// its 2xx (or `promote`).
    Confirmation,
}

impl Hold {
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::Spec => "Spec",
            Hold::Inconclusive => "Inconclusive",
            Hold::Approval => "Approval",
            Hold::Confirmation => "Confirmation",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingScaleDown {
    pub version: String,
    pub at: Time,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandledOperations {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
}

impl HandledOperations {
    pub fn is_empty(&self) -> bool {
        self.abort.is_none() && self.promote.is_none() && self.retry.is_none() && self.undo.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub version: String,
    pub outcome: Outcome,
    pub reason: String,
    pub time: Time,
    /// When the rollout that ended here started (a promotion's, a rollback's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    /// The experiment's result, when this rollout ran one with a reward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<RewardResult>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Outcome {
    Promoted,
    RolledBack,
    Aborted,
    Failed,
    /// A newer version replaced it mid-rollout.
    Superseded,
    /// Promoted, then undone: traffic went back to the version before it.
    Undone,
    /// Its retention after being replaced ended: not to be served again.
    Deprecated,
    /// Its objects were deleted (`afterPromotion.removeAfter` after it was deprecated).
    Removed,
}
