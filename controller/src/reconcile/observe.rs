//! What a reconcile reads: the candidate's readiness (watch cache) and the gates (Prometheus).

use super::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use modelrollout_contract::launch::Role as SidecarRole;

/// Whether a Deployment (from the watch cache: its changes trigger a reconcile, so the cache is as
/// new as what the reconcile reacts to) has all its pods Ready.
pub(super) fn deployment_ready(d: Option<&Deployment>) -> bool {
    let Some(d) = d else { return false };
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = &d.status else { return false };
    let current = status.observed_generation >= d.metadata.generation;
    want > 0 && current && status.ready_replicas.unwrap_or(0) >= want && status.updated_replicas.unwrap_or(0) >= want
}

fn selector(mr: &ModelRollout, model: &ModelSpec, role: SidecarRole, evidence: bool) -> Selector {
    Selector {
        namespace: mr.namespace().unwrap_or_default(),
        rollout: mr.name_any(),
        model: model.name.clone(),
        version: model.version.clone(),
        role: role.as_str().into(),
        evidence,
        // Both sides are counted as the candidate's contract says.
        errors: mr.spec.model.contract.errors,
    }
}

fn prometheus(ctx: &Context, mr: &ModelRollout) -> Option<prometheus_http_query::Client> {
    let url = mr.spec.analysis.prometheus.address.clone().or_else(|| ctx.prometheus_url.clone())?;
    prometheus_http_query::Client::from(ctx.http.clone(), &url).ok()
}

/// The role a candidate's pods serve in: `shadow` while it only receives mirrored traffic.
pub(super) fn candidate_role(st: &ModelRolloutStatus) -> SidecarRole {
    if st.mirror_percent > 0 && st.canary_weight == 0 { SidecarRole::Shadow } else { SidecarRole::Canary }
}

/// Reads what the core decides on: whether the candidate's pods are all Ready and, when an
/// analysis is due, every gate for candidate and stable over the same window.
pub(super) async fn observe(
    mr: &ModelRollout,
    ctx: &Context,
    status: &ModelRolloutStatus,
    analysis_slot: core::AnalysisSlot,
    now: Timestamp,
) -> Observations {
    let ns = mr.namespace().unwrap_or_default();
    let candidate_differs = status.stable.as_ref().is_some_and(|s| !s.same_build(&mr.spec.model));
    let candidate_ready = candidate_differs
        && deployment_ready(
            ctx.cached_deployment(&ns, &workloads::deployment_name(mr, &mr.spec.model.version)).as_deref(),
        );
    let candidate_available = candidate_differs
        && ctx
            .cached_deployment(&ns, &workloads::deployment_name(mr, &mr.spec.model.version))
            .and_then(|d| d.status.as_ref()?.ready_replicas)
            .is_some_and(|n| n > 0);
    let serving = candidate_ready || core::growing_while_serving(&mr.spec, status, candidate_available);
    let due = serving && core::analysis_due(&mr.spec, status, analysis_slot, now);
    // While the candidate is not Ready, and at each analysis (a pod that crashed and came back
    // between two reconciles is Ready again, but its restart count says what happened).
    // Not for a candidate already rolled back or failed: its pods are going, and the verdict stands.
    let decided = matches!(status.phase, Some(Phase::RolledBack | Phase::Failed))
        && status.candidate_version.as_deref() == Some(mr.spec.model.version.as_str());
    let candidate_trouble = if candidate_differs && !decided && (!candidate_ready || due) {
        candidate_trouble(ctx, mr, &ns).await
    } else {
        None
    };
    let timeout = core::Timings::of(&mr.spec).map_or(Duration::from_secs(5), |t| t.query_timeout.unsigned_abs());
    // The stage's alert-free window is looked at with each analysis, at the same time.
    let alerts = async {
        let ask = core::alert_query(&mr.spec, status).filter(|_| due)?;
        Some(match prometheus(ctx, mr) {
            Some(prom) => prometheus::fired_alerts(&prom, &ask, now, timeout).await,
            None => core::AlertObservation::Unavailable("no Prometheus address (spec or --prometheus-url)".into()),
        })
    };
    let analysis = async {
        due.then_some(())?;
        let stable = status.stable.clone().expect("a candidate implies a stable");
        let (defs, _) = core::stage_gate_defs(&mr.spec, status.stage_index.unwrap_or(0) as usize);
        // An experiment stage's reward is measured beside its guardrails, always for both arms.
        let experiment =
            status.stage_index.and_then(|i| mr.spec.stages.get(i as usize)).is_some_and(|s| s.match_.is_some());
        let reward = core::reward_def(&mr.spec).filter(|_| experiment);
        let window = core::analysis_window(&mr.spec, status, now);
        let role = candidate_role(status);
        let evidence = ctx.evidence_url.is_some();
        Some(match prometheus(ctx, mr) {
            Some(prom) => {
                let (candidate, stable) = (
                    selector(mr, &mr.spec.model, role, evidence),
                    selector(mr, &stable, SidecarRole::Stable, evidence),
                );
                let gates = prometheus::observe(&prom, &defs, &candidate, &stable, window, timeout);
                let reward = async {
                    match &reward {
                        Some(r) => Some(prometheus::observe_both(&prom, r, &candidate, &stable, window, timeout).await),
                        None => None,
                    }
                };
                let (mut all, reward) = tokio::join!(gates, reward);
                all.extend(reward);
                all
            }
            None => defs
                .iter()
                .chain(reward.iter())
                .map(|d| core::GateObservation {
                    gate: d.name.clone(),
                    candidate: core::Measurement::QueryError("no Prometheus address (spec or --prometheus-url)".into()),
                    stable: core::Measurement::NoData,
                })
                .collect(),
        })
    };
    let (alerts, analysis) = tokio::join!(alerts, analysis);
    let acceptance = (candidate_ready && core::awaiting_acceptance(&mr.spec, status))
        .then(|| super::acceptance_runs::finished(mr, ctx))
        .flatten();
    let webhooks = call_webhooks(mr, ctx, status, candidate_ready, due, now).await;
    let retained_ready = status.retained.as_ref().is_some_and(|r| {
        deployment_ready(ctx.cached_deployment(&ns, &workloads::deployment_name(mr, &r.model.version)).as_deref())
    });
    let watch_analysis = watch_analysis(mr, ctx, status, analysis_slot, now, timeout).await;
    Observations {
        generation: mr.meta().generation,
        candidate_ready,
        candidate_available,
        candidate_trouble,
        analysis,
        analysis_slot,
        acceptance,
        webhooks,
        alerts,
        retained_ready,
        watch_analysis,
    }
}

/// After a promotion, when the watch's analysis is due: its gates for the promoted version
/// against the retained one, over the window since the last.
async fn watch_analysis(
    mr: &ModelRollout,
    ctx: &Context,
    status: &ModelRolloutStatus,
    slot: core::AnalysisSlot,
    now: Timestamp,
    timeout: Duration,
) -> Option<Vec<core::GateObservation>> {
    if !core::watch_analysis_due(&mr.spec, status, slot, now) {
        return None;
    }
    let (promoted, retained) = (status.stable.as_ref()?, status.retained.as_ref()?);
    let defs = core::watch_gate_defs(&mr.spec);
    let Some(prom) = prometheus(ctx, mr) else {
        return Some(
            defs.iter()
                .map(|d| core::GateObservation {
                    gate: d.name.clone(),
                    candidate: core::Measurement::QueryError("no Prometheus address (spec or --prometheus-url)".into()),
                    stable: core::Measurement::NoData,
                })
                .collect(),
        );
    };
    // The promoted pods report the role they were created with (canary, or shadow).
    let ns = mr.namespace().unwrap_or_default();
    let role = ctx
        .cached_deployment(&ns, &workloads::deployment_name(mr, &promoted.version))
        .and_then(|d| d.labels().get(workloads::LABEL_ROLE).and_then(|r| SidecarRole::parse(r)))
        .unwrap_or(SidecarRole::Canary);
    let evidence = ctx.evidence_url.is_some();
    let (candidate, stable) =
        (selector(mr, promoted, role, evidence), selector(mr, &retained.model, SidecarRole::Stable, evidence));
    let window = core::watch_window(&mr.spec, status, now);
    Some(prometheus::observe(&prom, &defs, &candidate, &stable, window, timeout).await)
}

/// Calls the gating webhooks the core says are due, all at once.
async fn call_webhooks(
    mr: &ModelRollout,
    ctx: &Context,
    status: &ModelRolloutStatus,
    candidate_ready: bool,
    analysis_due: bool,
    now: Timestamp,
) -> Vec<core::WebhookCall> {
    let due = core::webhooks_due(&mr.spec, status, candidate_ready, analysis_due, now);
    if due.is_empty() {
        return Vec::new();
    }
    let (ns, name) = (mr.namespace().unwrap_or_default(), mr.name_any());
    let calls = mr.spec.webhooks.iter().filter(|h| due.contains(&h.kind)).map(|hook| {
        let body = crate::webhook_calls::payload(&ns, &name, status, &mr.spec.model.version, hook);
        async move { crate::webhook_calls::call(&ctx.outbound, hook, &body).await }
    });
    futures::future::join_all(calls).await
}

/// What the candidate's pods say is wrong (a list by label: the controller watches no pods, which
/// keeps its memory flat at scale). A failed read is
/// logged and waits for the next reconcile; the progress deadline still holds.
async fn candidate_trouble(ctx: &Context, mr: &ModelRollout, ns: &str) -> Option<core::pods::Trouble> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let lp = ListParams::default().labels(&workloads::pod_selector(mr, &mr.spec.model.version));
    match pods.list(&lp).await {
        Ok(list) => core::pods::candidate_trouble(&list.items),
        Err(e) => {
            tracing::warn!(error = %e, "listing the candidate's pods failed");
            None
        }
    }
}
