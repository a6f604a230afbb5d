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

pub use modelrollout_contract::metrics::Route;
use modelrollout_contract::metrics::{self as contract, Series, family, labels as label_names};

/// One route's series, resolved once: the request path reaches them without hashing a label set
/// under the family's lock.
pub struct RouteSeries {
    pub latency: Histogram,
    /// Requests answered 200 (other codes go through the family).
    pub ok: Counter,
}

pub struct Metrics {
    pub registry: Registry,
    /// Per route of [`Route::ALL`], by [`Route::index`].
    pub routes: Vec<RouteSeries>,
    pub requests: Family<RouteCode, Counter>,
    pub latency: Family<RouteLabel, Histogram>,
    pub queue_depth: Gauge,
    /// Requests skipped before inference because their client had gone.
    pub cancelled: Counter,
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
    pub evidence_records: Family<Outcome, Counter>,
    pub evidence_queue: Gauge,
}

impl Metrics {
    pub fn new(model: &str, version: &str, role: &str) -> Self {
        let mut root = Registry::default();
        let labels = [
            (Cow::Borrowed(label_names::MODEL), Cow::Owned(model.to_string())),
            (Cow::Borrowed(label_names::VERSION), Cow::Owned(version.to_string())),
            (Cow::Borrowed(label_names::ROLE), Cow::Owned(role.to_string())),
        ];
        let requests: Family<RouteCode, Counter> = Family::default();
        let latency: Family<RouteLabel, Histogram> = Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let routes = Route::ALL
            .iter()
            .map(|r| r.as_str())
            .map(|route| RouteSeries {
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
            cancelled: Counter::default(),
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
            evidence_records: Family::default(),
            evidence_queue: Gauge::default(),
        };
        {
            let r = root.sub_registry_with_prefix(contract::PREFIX).sub_registry_with_labels(labels.into_iter());
            fn register(r: &mut Registry, s: Series, metric: impl prometheus_client::registry::Metric) {
                r.register(s.short, s.help, metric);
            }
            register(r, family::REQUESTS, m.requests.clone());
            register(r, family::REQUEST_DURATION, m.latency.clone());
            register(r, family::QUEUE_DEPTH, m.queue_depth.clone());
            register(r, family::CANCELLED, m.cancelled.clone());
            register(r, family::BATCH_SIZE, m.batch_size.clone());
            register(r, family::SCORE, m.score.clone());
            register(r, family::DECISIONS, m.decisions.clone());
            register(r, family::CONFUSION, m.confusion.clone());
            register(r, family::FEEDBACK_UNMATCHED, m.feedback_unmatched.clone());
            register(r, family::MEMORY_EVICTIONS, m.memory_evictions.clone());
            register(r, family::CONTRACT_VIOLATIONS, m.violations.clone());
            register(r, family::FEATURE_DRIFT_PSI, m.drift.clone());
            register(r, family::READY, m.ready.clone());
            register(r, family::DEVICE, m.device.clone());
            register(r, family::MODEL_LOAD_SECONDS, m.load_seconds.clone());
            register(r, family::EVIDENCE_RECORDS, m.evidence_records.clone());
            register(r, family::EVIDENCE_QUEUE, m.evidence_queue.clone());
        }
        // Every outcome series exists from the start, at 0: a series born inside a gate's window
        // loses its first increments to Prometheus's `increase` (it has no earlier sample), which
        // skewed a new candidate's first false-positive and capture rates.
        for o in contract::Outcome::ALL {
            let _ = m.confusion.get_or_create(&Outcome { outcome: o.as_str() }).get();
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

    #[test]
    fn exported_names_are_the_contract() {
        let m = Metrics::new("fraud", "v2", "canary");
        m.requests.get_or_create(&RouteCode { route: Route::Predict.as_str(), code: 500 }).inc();
        m.confusion.get_or_create(&Outcome { outcome: contract::Outcome::FalsePositive.as_str() }).inc();
        m.decisions.get_or_create(&Decision { decision: "positive" }).inc();
        m.feedback_unmatched.get_or_create(&ReasonLabel { reason: "unknown_id" }).inc();
        m.violations.get_or_create(&Violation { feature: "amount".into(), reason: "out_of_range" }).inc();
        m.drift.get_or_create(&FeatureLabel { feature: "amount".into() }).set(0.1);
        m.device.get_or_create(&DeviceLabel { device: "cpu", requested: "cpu" }).set(1);
        m.evidence_records.get_or_create(&Outcome { outcome: "sent" }).inc();
        let text = m.encode();
        // A series line (`name{labels} value`), not the HELP and TYPE lines, which name the family
        // whether or not anything was recorded.
        for s in contract::SERIES {
            let series = match s.kind {
                contract::Kind::Histogram => format!("{}_bucket{{", s.name),
                _ => format!("{}{{", s.name),
            };
            assert!(text.lines().any(|l| l.starts_with(&series)), "{series} missing in:\n{text}");
            for label in s.labels {
                assert!(
                    text.lines().any(|l| l.starts_with(&series) && l.contains(&format!("{label}=\""))),
                    "{} has no {label} label:\n{text}",
                    s.name
                );
            }
        }
        assert!(text.contains(r#"model="fraud",version="v2",role="canary""#), "{text}");
        assert!(text.contains(r#"le="0.0005""#), "sub-millisecond buckets");
    }
}
