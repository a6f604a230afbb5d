use clap::Parser;

#[tokio::main]
async fn main() {
    let args = modelrollout::cli::Args::parse();
    std::process::exit(modelrollout::cli::run(args).await);
}
