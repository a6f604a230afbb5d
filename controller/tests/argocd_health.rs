//! The Argo CD health check shipped in the chart, run by Debian's Lua interpreter (`lua5.4`, which
//! tests/run.sh installs) against a ModelRollout in every phase, built with the real types.

use std::path::PathBuf;
use std::process::Command;

use modelrollout::api::{ModelRollout, ModelRolloutStatus, Phase};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A JSON value as a Lua table constructor (what Argo CD hands the script as `obj`).
fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter().map(|(k, v)| format!("[{k:?}] = {}", lua_literal(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Runs the chart's script on `mr`; returns (status, message).
fn health(mr: &ModelRollout) -> (String, String) {
    let script = root().join("charts/modelrollout/files/argocd-health.lua");
    let obj = lua_literal(&serde_json::to_value(mr).unwrap());
    let dir = std::env::temp_dir().join(format!("argocd-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let runner = dir.join(format!("run-{}.lua", RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
    std::fs::write(
        &runner,
        format!(
            "obj = {obj}\nlocal hs = dofile({:?})\nio.write(hs.status, \"\\t\", hs.message)\n",
            script.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new("lua5.4")
        .arg(&runner)
        .output()
        .expect("lua5.4 runs (Debian package lua5.4; tests/run.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\t').unwrap();
    (status.to_string(), message.to_string())
}

fn fraud(generation: i64, status: Option<ModelRolloutStatus>) -> ModelRollout {
    let text = std::fs::read_to_string(root().join("examples/fraud-gateway-api.yaml")).unwrap();
    let mut mr: ModelRollout = serde_yaml::from_str(&text).unwrap();
    mr.metadata.generation = Some(generation);
    mr.status = status;
    mr
}

fn in_phase(phase: Phase, message: &str) -> ModelRollout {
    fraud(
        3,
        Some(ModelRolloutStatus {
            observed_generation: Some(3),
            phase: Some(phase),
            reason: Some("SomeReason".into()),
            message: Some(message.into()),
            ..Default::default()
        }),
    )
}

#[test]
fn every_phase_maps_to_an_argo_cd_health_status() {
    let cases = [
        (Phase::Idle, "Healthy"),
        (Phase::Promoted, "Healthy"),
        (Phase::Progressing, "Progressing"),
        (Phase::Paused, "Suspended"),
        (Phase::RolledBack, "Degraded"),
        (Phase::Failed, "Degraded"),
    ];
    for (phase, expected) in cases {
        let (status, message) = health(&in_phase(phase, "v2 at canary-5"));
        assert_eq!(status, expected, "{phase:?}");
        assert_eq!(message, format!("{}: v2 at canary-5", phase.as_str()));
    }
}

#[test]
fn a_spec_the_controller_has_not_seen_is_progressing_not_an_old_verdict() {
    // Promoted for generation 3, but Git just applied generation 4 (a new version).
    let mut mr = in_phase(Phase::Promoted, "v2 promoted");
    mr.metadata.generation = Some(4);
    let (status, message) = health(&mr);
    assert_eq!(status, "Progressing");
    assert!(message.contains("latest spec"), "{message}");
    let (status, message) = health(&fraud(1, None));
    assert_eq!((status.as_str(), message.as_str()), ("Progressing", "Waiting for the modelrollout controller"));
}

#[test]
fn messages_with_quotes_and_newlines_survive() {
    let (status, message) = health(&in_phase(Phase::RolledBack, "gate \"fpr\" failed:\n0.09 > 0.03"));
    assert_eq!(status, "Degraded");
    assert_eq!(message, "RolledBack: gate \"fpr\" failed:\n0.09 > 0.03");
}
