//! The evidence store's throughput and size, for BENCHMARKS.md (`benches/evidence.sh` runs it):
//! `N` mirrored requests, each scored by stable and by the candidate (2N predictions, in batches of
//! 1,000 per version, as sidecars send them), then a label for each (batches of 1,000, as a label
//! poster would). Prints one JSON line: rates, this process's CPU seconds, and the bytes on disk.
//!
//!   store_bench <database-url> <N>

use std::time::Instant;

use modelrollout_contract::Role;
use modelrollout_contract::evidence::{Label, PredictionBatch, PredictionRecord};
use modelrollout_evidence::store::Store;

fn rusage() -> libc::rusage {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
        u.assume_init()
    }
}

fn cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
        u.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn batch(version: &str, role: Role, from: usize, n: usize, now: i64) -> PredictionBatch {
    PredictionBatch {
        namespace: "bench".into(),
        rollout: "fraud".into(),
        model: "fraud".into(),
        version: version.into(),
        role,
        records: (from..from + n)
            .map(|i| PredictionRecord {
                request_id: format!("req-{i:012}"),
                time_ms: now - 60_000,
                decision: i % 7 == 0,
                score: (i % 100) as f64 / 100.0,
                bins: vec![],
            })
            .collect(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (url, n): (&str, usize) = (&args[1], args[2].parse()?);
    let store = Store::open(url).await?;
    let now = modelrollout_evidence::api::now_ms();
    let (t0, c0) = (Instant::now(), cpu_seconds());
    for from in (0..n).step_by(1000) {
        let k = 1000.min(n - from);
        store.record_predictions(&batch("v1", Role::Stable, from, k, now)).await?;
        store.record_predictions(&batch("v2", Role::Shadow, from, k, now)).await?;
    }
    let (t1, c1) = (Instant::now(), cpu_seconds());
    for from in (0..n).step_by(1000) {
        let labels: Vec<Label> = (from..from + 1000.min(n - from))
            .map(|i| Label { request_id: format!("req-{i:012}"), label: i % 5 == 0, time_ms: Some(now) })
            .collect();
        store.record_labels("bench", "fraud", &labels, now, 7 * 86_400_000).await?;
    }
    let (t2, c2) = (Instant::now(), cpu_seconds());
    let bytes = store.size_bytes().await?;
    let (rows, labels) = store.rows().await?;
    let predictions = 2 * n;
    println!(
        "{}",
        serde_json::json!({
            "backend": format!("{:?}", store.backend()),
            "predictions": predictions,
            "labels": n,
            "predictions_per_s": predictions as f64 / (t1 - t0).as_secs_f64(),
            "predictions_cpu_s": c1 - c0,
            "labels_joined_per_s": n as f64 / (t2 - t1).as_secs_f64(),
            "labels_cpu_s": c2 - c1,
            "rows": rows,
            "label_rows": labels,
            "bytes": bytes,
            "bytes_per_million_predictions": bytes as f64 / predictions as f64 * 1e6,
            "max_rss_mib": rusage().ru_maxrss as f64 / 1024.0,
        })
    );
    Ok(())
}
