//! The RouteReady condition: a route the spec names that does not exist is said in status (False,
//! naming it) and in an Event, not only in the log, while every reconcile fails on it; it turns
//! True again once the route carried the split.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::*;
use crate::api::conditions::{reasons, types};

/// `st` with RouteReady set to `ok`, keeping its transition time when it did not change.
pub(super) fn with_route_ready(
    mut st: ModelRolloutStatus,
    ok: bool,
    message: String,
    now: Timestamp,
) -> ModelRolloutStatus {
    let status = if ok { "True" } else { "False" };
    let since = st
        .conditions
        .iter()
        .find(|c| c.type_ == types::ROUTE_READY && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    st.conditions.retain(|c| c.type_ != types::ROUTE_READY);
    st.conditions.push(Condition {
        type_: types::ROUTE_READY.into(),
        status: status.into(),
        reason: if ok { reasons::ROUTE_FOUND } else { reasons::ROUTE_NOT_FOUND }.into(),
        message,
        observed_generation: st.observed_generation,
        last_transition_time: since,
    });
    st
}

/// The route `kind` `name` is missing: RouteReady False naming it on the status as stored
/// (`stored`), merged into the conditions only, and a Warning Event. Errors here are logged: the
/// reconcile fails on the missing route either way and retries.
pub(super) async fn report_missing(
    mr: &ModelRollout,
    ctx: &Context,
    stored: &ModelRolloutStatus,
    kind: &str,
    name: &str,
) {
    let ns = mr.namespace().unwrap_or_default();
    let message = format!(
        "{kind} {name} not found in namespace {ns}: create it (the rollout routes through it), or let the controller \
         create one (trafficRouting's create: true)"
    );
    write_conditions(mr, ctx, stored, with_route_ready(stored.clone(), false, message.clone(), Timestamp::now())).await;
    let ev = Event {
        type_: KubeEventType::Warning,
        reason: reasons::ROUTE_NOT_FOUND.into(),
        note: Some(message),
        action: format!("{kind} {name}"),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &mr.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an event failed");
    }
}

/// The route carried the split: a RouteReady that said False says True.
pub(super) async fn report_found(mr: &ModelRollout, ctx: &Context, stored: &ModelRolloutStatus) {
    let missing = stored.conditions.iter().any(|c| c.type_ == types::ROUTE_READY && c.status == "False");
    if missing {
        let found = with_route_ready(stored.clone(), true, "the route carries the split".into(), Timestamp::now());
        write_conditions(mr, ctx, stored, found).await;
    }
}

/// Merges `st`'s conditions into the stored status when they changed (the rest of the status is
/// the decision's, written by server-side apply; this changes the conditions only).
async fn write_conditions(mr: &ModelRollout, ctx: &Context, stored: &ModelRolloutStatus, st: ModelRolloutStatus) {
    if !core::status_changed(stored, &st) {
        return;
    }
    let api: Api<ModelRollout> = Api::namespaced(ctx.client.clone(), &mr.namespace().unwrap_or_default());
    let patch = json!({"status": {"conditions": st.conditions}});
    let params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match api.patch_status(&mr.name_any(), &params, &Patch::Merge(&patch)).await {
        // The next reconcile decides on our write, as after the decision's own.
        Ok(written) => ctx.last_writes.set(mr, LastWrite::of(written)),
        Err(e) => tracing::warn!(error = %e, "writing the RouteReady condition failed"),
    }
}
