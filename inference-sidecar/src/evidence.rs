//! Prediction records for the evidence service (the cluster's join of labels to predictions).
//!
//! The inference thread only pushes each scored row into a bounded queue ([`EvidenceQueue::push`],
//! never blocking: a full queue drops the record and counts it); a task ([`Sender::run`]) sends
//! them in batches. A batch that fails (the service down, a timeout) is sent again, unchanged, until
//! it is taken: the service stores a prediction once however often it arrives, so a retry counts
//! nothing twice. A batch answered 4xx is not retried (counted `refused`, logged). A request never
//! waits on any of this.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelrollout_contract::Role;
use modelrollout_contract::evidence::{PredictionBatch, PredictionRecord, ReferenceRecord, paths};
use prometheus_client::metrics::counter::Counter;

use crate::metrics::{Metrics, Outcome};

/// The most records one batch carries.
pub const BATCH: usize = 2_000;
/// How long records wait to fill a batch.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// How long a stopping sidecar goes on sending what the service did not take yet.
pub const FINAL_FLUSH: Duration = Duration::from_secs(5);
/// Retry backoff: from 200 ms, doubling to 10 s.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(10));

/// Where this sidecar's records go and what they are of.
#[derive(Clone, Debug)]
pub struct Target {
    /// The service's base URL (`http://modelrollout-evidence.modelrollout-system:8090`).
    pub url: String,
    pub namespace: String,
    pub rollout: String,
    pub model: String,
    pub version: String,
    pub role: Role,
    /// The bearer token's file (the pod's projected ServiceAccount token: read again before each
    /// batch, as the kubelet rotates it).
    pub token_file: Option<std::path::PathBuf>,
}

/// The inference thread's end: bounded, never blocks.
#[derive(Clone)]
pub struct EvidenceQueue {
    tx: crossbeam_channel::Sender<PredictionRecord>,
    dropped: Counter,
    /// Records kept: those whose request id hashes below this share of the hash space.
    sample_below: u64,
}

/// Whether a request id is in the sample: a fixed hash of the id
/// (`modelrollout_contract::hash::stable_hash`), the same in every sidecar, so stable and the candidate keep the same requests and
/// every matched pair survives sampling whole.
pub fn sampled(request_id: &str, sample_below: u64) -> bool {
    if sample_below == u64::MAX {
        return true;
    }
    modelrollout_contract::hash::stable_hash(request_id) < sample_below
}

/// The hash threshold of a sampling rate in (0, 1].
pub fn sample_threshold(rate: f64) -> u64 {
    if rate >= 1.0 { u64::MAX } else { (rate.max(0.0) * u64::MAX as f64) as u64 }
}

impl EvidenceQueue {
    /// Whether rows of this request are sent at all (see [`sampled`]).
    pub fn wants(&self, request_id: &str) -> bool {
        sampled(request_id, self.sample_below)
    }

    pub fn push(&self, record: PredictionRecord) {
        if self.tx.try_send(record).is_err() {
            self.dropped.inc();
        }
    }
}

/// The sending task's end.
pub struct Sender {
    rx: crossbeam_channel::Receiver<PredictionRecord>,
    target: Target,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    /// The model's reference, once loaded: sent to the service before the first batch after it
    /// is set (the service needs it to read the records' bins).
    reference: Arc<std::sync::OnceLock<crate::drift::Loaded>>,
    reference_sent: bool,
}

/// A queue of `capacity` records, keeping the `sample_rate` share of request ids, and the task's
/// end of it.
pub fn queue(capacity: usize, sample_rate: f64, target: Target, metrics: Arc<Metrics>) -> (EvidenceQueue, Sender) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let dropped = metrics.evidence_records.get_or_create(&Outcome { outcome: "dropped" }).clone();
    // No redirects (a record goes to the service named, or nowhere); a timeout per batch.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client with default TLS");
    (
        EvidenceQueue { tx, dropped, sample_below: sample_threshold(sample_rate) },
        Sender { rx, target, client, metrics, reference: Arc::default(), reference_sent: false },
    )
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// How a batch went.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Taken,
    /// 4xx: sending it again would be refused again.
    Refused(u16),
    /// Try again later.
    Failed(String),
}

impl Sender {
    /// Tells the service the model's reference once `reference` is set.
    pub fn with_reference(mut self, reference: Arc<std::sync::OnceLock<crate::drift::Loaded>>) -> Self {
        self.reference = reference;
        self
    }

    /// Sends until `stop` resolves, then sends what is queued, retrying what is not taken for up
    /// to [`FINAL_FLUSH`]; what is still unsent then is counted dropped.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut stopping = false;
        let mut give_up = tokio::time::Instant::now();
        let mut backoff = BACKOFF.0;
        let mut batch: Vec<PredictionRecord> = Vec::new();
        loop {
            // A future is polled until it resolves, never after.
            if !stopping {
                stopping = tokio::select! {
                    _ = &mut stop => true,
                    _ = tokio::time::sleep(FLUSH_EVERY) => false,
                };
                give_up = tokio::time::Instant::now() + FINAL_FLUSH;
            }
            if batch.is_empty() {
                batch.extend(self.rx.try_iter().take(BATCH));
            }
            self.metrics.evidence_queue.set(self.rx.len() as i64);
            if batch.is_empty() {
                if stopping {
                    return;
                }
                continue;
            }
            let sent = match self.send_reference().await {
                Sent::Taken => self.send(&batch).await,
                refused_or_failed => refused_or_failed,
            };
            match sent {
                Sent::Taken => {
                    self.count("sent", batch.len());
                    batch.clear();
                    backoff = BACKOFF.0;
                }
                Sent::Refused(code) => {
                    tracing::warn!(code, records = batch.len(), url = %self.target.url, "evidence service refused a batch");
                    self.count("refused", batch.len());
                    batch.clear();
                }
                Sent::Failed(why) => {
                    tracing::debug!(%why, records = batch.len(), "evidence batch not taken; retrying");
                    if stopping && tokio::time::Instant::now() >= give_up {
                        let lost = batch.len() + self.rx.len();
                        tracing::warn!(records = lost, %why, "shutting down with records the evidence service did not take");
                        self.count("dropped", lost);
                        return;
                    }
                    // Stopping: soon again, within FINAL_FLUSH; else backing off.
                    tokio::time::sleep(if stopping { BACKOFF.0 } else { backoff }).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                    continue;
                }
            }
            if stopping && self.rx.is_empty() {
                return;
            }
        }
    }

    fn count(&self, outcome: &'static str, n: usize) {
        self.metrics.evidence_records.get_or_create(&Outcome { outcome }).inc_by(n as u64);
    }

    /// The reference, if loaded and not yet taken. A refused reference is not sent again (logged,
    /// and the batch goes on: its bins are then not counted, its predictions are).
    async fn send_reference(&mut self) -> Sent {
        let Some(loaded) = self.reference.get().filter(|_| !self.reference_sent) else { return Sent::Taken };
        let t = &self.target;
        let record = ReferenceRecord {
            namespace: t.namespace.clone(),
            rollout: t.rollout.clone(),
            model: t.model.clone(),
            version: t.version.clone(),
            sha256: loaded.sha256.clone(),
            reference: loaded.reference.clone(),
        };
        let req = self.client.put(format!("{}{}", t.url.trim_end_matches('/'), paths::REFERENCES)).json(&record);
        match self.exchange(req).await {
            Sent::Taken => {
                self.reference_sent = true;
                Sent::Taken
            }
            Sent::Refused(code) => {
                tracing::warn!(code, url = %t.url, "evidence service refused the model's reference; no input drift");
                self.reference_sent = true;
                Sent::Taken
            }
            failed => failed,
        }
    }

    async fn send(&self, records: &[PredictionRecord]) -> Sent {
        let t = &self.target;
        let batch = PredictionBatch {
            namespace: t.namespace.clone(),
            rollout: t.rollout.clone(),
            model: t.model.clone(),
            version: t.version.clone(),
            role: t.role,
            records: records.to_vec(),
        };
        self.exchange(self.client.post(format!("{}{}", t.url.trim_end_matches('/'), paths::PREDICTIONS)).json(&batch))
            .await
    }

    /// Sends one request with the current token and reads how it went.
    async fn exchange(&self, mut req: reqwest::RequestBuilder) -> Sent {
        if let Some(path) = &self.target.token_file {
            match tokio::fs::read_to_string(path).await {
                Ok(token) => req = req.bearer_auth(token.trim()),
                Err(e) => return Sent::Failed(format!("reading the token {}: {e}", path.display())),
            }
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Sent::Taken,
            // 401: the token may have rotated since it was read, and 429 asks to come back: both
            // are tried again; any other 4xx would be refused again.
            Ok(r) if r.status().is_client_error() && !matches!(r.status().as_u16(), 401 | 429) => {
                Sent::Refused(r.status().as_u16())
            }
            Ok(r) => Sent::Failed(format!("answered {}", r.status())),
            Err(e) => Sent::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: String) -> Target {
        Target {
            url,
            namespace: "team-a".into(),
            rollout: "fraud".into(),
            model: "fraud".into(),
            version: "v2".into(),
            role: Role::Canary,
            token_file: None,
        }
    }

    fn record(i: usize) -> PredictionRecord {
        PredictionRecord { request_id: format!("r{i}"), time_ms: 1, decision: false, score: 0.1, bins: vec![] }
    }

    fn provider() {
        // What the process does at start (run.rs) before any client.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    fn counted(m: &Metrics, outcome: &'static str) -> u64 {
        m.evidence_records.get_or_create(&Outcome { outcome }).get()
    }

    /// Stopping with more than one batch queued: every batch is sent (the stop signal, already
    /// resolved, is not polled again), then the task ends.
    #[tokio::test]
    async fn a_stopping_sender_sends_every_queued_batch() {
        provider();
        let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = received.clone();
        let app = axum::Router::new().route(
            paths::PREDICTIONS,
            axum::routing::post(move |axum::Json(b): axum::Json<PredictionBatch>| async move {
                r.fetch_add(b.records.len(), std::sync::atomic::Ordering::Relaxed);
                "{}"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let metrics = Arc::new(Metrics::new("fraud", "v2", "canary"));
        let (q, sender) = queue(10_000, 1.0, target(url), metrics.clone());
        (0..2 * BATCH + 500).for_each(|i| q.push(record(i)));
        tokio::time::timeout(Duration::from_secs(10), sender.run(async {})).await.expect("the sender ends");
        assert_eq!(received.load(std::sync::atomic::Ordering::Relaxed), 2 * BATCH + 500);
        assert_eq!(counted(&metrics, "sent"), (2 * BATCH + 500) as u64);
    }

    /// Stopping with the service gone: it tries for FINAL_FLUSH, then counts what is left dropped.
    #[tokio::test]
    async fn a_stopping_sender_with_no_service_gives_up_and_counts_the_rest() {
        provider();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let metrics = Arc::new(Metrics::new("fraud", "v2", "canary"));
        let (q, sender) = queue(10_000, 1.0, target(format!("http://127.0.0.1:{port}")), metrics.clone());
        (0..30).for_each(|i| q.push(record(i)));
        let started = std::time::Instant::now();
        tokio::time::timeout(FINAL_FLUSH * 2, sender.run(async {})).await.expect("the sender gives up");
        assert!(started.elapsed() >= FINAL_FLUSH, "{:?}", started.elapsed());
        assert_eq!((counted(&metrics, "sent"), counted(&metrics, "dropped")), (0, 30));
    }

    #[test]
    fn sampling_keeps_the_same_ids_everywhere_in_its_share() {
        let t = sample_threshold(0.1);
        let kept = (0..100_000).filter(|i| sampled(&format!("req-{i}"), t)).count();
        // 10% of 100,000: binomial sd ~95; 99.99% interval about ±3.9 sd.
        assert!((9_630..=10_370).contains(&kept), "{kept}");
        assert!(sampled("anything", sample_threshold(1.0)));
        assert!(!sampled("anything", sample_threshold(0.0)));
        assert_eq!(sampled("req-42", t), sampled("req-42", t), "a fixed hash: every sidecar agrees");
    }
}
