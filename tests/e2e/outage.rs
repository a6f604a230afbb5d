//! (d) Prometheus stopped mid-stage: no promotion while it is down, the gates are inconclusive
//! (query errors), then the configured pause; with Prometheus back the rollout goes on.
//! Its own test binary: it stops the Prometheus every other test uses.

use std::time::Duration;

use modelrollout::api::{Phase, Verdict};
use modelrollout_e2e::*;
use serde_json::json;

#[tokio::test]
#[ignore = "needs the local control plane: bash tests/run.sh"]
async fn d_prometheus_down_mid_stage_pauses_and_the_rollout_goes_on_when_it_is_back() {
    let env = Env::kwok_fraud("outage", 150).await;
    let mut m =
        Manifest::fraud("v2", local_file("fraud-v2.onnx")).stages(four_stages(8)).gates(default_gates()).build();
    m["spec"]["analysis"]["inconclusiveLimit"] = json!(3);
    gitops_apply(&env.ns.name, &m);
    env.wait(Duration::from_secs(90), "the status", |s| s.stage_index == Some(1)).await;
    stop_prometheus();
    let paused =
        env.wait(Duration::from_secs(60), "the status", |s| s.phase == Some(Phase::Paused)).await.status.unwrap();
    assert_eq!(paused.reason.as_deref(), Some("InconclusiveAnalysis"), "{:?}", paused.message);
    assert_eq!(paused.stage_index, Some(1), "no promotion while Prometheus is down");
    let run = paused.last_analysis.unwrap();
    assert!(run.gates.iter().all(|g| g.verdict == Verdict::Error), "{:?}", run.gates);
    assert_eq!(paused.canary_weight, 5, "the pause holds the weights");
    // Still no promotion after more analyses on no data.
    let first = run.time.0;
    let later = env
        .wait(Duration::from_secs(60), "the status", |s| {
            s.last_analysis
                .as_ref()
                .is_some_and(|r| r.time.0 > first.checked_add(jiff::SignedDuration::from_secs(5)).unwrap())
        })
        .await
        .status
        .unwrap();
    assert_eq!((later.stage_index, later.phase), (Some(1), Some(Phase::Paused)));
    start_prometheus();
    let done = env.wait(Duration::from_secs(150), "the status", |s| s.phase == Some(Phase::Promoted)).await;
    assert_eq!(done.status.unwrap().stable_version.as_deref(), Some("v2"));
    env.shutdown().await;
}
