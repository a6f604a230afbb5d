//! The sidecar's metrics (prometheus-client). Names are the contract in
//! `modelrollout_contract::metrics`; model, version and role are constant labels of the registry,
//! every other label value comes from a fixed set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCode {
    pub route: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Decision {
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Violation {
    pub feature: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabel {
    pub feature: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    pub device: &'static str,
    pub requested: &'static str,
}

/// Latency buckets fine enough for a sub-millisecond p95 (50 µs steps at the bottom).
pub const LATENCY_BUCKETS: [f64; 22] = [
    0.00005, 0.0001, 0.00015, 0.0002, 0.0003, 0.0004, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.08, 0.12, 0.25, 0.5, 1.0,
];

/// The routes counted per request, in the order of [`Metrics::routes`].
pub const ROUTES: [&str; 4] = ["predict", "infer", "rank", "feedback"];

/// One route's series, resolved once: the request path reaches them without hashing a label set
/// under the family's lock.
pub struct RouteSeries {
    pub latency: Histogram,
    /// Requests answered 200 (other codes go through the family).
    pub ok: Counter,
}

pub struct Metrics {
    pub registry: Registry,
    /// Per route of [`ROUTES`].
    pub routes: Vec<RouteSeries>,
    pub requests: Family<RouteCode, Counter>,
    pub latency: Family<RouteLabel, Histogram>,
    pub queue_depth: Gauge,
    pub batch_size: Histogram,
    pub score: Histogram,
    pub decisions: Family<Decision, Counter>,
    pub confusion: Family<Outcome, Counter>,
    pub feedback_unmatched: Family<ReasonLabel, Counter>,
    pub memory_evictions: Counter,
    pub violations: Family<Violation, Counter>,
    pub drift: Family<FeatureLabel, Gauge<f64, AtomicU64>>,
    pub ready: Gauge,
    pub device: Family<DeviceLabel, Gauge>,
    pub load_seconds: Gauge<f64, AtomicU64>,
}

impl Metrics {
    pub fn new(model: &str, version: &str, role: &str) -> Self {
        let mut root = Registry::default();
        let labels = [
            (Cow::Borrowed("model"), Cow::Owned(model.to_string())),
            (Cow::Borrowed("version"), Cow::Owned(version.to_string())),
            (Cow::Borrowed("role"), Cow::Owned(role.to_string())),
        ];
        let requests: Family<RouteCode, Counter> = Family::default();
        let latency: Family<RouteLabel, Histogram> = Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let routes = ROUTES
            .iter()
            .map(|&route| RouteSeries {
                latency: latency.get_or_create(&RouteLabel { route }).clone(),
                ok: requests.get_or_create(&RouteCode { route, code: 200 }).clone(),
            })
            .collect();
        let m = Self {
            registry: Registry::default(),
            routes,
            requests,
            latency,
            queue_depth: Gauge::default(),
            batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
            score: Histogram::new((1..=20).map(|i| i as f64 * 0.05)),
            decisions: Family::default(),
            confusion: Family::default(),
            feedback_unmatched: Family::default(),
            memory_evictions: Counter::default(),
            violations: Family::default(),
            drift: Family::default(),
            ready: Gauge::default(),
            device: Family::default(),
            load_seconds: Gauge::default(),
        };
        {
            let r = root.sub_registry_with_prefix("modelrollout_sidecar").sub_registry_with_labels(labels.into_iter());
            r.register("requests", "Finished requests by route and HTTP status", m.requests.clone());
            r.register("request_duration_seconds", "Request latency by route", m.latency.clone());
            r.register("queue_depth", "Requests waiting for inference", m.queue_depth.clone());
            r.register("batch_size", "Rows per inference batch", m.batch_size.clone());
            r.register("score", "Scores served", m.score.clone());
            r.register("decisions", "Decisions served", m.decisions.clone());
            r.register("confusion", "Label feedback joined to served decisions (tp, fp, tn, fn)", m.confusion.clone());
            r.register(
                "feedback_unmatched",
                "Labels whose prediction was unknown or expired",
                m.feedback_unmatched.clone(),
            );
            r.register(
                "prediction_memory_evictions",
                "Predictions evicted before a label arrived",
                m.memory_evictions.clone(),
            );
            r.register("contract_violations", "Requests refused by the data contract", m.violations.clone());
            r.register("feature_drift_psi", "Population stability index against the reference", m.drift.clone());
            r.register("ready", "1 once the model is verified, loaded and warmed up", m.ready.clone());
            r.register("device", "The device serving the model (1 on the active one)", m.device.clone());
            r.register(
                "model_load_seconds",
                "Time to fetch, verify, load and warm up the model",
                m.load_seconds.clone(),
            );
        }
        Self { registry: root, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelrollout_contract::metrics as names;

    #[test]
    fn exported_names_are_the_contract() {
        let m = Metrics::new("fraud", "v2", "canary");
        m.requests.get_or_create(&RouteCode { route: "predict", code: 200 }).inc();
        m.latency.get_or_create(&RouteLabel { route: "predict" }).observe(0.0004);
        m.confusion.get_or_create(&Outcome { outcome: "fp" }).inc();
        m.decisions.get_or_create(&Decision { decision: "positive" }).inc();
        m.violations.get_or_create(&Violation { feature: "amount".into(), reason: "out_of_range" }).inc();
        m.drift.get_or_create(&FeatureLabel { feature: "amount".into() }).set(0.1);
        m.score.observe(0.3);
        m.ready.set(1);
        let text = m.encode();
        for name in [
            names::REQUESTS_TOTAL,
            names::CONFUSION_TOTAL,
            names::DECISIONS_TOTAL,
            names::CONTRACT_VIOLATIONS_TOTAL,
            names::FEATURE_DRIFT_PSI,
            names::READY,
        ] {
            assert!(text.contains(&format!("{name}{{")), "{name} missing in:\n{text}");
        }
        assert!(text.contains(&format!("{}_bucket{{", names::REQUEST_DURATION_SECONDS)));
        assert!(text.contains(&format!("{}_bucket{{", names::SCORE)));
        assert!(text.contains(r#"model="fraud",version="v2",role="canary""#), "{text}");
        assert!(text.contains(r#"le="0.0005""#), "sub-millisecond buckets");
    }
}
