//! `modelrollout-evidence`: the evidence service's binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use modelrollout_contract::Duration as SpecDuration;
use modelrollout_evidence::api::{self, AppState};
use modelrollout_evidence::auth;
use modelrollout_evidence::store::Store;

#[derive(Parser, Debug)]
#[command(name = "modelrollout-evidence", about = "Joins labels to predictions for the whole cluster")]
struct Args {
    #[arg(long, env = "EVIDENCE_LISTEN", default_value = "0.0.0.0:8090")]
    listen: SocketAddr,
    /// `sqlite:///var/lib/modelrollout-evidence/evidence.db` (the default, on the pod's volume) or
    /// `postgres://user:password@host/db`.
    #[arg(long, env = "EVIDENCE_DATABASE_URL", default_value = "sqlite:///var/lib/modelrollout-evidence/evidence.db")]
    database_url: String,
    /// How long predictions and labels are kept, and how late a label may come.
    #[arg(long, env = "EVIDENCE_HORIZON", default_value = "168h")]
    horizon: SpecDuration,
    /// How long a label waits for its prediction before it is dropped (counted).
    #[arg(long, env = "EVIDENCE_LABEL_WAIT", default_value = "1h")]
    label_wait: SpecDuration,
    /// How often expired rows are deleted.
    #[arg(long, env = "EVIDENCE_PRUNE_EVERY", default_value = "1m")]
    prune_every: SpecDuration,
    /// The largest request body.
    #[arg(long, env = "EVIDENCE_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    max_body_bytes: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    modelrollout_process::init_logging(modelrollout_process::LogFormat::Json, "info");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "evidence service stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = modelrollout_process::Shutdown::listen();
    let store = Arc::new(Store::open(&args.database_url).await?);
    tracing::info!(backend = ?store.backend(), "store open and migrated");
    let client = kube::Client::try_default().await?;
    let authorizer = Arc::new(auth::Kubernetes::new(client));
    let (horizon, wait) = (millis(&args.horizon), millis(&args.label_wait));
    let state = Arc::new(AppState::new(store.clone(), Box::new(authorizer), horizon));
    let prune_every = args.prune_every.get().max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(prune_every);
        loop {
            tick.tick().await;
            match store.prune(api::now_ms(), horizon, wait).await {
                Ok(p) if p != Default::default() => tracing::info!(?p, "pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "prune failed"),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %args.listen, "serving");
    axum::serve(listener, api::router(state, args.max_body_bytes))
        .with_graceful_shutdown(async move { shutdown.stopped().await })
        .await?;
    Ok(())
}

fn millis(d: &SpecDuration) -> i64 {
    i64::try_from(d.get().as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every default parses (a `7d` horizon did not: durations go up to hours).
    #[test]
    fn the_defaults_parse() {
        let a = Args::try_parse_from(["modelrollout-evidence"]).unwrap();
        assert_eq!(millis(&a.horizon), 7 * 86_400_000);
        assert_eq!(millis(&a.label_wait), 3_600_000);
    }
}
