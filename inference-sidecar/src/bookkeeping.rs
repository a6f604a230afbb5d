//! What the sidecar records about every scored row: the score and decision metrics, the feature
//! drift window, and the prediction memory that label feedback joins to.
//!
//! It runs on the inference thread, once per batch, before the batch is answered: a batch takes the
//! drift and memory locks once instead of once per request, and a label can never arrive for a
//! prediction that is not yet remembered. Every request of the batch waits for it, so it allocates
//! nothing per row and looks no metric up by its labels.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::drift::Drift;
use crate::evidence::EvidenceQueue;
use crate::feedback::PredictionMemory;
use prometheus_client::metrics::counter::Counter;

use crate::metrics::{self, Metrics};
use crate::validate::Rows;
use modelrollout_contract::metrics::Decision;

/// How the prediction memory names a request's rows.
#[derive(Clone, Debug)]
pub struct RowIds {
    request_id: Arc<str>,
    always_indexed: bool,
}

impl RowIds {
    /// The request id for a single row, `id/i` for row `i` of several.
    pub fn instances(request_id: Arc<str>) -> Self {
        Self { request_id, always_indexed: false }
    }

    /// `id/i` for every row, even a single one (ranking candidates).
    pub fn candidates(request_id: Arc<str>) -> Self {
        Self { request_id, always_indexed: true }
    }

    /// The id row `i` of `n` is remembered (and answered) under.
    pub fn id(&self, n: usize, i: usize) -> Cow<'_, str> {
        instance_id(&self.request_id, if self.always_indexed { 0 } else { n }, i)
    }
}

/// The id of instance `i` of `n` in a request: the request id itself when it is the only one.
pub fn instance_id(request_id: &str, n: usize, i: usize) -> Cow<'_, str> {
    if n == 1 { Cow::Borrowed(request_id) } else { Cow::Owned(format!("{request_id}/{i}")) }
}

pub struct Bookkeeping {
    pub threshold: f32,
    pub metrics: Arc<Metrics>,
    pub memory: Arc<PredictionMemory>,
    pub drift: Arc<Mutex<Option<Drift>>>,
    /// Where every scored row goes for the cluster's evidence service, when there is one.
    pub evidence: Option<EvidenceQueue>,
    /// The two decision counters, looked up in their family once (both series exist from the start).
    positive: Counter,
    negative: Counter,
}

impl Bookkeeping {
    pub fn new(
        threshold: f32,
        metrics: Arc<Metrics>,
        memory: Arc<PredictionMemory>,
        drift: Arc<Mutex<Option<Drift>>>,
    ) -> Self {
        let decision = |decision| metrics.decisions.get_or_create(&metrics::Decision { decision }).clone();
        let (positive, negative) = (decision(Decision::Positive.as_str()), decision(Decision::Negative.as_str()));
        Self { threshold, metrics, memory, drift, evidence: None, positive, negative }
    }

    /// Also sends every scored row to the evidence service through `queue`.
    pub fn with_evidence(mut self, queue: Option<EvidenceQueue>) -> Self {
        self.evidence = queue;
        self
    }

    /// Records one scored batch: `rows` and `scores` in batch order, `requests` the ids and row
    /// count of each request in that order.
    pub fn record<'a>(&self, rows: &Rows, scores: &[f32], requests: impl IntoIterator<Item = (&'a RowIds, usize)>) {
        // Each row's reference bins, when its prediction records carry them.
        let mut bins = Vec::new();
        let mut per_row = 0;
        if let Ok(mut drift) = self.drift.lock()
            && let Some(d) = drift.as_mut()
        {
            per_row = d.width();
            let out = self.evidence.is_some().then_some(&mut bins);
            match rows {
                Rows::Numeric { width, values } => d.observe(*width, values, out),
                Rows::Text(texts) => d.observe_text(texts, out),
            }
        }
        let bins = &bins;
        let m = &self.metrics;
        let mut positive = 0;
        for &s in scores {
            m.score.observe(f64::from(s));
            positive += u64::from(s >= self.threshold);
        }
        let negative = scores.len() as u64 - positive;
        if positive > 0 {
            self.positive.inc_by(positive);
        }
        if negative > 0 {
            self.negative.inc_by(negative);
        }
        let mut offset = 0;
        let time_ms = crate::evidence::now_ms();
        let remembered = requests.into_iter().flat_map(|(ids, n)| {
            let start = offset;
            offset += n;
            (0..n).map(move |i| {
                let (id, score) = (ids.id(n, i), scores[start + i]);
                let decision = score >= self.threshold;
                if let Some(q) = self.evidence.as_ref().filter(|q| q.wants(&id)) {
                    q.push(modelrollout_contract::evidence::PredictionRecord {
                        request_id: id.to_string(),
                        time_ms,
                        decision,
                        score: f64::from(score),
                        bins: bins.get((start + i) * per_row..(start + i + 1) * per_row).unwrap_or_default().to_vec(),
                    });
                }
                (id, decision)
            })
        });
        let evicted = self.memory.remember(remembered, Instant::now());
        if evicted > 0 {
            m.memory_evictions.inc_by(evicted);
        }
    }
}
