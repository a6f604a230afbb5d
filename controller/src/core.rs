//! The decision core: `(spec, status, observations, now) -> (status', actions)`.
//!
//! Pure: no I/O, no async, no clock. Everything the controller knows about the world arrives in
//! [`Observations`]; everything it should do leaves as [`Action`]s, executed by the adapters before
//! the returned status is written (so a crash between the two repeats idempotent actions instead of
//! losing progress). All progress lives in the status, which is what makes a restart resume the same
//! stage.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::*;
use crate::conditions::{reasons, types};

/// The most history entries kept in status.
pub const HISTORY_LIMIT: usize = 10;

/// Slack for float comparisons, so a value equal to its limit (after `stable + delta` arithmetic)
/// is judged equal rather than a rounding error over.
const EPSILON: f64 = 1e-9;

/// What the controller observed this reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// `metadata.generation` of the object being reconciled.
    pub generation: Option<i64>,
    /// Whether the candidate's Deployment has all its desired pods Ready (false when it is absent).
    pub candidate_ready: bool,
    /// Gate measurements, when an analysis was due and ran (see [`analysis_due`]).
    pub analysis: Option<Vec<GateObservation>>,
    /// Where this rollout's first analysis of a stage falls within the spread.
    pub analysis_slot: AnalysisSlot,
}

/// A fixed place per rollout within a short spread after its stage starts, where its analyses
/// fall (see [`next_analysis_at`]). Rollouts started together (one GitOps sync, one `kubectl
/// apply` of many) would otherwise query Prometheus and write status in the same instant at every
/// interval for as long as they run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnalysisSlot(u16);

impl AnalysisSlot {
    /// The slot of a rollout, from a key that outlives restarts (its uid): a fixed hash, not the
    /// std hasher, whose seed differs per process.
    pub fn of(key: &str) -> Self {
        let fnv = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        // FNV's last byte reaches only the low bits: mix them up (the splitmix64 finalizer).
        let mut h = fnv;
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self(((h ^ (h >> 31)) >> 48) as u16)
    }

    /// The slot as a fraction in [0, 1): other periodic work spreads by it too.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 65_536.0
    }

    /// How far the rollout's analyses sit after the interval's beat: up to a fifth of the
    /// interval, at most 10 s.
    pub fn delay(self, interval: SignedDuration) -> SignedDuration {
        let spread = (interval / 5).min(SignedDuration::from_secs(10));
        spread.mul_f64(self.fraction())
    }
}

/// One gate's measurement for the candidate and for the stable baseline over the same window.
#[derive(Clone, Debug, PartialEq)]
pub struct GateObservation {
    pub gate: String,
    pub candidate: Measurement,
    pub stable: Measurement,
}

/// A measurement. Missing data is its own variant, never a default number.
#[derive(Clone, Debug, PartialEq)]
pub enum Measurement {
    /// A finite value and the number of samples behind it in the window.
    Value {
        value: f64,
        samples: u64,
    },
    /// The query returned no series.
    NoData,
    NotANumber,
    Infinite,
    /// The query failed (unreachable, timeout, bad PromQL).
    QueryError(String),
}

impl Measurement {
    /// Classifies a raw value: NaN and ±Inf are their own variants.
    pub fn sample(value: f64, samples: u64) -> Self {
        if value.is_nan() {
            Measurement::NotANumber
        } else if value.is_infinite() {
            Measurement::Infinite
        } else {
            Measurement::Value { value, samples }
        }
    }

    fn describe(&self) -> String {
        match self {
            Measurement::Value { value, samples } => format!("{value} ({samples} samples)"),
            Measurement::NoData => "no data".into(),
            Measurement::NotANumber => "NaN".into(),
            Measurement::Infinite => "infinite".into(),
            Measurement::QueryError(e) => format!("query error: {e}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Stable,
    Candidate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// What the adapters should do. Every action is idempotent.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Make sure a Deployment serves this model in this role.
    EnsureWorkload { role: Role, model: ModelSpec },
    /// Route traffic: `weight`% of live traffic to the candidate, `mirror_percent`% copied to it.
    SetTraffic { stable_version: String, candidate_version: Option<String>, weight: i32, mirror_percent: i32 },
    /// Scale this version's Deployment to zero.
    ScaleDown { version: String },
    /// Record a Kubernetes Event on the ModelRollout. `action` names the transition (the
    /// candidate and its stage): Events with the same reason and action are one series, so each
    /// transition is an Event of its own.
    Event { kind: EventType, reason: &'static str, action: String, message: String },
    /// Send to the webhooks subscribed to this event.
    Notify { event: NotificationEvent, message: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: ModelRolloutStatus,
    pub actions: Vec<Action>,
    /// When to look again even if nothing changes (next analysis, stage end, scale-down, deadline).
    pub requeue_after: Option<Duration>,
}

/// A spec's duration as the core computes with it. The contract's type holds at most `i64`
/// nanoseconds, so this cannot fail.
pub fn signed(d: &crate::api::Duration) -> SignedDuration {
    SignedDuration::try_from(d.get()).unwrap_or(SignedDuration::MAX)
}

/// The durations of a spec, parsed once.
#[derive(Clone, Debug, PartialEq)]
pub struct Timings {
    pub interval: SignedDuration,
    pub query_timeout: SignedDuration,
    pub progress_deadline: SignedDuration,
    pub scale_down_delay: SignedDuration,
    pub previous_stable_delay: SignedDuration,
    pub stage_min: Vec<SignedDuration>,
}

impl Timings {
    /// The durations, or why the spec cannot run. The apiserver refuses a zero interval,
    /// timeout or progress deadline (CEL); an object stored before those rules is refused here.
    pub fn of(spec: &ModelRolloutSpec) -> Result<Self, String> {
        for (field, d) in [
            ("spec.analysis.interval", &spec.analysis.interval),
            ("spec.analysis.prometheus.timeout", &spec.analysis.prometheus.timeout),
            ("spec.workload.progressDeadline", &spec.workload.progress_deadline),
        ] {
            if d.is_zero() {
                return Err(format!("{field}: must be more than 0s"));
            }
        }
        Ok(Self {
            interval: signed(&spec.analysis.interval),
            query_timeout: signed(&spec.analysis.prometheus.timeout),
            progress_deadline: signed(&spec.workload.progress_deadline),
            scale_down_delay: signed(&spec.rollback.scale_down_delay),
            previous_stable_delay: signed(&spec.rollback.previous_stable_scale_down_delay),
            stage_min: spec.stages.iter().map(|s| signed(&s.min_duration)).collect(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// gates

/// Which built-in query a gate runs.
#[derive(Clone, Debug, PartialEq)]
pub enum GateKind {
    ErrorRate,
    LatencyP95,
    FalsePositiveRate,
    CaptureRate,
    Custom { query: String, samples_query: Option<String> },
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
}

pub const GATE_ERROR_RATE: &str = "errorRate";
pub const GATE_LATENCY_P95: &str = "latencyP95";
pub const GATE_FALSE_POSITIVE_RATE: &str = "falsePositiveRate";
pub const GATE_CAPTURE_RATE: &str = "captureRate";

/// The gates a spec asks for, built-ins first, in a stable order.
pub fn gate_defs(gates: &Gates) -> Vec<GateDef> {
    let upper = |name: &str, kind, g: &UpperGate| GateDef {
        name: name.into(),
        kind,
        min_samples: g.min_samples,
        max: g.max,
        min: None,
        max_above_stable: g.max_above_stable,
        max_below_stable: None,
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
        defs.push(GateDef {
            name: GATE_CAPTURE_RATE.into(),
            kind: GateKind::CaptureRate,
            min_samples: g.min_samples,
            max: None,
            min: g.min,
            max_above_stable: None,
            max_below_stable: g.max_below_stable,
        });
    }
    for c in &gates.custom {
        defs.push(GateDef {
            name: c.name.clone(),
            kind: GateKind::Custom { query: c.query.clone(), samples_query: c.samples_query.clone() },
            min_samples: c.min_samples,
            max: c.max,
            min: c.min,
            max_above_stable: None,
            max_below_stable: None,
        });
    }
    defs
}

impl GateDef {
    /// Whether judging this gate needs the stable baseline.
    pub fn is_relative(&self) -> bool {
        self.max_above_stable.is_some() || self.max_below_stable.is_some()
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

pub fn judge(def: &GateDef, obs: Option<&GateObservation>) -> GateResult {
    let mut result = GateResult {
        name: def.name.clone(),
        verdict: Verdict::Inconclusive,
        value: None,
        stable_value: None,
        limit: None,
        samples: None,
        bound: None,
        message: String::new(),
    };
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

    let mut limits = Vec::new();
    let mut failures = Vec::new();
    let (mut upper, mut lower) = (None::<f64>, None::<f64>);
    if let Some(max) = def.max {
        upper = Some(max);
        limits.push(format!("<= {}", num(max)));
        if value > max + EPSILON {
            failures.push(format!("{} > max {}", num(value), num(max)));
        }
    }
    if let Some(min) = def.min {
        lower = Some(min);
        limits.push(format!(">= {}", num(min)));
        if value < min - EPSILON {
            failures.push(format!("{} < min {}", num(value), num(min)));
        }
    }
    let mut baseline_problem = None;
    if def.is_relative() {
        match &obs.stable {
            Measurement::Value { value: stable, samples: stable_samples } if *stable_samples >= def.min_samples => {
                result.stable_value = Some(*stable);
                if let Some(above) = def.max_above_stable {
                    let bound = stable + above;
                    upper = Some(upper.map_or(bound, |u| u.min(bound)));
                    limits.push(format!("<= {} (stable {} + {})", num(bound), num(*stable), num(above)));
                    if value > bound + EPSILON {
                        failures.push(format!("{} > stable {} + {}", num(value), num(*stable), num(above)));
                    }
                }
                if let Some(below) = def.max_below_stable {
                    let bound = stable - below;
                    lower = Some(lower.map_or(bound, |l| l.max(bound)));
                    limits.push(format!(">= {} (stable {} - {})", num(bound), num(*stable), num(below)));
                    if value < bound - EPSILON {
                        failures.push(format!("{} < stable {} - {}", num(value), num(*stable), num(below)));
                    }
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

// ---------------------------------------------------------------------------------------------
// timing helpers

fn ts(t: &Time) -> Timestamp {
    t.0
}

/// `now - since`, zero when the clock went backwards.
fn elapsed(since: Timestamp, now: Timestamp) -> SignedDuration {
    let d = now.duration_since(since);
    if d.is_negative() { SignedDuration::ZERO } else { d }
}

fn until(at: Timestamp, now: Timestamp) -> Duration {
    let d = at.duration_since(now);
    if d.is_negative() { Duration::ZERO } else { d.unsigned_abs() }
}

/// When the next analysis of the current stage is due, if the rollout is in a phase that analyses.
///
/// A stage's analyses fall on a grid: the stage start, plus the rollout's [`AnalysisSlot`], plus
/// every interval. The next one is the first grid point at least a second after the last analysis,
/// because status keeps times to the second: the analysis just taken must not come due again, and
/// a late analysis is not made up for by a burst.
pub fn next_analysis_at(spec: &ModelRolloutSpec, status: &ModelRolloutStatus, slot: AnalysisSlot) -> Option<Timestamp> {
    let phase = status.phase?;
    if !phase.is_active() || spec.paused || status.candidate_unready_since.is_some() {
        return None;
    }
    let interval = signed(&spec.analysis.interval);
    if interval.is_zero() {
        return None;
    }
    let stage_start = ts(status.stage_start_time.as_ref()?);
    let first = whole_second(stage_start).checked_add(slot.delay(interval)).ok()?.checked_add(interval).ok()?;
    let last = match &status.last_analysis {
        Some(run) if Some(run.stage_index) == status.stage_index && ts(&run.time) >= stage_start => ts(&run.time),
        _ => return Some(first),
    };
    let after = whole_second(last).checked_add(SignedDuration::from_secs(1)).ok()?;
    if after <= first {
        return Some(first);
    }
    let behind = u128::try_from(after.duration_since(first).as_nanos()).ok()?;
    let steps = behind.div_ceil(u128::try_from(interval.as_nanos()).ok()?);
    first.checked_add(interval.checked_mul(i32::try_from(steps).ok()?)?).ok()
}

/// `t` without its fraction of a second, as status stores it.
fn whole_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Whether the controller should query the gates now. A clock that went backwards is not due.
pub fn analysis_due(spec: &ModelRolloutSpec, status: &ModelRolloutStatus, slot: AnalysisSlot, now: Timestamp) -> bool {
    next_analysis_at(spec, status, slot).is_some_and(|at| now >= at)
}

// ---------------------------------------------------------------------------------------------
// the state machine

fn pending<'a>(id: Option<&'a str>, handled: &Option<String>) -> Option<&'a str> {
    id.filter(|id| handled.as_deref() != Some(*id))
}

struct Ctx<'a> {
    spec: &'a ModelRolloutSpec,
    st: ModelRolloutStatus,
    now: Timestamp,
    timings: Timings,
    ensure_candidate: bool,
    events: Vec<Action>,
    analysis_slot: AnalysisSlot,
}

/// Decides what a rollout does next. See the module docs and README for the rules.
pub fn decide(spec: &ModelRolloutSpec, status: &ModelRolloutStatus, obs: &Observations, now: Timestamp) -> Decision {
    let mut st = status.clone();
    st.observed_generation = obs.generation;
    let timings = match Timings::of(spec) {
        Ok(t) => t,
        Err(message) => {
            // Invalid spec: change nothing, say why, wait for a new generation.
            st.reason = Some(reasons::INVALID_SPEC.into());
            st.message = Some(message.clone());
            set_conditions(&mut st, now);
            return Decision {
                status: st,
                actions: vec![Action::Event {
                    kind: EventType::Warning,
                    reason: reasons::INVALID_SPEC,
                    action: format!("InvalidSpec generation {}", obs.generation.unwrap_or(0)),
                    message,
                }],
                requeue_after: None,
            };
        }
    };
    let mut ctx =
        Ctx { spec, st, now, timings, ensure_candidate: false, events: Vec::new(), analysis_slot: obs.analysis_slot };
    ctx.step(obs);
    ctx.finish()
}

impl Ctx<'_> {
    fn step(&mut self, obs: &Observations) {
        let spec = self.spec;
        self.st.promoting_without_gates =
            spec.analysis.promote_without_gates && gate_defs(&spec.analysis.gates).is_empty();
        if self.st.phase == Some(Phase::Paused) && self.st.hold.is_none() {
            // A status written before holds were typed says what holds it in its reason only.
            self.st.hold = Some(match self.st.reason.as_deref() {
                Some(reasons::AWAITING_APPROVAL) => Hold::Approval,
                Some(reasons::INCONCLUSIVE_ANALYSIS) => Hold::Inconclusive,
                _ => Hold::Spec,
            });
        }
        let Some(stable) = self.st.stable.clone() else {
            // First sight: what the spec names is the stable version; nothing to roll out.
            self.st.stable = Some(spec.model.clone());
            self.st.stable_version = Some(spec.model.version.clone());
            self.set_phase(Phase::Idle, reasons::STABLE, format!("serving {}", spec.model.version));
            return;
        };

        if spec.model.same_build(&stable) {
            if self.phase().is_some_and(Phase::is_active) {
                let msg = format!("spec.model returned to the stable version {}", stable.version);
                self.roll_back(Phase::Idle, reasons::REVERTED, Outcome::RolledBack, msg);
            } else if matches!(self.phase(), Some(Phase::RolledBack | Phase::Failed)) {
                self.clear_candidate();
                self.set_phase(Phase::Idle, reasons::STABLE, format!("serving {}", stable.version));
            }
            self.mark_operations_handled();
            return;
        }

        let is_new_candidate = self.st.candidate_version.as_deref() != Some(spec.model.version.as_str())
            || self.st.candidate_sha256.as_deref() != Some(spec.model.artifact.sha256.as_str());
        if is_new_candidate {
            // Requests already in the spec belong to an older rollout.
            self.mark_operations_handled();
            if self.phase().is_some_and(Phase::is_active)
                && let Some(old) = self.st.candidate_version.clone()
            {
                let msg = format!("superseded by {}", spec.model.version);
                self.push_history(&old, Outcome::Superseded, &msg);
                self.schedule_scale_down(&old, SignedDuration::ZERO);
            }
            self.start_rollout(reasons::ROLLOUT_STARTED, &stable, obs);
            return;
        }

        match self.phase() {
            Some(Phase::RolledBack | Phase::Failed) => {
                if let Some(id) =
                    pending(spec.operations.retry.as_ref().map(|r| r.id.as_str()), &self.st.handled_operations.retry)
                {
                    self.st.handled_operations.retry = Some(id.to_string());
                    self.mark_operations_handled();
                    self.start_rollout(reasons::RETRIED, &stable, obs);
                } else {
                    self.mark_operations_handled();
                }
                return;
            }
            Some(Phase::Progressing | Phase::Paused) => {}
            Some(Phase::Idle | Phase::Promoted) | None => {
                // The candidate matches status but no rollout is active: only possible if status was
                // edited by hand. Start over rather than guess.
                self.start_rollout(reasons::ROLLOUT_STARTED, &stable, obs);
                return;
            }
        }
        self.progress(obs);
    }

    /// One step of an active rollout.
    fn progress(&mut self, obs: &Observations) {
        let spec = self.spec;
        let ops = &spec.operations;
        if let Some(id) = pending(ops.abort.as_ref().map(|r| r.id.as_str()), &self.st.handled_operations.abort) {
            self.st.handled_operations.abort = Some(id.to_string());
            let why = ops.abort.as_ref().and_then(|r| r.reason.clone()).unwrap_or_else(|| "no reason given".into());
            self.roll_back(Phase::RolledBack, reasons::ABORTED, Outcome::Aborted, format!("aborted: {why}"));
            return;
        }
        // A retry requested while a rollout runs means nothing; record it so it cannot fire later.
        if let Some(r) = &ops.retry {
            self.st.handled_operations.retry = Some(r.id.clone());
        }
        self.ensure_candidate = true;

        // No traffic moves to a candidate whose pods are not Ready.
        if !obs.candidate_ready {
            let since = self.st.candidate_unready_since.get_or_insert(Time(self.now)).0;
            if elapsed(since, self.now) >= self.timings.progress_deadline {
                let msg = format!(
                    "candidate {} not Ready within the progress deadline {}",
                    spec.model.version, spec.workload.progress_deadline
                );
                self.roll_back(Phase::Failed, reasons::PROGRESS_DEADLINE_EXCEEDED, Outcome::Failed, msg);
                return;
            }
            self.st.canary_weight = 0;
            self.st.mirror_percent = 0;
            if !self.is_paused() {
                self.set_phase(
                    Phase::Progressing,
                    reasons::WAITING_FOR_CANDIDATE,
                    format!("waiting for candidate {} pods to be Ready", spec.model.version),
                );
            }
            return;
        }
        if self.st.candidate_unready_since.take().is_some() {
            // The stage's clock starts when its traffic can actually flow.
            self.st.stage_start_time = Some(Time(self.now));
            if !self.is_paused() {
                self.apply_stage_traffic();
                let stage = self.stage_name();
                let msg = format!(
                    "candidate {} Ready; stage {stage}: {}% traffic, {}% mirror",
                    spec.model.version, self.st.canary_weight, self.st.mirror_percent
                );
                self.set_phase(Phase::Progressing, reasons::CANDIDATE_READY, msg);
            }
        }

        if let Some(p) = &ops.promote
            && pending(Some(p.id.as_str()), &self.st.handled_operations.promote).is_some()
        {
            self.st.handled_operations.promote = Some(p.id.clone());
            let why = p.reason.clone().unwrap_or_else(|| "no reason given".into());
            if p.full {
                self.complete(reasons::MANUALLY_PROMOTED, format!("promoted to 100% by request: {why}"));
            } else {
                self.advance(reasons::MANUALLY_PROMOTED, format!("promoted by request: {why}"));
            }
            return;
        }

        if spec.paused {
            self.apply_stage_traffic();
            if self.st.hold != Some(Hold::Spec) {
                self.pause(Hold::Spec, reasons::PAUSED_BY_SPEC, "paused by spec.paused".into());
            }
            return;
        }
        if self.st.hold == Some(Hold::Spec) {
            self.set_phase(Phase::Progressing, reasons::RESUMED, "resumed".into());
            self.event(EventType::Normal, reasons::RESUMED, "resumed: spec.paused is false".into());
        }
        self.apply_stage_traffic();

        if let Some(measurements) = &obs.analysis
            && self.analyse(measurements)
        {
            return;
        }
        if self.st.hold == Some(Hold::Inconclusive) {
            return;
        }

        // Advance only after the minimum duration AND a passing analysis taken in this stage.
        let idx = self.st.stage_index.unwrap_or(0) as usize;
        let stage_start = self.st.stage_start_time.as_ref().map_or(self.now, |t| t.0);
        let min = self.timings.stage_min.get(idx).copied().unwrap_or(SignedDuration::ZERO);
        let passed_here = self.st.last_analysis.as_ref().is_some_and(|run| {
            run.stage_index as usize == idx && run.time.0 >= stage_start && run.verdict == Verdict::Pass
        });
        if elapsed(stage_start, self.now) >= min && passed_here && self.now >= stage_start {
            if spec.stages.get(idx).is_some_and(|s| s.manual_approval) {
                if self.st.hold != Some(Hold::Approval) {
                    let msg = format!("stage {} passed; waiting for promote", spec.stages[idx].name);
                    self.pause(Hold::Approval, reasons::AWAITING_APPROVAL, msg);
                }
                return;
            }
            let name = spec.stages.get(idx).map_or("?", |s| s.name.as_str());
            let msg = if self.st.promoting_without_gates {
                format!("stage {name} passed its minDuration (no gates: analysis.promoteWithoutGates)")
            } else {
                format!("stage {name} passed its gates")
            };
            self.advance(reasons::STAGE_ADVANCED, msg);
        }
    }

    /// Records an analysis. Returns true when it ended the rollout.
    fn analyse(&mut self, measurements: &[GateObservation]) -> bool {
        let spec = self.spec;
        let defs = gate_defs(&spec.analysis.gates);
        // At 100% the stable version answers no live traffic, so a relative gate has no fresh
        // baseline: it keeps the one measured last (carried forward analysis to analysis).
        let idx = self.st.stage_index.unwrap_or(0) as usize;
        let full = spec.stages.get(idx).is_some_and(|s| s.weight >= 100);
        let previous = self.st.last_analysis.clone();
        let gates: Vec<GateResult> = defs
            .iter()
            .map(|d| {
                let mut obs = measurements.iter().find(|m| m.gate == d.name).cloned();
                let carried = previous
                    .as_ref()
                    .and_then(|run| run.gates.iter().find(|g| g.name == d.name))
                    .and_then(|g| g.stable_value);
                let stale =
                    |m: &Measurement| !matches!(m, Measurement::Value { samples, .. } if *samples >= d.min_samples);
                let mut note = None;
                if full
                    && d.is_relative()
                    && let (Some(o), Some(baseline)) = (obs.as_mut(), carried)
                    && stale(&o.stable)
                {
                    o.stable = Measurement::Value { value: baseline, samples: d.min_samples };
                    note = Some(" (stable baseline carried from the last analysis: no stable traffic at 100%)");
                }
                let mut r = judge(d, obs.as_ref());
                if let Some(n) = note {
                    r.message.push_str(n);
                }
                r
            })
            .collect();
        let verdict = if gates.is_empty() && spec.analysis.promote_without_gates {
            Verdict::Pass
        } else {
            overall_verdict(&gates)
        };
        match verdict {
            Verdict::Pass => {
                self.st.consecutive_failures = 0;
                self.st.consecutive_inconclusive = 0;
            }
            Verdict::Fail => {
                self.st.consecutive_failures += 1;
                self.st.consecutive_inconclusive = 0;
            }
            // A data gap does not clear a failure streak.
            Verdict::Inconclusive | Verdict::Error => self.st.consecutive_inconclusive += 1,
        }
        let summary = |wanted: &[Verdict]| {
            gates
                .iter()
                .filter(|g| wanted.contains(&g.verdict))
                .map(|g| format!("{}: {}", g.name, g.message))
                .collect::<Vec<_>>()
                .join("; ")
        };
        self.st.last_analysis = Some(AnalysisRun {
            time: Time(self.now),
            stage_index: self.st.stage_index.unwrap_or(0),
            verdict,
            gates: gates.clone(),
        });

        if self.st.consecutive_failures >= spec.analysis.failure_limit {
            let msg =
                format!("{} consecutive failing analyses: {}", self.st.consecutive_failures, summary(&[Verdict::Fail]));
            self.roll_back(Phase::RolledBack, reasons::GATES_FAILED, Outcome::RolledBack, msg);
            return true;
        }
        if self.st.consecutive_inconclusive >= spec.analysis.inconclusive_limit {
            let msg = format!(
                "{} consecutive inconclusive analyses: {}",
                self.st.consecutive_inconclusive,
                summary(&[Verdict::Inconclusive, Verdict::Error])
            );
            match spec.rollback.on_inconclusive {
                InconclusivePolicy::Rollback => {
                    self.roll_back(Phase::RolledBack, reasons::INCONCLUSIVE_ANALYSIS, Outcome::RolledBack, msg);
                    return true;
                }
                InconclusivePolicy::Pause => {
                    if self.st.hold != Some(Hold::Inconclusive) {
                        self.pause(Hold::Inconclusive, reasons::INCONCLUSIVE_ANALYSIS, msg);
                    }
                }
            }
        } else if verdict == Verdict::Pass && self.st.hold == Some(Hold::Inconclusive) {
            self.set_phase(Phase::Progressing, reasons::RESUMED, "analysis conclusive again; resumed".into());
        } else if self.st.hold.is_none() {
            let msg = match (verdict, gates.is_empty()) {
                (Verdict::Pass, true) => "no gates: passed on time alone (analysis.promoteWithoutGates)".to_string(),
                (_, true) => "no gates: no evidence to promote on (set a gate, or analysis.promoteWithoutGates)".into(),
                _ => format!("analysis {}", verdict.as_str()),
            };
            self.st.reason = Some(reasons::ANALYSING.into());
            self.st.message = Some(match verdict {
                _ if gates.is_empty() => msg,
                Verdict::Pass => msg,
                Verdict::Fail => format!("{msg}: {}", summary(&[Verdict::Fail])),
                _ => format!("{msg}: {}", summary(&[Verdict::Inconclusive, Verdict::Error])),
            });
        }
        false
    }

    fn start_rollout(&mut self, reason: &'static str, stable: &ModelSpec, obs: &Observations) {
        let spec = self.spec;
        let candidate = &spec.model;
        self.st.candidate_version = Some(candidate.version.clone());
        self.st.candidate_sha256 = Some(candidate.artifact.sha256.clone());
        self.st.rollout_start_time = Some(Time(self.now));
        self.st.consecutive_failures = 0;
        self.st.consecutive_inconclusive = 0;
        self.st.last_analysis = None;
        self.st.candidate_unready_since = None;
        self.st.pending_scale_downs.retain(|p| p.version != candidate.version);

        let unmet = candidate.contract.unmet_by(&stable.contract);
        if !unmet.is_empty() {
            // Refused before anything is created or any traffic moves.
            let msg = format!(
                "candidate {} cannot take stable {}'s traffic: {}",
                candidate.version,
                stable.version,
                unmet.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            );
            self.st.stage_index = None;
            self.st.stage_name = None;
            self.st.stage_start_time = None;
            self.st.canary_weight = 0;
            self.st.mirror_percent = 0;
            self.push_history(&candidate.version, Outcome::Failed, &msg);
            self.set_phase(Phase::Failed, reasons::CONTRACT_MISMATCH, msg.clone());
            self.event(EventType::Warning, reasons::CONTRACT_MISMATCH, msg.clone());
            self.notify(NotificationEvent::RolledBack, msg);
            return;
        }
        self.ensure_candidate = true;
        let msg = format!("rolling out {} against stable {}", candidate.version, stable.version);
        self.event(EventType::Normal, reason, msg.clone());
        self.enter_stage(0, reason, msg);
        // The first stage's traffic waits for Ready candidate pods like any other stage's. Deciding
        // that now rather than on the next reconcile never sends traffic the candidate cannot take
        // (nor, with replica ratios, scales stable down for it), and the start is one status write.
        // An analysis taken before the start belongs to no stage of this rollout.
        self.progress(&Observations { analysis: None, ..*obs });
    }

    /// Moves to stage `idx`, skipping shadow-only stages the router cannot mirror to.
    fn enter_stage(&mut self, mut idx: usize, reason: &'static str, mut msg: String) {
        let stages = &self.spec.stages;
        let can_mirror = self.spec.traffic_routing.kind() != RouterKind::ReplicaRatio;
        while !can_mirror && idx + 1 < stages.len() && stages[idx].weight == 0 {
            msg = format!("{msg}; stage {} skipped: replicaRatio routing cannot mirror (no shadow)", stages[idx].name);
            idx += 1;
        }
        let stage = &stages[idx];
        self.st.stage_index = Some(idx as u32);
        self.st.stage_name = Some(stage.name.clone());
        self.st.stage_start_time = Some(Time(self.now));
        self.st.consecutive_failures = 0;
        self.st.consecutive_inconclusive = 0;
        self.st.candidate_unready_since = None;
        self.apply_stage_traffic();
        let full = format!(
            "stage {} ({}% traffic, {}% mirror): {msg}",
            stage.name, self.st.canary_weight, self.st.mirror_percent
        );
        self.set_phase(Phase::Progressing, reason, full.clone());
        self.event(EventType::Normal, reasons::STAGE_ADVANCED, full.clone());
        self.notify(NotificationEvent::StageChanged, full);
    }

    fn apply_stage_traffic(&mut self) {
        let idx = self.st.stage_index.unwrap_or(0) as usize;
        let Some(stage) = self.spec.stages.get(idx) else { return };
        let can_mirror = self.spec.traffic_routing.kind() != RouterKind::ReplicaRatio;
        self.st.canary_weight = stage.weight;
        self.st.mirror_percent = if can_mirror { stage.mirror_percent.unwrap_or(0) } else { 0 };
    }

    fn advance(&mut self, reason: &'static str, msg: String) {
        let idx = self.st.stage_index.unwrap_or(0) as usize;
        if idx + 1 >= self.spec.stages.len() {
            self.complete(reason, msg);
        } else {
            self.enter_stage(idx + 1, reason, msg);
        }
    }

    /// The candidate becomes stable; the old stable is kept for a while for a fast rollback.
    fn complete(&mut self, reason: &'static str, msg: String) {
        let new = self.spec.model.clone();
        let old = self.st.stable.replace(new.clone());
        self.push_history(&new.version, Outcome::Promoted, &msg);
        if let Some(old) = old.filter(|o| o.version != new.version) {
            self.schedule_scale_down(&old.version, self.timings.previous_stable_delay);
        }
        self.st.pending_scale_downs.retain(|p| p.version != new.version);
        self.st.stable_version = Some(new.version.clone());
        self.clear_candidate();
        self.ensure_candidate = false;
        let full = format!("{} promoted to stable: {msg}", new.version);
        let reason = if reason == reasons::MANUALLY_PROMOTED { reason } else { reasons::PROMOTED };
        self.set_phase(Phase::Promoted, reason, full.clone());
        self.event(EventType::Normal, reasons::PROMOTED, full.clone());
        self.notify(NotificationEvent::Promoted, full);
    }

    /// Weight 0 and mirror off now; candidate scaled down after the delay; stable untouched.
    fn roll_back(&mut self, phase: Phase, reason: &'static str, outcome: Outcome, msg: String) {
        let version = self.st.candidate_version.clone().unwrap_or_else(|| self.spec.model.version.clone());
        self.st.canary_weight = 0;
        self.st.mirror_percent = 0;
        self.ensure_candidate = false;
        self.schedule_scale_down(&version, self.timings.scale_down_delay);
        self.push_history(&version, outcome, &msg);
        if phase == Phase::Idle {
            self.clear_candidate();
        }
        let full = format!("{version} rolled back: {msg}");
        self.set_phase(phase, reason, full.clone());
        self.event(EventType::Warning, reason, full.clone());
        self.notify(NotificationEvent::RolledBack, full);
    }

    fn clear_candidate(&mut self) {
        self.st.candidate_version = None;
        self.st.candidate_sha256 = None;
        self.st.stage_index = None;
        self.st.stage_name = None;
        self.st.stage_start_time = None;
        self.st.candidate_unready_since = None;
        self.st.canary_weight = 0;
        self.st.mirror_percent = 0;
    }

    fn mark_operations_handled(&mut self) {
        let ops = &self.spec.operations;
        let handled = &mut self.st.handled_operations;
        if let Some(r) = &ops.abort {
            handled.abort = Some(r.id.clone());
        }
        if let Some(r) = &ops.promote {
            handled.promote = Some(r.id.clone());
        }
        if let Some(r) = &ops.retry {
            handled.retry = Some(r.id.clone());
        }
    }

    fn schedule_scale_down(&mut self, version: &str, delay: SignedDuration) {
        let at = self.now.checked_add(delay).unwrap_or(self.now);
        self.st.pending_scale_downs.retain(|p| p.version != version);
        self.st.pending_scale_downs.push(PendingScaleDown { version: version.to_string(), at: Time(at) });
    }

    fn push_history(&mut self, version: &str, outcome: Outcome, reason: &str) {
        self.st.history.insert(
            0,
            HistoryEntry { version: version.to_string(), outcome, reason: reason.to_string(), time: Time(self.now) },
        );
        self.st.history.truncate(HISTORY_LIMIT);
    }

    fn phase(&self) -> Option<Phase> {
        self.st.phase
    }

    fn is_paused(&self) -> bool {
        self.st.phase == Some(Phase::Paused)
    }

    fn set_phase(&mut self, phase: Phase, reason: &'static str, message: String) {
        if phase != Phase::Paused {
            self.st.hold = None;
        }
        self.st.phase = Some(phase);
        self.st.reason = Some(reason.to_string());
        self.st.message = Some(message);
    }

    /// An Event about the transition just made: its action names the candidate and the stage, so
    /// that each stage of each rollout is an Event of its own (see [`Action::Event`]).
    fn event(&mut self, kind: EventType, reason: &'static str, message: String) {
        let version = self.st.candidate_version.clone().unwrap_or_else(|| self.spec.model.version.clone());
        let action = match &self.st.stage_name {
            Some(stage) => format!("{version} {stage}"),
            None => version,
        };
        self.events.push(Action::Event { kind, reason, action, message });
    }

    fn stage_name(&self) -> String {
        let idx = self.st.stage_index.unwrap_or(0) as usize;
        self.spec.stages.get(idx).map_or_else(|| "?".into(), |s| s.name.clone())
    }

    fn notify(&mut self, event: NotificationEvent, message: String) {
        self.events.push(Action::Notify { event, message });
    }

    fn pause(&mut self, hold: Hold, reason: &'static str, message: String) {
        self.set_phase(Phase::Paused, reason, message.clone());
        self.st.hold = Some(hold);
        self.event(EventType::Normal, reason, message.clone());
        self.notify(NotificationEvent::Paused, message);
    }

    fn finish(mut self) -> Decision {
        let now = self.now;
        let mut actions = Vec::new();
        let stable = self.st.stable.clone().expect("stable is set by step");
        actions.push(Action::EnsureWorkload { role: Role::Stable, model: stable.clone() });
        let active = self.st.phase.is_some_and(Phase::is_active);
        if active && self.ensure_candidate {
            actions.push(Action::EnsureWorkload { role: Role::Candidate, model: self.spec.model.clone() });
        }
        actions.push(Action::SetTraffic {
            stable_version: stable.version.clone(),
            candidate_version: if active { self.st.candidate_version.clone() } else { None },
            weight: if active { self.st.canary_weight } else { 0 },
            mirror_percent: if active { self.st.mirror_percent } else { 0 },
        });
        let (due, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.st.pending_scale_downs).into_iter().partition(|p| p.at.0 <= now);
        self.st.pending_scale_downs = waiting;
        for p in due {
            // Never scale down what is serving.
            let serving = p.version == stable.version
                || (active && self.st.candidate_version.as_deref() == Some(p.version.as_str()));
            if !serving {
                actions.push(Action::ScaleDown { version: p.version });
            }
        }
        actions.append(&mut self.events);
        set_conditions(&mut self.st, now);

        let mut wake: Vec<Timestamp> = self.st.pending_scale_downs.iter().map(|p| p.at.0).collect();
        if let Some(at) = next_analysis_at(self.spec, &self.st, self.analysis_slot) {
            wake.push(at);
        }
        if active
            && let (Some(idx), Some(start)) = (self.st.stage_index, &self.st.stage_start_time)
            && let Some(min) = self.timings.stage_min.get(idx as usize)
        {
            wake.push(start.0.checked_add(*min).unwrap_or(start.0));
        }
        if let Some(since) = &self.st.candidate_unready_since {
            wake.push(since.0.checked_add(self.timings.progress_deadline).unwrap_or(since.0));
        }
        let requeue_after = wake.into_iter().filter(|t| *t > now).min().map(|t| until(t, now));
        Decision { status: self.st, actions, requeue_after }
    }
}

/// Sets the kstatus-style conditions from the phase, keeping `lastTransitionTime` where the
/// condition's status did not change.
fn set_conditions(st: &mut ModelRolloutStatus, now: Timestamp) {
    let phase = st.phase;
    let reason = st.reason.clone().unwrap_or_else(|| reasons::STABLE.into());
    let message = st.message.clone().unwrap_or_default();
    let is = |p: &[Phase]| phase.is_some_and(|x| p.contains(&x));
    let wanted = [
        (types::READY, is(&[Phase::Idle, Phase::Promoted])),
        (types::RECONCILING, is(&[Phase::Progressing, Phase::Paused])),
        (types::STALLED, is(&[Phase::RolledBack, Phase::Failed])),
        (types::PROGRESSING, is(&[Phase::Progressing])),
        (types::DEGRADED, is(&[Phase::RolledBack, Phase::Failed])),
        (types::PAUSED, is(&[Phase::Paused])),
    ];
    for (type_, on) in wanted {
        let status = if on { "True" } else { "False" }.to_string();
        let transition = st
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        st.conditions.retain(|c| c.type_ != type_);
        st.conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.clone(),
            message: message.clone(),
            observed_generation: st.observed_generation,
            last_transition_time: transition,
        });
    }
}

/// Whether two statuses differ in anything but timestamps of unchanged conditions.
pub fn status_changed(old: &ModelRolloutStatus, new: &ModelRolloutStatus) -> bool {
    let strip = |s: &ModelRolloutStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        s
    };
    strip(old) != strip(new)
}
