//! How each stage is judged: the gates, their judges, the reward and Prometheus.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.interval) || duration(self.interval) > duration('0s')",
    "message": "interval must be more than 0s",
    "fieldPath": ".interval",
    "reason": "FieldValueInvalid"
}]))]
pub struct AnalysisSpec {
    /// Time between analyses; also the query window.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    #[serde(default)]
    pub prometheus: PrometheusSpec,
    /// Consecutive failing analyses that roll back.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: u32,
    /// Consecutive inconclusive analyses that trigger `rollback.onInconclusive`.
    #[serde(default = "default_inconclusive_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub inconclusive_limit: u32,
    #[serde(default)]
    pub gates: Gates,
    /// Promote on `minDuration` alone when no gate is set. Without it, a spec with no gates is
    /// refused at apply time (and, if one gets through, its analyses are inconclusive: too little
    /// evidence never promotes). Shown in status as `promotingWithoutGates`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote_without_gates: bool,
    /// The reward that decides an experiment stage's winner (see `Stage.match`); the gates are
    /// its guardrails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<Reward>,
}

/// An experiment's reward: a proportion per arm (click-through, conversion), judged candidate
/// against stable by the sequential judge's anytime-valid interval on their difference, summed
/// over every analysis window of the experiment. The candidate wins once the interval lies wholly
/// beyond `minEffect` in the better direction; stable wins once it lies wholly short of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reward {
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_-]*$"))]
    pub name: String,
    /// PromQL for one arm's proportion over the window (same variables as a custom gate:
    /// `$version`, `$role`, `$interval`, ...).
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// PromQL for the trials behind it over the window (impressions, labelled answers).
    #[schemars(length(min = 1, max = 4096))]
    pub samples_query: String,
    /// Which way is better.
    #[serde(default)]
    pub direction: RewardDirection,
    /// The least improvement worth switching for (same unit as the query, 0.01 = 1 point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_effect: Option<f64>,
    /// The verdict's confidence: a wrong winner at most `1 - confidence` of the time, however
    /// often the controller looks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 0.9999), extend("x-kubernetes-validations" = [{
        "rule": "self >= 0.5 && self <= 0.9999",
        "message": "confidence must be from 0.5 to 0.9999",
        "reason": "FieldValueInvalid"
    }]))]
    pub confidence: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RewardDirection {
    /// Higher is better (click-through, conversion).
    #[default]
    Higher,
    /// Lower is better (abandonment, complaints).
    Lower,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            prometheus: PrometheusSpec::default(),
            failure_limit: default_failure_limit(),
            inconclusive_limit: default_inconclusive_limit(),
            gates: Gates::default(),
            promote_without_gates: false,
            reward: None,
        }
    }
}

fn default_interval() -> Duration {
    duration("1m")
}
fn default_failure_limit() -> u32 {
    2
}
fn default_inconclusive_limit() -> u32 {
    3
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.timeout) || duration(self.timeout) > duration('0s')",
    "message": "timeout must be more than 0s",
    "fieldPath": ".timeout",
    "reason": "FieldValueInvalid"
}]))]
pub struct PrometheusSpec {
    /// Prometheus base URL; the controller's `--prometheus-url` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub address: Option<String>,
    /// Per-query timeout. A query that times out is inconclusive.
    #[serde(default = "default_query_timeout")]
    pub timeout: Duration,
}

impl Default for PrometheusSpec {
    fn default() -> Self {
        Self { address: None, timeout: default_query_timeout() }
    }
}

fn default_query_timeout() -> Duration {
    duration("5s")
}

/// The built-in gates' names, as specs, status, Events and the controller's queries spell them
/// (the CEL rules below list them too).
pub const GATE_ERROR_RATE: &str = "errorRate";
pub const GATE_LATENCY_P95: &str = "latencyP95";
pub const GATE_FALSE_POSITIVE_RATE: &str = "falsePositiveRate";
pub const GATE_CAPTURE_RATE: &str = "captureRate";
pub const GATE_PRECISION: &str = "precision";
pub const GATE_AGREEMENT: &str = "agreement";
pub const GATE_PAIRED: &str = "paired";
pub const GATE_SCORE_DRIFT: &str = "scoreDrift";
pub const GATE_INPUT_DRIFT: &str = "inputDrift";

/// The gates every analysis checks. An unset built-in gate is not checked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.custom) || self.custom.all(a, self.custom.exists_one(b, b.name == a.name))",
    "message": "custom gate names must be unique",
    "fieldPath": ".custom",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.custom) || self.custom.all(c, !(c.name in ['errorRate', 'latencyP95', 'falsePositiveRate', 'captureRate', 'precision', 'agreement', 'paired', 'scoreDrift', 'inputDrift']))",
    "message": "custom gate names must differ from the built-in gates",
    "fieldPath": ".custom",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.latencyP95) || !has(self.latencyP95.judge) || self.latencyP95.judge == 'Threshold'",
    "message": "latencyP95 is not a proportion: only the Threshold judge applies",
    "fieldPath": ".latencyP95.judge",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.errorRate) || ((!has(self.errorRate.max) || self.errorRate.max <= 1.0) && (!has(self.errorRate.maxAboveStable) || self.errorRate.maxAboveStable <= 1.0))",
    "message": "errorRate is a fraction: max and maxAboveStable are at most 1 (0.002 = 0.2%)",
    "fieldPath": ".errorRate",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.falsePositiveRate) || ((!has(self.falsePositiveRate.max) || self.falsePositiveRate.max <= 1.0) && (!has(self.falsePositiveRate.maxAboveStable) || self.falsePositiveRate.maxAboveStable <= 1.0))",
    "message": "falsePositiveRate is a fraction: max and maxAboveStable are at most 1",
    "fieldPath": ".falsePositiveRate",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.captureRate) || ((!has(self.captureRate.min) || (self.captureRate.min >= 0.0 && self.captureRate.min <= 1.0)) && (!has(self.captureRate.maxBelowStable) || self.captureRate.maxBelowStable <= 1.0))",
    "message": "captureRate is a fraction: min is between 0 and 1, maxBelowStable at most 1",
    "fieldPath": ".captureRate",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.precision) || ((!has(self.precision.min) || (self.precision.min >= 0.0 && self.precision.min <= 1.0)) && (!has(self.precision.maxBelowStable) || self.precision.maxBelowStable <= 1.0))",
    "message": "precision is a fraction: min is between 0 and 1, maxBelowStable at most 1",
    "fieldPath": ".precision",
    "reason": "FieldValueInvalid"
}]))]
pub struct Gates {
    /// Share of requests answered 5xx (fraction, 0.002 = 0.2%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<UpperGate>,
    /// 95th-percentile request latency, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95: Option<UpperGate>,
    /// FP / (FP + TN) from label feedback (fraction). Samples are FP + TN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_positive_rate: Option<UpperGate>,
    /// Recall, TP / (TP + FN) from label feedback (fraction). Samples are TP + FN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_rate: Option<LowerGate>,
    /// Precision, TP / (TP + FP) from label feedback (fraction). Samples are TP + FP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<LowerGate>,
    /// On matched requests (scored by stable and by the candidate under one request id, as every
    /// mirrored request is: the evidence service's count), the share whose decisions agree.
    /// Judged in shadow, before any user sees the candidate. Samples are matched requests. Needs
    /// the evidence service; without it the gate is inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<AgreementGate>,
    /// The candidate no worse than stable on the same labelled requests: on labelled matched
    /// requests, the share the candidate alone got right minus the share stable alone got right
    /// is at least `-margin`, judged by the sequential judge on those pairs (the discordant pairs
    /// carry the evidence; pairs both got right or wrong tell the versions apart not at all).
    /// Needs the evidence service; without it the gate is inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired: Option<PairedGate>,
    /// The candidate's scores against stable's on the same matched requests: their population
    /// stability index (ten bins of [0, 1]) since the candidate started, at most `max` (0.1 is a
    /// common "no shift", 0.25 a large one). Samples are matched requests. Needs the evidence
    /// service; without it the gate is inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_drift: Option<DriftGate>,
    /// The candidate's inputs against its model's reference distribution (`artifact.reference`):
    /// the largest population stability index over the features, since the candidate started, at
    /// most `max` (0.1 is a common "no shift", 0.25 a large one): the traffic is not what the model
    /// was trained on. Samples are the candidate's predictions summarised against the reference.
    /// Needs the evidence service and a reference; without them the gate is inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_drift: Option<DriftGate>,
    /// Your own PromQL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub custom: Vec<CustomGate>,
}

/// A metric that must stay low: `value <= max`, `value <= stable + maxAboveStable` and
/// `value <= stable * (1 + maxAboveStableRatio)` (`<` throughout with `comparison: Strict`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.max) || has(self.maxAboveStable) || has(self.maxAboveStableRatio)",
    "message": "set max, maxAboveStable, maxAboveStableRatio or several",
    "reason": "FieldValueRequired"
}, {
    "rule": "!has(self.judge) || self.judge == 'Threshold' || (!has(self.maxAboveStableRatio) && (!has(self.comparison) || self.comparison == 'Inclusive'))",
    "message": "the Sequential judge shows a difference from stable within points (maxAboveStable), inclusively: maxAboveStableRatio and comparison: Strict are for the Threshold judge",
    "reason": "FieldValueInvalid"
}]))]
pub struct UpperGate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max: Option<f64>,
    /// Allowed excess over the stable version measured over the same window, in the metric's
    /// own unit: points of a fraction (0.002 = 0.2 points), milliseconds of latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_above_stable: Option<f64>,
    /// Allowed excess over the stable version as a share of stable's value: 0.1 is "p95 no more
    /// than 10% above stable's".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_above_stable_ratio: Option<f64>,
    /// Whether a value exactly at a limit passes (`Inclusive`, the default: `<=`) or fails
    /// (`Strict`: `<`, as in "error rate < 0.2%").
    #[serde(default, skip_serializing_if = "Comparison::is_inclusive")]
    pub comparison: Comparison,
    /// Fewer samples than this in the window make the gate inconclusive, never a pass
    /// (`Threshold` judge only).
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 0))]
    pub min_samples: u64,
    /// How the gate is judged: `Threshold` (default) or `Sequential` (proportion gates only).
    #[serde(default, skip_serializing_if = "Judge::is_threshold")]
    pub judge: Judge,
    /// The `Sequential` judge's confidence: its chance of a wrong verdict, over the whole rollout
    /// however often it looks, is at most `1 - confidence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 0.9999), extend("x-kubernetes-validations" = [{
        "rule": "self >= 0.5 && self <= 0.9999",
        "message": "confidence must be from 0.5 to 0.9999",
        "reason": "FieldValueInvalid"
    }]))]
    pub confidence: Option<f64>,
}

/// A metric that must stay high: `value >= min`, `value >= stable - maxBelowStable` and
/// `value >= stable * (1 - maxBelowStableRatio)` (`>` throughout with `comparison: Strict`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.min) || has(self.maxBelowStable) || has(self.maxBelowStableRatio)",
    "message": "set min, maxBelowStable, maxBelowStableRatio or several",
    "reason": "FieldValueRequired"
}, {
    "rule": "!has(self.judge) || self.judge == 'Threshold' || (!has(self.maxBelowStableRatio) && (!has(self.comparison) || self.comparison == 'Inclusive'))",
    "message": "the Sequential judge shows a difference from stable within points (maxBelowStable), inclusively: maxBelowStableRatio and comparison: Strict are for the Threshold judge",
    "reason": "FieldValueInvalid"
}]))]
pub struct LowerGate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Allowed shortfall below the stable version in the metric's own unit (0 means "at least as
    /// good as stable"; 0.01 is one point of a fraction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_below_stable: Option<f64>,
    /// Allowed shortfall as a share of stable's value: 0.01 is "within 1% of stable's".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_below_stable_ratio: Option<f64>,
    /// Whether a value exactly at a limit passes (`Inclusive`, the default: `>=`) or fails
    /// (`Strict`: `>`).
    #[serde(default, skip_serializing_if = "Comparison::is_inclusive")]
    pub comparison: Comparison,
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 0))]
    pub min_samples: u64,
    /// How the gate is judged: `Threshold` (default) or `Sequential`.
    #[serde(default, skip_serializing_if = "Judge::is_threshold")]
    pub judge: Judge,
    /// The `Sequential` judge's confidence (see [`UpperGate::confidence`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 0.9999), extend("x-kubernetes-validations" = [{
        "rule": "self >= 0.5 && self <= 0.9999",
        "message": "confidence must be from 0.5 to 0.9999",
        "reason": "FieldValueInvalid"
    }]))]
    pub confidence: Option<f64>,
}

/// Decisions on matched requests that must agree with stable's: `value >= min`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgreementGate {
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min: f64,
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 0))]
    pub min_samples: u64,
}

/// A drift limit: the PSI at most `max`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftGate {
    #[schemars(range(min = 0.0))]
    pub max: f64,
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 0))]
    pub min_samples: u64,
}

/// The paired gate's limit and confidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairedGate {
    /// How much worse than stable the candidate may be, as a share of labelled pairs (0.01 = one
    /// point). More than 0: "no worse" within nothing could never be shown for a candidate equal
    /// to stable.
    #[serde(default = "default_paired_margin")]
    #[schemars(range(min = 0.0001, max = 0.5))]
    pub margin: f64,
    /// The sequential judge's confidence (see [`UpperGate::confidence`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 0.9999), extend("x-kubernetes-validations" = [{
        "rule": "self >= 0.5 && self <= 0.9999",
        "message": "confidence must be from 0.5 to 0.9999",
        "reason": "FieldValueInvalid"
    }]))]
    pub confidence: Option<f64>,
}

fn default_paired_margin() -> f64 {
    0.01
}

/// How a proportion gate is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Judge {
    /// The window's value against the limits once `minSamples` are in: simple, and every look at
    /// a noisy estimate is another chance of a wrong verdict.
    #[default]
    Threshold,
    /// An anytime-valid confidence sequence on the candidate's proportion and its difference from
    /// stable, over every labelled sample since the rollout started: pass once the limits are
    /// shown met, fail once shown broken, inconclusive in between, with at most `1 - confidence`
    /// chance of a wrong verdict however often the controller looks.
    Sequential,
}

impl Judge {
    pub fn is_threshold(&self) -> bool {
        *self == Judge::Threshold
    }
}

/// How a value exactly at a limit is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Comparison {
    /// At the limit passes: `<=` for an upper limit, `>=` for a lower one.
    #[default]
    Inclusive,
    /// At the limit fails: `<` for an upper limit, `>` for a lower one.
    Strict,
}

impl Comparison {
    pub fn is_inclusive(&self) -> bool {
        *self == Comparison::Inclusive
    }
}

/// The `Sequential` judge's confidence when a gate sets none.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

fn default_min_samples() -> u64 {
    50
}

/// A PromQL gate. `query` may use `$namespace`, `$name`, `$model`, `$version`, `$role` and
/// `$interval`; values are substituted as escaped string literals (or a duration for `$interval`),
/// never as raw PromQL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.min) || has(self.max) || has(self.maxAboveStable) || has(self.maxBelowStable) || has(self.maxAboveStableRatio) || has(self.maxBelowStableRatio)",
    "message": "set at least one of min, max, maxAboveStable, maxBelowStable, maxAboveStableRatio and maxBelowStableRatio",
    "reason": "FieldValueRequired"
}]))]
pub struct CustomGate {
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_-]*$"))]
    pub name: String,
    /// PromQL returning one sample.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// PromQL returning the sample count for `minSamples`; the candidate's request count in the
    /// window when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub samples_query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Allowed excess over the stable version's value over the same window (a guardrail such as
    /// "latency no more than 5 ms above stable").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_above_stable: Option<f64>,
    /// Allowed shortfall below the stable version's value ("click-through no more than 2
    /// points below stable").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_below_stable: Option<f64>,
    /// Allowed excess as a share of stable's value (0.1 = "no more than 10% above stable").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_above_stable_ratio: Option<f64>,
    /// Allowed shortfall as a share of stable's value (0.01 = "within 1% of stable").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_below_stable_ratio: Option<f64>,
    /// At a limit exactly: pass (`Inclusive`, the default) or fail (`Strict`).
    #[serde(default, skip_serializing_if = "Comparison::is_inclusive")]
    pub comparison: Comparison,
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 0))]
    pub min_samples: u64,
}
