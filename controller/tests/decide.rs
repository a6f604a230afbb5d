//! Table-driven tests of the decision core: every rule, every threshold at its boundary.

use jiff::{SignedDuration, Timestamp};
use modelrollout::api::*;
use modelrollout::conditions::{reasons, types};
use modelrollout::core::*;

const SHA_V1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const SHA_V2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const SHA_V3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

fn d(text: &str) -> Duration {
    text.parse().expect("a duration")
}

fn t0() -> Timestamp {
    "2026-11-25T12:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_secs(secs)).unwrap()
}

fn feature(name: &str) -> Feature {
    Feature {
        name: name.into(),
        kind: FeatureType::Float,
        min: None,
        max: None,
        categories: None,
        max_length: None,
        nullable: false,
    }
}

fn model(version: &str, sha: &str) -> ModelSpec {
    ModelSpec {
        name: "fraud".into(),
        version: version.into(),
        artifact: Artifact {
            uri: format!("/models/fraud-{version}.onnx"),
            path: None,
            sha256: sha.into(),
            format: ModelFormat::Onnx,
            credentials_secret: None,
        },
        runtime: RuntimeSpec::default(),
        contract: DataContract { inputs: vec![feature("amount"), feature("age")], output: OutputSpec::default() },
    }
}

/// A spec with 10 s stages (shadow, 5, 25, 100), a 5 s interval and every built-in gate.
fn spec(version: &str, sha: &str) -> ModelRolloutSpec {
    let mut stages = default_stages();
    for s in &mut stages {
        s.min_duration = d("10s");
    }
    ModelRolloutSpec {
        model: model(version, sha),
        workload: WorkloadSpec::default(),
        traffic_routing: TrafficRouting {
            gateway_api: Some(GatewayApiRouting { http_route: "fraud".into(), create: false, parent_refs: vec![] }),
            istio: None,
            replica_ratio: None,
        },
        stages,
        analysis: AnalysisSpec {
            interval: d("5s"),
            failure_limit: 2,
            inconclusive_limit: 3,
            gates: Gates {
                error_rate: Some(UpperGate {
                    max: Some(0.002),
                    max_above_stable: None,
                    min_samples: 100,
                    judge: Judge::Threshold,
                    confidence: None,
                }),
                latency_p95: Some(UpperGate {
                    max: Some(120.0),
                    max_above_stable: Some(10.0),
                    min_samples: 100,
                    judge: Judge::Threshold,
                    confidence: None,
                }),
                false_positive_rate: Some(UpperGate {
                    max: None,
                    max_above_stable: Some(0.002),
                    min_samples: 50,
                    judge: Judge::Threshold,
                    confidence: None,
                }),
                capture_rate: Some(LowerGate {
                    min: None,
                    max_below_stable: Some(0.0),
                    min_samples: 50,
                    judge: Judge::Threshold,
                    confidence: None,
                }),
                custom: vec![],
            },
            ..AnalysisSpec::default()
        },
        rollback: RollbackPolicy { scale_down_delay: d("30s"), ..RollbackPolicy::default() },
        paused: false,
        operations: Operations::default(),
        notifications: Notifications::default(),
        acceptance: None,
        webhooks: Vec::new(),
    }
}

fn obs(ready: bool) -> Observations {
    Observations { generation: Some(1), candidate_ready: ready, ..Default::default() }
}

fn v(value: f64, samples: u64) -> Measurement {
    Measurement::Value { value, samples }
}

/// Measurements where every built-in gate passes comfortably.
fn healthy() -> Vec<GateObservation> {
    vec![
        GateObservation { gate: GATE_ERROR_RATE.into(), candidate: v(0.0005, 1000), stable: v(0.0005, 5000) },
        GateObservation { gate: GATE_LATENCY_P95.into(), candidate: v(40.0, 1000), stable: v(38.0, 5000) },
        GateObservation { gate: GATE_FALSE_POSITIVE_RATE.into(), candidate: v(0.010, 500), stable: v(0.011, 2000) },
        GateObservation { gate: GATE_CAPTURE_RATE.into(), candidate: v(0.93, 200), stable: v(0.91, 800) },
    ]
}

fn with_gate(
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

fn analysed(gates: Vec<GateObservation>) -> Observations {
    Observations { analysis: Some(gates), ..obs(true) }
}

/// A rollout of v2 over stable v1, started at t0, candidate Ready.
fn started() -> (ModelRolloutSpec, ModelRolloutStatus) {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-100));
    let s = spec("v2", SHA_V2);
    let d = decide(&s, &first.status, &obs(true), t0());
    (s, d.status)
}

fn step(s: &ModelRolloutSpec, st: &ModelRolloutStatus, o: Observations, now: Timestamp) -> Decision {
    decide(s, st, &o, now)
}

/// Runs the rollout through `stages` passing stages; returns the status at the start of the next.
fn pass_stages(
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

fn traffic(d: &Decision) -> (String, Option<String>, i32, i32) {
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

fn has_candidate_workload(d: &Decision) -> bool {
    d.actions.iter().any(|a| matches!(a, Action::EnsureWorkload { role: Role::Candidate, .. }))
}

fn scaled_down(d: &Decision) -> Vec<String> {
    d.actions
        .iter()
        .filter_map(|a| match a {
            Action::ScaleDown { version } => Some(version.clone()),
            _ => None,
        })
        .collect()
}

fn condition(st: &ModelRolloutStatus, t: &str) -> String {
    st.conditions.iter().find(|c| c.type_ == t).map(|c| c.status.clone()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// versions

#[test]
fn first_sight_makes_the_spec_version_stable() {
    let d = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), t0());
    assert_eq!(d.status.phase, Some(Phase::Idle));
    assert_eq!(d.status.stable_version.as_deref(), Some("v1"));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    assert!(!has_candidate_workload(&d));
    assert_eq!(condition(&d.status, types::READY), "True");
    assert_eq!(d.status.conditions.iter().find(|c| c.type_ == types::READY).unwrap().observed_generation, Some(1));
}

#[test]
fn same_version_is_a_no_op() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), t0());
    let again = decide(&spec("v1", SHA_V1), &first.status, &obs(false), at(60));
    assert_eq!(again.status, first.status);
    assert!(!status_changed(&first.status, &again.status));
    assert!(!again.actions.iter().any(|a| matches!(a, Action::Event { .. } | Action::Notify { .. })));
}

#[test]
fn new_version_starts_at_the_first_stage_against_stable() {
    let (_, st) = started();
    assert_eq!(st.phase, Some(Phase::Progressing));
    assert_eq!(st.stage_index, Some(0));
    assert_eq!(st.stage_name.as_deref(), Some("shadow"));
    assert_eq!((st.canary_weight, st.mirror_percent), (0, 100));
    assert_eq!(st.candidate_version.as_deref(), Some("v2"));
    assert_eq!(st.stable_version.as_deref(), Some("v1"));
    assert_eq!(condition(&st, types::PROGRESSING), "True");
    assert_eq!(condition(&st, types::RECONCILING), "True");
    assert_eq!(condition(&st, types::READY), "False");
}

#[test]
fn a_changed_digest_with_the_same_version_is_a_new_candidate() {
    let (s, st) = started();
    let (st, _) = pass_stages(&s, st, 1, 0);
    assert_eq!(st.stage_index, Some(1));
    let mut rebuilt = s.clone();
    rebuilt.model.artifact.sha256 = SHA_V3.into();
    let d = decide(&rebuilt, &st, &obs(true), at(30));
    assert_eq!(d.status.stage_index, Some(0));
    assert_eq!(d.status.candidate_sha256.as_deref(), Some(SHA_V3));
}

#[test]
fn newer_version_mid_rollout_restarts_from_the_first_stage_against_the_same_stable() {
    let (s, st) = started();
    let (st, now) = pass_stages(&s, st, 2, 0);
    assert_eq!(st.stage_index, Some(2));
    let d = decide(&spec("v3", SHA_V3), &st, &obs(false), at(now + 1));
    assert_eq!(d.status.stage_index, Some(0));
    assert_eq!(d.status.candidate_version.as_deref(), Some("v3"));
    assert_eq!(d.status.stable_version.as_deref(), Some("v1"));
    assert_eq!(d.status.history[0].outcome, Outcome::Superseded);
    assert_eq!(d.status.history[0].version, "v2");
    assert_eq!(scaled_down(&d), vec!["v2".to_string()]);
}

#[test]
fn spec_returning_to_stable_mid_rollout_rolls_back_to_idle() {
    let (s, st) = started();
    let (st, now) = pass_stages(&s, st, 1, 0);
    let d = decide(&spec("v1", SHA_V1), &st, &obs(true), at(now + 1));
    assert_eq!(d.status.phase, Some(Phase::Idle));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::REVERTED));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    assert_eq!(d.status.history[0].outcome, Outcome::RolledBack);
}

// ---------------------------------------------------------------------------------------------
// advancing

#[test]
fn stage_advances_only_after_min_duration_and_a_passing_analysis() {
    // (seconds into the stage, analysis, advances?)
    let inconclusive = with_gate(healthy(), GATE_ERROR_RATE, Measurement::NoData, v(0.0, 100));
    let cases: Vec<(&str, i64, Option<Vec<GateObservation>>, bool)> = vec![
        ("before min duration, passing", 9, Some(healthy()), false),
        ("at min duration exactly, passing", 10, Some(healthy()), true),
        ("after min duration, passing", 11, Some(healthy()), true),
        ("after min duration, no analysis yet", 11, None, false),
        ("after min duration, inconclusive", 11, Some(inconclusive), false),
    ];
    for (name, secs, analysis, advances) in cases {
        let (s, st) = started();
        let d = step(&s, &st, Observations { analysis, ..obs(true) }, at(secs));
        assert_eq!(d.status.stage_index == Some(1), advances, "{name}");
    }
}

#[test]
fn a_pass_from_an_earlier_minute_of_the_stage_counts_once_min_duration_is_reached() {
    let (s, st) = started();
    let st = step(&s, &st, analysed(healthy()), at(5)).status;
    assert_eq!(st.stage_index, Some(0));
    let d = step(&s, &st, obs(true), at(10));
    assert_eq!(d.status.stage_index, Some(1));
}

#[test]
fn a_pass_from_the_previous_stage_does_not_advance_the_next() {
    let (s, st) = started();
    let st = step(&s, &st, analysed(healthy()), at(10)).status;
    assert_eq!(st.stage_index, Some(1));
    let d = step(&s, &st, obs(true), at(25));
    assert_eq!(d.status.stage_index, Some(1), "needs its own analysis");
}

#[test]
fn each_stage_sets_its_weight_and_mirror() {
    let (s, st) = started();
    let mut expected = vec![(1, 5, 0), (2, 25, 0), (3, 100, 0)].into_iter();
    let mut st = st;
    for i in 1..=3 {
        let d = step(&s, &st, analysed(healthy()), at(10 * i));
        let (idx, w, m) = expected.next().unwrap();
        assert_eq!(d.status.stage_index, Some(idx));
        assert_eq!(traffic(&d), ("v1".into(), Some("v2".into()), w, m));
        assert!(d.actions.iter().any(|a| matches!(a, Action::Notify { event: NotificationEvent::StageChanged, .. })));
        st = d.status;
    }
}

#[test]
fn passing_the_last_stage_promotes_and_keeps_the_old_stable_for_a_while() {
    let (s, st) = started();
    let (st, now) = pass_stages(&s, st, 3, 0);
    assert_eq!(st.stage_name.as_deref(), Some("full"));
    let d = step(&s, &st, analysed(healthy()), at(now + 10));
    assert_eq!(d.status.phase, Some(Phase::Promoted));
    assert_eq!(d.status.stable_version.as_deref(), Some("v2"));
    assert_eq!(d.status.stable.as_ref().unwrap().version, "v2");
    assert_eq!(d.status.candidate_version, None);
    assert_eq!(traffic(&d), ("v2".into(), None, 0, 0));
    assert_eq!(d.status.history[0].outcome, Outcome::Promoted);
    assert!(scaled_down(&d).is_empty(), "old stable kept for previousStableScaleDownDelay");
    assert_eq!(d.status.pending_scale_downs[0].version, "v1");
    assert_eq!(condition(&d.status, types::READY), "True");
    // 10 minutes later the old stable goes.
    let later = step(&s, &d.status, obs(false), at(now + 10 + 600));
    assert_eq!(scaled_down(&later), vec!["v1".to_string()]);
    assert!(later.status.pending_scale_downs.is_empty());
    // The same version afterwards is a no-op.
    let again = step(&s, &later.status, obs(false), at(now + 700));
    assert!(!status_changed(&later.status, &again.status));
}

// ---------------------------------------------------------------------------------------------
// failing and rolling back

#[test]
fn failure_limit_consecutive_failures_roll_back() {
    let (s, st) = started();
    let (st, _) = pass_stages(&s, st, 1, 0); // 5% stage
    let bad = with_gate(healthy(), GATE_FALSE_POSITIVE_RATE, v(0.05, 500), v(0.011, 2000));
    let one = step(&s, &st, analysed(bad.clone()), at(15));
    assert_eq!(one.status.phase, Some(Phase::Progressing));
    assert_eq!(one.status.consecutive_failures, 1);
    assert_eq!(traffic(&one).2, 5, "one failure below the limit keeps the weight");
    let two = step(&s, &one.status, analysed(bad), at(20));
    let st = &two.status;
    assert_eq!(st.phase, Some(Phase::RolledBack));
    assert_eq!(st.reason.as_deref(), Some(reasons::GATES_FAILED));
    assert!(
        st.message.as_ref().unwrap().contains("falsePositiveRate: 0.05 > stable 0.011 + 0.002"),
        "{:?}",
        st.message
    );
    assert_eq!((st.canary_weight, st.mirror_percent), (0, 0));
    assert_eq!(traffic(&two), ("v1".into(), None, 0, 0));
    assert!(!has_candidate_workload(&two));
    assert!(scaled_down(&two).is_empty(), "candidate kept for scaleDownDelay");
    assert_eq!(st.pending_scale_downs[0].version, "v2");
    assert_eq!(st.history[0].outcome, Outcome::RolledBack);
    assert_eq!(condition(st, types::DEGRADED), "True");
    assert_eq!(condition(st, types::STALLED), "True");
    assert!(two.actions.iter().any(|a| matches!(a, Action::Notify { event: NotificationEvent::RolledBack, .. })));
    assert!(two.actions.iter().any(|a| matches!(a, Action::Event { kind: EventType::Warning, .. })));
    let later = step(&s, st, obs(true), at(50));
    assert_eq!(scaled_down(&later), vec!["v2".to_string()], "after 30 s");
    assert_eq!(later.status.phase, Some(Phase::RolledBack), "stays rolled back");
}

#[test]
fn a_pass_between_failures_resets_the_streak() {
    let (s, st) = started();
    let bad = with_gate(healthy(), GATE_ERROR_RATE, v(0.01, 1000), v(0.0, 1000));
    let st = step(&s, &st, analysed(bad.clone()), at(5)).status;
    let st = step(&s, &st, analysed(healthy()), at(6)).status;
    assert_eq!(st.consecutive_failures, 0);
    let st = step(&s, &st, analysed(bad), at(7)).status;
    assert_eq!(st.phase, Some(Phase::Progressing));
}

#[test]
fn inconclusive_between_failures_does_not_reset_the_streak() {
    let (s, st) = started();
    let bad = with_gate(healthy(), GATE_ERROR_RATE, v(0.01, 1000), v(0.0, 1000));
    let gap = with_gate(healthy(), GATE_ERROR_RATE, Measurement::NoData, v(0.0, 1000));
    let st = step(&s, &st, analysed(bad.clone()), at(5)).status;
    let st = step(&s, &st, analysed(gap), at(6)).status;
    let st = step(&s, &st, analysed(bad), at(7)).status;
    assert_eq!(st.phase, Some(Phase::RolledBack));
}

// ---------------------------------------------------------------------------------------------
// gate judgement at the boundaries

fn upper(max: Option<f64>, above: Option<f64>) -> GateDef {
    GateDef {
        name: "g".into(),
        kind: GateKind::ErrorRate,
        min_samples: 100,
        max,
        min: None,
        max_above_stable: above,
        max_below_stable: None,
        judge: Judge::Threshold,
        confidence: 0.95,
    }
}

fn lower(min: Option<f64>, below: Option<f64>) -> GateDef {
    GateDef {
        name: "g".into(),
        kind: GateKind::CaptureRate,
        min_samples: 100,
        max: None,
        min,
        max_above_stable: None,
        max_below_stable: below,
        judge: Judge::Threshold,
        confidence: 0.95,
    }
}

#[test]
fn gate_verdicts_at_their_boundaries() {
    let o = |c: Measurement, s: Measurement| GateObservation { gate: "g".into(), candidate: c, stable: s };
    let cases: Vec<(&str, GateDef, GateObservation, Verdict)> = vec![
        ("value equal to max passes", upper(Some(0.002), None), o(v(0.002, 100), Measurement::NoData), Verdict::Pass),
        ("value just over max fails", upper(Some(0.002), None), o(v(0.00201, 100), Measurement::NoData), Verdict::Fail),
        (
            "samples equal to min samples count",
            upper(Some(1.0), None),
            o(v(0.5, 100), Measurement::NoData),
            Verdict::Pass,
        ),
        (
            "one sample short is inconclusive",
            upper(Some(1.0), None),
            o(v(0.5, 99), Measurement::NoData),
            Verdict::Inconclusive,
        ),
        (
            "FPR equal to stable + 0.2 points passes",
            upper(None, Some(0.002)),
            o(v(0.012, 100), v(0.01, 100)),
            Verdict::Pass,
        ),
        (
            "FPR over stable + 0.2 points fails",
            upper(None, Some(0.002)),
            o(v(0.0121, 100), v(0.01, 100)),
            Verdict::Fail,
        ),
        ("p95 equal to stable + 10 ms passes", upper(None, Some(10.0)), o(v(50.0, 100), v(40.0, 100)), Verdict::Pass),
        ("p95 over stable + 10 ms fails", upper(None, Some(10.0)), o(v(50.5, 100), v(40.0, 100)), Verdict::Fail),
        ("capture equal to stable passes", lower(None, Some(0.0)), o(v(0.9, 100), v(0.9, 100)), Verdict::Pass),
        ("capture below stable fails", lower(None, Some(0.0)), o(v(0.899, 100), v(0.9, 100)), Verdict::Fail),
        ("capture equal to min passes", lower(Some(0.8), None), o(v(0.8, 100), Measurement::NoData), Verdict::Pass),
        ("capture below min fails", lower(Some(0.8), None), o(v(0.79, 100), Measurement::NoData), Verdict::Fail),
        (
            "relative gate, stable missing: inconclusive",
            upper(None, Some(0.002)),
            o(v(0.0, 100), Measurement::NoData),
            Verdict::Inconclusive,
        ),
        (
            "relative gate, stable NaN: inconclusive",
            upper(None, Some(0.002)),
            o(v(0.0, 100), Measurement::NotANumber),
            Verdict::Inconclusive,
        ),
        (
            "relative gate, stable too few samples: inconclusive",
            upper(None, Some(0.002)),
            o(v(0.0, 100), v(0.0, 99)),
            Verdict::Inconclusive,
        ),
        (
            "relative gate, stable query error: error",
            upper(None, Some(0.002)),
            o(v(0.0, 100), Measurement::QueryError("timeout".into())),
            Verdict::Error,
        ),
        (
            "absolute fail wins over a missing baseline",
            upper(Some(0.01), Some(0.002)),
            o(v(0.5, 100), Measurement::NoData),
            Verdict::Fail,
        ),
        (
            "candidate no data: inconclusive",
            upper(Some(1.0), None),
            o(Measurement::NoData, v(0.0, 100)),
            Verdict::Inconclusive,
        ),
        (
            "candidate NaN: inconclusive",
            upper(Some(1.0), None),
            o(Measurement::sample(f64::NAN, 500), v(0.0, 100)),
            Verdict::Inconclusive,
        ),
        (
            "candidate +Inf: inconclusive",
            upper(Some(1.0), None),
            o(Measurement::sample(f64::INFINITY, 500), v(0.0, 100)),
            Verdict::Inconclusive,
        ),
        (
            "candidate query error: error",
            upper(Some(1.0), None),
            o(Measurement::QueryError("connection refused".into()), v(0.0, 100)),
            Verdict::Error,
        ),
    ];
    for (name, def, observation, want) in cases {
        let got = judge(&def, Some(&observation));
        assert_eq!(got.verdict, want, "{name}: {}", got.message);
    }
    assert_eq!(judge(&upper(Some(1.0), None), None).verdict, Verdict::Inconclusive, "not measured");
}

#[test]
fn judged_values_land_in_the_result() {
    let r = judge(
        &upper(None, Some(0.002)),
        Some(&GateObservation { gate: "g".into(), candidate: v(0.011, 300), stable: v(0.01, 900) }),
    );
    assert_eq!((r.value, r.stable_value, r.samples), (Some(0.011), Some(0.01), Some(300)));
    assert!(r.limit.unwrap().starts_with("<= 0.012"));
}

#[test]
fn overall_verdict_is_the_worst_gate() {
    let r = |v| GateResult {
        name: "g".into(),
        verdict: v,
        value: None,
        stable_value: None,
        limit: None,
        samples: None,
        bound: None,
        message: String::new(),
        sequential: None,
    };
    use Verdict::*;
    assert_eq!(overall_verdict(&[r(Pass), r(Pass)]), Pass);
    assert_eq!(overall_verdict(&[r(Pass), r(Inconclusive)]), Inconclusive);
    assert_eq!(overall_verdict(&[r(Inconclusive), r(Error)]), Error);
    assert_eq!(overall_verdict(&[r(Error), r(Fail)]), Fail);
    assert_eq!(overall_verdict(&[]), Inconclusive, "no gates: no evidence, never a pass");
}

// ---------------------------------------------------------------------------------------------
// inconclusive data

#[test]
fn every_kind_of_missing_data_is_inconclusive_and_never_advances() {
    let kinds = vec![
        ("no data", Measurement::NoData),
        ("NaN", Measurement::sample(f64::NAN, 1000)),
        ("+Inf", Measurement::sample(f64::INFINITY, 1000)),
        ("too few samples", v(0.0, 3)),
        ("query error", Measurement::QueryError("connection refused".into())),
    ];
    for (name, m) in kinds {
        let (s, st) = started();
        let gates = with_gate(healthy(), GATE_ERROR_RATE, m, v(0.0, 1000));
        let d = step(&s, &st, analysed(gates), at(60));
        assert_eq!(d.status.stage_index, Some(0), "{name}: must not advance");
        assert_eq!(d.status.consecutive_inconclusive, 1, "{name}");
        assert_eq!(d.status.consecutive_failures, 0, "{name}");
        assert_ne!(d.status.last_analysis.unwrap().verdict, Verdict::Pass, "{name}");
    }
}

#[test]
fn inconclusive_limit_pauses_then_a_passing_analysis_resumes() {
    let (s, st) = started();
    let gap = with_gate(
        healthy(),
        GATE_LATENCY_P95,
        Measurement::QueryError("prometheus down".into()),
        Measurement::QueryError("prometheus down".into()),
    );
    let mut st = st;
    for i in 1..=2 {
        st = step(&s, &st, analysed(gap.clone()), at(5 * i)).status;
        assert_eq!(st.phase, Some(Phase::Progressing), "below the limit");
    }
    let d = step(&s, &st, analysed(gap.clone()), at(15));
    assert_eq!(d.status.phase, Some(Phase::Paused));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::INCONCLUSIVE_ANALYSIS));
    assert_eq!(traffic(&d).3, 100, "pause holds the weights");
    assert!(d.actions.iter().any(|a| matches!(a, Action::Notify { event: NotificationEvent::Paused, .. })));
    assert_eq!(condition(&d.status, types::PAUSED), "True");
    // Still paused while data stays missing, past min duration: never promotes.
    let still = step(&s, &d.status, analysed(gap), at(40));
    assert_eq!((still.status.phase, still.status.stage_index), (Some(Phase::Paused), Some(0)));
    // Data back: resumes (and, past min duration with a pass, advances).
    let back = step(&s, &still.status, analysed(healthy()), at(45));
    assert_eq!(back.status.phase, Some(Phase::Progressing));
    assert_eq!(back.status.stage_index, Some(1));
}

#[test]
fn inconclusive_limit_rolls_back_when_the_policy_says_so() {
    let (mut s, st) = started();
    s.rollback.on_inconclusive = InconclusivePolicy::Rollback;
    let gap = with_gate(healthy(), GATE_CAPTURE_RATE, Measurement::NoData, Measurement::NoData);
    let mut st = st;
    for i in 1..=3 {
        st = step(&s, &st, analysed(gap.clone()), at(5 * i)).status;
    }
    assert_eq!(st.phase, Some(Phase::RolledBack));
    assert_eq!(st.reason.as_deref(), Some(reasons::INCONCLUSIVE_ANALYSIS));
    assert_eq!(st.canary_weight, 0);
}

// ---------------------------------------------------------------------------------------------
// operations

#[test]
fn paused_holds_weights_and_does_not_advance() {
    let (s, st) = started();
    let (st, now) = pass_stages(&s, st, 2, 0);
    let mut paused = s.clone();
    paused.paused = true;
    let d = step(&paused, &st, analysed(healthy()), at(now + 60));
    assert_eq!(d.status.phase, Some(Phase::Paused));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::PAUSED_BY_SPEC));
    assert_eq!((d.status.stage_index, traffic(&d).2), (Some(2), 25));
    assert!(!analysis_due(&paused, &d.status, AnalysisSlot::default(), at(now + 600)));
    let resumed = step(&s, &d.status, obs(true), at(now + 61));
    assert_eq!(resumed.status.phase, Some(Phase::Progressing));
    assert_eq!(resumed.status.reason.as_deref(), Some(reasons::RESUMED));
}

fn with_abort(mut s: ModelRolloutSpec, id: &str) -> ModelRolloutSpec {
    s.operations.abort = Some(OperationRequest { id: id.into(), reason: Some("pager went off".into()) });
    s
}

#[test]
fn abort_at_any_stage_rolls_back() {
    for stages_passed in 0..=3 {
        let (s, st) = started();
        let (st, now) = pass_stages(&s, st, stages_passed, 0);
        let d = step(&with_abort(s, "a1"), &st, obs(true), at(now + 1));
        assert_eq!(d.status.phase, Some(Phase::RolledBack), "stage {stages_passed}");
        assert_eq!(d.status.reason.as_deref(), Some(reasons::ABORTED));
        assert!(d.status.message.as_ref().unwrap().contains("pager went off"));
        assert_eq!(d.status.history[0].outcome, Outcome::Aborted);
        assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    }
}

#[test]
fn abort_works_while_paused() {
    let (mut s, st) = started();
    s.paused = true;
    let st = step(&s, &st, obs(true), at(1)).status;
    let d = step(&with_abort(s, "a1"), &st, obs(true), at(2));
    assert_eq!(d.status.phase, Some(Phase::RolledBack));
}

#[test]
fn retry_after_rollback_starts_again_and_old_requests_do_not_refire() {
    let (s, st) = started();
    let aborted = with_abort(s, "a1");
    let st = step(&aborted, &st, obs(true), at(1)).status;
    assert_eq!(st.phase, Some(Phase::RolledBack));
    // Nothing happens while the abort request just sits in the spec.
    let same = step(&aborted, &st, obs(true), at(2));
    assert_eq!(same.status.phase, Some(Phase::RolledBack));
    let mut retried = aborted.clone();
    retried.operations.retry = Some(OperationRequest { id: "r1".into(), reason: None });
    let d = step(&retried, &same.status, obs(true), at(3));
    assert_eq!(d.status.phase, Some(Phase::Progressing));
    assert_eq!(d.status.stage_index, Some(0));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::RETRIED));
    assert!(d.status.pending_scale_downs.is_empty(), "the retried candidate is not scaled down");
    // The old abort id (still in the spec) does not abort the retried rollout.
    let next = step(&retried, &d.status, obs(true), at(4));
    assert_eq!(next.status.phase, Some(Phase::Progressing));
}

#[test]
fn retry_while_progressing_is_recorded_and_ignored() {
    let (mut s, st) = started();
    let (st, now) = pass_stages(&s, st, 2, 0);
    assert_eq!(st.stage_index, Some(2));
    s.operations.retry = Some(OperationRequest { id: "r1".into(), reason: None });
    let d = step(&s, &st, obs(true), at(now + 1));
    // A retry that acted would start over at the first stage with a new start time.
    assert_eq!(d.status.stage_index, Some(2), "the rollout goes on where it was");
    assert_eq!(d.status.rollout_start_time, st.rollout_start_time);
    assert_eq!(d.status.handled_operations.retry.as_deref(), Some("r1"), "and the request cannot fire later");
    let mut failed = d.status.clone();
    failed.phase = Some(Phase::RolledBack);
    let later = step(&s, &failed, obs(true), at(now + 2));
    assert_eq!(later.status.phase, Some(Phase::RolledBack), "r1 was handled while progressing");
}

#[test]
fn promote_moves_one_stage_once_per_request() {
    let (mut s, st) = started();
    s.operations.promote = Some(PromoteRequest { id: "p1".into(), reason: Some("looks good".into()), full: false });
    let d = step(&s, &st, obs(true), at(1));
    assert_eq!(d.status.stage_index, Some(1));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::MANUALLY_PROMOTED));
    let again = step(&s, &d.status, obs(true), at(2));
    assert_eq!(again.status.stage_index, Some(1), "the same request does not promote twice");
}

#[test]
fn promote_full_makes_the_candidate_stable() {
    let (mut s, st) = started();
    s.operations.promote = Some(PromoteRequest { id: "p1".into(), reason: None, full: true });
    let d = step(&s, &st, obs(true), at(1));
    assert_eq!(d.status.phase, Some(Phase::Promoted));
    assert_eq!(d.status.stable_version.as_deref(), Some("v2"));
}

#[test]
fn requests_already_in_the_spec_do_not_fire_on_a_new_rollout() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-10));
    let s = with_abort(spec("v2", SHA_V2), "old");
    let d = decide(&s, &first.status, &obs(true), t0());
    let d = decide(&s, &d.status, &obs(true), at(1));
    assert_eq!(d.status.phase, Some(Phase::Progressing));
}

#[test]
fn manual_approval_holds_until_promoted() {
    let (mut s, st) = started();
    s.stages[1].manual_approval = true;
    let (st, now) = pass_stages(&s, st, 1, 0);
    let d = step(&s, &st, analysed(healthy()), at(now + 10));
    assert_eq!((d.status.phase, d.status.stage_index), (Some(Phase::Paused), Some(1)));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::AWAITING_APPROVAL));
    let d = step(&s, &d.status, analysed(healthy()), at(now + 100));
    assert_eq!(d.status.stage_index, Some(1), "still waiting");
    s.operations.promote = Some(PromoteRequest { id: "ok".into(), reason: None, full: false });
    let d = step(&s, &d.status, obs(true), at(now + 101));
    assert_eq!((d.status.phase, d.status.stage_index), (Some(Phase::Progressing), Some(2)));
}

// ---------------------------------------------------------------------------------------------
// readiness, contracts, routers

#[test]
fn no_weight_moves_to_an_unready_candidate_and_the_deadline_fails_the_rollout() {
    let (mut s, st) = started();
    s.workload.progress_deadline = d("60s");
    let (st, now) = pass_stages(&s, st, 1, 0);
    let d = step(&s, &st, obs(false), at(now + 1));
    assert_eq!(traffic(&d).2, 0, "unready candidate gets no traffic");
    assert_eq!(d.status.reason.as_deref(), Some(reasons::WAITING_FOR_CANDIDATE));
    assert_eq!(
        d.requeue_after,
        Some(std::time::Duration::from_secs(5)),
        "its pods are looked at again soon (nothing watches them), not only at the deadline"
    );
    let before = step(&s, &d.status, obs(false), at(now + 60));
    assert_eq!(before.status.phase, Some(Phase::Progressing), "deadline not yet passed");
    let after = step(&s, &before.status, obs(false), at(now + 61));
    assert_eq!(after.status.phase, Some(Phase::Failed));
    assert_eq!(after.status.reason.as_deref(), Some(reasons::PROGRESS_DEADLINE_EXCEEDED));
    assert_eq!(traffic(&after), ("v1".into(), None, 0, 0));
    assert!(
        after
            .actions
            .iter()
            .any(|a| matches!(a, Action::EnsureWorkload { role: Role::Stable, model } if model.version == "v1"))
    );
}

#[test]
fn a_candidate_pod_that_cannot_start_or_crashes_fails_the_rollout_at_once_naming_why() {
    use modelrollout::core::pods::{Trouble, TroubleKind};
    let trouble = |kind, detail: &str| Observations {
        candidate_trouble: Some(Trouble { pod: "fraud-v2-abc".into(), kind, detail: detail.into() }),
        ..obs(false)
    };
    // Before any traffic: the image cannot be pulled.
    let (s, st) = started();
    let d = step(&s, &st, trouble(TroubleKind::CannotStart, "container sidecar: ImagePullBackOff: x"), at(1));
    assert_eq!((d.status.phase, d.status.reason.as_deref()), (Some(Phase::Failed), Some(reasons::CANDIDATE_FAILED)));
    assert_eq!(
        d.status.message.as_deref(),
        Some("v2 rolled back: candidate v2: pod fraud-v2-abc cannot start: container sidecar: ImagePullBackOff: x")
    );
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0), "no traffic ever moved");
    // After traffic moved: a crash takes it back at once, well before the progress deadline.
    let (st, now) = pass_stages(&s, started().1, 1, 0);
    assert!(st.canary_weight > 0, "the candidate had traffic");
    let d = step(&s, &st, trouble(TroubleKind::Crashed, "container sidecar exited with code 137 (Error)"), at(now + 2));
    assert_eq!((d.status.phase, d.status.reason.as_deref()), (Some(Phase::Failed), Some(reasons::CANDIDATE_FAILED)));
    assert!(d.status.message.as_deref().unwrap().contains("crashed: container sidecar exited with code 137"));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    // A pod that merely is not Ready yet is waited for, as before.
    let d = step(&s, &st, obs(false), at(now + 2));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::WAITING_FOR_CANDIDATE));
}

#[test]
fn a_candidate_ready_again_restarts_the_stage_clock() {
    let (s, st) = started();
    let st = step(&s, &st, obs(false), at(1)).status;
    let st = step(&s, &st, obs(true), at(20)).status;
    assert_eq!(st.stage_start_time.unwrap().0, at(20));
    assert_eq!(st.mirror_percent, 100);
}

#[test]
fn a_candidate_needing_inputs_stable_lacks_is_refused_before_anything_moves() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-10));
    let mut s = spec("v2", SHA_V2);
    s.model.contract.inputs.push(feature("device_fingerprint"));
    let d = decide(&s, &first.status, &obs(false), t0());
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::CONTRACT_MISMATCH));
    assert!(d.status.message.as_ref().unwrap().contains("device_fingerprint"));
    assert!(!has_candidate_workload(&d));
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    // And it stays refused on the next reconcile.
    let again = decide(&s, &d.status, &obs(false), at(1));
    assert_eq!(again.status.phase, Some(Phase::Failed));
    assert!(!has_candidate_workload(&again));
}

#[test]
fn replica_ratio_skips_shadow_and_says_so() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-10));
    let mut s = spec("v2", SHA_V2);
    s.traffic_routing = TrafficRouting { replica_ratio: Some(ReplicaRatioRouting {}), ..Default::default() };
    let d = decide(&s, &first.status, &obs(true), t0());
    assert_eq!(d.status.stage_index, Some(1));
    assert_eq!(traffic(&d).2, 5);
    assert!(d.status.message.as_ref().unwrap().contains("cannot mirror"));
}

#[test]
fn replica_ratio_keeps_the_stage_weight_while_the_stage_s_new_candidate_pods_come_up() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-10));
    let mut s = spec("v2", SHA_V2);
    s.traffic_routing = TrafficRouting { replica_ratio: Some(ReplicaRatioRouting {}), ..Default::default() };
    let st = decide(&s, &first.status, &obs(true), t0()).status;
    let (st, now) = pass_stages(&s, st, 1, 0);
    let weight = st.canary_weight;
    assert!(weight > 5, "a later stage: more candidate pods, so the candidate is unready a moment");
    let d = step(&s, &st, obs(false), at(now + 1));
    assert_eq!(d.status.canary_weight, weight, "the weight (the pods) stays: zeroing it would scale them away");
    assert_eq!(d.status.reason.as_deref(), Some(reasons::WAITING_FOR_CANDIDATE));
    assert!(d.status.candidate_unready_since.is_some(), "the progress deadline still runs");
    let ready = step(&s, &d.status, obs(true), at(now + 5));
    assert_eq!(ready.status.canary_weight, weight);
    assert!(ready.status.candidate_unready_since.is_none());
    // Before any traffic (the candidate's first pod) there is no weight to keep.
    let fresh = decide(&s, &first.status, &obs(false), t0());
    assert_eq!(fresh.status.canary_weight, 0);
}

// ---------------------------------------------------------------------------------------------
// time

#[test]
fn a_clock_that_goes_backwards_neither_advances_nor_analyses() {
    let (s, st) = started();
    assert!(!analysis_due(&s, &st, AnalysisSlot::default(), at(-30)));
    assert!(!analysis_due(&s, &st, AnalysisSlot::default(), at(4)));
    assert!(analysis_due(&s, &st, AnalysisSlot::default(), at(5)));
    let d = step(&s, &st, analysed(healthy()), at(-30));
    assert_eq!(d.status.stage_index, Some(0), "min duration cannot be met in the past");
    let d = step(&s, &d.status, obs(true), at(-20));
    assert_eq!(d.status.stage_index, Some(0));
}

#[test]
fn analysis_interval_counts_from_the_last_analysis_in_the_stage() {
    let (s, st) = started();
    let st = step(&s, &st, analysed(healthy()), at(5)).status;
    assert!(!analysis_due(&s, &st, AnalysisSlot::default(), at(9)));
    assert!(analysis_due(&s, &st, AnalysisSlot::default(), at(10)));
    assert_eq!(next_analysis_at(&s, &st, AnalysisSlot::default()), Some(at(10)));
}

/// Status as the apiserver stores it: times to the second.
fn stored(mut st: ModelRolloutStatus) -> ModelRolloutStatus {
    let round = |t: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
        t.0 = Timestamp::from_second(t.0.as_second()).unwrap();
    };
    st.stage_start_time.iter_mut().for_each(round);
    st.last_analysis.iter_mut().for_each(|run| round(&mut run.time));
    st
}

fn ms(t: Timestamp) -> i64 {
    t.duration_since(t0()).as_millis() as i64
}

#[test]
fn rollouts_started_together_analyse_apart_and_stay_apart() {
    let (s, st) = started(); // interval 5 s: a spread of 1 s
    let slots: Vec<AnalysisSlot> = (0..200).map(|i| AnalysisSlot::of(&format!("0b6f1c2e-uid-{i}"))).collect();
    assert_eq!(AnalysisSlot::of("0b6f1c2e-uid-7"), slots[7], "a restart keeps the slot");
    let mut per_100ms = [0; 10];
    for &slot in &slots {
        let first = ms(next_analysis_at(&s, &st, slot).unwrap());
        assert!((5000..6000).contains(&first), "{first} ms");
        per_100ms[(first as usize - 5000) / 100] += 1;
    }
    assert!(per_100ms.iter().all(|&n| (5..=40).contains(&n)), "spread over the second: {per_100ms:?}");

    // Later analyses keep the rollout's place on the beat, although status drops the fraction.
    let slot = slots[3];
    let first = next_analysis_at(&s, &st, slot).unwrap();
    let waiting = step(&s, &st, Observations { analysis_slot: slot, ..obs(true) }, at(1));
    assert_eq!(waiting.requeue_after, Some(first.duration_since(at(1)).unsigned_abs()));
    let taken = first.checked_add(SignedDuration::from_millis(30)).unwrap();
    let d = step(&s, &st, Observations { analysis_slot: slot, ..analysed(healthy()) }, taken);
    let st = stored(d.status);
    assert!(!analysis_due(&s, &st, slot, taken), "the analysis just taken is not due again");
    let second = first.checked_add(SignedDuration::from_secs(5)).unwrap();
    assert_eq!(next_analysis_at(&s, &st, slot), Some(second));
    assert!(d.requeue_after.unwrap() <= second.duration_since(taken).unsigned_abs());

    // A late analysis is followed by the next beat, not by a burst and not by a drift.
    let (s, st) = started();
    let late = first.checked_add(SignedDuration::from_millis(2300)).unwrap();
    let st = stored(step(&s, &st, Observations { analysis_slot: slot, ..analysed(healthy()) }, late).status);
    assert_eq!(st.stage_index, Some(0));
    assert_eq!(next_analysis_at(&s, &st, slot), Some(second));
}

#[test]
fn requeue_wakes_for_the_next_analysis() {
    let (s, st) = started();
    let d = step(&s, &st, obs(true), at(1));
    assert_eq!(d.requeue_after, Some(std::time::Duration::from_secs(4)));
}

#[test]
fn invalid_durations_change_nothing_and_say_why() {
    let (mut s, st) = started();
    s.analysis.interval = d("0s");
    let d = step(&s, &st, obs(true), at(1));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::INVALID_SPEC));
    assert_eq!(d.status.stage_index, st.stage_index);
    assert!(!d.actions.iter().any(|a| matches!(a, Action::SetTraffic { .. })));
}

#[test]
fn history_is_bounded() {
    let mut st = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-10)).status;
    for i in 0..15 {
        let s = with_abort(spec(&format!("v{}", i + 10), SHA_V2), &format!("a{i}"));
        st = decide(&s, &st, &obs(true), at(i * 10)).status;
        st.handled_operations.abort = None;
        st = decide(&s, &st, &obs(true), at(i * 10 + 1)).status;
        assert_eq!(st.phase, Some(Phase::RolledBack));
    }
    assert_eq!(st.history.len(), HISTORY_LIMIT);
    assert_eq!(st.history[0].version, "v24");
}

#[test]
fn at_100_percent_relative_gates_keep_the_last_stable_baseline() {
    let (s, st) = started();
    let (st, now) = pass_stages(&s, st, 3, 0);
    assert_eq!(st.stage_name.as_deref(), Some("full"));
    // Stable serves nothing at 100%: its FPR is 0/0.
    let no_baseline = with_gate(healthy(), GATE_FALSE_POSITIVE_RATE, v(0.010, 500), Measurement::NotANumber);
    let no_baseline = with_gate(no_baseline, GATE_CAPTURE_RATE, v(0.93, 200), Measurement::NoData);
    let no_baseline = with_gate(no_baseline, GATE_LATENCY_P95, v(40.0, 1000), Measurement::NoData);
    let d = step(&s, &st, analysed(no_baseline.clone()), at(now + 10));
    assert_eq!(d.status.phase, Some(Phase::Promoted), "{:?}", d.status.message);
    // A candidate worse than the carried baseline still fails.
    let worse = with_gate(no_baseline, GATE_FALSE_POSITIVE_RATE, v(0.05, 500), Measurement::NotANumber);
    let d = step(&s, &st, analysed(worse), at(now + 5));
    let fpr = d.status.last_analysis.unwrap().gates.into_iter().find(|g| g.name == GATE_FALSE_POSITIVE_RATE).unwrap();
    assert_eq!(fpr.verdict, Verdict::Fail);
    assert_eq!(fpr.stable_value, Some(0.011));
    assert!(fpr.message.contains("carried"));
}

#[test]
fn below_100_percent_a_missing_baseline_stays_inconclusive() {
    let (s, st) = started();
    let (st, now) = pass_stages(&s, st, 2, 0);
    let gates = with_gate(healthy(), GATE_FALSE_POSITIVE_RATE, v(0.010, 500), Measurement::NotANumber);
    let d = step(&s, &st, analysed(gates), at(now + 10));
    assert_eq!(d.status.stage_index, Some(2));
    assert_eq!(d.status.last_analysis.unwrap().verdict, Verdict::Inconclusive);
}

#[test]
fn measured_values_read_without_float_noise() {
    use modelrollout::core::num;
    assert_eq!(num(0.193_897_996_357_012_77), "0.193898");
    assert_eq!(num(0.002), "0.002");
    assert_eq!(num(120.0), "120");
    assert_eq!(num(4.868_123), "4.86812");
    assert_eq!(num(1_234_567.0), "1234567");
    assert_eq!(num(0.0), "0");
    assert_eq!(num(-0.05), "-0.05");
}

#[test]
fn a_rollout_starting_with_its_candidate_not_ready_moves_no_traffic() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-10));
    let mut s = spec("v2", SHA_V2);
    s.stages.remove(0); // no shadow stage: the first stage sends 5%
    let d = decide(&s, &first.status, &obs(false), t0());
    assert_eq!(d.status.phase, Some(Phase::Progressing));
    assert_eq!(traffic(&d).2, 0, "the candidate has no Ready pod yet");
    assert_eq!(d.status.canary_weight, 0);
    assert!(d.actions.iter().any(|a| matches!(a, Action::EnsureWorkload { role: Role::Candidate, .. })));
    let ready = decide(&s, &d.status, &obs(true), at(5));
    assert_eq!(traffic(&ready).2, 5);
    assert_eq!(ready.status.stage_start_time.unwrap().0, at(5), "the stage's clock starts with its traffic");
}

// ---------------------------------------------------------------------------------------------
// holds: what keeps a rollout paused, typed

/// Every way into and out of a hold, from a running rollout at stage 2.
#[test]
fn holds_are_typed_and_each_is_released_by_its_own_cause() {
    struct Case {
        name: &'static str,
        hold: fn(&ModelRolloutSpec, ModelRolloutStatus, i64) -> (ModelRolloutSpec, ModelRolloutStatus),
        want: Hold,
        release: fn(&mut ModelRolloutSpec) -> Observations,
        released_reason: &'static str,
    }
    let gap = || with_gate(healthy(), GATE_CAPTURE_RATE, Measurement::NoData, Measurement::NoData);
    let cases = [
        Case {
            name: "spec.paused",
            hold: |s, st, now| {
                let mut p = s.clone();
                p.paused = true;
                let st = step(&p, &st, obs(true), at(now + 1)).status;
                (p, st)
            },
            want: Hold::Spec,
            release: |s| {
                s.paused = false;
                obs(true)
            },
            released_reason: reasons::RESUMED,
        },
        Case {
            name: "inconclusive",
            hold: |s, mut st, now| {
                let gap = with_gate(healthy(), GATE_CAPTURE_RATE, Measurement::NoData, Measurement::NoData);
                for i in 1..=3 {
                    st = step(s, &st, analysed(gap.clone()), at(now + 5 * i)).status;
                }
                (s.clone(), st)
            },
            want: Hold::Inconclusive,
            // Released by a passing analysis, which (past minDuration) also advances the stage.
            release: |_| analysed(healthy()),
            released_reason: reasons::STAGE_ADVANCED,
        },
        Case {
            name: "manual approval",
            hold: |s, st, now| {
                let mut a = s.clone();
                a.stages[2].manual_approval = true;
                let st = step(&a, &st, analysed(healthy()), at(now + 10)).status;
                (a, st)
            },
            want: Hold::Approval,
            release: |s| {
                s.operations.promote = Some(PromoteRequest { id: "go".into(), reason: None, full: false });
                obs(true)
            },
            released_reason: reasons::MANUALLY_PROMOTED,
        },
    ];
    let _ = gap;
    for c in cases {
        let (s, st) = started();
        let (st, now) = pass_stages(&s, st, 2, 0);
        let (mut held_spec, held) = (c.hold)(&s, st, now);
        assert_eq!((held.phase, held.hold), (Some(Phase::Paused), Some(c.want)), "{}: held", c.name);
        // A hold is not released by another cause: an unrelated promote-free, unpaused step.
        let still = step(&held_spec, &held, obs(true), at(now + 100));
        if c.want != Hold::Spec {
            assert_eq!(still.status.hold, Some(c.want), "{}: nothing releases it but its cause", c.name);
        }
        let o = (c.release)(&mut held_spec);
        let released = step(&held_spec, &still.status, o, at(now + 101)).status;
        assert_ne!(released.phase, Some(Phase::Paused), "{}: released", c.name);
        assert_eq!(released.hold, None, "{}: no hold outside Paused", c.name);
        assert_eq!(released.reason.as_deref(), Some(c.released_reason), "{}", c.name);
    }
}

#[test]
fn the_hold_is_set_exactly_while_paused() {
    let (mut s, st) = started();
    s.paused = true;
    let paused = step(&s, &st, obs(true), at(1)).status;
    assert_eq!(paused.hold, Some(Hold::Spec));
    // Aborted while paused: no hold is left on a rolled-back rollout.
    let aborted = step(&with_abort(s, "a1"), &paused, obs(true), at(2)).status;
    assert_eq!((aborted.phase, aborted.hold), (Some(Phase::RolledBack), None));
}

#[test]
fn a_status_from_before_typed_holds_is_read_by_its_reason() {
    let (s, st) = started();
    let (mut st, now) = pass_stages(&s, st, 1, 0);
    st.phase = Some(Phase::Paused);
    st.reason = Some(reasons::AWAITING_APPROVAL.into());
    st.hold = None;
    let mut s = s;
    s.stages[1].manual_approval = true;
    let d = step(&s, &st, analysed(healthy()), at(now + 5)).status;
    assert_eq!((d.phase, d.hold), (Some(Phase::Paused), Some(Hold::Approval)));
}

// ---------------------------------------------------------------------------------------------
// no gates: no evidence

#[test]
fn a_rollout_without_gates_never_promotes_on_time_alone() {
    let (mut s, st) = started();
    s.analysis.gates = Gates::default();
    let mut st = st;
    for i in 1..=10 {
        st = step(&s, &st, analysed(vec![]), at(5 * i)).status;
    }
    assert_eq!(st.stage_index, Some(0), "minDuration passed long ago, but no gate ever passed");
    assert_eq!((st.phase, st.hold), (Some(Phase::Paused), Some(Hold::Inconclusive)));
    assert!(!st.promoting_without_gates);
    assert_eq!(st.last_analysis.as_ref().map(|r| r.verdict), Some(Verdict::Inconclusive));
}

#[test]
fn promote_without_gates_is_an_explicit_opt_out_shown_in_status() {
    let (mut s, st) = started();
    s.analysis.gates = Gates::default();
    s.analysis.promote_without_gates = true;
    let d = step(&s, &st, analysed(vec![]), at(10)).status;
    assert!(d.promoting_without_gates, "status says so");
    assert_eq!(d.stage_index, Some(1), "advances on minDuration alone");
    assert!(d.message.as_deref().unwrap_or_default().contains("no gates"), "{:?}", d.message);
}

// ---------------------------------------------------------------------------------------------
// events and reasons that tell the story

#[test]
fn each_transition_is_an_event_of_its_own() {
    let (s, st) = started();
    let mut actions = Vec::new();
    let mut st = st;
    let mut now = 0;
    while st.phase != Some(Phase::Promoted) {
        now += 10;
        let d = step(&s, &st, analysed(healthy()), at(now));
        actions.extend(d.actions.iter().filter_map(|a| match a {
            Action::Event { reason, action, message, .. } => Some((*reason, action.clone(), message.clone())),
            _ => None,
        }));
        st = d.status;
    }
    let stage_events: Vec<_> = actions.iter().filter(|(r, ..)| *r == reasons::STAGE_ADVANCED).collect();
    let keys: std::collections::BTreeSet<_> = stage_events.iter().map(|(r, a, _)| (*r, a.clone())).collect();
    assert_eq!(keys.len(), stage_events.len(), "no two stage Events share reason and action: {stage_events:?}");
    for stage in ["canary-5", "canary-25", "full"] {
        assert!(
            stage_events.iter().any(|(_, a, m)| a.contains(stage) && m.contains(&format!("stage {stage}"))),
            "{stage}: {stage_events:?}"
        );
    }
}

#[test]
fn a_promoted_rollout_says_promoted() {
    let (s, st) = started();
    let (st, _) = pass_stages(&s, st, 4, 0);
    assert_eq!((st.phase, st.reason.as_deref()), (Some(Phase::Promoted), Some(reasons::PROMOTED)));
}

#[test]
fn once_the_candidate_is_ready_status_stops_waiting_for_it() {
    let first = decide(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-100));
    let s = spec("v2", SHA_V2);
    let waiting = decide(&s, &first.status, &obs(false), t0()).status;
    assert_eq!(waiting.reason.as_deref(), Some(reasons::WAITING_FOR_CANDIDATE));
    let ready = decide(&s, &waiting, &obs(true), at(3)).status;
    assert_eq!(ready.reason.as_deref(), Some(reasons::CANDIDATE_READY));
    assert!(ready.message.as_deref().unwrap_or_default().contains("stage shadow"), "{:?}", ready.message);
}

// ---------------------------------------------------------------------------------------------
// the sequential judge through the core

fn sequential_fpr(s: &mut ModelRolloutSpec) {
    s.analysis.gates = Gates {
        false_positive_rate: Some(UpperGate {
            max: None,
            max_above_stable: Some(0.005),
            min_samples: 50,
            judge: Judge::Sequential,
            confidence: Some(0.95),
        }),
        ..Gates::default()
    };
}

/// Runs analyses every 5 s with the candidate's and stable's windows at these rates and sizes.
fn run_fpr(
    s: &ModelRolloutSpec,
    st: ModelRolloutStatus,
    candidate: (f64, u64),
    stable: (f64, u64),
) -> ModelRolloutStatus {
    let mut st = st;
    for i in 1..=200 {
        let o = vec![GateObservation {
            gate: GATE_FALSE_POSITIVE_RATE.into(),
            candidate: v(candidate.0, candidate.1),
            stable: v(stable.0, stable.1),
        }];
        st = step(s, &st, analysed(o), at(5 * i)).status;
        if matches!(st.phase, Some(Phase::RolledBack | Phase::Promoted)) {
            break;
        }
    }
    st
}

#[test]
fn the_sequential_judge_rolls_back_a_two_point_regression_and_promotes_one_within_the_margin() {
    let (mut s, st) = started();
    sequential_fpr(&mut s);
    let bad = run_fpr(&s, st.clone(), (0.04, 100), (0.02, 1900));
    assert_eq!(bad.phase, Some(Phase::RolledBack), "{:?}", bad.message);
    let gate = &bad.history[0];
    assert_eq!(gate.outcome, Outcome::RolledBack);
    let good = run_fpr(&s, st, (0.02, 400), (0.02, 1600));
    assert_eq!(good.phase, Some(Phase::Promoted), "{:?}", good.message);
}

#[test]
fn a_sequential_gate_gathering_evidence_is_not_a_data_gap() {
    let (mut s, st) = started();
    sequential_fpr(&mut s);
    let mut st = st;
    for i in 1..=5 {
        let o =
            vec![GateObservation { gate: GATE_FALSE_POSITIVE_RATE.into(), candidate: v(0.02, 5), stable: v(0.02, 95) }];
        st = step(&s, &st, analysed(o), at(5 * i)).status;
    }
    assert_eq!((st.phase, st.consecutive_inconclusive), (Some(Phase::Progressing), 0), "{:?}", st.message);
    let gate = &st.last_analysis.as_ref().unwrap().gates[0];
    let ev = gate.sequential.as_ref().expect("evidence in status");
    assert_eq!((ev.candidate.trials, ev.stable.trials), (25, 475), "summed over the windows");
    assert!(ev.more_samples.is_some() && ev.difference_interval.is_some(), "{ev:?}");
}

// ---------------------------------------------------------------------------------------------
// acceptance before traffic

/// The toxicity classifier's acceptance: AUC >= 0.92 and no worse than stable by 0.01, accuracy
/// >= 0.9, scores within 0.001 of the references, no contract failures; p95 <= 80 ms at 200 req/s.
fn acceptance() -> AcceptanceSpec {
    AcceptanceSpec {
        golden_set: Some(GoldenSetCheck {
            artifact: GoldenSetArtifact { uri: "http://store/golden.json".into(), sha256: SHA_V3.into() },
            threshold: None,
            auc: Some(GoldenLimit { min: Some(0.92), max_below_stable: Some(0.01) }),
            accuracy: Some(GoldenLimit { min: Some(0.9), max_below_stable: None }),
            max_score_difference: Some(0.001),
            max_contract_failure_rate: Some(0.0),
        }),
        load: Some(LoadCheck { rate: 200, duration: d("30s"), max_latency_p95: d("80ms"), max_error_rate: 0.01 }),
        timeout: d("10m"),
    }
}

fn scores(auc: f64, accuracy: f64) -> GoldenScores {
    GoldenScores {
        rows: 200,
        auc: Some(auc),
        accuracy: Some(accuracy),
        max_score_difference: Some(0.0002),
        contract_failure_rate: 0.0,
    }
}

fn measured(auc: f64, stable_auc: f64, p95: f64, errors: u64) -> AcceptanceReport {
    AcceptanceReport::Measured {
        golden_set: Some(GoldenSetMeasurement {
            rows: 200,
            threshold: 0.5,
            candidate: scores(auc, 0.95),
            stable: Some(scores(stable_auc, 0.95)),
        }),
        load: Some(LoadMeasurement {
            requests: 6000,
            errors,
            achieved_rate: 200.0,
            latency_p50_seconds: p95 / 2.0,
            latency_p95_seconds: p95,
        }),
    }
}

fn accepting() -> (ModelRolloutSpec, ModelRolloutStatus) {
    let mut v1 = spec("v1", SHA_V1);
    v1.acceptance = Some(acceptance());
    let first = decide(&v1, &ModelRolloutStatus::default(), &obs(false), at(-100));
    let mut s = spec("v2", SHA_V2);
    s.acceptance = Some(acceptance());
    let d = decide(&s, &first.status, &obs(false), at(-10));
    (s, d.status)
}

fn runs_acceptance(d: &Decision) -> bool {
    d.actions.iter().any(|a| matches!(a, Action::RunAcceptance { version, .. } if version == "v2"))
}

#[test]
fn acceptance_holds_all_traffic_until_the_checks_pass_then_the_first_stage_starts() {
    let (s, st) = accepting();
    // Not Ready yet: no checks, no traffic.
    assert!(!runs_acceptance(&decide(&s, &st, &obs(false), at(-5))));
    // Ready: the checks start; no traffic, no mirror, no analysis due, a poll soon.
    let d = step(&s, &st, obs(true), t0());
    assert!(runs_acceptance(&d));
    assert_eq!(traffic(&d), ("v1".into(), Some("v2".into()), 0, 0));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::ACCEPTANCE_RUNNING));
    assert_eq!(d.status.acceptance.as_ref().unwrap().start_time.0, t0());
    assert!(!analysis_due(&s, &d.status, AnalysisSlot::default(), at(60)));
    assert!(d.requeue_after.unwrap() <= std::time::Duration::from_secs(2));
    // Still running 40 s later: still held (an analysis taken meanwhile is not looked at).
    let d = step(&s, &d.status, analysed(healthy()), at(40));
    assert!(runs_acceptance(&d));
    assert_eq!(traffic(&d).2 + traffic(&d).3, 0);
    assert_eq!(d.status.acceptance.as_ref().unwrap().start_time.0, t0(), "the start is kept");
    // Passed: the shadow stage's mirror starts now, and its clock with it.
    let o = Observations { acceptance: Some(measured(0.97, 0.96, 0.030, 3)), ..obs(true) };
    let d = step(&s, &d.status, o, at(45));
    assert!(!runs_acceptance(&d), "the checks end once recorded");
    let a = d.status.acceptance.as_ref().unwrap();
    assert_eq!(a.verdict, Some(Verdict::Pass));
    assert_eq!(a.checks.len(), 6, "{:?}", a.checks);
    assert!(a.checks.iter().all(|c| c.verdict == Verdict::Pass), "{:?}", a.checks);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::ACCEPTANCE_PASSED));
    assert_eq!(traffic(&d), ("v1".into(), Some("v2".into()), 0, 100));
    assert_eq!(d.status.stage_start_time.as_ref().unwrap().0, at(45));
    // From here the rollout goes on as any other: its first analysis is an interval after.
    let d = step(&s, &d.status, obs(true), at(46));
    assert!(!runs_acceptance(&d));
    assert!(analysis_due(&s, &d.status, AnalysisSlot::default(), at(51)));
}

#[test]
fn a_failed_acceptance_check_fails_the_rollout_naming_it_and_no_traffic_ever_moved() {
    // (check, report, what the message names)
    let cases = [
        ("auc below its floor", measured(0.90, 0.91, 0.030, 0), "goldenSet.auc"),
        ("auc more than 0.01 below stable", measured(0.94, 0.96, 0.030, 0), "goldenSet.auc"),
        ("p95 over 80 ms", measured(0.97, 0.96, 0.081, 0), "load.latencyP95"),
        ("errors over 1%", measured(0.97, 0.96, 0.030, 61), "load.errorRate"),
        ("could not run", AcceptanceReport::Error("golden set: sha256 abc, the spec says 333".into()), "sha256"),
    ];
    for (case, report, named) in cases {
        let (s, st) = accepting();
        let d = step(&s, &st, obs(true), t0());
        let d = step(&s, &d.status, Observations { acceptance: Some(report), ..obs(true) }, at(30));
        assert_eq!(d.status.phase, Some(Phase::Failed), "{case}");
        assert_eq!(d.status.reason.as_deref(), Some(reasons::ACCEPTANCE_FAILED), "{case}");
        let msg = d.status.message.clone().unwrap();
        assert!(msg.contains(named), "{case}: {msg}");
        assert_eq!(traffic(&d), ("v1".into(), None, 0, 0), "{case}");
        assert_eq!(scaled_down(&d), Vec::<String>::new(), "{case}: scaled down after the delay");
        assert_eq!(d.status.history[0].outcome, Outcome::Failed, "{case}");
        assert_ne!(d.status.acceptance.as_ref().unwrap().verdict, Some(Verdict::Pass), "{case}");
        assert!(!runs_acceptance(&d), "{case}");
    }
}

#[test]
fn acceptance_that_never_finishes_fails_at_its_timeout_and_a_retry_checks_again() {
    let (mut s, st) = accepting();
    let d = step(&s, &st, obs(true), t0());
    let d = step(&s, &d.status, obs(true), at(599));
    assert_eq!(d.status.phase, Some(Phase::Progressing));
    let d = step(&s, &d.status, obs(true), at(600));
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(d.status.message.as_deref().unwrap().contains("spec.acceptance.timeout 10m"), "{:?}", d.status.message);
    s.operations.retry = Some(OperationRequest { id: "r1".into(), reason: None });
    let d = step(&s, &d.status, obs(true), at(700));
    assert_eq!(d.status.phase, Some(Phase::Progressing));
    assert!(runs_acceptance(&d), "a retry runs the checks again");
    assert_eq!(d.status.acceptance.as_ref().unwrap().verdict, None);
}

#[test]
fn acceptance_limits_at_their_boundaries() {
    let spec = acceptance();
    let judge = |report: &AcceptanceReport| match report {
        AcceptanceReport::Measured { golden_set, load } => judge_acceptance(&spec, golden_set.as_ref(), load.as_ref()),
        AcceptanceReport::Error(_) => unreachable!(),
    };
    let verdict = |checks: &[GateResult], name: &str| checks.iter().find(|c| c.name == name).unwrap().verdict;
    // Exactly at each limit passes: AUC 0.92 with stable 0.93 (floor max(0.92, 0.92)), p95 80 ms,
    // errors 60 of 6,000 = 1%.
    let c = judge(&measured(0.92, 0.93, 0.080, 60));
    assert!(c.iter().all(|c| c.verdict == Verdict::Pass), "{c:?}");
    assert_eq!(c.iter().find(|c| c.name == "goldenSet.auc").unwrap().limit.as_deref(), Some(">= 0.92"));
    // The relative floor is the tighter one: stable 0.96 makes it 0.95.
    let c = judge(&measured(0.949, 0.96, 0.080, 60));
    assert_eq!(verdict(&c, "goldenSet.auc"), Verdict::Fail);
    assert_eq!(c.iter().find(|c| c.name == "goldenSet.auc").unwrap().bound, Some(0.95));
    // One class only: the AUC cannot be measured, which is not a pass.
    let mut r = measured(0.97, 0.96, 0.03, 0);
    if let AcceptanceReport::Measured { golden_set: Some(g), .. } = &mut r {
        g.candidate.auc = None;
    }
    assert_eq!(verdict(&judge(&r), "goldenSet.auc"), Verdict::Error);
    // No request answered at all is a 100% error rate, not 0 of 0.
    let mut r = measured(0.97, 0.96, 0.03, 0);
    if let AcceptanceReport::Measured { load: Some(l), .. } = &mut r {
        l.requests = 0;
    }
    assert_eq!(verdict(&judge(&r), "load.errorRate"), Verdict::Fail);
}

// ---------------------------------------------------------------------------------------------
// gating webhooks

fn hook(name: &str, kind: WebhookKind) -> GatingWebhook {
    GatingWebhook {
        name: name.into(),
        kind,
        url: format!("http://hooks/{name}"),
        timeout: d("5s"),
        retries: 2,
        metadata: Default::default(),
    }
}

fn answered(name: &str, kind: WebhookKind, code: u16) -> WebhookCall {
    WebhookCall {
        name: name.into(),
        kind,
        ok: (200..300).contains(&code),
        code: Some(code),
        message: format!("HTTP {code}"),
        attempts: 1,
    }
}

fn with_hooks(hooks: Vec<GatingWebhook>) -> (ModelRolloutSpec, ModelRolloutStatus) {
    let mut v1 = spec("v1", SHA_V1);
    v1.webhooks = hooks.clone();
    let first = decide(&v1, &ModelRolloutStatus::default(), &obs(false), at(-100));
    let mut s = spec("v2", SHA_V2);
    s.webhooks = hooks;
    let d = decide(&s, &first.status, &obs(false), at(-10));
    (s, d.status)
}

#[test]
fn pre_rollout_webhooks_are_asked_once_ready_and_traffic_waits_for_every_2xx() {
    let (s, st) = with_hooks(vec![hook("smoke", WebhookKind::PreRollout), hook("tests", WebhookKind::PreRollout)]);
    let due = |st: &ModelRolloutStatus, ready| webhooks_due(&s, st, ready, false, t0());
    assert!(due(&st, false).is_empty(), "not before the candidate is Ready");
    assert_eq!(due(&st, true), vec![WebhookKind::PreRollout]);
    // One answered 2xx, the other has not answered yet: still no traffic, asked again soon.
    let o = Observations { webhooks: vec![answered("smoke", WebhookKind::PreRollout, 200)], ..obs(true) };
    let d = step(&s, &st, o, t0());
    assert_eq!(traffic(&d).2 + traffic(&d).3, 0);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::AWAITING_PRE_ROLLOUT_WEBHOOK));
    assert!(d.requeue_after.unwrap() <= std::time::Duration::from_secs(2));
    assert_eq!(due(&d.status, true), vec![WebhookKind::PreRollout], "asked until every hook said 2xx");
    let o = Observations {
        webhooks: vec![
            answered("smoke", WebhookKind::PreRollout, 200),
            answered("tests", WebhookKind::PreRollout, 204),
        ],
        ..obs(true)
    };
    let d = step(&s, &d.status, o, at(5));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::PRE_ROLLOUT_WEBHOOK_PASSED));
    assert_eq!(traffic(&d), ("v1".into(), Some("v2".into()), 0, 100), "the shadow stage starts");
    assert_eq!(d.status.stage_start_time.as_ref().unwrap().0, at(5));
    assert!(due(&d.status, true).is_empty(), "not asked again");
    assert_eq!(d.status.webhooks.len(), 2);
    assert!(d.status.webhooks.iter().all(|w| w.ok && w.version == "v2"));
}

#[test]
fn a_pre_rollout_webhook_that_does_not_answer_2xx_fails_the_rollout_and_a_retry_asks_again() {
    let (mut s, st) = with_hooks(vec![hook("smoke", WebhookKind::PreRollout)]);
    let o = Observations { webhooks: vec![answered("smoke", WebhookKind::PreRollout, 412)], ..obs(true) };
    let d = step(&s, &st, o, t0());
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::PRE_ROLLOUT_WEBHOOK_FAILED));
    assert!(d.status.message.as_deref().unwrap().contains("smoke: HTTP 412"), "{:?}", d.status.message);
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
    let failed = d.status.webhooks.iter().find(|w| w.name == "smoke").unwrap();
    assert_eq!((failed.ok, failed.code), (false, Some(412)));
    s.operations.retry = Some(OperationRequest { id: "again".into(), reason: None });
    let d = step(&s, &d.status, obs(true), at(30));
    assert_eq!(d.status.phase, Some(Phase::Progressing));
    assert_eq!(webhooks_due(&s, &d.status, true, false, at(30)), vec![WebhookKind::PreRollout]);
}

#[test]
fn confirm_promotion_holds_after_the_last_stage_asking_each_interval_until_2xx() {
    let (s, st) = with_hooks(vec![hook("change-window", WebhookKind::ConfirmPromotion)]);
    let st = step(&s, &st, obs(true), t0()).status;
    // shadow, 5, 25 pass; the last stage (100) passes and holds.
    let (st, now) = pass_stages(&s, st, 3, 0);
    assert_eq!(st.stage_name.as_deref(), Some("full"));
    assert!(webhooks_due(&s, &st, true, false, at(now)).is_empty(), "not before the last stage passes");
    let d = step(&s, &st, analysed(healthy()), at(now + 10));
    assert_eq!(d.status.phase, Some(Phase::Paused));
    assert_eq!(d.status.hold, Some(Hold::Confirmation));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::AWAITING_CONFIRMATION));
    assert_eq!(traffic(&d).2, 100, "the last stage's traffic stays while it waits");
    let now = now + 10;
    assert_eq!(webhooks_due(&s, &d.status, true, false, at(now)), vec![WebhookKind::ConfirmPromotion]);
    // "Not yet": held; asked again an interval (5 s) later, not before.
    let o = Observations { webhooks: vec![answered("change-window", WebhookKind::ConfirmPromotion, 423)], ..obs(true) };
    let d = step(&s, &d.status, o, at(now + 1));
    assert_eq!(d.status.hold, Some(Hold::Confirmation));
    assert!(webhooks_due(&s, &d.status, true, false, at(now + 5)).is_empty());
    assert_eq!(webhooks_due(&s, &d.status, true, false, at(now + 6)), vec![WebhookKind::ConfirmPromotion]);
    let o = Observations { webhooks: vec![answered("change-window", WebhookKind::ConfirmPromotion, 200)], ..obs(true) };
    let d = step(&s, &d.status, o, at(now + 6));
    assert_eq!(d.status.phase, Some(Phase::Promoted), "{:?}", d.status.message);
    assert_eq!(d.status.stable_version.as_deref(), Some("v2"));
}

#[test]
fn a_rollback_webhook_is_asked_at_each_analysis_and_its_2xx_rolls_back_now() {
    let (s, st) = with_hooks(vec![hook("kill-switch", WebhookKind::Rollback)]);
    let st = step(&s, &st, obs(true), t0()).status;
    assert!(webhooks_due(&s, &st, true, false, at(1)).is_empty(), "only with an analysis");
    assert_eq!(webhooks_due(&s, &st, true, true, at(5)), vec![WebhookKind::Rollback]);
    // A non-2xx is "carry on".
    let o = Observations { webhooks: vec![answered("kill-switch", WebhookKind::Rollback, 404)], ..analysed(healthy()) };
    let d = step(&s, &st, o, at(5));
    assert_eq!(d.status.phase, Some(Phase::Progressing));
    let o = Observations { webhooks: vec![answered("kill-switch", WebhookKind::Rollback, 200)], ..analysed(healthy()) };
    let d = step(&s, &d.status, o, at(10));
    assert_eq!(d.status.phase, Some(Phase::RolledBack));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::ROLLBACK_WEBHOOK));
    assert!(d.status.message.as_deref().unwrap().contains("kill-switch"), "{:?}", d.status.message);
    assert_eq!(traffic(&d), ("v1".into(), None, 0, 0));
}

#[test]
fn post_rollout_webhooks_hear_once_of_every_end_and_a_failure_is_an_event() {
    let (s, st) = with_hooks(vec![hook("report", WebhookKind::PostRollout)]);
    let st = step(&s, &st, obs(true), t0()).status;
    assert!(webhooks_due(&s, &st, true, false, at(1)).is_empty(), "not while it runs");
    let (st, now) = pass_stages(&s, st, 4, 0);
    assert_eq!(st.phase, Some(Phase::Promoted));
    let ended = st.post_rollout.clone().expect("pending");
    assert_eq!((ended.version.as_str(), ended.outcome), ("v2", Outcome::Promoted));
    assert_eq!(webhooks_due(&s, &st, false, false, at(now)), vec![WebhookKind::PostRollout]);
    let o = Observations { webhooks: vec![answered("report", WebhookKind::PostRollout, 500)], ..obs(false) };
    let d = step(&s, &st, o, at(now + 1));
    assert!(d.status.post_rollout.is_none(), "called once, whatever it answered");
    let w = d.status.webhooks.iter().find(|w| w.kind == WebhookKind::PostRollout).unwrap();
    assert_eq!((w.version.as_str(), w.ok, w.code), ("v2", false, Some(500)));
    assert!(
        d.actions.iter().any(|a| matches!(a, Action::Event { kind: EventType::Warning, reason, .. } if *reason == reasons::WEBHOOK_FAILED)),
        "{:?}",
        d.actions
    );
    assert!(webhooks_due(&s, &d.status, false, false, at(now + 2)).is_empty());
}

#[test]
fn acceptance_then_pre_rollout_webhooks_and_traffic_only_after_both() {
    let (mut s, st) = accepting();
    s.webhooks = vec![hook("smoke", WebhookKind::PreRollout)];
    let d = step(&s, &st, obs(true), t0());
    assert!(webhooks_due(&s, &d.status, true, false, t0()).is_empty(), "not while acceptance runs");
    let o = Observations { acceptance: Some(measured(0.97, 0.96, 0.03, 0)), ..obs(true) };
    let d = step(&s, &d.status, o, at(30));
    assert_eq!(d.status.acceptance.as_ref().unwrap().verdict, Some(Verdict::Pass));
    assert_eq!(traffic(&d).2 + traffic(&d).3, 0, "no traffic between the two");
    assert_eq!(d.status.reason.as_deref(), Some(reasons::AWAITING_PRE_ROLLOUT_WEBHOOK));
    assert_eq!(webhooks_due(&s, &d.status, true, false, at(31)), vec![WebhookKind::PreRollout]);
    let o = Observations { webhooks: vec![answered("smoke", WebhookKind::PreRollout, 200)], ..obs(true) };
    let d = step(&s, &d.status, o, at(32));
    assert_eq!(traffic(&d), ("v1".into(), Some("v2".into()), 0, 100));
    assert_eq!(d.status.stage_start_time.as_ref().unwrap().0, at(32));
}

// ---------------------------------------------------------------------------------------------
// experiments (a stage with `match`): routing by match, the reward's winner, guardrails

/// An A/B experiment of v2 against v1: half the user keys for at most 10 minutes, then full;
/// click-through as the reward.
fn experiment_spec(version: &str, sha: &str) -> ModelRolloutSpec {
    let mut s = spec(version, sha);
    let mut ab = default_stages().remove(1);
    ab.name = "ab".into();
    ab.weight = 0;
    ab.min_duration = d("10s");
    ab.max_duration = Some(d("10m"));
    ab.match_ = Some(TrafficMatch {
        header: None,
        cookie: None,
        key_share: Some(KeyShare { header: "x-user-id".into(), percent: 50 }),
    });
    let mut full = default_stages().remove(3);
    full.min_duration = d("10s");
    s.stages = vec![ab, full];
    s.analysis.reward = Some(Reward {
        name: "ctr".into(),
        query: "ctr($version)".into(),
        samples_query: "impressions($version)".into(),
        direction: RewardDirection::Higher,
        min_effect: None,
        confidence: Some(0.95),
    });
    s
}

fn experiment_started(s: &ModelRolloutSpec) -> ModelRolloutStatus {
    let first = decide(&experiment_spec("v1", SHA_V1), &ModelRolloutStatus::default(), &obs(false), at(-100));
    decide(s, &first.status, &obs(true), t0()).status
}

/// Healthy guardrails and a window of `n` impressions per arm at these click-through rates.
fn with_reward(candidate: f64, stable: f64, n: u64) -> Vec<GateObservation> {
    let mut g = healthy();
    g.push(GateObservation { gate: "reward:ctr".into(), candidate: v(candidate, n), stable: v(stable, n) });
    g
}

fn matched(d: &Decision) -> Option<TrafficMatch> {
    d.actions.iter().find_map(|a| match a {
        Action::SetTraffic { matched, .. } => Some(matched.clone()),
        _ => None,
    })?
}

/// Analyses every 5 s from `from` with these rates until the phase or stage changes.
fn run_until_change(
    s: &ModelRolloutSpec,
    mut st: ModelRolloutStatus,
    from: i64,
    c: f64,
    stable: f64,
) -> (Decision, i64) {
    let (phase, stage) = (st.phase, st.stage_name.clone());
    let mut now = from;
    loop {
        now += 5;
        let d = step(s, &st, analysed(with_reward(c, stable, 300)), at(now));
        if d.status.phase != phase || d.status.stage_name != stage || now > from + 3_600 {
            return (d, now);
        }
        st = d.status;
    }
}

#[test]
fn an_experiment_stage_routes_by_its_match_not_a_weight() {
    let s = experiment_spec("v2", SHA_V2);
    let st = experiment_started(&s);
    assert_eq!(st.stage_name.as_deref(), Some("ab"));
    let d = step(&s, &st, obs(true), at(1));
    assert_eq!(traffic(&d), ("v1".into(), Some("v2".into()), 0, 0));
    assert_eq!(matched(&d), s.stages[0].match_.clone());
    let exp = d.status.experiment.as_ref().expect("the experiment in status");
    assert_eq!(exp.key_share_percent, Some(50.0));
    assert!(exp.rule.contains("x-user-id") && exp.rule.contains("128/256"), "{}", exp.rule);
    assert_eq!(exp.guardrails, ["errorRate", "latencyP95", "falsePositiveRate", "captureRate"]);
    // Passing guardrails alone do not end an experiment: it waits for its winner.
    let mut st = d.status;
    for now in [15, 20, 25] {
        st = step(&s, &st, analysed(with_reward(0.25, 0.25, 300)), at(now)).status;
    }
    assert_eq!(st.stage_name.as_deref(), Some("ab"));
    let r = st.experiment.as_ref().unwrap().reward.as_ref().unwrap();
    assert_eq!((r.winner, r.evidence.candidate.trials), (None, 900));
    // A candidate not Ready takes no matched requests.
    let d = step(&s, &st, obs(false), at(26));
    assert_eq!(matched(&d), None);
}

#[test]
fn the_winning_candidate_advances_with_its_result_in_status_and_history() {
    let s = experiment_spec("v2", SHA_V2);
    let st = experiment_started(&s);
    let (d, now) = run_until_change(&s, st, 0, 0.30, 0.20);
    assert_eq!(d.status.stage_name.as_deref(), Some("full"), "{:?}", d.status.message);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::EXPERIMENT_WON));
    assert_eq!(traffic(&d).2, 100);
    assert_eq!(matched(&d), None, "the match ends with its stage");
    let r = d.status.experiment.as_ref().unwrap().reward.clone().unwrap();
    assert_eq!(r.winner, Some(Arm::Candidate));
    let i = r.evidence.difference_interval.unwrap();
    assert!(i.low > 0.0 && i.low <= r.effect && r.effect <= i.high, "{r:?}");
    let (st, _) = pass_stages(&s, d.status, 1, now);
    assert_eq!(st.phase, Some(Phase::Promoted), "{:?}", st.message);
    assert_eq!(st.history[0].experiment.as_ref().and_then(|e| e.winner), Some(Arm::Candidate));
}

#[test]
fn stable_winning_rolls_the_candidate_back_with_the_result() {
    let s = experiment_spec("v2", SHA_V2);
    let (d, _) = run_until_change(&s, experiment_started(&s), 0, 0.18, 0.26);
    assert_eq!(d.status.phase, Some(Phase::RolledBack));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::EXPERIMENT_LOST));
    assert_eq!((traffic(&d).2, matched(&d)), (0, None));
    let h = &d.status.history[0];
    assert_eq!((h.outcome, h.experiment.as_ref().and_then(|e| e.winner)), (Outcome::RolledBack, Some(Arm::Stable)));
    assert!(h.reason.contains("stable won: ctr"), "{}", h.reason);
}

#[test]
fn a_guardrail_breach_sends_every_request_to_stable_in_that_analysis() {
    let mut s = experiment_spec("v2", SHA_V2);
    s.analysis.failure_limit = 1;
    s.analysis.gates.custom.push(CustomGate {
        name: "ctrGuardrail".into(),
        query: "ctr($version)".into(),
        samples_query: None,
        min: None,
        max: None,
        max_above_stable: None,
        max_below_stable: Some(0.02),
        min_samples: 100,
    });
    let st = experiment_started(&s);
    let mut g = with_reward(0.25, 0.25, 300);
    g.push(GateObservation { gate: "ctrGuardrail".into(), candidate: v(0.10, 300), stable: v(0.25, 300) });
    let d = step(&s, &st, analysed(g), at(5));
    assert_eq!(d.status.phase, Some(Phase::RolledBack), "{:?}", d.status.message);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::GATES_FAILED));
    assert_eq!((traffic(&d).2, matched(&d)), (0, None));
    assert!(d.status.message.as_deref().unwrap().contains("ctrGuardrail"), "{:?}", d.status.message);
}

#[test]
fn no_winner_by_max_duration_keeps_stable() {
    let s = experiment_spec("v2", SHA_V2);
    let (d, now) = run_until_change(&s, experiment_started(&s), 0, 0.25, 0.25);
    assert_eq!(d.status.phase, Some(Phase::RolledBack));
    assert_eq!(d.status.reason.as_deref(), Some(reasons::NO_WINNER));
    assert!((600..=605).contains(&now), "ended at {now} s, maxDuration 600 s");
    // The controller wakes for the deadline even with no analysis due.
    let st = experiment_started(&s);
    let d = step(&s, &st, obs(true), at(1));
    assert!(d.requeue_after.is_some());
}

#[test]
fn a_manual_experiment_holds_its_winner_until_promoted() {
    let mut s = experiment_spec("v2", SHA_V2);
    s.stages[0].manual_approval = true;
    let (d, now) = run_until_change(&s, experiment_started(&s), 0, 0.30, 0.20);
    assert_eq!((d.status.phase, d.status.hold), (Some(Phase::Paused), Some(Hold::Approval)));
    assert!(d.status.message.as_deref().unwrap().contains("the candidate won"), "{:?}", d.status.message);
    assert!(matched(&d).is_some(), "the experiment's routing holds while it waits");
    s.operations.promote = Some(PromoteRequest { id: "p1".into(), reason: None, full: false });
    let d = step(&s, &d.status, obs(true), at(now + 1));
    assert_eq!((d.status.stage_name.as_deref(), traffic(&d).2), (Some("full"), 100));
}
