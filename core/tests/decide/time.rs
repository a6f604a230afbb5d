//! The decision core: time.

use super::*;

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

/// Status as the apiserver stores it: through its JSON, each time as its type serializes it
/// (`Time` to the second, `MicroTime` to the microsecond).
fn stored(st: ModelRolloutStatus) -> ModelRolloutStatus {
    serde_json::from_value(serde_json::to_value(&st).unwrap()).unwrap()
}

/// `minDuration` counts from the stage's start exactly, through the apiserver's copy of the
/// status: a stage that began 0.9 s into a second has not run its 10 s 9.6 s later (a
/// whole-second start read it as 10.5 s and advanced early), and has at 10 s.
#[test]
fn min_duration_counts_from_the_exact_stage_start_through_the_stored_status() {
    let first = step(&spec("v1", SHA_V1), &ModelRolloutStatus::default(), obs(false), at(-100)).status;
    let s = spec("v2", SHA_V2);
    let start = t0().checked_add(SignedDuration::from_millis(900)).unwrap();
    let after = |ms: i64| start.checked_add(SignedDuration::from_millis(ms)).unwrap();
    let st = stored(step(&s, &first, obs(true), start).status);
    assert_eq!(st.stage_name.as_deref(), Some("shadow"));
    let st = stored(step(&s, &st, analysed(healthy()), after(5_100)).status);
    let early = step(&s, &st, obs(true), after(9_600)).status;
    assert_eq!(early.stage_name.as_deref(), Some("shadow"), "9.6 s into a 10 s stage: {:?}", early.message);
    let on_time = step(&s, &stored(early), obs(true), after(10_000)).status;
    assert_eq!(on_time.stage_name.as_deref(), Some("canary-5"), "{:?}", on_time.message);
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
    for i in 0..25 {
        let s = with_abort(spec(&format!("v{}", i + 10), SHA_V2), &format!("a{i}"));
        st = decide(&s, &st, &obs(true), at(i * 10)).status;
        st.handled_operations.abort = None;
        st = decide(&s, &st, &obs(true), at(i * 10 + 1)).status;
        assert_eq!(st.phase, Some(Phase::RolledBack));
    }
    assert_eq!(st.history.len(), HISTORY_LIMIT);
    assert_eq!(st.history[0].version, "v34");
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
    use modelrollout_core::num;
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

/// A confidence the CRD's range refuses, in an object the apiserver let through (stored before
/// the rule, or past it): InvalidSpec, nothing moves, never judged with no guarantee.
#[test]
fn a_confidence_out_of_range_is_an_invalid_spec_and_changes_nothing() {
    for bad in [0.0, -0.0, 0.3, 1.0, f64::NAN] {
        let (mut s, st) = started();
        s.analysis.gates.false_positive_rate.as_mut().unwrap().confidence = Some(bad);
        s.analysis.gates.false_positive_rate.as_mut().unwrap().judge = Judge::Sequential;
        let d = step(&s, &st, analysed(healthy()), at(10));
        assert_eq!(d.status.reason.as_deref(), Some(reasons::INVALID_SPEC), "confidence {bad}");
        assert!(d.status.message.as_deref().unwrap().contains("spec.analysis.gates.falsePositiveRate.confidence"));
        assert_eq!((d.status.stage_name.clone(), d.status.canary_weight), (st.stage_name.clone(), st.canary_weight));
        assert!(
            d.actions.iter().all(|a| !matches!(a, Action::SetTraffic { .. })),
            "no traffic written: {:?}",
            d.actions
        );
    }
}

/// Consecutive analyses measure windows that adjoin and never overlap, however late each is taken
/// (up to an interval) and across a pause and resume: the next analysis waits at least half an
/// interval, and measures everything since the last one. (Overlapping windows judged the same
/// requests twice: `failureLimit: 2` rolled back on what was one observation.)
#[test]
fn consecutive_analysis_windows_adjoin_and_never_overlap() {
    let (s, mut st) = started();
    let mut paused = s.clone();
    paused.paused = true;
    let slot = AnalysisSlot::of("rollout-uid");
    let interval = std::time::Duration::from_secs(5);
    let mut last: Option<Timestamp> = None;
    // Lateness in ms of each analysis after it fell due: a fixed LCG, so the test is the same each run.
    let mut x: u64 = 42;
    for i in 0..40 {
        let s = if (10..20).contains(&i) { &paused } else { &s };
        let due = next_analysis_at(s, &st, slot).expect("active, paused or not");
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let late = SignedDuration::from_millis((x >> 33) as i64 % 5_000);
        let now = due.checked_add(late).unwrap();
        let window = analysis_window(s, &st, now);
        if let Some(prev) = last {
            let gap = now.duration_since(prev).unsigned_abs();
            assert!(gap >= interval / 2, "analysis {i}: {gap:?} after the last");
            // Status keeps the time to the microsecond: the windows meet to within one.
            let expected = gap.min(interval * 2);
            assert!(
                window >= expected && window - expected < std::time::Duration::from_micros(1),
                "analysis {i}: the window starts where the last ended: {window:?} after {gap:?}"
            );
        } else {
            assert_eq!(window, interval, "a stage's first window: one interval");
        }
        // Healthy and held in the shadow stage: the stage never changes under the test.
        let mut held = s.clone();
        held.stages[0].min_duration = d("1h");
        st = stored(step(&held, &st, Observations { analysis_slot: slot, ..analysed(healthy()) }, now).status);
        assert_eq!(st.stage_index, Some(0));
        last = Some(now);
    }
}

/// After a long gap (a controller down), one analysis measures the last two intervals, not the
/// whole gap; and a new stage's first window stays within the stage.
#[test]
fn analysis_windows_are_bounded() {
    let (s, st) = started();
    let st = stored(step(&s, &st, analysed(healthy()), at(5)).status);
    assert_eq!(analysis_window(&s, &st, at(600)), std::time::Duration::from_secs(10));
    assert_eq!(analysis_window(&s, &st, at(8)), std::time::Duration::from_secs(3));
    let (s, st) = started();
    assert_eq!(analysis_window(&s, &st, at(2)), std::time::Duration::from_secs(2), "2 s into the stage");
    // An interval under 5 s analyses every 5 s: shorter windows would hold a scrape or two.
    let (mut s, st) = started();
    s.analysis.interval = d("2s");
    assert_eq!(next_analysis_at(&s, &st, AnalysisSlot::default()), Some(at(5)));
    let st = stored(step(&s, &st, analysed(healthy()), at(5)).status);
    assert_eq!(next_analysis_at(&s, &st, AnalysisSlot::default()), Some(at(10)));
    assert_eq!(analysis_window(&s, &st, at(10)), std::time::Duration::from_secs(5));
}
