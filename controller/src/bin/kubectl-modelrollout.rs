//! `kubectl modelrollout ...`: put this binary on PATH and kubectl finds it as a plugin.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = modelrollout::plugin::Args::parse();
    std::process::exit(modelrollout::plugin::run(args).await);
}
