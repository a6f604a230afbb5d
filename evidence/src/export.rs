//! `/metrics`: the stored counts as Prometheus series (names and labels from the contract), read
//! from the store at each scrape, so a restarted service goes on from the committed totals and
//! Prometheus sees no counter reset.

use std::fmt::Write as _;

use modelrollout_contract::evidence::series::{self, labels as l};
use modelrollout_contract::evidence::{Outcome, Paired};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::store::{Count, Snapshot};
use crate::tally::{CANDIDATE_BINS, DELAY_BUCKETS, SCORE_BINS, STABLE_BINS, Series, psi, psi_against};

const DELAY_NAMES: [&str; 9] = ["60", "600", "3600", "21600", "86400", "172800", "345600", "604800", "+Inf"];

/// A stored `detail` as one of the fixed values this build exports (labels stay bounded).
pub fn known_detail(detail: &str) -> Option<&'static str> {
    let fixed = ["", "agree", "disagree"];
    fixed
        .into_iter()
        .chain(Outcome::ALL.map(Outcome::as_str))
        .chain(Paired::ALL.map(Paired::as_str))
        .chain(DELAY_NAMES)
        .chain(CANDIDATE_BINS)
        .chain(STABLE_BINS)
        .find(|d| *d == detail)
}

type Labels = Vec<(&'static str, String)>;

fn base(c: &Count) -> Labels {
    vec![
        (l::NAMESPACE, c.namespace.clone()),
        (l::ROLLOUT, c.rollout.clone()),
        (l::MODEL, c.key.model.clone()),
        (l::VERSION, c.key.version.clone()),
        (l::ROLE, c.key.role.as_str().to_string()),
    ]
}

/// The snapshot, encoded at a scrape.
#[derive(Debug)]
struct Evidence(Snapshot);

/// A family's name as registered: the stored name less `_total` (the encoder adds it back).
fn registered(name: &'static str) -> &'static str {
    name.strip_suffix("_total").unwrap_or(name)
}

impl Evidence {
    fn counters(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &'static str,
        help: &str,
        rows: impl Iterator<Item = (Labels, i64)>,
    ) -> Result<(), std::fmt::Error> {
        let rows: Vec<_> = rows.collect();
        if rows.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(registered(name), help, None, MetricType::Counter)?;
        for (labels, n) in rows {
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(n.max(0) as u64).encode(metric)?;
        }
        Ok(())
    }

    fn of(&self, series: Series) -> impl Iterator<Item = &Count> {
        self.0.counts.iter().filter(move |c| c.key.series == series)
    }
}

impl Collector for Evidence {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        self.counters(
            e,
            series::PREDICTIONS,
            "Predictions recorded",
            self.of(Series::Predictions).map(|c| (base(c), c.n)),
        )?;
        self.counters(
            e,
            series::LABELS_JOINED,
            "Labels joined to a prediction",
            self.of(Series::LabelsJoined).map(|c| (base(c), c.n)),
        )?;
        // Every outcome of every version with predictions, 0 until counted: a series born inside a
        // gate's window would lose its first increments to `increase`.
        let mut outcomes: std::collections::BTreeMap<Labels, [i64; 4]> = Default::default();
        for c in self.of(Series::Predictions) {
            outcomes.entry(base(c)).or_default();
        }
        for c in self.of(Series::Outcomes) {
            if let Some(i) = Outcome::ALL.iter().position(|o| o.as_str() == c.key.detail) {
                outcomes.entry(base(c)).or_default()[i] += c.n;
            }
        }
        self.counters(
            e,
            series::OUTCOMES,
            "Labelled decisions by outcome (tp, fp, tn, fn)",
            outcomes.into_iter().flat_map(|(labels, counts)| {
                Outcome::ALL.into_iter().zip(counts).map(move |(o, n)| {
                    let mut labels = labels.clone();
                    labels.push((l::OUTCOME, o.as_str().to_string()));
                    (labels, n)
                })
            }),
        )?;
        let peer = |c: &Count, key: &'static str| {
            let mut labels = base(c);
            labels.push((l::STABLE_VERSION, c.key.peer.clone()));
            labels.push((key, c.key.detail.to_string()));
            labels
        };
        self.counters(
            e,
            series::MATCHED,
            "Requests scored by stable and the candidate, by agreement of their decisions",
            self.of(Series::Matched).map(|c| (peer(c, l::AGREEMENT), c.n)),
        )?;
        self.counters(
            e,
            series::PAIRED,
            "Labelled matched requests by paired outcome",
            self.of(Series::Paired).map(|c| (peer(c, l::OUTCOME), c.n)),
        )?;
        // The score difference on matched requests: its sum and count, as gauges (a sum can fall;
        // both are kept in the store, so neither resets).
        let diffs: Vec<&Count> = self.of(Series::ScoreDifference).collect();
        if !diffs.is_empty() {
            let labels = |c: &Count| {
                let mut labels = base(c);
                labels.push((l::STABLE_VERSION, c.key.peer.clone()));
                labels
            };
            let mut family = e.encode_descriptor(
                series::SCORE_DIFFERENCE_SUM,
                "Sum of candidate score minus stable score over matched requests",
                None,
                MetricType::Gauge,
            )?;
            for c in &diffs {
                ConstGauge::new(c.total).encode(family.encode_family(&labels(c))?)?;
            }
            let mut family = e.encode_descriptor(
                series::SCORE_DIFFERENCE_COUNT,
                "Matched requests in the score difference sum",
                None,
                MetricType::Gauge,
            )?;
            for c in &diffs {
                ConstGauge::new(c.n).encode(family.encode_family(&labels(c))?)?;
            }
        }
        // Score drift on matched requests: the PSI of the candidate's scores against stable's.
        let mut bins: std::collections::BTreeMap<Labels, ([i64; SCORE_BINS], [i64; SCORE_BINS])> = Default::default();
        for c in self.of(Series::ScoreBins) {
            let mut labels = base(c);
            labels.push((l::STABLE_VERSION, c.key.peer.clone()));
            let e = bins.entry(labels).or_default();
            if let Some(i) = CANDIDATE_BINS.iter().position(|b| *b == c.key.detail) {
                e.0[i] += c.n;
            } else if let Some(i) = STABLE_BINS.iter().position(|b| *b == c.key.detail) {
                e.1[i] += c.n;
            }
        }
        if !bins.is_empty() {
            let mut family = e.encode_descriptor(
                series::SCORE_PSI,
                "PSI of the candidate's scores against stable's on matched requests",
                None,
                MetricType::Gauge,
            )?;
            for (labels, (candidate, stable)) in bins {
                ConstGauge::new(psi(&candidate, &stable)).encode(family.encode_family(&labels)?)?;
            }
        }
        // Input drift: each version's requests against its model's reference, per feature, and
        // how many predictions that is (the features of a reference and its bins are bounded).
        if !self.0.drift.is_empty() {
            let labels = |d: &crate::store::DriftCounts| -> Labels {
                vec![
                    (l::NAMESPACE, d.namespace.clone()),
                    (l::ROLLOUT, d.rollout.clone()),
                    (l::MODEL, d.model.clone()),
                    (l::VERSION, d.version.clone()),
                    (l::ROLE, d.role.as_str().to_string()),
                ]
            };
            let mut family = e.encode_descriptor(
                series::FEATURE_PSI,
                "PSI of each input feature since the version started against its model's reference",
                None,
                MetricType::Gauge,
            )?;
            for d in &self.0.drift {
                for (f, counts) in d.reference.features.iter().zip(&d.counts) {
                    if counts.iter().sum::<i64>() == 0 {
                        continue;
                    }
                    let mut labels = labels(d);
                    labels.push((l::FEATURE, f.name.clone()));
                    ConstGauge::new(psi_against(counts, &f.proportions)).encode(family.encode_family(&labels)?)?;
                }
            }
            self.counters(
                e,
                series::DRIFT_ROWS,
                "Predictions summarised against the model's reference",
                self.0.drift.iter().map(|d| {
                    let rows = d.counts.iter().map(|c| c.iter().sum::<i64>()).max().unwrap_or(0);
                    (labels(d), rows)
                }),
            )?;
        }
        // The label delay histogram, per version: its buckets' counts and the sum of delays.
        let mut delays: std::collections::BTreeMap<Labels, ([u64; 9], f64)> = Default::default();
        for c in self.of(Series::LabelDelay) {
            let Some(i) = DELAY_NAMES.iter().position(|d| *d == c.key.detail) else { continue };
            let e = delays.entry(base(c)).or_default();
            e.0[i] += c.n.max(0) as u64;
            e.1 += c.total;
        }
        if !delays.is_empty() {
            let name = series::LABEL_DELAY;
            let mut family =
                e.encode_descriptor(name, "Seconds from a prediction to its label", None, MetricType::Histogram)?;
            for (labels, (buckets, sum)) in delays {
                let count = buckets.iter().sum();
                let buckets: Vec<(f64, u64)> = DELAY_BUCKETS.iter().copied().zip(buckets).collect();
                let mut metric = family.encode_family(&labels)?;
                metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        self.counters(
            e,
            series::LABELS_DROPPED,
            "Labels not stored, by reason (conflicting, too_old, expired_waiting)",
            self.0.dropped.iter().map(|(ns, r, reason, n)| {
                (vec![(l::NAMESPACE, ns.clone()), (l::ROLLOUT, r.clone()), (l::REASON, reason.clone())], *n)
            }),
        )?;
        if !self.0.waiting.is_empty() {
            let mut family = e.encode_descriptor(
                series::LABELS_WAITING,
                "Labels stored with no prediction yet",
                None,
                MetricType::Gauge,
            )?;
            for (ns, r, n) in &self.0.waiting {
                let labels: Labels = vec![(l::NAMESPACE, ns.clone()), (l::ROLLOUT, r.clone())];
                ConstGauge::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The OpenMetrics text of a snapshot, after the service's own series (`own`).
pub fn render(snapshot: Snapshot, own: &Registry) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Evidence(snapshot)));
    let mut text = String::new();
    // Both registries end in `# EOF`: the first one's is dropped.
    let mut first = String::new();
    if prometheus_client::encoding::text::encode(&mut first, own).is_ok() {
        let _ = write!(text, "{}", first.strip_suffix("# EOF\n").unwrap_or(&first));
    }
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}
