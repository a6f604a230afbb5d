//! The controller's per-rollout series: recorded after each reconcile, removed when the rollout
//! goes.

use super::*;
use crate::telemetry::{GATE_SERIES, GateSetLabel, PHASES, PhaseLabel, WebhookLabel};

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
    match &new.watch {
        Some(w) => {
            m.after_promotion_failing.get_or_create(&rl).set(i64::from(w.failing));
        }
        None => {
            m.after_promotion_failing.remove(&rl);
        }
    }
    if core::undid(old, new) {
        m.undos.get_or_create(&rl).inc();
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
        for g in crate::api::GateSet::ALL {
            let l = GateSetLabel { namespace: namespace.clone(), name: name.clone(), gate_set: g.as_str() };
            m.gate_set.get_or_create(&l).set(i64::from(run.gate_set == g));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AnalysisRun, GateSet, Verdict};
    use crate::fixtures::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    /// The gate set of the last analysis is one series of three at 1 (the dashboard's timeline
    /// reads it), and the rollout's series go with it.
    #[tokio::test]
    async fn the_gate_set_series_says_which_set_the_last_analysis_used() {
        let (client, _server) = crate::fixtures::apiserver(|_, _, _| (200, serde_json::json!({})));
        let ctx = Context::test(client);
        let mr = rollout_with_status("v2", Default::default());
        let run = |gate_set| AnalysisRun {
            time: MicroTime(jiff::Timestamp::UNIX_EPOCH),
            stage_index: 0,
            verdict: Verdict::Pass,
            gate_set,
            gates: vec![],
        };
        let series = |text: &str, set: &str| {
            let needle = format!("gate_set=\"{set}\"}} ");
            text.lines()
                .find(|l| l.starts_with("modelrollout_rollout_gate_set{") && l.contains(&needle))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        for (used, others) in [
            (GateSet::StageReplaced, [GateSet::Rollout, GateSet::StageAdjusted]),
            (GateSet::Rollout, [GateSet::StageReplaced, GateSet::StageAdjusted]),
        ] {
            let new = ModelRolloutStatus { last_analysis: Some(run(used)), ..Default::default() };
            record_metrics(&ctx, &mr, &Default::default(), &new);
            let text = ctx.metrics.encode();
            assert_eq!(series(&text, used.as_str()).as_deref(), Some("1"), "{text}");
            for o in others {
                assert_eq!(series(&text, o.as_str()).as_deref(), Some("0"), "{text}");
            }
        }
        ctx.metrics.forget_rollout(&RolloutLabel { namespace: "team-a".into(), name: mr.name_any() });
        assert_eq!(series(&ctx.metrics.encode(), "Rollout"), None);
    }
}
