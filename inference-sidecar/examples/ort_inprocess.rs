//! Benchmark floor: the model's own cost. ONNX Runtime called in-process, no server; one row per
//! call unless ROWS says how many rows each call scores (the cost of a batch).
//!
//!   ORT_DYLIB_PATH=... cargo run --release -p inference-sidecar --example ort_inprocess -- MODEL.onnx [N] [ROWS]

use std::time::Instant;

use inference_sidecar::config::Device;
use inference_sidecar::model::{Engine, init_runtime};
use inference_sidecar::validate::{InputKind, Rows};

fn main() {
    let mut args = std::env::args().skip(1);
    let bytes = std::fs::read(args.next().expect("model file")).unwrap();
    let n: usize = args.next().map_or(20_000, |s| s.parse().unwrap());
    let rows_per_call: usize = args.next().map_or(1, |s| s.parse().unwrap());
    let env = init_runtime().unwrap();
    let mut engine = Engine::new(&env, &bytes, 1, Device::Cpu, InputKind::Numeric { width: 6 }).unwrap();
    let row = Rows::Numeric { width: 6, values: [120.5, 3.0, 0.8, 300.0, 20.0, 1.0].repeat(rows_per_call) };
    for _ in 0..1000 {
        engine.score(&row).unwrap();
    }
    let mut lat: Vec<f64> = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(engine.score(&row).unwrap());
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let total = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "{{\"calls\": {n}, \"rows_per_call\": {rows_per_call}, \"per_second\": {:.0}, \"p50_us\": {:.2}, \"p95_us\": {:.2}, \"p99_us\": {:.2}}}",
        n as f64 / total,
        q(0.50),
        q(0.95),
        q(0.99)
    );
}
