//! The decision core: `(spec, status, observations, now) -> (status', actions)`.
//!
//! Pure: no I/O, no async, no clock. Everything the controller knows about the world arrives in
//! [`Observations`]; everything it should do leaves as [`Action`]s, executed by the adapters before
//! the returned status is written (so a crash between the two repeats idempotent actions instead of
//! losing progress). All progress lives in the status, which is what makes a restart resume the same
//! stage.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};

use modelrollout_api::conditions::{reasons, types};
use modelrollout_api::*;

mod acceptance;
mod after_promotion;
mod alert_free;
mod analysis;
mod ctx;
mod experiment;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod gates;
mod machine;
mod outcome;
pub mod pods;
pub mod sequential;
mod steps;
mod timing;
pub mod validity;
mod webhooks;

pub use acceptance::{ACCEPTANCE_POLL, AcceptanceReport, awaiting_acceptance, judge_acceptance};
pub use after_promotion::{
    AUTOMATIC_UNDO, REVERT_UNDO, next_watch_analysis_at, watch_analysis_due, watch_gate_defs, watch_window,
};
pub use alert_free::{AlertObservation, AlertQuery, alert_query};
use ctx::Ctx;
pub use experiment::{judge_reward, reward_def, reward_measurement};
pub use gates::*;
use steps::{STEPS, Step};
pub use timing::*;
use timing::{elapsed, until};
pub use webhooks::{WEBHOOK_POLL, WebhookCall, webhooks_due};

/// The most history entries kept in status.
pub const HISTORY_LIMIT: usize = 20;

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
    /// Whether at least one of the candidate's pods is Ready (its Deployment's `readyReplicas`).
    pub candidate_available: bool,
    /// What a candidate's pod says is wrong with it (read only while the candidate is not Ready).
    pub candidate_trouble: Option<pods::Trouble>,
    /// Gate measurements, when an analysis was due and ran (see [`analysis_due`]).
    pub analysis: Option<Vec<GateObservation>>,
    /// Where this rollout's first analysis of a stage falls within the spread.
    pub analysis_slot: AnalysisSlot,
    /// The candidate's acceptance checks, once they have finished (see [`awaiting_acceptance`]).
    pub acceptance: Option<AcceptanceReport>,
    /// The gating webhooks called this reconcile (those [`webhooks_due`] named), with their answers.
    pub webhooks: Vec<WebhookCall>,
    /// The look at Prometheus' `ALERTS` that [`alert_query`] asked for, taken with the analysis.
    pub alerts: Option<AlertObservation>,
    /// Whether the retained previous version's Deployment has all its desired pods Ready (false
    /// when none is retained, or it is at zero).
    pub retained_ready: bool,
    /// The watch's gates on the promoted version (candidate side) against the retained version
    /// (stable side), when one was due and ran (see [`watch_analysis_due`]).
    pub watch_analysis: Option<Vec<GateObservation>>,
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
        Self((modelrollout_api::stable_hash(key) >> 48) as u16)
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
    /// The previous stable version after a promotion: kept warm, or scaled up for an undo.
    Retained,
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
    /// Route traffic: `weight`% of live traffic to the candidate, `mirror_percent`% copied to it,
    /// and every request that `matched` matches to it (an experiment stage).
    SetTraffic {
        stable_version: String,
        candidate_version: Option<String>,
        weight: i32,
        mirror_percent: i32,
        matched: Option<TrafficMatch>,
    },
    /// Scale this version's Deployment to zero.
    ScaleDown { version: String },
    /// Delete this (deprecated) version's Deployment.
    RemoveWorkload { version: String },
    /// Record a Kubernetes Event on the ModelRollout. `action` names the transition (the
    /// candidate and its stage): Events with the same reason and action are one series, so each
    /// transition is an Event of its own.
    Event { kind: EventType, reason: &'static str, action: String, message: String },
    /// Send to the webhooks subscribed to this event.
    Notify { event: NotificationEvent, message: String },
    /// Make sure the candidate's acceptance checks (`spec.acceptance`) run: started once per
    /// candidate build, their results read back as [`Observations::acceptance`]. A step without
    /// this action ends any checks still running for the rollout.
    RunAcceptance { version: String, sha256: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: ModelRolloutStatus,
    pub actions: Vec<Action>,
    /// When to look again even if nothing changes (next analysis, stage end, scale-down, deadline).
    pub requeue_after: Option<Duration>,
}

pub(crate) fn pending<'a>(id: Option<&'a str>, handled: &Option<String>) -> Option<&'a str> {
    id.filter(|id| handled.as_deref() != Some(*id))
}

/// Whether a candidate that is not fully Ready goes on serving its stage: traffic already flows
/// to it and some of its pods are Ready, so it is growing (an autoscaler raised the rollout's size,
/// or the stage needs more pods than the last), not failing; the Service sends nothing to the new
/// pods until they are Ready. Not with replica ratios, where the pods are the weight and the stable
/// keeps its pods until the candidate's are all Ready.
pub fn growing_while_serving(spec: &ModelRolloutSpec, status: &ModelRolloutStatus, available: bool) -> bool {
    available
        && spec.traffic_routing.kind() != RouterKind::ReplicaRatio
        && status.phase.is_some_and(Phase::is_active)
        && status.candidate_unready_since.is_none()
        && (status.canary_weight > 0 || status.mirror_percent > 0 || status.match_.is_some())
}

/// Decides what a rollout does next. See the module docs and README for the rules.
pub fn decide(spec: &ModelRolloutSpec, status: &ModelRolloutStatus, obs: &Observations, now: Timestamp) -> Decision {
    decide_with(&STEPS, spec, status, obs, now)
}

/// [`decide`] with the steps of an active rollout in this order.
fn decide_with(
    steps: &[(&'static str, Step)],
    spec: &ModelRolloutSpec,
    status: &ModelRolloutStatus,
    obs: &Observations,
    now: Timestamp,
) -> Decision {
    let mut st = status.clone();
    st.observed_generation = obs.generation;
    let timings = match validity::check(spec).and_then(|()| Timings::of(spec)) {
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
    let mut ctx = Ctx::new(spec, st, now, timings, steps);
    ctx.analysis_slot = obs.analysis_slot;
    ctx.record_webhooks(obs);
    ctx.step(obs);
    ctx.finish()
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
        upsert_condition(st, type_, if on { "True" } else { "False" }, &reason, message.clone(), now);
    }
    // The watch after a promotion has a condition of its own, there only while it lasts.
    let watch = st.watch.as_ref().map(|w| match (w.failing, &w.last_analysis) {
        (true, _) => {
            ("False", reasons::AFTER_PROMOTION_FAILED, format!("{} fails its after-promotion gates", w.version))
        }
        (false, Some(run)) => {
            ("True", reasons::AFTER_PROMOTION_PASSING, format!("{}: last analysis {}", w.version, run.verdict.as_str()))
        }
        (false, None) => ("True", reasons::AFTER_PROMOTION_PASSING, format!("{}: no analysis yet", w.version)),
    });
    match watch {
        Some((status, reason, message)) => {
            upsert_condition(st, types::AFTER_PROMOTION_HEALTHY, status, reason, message, now)
        }
        None => st.conditions.retain(|c| c.type_ != types::AFTER_PROMOTION_HEALTHY),
    }
}

/// Sets one condition, keeping `lastTransitionTime` where its status did not change.
fn upsert_condition(
    st: &mut ModelRolloutStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let transition = st
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    st.conditions.retain(|c| c.type_ != type_);
    st.conditions.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: st.observed_generation,
        last_transition_time: transition,
    });
}

/// Whether the decision from `old` to `new` undid a promotion (its newest history entry is an
/// `Undone` one it added).
pub fn undid(old: &ModelRolloutStatus, new: &ModelRolloutStatus) -> bool {
    new.history.first() != old.history.first() && new.history.first().is_some_and(|h| h.outcome == Outcome::Undone)
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
