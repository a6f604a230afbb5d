//! A stage's alert-free window (`alertFree`): the clock that a firing alert, or a look at
//! Prometheus that failed, restarts; a stage advances only once it has run for `for`.

use std::collections::BTreeMap;

use super::steps::Flow;
use super::*;

/// What a look at Prometheus' `ALERTS` found since the clock was last checked.
#[derive(Clone, Debug, PartialEq)]
pub enum AlertObservation {
    /// The names (`alertname`) of the matching alerts that fired; empty: none did.
    Fired(Vec<String>),
    /// Prometheus could not be asked (unreachable, timed out, refused the query).
    Unavailable(String),
}

/// What the controller should ask Prometheus: did an alert with these labels fire since `since`?
#[derive(Clone, Debug, PartialEq)]
pub struct AlertQuery {
    pub match_labels: BTreeMap<String, String>,
    pub since: Timestamp,
}

/// The look at `ALERTS` a rollout wants with this reconcile's analysis, if its stage has an
/// alert-free window.
pub fn alert_query(spec: &ModelRolloutSpec, status: &ModelRolloutStatus) -> Option<AlertQuery> {
    if !status.phase.is_some_and(Phase::is_active) {
        return None;
    }
    let idx = status.stage_index?;
    let want = spec.stages.get(idx as usize)?.alert_free.as_ref()?;
    let since = match &status.alert_free {
        Some(clock) if clock.stage_index == idx => clock.checked_until.0,
        _ => status.stage_start_time.as_ref()?.0,
    };
    Some(AlertQuery { match_labels: want.match_labels.clone(), since })
}

impl<'a> Ctx<'a> {
    /// A stage's clock starts with the stage (none for a stage without `alertFree`).
    pub(super) fn start_alert_clock(&mut self, idx: usize) {
        self.st.alert_free = self.spec.stages.get(idx).and_then(|s| s.alert_free.as_ref()).map(|want| {
            let now = MicroTime(self.now);
            AlertFreeStatus {
                stage_index: idx as u32,
                since: now.clone(),
                checked_until: now,
                clean_at: clean_at(self.now, want),
                reset: None,
            }
        });
    }

    /// The clock of the current stage and the window it must run, if the stage has one (started
    /// now if the status has none yet: a status written before the stage had `alertFree`).
    fn alert_clock(&mut self) -> Option<(&mut AlertFreeStatus, &'a AlertFree)> {
        let idx = self.stage_index();
        let spec: &'a ModelRolloutSpec = self.spec;
        let want = spec.stages.get(idx)?.alert_free.as_ref()?;
        let stale = self.st.alert_free.as_ref().is_none_or(|c| c.stage_index as usize != idx);
        if stale {
            self.start_alert_clock(idx);
        }
        let clock = self.st.alert_free.as_mut()?;
        // `for` edited mid-stage: the end follows it.
        clock.clean_at = clean_at(clock.since.0, want);
        Some((clock, want))
    }

    /// Whether the stage's alert-free window has run: `None` when it has (or the stage has none),
    /// else what is left, for the message.
    pub(super) fn alert_free_wait(&mut self) -> Option<String> {
        let now = self.now;
        let (clock, want) = self.alert_clock()?;
        if clock.checked_until.0 >= clock.clean_at.0 {
            return None;
        }
        let left = if now >= clock.clean_at.0 {
            "the next look at Prometheus to confirm".to_string()
        } else {
            format!("{} left", friendly(clock.clean_at.0.duration_since(now)))
        };
        let restarted = match &clock.reset {
            Some(r) => format!("; restarted by {} at {}", r.detail, r.time.0),
            None => String::new(),
        };
        Some(format!(
            "no alert matching {} firing since {} ({left}, clean at {}{restarted})",
            describe_labels(&want.match_labels),
            clock.since.0,
            clock.clean_at.0
        ))
    }
}

/// Records this reconcile's look at `ALERTS`: a matching alert that fired, or no answer at all,
/// restarts the clock; a clean answer moves `checkedUntil` to now.
pub(super) fn record(ctx: &mut Ctx<'_>, obs: &Observations) -> Flow {
    let Some(seen) = &obs.alerts else { return Flow::Continue };
    let now = ctx.now;
    let stage = ctx.stage_name();
    let Some((clock, want)) = ctx.alert_clock() else { return Flow::Continue };
    let previous = clock.reset.as_ref().map(|r| r.detail.clone());
    let reset = match seen {
        AlertObservation::Fired(names) if names.is_empty() => None,
        AlertObservation::Fired(names) => Some((AlertResetCause::AlertFiring, format!("alert {}", names.join(", ")))),
        AlertObservation::Unavailable(e) => {
            Some((AlertResetCause::PrometheusUnavailable, format!("no answer from Prometheus ({e})")))
        }
    };
    clock.checked_until = MicroTime(now);
    let Some((cause, detail)) = reset else { return Flow::Continue };
    clock.since = MicroTime(now);
    clock.clean_at = clean_at(now, want);
    clock.reset = Some(AlertReset { cause, detail: detail.clone(), time: MicroTime(now) });
    if previous.as_deref() != Some(detail.as_str()) {
        let msg = format!("stage {stage}: alert-free clock restarted by {detail}");
        ctx.event(EventType::Warning, reasons::ALERT_CLOCK_RESET, msg);
    }
    Flow::Continue
}

/// When a clock started at `since` has run the window.
fn clean_at(since: Timestamp, want: &AlertFree) -> MicroTime {
    MicroTime(since.checked_add(signed(&want.for_)).unwrap_or(since))
}

fn describe_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "any labels".into();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

/// `2h 5m 3s`, for people.
fn friendly(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{sec}s"),
        (0, _) => format!("{m}m {sec}s"),
        _ => format!("{h}h {m}m {sec}s"),
    }
}
