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
        // Status keeps the analysis time to the microsecond: exported as taken.
        m.last_analysis.get_or_create(&rl).set(run.time.0.as_millisecond() as f64 / 1e3);
        for g in &run.gates {
            for (version, value) in GATE_SERIES.into_iter().zip([g.value, g.stable_value, g.bound]) {
                if let Some(v) = value {
                    m.set_gate(&rl, &g.name, version, v);
                }
            }
        }
    }
}
