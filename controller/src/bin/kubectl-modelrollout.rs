fn main() {
    eprintln!("kubectl-modelrollout {}: not built yet (see issue 6)", env!("CARGO_PKG_VERSION"));
    std::process::exit(2);
}
