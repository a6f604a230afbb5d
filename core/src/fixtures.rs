//! Builders for the core's tests (feature `fixtures`): observations, a started rollout, the
//! actions of a decision; the API's own fixtures re-exported.

use jiff::Timestamp;

pub use modelrollout_api::fixtures::*;

use crate::*;

pub fn obs(ready: bool) -> Observations {
    Observations { generation: Some(1), candidate_ready: ready, ..Default::default() }
}

pub fn v(value: f64, samples: u64) -> Measurement {
    Measurement::Value { value, samples }
}

/// Measurements where every built-in gate passes comfortably.
pub fn healthy() -> Vec<GateObservation> {
    vec![
        GateObservation { gate: GATE_ERROR_RATE.into(), candidate: v(0.0005, 1000), stable: v(0.0005, 5000) },
        GateObservation { gate: GATE_LATENCY_P95.into(), candidate: v(40.0, 1000), stable: v(38.0, 5000) },
        GateObservation { gate: GATE_FALSE_POSITIVE_RATE.into(), candidate: v(0.010, 500), stable: v(0.011, 2000) },
        GateObservation { gate: GATE_CAPTURE_RATE.into(), candidate: v(0.93, 200), stable: v(0.91, 800) },
    ]
}

pub fn with_gate(
    mut gates: Vec<GateObservation>,
    gate: &str,
    candidate: Measurement,
    stable: Measurement,
) -> Vec<GateObservation> {
    let g = gates.iter_mut().find(|g| g.gate == gate).unwrap();
    g.candidate = candidate;
    g.stable = stable;
    gates
}

pub fn analysed(gates: Vec<GateObservation>) -> Observations {
    Observations { analysis: Some(gates), ..obs(true) }
}

/// A rollout of v2 over stable v1, started at t0, candidate Ready.
pub fn started() -> (ModelRolloutSpec, ModelRolloutStatus) {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-100));
    let s = spec("v2", SHA_V2);
    let d = decide(&s, &first.status, &obs(true), t0());
    (s, d.status)
}

pub fn step(s: &ModelRolloutSpec, st: &ModelRolloutStatus, o: Observations, now: Timestamp) -> Decision {
    decide(s, st, &o, now)
}

/// Runs the rollout through `stages` passing stages; returns the status at the start of the next.
pub fn pass_stages(
    s: &ModelRolloutSpec,
    mut st: ModelRolloutStatus,
    stages: usize,
    mut now: i64,
) -> (ModelRolloutStatus, i64) {
    for _ in 0..stages {
        now += 10;
        st = step(s, &st, analysed(healthy()), at(now)).status;
    }
    (st, now)
}

pub fn traffic(d: &Decision) -> (String, Option<String>, i32, i32) {
    d.actions
        .iter()
        .find_map(|a| match a {
            Action::SetTraffic { stable_version, candidate_version, weight, mirror_percent, .. } => {
                Some((stable_version.clone(), candidate_version.clone(), *weight, *mirror_percent))
            }
            _ => None,
        })
        .expect("every decision routes traffic")
}

pub fn has_candidate_workload(d: &Decision) -> bool {
    d.actions.iter().any(|a| matches!(a, Action::EnsureWorkload { role: Role::Candidate, .. }))
}

pub fn scaled_down(d: &Decision) -> Vec<String> {
    d.actions
        .iter()
        .filter_map(|a| match a {
            Action::ScaleDown { version } => Some(version.clone()),
            _ => None,
        })
        .collect()
}

pub fn condition(st: &ModelRolloutStatus, t: &str) -> String {
    st.conditions.iter().find(|c| c.type_ == t).map(|c| c.status.clone()).unwrap_or_default()
}

pub fn answered(name: &str, kind: WebhookKind, code: u16) -> WebhookCall {
    WebhookCall {
        name: name.into(),
        kind,
        ok: (200..300).contains(&code),
        code: Some(code),
        message: format!("HTTP {code}"),
        attempts: 1,
    }
}
