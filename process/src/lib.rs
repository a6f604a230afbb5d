//! What the controller and the sidecar do alike as processes: set up logging and wait for the
//! signal to stop.

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line, fields flattened (with the current span, for the controller's
    /// per-reconcile spans).
    Json,
    Text,
}

/// Logs to stderr, filtered by `RUST_LOG`, or by `default_filter` when it is unset or blank (an
/// empty `RUST_LOG`, a blank entry in a pod's env, would otherwise mean errors only).
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The stop signal (SIGTERM, a pod being stopped, or Ctrl-C), listened for from the moment it is
/// made: one that arrives between two steps of a start-up is not lost, as it was when each step
/// made a listener of its own (a SIGTERM right after the controller took its lease waited for
/// the kubelet's SIGKILL). Cloned freely; every clone sees the one signal.
#[derive(Clone, Debug)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// Listens from now on. Needs a running Tokio runtime.
    pub fn listen() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let (tx, rx) = tokio::sync::watch::channel(false);
        // Registered here, before this returns, not when a task first runs.
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            let _ = tx.send(true);
        });
        Self(rx)
    }

    /// Resolves once the signal came (at once if it already has).
    pub async fn stopped(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

/// Resolves on SIGTERM (a pod being stopped) or Ctrl-C.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
