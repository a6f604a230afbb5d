//! Simulated rollouts through the real decision core, to measure how often each judge of the
//! false-positive-rate gate rolls back a good candidate or promotes a bad one.
//!
//! `cargo run --release -p modelrollout-core --example judge_simulation -- [ROLLOUTS] [THREADS]`
//!
//! Each rollout: stable's false-positive rate is 2%; the gate allows the candidate 0.5 points above
//! stable (`maxAboveStable: 0.005`); stages 5% -> 25% -> 100%, 5 min each, an analysis every
//! minute (failureLimit 2, inconclusiveLimit 3, onInconclusive Pause), 2,000 requests a minute of
//! which 98% are negatives and a share (the label rate) gets a label. Every analysis reads the
//! window's counts, as the gate's PromQL would give them, and `core::decide` does the rest. A
//! rollout that neither promotes nor rolls back within 2 hours is undecided.

use jiff::{SignedDuration, Timestamp};
use modelrollout_api::*;
use modelrollout_core::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution};

const STABLE_FPR: f64 = 0.02;
const MARGIN: f64 = 0.005;
const REQUESTS_PER_MINUTE: f64 = 2000.0;
const NEGATIVES: f64 = 0.98;
const HORIZON_MINUTES: i64 = 120;

#[derive(Clone, Copy, PartialEq)]
enum End {
    Promoted,
    RolledBack,
    Undecided,
}

fn spec(version: &str, sequential: bool) -> ModelRolloutSpec {
    let mut s: ModelRolloutSpec = serde_json::from_value(serde_json::json!({
        "model": {"name": "fraud", "version": version,
                  "artifact": {"uri": "http://models/fraud.onnx", "sha256": format!("{:0>64}", version.len())},
                  "contract": {"inputs": [{"name": "amount", "type": "float"}]}},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud"}},
        "stages": [
            {"name": "canary-5", "weight": 5, "minDuration": "5m"},
            {"name": "canary-25", "weight": 25, "minDuration": "5m"},
            {"name": "full", "weight": 100, "minDuration": "5m"}
        ],
        "analysis": {"interval": "1m", "failureLimit": 2, "inconclusiveLimit": 3,
                     "gates": {"falsePositiveRate": {"maxAboveStable": MARGIN, "minSamples": 50}}}
    }))
    .unwrap();
    if sequential {
        let g = s.analysis.gates.false_positive_rate.as_mut().unwrap();
        g.judge = Judge::Sequential;
        g.confidence = Some(0.95);
    }
    s
}

/// Draws a window's labelled negatives and false positives for one arm.
fn window(rng: &mut SmallRng, share: f64, label_rate: f64, fpr: f64) -> Measurement {
    let expected = REQUESTS_PER_MINUTE * share * NEGATIVES * label_rate;
    let mut trials = expected.floor() as u64;
    if rng.random::<f64>() < expected.fract() {
        trials += 1;
    }
    if trials == 0 {
        return Measurement::NoData;
    }
    let events = Binomial::new(trials, fpr).unwrap().sample(rng);
    Measurement::sample(events as f64 / trials as f64, trials)
}

/// One rollout; returns how it ended and the candidate's labelled samples until then.
fn rollout(sequential: bool, delta: f64, label_rate: f64, seed: u64) -> (End, u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let t0: Timestamp = "2026-12-04T00:00:00Z".parse().unwrap();
    let at = |m: i64| t0.checked_add(SignedDuration::from_secs(m * 60)).unwrap();
    let obs = |analysis| Observations { generation: Some(1), candidate_ready: true, analysis, ..Default::default() };
    let v1 = spec("v1", sequential);
    let mut st = decide(&v1, &ModelRolloutStatus::default(), &obs(None), at(-1)).status;
    let s = spec("v2", sequential);
    st = decide(&s, &st, &obs(None), at(0)).status;
    let mut labelled = 0;
    for minute in 1..=HORIZON_MINUTES {
        let now = at(minute);
        let analysis = analysis_due(&s, &st, AnalysisSlot::default(), now).then(|| {
            let share = f64::from(st.canary_weight) / 100.0;
            let candidate = window(&mut rng, share, label_rate, STABLE_FPR + delta);
            let stable = window(&mut rng, 1.0 - share, label_rate, STABLE_FPR);
            if let Measurement::Value { samples, .. } = candidate {
                labelled += samples;
            }
            vec![GateObservation { gate: GATE_FALSE_POSITIVE_RATE.into(), candidate, stable }]
        });
        st = decide(&s, &st, &obs(analysis), now).status;
        match st.phase {
            Some(Phase::Promoted) => return (End::Promoted, labelled),
            Some(Phase::RolledBack) => return (End::RolledBack, labelled),
            _ => {}
        }
    }
    (End::Undecided, labelled)
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rollouts: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let threads: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let cases = [
        ("equal to stable", 0.0),
        ("at the margin (+0.5 points)", MARGIN),
        ("+1 point", 0.01),
        ("+2 points", 0.02),
        ("+5 points", 0.05),
    ];
    println!("{rollouts} rollouts per case; stable FPR 2%, margin 0.5 points, confidence 0.95 (sequential)\n");
    println!(
        "| candidate | label rate | judge | false rollbacks | false promotions | undecided in 2 h | median labelled candidate samples to a decision |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, delta) in cases {
        for label_rate in [0.05, 0.2, 1.0] {
            for sequential in [false, true] {
                let results: Vec<(End, u64)> = std::thread::scope(|scope| {
                    let handles: Vec<_> = (0..threads)
                        .map(|t| {
                            scope.spawn(move || {
                                (t..rollouts)
                                    .step_by(threads as usize)
                                    .map(|i| {
                                        let seed =
                                            i ^ ((delta * 1e4) as u64) << 32 ^ ((label_rate * 100.0) as u64) << 48;
                                        rollout(sequential, delta, label_rate, seed)
                                    })
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
                });
                let n = results.len() as f64;
                let count = |e: End| results.iter().filter(|r| r.0 == e).count() as f64;
                let bad = delta > MARGIN + 1e-12;
                let false_rollbacks =
                    if bad { "-".to_string() } else { format!("{:.2}%", 100.0 * count(End::RolledBack) / n) };
                let false_promotions =
                    if bad { format!("{:.2}%", 100.0 * count(End::Promoted) / n) } else { "-".to_string() };
                let decided: Vec<u64> = results.iter().filter(|r| r.0 != End::Undecided).map(|r| r.1).collect();
                println!(
                    "| {name} | {:.0}% | {} | {false_rollbacks} | {false_promotions} | {:.1}% | {} |",
                    label_rate * 100.0,
                    if sequential { "sequential" } else { "threshold" },
                    100.0 * count(End::Undecided) / n,
                    median(decided).map_or("-".into(), |m| m.to_string()),
                );
            }
        }
    }
}
