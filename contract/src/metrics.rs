//! The sidecar's metric contract: the series the controller's built-in gates query.
//!
//! Names are as Prometheus stores them (counters carry `_total`, histograms `_bucket`/`_count`/`_sum`).
//! Every series carries the labels in [`labels`]; their values are bounded (model name, version and
//! role come from the pod's configuration, route from a fixed list, code from a fixed list).

/// Prefix of every sidecar series.
pub const PREFIX: &str = "modelrollout_sidecar";

/// Counter of finished requests, labelled by `route` and `code` (HTTP status).
pub const REQUESTS_TOTAL: &str = "modelrollout_sidecar_requests_total";
/// Histogram of request latency in seconds, labelled by `route`.
pub const REQUEST_DURATION_SECONDS: &str = "modelrollout_sidecar_request_duration_seconds";
/// Counter of label-feedback joins, labelled by `outcome` (one of [`CONFUSION_OUTCOMES`]).
pub const CONFUSION_TOTAL: &str = "modelrollout_sidecar_confusion_total";
/// Counter of decisions served, labelled by `decision` (`positive`/`negative`).
pub const DECISIONS_TOTAL: &str = "modelrollout_sidecar_decisions_total";
/// Histogram of scores served.
pub const SCORE: &str = "modelrollout_sidecar_score";
/// Counter of contract violations, labelled by `feature` (a contract feature name) and `reason`.
pub const CONTRACT_VIOLATIONS_TOTAL: &str = "modelrollout_sidecar_contract_violations_total";
/// Gauge: population stability index per `feature` over the rolling window.
pub const FEATURE_DRIFT_PSI: &str = "modelrollout_sidecar_feature_drift_psi";
/// Gauge: 1 once the model is loaded, verified and warmed up.
pub const READY: &str = "modelrollout_sidecar_ready";

/// Label names shared by every series.
pub mod labels {
    pub const MODEL: &str = "model";
    pub const VERSION: &str = "version";
    pub const ROLE: &str = "role";
    pub const ROUTE: &str = "route";
    pub const CODE: &str = "code";
    pub const OUTCOME: &str = "outcome";
}

/// Values of the `outcome` label of [`CONFUSION_TOTAL`].
pub const CONFUSION_OUTCOMES: [&str; 4] = ["tp", "fp", "tn", "fn"];

/// Values of the `role` label.
pub const ROLES: [&str; 3] = ["stable", "canary", "shadow"];

/// Values of the `route` label of the scoring routes (health and metrics routes are not counted).
pub const SCORING_ROUTES: [&str; 3] = ["predict", "infer", "rank"];
