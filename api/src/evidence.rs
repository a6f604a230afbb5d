//! The evidence a rollout's status carries: analyses and their gates, acceptance results, webhook
//! answers, an experiment's reward.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::*;

/// An experiment stage as it runs, and its result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    pub stage: String,
    /// Which requests reach the candidate, for people.
    pub rule: String,
    /// The share of user keys the candidate gets (`keyShare` only, after rounding to buckets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_share_percent: Option<f64>,
    /// The gates that stop the experiment when they fail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<String>,
    /// The reward's evidence and verdict (absent before the first analysis, or without a reward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<RewardResult>,
}

/// The reward's evidence so far: counts, intervals, the effect and the winner once shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewardResult {
    pub name: String,
    pub direction: RewardDirection,
    /// Candidate minus stable (the estimate), in the query's unit.
    pub effect: f64,
    /// Events and trials per arm, the candidate's interval, the difference's interval and the
    /// samples still needed, at `confidence`.
    pub evidence: SequentialEvidence,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<Arm>,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Arm {
    Stable,
    Candidate,
}

/// A gating webhook's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookResult {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: WebhookKind,
    /// The candidate version it was asked about.
    pub version: String,
    /// Whether it answered 2xx.
    pub ok: bool,
    /// The HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    pub message: String,
    pub attempts: u32,
    pub time: Time,
}

/// A rollout that ended, as its postRollout webhooks hear of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndedRollout {
    pub version: String,
    pub outcome: Outcome,
    pub message: String,
}

/// The acceptance checks of one candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptanceStatus {
    /// The candidate checked (with `sha256`): results never carry over to another build.
    pub version: String,
    pub sha256: String,
    pub start_time: Time,
    /// Absent while the checks run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// One result per limit, e.g. `goldenSet.auc`, `load.latencyP95`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<GateResult>,
    /// What was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden_set: Option<GoldenSetMeasurement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadMeasurement>,
    /// Why the checks could not run, when they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A golden set as scored by one version's pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoldenScores {
    /// Rows scored (rows refused for their contract are not).
    pub rows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// The largest |score − reference probability| over rows with a reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_score_difference: Option<f64>,
    /// Rows refused as breaking the data contract (HTTP 400), over all rows.
    pub contract_failure_rate: f64,
}

/// The golden set's results: the candidate's, and stable's when a limit is relative to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoldenSetMeasurement {
    pub rows: u64,
    pub threshold: f64,
    pub candidate: GoldenScores,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<GoldenScores>,
}

/// What the load check saw at the client.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadMeasurement {
    pub requests: u64,
    pub errors: u64,
    /// Requests a second actually sent (an open loop that fell behind sends fewer).
    pub achieved_rate: f64,
    pub latency_p50_seconds: f64,
    pub latency_p95_seconds: f64,
}

/// One analysis: every gate's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRun {
    /// When it was taken, to the microsecond: the next analysis's window starts here.
    pub time: MicroTime,
    pub stage_index: u32,
    pub verdict: Verdict,
    /// Which gate set the stage used: the rollout's, or the stage's own.
    #[serde(default, skip_serializing_if = "GateSet::is_rollout")]
    pub gate_set: GateSet,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResult>,
}

/// Where a stage's gates come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GateSet {
    /// `analysis.gates`, as the rollout sets them.
    #[default]
    Rollout,
    /// The stage's `gates.replace`.
    StageReplaced,
    /// `analysis.gates` with the stage's `gates.add` and `gates.remove`.
    StageAdjusted,
    /// After the promotion: `afterPromotion.gates`, or the last stage's.
    AfterPromotion,
}

impl GateSet {
    pub const ALL: [GateSet; 4] =
        [GateSet::Rollout, GateSet::StageReplaced, GateSet::StageAdjusted, GateSet::AfterPromotion];

    pub fn is_rollout(&self) -> bool {
        *self == GateSet::Rollout
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GateSet::Rollout => "Rollout",
            GateSet::StageReplaced => "StageReplaced",
            GateSet::StageAdjusted => "StageAdjusted",
            GateSet::AfterPromotion => "AfterPromotion",
        }
    }

    /// For people: `the rollout's gates`, `the stage's own gates`, ...
    pub fn describe(self) -> &'static str {
        match self {
            GateSet::Rollout => "the rollout's gates",
            GateSet::StageReplaced => "the stage's own gates (replace)",
            GateSet::StageAdjusted => "the rollout's gates with the stage's add/remove",
            GateSet::AfterPromotion => "the gates after the promotion",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateResult {
    pub name: String,
    pub verdict: Verdict,
    /// The candidate's value (absent when there was none to read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The stable version's value over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_value: Option<f64>,
    /// The effective limit the value was judged against, e.g. `<= 0.002` or `>= 0.91`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// The effective numeric limit: the tightest upper bound (or, for gates with only lower limits,
    /// the tightest lower bound) after relative limits are resolved against stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<f64>,
    pub message: String,
    /// The `Sequential` judge's evidence so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialEvidence>,
}

/// What the sequential judge has seen since the rollout started, and what it shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequentialEvidence {
    pub confidence: f64,
    /// The candidate's events (false positives, captures, errors) and trials (labelled samples,
    /// requests), summed over every analysis window since the rollout started.
    pub candidate: Counts,
    pub stable: Counts,
    /// Where the candidate's proportion lies, at `confidence`, whenever it is looked at.
    pub candidate_interval: Interval,
    /// Where candidate minus stable lies (for relative limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difference_interval: Option<Interval>,
    /// About how many more candidate trials would settle the verdict, were the estimates to hold;
    /// absent once settled, or when an estimate sits on its limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_samples: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub events: u64,
    pub trials: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "Pass",
            Verdict::Fail => "Fail",
            Verdict::Inconclusive => "Inconclusive",
            Verdict::Error => "Error",
        }
    }
}

impl AcceptanceStatus {
    /// The failing checks (or why none ran), else every check, for messages and history.
    pub fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        let failing: Vec<_> = self.checks.iter().filter(|c| c.verdict != Verdict::Pass).collect();
        let shown = if failing.is_empty() { self.checks.iter().collect() } else { failing };
        shown.iter().map(|c| format!("{} {}", c.name, c.message)).collect::<Vec<_>>().join("; ")
    }
}
