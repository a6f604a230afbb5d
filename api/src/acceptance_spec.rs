//! Checks before any traffic: a golden set scored by the candidate's own pods, and a load check.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::*;

/// Checks before any traffic (see [`ModelRolloutSpec::acceptance`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.goldenSet) || has(self.load)",
    "message": "acceptance needs goldenSet, load or both",
    "fieldPath": ".goldenSet",
    "reason": "FieldValueRequired"
}]))]
pub struct AcceptanceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden_set: Option<GoldenSetCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadCheck>,
    /// How long the checks may take, all together, before the rollout fails.
    #[serde(default = "default_acceptance_timeout")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) > duration('0s')", "message": "timeout must be more than 0s"}]))]
    pub timeout: Duration,
}

fn default_acceptance_timeout() -> Duration {
    duration("10m")
}

/// Labelled rows scored by the candidate's own pods (through its Service), and by stable's when
/// a limit is relative to stable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.auc) || has(self.accuracy) || has(self.maxScoreDifference) || has(self.maxContractFailureRate)",
    "message": "set at least one of auc, accuracy, maxScoreDifference, maxContractFailureRate",
    "fieldPath": ".auc",
    "reason": "FieldValueRequired"
}]))]
pub struct GoldenSetCheck {
    /// The golden set: JSON `{"threshold": 0.5, "rows": [{"features": {…}, "label": 0|1,
    /// "probability": 0.12}, …]}` (`probability`, the reference score, is optional; `threshold`
    /// too). Fetched over http(s) by the controller and verified against `sha256`.
    pub artifact: GoldenSetArtifact,
    /// The score at or above which a row counts as positive (default: the set's own `threshold`,
    /// else 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: Option<f64>,
    /// Area under the ROC curve of the candidate's scores against the labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auc: Option<GoldenLimit>,
    /// The share of rows whose decision at `threshold` matches the label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<GoldenLimit>,
    /// The largest absolute difference between the candidate's score and a row's reference
    /// `probability` (rows without one are skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_score_difference: Option<f64>,
    /// The largest share of rows the candidate may refuse as breaking its data contract (HTTP 400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_contract_failure_rate: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.uri.startsWith('https://') || self.uri.startsWith('http://')",
    "message": "uri must be an http(s) URL",
    "fieldPath": ".uri",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!self.uri.matches('^https?://([^/@]*@)?[[]?(169[.]254[.]|0[.]0[.]0[.]0|[fF][eE]80:)')",
    "message": "the host is a link-local or unspecified address (the cloud metadata address among them): the controller does not call it",
    "fieldPath": ".uri",
    "reason": "FieldValueForbidden"
}]))]
pub struct GoldenSetArtifact {
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,
    /// Lower-case hex SHA-256 of the file. A file that differs fails the check.
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: String,
}

/// A floor: absolute (`min`), relative to stable scoring the same rows (`maxBelowStable`), or both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.min) || has(self.maxBelowStable)",
    "message": "set min, maxBelowStable or both",
    "fieldPath": ".min",
    "reason": "FieldValueRequired"
}]))]
pub struct GoldenLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_below_stable: Option<f64>,
}

/// Open-loop load against the candidate's Service at `rate` requests a second for `duration`,
/// sent from inside the cluster (the controller's pod) with the golden set's rows as requests (or
/// one row of zeros when there is no golden set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadCheck {
    #[schemars(range(min = 1, max = 5000))]
    pub rate: u32,
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) > duration('0s') && duration(self) <= duration('10m')", "message": "duration must be more than 0s and at most 10m"}]))]
    pub duration: Duration,
    /// The p95 latency the candidate must hold at that rate, as the client sees it.
    pub max_latency_p95: Duration,
    /// The largest share of requests that may fail (non-2xx, timeout, connection error).
    #[serde(default = "default_load_error_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: f64,
}

fn default_load_error_rate() -> f64 {
    0.01
}
