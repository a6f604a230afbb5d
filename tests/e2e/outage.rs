//! (d) Prometheus stopped mid-stage: no promotion while it is down, the gates are inconclusive
//! (query errors), then the configured pause; with Prometheus back the rollout goes on.
//! Its own test binary: it stops the Prometheus every other test uses.

use std::process::{Command, Stdio};
use std::time::Duration;

use modelrollout::api::{Phase, Verdict};
use modelrollout_e2e::scenario::*;
use modelrollout_e2e::*;
use serde_json::json;

fn cluster_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(cluster_env("MODELROLLOUT_CLUSTER_DIR"))
}

fn stop_prometheus() {
    let pid = std::fs::read_to_string(cluster_dir().join("prometheus.pid")).unwrap().trim().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    for _ in 0..100 {
        if !Command::new("kill").args(["-0", &pid]).stderr(Stdio::null()).status().unwrap().success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("Prometheus did not stop");
}

/// Starts Prometheus again with the cluster's exact command (same port, same data) and records
/// its PID where the cluster's teardown finds it.
fn start_prometheus() {
    let command = std::fs::read_to_string(cluster_dir().join("prometheus/command")).unwrap();
    let log = cluster_dir().join("logs/prometheus-restarted.log");
    let out = Command::new("bash")
        .args(["-c", &format!("setsid {command} >{} 2>&1 & echo $!", log.display())])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::write(cluster_dir().join("prometheus.pid"), &pid).unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn d_prometheus_down_mid_stage_pauses_and_the_rollout_goes_on_when_it_is_back() {
    let env = setup("outage", 150).await;
    let mut m = manifest("v2", "fraud-v2.onnx", four_stages(8), default_gates());
    m["spec"]["analysis"]["inconclusiveLimit"] = json!(3);
    gitops_apply(&env.ns.name, &m);
    wait_phase(&env, Duration::from_secs(90), |s| s.stage_index == Some(1)).await;
    stop_prometheus();
    let paused = wait_phase(&env, Duration::from_secs(60), |s| s.phase == Some(Phase::Paused)).await.status.unwrap();
    assert_eq!(paused.reason.as_deref(), Some("InconclusiveAnalysis"), "{:?}", paused.message);
    assert_eq!(paused.stage_index, Some(1), "no promotion while Prometheus is down");
    let run = paused.last_analysis.unwrap();
    assert!(run.gates.iter().all(|g| g.verdict == Verdict::Error), "{:?}", run.gates);
    assert_eq!(paused.canary_weight, 5, "the pause holds the weights");
    // Still no promotion after more analyses on no data.
    let first = run.time.0;
    let later = wait_phase(&env, Duration::from_secs(60), |s| {
        s.last_analysis
            .as_ref()
            .is_some_and(|r| r.time.0 > first.checked_add(jiff::SignedDuration::from_secs(5)).unwrap())
    })
    .await
    .status
    .unwrap();
    assert_eq!((later.stage_index, later.phase), (Some(1), Some(Phase::Paused)));
    start_prometheus();
    let done = wait_phase(&env, Duration::from_secs(150), |s| s.phase == Some(Phase::Promoted)).await;
    assert_eq!(done.status.unwrap().stable_version.as_deref(), Some("v2"));
    env.harness.shutdown().await;
}
