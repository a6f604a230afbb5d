//! Time in the core: a spec's durations, when analyses fall due, and the clock helpers.

use super::*;

/// A spec's duration as the core computes with it. The contract's type holds at most `i64`
/// nanoseconds, so this cannot fail.
pub fn signed(d: &modelrollout_api::Duration) -> SignedDuration {
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
    /// How long a replaced stable version is retained for an undo: `afterPromotion.retention`,
    /// else `rollback.previousStableScaleDownDelay` (as long as its pods are kept).
    pub retention: SignedDuration,
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
            retention: match &spec.after_promotion {
                Some(a) => signed(&a.retention),
                None => signed(&spec.rollback.previous_stable_scale_down_delay),
            },
            stage_min: spec.stages.iter().map(|s| signed(&s.min_duration)).collect(),
        })
    }
}

/// `now - since`, zero when the clock went backwards.
pub(super) fn elapsed(since: Timestamp, now: Timestamp) -> SignedDuration {
    let d = now.duration_since(since);
    if d.is_negative() { SignedDuration::ZERO } else { d }
}

pub(super) fn until(at: Timestamp, now: Timestamp) -> Duration {
    let d = at.duration_since(now);
    if d.is_negative() { Duration::ZERO } else { d.unsigned_abs() }
}

/// When the next analysis of the current stage is due, if the rollout is in a phase that analyses.
/// A rollout paused by `spec.paused` goes on analysing: its weights are held, not its judgement.
///
/// A stage's analyses fall on a grid: the stage start, plus the rollout's [`AnalysisSlot`], plus
/// every interval. The next one is the first grid point at least half an interval after the last
/// analysis: a late analysis is followed by the next beat, not by a burst, and each analysis
/// measures the window since the one before ([`analysis_window`]), so no two windows overlap.
pub fn next_analysis_at(spec: &ModelRolloutSpec, status: &ModelRolloutStatus, slot: AnalysisSlot) -> Option<Timestamp> {
    let phase = status.phase?;
    if !phase.is_active() || status.candidate_unready_since.is_some() || awaiting_acceptance(spec, status) {
        return None;
    }
    if spec.analysis.interval.is_zero() {
        return None;
    }
    let stage_start = status.stage_start_time.as_ref()?.0;
    next_on_grid(stage_start, slot, analysis_interval(spec), last_analysis_in_stage(status))
}

/// The grid analyses fall on from `start` (see [`next_analysis_at`]): its first point, or the
/// first at least half an interval after `last`.
pub(crate) fn next_on_grid(
    start: Timestamp,
    slot: AnalysisSlot,
    interval: SignedDuration,
    last: Option<Timestamp>,
) -> Option<Timestamp> {
    let first = whole_second(start).checked_add(slot.delay(interval)).ok()?.checked_add(interval).ok()?;
    let Some(last) = last else { return Some(first) };
    let after = last.checked_add(min_gap(interval)).ok()?;
    if after <= first {
        return Some(first);
    }
    let behind = u128::try_from(after.duration_since(first).as_nanos()).ok()?;
    let steps = behind.div_ceil(u128::try_from(interval.as_nanos()).ok()?);
    first.checked_add(interval.checked_mul(i32::try_from(steps).ok()?)?).ok()
}

/// The shortest interval analyses fall at, and so the usual shortest window: Prometheus
/// extrapolates a `rate` or `increase` over a window from the samples inside it, and over a window
/// of a few scrapes that guess is noise. (A late analysis may leave the next one half of it.)
pub const MIN_WINDOW: SignedDuration = SignedDuration::from_secs(5);

/// The interval analyses fall at: `analysis.interval`, but at least [`MIN_WINDOW`] (windows do not
/// overlap, so a shorter interval would mean shorter windows).
pub fn analysis_interval(spec: &ModelRolloutSpec) -> SignedDuration {
    signed(&spec.analysis.interval).max(MIN_WINDOW)
}

/// The shortest time between two analyses of a stage: half an interval.
fn min_gap(interval: SignedDuration) -> SignedDuration {
    (interval / 2).max(SignedDuration::from_millis(1))
}

/// When the last analysis of the current stage was taken, if one was.
fn last_analysis_in_stage(status: &ModelRolloutStatus) -> Option<Timestamp> {
    let stage_start = status.stage_start_time.as_ref()?.0;
    status
        .last_analysis
        .as_ref()
        .filter(|run| Some(run.stage_index) == status.stage_index && run.time.0 >= stage_start)
        .map(|run| run.time.0)
}

/// The longest window one analysis measures: after a gap (the controller was down), the most
/// recent two intervals, not everything since.
pub const MAX_WINDOWS_PER_ANALYSIS: i32 = 2;

/// The window an analysis taken `now` measures, ending now: everything since the stage's last
/// analysis (half an interval to two intervals, see [`next_analysis_at`]), so that consecutive
/// windows do not overlap and no request is judged twice (a sequential judge sums its windows);
/// for the stage's first analysis, one interval, within the stage.
pub fn analysis_window(spec: &ModelRolloutSpec, status: &ModelRolloutStatus, now: Timestamp) -> Duration {
    let interval = analysis_interval(spec);
    let first = status.stage_start_time.as_ref().map_or(interval, |t| elapsed(t.0, now).min(interval));
    window_after(last_analysis_in_stage(status), first, interval, now)
}

/// An analysis's window ending `now`: since `last` (at most [`MAX_WINDOWS_PER_ANALYSIS`]
/// intervals), or `first` when there was none.
pub(crate) fn window_after(
    last: Option<Timestamp>,
    first: SignedDuration,
    interval: SignedDuration,
    now: Timestamp,
) -> Duration {
    let window = match last {
        Some(last) => {
            elapsed(last, now).min(interval.checked_mul(MAX_WINDOWS_PER_ANALYSIS).unwrap_or(SignedDuration::MAX))
        }
        None => first,
    };
    window.unsigned_abs()
}

/// `t` without its fraction of a second, as status stores it.
pub(super) fn whole_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Whether the controller should query the gates now. A clock that went backwards is not due.
pub fn analysis_due(spec: &ModelRolloutSpec, status: &ModelRolloutStatus, slot: AnalysisSlot, now: Timestamp) -> bool {
    next_analysis_at(spec, status, slot).is_some_and(|at| now >= at)
}
