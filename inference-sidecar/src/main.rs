use clap::Parser;

#[tokio::main]
async fn main() {
    let args = inference_sidecar::config::Args::parse();
    std::process::exit(inference_sidecar::run::run(args).await);
}
