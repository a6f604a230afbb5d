//! The demo's helper: `demo-driver manifest v1|v2|bad` prints the fraud example adapted to the
//! local demo (the real node's selector and toleration, stages of seconds instead of minutes; the
//! model comes from the models image, as in the example); `demo-driver traffic NS SUMMARY` sends
//! live traffic through the Gateway (Envoy), its labels posted once to the evidence service, as
//! the real-gateway end-to-end tests' clients do, until Ctrl-C or SIGTERM; then it writes to
//! SUMMARY, per stage, the weight
//! the controller set next to the candidate's share of the answers the clients got.

use std::fmt::Write as _;

use modelrollout::api::ModelRollout;
use modelrollout_e2e::{ClientLoad, StatusLog, Target, cluster_env, demo, stage_shares};

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["manifest", which] => print!("{}", serde_yaml::to_string(&demo(which)).unwrap()),
        ["traffic", ns, summary] => {
            let client = kube::Client::try_default().await.expect("KUBECONFIG from cluster.sh");
            let target = Target::Gateway { addr: cluster_env("MODELROLLOUT_GATEWAY"), host: format!("fraud.{ns}") };
            let load = ClientLoad::start(client.clone(), ns, "fraud", target, 200, None);
            let log = StatusLog::start(client.clone(), ns, "fraud");
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            let samples = log.stop().await;
            let answers = load.shutdown().await;
            let mr = kube::Api::<ModelRollout>::namespaced(client, ns).get("fraud").await.ok();
            let candidate = mr
                .and_then(|m| m.status)
                .and_then(|s| s.history.first().map(|h| h.version.clone()).or(s.candidate_version))
                .unwrap_or_default();
            let mut out = String::new();
            let _ = writeln!(
                out,
                "  {:<10} {:>10} {:>8} {:>9} {:>18}",
                "stage", "weight set", "mirror", "answers", "candidate answered"
            );
            for sh in stage_shares(&samples, &answers, &candidate) {
                let _ = writeln!(
                    out,
                    "  {:<10} {:>9}% {:>7}% {:>9} {:>10} ({:>5.1}%)",
                    sh.stage,
                    sh.weight,
                    sh.mirror,
                    sh.requests,
                    sh.candidate,
                    sh.share() * 100.0
                );
            }
            // The clients start before the rollout's route exists: Envoy answers 404 until it does.
            let first_ok = answers.iter().filter(|a| a.error.is_none()).map(|a| a.start).fold(f64::MAX, f64::min);
            let early = answers.iter().filter(|a| a.start < first_ok).count();
            let failed = answers.iter().filter(|a| a.start >= first_ok && a.error.is_some()).count();
            let _ = writeln!(
                out,
                "  {} requests through the Gateway since it first answered, {failed} failed ({early} sent before the route existed)",
                answers.len() - early
            );
            for e in answers.iter().filter(|a| a.start >= first_ok).filter_map(|a| a.error.as_ref()).take(3) {
                let _ = writeln!(out, "    failed: {e}");
            }
            std::fs::write(summary, out).expect("the summary file");
        }
        _ => {
            eprintln!("usage: demo-driver manifest v1|v2|bad | demo-driver traffic NAMESPACE SUMMARY_FILE");
            std::process::exit(2);
        }
    }
}
