//! The sidecar's metric contract: every series it exports, by the name Prometheus stores, and the
//! label values the controller's gates match on. The sidecar registers each series from
//! [`SERIES`]; the controller's queries use the same constants; the README's list is checked
//! against [`SERIES`] by a test.
//!
//! Every series carries the labels [`labels::MODEL`], [`labels::VERSION`] and [`labels::ROLE`];
//! their values are bounded (model name, version and role come from the pod's launch), and every
//! other label value comes from a fixed list here.

/// Prefix of every sidecar series.
pub const PREFIX: &str = "modelrollout_sidecar";

/// What kind of metric a series is (the suffixes Prometheus stores follow from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Stored as `<name>_total`.
    Counter,
    Gauge,
    /// Stored as `<name>_bucket`, `<name>_count`, `<name>_sum`.
    Histogram,
}

/// One exported series family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    /// The name under [`PREFIX`] it is registered with (no `_total`).
    pub short: &'static str,
    /// The name Prometheus stores (with `_total` for counters).
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Its own labels, besides model, version and role.
    pub labels: &'static [&'static str],
}

macro_rules! series {
    ($(#[$doc:meta])* $const:ident: $kind:ident $short:literal [$($label:literal),*] $help:literal) => {
        $(#[$doc])*
        pub const $const: Series = Series {
            short: $short,
            name: series!(@name $kind $short),
            kind: Kind::$kind,
            help: $help,
            labels: &[$($label),*],
        };
    };
    (@name Counter $short:literal) => { concat!("modelrollout_sidecar_", $short, "_total") };
    (@name $other:ident $short:literal) => { concat!("modelrollout_sidecar_", $short) };
}

/// The families, each once.
pub mod family {
    use super::{Kind, Series};
    series!(
        /// Finished requests, by route and HTTP status.
        REQUESTS: Counter "requests" ["route", "code"] "Finished requests by route and HTTP status");
    series!(
        /// Request latency in seconds, by route.
        REQUEST_DURATION: Histogram "request_duration_seconds" ["route"] "Request latency by route");
    series!(QUEUE_DEPTH: Gauge "queue_depth" [] "Requests waiting for inference");
    series!(CANCELLED: Counter "cancelled" [] "Requests skipped before inference because their client had gone");
    series!(BATCH_SIZE: Histogram "batch_size" [] "Rows per inference batch");
    series!(SCORE: Histogram "score" [] "Scores served");
    series!(DECISIONS: Counter "decisions" ["decision"] "Decisions served");
    series!(
        /// Label feedback joined to served decisions, by `outcome` (one of [`super::Outcome`]).
        CONFUSION: Counter "confusion" ["outcome"] "Label feedback joined to served decisions (tp, fp, tn, fn)");
    series!(FEEDBACK_UNMATCHED: Counter "feedback_unmatched" ["reason"] "Labels whose prediction was unknown or expired");
    series!(MEMORY_EVICTIONS: Counter "prediction_memory_evictions" [] "Predictions evicted before a label arrived");
    series!(CONTRACT_VIOLATIONS: Counter "contract_violations" ["feature", "reason"] "Requests refused by the data contract");
    series!(FEATURE_DRIFT_PSI: Gauge "feature_drift_psi" ["feature"] "Population stability index against the reference");
    series!(READY: Gauge "ready" [] "1 once the model is verified, loaded and warmed up");
    series!(DEVICE: Gauge "device" ["device", "requested"] "The device serving the model (1 on the active one)");
    series!(MODEL_LOAD_SECONDS: Gauge "model_load_seconds" [] "Time to fetch, verify, load and warm up the model");
    series!(
        /// Prediction records for the evidence service, by `outcome`: sent, dropped (its bounded
        /// queue was full: the service down or slow), refused (answered 4xx).
        EVIDENCE_RECORDS: Counter "evidence_records" ["outcome"] "Prediction records for the evidence service: sent, dropped, refused");
    series!(EVIDENCE_QUEUE: Gauge "evidence_queue_depth" [] "Prediction records waiting to be sent to the evidence service");
}

/// Every family the sidecar exports.
pub const SERIES: [Series; 17] = [
    family::REQUESTS,
    family::REQUEST_DURATION,
    family::QUEUE_DEPTH,
    family::CANCELLED,
    family::BATCH_SIZE,
    family::SCORE,
    family::DECISIONS,
    family::CONFUSION,
    family::FEEDBACK_UNMATCHED,
    family::MEMORY_EVICTIONS,
    family::CONTRACT_VIOLATIONS,
    family::FEATURE_DRIFT_PSI,
    family::READY,
    family::DEVICE,
    family::MODEL_LOAD_SECONDS,
    family::EVIDENCE_RECORDS,
    family::EVIDENCE_QUEUE,
];

/// Stored names the gates query.
pub const REQUESTS_TOTAL: &str = family::REQUESTS.name;
pub const REQUEST_DURATION_SECONDS: &str = family::REQUEST_DURATION.name;
pub const CONFUSION_TOTAL: &str = family::CONFUSION.name;

/// Label names.
pub mod labels {
    /// Put on every series by the scrape (Prometheus' pod relabelling), not by the sidecar.
    pub const NAMESPACE: &str = "namespace";
    pub const MODEL: &str = "model";
    pub const VERSION: &str = "version";
    pub const ROLE: &str = "role";
    pub const ROUTE: &str = "route";
    pub const CODE: &str = "code";
    pub const OUTCOME: &str = "outcome";
}

/// The routes counted per request: the `route` label's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Predict,
    Infer,
    Rank,
    Feedback,
    /// The OIP gRPC service's ModelInfer.
    GrpcInfer,
    /// A published Classify API (`contract.apis`, e.g. `POST /moderate`); a published Rank API
    /// counts as [`Route::Rank`].
    Classify,
}

impl Route {
    pub const ALL: [Route; 6] =
        [Route::Predict, Route::Infer, Route::Rank, Route::Feedback, Route::GrpcInfer, Route::Classify];
    /// The routes that score requests: the ones the gates count.
    pub const SCORING: [Route; 5] = [Route::Predict, Route::Infer, Route::Rank, Route::GrpcInfer, Route::Classify];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Predict => "predict",
            Route::Infer => "infer",
            Route::Rank => "rank",
            Route::Feedback => "feedback",
            Route::GrpcInfer => "grpc_infer",
            Route::Classify => "classify",
        }
    }

    /// Its index in [`Route::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A PromQL regular expression matching the scoring routes: `predict|infer|rank|grpc_infer|classify`.
    pub fn scoring_regex() -> String {
        Self::SCORING.map(Route::as_str).join("|")
    }
}

/// The `outcome` label of the confusion counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    TruePositive,
    FalsePositive,
    TrueNegative,
    FalseNegative,
}

impl Outcome {
    pub const ALL: [Outcome; 4] =
        [Outcome::TruePositive, Outcome::FalsePositive, Outcome::TrueNegative, Outcome::FalseNegative];

    /// The outcome of a served decision once its label is known.
    pub fn of(decided_positive: bool, labelled_positive: bool) -> Self {
        match (decided_positive, labelled_positive) {
            (true, true) => Outcome::TruePositive,
            (true, false) => Outcome::FalsePositive,
            (false, false) => Outcome::TrueNegative,
            (false, true) => Outcome::FalseNegative,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::TruePositive => "tp",
            Outcome::FalsePositive => "fp",
            Outcome::TrueNegative => "tn",
            Outcome::FalseNegative => "fn",
        }
    }

    /// Whether the decision was right.
    pub fn right(self) -> bool {
        matches!(self, Outcome::TruePositive | Outcome::TrueNegative)
    }
}

/// The `decision` label of the decisions counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    Positive,
    Negative,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Positive => "positive",
            Decision::Negative => "negative",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_follow_the_kind() {
        for s in SERIES {
            let expected = match s.kind {
                Kind::Counter => format!("{PREFIX}_{}_total", s.short),
                _ => format!("{PREFIX}_{}", s.short),
            };
            assert_eq!(s.name, expected);
        }
        let mut names: Vec<_> = SERIES.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SERIES.len(), "each family once");
    }

    #[test]
    fn route_indices_follow_the_list() {
        for (i, r) in Route::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        assert_eq!(Route::scoring_regex(), "predict|infer|rank|grpc_infer|classify");
    }

    /// The README's metric contract is this list, word for word.
    #[test]
    fn the_readme_lists_exactly_these_series() {
        let readme = include_str!("../../README.md");
        let start = readme.find("<!-- sidecar-metrics:begin -->").expect("README marker");
        let end = readme.find("<!-- sidecar-metrics:end -->").expect("README marker");
        let listed: Vec<String> = readme[start..end]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with(PREFIX))
            .map(str::to_string)
            .collect();
        let expected: Vec<String> =
            SERIES
                .iter()
                .map(|s| {
                    if s.labels.is_empty() {
                        s.name.to_string()
                    } else {
                        format!("{}{{{}}}", s.name, s.labels.join(","))
                    }
                })
                .collect();
        assert_eq!(listed, expected, "README between the sidecar-metrics markers");
    }
}
