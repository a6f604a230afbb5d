//! The decision core: gate judgement at the boundaries.

use super::*;

fn upper(max: Option<f64>, above: Option<f64>) -> GateDef {
    GateDef { min_samples: 100, max, max_above_stable: above, ..GateDef::new("g", GateKind::ErrorRate) }
}

fn lower(min: Option<f64>, below: Option<f64>) -> GateDef {
    GateDef { min_samples: 100, min, max_below_stable: below, ..GateDef::new("g", GateKind::CaptureRate) }
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

#[test]
fn ratio_limits_and_strict_comparison_at_their_boundaries() {
    let o = |c: Measurement, s: Measurement| GateObservation { gate: "g".into(), candidate: c, stable: s };
    let ratio_above = |r: f64| GateDef { max_above_stable_ratio: Some(r), ..upper(None, None) };
    let ratio_below = |r: f64| GateDef { max_below_stable_ratio: Some(r), ..lower(None, None) };
    let strict = |d: GateDef| GateDef { comparison: Comparison::Strict, ..d };
    let cases: Vec<(&str, GateDef, GateObservation, Verdict)> = vec![
        // "p95 no more than 10% above v1": 100 ms stable allows 110 ms.
        ("p95 at stable + 10% passes", ratio_above(0.10), o(v(110.0, 100), v(100.0, 100)), Verdict::Pass),
        ("p95 just over stable + 10% fails", ratio_above(0.10), o(v(110.01, 100), v(100.0, 100)), Verdict::Fail),
        (
            "p95 at stable + 10%, strict: fails",
            strict(ratio_above(0.10)),
            o(v(110.0, 100), v(100.0, 100)),
            Verdict::Fail,
        ),
        (
            "p95 under stable + 10%, strict: passes",
            strict(ratio_above(0.10)),
            o(v(109.99, 100), v(100.0, 100)),
            Verdict::Pass,
        ),
        // "precision within 1% of v1": 0.90 stable allows 0.891.
        ("precision at stable - 1% passes", ratio_below(0.01), o(v(0.891, 100), v(0.90, 100)), Verdict::Pass),
        ("precision under stable - 1% fails", ratio_below(0.01), o(v(0.8909, 100), v(0.90, 100)), Verdict::Fail),
        (
            "precision at stable - 1%, strict: fails",
            strict(ratio_below(0.01)),
            o(v(0.891, 100), v(0.90, 100)),
            Verdict::Fail,
        ),
        // "error rate < 0.2%": at 0.2% fails only when strict.
        (
            "error rate at max, inclusive: passes",
            upper(Some(0.002), None),
            o(v(0.002, 100), Measurement::NoData),
            Verdict::Pass,
        ),
        (
            "error rate at max, strict: fails",
            strict(upper(Some(0.002), None)),
            o(v(0.002, 100), Measurement::NoData),
            Verdict::Fail,
        ),
        (
            "error rate under max, strict: passes",
            strict(upper(Some(0.002), None)),
            o(v(0.00199, 100), Measurement::NoData),
            Verdict::Pass,
        ),
        ("recall at stable, strict: fails", strict(lower(None, Some(0.0))), o(v(0.9, 100), v(0.9, 100)), Verdict::Fail),
        (
            "a ratio with no baseline: inconclusive",
            ratio_above(0.10),
            o(v(1.0, 100), Measurement::NoData),
            Verdict::Inconclusive,
        ),
        // Both offsets and ratios: the tighter one holds.
        (
            "offset and ratio: the tighter (ratio) fails",
            GateDef { max_above_stable_ratio: Some(0.05), ..upper(None, Some(10.0)) },
            o(v(106.0, 100), v(100.0, 100)),
            Verdict::Fail,
        ),
    ];
    for (name, def, observation, want) in cases {
        let got = judge(&def, Some(&observation));
        assert_eq!(got.verdict, want, "{name}: {} (limit {:?})", got.message, got.limit);
    }
    let r = judge(&strict(ratio_above(0.10)), Some(&o(v(111.0, 100), v(100.0, 100))));
    assert_eq!(r.limit.as_deref(), Some("< 110 (stable 100 + 10%)"));
    assert!(r.bound.is_some_and(|b: f64| (b - 110.0).abs() < 1e-9), "{:?}", r.bound);
    assert!(r.message.contains("111 >= stable 100 + 10%"), "{}", r.message);
}

#[test]
fn gate_defs_carry_ratio_and_comparison_from_the_spec() {
    let gates = Gates {
        latency_p95: Some(UpperGate {
            max: Some(120.0),
            max_above_stable: Some(10.0),
            max_above_stable_ratio: Some(0.1),
            comparison: Comparison::Strict,
            min_samples: 10,
            judge: Judge::Threshold,
            confidence: None,
        }),
        precision: Some(LowerGate {
            min: None,
            max_below_stable: None,
            max_below_stable_ratio: Some(0.01),
            comparison: Comparison::Inclusive,
            min_samples: 10,
            judge: Judge::Threshold,
            confidence: None,
        }),
        ..Default::default()
    };
    let defs = gate_defs(&gates);
    assert_eq!(defs[0].max_above_stable_ratio, Some(0.1));
    assert_eq!(defs[0].comparison, Comparison::Strict);
    assert_eq!(defs[1].max_below_stable_ratio, Some(0.01));
    assert!(defs[1].is_relative(), "a ratio needs stable's value");
}
