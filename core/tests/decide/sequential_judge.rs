//! The decision core: the sequential judge through the core.

use super::*;

fn sequential_fpr(s: &mut ModelRolloutSpec) {
    s.analysis.gates = Gates {
        false_positive_rate: Some(UpperGate {
            max: None,
            max_above_stable: Some(0.005),
            min_samples: 50,
            judge: Judge::Sequential,
            confidence: Some(0.95),
            max_above_stable_ratio: None,
            comparison: Default::default(),
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
