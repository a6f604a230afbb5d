use clap::Parser;

/// mimalloc: the request path allocates per request on one thread and frees on another (rows go to
/// the inference thread, scores come back), where glibc's malloc showed up as ~10% of the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = inference_sidecar::config::Args::parse();
    // One runtime thread: the single-threaded scheduler (no work stealing to pay for).
    let mut builder = match args.runtime_threads() {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let runtime = builder.enable_all().build().expect("building the async runtime");
    std::process::exit(runtime.block_on(inference_sidecar::run::run(args)));
}
