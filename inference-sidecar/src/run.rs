//! Lifecycle: listen at once (liveness), then fetch → verify sha256 → load → check the contract →
//! warm up → ready; on SIGTERM stop accepting, finish in-flight requests within the deadline, exit 0.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::ServiceExt as _;

use crate::batcher::Batcher;
use crate::config::{Args, Config, LogFormat};
use crate::drift::{Drift, Reference};
use crate::error::StartError;
use crate::feedback::PredictionMemory;
use crate::metrics::{DeviceLabel, FeatureLabel, Metrics};
use crate::model::{self, Engine};
use crate::server::{AppState, app};
use crate::validate::{InputKind, Rows, Validator};
use modelrollout_process::{init_logging, shutdown_signal};

/// Builds the shared state for a resolved configuration (no model loaded yet).
pub fn state(cfg: &Config) -> Result<Arc<AppState>, StartError> {
    let validator = Validator::new(cfg.contract.clone()).map_err(StartError::Config)?;
    let metrics = Arc::new(Metrics::new(&cfg.model_name, &cfg.model_version, cfg.args.role.as_str()));
    Ok(Arc::new(AppState::new(
        cfg.model_name.clone(),
        cfg.model_version.clone(),
        validator,
        metrics,
        PredictionMemory::new(cfg.args.feedback_capacity, cfg.args.feedback_ttl),
        cfg.args.max_payload_bytes,
        cfg.args.max_candidates,
    )))
}

/// Rows in the middle of every feature's range, for warm-up.
fn warmup_rows(v: &Validator, n: usize) -> Rows {
    match v.kind {
        InputKind::Numeric { width } => {
            let row: Vec<f32> = v
                .contract
                .inputs
                .iter()
                .map(|f| match (f.min, f.max) {
                    (Some(a), Some(b)) => ((a + b) / 2.0) as f32,
                    (Some(a), None) => a as f32,
                    (None, Some(b)) => b as f32,
                    (None, None) => 0.0,
                })
                .collect();
            Rows::Numeric { width, values: row.repeat(n) }
        }
        InputKind::Text => Rows::Text(vec!["warm up".to_string(); n]),
    }
}

/// Fetches, verifies, loads and warms up the model, then turns the state ready.
pub async fn load(cfg: &Config, state: &Arc<AppState>) -> Result<(), StartError> {
    let start = Instant::now();
    let bytes = crate::fetch::fetch_verified(&cfg.model_uri, &cfg.model_sha256, &cfg.args.cache_dir).await?;
    let env = model::init_runtime()?;
    let args = &cfg.args;
    let mut engines = Vec::with_capacity(args.workers);
    for _ in 0..args.workers {
        engines.push(Engine::new(&env, &bytes, args.threads, args.device, state.validator.kind)?);
    }
    let device = engines[0].device;
    let requested = args.device.as_str();
    state.metrics.device.get_or_create(&DeviceLabel { device: device.as_str(), requested }).set(1);
    for e in &mut engines {
        for _ in 0..args.warmup.max(1) {
            let scores = e.score(&warmup_rows(&state.validator, 4)).map_err(StartError::Warmup)?;
            if scores.iter().any(|s| !s.is_finite()) {
                return Err(StartError::WarmupScores(scores));
            }
        }
    }
    if let Some(r) = &cfg.reference {
        let err = |reason: String| StartError::Reference { path: r.uri.clone(), reason };
        let (bytes, sha256) = match &r.sha256 {
            Some(sha) => (crate::fetch::fetch_verified(&r.uri, sha, &args.cache_dir).await?, sha.clone()),
            None => {
                let bytes = tokio::fs::read(&r.uri).await.map_err(|e| err(e.to_string()))?;
                let sha = crate::fetch::hex_sha256(&bytes);
                (bytes, sha)
            }
        };
        let reference: Reference = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
        let names: Vec<String> = state.validator.contract.inputs.iter().map(|f| f.name.clone()).collect();
        let drift = Drift::new(reference, &names, args.drift_window).map_err(err)?;
        let _ = state.reference.set(crate::drift::Loaded { sha256, reference: drift.reference() });
        *state.drift.lock().expect("drift lock") = Some(drift);
        tokio::spawn(publish_drift(state.clone()));
    }
    let batcher =
        Batcher::start(engines, args.max_batch_size, args.max_batch_delay, args.queue_capacity, state.bookkeeping());
    let _ = state.batcher.set(batcher);
    state.metrics.load_seconds.set(start.elapsed().as_secs_f64());
    state.metrics.ready.set(1);
    state.ready.store(true, Ordering::Release);
    tracing::info!(
        model = %cfg.model_name, version = %cfg.model_version, role = args.role.as_str(), device = device.as_str(),
        load_seconds = start.elapsed().as_secs_f64(), "model verified, loaded and warmed up; ready"
    );
    Ok(())
}

/// Publishes the drift gauges every few seconds.
async fn publish_drift(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tick.tick().await;
        let psi = match state.drift.lock() {
            Ok(d) => d.as_ref().map(|d| d.psi()).unwrap_or_default(),
            Err(_) => return,
        };
        for (feature, value) in psi {
            state.metrics.drift.get_or_create(&FeatureLabel { feature }).set(value);
        }
    }
}

/// `--fetch-only`: the verified model on disk, its path on stdout; 0, or 1 naming why not.
async fn fetch_only(args: &Args) -> i32 {
    let fetched = match Config::model_only(args) {
        Ok((uri, sha)) => crate::fetch::fetch_to_cache(&uri, &sha, &args.cache_dir).await,
        Err(e) => Err(e),
    };
    match fetched {
        Ok(path) => {
            println!("{}", path.display());
            0
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot fetch the model");
            1
        }
    }
}

/// The whole program; returns the exit code.
pub async fn run(args: Args) -> i32 {
    init_logging(
        match args.log_format {
            LogFormat::Json => modelrollout_process::LogFormat::Json,
            LogFormat::Text => modelrollout_process::LogFormat::Text,
        },
        "info",
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.fetch_only {
        return fetch_only(&args).await;
    }
    let cfg = match Config::resolve(args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return 2;
        }
    };
    let state = match state(&cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return 2;
        }
    };
    let listener = match tokio::net::TcpListener::bind(cfg.args.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %StartError::Listen(e.to_string()), "cannot start");
            return 1;
        }
    };
    tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening (not ready yet)");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Prediction records for the evidence service: queued by the inference threads, sent by a
    // task that flushes what is left once the server has drained (every request answered).
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let evidence = cfg.args.evidence_url.as_ref().map(|url| {
        let target = crate::evidence::Target {
            url: url.clone(),
            namespace: cfg.args.namespace.clone().unwrap_or_default(),
            rollout: cfg.args.rollout.clone().unwrap_or_default(),
            model: cfg.model_name.clone(),
            version: cfg.model_version.clone(),
            role: cfg.args.role,
            token_file: Some(cfg.args.evidence_token_file.clone()).filter(|p| p.exists()),
        };
        tracing::info!(url = %target.url, namespace = %target.namespace, rollout = %target.rollout, "sending prediction records to the evidence service");
        let (queue, sender) = crate::evidence::queue(cfg.args.evidence_queue, cfg.args.evidence_sample_rate, target, state.metrics.clone());
        let sender = sender.with_reference(state.reference.clone());
        let _ = state.evidence.set(queue);
        tokio::spawn(sender.run(async move {
            let _ = drained_rx.await;
        }))
    });
    let server =
        axum::serve(listener, app(state.clone()).into_make_service()).with_graceful_shutdown(stopped(stop_rx.clone()));
    let http = tokio::spawn(async move { server.await });
    // The Open Inference Protocol's gRPC service, on a port of its own when asked for.
    let grpc = match cfg.args.grpc_listen {
        Some(addr) => {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %StartError::Listen(e.to_string()), "cannot start");
                    return 1;
                }
            };
            tracing::info!(grpc_listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "gRPC listening");
            // No Nagle: a response goes out as headers, data and trailers in separate writes, and
            // with Nagle (and the client's delayed ACK) each call waited 40 ms for the trailers.
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let (router, health) =
                crate::server::grpc_server::server(state.clone(), tonic::transport::Server::builder()).await;
            let server = router.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
            Some((tokio::spawn(server), health))
        }
        None => None,
    };
    let health = grpc.as_ref().map(|(_, h)| h.clone());
    let server = async move {
        let _ = http.await;
        if let Some((g, _)) = grpc {
            let _ = g.await;
        }
    };
    let loaded = tokio::select! {
        r = load(&cfg, &state) => r,
        _ = shutdown_signal() => {
            let _ = stop_tx.send(true);
            return 0;
        }
    };
    if let Err(e) = loaded {
        // One clear line (the digest mismatch names both digests), never ready, non-zero exit.
        tracing::error!(error = %e, "model not served");
        return 1;
    }
    if let Some(h) = &health {
        h.set(true).await;
    }
    shutdown_signal().await;
    state.ready.store(false, Ordering::Release);
    if let Some(h) = &health {
        h.set(false).await;
    }
    state.draining.store(true, Ordering::Relaxed);
    state.metrics.ready.set(0);
    tracing::info!(
        grace_s = cfg.args.shutdown_grace.as_secs_f64(),
        "SIGTERM: not ready; still serving during the grace period, closing each connection after its answer"
    );
    tokio::time::sleep(cfg.args.shutdown_grace).await;
    tracing::info!(
        deadline_s = cfg.args.shutdown_deadline.as_secs_f64(),
        "closing the listener; draining in-flight requests"
    );
    let _ = stop_tx.send(true);
    let server = async move {
        server.await;
        // Everything scored is queued now: the sender sends it and ends.
        let _ = drained_tx.send(());
        if let Some(e) = evidence {
            let _ = e.await;
        }
    };
    match tokio::time::timeout(cfg.args.shutdown_deadline, server).await {
        Ok(_) => {
            tracing::info!("drained; exiting");
            0
        }
        Err(_) => {
            tracing::warn!("shutdown deadline passed with requests still in flight");
            1
        }
    }
}
