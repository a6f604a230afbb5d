//! What the apiserver's rules should have refused and the controller refuses anyway: an object
//! stored before a rule existed, or a value a schema rule let through, is `InvalidSpec`, never run
//! with no guarantee.

use super::*;

/// The sequential judge's confidence bounds, as the CRD states them.
pub const CONFIDENCE_RANGE: std::ops::RangeInclusive<f64> = 0.5..=0.9999;

/// Why the spec cannot run, if it cannot (beyond its durations: [`Timings::of`]).
pub fn check(spec: &ModelRolloutSpec) -> Result<(), String> {
    let g = &spec.analysis.gates;
    let upper =
        [("errorRate", &g.error_rate), ("latencyP95", &g.latency_p95), ("falsePositiveRate", &g.false_positive_rate)];
    let mut confidences: Vec<(String, Option<f64>)> = upper
        .iter()
        .filter_map(|(name, gate)| {
            gate.as_ref().map(|g| (format!("spec.analysis.gates.{name}.confidence"), g.confidence))
        })
        .collect();
    if let Some(c) = &g.capture_rate {
        confidences.push(("spec.analysis.gates.captureRate.confidence".into(), c.confidence));
    }
    if let Some(r) = &spec.analysis.reward {
        confidences.push(("spec.analysis.reward.confidence".into(), r.confidence));
    }
    for (field, value) in confidences {
        if let Some(c) = value
            && !CONFIDENCE_RANGE.contains(&c)
        {
            return Err(format!(
                "{field}: {c} is outside {}..={} (the sequential judge would run with no guarantee)",
                CONFIDENCE_RANGE.start(),
                CONFIDENCE_RANGE.end()
            ));
        }
    }
    Ok(())
}
