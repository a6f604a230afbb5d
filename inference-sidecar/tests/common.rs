//! Helpers: sidecars serving the committed models, in-process or on a real socket (port 0).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::ServiceExt as _;
use clap::Parser;
use inference_sidecar::config::{Args, Config};
use inference_sidecar::run;
use inference_sidecar::server::{AppState, app};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn models() -> PathBuf {
    root().join("models")
}

/// The sha256 of a committed model, computed from the file (what the sidecar checks it against).
pub fn sha(file: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(models().join(file)).expect("the model file")))
}

pub fn require_ort() {
    assert!(
        std::env::var("ORT_DYLIB_PATH").is_ok(),
        "ORT_DYLIB_PATH is not set: run via `bash tests/run.sh` (scripts/python-env.sh provides the library)"
    );
}

pub const FRAUD_CONTRACT: &str = include_str!("../../models/fraud.contract.yaml");

pub const TOXICITY_CONTRACT: &str = "inputs: [{name: text, type: string, maxLength: 200}]\n";

pub const RANKER_CONTRACT: &str = r#"
inputs:
  - {name: user_affinity, type: float, min: 0, max: 1}
  - {name: item_popularity, type: float, min: 0, max: 1}
  - {name: price, type: float, min: 0, max: 10000}
  - {name: recency_days, type: float, min: 0, max: 3650}
"#;

/// Writes a contract to a temp file that lives as long as the returned guard.
pub fn contract_file(text: &str) -> tempfile_lite::TempFile {
    tempfile_lite::TempFile::with_contents(text)
}

pub mod tempfile_lite {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    static N: AtomicU32 = AtomicU32::new(0);

    pub struct TempFile(pub PathBuf);

    impl TempFile {
        pub fn with_contents(text: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "sidecar-test-{}-{}.yaml",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::write(&p, text).unwrap();
            TempFile(p)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// An empty directory removed with the guard.
    pub struct TempDir(pub PathBuf);

    #[allow(dead_code)]
    impl TempDir {
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "sidecar-test-dir-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Args for serving `models/<file>` as `name`/`version` with `contract`.
pub fn args(name: &str, version: &str, file: &str, contract: &std::path::Path, extra: &[&str]) -> Args {
    let uri = models().join(file);
    let sha = sha(file);
    let mut argv = vec![
        "inference-sidecar".to_string(),
        "--model-name".into(),
        name.into(),
        "--model-version".into(),
        version.into(),
        "--model-uri".into(),
        uri.display().to_string(),
        "--model-sha256".into(),
        sha,
        "--contract".into(),
        contract.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--log-format".into(),
        "text".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Args::parse_from(argv)
}

/// A loaded sidecar state (model verified, loaded, warmed up).
pub async fn loaded(args: Args) -> Arc<AppState> {
    require_ort();
    let cfg = Config::resolve(args).unwrap();
    let state = run::state(&cfg).unwrap();
    run::load(&cfg, &state).await.unwrap();
    state
}

/// Serves a state on a real socket; returns its base URL.
pub async fn serve(state: Arc<AppState>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(state).into_make_service()).await.unwrap() });
    format!("http://{addr}")
}

/// The OIP gRPC service of `state` on a port of its own; returns `host:port`.
pub async fn serve_grpc(state: Arc<AppState>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let (router, _health) =
        inference_sidecar::server::grpc_server::server(state, tonic::transport::Server::builder()).await;
    tokio::spawn(async move { router.serve_with_incoming(incoming).await.unwrap() });
    addr.to_string()
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Reads one sample of a series from the /metrics text; a series that is not there fails the
/// test (it is never read as 0).
pub fn metric(text: &str, series_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no series {series_prefix} in:\n{text}"))
}

/// Waits for a child to exit (at most `timeout`); its exit code and what it wrote to stderr.
pub fn wait_exit(child: &mut std::process::Child, timeout: std::time::Duration) -> (i32, String) {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        assert!(start.elapsed() < timeout, "the sidecar did not exit within {timeout:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
