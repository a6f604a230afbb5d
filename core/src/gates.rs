//! Gates: which queries a spec asks for, and the verdict on one measurement.

use super::*;

/// Which built-in query a gate runs.
#[derive(Clone, Debug, PartialEq)]
pub enum GateKind {
    ErrorRate,
    LatencyP95,
    FalsePositiveRate,
    CaptureRate,
    Precision,
    /// Decisions agreeing with stable's on matched requests (the evidence service's count).
    Agreement,
    /// Candidate against stable on the same labelled matched requests (the evidence service's
    /// paired outcomes): the candidate's measurement is the share only it got right, stable's
    /// the share only stable got right, both over the same pairs.
    Paired,
    /// PSI of the candidate's scores against stable's on matched requests (the evidence service's).
    ScoreDrift,
    /// The largest PSI of the candidate's input features against its model's reference (the
    /// evidence service's).
    InputDrift,
    Custom {
        query: String,
        samples_query: Option<String>,
    },
}

/// The limits of a gate, normalised.
#[derive(Clone, Debug, PartialEq)]
pub struct GateDef {
    pub name: String,
    pub kind: GateKind,
    pub min_samples: u64,
    /// value <= max
    pub max: Option<f64>,
    /// value >= min
    pub min: Option<f64>,
    /// value <= stable + above
    pub max_above_stable: Option<f64>,
    /// value >= stable - below
    pub max_below_stable: Option<f64>,
    /// value <= stable * (1 + ratio)
    pub max_above_stable_ratio: Option<f64>,
    /// value >= stable * (1 - ratio)
    pub max_below_stable_ratio: Option<f64>,
    /// At a limit exactly: pass (inclusive) or fail (strict).
    pub comparison: Comparison,
    pub judge: Judge,
    /// The sequential judge's confidence.
    pub confidence: f64,
}

/// The gates stage `idx` of a spec checks, and where they come from (the rollout's, or the
/// stage's own).
pub fn stage_gate_defs(spec: &ModelRolloutSpec, idx: usize) -> (Vec<GateDef>, GateSet) {
    let (gates, set) = spec.stage_gates(idx);
    (gate_defs(&gates), set)
}

/// The gates a spec asks for, built-ins first, in a stable order.
pub fn gate_defs(gates: &Gates) -> Vec<GateDef> {
    let upper = |name: &str, kind, g: &UpperGate| GateDef {
        min_samples: g.min_samples,
        max: g.max,
        max_above_stable: g.max_above_stable,
        max_above_stable_ratio: g.max_above_stable_ratio,
        comparison: g.comparison,
        judge: g.judge,
        confidence: g.confidence.unwrap_or(DEFAULT_CONFIDENCE),
        ..GateDef::new(name, kind)
    };
    let lower = |name: &str, kind, g: &LowerGate| GateDef {
        min_samples: g.min_samples,
        min: g.min,
        max_below_stable: g.max_below_stable,
        max_below_stable_ratio: g.max_below_stable_ratio,
        comparison: g.comparison,
        judge: g.judge,
        confidence: g.confidence.unwrap_or(DEFAULT_CONFIDENCE),
        ..GateDef::new(name, kind)
    };
    // A distribution's shift, since the candidate started: at most `max`.
    let drift = |name: &str, kind, g: &DriftGate| GateDef {
        min_samples: g.min_samples,
        max: Some(g.max),
        ..GateDef::new(name, kind)
    };
    let mut defs = Vec::new();
    if let Some(g) = &gates.error_rate {
        defs.push(upper(GATE_ERROR_RATE, GateKind::ErrorRate, g));
    }
    if let Some(g) = &gates.latency_p95 {
        defs.push(upper(GATE_LATENCY_P95, GateKind::LatencyP95, g));
    }
    if let Some(g) = &gates.false_positive_rate {
        defs.push(upper(GATE_FALSE_POSITIVE_RATE, GateKind::FalsePositiveRate, g));
    }
    if let Some(g) = &gates.capture_rate {
        defs.push(lower(GATE_CAPTURE_RATE, GateKind::CaptureRate, g));
    }
    if let Some(g) = &gates.precision {
        defs.push(lower(GATE_PRECISION, GateKind::Precision, g));
    }
    if let Some(g) = &gates.agreement {
        defs.push(GateDef {
            min_samples: g.min_samples,
            min: Some(g.min),
            ..GateDef::new(GATE_AGREEMENT, GateKind::Agreement)
        });
    }
    if let Some(g) = &gates.paired {
        defs.push(GateDef {
            max_below_stable: Some(g.margin),
            judge: Judge::Sequential,
            confidence: g.confidence.unwrap_or(DEFAULT_CONFIDENCE),
            ..GateDef::new(GATE_PAIRED, GateKind::Paired)
        });
    }
    if let Some(g) = &gates.score_drift {
        defs.push(drift(GATE_SCORE_DRIFT, GateKind::ScoreDrift, g));
    }
    if let Some(g) = &gates.input_drift {
        defs.push(drift(GATE_INPUT_DRIFT, GateKind::InputDrift, g));
    }
    for c in &gates.custom {
        let kind = GateKind::Custom { query: c.query.clone(), samples_query: c.samples_query.clone() };
        defs.push(GateDef {
            min_samples: c.min_samples,
            max: c.max,
            min: c.min,
            max_above_stable: c.max_above_stable,
            max_below_stable: c.max_below_stable,
            max_above_stable_ratio: c.max_above_stable_ratio,
            max_below_stable_ratio: c.max_below_stable_ratio,
            comparison: c.comparison,
            ..GateDef::new(&c.name, kind)
        });
    }
    defs
}

impl GateDef {
    /// A gate with no limit yet: no sample floor, judged by threshold, inclusively, at the
    /// default confidence. Each gate sets what it has on top.
    pub fn new(name: &str, kind: GateKind) -> Self {
        GateDef {
            name: name.into(),
            kind,
            min_samples: 0,
            max: None,
            min: None,
            max_above_stable: None,
            max_below_stable: None,
            max_above_stable_ratio: None,
            max_below_stable_ratio: None,
            comparison: Comparison::Inclusive,
            judge: Judge::Threshold,
            confidence: DEFAULT_CONFIDENCE,
        }
    }
}

impl GateDef {
    /// Whether judging this gate needs the stable baseline.
    pub fn is_relative(&self) -> bool {
        self.max_above_stable.is_some()
            || self.max_below_stable.is_some()
            || self.max_above_stable_ratio.is_some()
            || self.max_below_stable_ratio.is_some()
    }
}

/// Judges one gate. A definite failure of an absolute limit fails even without a baseline; anything
/// short of enough finite data is inconclusive (or error, for a failed query), never a pass.
/// A measured value for people: six significant digits, no float noise (`0.193898`, not
/// `0.19389799635701277`). Verdicts are computed on the exact values.
pub fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    let decimals = (5 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

impl GateDef {
    /// A result for this gate with nothing judged yet: inconclusive, no values.
    pub fn unjudged(&self) -> GateResult {
        GateResult {
            name: self.name.clone(),
            verdict: Verdict::Inconclusive,
            value: None,
            stable_value: None,
            limit: None,
            samples: None,
            bound: None,
            message: String::new(),
            sequential: None,
        }
    }
}

pub fn judge(def: &GateDef, obs: Option<&GateObservation>) -> GateResult {
    let mut result = def.unjudged();
    let Some(obs) = obs else {
        result.message = "not measured".into();
        return result;
    };
    let (value, samples) = match &obs.candidate {
        Measurement::Value { value, samples } => (*value, *samples),
        Measurement::QueryError(e) => {
            result.verdict = Verdict::Error;
            result.message = format!("candidate query failed: {e}");
            return result;
        }
        other => {
            result.message = format!("candidate: {}", other.describe());
            return result;
        }
    };
    result.value = Some(value);
    result.samples = Some(samples);
    if samples < def.min_samples {
        result.message = format!("too few samples: {samples} < {}", def.min_samples);
        return result;
    }

    let strict = def.comparison == Comparison::Strict;
    // Broken: above an upper bound (or at it, when strict); below a lower one likewise.
    let over = |v: f64, bound: f64| if strict { v >= bound - EPSILON } else { v > bound + EPSILON };
    let under = |v: f64, bound: f64| if strict { v <= bound + EPSILON } else { v < bound - EPSILON };
    // The limit as written, and the comparison that breaks it.
    let (le, ge, gt, lt) = if strict { ("<", ">", ">=", "<=") } else { ("<=", ">=", ">", "<") };
    let mut limits = Vec::new();
    let mut failures = Vec::new();
    let (mut upper, mut lower) = (None::<f64>, None::<f64>);
    if let Some(max) = def.max {
        upper = Some(max);
        limits.push(format!("{le} {}", num(max)));
        if over(value, max) {
            failures.push(format!("{} {gt} max {}", num(value), num(max)));
        }
    }
    if let Some(min) = def.min {
        lower = Some(min);
        limits.push(format!("{ge} {}", num(min)));
        if under(value, min) {
            failures.push(format!("{} {lt} min {}", num(value), num(min)));
        }
    }
    let mut baseline_problem = None;
    if def.is_relative() {
        match &obs.stable {
            Measurement::Value { value: stable, samples: stable_samples } if *stable_samples >= def.min_samples => {
                let stable = *stable;
                result.stable_value = Some(stable);
                let pct = |r: f64| format!("{}%", num(r * 100.0));
                let mut upper_bound = |bound: f64, how: String| {
                    upper = Some(upper.map_or(bound, |u| u.min(bound)));
                    limits.push(format!("{le} {} ({how})", num(bound)));
                    if over(value, bound) {
                        failures.push(format!("{} {gt} {how}", num(value)));
                    }
                };
                if let Some(above) = def.max_above_stable {
                    upper_bound(stable + above, format!("stable {} + {}", num(stable), num(above)));
                }
                if let Some(ratio) = def.max_above_stable_ratio {
                    upper_bound(stable * (1.0 + ratio), format!("stable {} + {}", num(stable), pct(ratio)));
                }
                let mut lower_bound = |bound: f64, how: String| {
                    lower = Some(lower.map_or(bound, |l| l.max(bound)));
                    limits.push(format!("{ge} {} ({how})", num(bound)));
                    if under(value, bound) {
                        failures.push(format!("{} {lt} {how}", num(value)));
                    }
                };
                if let Some(below) = def.max_below_stable {
                    lower_bound(stable - below, format!("stable {} - {}", num(stable), num(below)));
                }
                if let Some(ratio) = def.max_below_stable_ratio {
                    lower_bound(stable * (1.0 - ratio), format!("stable {} - {}", num(stable), pct(ratio)));
                }
            }
            Measurement::Value { value: stable, samples: stable_samples } => {
                result.stable_value = Some(*stable);
                baseline_problem =
                    Some(format!("stable baseline has too few samples: {stable_samples} < {}", def.min_samples));
            }
            other => baseline_problem = Some(format!("stable baseline: {}", other.describe())),
        }
    }
    result.limit = (!limits.is_empty()).then(|| limits.join(" and "));
    result.bound = upper.or(lower);
    if !failures.is_empty() {
        result.verdict = Verdict::Fail;
        result.message = failures.join("; ");
    } else if let Some(problem) = baseline_problem {
        result.verdict =
            if matches!(obs.stable, Measurement::QueryError(_)) { Verdict::Error } else { Verdict::Inconclusive };
        result.message = problem;
    } else {
        result.verdict = Verdict::Pass;
        result.message = format!("{} within limits ({samples} samples)", num(value));
    }
    result
}

/// Combines gate verdicts: any fail fails; otherwise any inconclusive/error is inconclusive. No
/// gates is no evidence: inconclusive (a spec opts out with `analysis.promoteWithoutGates`).
pub fn overall_verdict(gates: &[GateResult]) -> Verdict {
    if gates.is_empty() {
        Verdict::Inconclusive
    } else if gates.iter().any(|g| g.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if gates.iter().any(|g| g.verdict == Verdict::Error) {
        Verdict::Error
    } else if gates.iter().any(|g| g.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    }
}
