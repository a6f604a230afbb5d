fn main() {
    eprintln!("inference-sidecar {}: not built yet (see issue 4)", env!("CARGO_PKG_VERSION"));
    std::process::exit(2);
}
