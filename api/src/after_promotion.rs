//! The days after a promotion: how long the previous version stays ready for an undo (warm or
//! cold), the gates the promoted version is still judged on meanwhile, and when the previous
//! version is marked deprecated and its objects removed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::*;

/// What follows a promotion. Without it the previous version keeps its pods for
/// `rollback.previousStableScaleDownDelay` (an undo is immediate meanwhile), then keeps its
/// Deployment at zero; nothing watches the promoted version and nothing is removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "duration(self.retention) > duration('0s')",
        "message": "retention must be more than 0s (without a retention there is nothing to undo to)",
        "fieldPath": ".retention",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "!has(self.warmReplicas) || !has(self.mode) || self.mode == 'Warm'",
        "message": "warmReplicas is for mode Warm: a Cold retention keeps no pods",
        "fieldPath": ".warmReplicas",
        "reason": "FieldValueForbidden"
    }
]))]
pub struct AfterPromotion {
    /// How long the previous stable version stays ready for `undo` after a promotion (`168h` for
    /// a week). When it ends, the version is marked deprecated.
    pub retention: Duration,
    /// `Warm` keeps its pods (an undo moves traffic at once); `Cold` keeps its Deployment at zero
    /// after `rollback.previousStableScaleDownDelay` (an undo scales it up and moves traffic once
    /// its pods are Ready).
    #[serde(default)]
    pub mode: RetentionMode,
    /// Pods kept while warm (default: `workload.replicas`, the autoscaler's size when one scales
    /// the rollout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub warm_replicas: Option<i32>,
    /// How long after it is deprecated the previous version's Deployment is deleted (`720h` for
    /// 30 days). Never, when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_after: Option<Duration>,
    /// The gates the promoted version is judged on every `analysis.interval` during retention,
    /// with labels as they arrive (`failureLimit` failing analyses in a row are a failure). Unset:
    /// the last stage's gates; `{}`: none (nothing watches). Limits relative to stable compare
    /// with the previous version's values from the rollout's last analysis (the previous version
    /// answers no traffic after the promotion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<Gates>,
    /// What a failure of those gates does: `Alert` (the `AfterPromotionHealthy` condition turns
    /// False, a Warning Event, the chart's alert) or `Undo` (the same, and an undo to the retained
    /// version).
    #[serde(default)]
    pub on_failure: AfterPromotionFailure,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RetentionMode {
    /// Its pods stay up: an undo moves traffic at once.
    #[default]
    Warm,
    /// Its Deployment stays at zero pods: an undo scales it up first.
    Cold,
}

impl RetentionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionMode::Warm => "Warm",
            RetentionMode::Cold => "Cold",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AfterPromotionFailure {
    /// Say so (condition, Event, alert); the promoted version keeps serving.
    #[default]
    Alert,
    /// Say so and undo to the retained version.
    Undo,
}

/// The previous stable version while it is retained for an undo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetainedVersion {
    /// The model as it served: what an undo returns to.
    pub model: ModelSpec,
    pub mode: RetentionMode,
    /// When it stopped serving (its successor's promotion).
    pub since: Time,
    /// When its retention ends and it is deprecated.
    pub until: Time,
}

/// A version past its retention: deprecated, and removed at `removeAt` (if set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetiredVersion {
    pub version: String,
    pub deprecated_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_at: Option<Time>,
}

/// An undo asked for and waiting for the retained version's pods (a cold retention).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingUndo {
    /// The request's id (`operations.undo.id`), or `AfterPromotionFailed` for an automatic one.
    pub id: String,
    pub reason: String,
    /// The version it returns to.
    pub version: String,
    pub requested_at: MicroTime,
}

/// The watch on a promoted version during its predecessor's retention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotedWatch {
    /// The promoted version it judges.
    pub version: String,
    /// When it started (the promotion): its analyses fall every interval after this.
    pub since: MicroTime,
    /// When it ends (the retention's end).
    pub until: Time,
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Whether the promoted version failed its gates (`failureLimit` in a row), and stays so
    /// until an analysis passes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<AnalysisRun>,
}
