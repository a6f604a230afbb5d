//! Dynamic batching off the async runtime: a bounded queue feeds dedicated inference threads, each
//! with its own session. A full queue sheds load (429) instead of growing latency without bound.
//!
//! A worker takes the first waiting request, then everything already queued up to the batch size;
//! only when other requests are queued with it (real concurrency) does it wait up to the batch delay
//! for more. A lone request under light load is never held back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::model::Engine;
use crate::validate::Rows;

struct Job {
    rows: Rows,
    reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

#[derive(Clone)]
pub struct Batcher {
    tx: Sender<Job>,
    metrics: Arc<Metrics>,
}

impl Batcher {
    pub fn start(
        engines: Vec<Engine>,
        max_batch: usize,
        max_delay: Duration,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(capacity);
        for (i, engine) in engines.into_iter().enumerate() {
            let rx = rx.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || worker(engine, rx, max_batch, max_delay, metrics))
                .expect("spawning an inference thread");
        }
        Self { tx, metrics }
    }

    /// Scores rows through the queue.
    pub async fn score(&self, rows: Rows) -> Result<Vec<f32>, ApiError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { rows, reply }) {
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

fn worker(mut engine: Engine, rx: Receiver<Job>, max_batch: usize, max_delay: Duration, metrics: Arc<Metrics>) {
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
        if jobs.len() > 1 && rows < max_batch && !max_delay.is_zero() {
            let deadline = Instant::now() + max_delay;
            while rows < max_batch {
                match rx.recv_deadline(deadline) {
                    Ok(job) => {
                        rows += job.rows.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        metrics.queue_depth.dec_by(jobs.len() as i64);
        metrics.batch_size.observe(rows as f64);
        let result = if jobs.len() == 1 {
            engine.score(&jobs[0].rows)
        } else {
            let mut all = Rows::empty_like(engine.kind);
            for j in &jobs {
                all.extend(&j.rows);
            }
            engine.score(&all)
        };
        match result {
            Ok(scores) => {
                let mut offset = 0;
                for job in jobs {
                    let n = job.rows.len();
                    let _ = job.reply.send(Ok(scores[offset..offset + n].to_vec()));
                    offset += n;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, rows, "inference failed");
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
