fn main() {
    eprintln!("modelrollout-controller {}: the reconciler is not built yet (see issue 5)", env!("CARGO_PKG_VERSION"));
    std::process::exit(2);
}
