//! What the sidecars, label posters and the controller agree on with the evidence service: the
//! records it takes, the paths it takes them on, the answers it gives, and the series it exports
//! (which the controller's quality gates query).
//!
//! The evidence service owns the join of labels to predictions for the whole cluster: a label is
//! posted once, to the service, by whoever has it, possibly days after the prediction, and is
//! joined to every prediction of that request id in the rollout: stable's and the candidate's
//! alike (a mirrored request is scored by both under one id: a *matched* request).

use serde::{Deserialize, Serialize};

use crate::Role;

/// The HTTP paths of the evidence service.
pub mod paths {
    /// `POST` a [`super::PredictionBatch`] (sidecars).
    pub const PREDICTIONS: &str = "/v1/predictions";
    /// `POST` a [`super::LabelBatch`] for one rollout: `/v1/namespaces/{namespace}/rollouts/{rollout}/labels`.
    pub fn labels(namespace: &str, rollout: &str) -> String {
        format!("/v1/namespaces/{namespace}/rollouts/{rollout}/labels")
    }
    /// The route pattern of [`labels`] (axum's syntax).
    pub const LABELS_ROUTE: &str = "/v1/namespaces/{namespace}/rollouts/{rollout}/labels";
    /// `PUT` a [`super::ReferenceRecord`]: a model version's reference distribution (sidecars,
    /// once at start; the same record again changes nothing).
    pub const REFERENCES: &str = "/v1/references";
    /// `POST` CloudEvents as KServe's inference logger sends them (binary mode).
    pub const CLOUDEVENTS: &str = "/v1/cloudevents";
    pub const METRICS: &str = "/metrics";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
}

/// What a caller must be allowed to do (a SubjectAccessReview in the records' namespace): `create`
/// on the subresource of `modelrollouts.modelrollout.dev` that names what it writes.
pub mod access {
    pub const GROUP: &str = "modelrollout.dev";
    pub const RESOURCE: &str = "modelrollouts";
    pub const VERB: &str = "create";
    /// Posting labels.
    pub const LABELS: &str = "labels";
    /// Sending prediction records (the sidecars' service account).
    pub const PREDICTIONS: &str = "predictions";
}

/// The most records one batch may carry; a larger batch is refused whole (413).
pub const MAX_BATCH: usize = 10_000;
/// The longest request id the service stores (longer ones are refused, naming the field).
pub const MAX_ID_LEN: usize = 128;

/// The most features a reference may describe, and bins per feature: the input drift series'
/// labels stay bounded by them.
pub const MAX_REFERENCE_FEATURES: usize = 64;
pub const MAX_REFERENCE_BINS: usize = 64;
/// A prediction's bin for a feature whose value was missing (null or NaN): not counted.
pub const BIN_MISSING: u16 = u16::MAX;

/// A model's reference distribution: per numeric input feature, quantile bins of its training
/// data (written by `scripts/make_models.py` beside each model, as `<model>.reference.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub features: Vec<FeatureReference>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureReference {
    pub name: String,
    /// What is binned: the value (numeric features), or the length in characters (text).
    #[serde(default, skip_serializing_if = "Measure::is_value")]
    pub measure: Measure,
    /// Inner bin edges, ascending; bins are (-inf, e0], (e0, e1], ..., (en, inf).
    pub edges: Vec<f64>,
    /// The reference's share in each bin: one more than `edges`.
    pub proportions: Vec<f64>,
}

/// What a reference feature's bins are of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    #[default]
    Value,
    /// A text feature's length in characters.
    Length,
}

impl Measure {
    pub fn is_value(&self) -> bool {
        *self == Measure::Value
    }
}

impl FeatureReference {
    /// The bin `x` falls in.
    pub fn bin(&self, x: f64) -> u16 {
        if x.is_nan() { BIN_MISSING } else { self.edges.partition_point(|e| *e < x) as u16 }
    }
}

impl Reference {
    /// Why this reference cannot be used, naming the feature, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.features.len() > MAX_REFERENCE_FEATURES {
            return Err(format!("{} features, at most {MAX_REFERENCE_FEATURES}", self.features.len()));
        }
        for (i, f) in self.features.iter().enumerate() {
            let at = format!("features[{i}] ({})", f.name);
            if f.proportions.len() != f.edges.len() + 1 {
                return Err(format!("{at}: {} proportions for {} edges", f.proportions.len(), f.edges.len()));
            }
            if f.proportions.len() > MAX_REFERENCE_BINS {
                return Err(format!("{at}: {} bins, at most {MAX_REFERENCE_BINS}", f.proportions.len()));
            }
            if f.edges.iter().any(|e| !e.is_finite()) || f.edges.windows(2).any(|w| w[0] > w[1]) {
                return Err(format!("{at}: edges must be finite and ascending"));
            }
            let sum: f64 = f.proportions.iter().sum();
            if f.proportions.iter().any(|p| !(0.0..=1.0).contains(p)) || (sum - 1.0).abs() > 1e-3 {
                return Err(format!("{at}: proportions must be shares that sum to 1 (sum {sum})"));
            }
        }
        Ok(())
    }
}

/// A model version's reference, as its sidecars send it: the features in the order of every
/// [`PredictionRecord::bins`] of that version, and the digest of the artifact it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceRecord {
    pub namespace: String,
    pub rollout: String,
    pub model: String,
    pub version: String,
    /// The reference artifact's SHA-256 (verified by the sidecar that read it). A different digest
    /// for the same version replaces the reference and restarts that version's input drift counts.
    pub sha256: String,
    pub reference: Reference,
}

/// One prediction as a sidecar served it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictionRecord {
    /// The request id (`x-request-id`, or the sidecar's own): what labels and matched requests join on.
    pub request_id: String,
    /// Milliseconds since the Unix epoch, when the prediction was served.
    pub time_ms: i64,
    pub decision: bool,
    pub score: f64,
    /// Per feature of the version's [`ReferenceRecord`], in its order, the bin the value fell in
    /// ([`BIN_MISSING`] when it had none): the compact summary that input drift is computed from.
    /// Empty when the model has no reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bins: Vec<u16>,
}

/// Prediction records of one sidecar: who served them, and the records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictionBatch {
    pub namespace: String,
    pub rollout: String,
    pub model: String,
    pub version: String,
    pub role: Role,
    pub records: Vec<PredictionRecord>,
}

/// One label: the true outcome of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Label {
    pub request_id: String,
    /// True for the positive class (fraud, toxic, churned).
    pub label: bool,
    /// When the outcome was known, milliseconds since the epoch; the time it was received if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelBatch {
    pub labels: Vec<Label>,
}

/// The answer to a label batch: every label is counted in exactly one of these.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelAnswer {
    /// New labels, stored (joined now, or waiting for their prediction).
    pub recorded: u64,
    /// Of those, joined to at least one prediction now.
    pub joined: u64,
    /// The same label as one already stored: counted once.
    pub duplicates: u64,
    /// A different label for a request id already labelled: the first label stands (see README,
    /// "Corrected labels"); each is counted and listed here, at most 100.
    pub conflicting: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// Older than the horizon: not stored.
    pub too_old: u64,
}

/// The answer to a prediction batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictionAnswer {
    pub recorded: u64,
    /// Already stored (a retried batch): counted once.
    pub duplicates: u64,
    /// Joined to a label that was waiting for them.
    pub joined: u64,
}

/// The evidence service's series (the controller's quality gates read these). Every series
/// carries `namespace`, `rollout`, `model`, `version` and `role`.
pub mod series {
    pub const PREDICTIONS: &str = "modelrollout_evidence_predictions_total";
    pub const LABELS_JOINED: &str = "modelrollout_evidence_labels_joined_total";
    /// `outcome`: tp, fp, tn, fn.
    pub const OUTCOMES: &str = "modelrollout_evidence_outcomes_total";
    /// Seconds from the prediction to its label (histogram).
    pub const LABEL_DELAY: &str = "modelrollout_evidence_label_delay_seconds";
    /// Matched requests (scored by stable and the candidate), on the candidate's series with
    /// `stable_version`; `agreement`: agree, disagree.
    pub const MATCHED: &str = "modelrollout_evidence_matched_total";
    /// Labelled matched requests; `outcome`: both_right, only_candidate_right, only_stable_right, both_wrong.
    pub const PAIRED: &str = "modelrollout_evidence_paired_outcomes_total";
    /// The sum of (candidate score - stable score) over matched requests (gauge), and their count.
    pub const SCORE_DIFFERENCE_SUM: &str = "modelrollout_evidence_score_difference_sum";
    pub const SCORE_DIFFERENCE_COUNT: &str = "modelrollout_evidence_score_difference_count";
    /// The population stability index of the candidate's scores against stable's on matched
    /// requests, since the candidate started (gauge, on the candidate's series with `stable_version`).
    pub const SCORE_PSI: &str = "modelrollout_evidence_score_psi";
    /// Input drift: the population stability index of each `feature` of the version's requests
    /// since it started against its model's reference distribution (gauge).
    pub const FEATURE_PSI: &str = "modelrollout_evidence_feature_psi";
    /// Predictions summarised against the reference (the input drift's sample size).
    pub const DRIFT_ROWS: &str = "modelrollout_evidence_drift_rows_total";
    /// Labels stored with no prediction yet, per namespace and rollout (gauge).
    pub const LABELS_WAITING: &str = "modelrollout_evidence_labels_waiting";
    /// Labels refused or not stored, by `reason`: conflicting, too_old, expired_waiting.
    pub const LABELS_DROPPED: &str = "modelrollout_evidence_labels_dropped_total";

    pub mod labels {
        pub const NAMESPACE: &str = "namespace";
        pub const ROLLOUT: &str = "rollout";
        pub const MODEL: &str = "model";
        pub const VERSION: &str = "version";
        pub const ROLE: &str = "role";
        pub const OUTCOME: &str = "outcome";
        pub const STABLE_VERSION: &str = "stable_version";
        pub const AGREEMENT: &str = "agreement";
        pub const REASON: &str = "reason";
        pub const FEATURE: &str = "feature";
    }
}

/// The outcome of a labelled decision: the sidecars' own (`tp`, `fp`, `tn`, `fn`).
pub use crate::metrics::Outcome;

/// The labelled outcome of a matched request, stable's decision beside the candidate's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Paired {
    BothRight,
    OnlyCandidateRight,
    OnlyStableRight,
    BothWrong,
}

impl Paired {
    pub const ALL: [Paired; 4] =
        [Paired::BothRight, Paired::OnlyCandidateRight, Paired::OnlyStableRight, Paired::BothWrong];

    pub fn of(candidate_right: bool, stable_right: bool) -> Self {
        match (candidate_right, stable_right) {
            (true, true) => Paired::BothRight,
            (true, false) => Paired::OnlyCandidateRight,
            (false, true) => Paired::OnlyStableRight,
            (false, false) => Paired::BothWrong,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Paired::BothRight => "both_right",
            Paired::OnlyCandidateRight => "only_candidate_right",
            Paired::OnlyStableRight => "only_stable_right",
            Paired::BothWrong => "both_wrong",
        }
    }
}
