//! Benchmark ceiling: an axum server that parses and validates the same JSON against the same data
//! contract as the sidecar's predict route, then returns a constant without running a model.
//!
//!   cargo run --release -p inference-sidecar --example bare_server -- CONTRACT.yaml PORT [hop [WORKERS]]
//!
//! With `hop`, a probe of what the sidecar's structure costs by itself: each validated request is
//! handed to one dedicated thread through the sidecar's kind of queue (crossbeam, drained into
//! batches of up to 32) and answered through one delivery task on the runtime, as the sidecar's
//! batcher does, but the thread returns a constant: no ONNX Runtime, no metrics, no prediction
//! memory. The runtime is single-threaded, as the sidecar's is on two cores, or has WORKERS
//! threads. Its throughput bounds from above what a server that runs inference off the async
//! runtime on a dedicated thread can reach on this machine (BENCHMARKS.md, session 11).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use crossbeam_channel::Sender;
use inference_sidecar::validate::{Rows, Validator};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// The sidecar's allocator, so the ceiling is not lowered by a slower malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ANSWER: &str = r#"{"model_version":"v2","predictions":[{"score":0.5,"decision":true}]}"#;

type Reply = oneshot::Sender<Vec<f32>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let contract = std::fs::read_to_string(args.next().expect("contract file")).unwrap();
    let port: u16 = args.next().expect("port").parse().unwrap();
    let hop = args.next().as_deref() == Some("hop");
    let workers: Option<usize> = args.next().map(|n| n.parse().unwrap());
    let validator = Arc::new(Validator::new(serde_yaml::from_str(&contract).unwrap()).unwrap());
    // The ceiling: tokio's default runtime (TOKIO_WORKER_THREADS or one thread per core).
    let runtime = match (hop, workers) {
        (true, None) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        (true, Some(n)) => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
        (false, _) => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
    .unwrap();
    runtime.block_on(async move {
        let queue = hop.then(start_hop);
        let app = Router::new().route(
            "/v1/models/{target}",
            post(move |body: Bytes| {
                let (validator, queue) = (validator.clone(), queue.clone());
                async move {
                    let rows = match validate(&validator, &body) {
                        Ok(rows) => rows,
                        Err(refusal) => return refusal,
                    };
                    if let Some(queue) = queue {
                        let (reply, answer) = oneshot::channel();
                        if queue.try_send((rows, reply)).is_err() {
                            return (StatusCode::TOO_MANY_REQUESTS, "full".into());
                        }
                        if answer.await.is_err() {
                            return (StatusCode::INTERNAL_SERVER_ERROR, "gone".into());
                        }
                    }
                    (StatusCode::OK, ANSWER.to_string())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

fn validate(validator: &Validator, body: &[u8]) -> Result<Rows, (StatusCode, String)> {
    let v: Value = serde_json::from_slice(body).map_err(|_| (StatusCode::BAD_REQUEST, "malformed".to_string()))?;
    let mut rows = Rows::empty_like(validator.kind);
    for (i, inst) in v["instances"].as_array().into_iter().flatten().enumerate() {
        let obj = inst.as_object().ok_or((StatusCode::BAD_REQUEST, "instance".to_string()))?;
        validator
            .encode_instance(obj, &format!("instances[{i}]"), &mut rows)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.error.to_string()))?;
    }
    Ok(rows)
}

/// The dedicated thread and the delivery task of the `hop` probe; returns the queue.
fn start_hop() -> Sender<(Rows, Reply)> {
    let (queue, jobs) = crossbeam_channel::bounded::<(Rows, Reply)>(1024);
    let (answers, mut delivered) = mpsc::unbounded_channel::<Vec<(Reply, Vec<f32>)>>();
    tokio::spawn(async move {
        while let Some(batch) = delivered.recv().await {
            for (reply, scores) in batch {
                let _ = reply.send(scores);
            }
        }
    });
    std::thread::spawn(move || {
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            while batch.len() < 32
                && let Ok(job) = jobs.try_recv()
            {
                batch.push(job);
            }
            let batch = batch.into_iter().map(|(rows, reply)| (reply, vec![0.5; rows.len()])).collect();
            if answers.send(batch).is_err() {
                return;
            }
        }
    });
    queue
}
