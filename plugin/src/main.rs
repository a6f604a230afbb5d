//! `kubectl modelrollout ...`: put this binary on PATH and kubectl finds it as a plugin.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = kubectl_modelrollout::Args::parse();
    std::process::exit(kubectl_modelrollout::run(args).await);
}
