//! Dynamic batching off the async runtime: a bounded queue feeds dedicated inference threads, each
//! with its own session. A full queue sheds load (429) instead of growing latency without bound.
//!
//! A worker takes the first waiting request, then whatever is already queued while the batch stays
//! within its size: a request that would overflow it is held back for the next batch (never
//! split, never added past the maximum; a single request larger than the maximum is scored on its
//! own). A request whose client has gone (its handler dropped the reply) is skipped before it
//! costs a model call.
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
use crate::error::{ApiError, InferenceError};
use crate::metrics::Metrics;
use crate::model::Engine;
use crate::validate::Rows;

type Reply = oneshot::Sender<Result<Vec<f32>, InferenceError>>;

struct Job {
    rows: Rows,
    ids: RowIds,
    reply: Reply,
}

/// One finished batch's answers, handed back to the async runtime in one piece.
type Answers = Vec<(Reply, Result<Vec<f32>, InferenceError>)>;

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
            Err(_) => Err(ApiError::Internal(InferenceError::ThreadEnded)),
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
    // A request taken from the queue that did not fit the last batch: the next batch starts with it.
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut forming = Forming::new(max_batch, metrics);
        forming.offer(first, &mut held);
        while held.is_none() && !forming.full() {
            match rx.try_recv() {
                Ok(job) => forming.offer(job, &mut held),
                Err(_) => break,
            }
        }
        if held.is_none() && !forming.full() && !max_delay.is_zero() && arriving.load(Ordering::Acquire) > 0 {
            let deadline = Instant::now() + max_delay;
            while held.is_none() && !forming.full() && arriving.load(Ordering::Acquire) > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left.min(ARRIVAL_POLL)) {
                    Ok(job) => forming.offer(job, &mut held),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        let Forming { jobs, rows, .. } = forming;
        if jobs.is_empty() {
            continue; // every request taken was cancelled
        }
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

/// A batch being formed: it takes requests while their rows fit within the maximum.
struct Forming<'a> {
    jobs: Vec<Job>,
    rows: usize,
    max: usize,
    metrics: &'a Metrics,
}

impl<'a> Forming<'a> {
    fn new(max: usize, metrics: &'a Metrics) -> Self {
        Self { jobs: Vec::new(), rows: 0, max, metrics }
    }

    fn full(&self) -> bool {
        self.rows >= self.max
    }

    /// Takes a request just received from the queue: skipped when its client is gone, added when it
    /// fits (or the batch is empty), else held back in `held` for the next batch.
    fn offer(&mut self, job: Job, held: &mut Option<Job>) {
        if job.reply.is_closed() {
            self.metrics.queue_depth.dec();
            self.metrics.cancelled.inc();
            return;
        }
        if !self.jobs.is_empty() && self.rows + job.rows.len() > self.max {
            *held = Some(job);
            return;
        }
        self.metrics.queue_depth.dec();
        self.rows += job.rows.len();
        self.jobs.push(job);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(rows: usize) -> (Job, oneshot::Receiver<Result<Vec<f32>, InferenceError>>) {
        let (reply, rx) = oneshot::channel();
        let rows = Rows::Numeric { width: 1, values: vec![0.0; rows] };
        (Job { rows, ids: RowIds::instances("r".into()), reply }, rx)
    }

    #[test]
    fn a_batch_never_grows_past_its_maximum() {
        let metrics = Metrics::new("m", "v", "stable");
        let mut forming = Forming::new(32, &metrics);
        let mut held = None;
        let mut waiting = Vec::new();
        for n in [10, 10, 10] {
            let (j, rx) = job(n);
            waiting.push(rx);
            forming.offer(j, &mut held);
        }
        assert!(held.is_none());
        assert_eq!(forming.rows, 30);
        // 30 + 10 would be 40: held back for the next batch, whole.
        let (j, _rx) = job(10);
        forming.offer(j, &mut held);
        assert_eq!((forming.rows, forming.jobs.len()), (30, 3));
        assert_eq!(held.as_ref().map(|j| j.rows.len()), Some(10));
        // Two rows still fit.
        let mut next = Forming::new(32, &metrics);
        let mut held2 = None;
        next.offer(held.take().unwrap(), &mut held2);
        assert_eq!(next.rows, 10);
    }

    #[test]
    fn one_request_larger_than_the_maximum_is_scored_alone() {
        let metrics = Metrics::new("m", "v", "stable");
        let mut forming = Forming::new(4, &metrics);
        let mut held = None;
        let (big, _rx) = job(9);
        forming.offer(big, &mut held);
        assert_eq!(forming.rows, 9);
        assert!(forming.full());
        let (small, _rx2) = job(1);
        forming.offer(small, &mut held);
        assert_eq!(forming.jobs.len(), 1, "nothing joins an over-size request");
        assert!(held.is_some());
    }

    #[test]
    fn a_request_whose_client_has_gone_costs_no_model_call() {
        let metrics = Metrics::new("m", "v", "stable");
        metrics.queue_depth.set(2);
        let mut forming = Forming::new(32, &metrics);
        let mut held = None;
        let (gone, rx) = job(3);
        drop(rx);
        forming.offer(gone, &mut held);
        let (live, _rx) = job(2);
        forming.offer(live, &mut held);
        assert_eq!((forming.rows, forming.jobs.len()), (2, 1));
        assert_eq!(metrics.cancelled.get(), 1);
        assert_eq!(metrics.queue_depth.get(), 0, "both left the queue");
    }
}
