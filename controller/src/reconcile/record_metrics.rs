//! The controller's per-rollout series: recorded after each reconcile, removed when the rollout
//! goes.

use super::*;
use crate::telemetry::{GATE_SERIES, PHASES, PhaseLabel, WebhookLabel};

pub(super) fn record_metrics(ctx: &Context, mr: &ModelRollout, old: &ModelRolloutStatus, new: &ModelRolloutStatus) {
    let m = &ctx.metrics;
    let (namespace, name) = (mr.namespace().unwrap_or_default(), mr.name_any());
    let rl = RolloutLabel { namespace: namespace.clone(), name: name.clone() };
    m.weight.get_or_create(&rl).set(new.canary_weight as i64);
    m.mirror.get_or_create(&rl).set(new.mirror_percent as i64);
    for p in PHASES {
        let l = PhaseLabel { namespace: namespace.clone(), name: name.clone(), phase: p.as_str() };
        m.phase.get_or_create(&l).set(i64::from(new.phase == Some(p)));
    }
    if new.phase != old.phase {
        match new.phase {
            Some(Phase::RolledBack | Phase::Failed) => m.rollbacks.get_or_create(&rl).inc(),
            Some(Phase::Promoted) => m.promotions.get_or_create(&rl).inc(),
            _ => 0,
        };
    }
    // Acceptance checks as gates of their own (`acceptance/goldenSet.auc`): names fixed by the API.
    for c in new.acceptance.iter().flat_map(|a| &a.checks) {
        for (version, value) in GATE_SERIES.into_iter().zip([c.value, c.stable_value, c.bound]) {
            if let Some(v) = value {
                m.set_gate(&rl, &format!("acceptance/{}", c.name), version, v);
            }
        }
    }
    // Each answer recorded this reconcile (new, or newer than the one status had).
    for w in &new.webhooks {
        if !old.webhooks.contains(w) {
            let ok = if w.ok { "true" } else { "false" };
            let l = WebhookLabel { namespace: namespace.clone(), name: name.clone(), r#type: w.kind.as_str(), ok };
            m.webhook_answers.get_or_create(&l).inc();
        }
    }
    if let Some(run) = &new.last_analysis {
        let gauge = m.last_analysis.get_or_create(&rl);
        if let Some(t) = analysis_time_to_export(gauge.get(), run.time.0) {
            gauge.set(t);
        }
        for g in &run.gates {
            for (version, value) in GATE_SERIES.into_iter().zip([g.value, g.stable_value, g.bound]) {
                if let Some(v) = value {
                    m.set_gate(&rl, &g.name, version, v);
                }
            }
        }
    }
}

/// The last-analysis time to export, if it changes the gauge. The analysis itself knows its time
/// to the millisecond, but status keeps whole seconds: a later reconcile that reads it back must not
/// move the gauge to the truncated second (that made gaps between analyses look up to a second
/// longer, and back).
fn analysis_time_to_export(exported: f64, analysed: Timestamp) -> Option<f64> {
    let t = analysed.as_millisecond() as f64 / 1e3;
    (exported.floor() != t.floor()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_exported_analysis_time_keeps_its_fraction_when_status_reads_back_in_whole_seconds() {
        let analysed: Timestamp = "2026-11-26T10:00:07.850Z".parse().unwrap();
        let read_back: Timestamp = "2026-11-26T10:00:07Z".parse().unwrap();
        let exported = analysis_time_to_export(0.0, analysed).expect("a first analysis is exported");
        assert_eq!(exported, analysed.as_millisecond() as f64 / 1e3);
        assert_eq!(analysis_time_to_export(exported, read_back), None, "the same analysis, truncated");
        let next: Timestamp = "2026-11-26T10:00:17.851Z".parse().unwrap();
        assert_eq!(analysis_time_to_export(exported, next), Some(next.as_millisecond() as f64 / 1e3));
        // After a restart the gauge starts from status, whole seconds: better than nothing.
        assert_eq!(analysis_time_to_export(0.0, read_back), Some(read_back.as_millisecond() as f64 / 1e3));
    }
}
