//! What the apiserver's rules should have refused and the controller refuses anyway: an object
//! stored before a rule existed, or a value a schema rule let through, is `InvalidSpec`, never run
//! with no guarantee.

use super::*;

/// The sequential judge's confidence bounds, as the CRD states them.
pub const CONFIDENCE_RANGE: std::ops::RangeInclusive<f64> = 0.5..=0.9999;

/// Why the spec cannot run, if it cannot (beyond its durations: [`Timings::of`]).
pub fn check(spec: &ModelRolloutSpec) -> Result<(), String> {
    let contract = &spec.model.contract;
    public_api::check(&contract.apis, &contract.inputs).map_err(|e| format!("spec.model.contract.apis: {e}"))?;
    let mut confidences: Vec<(String, Option<f64>)> = Vec::new();
    for (at, g) in spec.all_gate_sets() {
        let upper = [
            (GATE_ERROR_RATE, &g.error_rate),
            (GATE_LATENCY_P95, &g.latency_p95),
            (GATE_FALSE_POSITIVE_RATE, &g.false_positive_rate),
        ];
        confidences.extend(
            upper
                .iter()
                .filter_map(|(name, gate)| gate.as_ref().map(|g| (format!("{at}.{name}.confidence"), g.confidence))),
        );
        if let Some(c) = &g.capture_rate {
            confidences.push((format!("{at}.{GATE_CAPTURE_RATE}.confidence"), c.confidence));
        }
        if let Some(c) = &g.precision {
            confidences.push((format!("{at}.{GATE_PRECISION}.confidence"), c.confidence));
        }
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
    let set = spec.analysis.gates.names();
    for (i, stage) in spec.stages.iter().enumerate() {
        let Some(own) = &stage.gates else { continue };
        if own.replace.is_some() && (own.add.is_some() || !own.remove.is_empty()) {
            return Err(format!("spec.stages[{i}].gates: replace stands alone (no add or remove beside it)"));
        }
        if let Some(name) = own.remove.iter().find(|n| !set.contains(&n.as_str())) {
            return Err(format!("spec.stages[{i}].gates.remove: {name} is not a gate of spec.analysis.gates"));
        }
        let added = own.add.as_ref().map(Gates::names).unwrap_or_default();
        if let Some(name) = own.remove.iter().find(|n| added.contains(&n.as_str())) {
            return Err(format!("spec.stages[{i}].gates: {name} is both added and removed"));
        }
        if !spec.analysis.promote_without_gates && spec.stage_gates(i).0.names().is_empty() {
            return Err(format!(
                "spec.stages[{i}] ({}) checks no gate: too little evidence never promotes (set a gate, or analysis.promoteWithoutGates)",
                stage.name
            ));
        }
    }
    Ok(())
}
