//! Dynamic batching off the async runtime: a bounded queue feeds dedicated inference threads, each
//! with its own session. A full queue sheds load (429) instead of growing latency without bound.
//!
//! A worker takes the first waiting request, then everything already queued up to the batch size.
//! It waits (up to the batch delay) only for requests known to be on their way — already being
//! decoded and validated by a handler — never on the chance that more will come: a fixed wait
//! taxes every request under light load, and under heavy load the queue fills by itself while the
//! previous batch runs.
//!
//! Before a batch is answered, the worker records it (metrics, drift, prediction memory: see
//! [`crate::bookkeeping`]).
//!
//! Answers go back to the runtime once per batch, not once per request: waking a task from a
//! foreign thread can cost a syscall (an idle runtime worker has to be unparked), so one delivery
//! task on the runtime receives the whole batch and completes each request there, where a wake is
//! a push on the local run queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::bookkeeping::{Bookkeeping, RowIds};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::model::Engine;
use crate::validate::Rows;

type Reply = oneshot::Sender<Result<Vec<f32>, String>>;

struct Job {
    rows: Rows,
    ids: RowIds,
    reply: Reply,
}

/// One finished batch's answers, handed back to the async runtime in one piece.
type Answers = Vec<(Reply, Result<Vec<f32>, String>)>;

/// How often a waiting worker re-checks whether requests are still on their way.
const ARRIVAL_POLL: Duration = Duration::from_micros(50);

#[derive(Clone)]
pub struct Batcher {
    tx: Sender<Job>,
    metrics: Arc<Metrics>,
    arriving: Arc<AtomicUsize>,
}

/// A request on its way to the queue; counted until it is queued or refused (dropped).
pub struct Arrival(Arc<AtomicUsize>);

impl Drop for Arrival {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

impl Batcher {
    pub fn start(
        engines: Vec<Engine>,
        max_batch: usize,
        max_delay: Duration,
        capacity: usize,
        bookkeeping: Bookkeeping,
    ) -> Self {
        let metrics = bookkeeping.metrics.clone();
        let bookkeeping = Arc::new(bookkeeping);
        let (tx, rx) = crossbeam_channel::bounded::<Job>(capacity);
        let arriving = Arc::new(AtomicUsize::new(0));
        let (answers_tx, answers_rx) = tokio::sync::mpsc::unbounded_channel::<Answers>();
        tokio::spawn(deliver(answers_rx));
        for (i, engine) in engines.into_iter().enumerate() {
            let rx = rx.clone();
            let arriving = arriving.clone();
            let answers = answers_tx.clone();
            let bookkeeping = bookkeeping.clone();
            std::thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || worker(engine, rx, max_batch, max_delay, &arriving, &answers, &bookkeeping))
                .expect("spawning an inference thread");
        }
        Self { tx, metrics, arriving }
    }

    /// Announces a request that will be scored once decoded: workers may wait for it.
    pub fn arrival(&self) -> Arrival {
        self.arriving.fetch_add(1, Ordering::Release);
        Arrival(self.arriving.clone())
    }

    /// Scores rows through the queue; the rows are remembered under `ids` for label feedback.
    pub async fn score(&self, rows: Rows, ids: RowIds, arrival: Option<Arrival>) -> Result<Vec<f32>, ApiError> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.try_send(Job { rows, ids, reply });
        drop(arrival);
        match sent {
            Ok(()) => self.metrics.queue_depth.inc(),
            Err(TrySendError::Full(_)) => return Err(ApiError::ResourceExhausted),
            Err(TrySendError::Disconnected(_)) => return Err(ApiError::Unavailable),
        };
        match rx.await {
            Ok(Ok(scores)) => Ok(scores),
            Ok(Err(e)) => Err(ApiError::Internal(e)),
            Err(_) => Err(ApiError::Internal("inference thread ended".into())),
        }
    }
}

fn worker(
    mut engine: Engine,
    rx: Receiver<Job>,
    max_batch: usize,
    max_delay: Duration,
    arriving: &AtomicUsize,
    answers: &tokio::sync::mpsc::UnboundedSender<Answers>,
    bookkeeping: &Bookkeeping,
) {
    let metrics = &bookkeeping.metrics;
    // The rows of a batch of several requests, reused from batch to batch.
    let mut batch = Rows::empty_like(engine.kind);
    while let Ok(first) = rx.recv() {
        let mut rows = first.rows.len();
        let mut jobs = vec![first];
        while rows < max_batch {
            match rx.try_recv() {
                Ok(job) => {
                    rows += job.rows.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        if rows < max_batch && !max_delay.is_zero() && arriving.load(Ordering::Acquire) > 0 {
            let deadline = Instant::now() + max_delay;
            while rows < max_batch && arriving.load(Ordering::Acquire) > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left.min(ARRIVAL_POLL)) {
                    Ok(job) => {
                        rows += job.rows.len();
                        jobs.push(job);
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        metrics.queue_depth.dec_by(jobs.len() as i64);
        metrics.batch_size.observe(rows as f64);
        let input = if jobs.len() == 1 {
            &jobs[0].rows
        } else {
            batch.clear();
            for j in &jobs {
                batch.extend(&j.rows);
            }
            &batch
        };
        let result = engine.score(input);
        if let Ok(scores) = &result {
            bookkeeping.record(input, scores, jobs.iter().map(|j| (&j.ids, j.rows.len())));
        }
        let delivered: Answers = match result {
            Ok(scores) => {
                let mut offset = 0;
                jobs.into_iter()
                    .map(|job| {
                        let n = job.rows.len();
                        offset += n;
                        (job.reply, Ok(scores[offset - n..offset].to_vec()))
                    })
                    .collect()
            }
            Err(e) => {
                tracing::error!(error = %e, rows, "inference failed");
                jobs.into_iter().map(|job| (job.reply, Err(e.clone()))).collect()
            }
        };
        if answers.send(delivered).is_err() {
            return; // the runtime is gone: nobody is waiting
        }
    }
}

/// Completes each request of each finished batch, on the runtime.
async fn deliver(mut batches: tokio::sync::mpsc::UnboundedReceiver<Answers>) {
    while let Some(batch) = batches.recv().await {
        for (reply, answer) in batch {
            let _ = reply.send(answer);
        }
    }
}
