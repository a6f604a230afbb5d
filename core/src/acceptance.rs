//! Acceptance before any traffic: the candidate's golden-set and load checks (measured by the
//! adapters, judged here against `spec.acceptance`), and the hold on traffic until they pass.

use super::ctx::Opening;
use super::steps::Flow;
use super::*;

/// While the checks run, how often the controller looks for their results.
pub const ACCEPTANCE_POLL: SignedDuration = SignedDuration::from_secs(2);

/// What the adapters measured for the candidate's acceptance checks.
#[derive(Clone, Debug, PartialEq)]
pub enum AcceptanceReport {
    /// The checks ran; a check the spec does not ask for is `None`.
    Measured { golden_set: Option<GoldenSetMeasurement>, load: Option<LoadMeasurement> },
    /// They could not run: the golden set's download or digest, or pods that never answered.
    Error(String),
}

/// The current candidate's acceptance status, if it is for this build.
fn current<'a>(spec: &ModelRolloutSpec, status: &'a ModelRolloutStatus) -> Option<&'a AcceptanceStatus> {
    status.acceptance.as_ref().filter(|a| a.version == spec.model.version && a.sha256 == spec.model.artifact.sha256)
}

/// Whether the candidate still waits on acceptance checks the spec asks for (no traffic, no
/// analysis until they pass).
pub fn awaiting_acceptance(spec: &ModelRolloutSpec, status: &ModelRolloutStatus) -> bool {
    spec.acceptance.is_some() && current(spec, status).and_then(|a| a.verdict) != Some(Verdict::Pass)
}

/// Judges what was measured against the spec's limits: one result per limit, in a fixed order.
pub fn judge_acceptance(
    spec: &AcceptanceSpec,
    golden: Option<&GoldenSetMeasurement>,
    load: Option<&LoadMeasurement>,
) -> Vec<GateResult> {
    let mut out = Vec::new();
    if let Some(check) = &spec.golden_set {
        let floor = |name: &str, limit: &GoldenLimit, value: Option<f64>, stable: Option<f64>| {
            let mut bound = limit.min;
            if let Some(below) = limit.max_below_stable {
                match stable {
                    Some(s) => bound = Some(bound.map_or(s - below, |b: f64| b.max(s - below))),
                    None => {
                        return result(
                            name,
                            Side::AtLeast,
                            Verdict::Error,
                            value,
                            stable,
                            None,
                            "stable's score is missing".into(),
                        );
                    }
                }
            }
            lower(name, value, stable, bound)
        };
        let cand = golden.map(|g| &g.candidate);
        let stable = golden.and_then(|g| g.stable.as_ref());
        if let Some(l) = &check.auc {
            out.push(floor("goldenSet.auc", l, cand.and_then(|c| c.auc), stable.and_then(|s| s.auc)));
        }
        if let Some(l) = &check.accuracy {
            out.push(floor("goldenSet.accuracy", l, cand.and_then(|c| c.accuracy), stable.and_then(|s| s.accuracy)));
        }
        if let Some(max) = check.max_score_difference {
            out.push(upper("goldenSet.maxScoreDifference", cand.and_then(|c| c.max_score_difference), max));
        }
        if let Some(max) = check.max_contract_failure_rate {
            out.push(upper("goldenSet.contractFailureRate", cand.map(|c| c.contract_failure_rate), max));
        }
    }
    if let Some(check) = &spec.load {
        let p95 = load.map(|l| l.latency_p95_seconds);
        out.push(upper("load.latencyP95", p95, check.max_latency_p95.get().as_secs_f64()));
        let errors = load.map(|l| if l.requests == 0 { 1.0 } else { l.errors as f64 / l.requests as f64 });
        out.push(upper("load.errorRate", errors, check.max_error_rate));
    }
    out
}

/// Which side of its bound a value must stay.
#[derive(Clone, Copy)]
enum Side {
    AtLeast,
    AtMost,
}

fn result(
    name: &str,
    side: Side,
    verdict: Verdict,
    value: Option<f64>,
    stable: Option<f64>,
    bound: Option<f64>,
    message: String,
) -> GateResult {
    GateResult {
        name: name.into(),
        verdict,
        value,
        stable_value: stable,
        limit: bound.map(|b| match side {
            Side::AtLeast => format!(">= {b}"),
            Side::AtMost => format!("<= {b}"),
        }),
        samples: None,
        bound,
        message,
        sequential: None,
    }
}

fn lower(name: &str, value: Option<f64>, stable: Option<f64>, bound: Option<f64>) -> GateResult {
    match (value, bound) {
        (None, _) => result(
            name,
            Side::AtLeast,
            Verdict::Error,
            None,
            stable,
            bound,
            "not measured (e.g. the labels hold one class only)".into(),
        ),
        (Some(v), Some(b)) if v + EPSILON < b => {
            result(name, Side::AtLeast, Verdict::Fail, value, stable, bound, format!("{v:.4} < {b:.4}"))
        }
        (Some(v), Some(b)) => {
            result(name, Side::AtLeast, Verdict::Pass, value, stable, bound, format!("{v:.4} >= {b:.4}"))
        }
        (Some(v), None) => result(name, Side::AtLeast, Verdict::Pass, value, stable, None, format!("{v:.4}")),
    }
}

fn upper(name: &str, value: Option<f64>, bound: f64) -> GateResult {
    match value {
        None => result(name, Side::AtMost, Verdict::Error, None, None, Some(bound), "not measured".into()),
        Some(v) if v > bound + EPSILON => {
            result(name, Side::AtMost, Verdict::Fail, value, None, Some(bound), format!("{v:.4} > {bound:.4}"))
        }
        Some(v) => result(name, Side::AtMost, Verdict::Pass, value, None, Some(bound), format!("{v:.4} <= {bound:.4}")),
    }
}

/// The acceptance step: holds the candidate out of traffic until its acceptance checks pass:
/// starts them, records their results, fails the rollout on a failed check or the timeout. Checks
/// that pass on this step open the first stage's traffic for the steps after it (the preRollout
/// webhooks may still hold it).
pub(super) fn acceptance(ctx: &mut Ctx<'_>, obs: &Observations) -> Flow {
    let spec = ctx.spec;
    let Some(acc) = &spec.acceptance else { return Flow::Continue };
    if !awaiting_acceptance(spec, &ctx.st) {
        return Flow::Continue;
    }
    let judged = current(spec, &ctx.st).map(|a| a.verdict.is_some());
    if judged == Some(true) {
        // Failed: the rollout ended on the step that judged it.
        return Flow::Stop;
    }
    if judged.is_none() {
        ctx.st.acceptance = Some(AcceptanceStatus {
            version: spec.model.version.clone(),
            sha256: spec.model.artifact.sha256.clone(),
            start_time: Time(ctx.now),
            verdict: None,
            end_time: None,
            checks: Vec::new(),
            golden_set: None,
            load: None,
            error: None,
        });
        let msg = format!("candidate {} Ready; acceptance checks started: {}", spec.model.version, names(acc));
        ctx.event(EventType::Normal, reasons::ACCEPTANCE_RUNNING, msg);
    }
    ctx.hold_before_traffic();
    let started = ctx.st.acceptance.as_ref().map_or(ctx.now, |a| a.start_time.0);
    let now = ctx.now;
    let verdict = match &obs.acceptance {
        Some(AcceptanceReport::Measured { golden_set, load }) => {
            let checks = judge_acceptance(acc, golden_set.as_ref(), load.as_ref());
            let pass = checks.iter().all(|c| c.verdict == Verdict::Pass);
            let a = ctx.st.acceptance.as_mut().expect("set above");
            a.golden_set = golden_set.clone();
            a.load = load.clone();
            a.checks = checks;
            Some(if pass { Verdict::Pass } else { Verdict::Fail })
        }
        Some(AcceptanceReport::Error(e)) => {
            ctx.st.acceptance.as_mut().expect("set above").error = Some(e.clone());
            Some(Verdict::Error)
        }
        None if elapsed(started, now) >= signed(&acc.timeout) => {
            let e = format!("the checks did not finish within spec.acceptance.timeout {}", acc.timeout);
            ctx.st.acceptance.as_mut().expect("set above").error = Some(e);
            Some(Verdict::Error)
        }
        None => None,
    };
    let Some(verdict) = verdict else {
        ctx.fx.actions.push(Action::RunAcceptance {
            version: spec.model.version.clone(),
            sha256: spec.model.artifact.sha256.clone(),
        });
        ctx.wake_in(ACCEPTANCE_POLL);
        if !ctx.is_paused() {
            let msg = format!("acceptance checks running on candidate {}: {}", spec.model.version, names(acc));
            ctx.set_phase(Phase::Progressing, reasons::ACCEPTANCE_RUNNING, msg);
        }
        return Flow::Stop;
    };
    let a = ctx.st.acceptance.as_mut().expect("set above");
    a.verdict = Some(verdict);
    a.end_time = Some(Time(now));
    let summary = a.summary();
    if verdict == Verdict::Pass {
        ctx.fx.opening =
            Some(Opening { reason: reasons::ACCEPTANCE_PASSED, what: format!("acceptance passed ({summary})") });
        return Flow::Continue;
    }
    let msg = format!("candidate {} failed acceptance before any traffic: {summary}", spec.model.version);
    ctx.roll_back(Phase::Failed, reasons::ACCEPTANCE_FAILED, Outcome::Failed, msg);
    Flow::Stop
}

fn names(acc: &AcceptanceSpec) -> String {
    let golden = acc.golden_set.as_ref().map(|_| "golden set".to_string());
    let load = acc.load.as_ref().map(|l| format!("load {} req/s for {}", l.rate, l.duration));
    golden.into_iter().chain(load).collect::<Vec<_>>().join(", ")
}
