//! What a reconcile writes: the core's actions as Deployments, Services, routes, scale-downs,
//! Events and webhooks.

use super::memo::{AppliedSplit, AppliedWorkload, fingerprint};
use super::*;
use modelrollout_contract::launch::Role as SidecarRole;

/// Carries out the core's writes (events and notifications go out with the status write). The
/// core lists them in a fixed order: workloads, traffic, scale-downs. Writes that do not depend on
/// one another go out together: each apiserver round trip under load is tens of milliseconds, and
/// a start or a settled resync done one write after another was most of the reconciles over
/// 100 ms. What does depend is kept in order: the route follows its Services, and a version is
/// scaled down only after the route has moved off it.
pub(super) async fn execute(
    mr: &ModelRollout,
    ctx: &Context,
    st: &ModelRolloutStatus,
    actions: &[Action],
) -> Result<(), Error> {
    use futures::future::{try_join, try_join_all};
    let mut workloads = Vec::new();
    let mut traffic = None;
    let mut scale_downs = Vec::new();
    for action in actions {
        match action {
            Action::EnsureWorkload { role, model } => workloads.push(ensure_workload(mr, ctx, st, *role, model)),
            Action::SetTraffic { .. } => traffic = Some(action),
            Action::ScaleDown { version } => scale_downs.push(scale_down(mr, ctx, version)),
            // Published with the status write (see `apply`).
            Action::Event { .. } | Action::Notify { .. } => {}
        }
    }
    let route = match traffic {
        Some(Action::SetTraffic { stable_version, candidate_version, weight, mirror_percent }) => {
            // The spec's generation and uid are part of it: a changed router or port applies.
            let split_print = format!("{traffic:?}/{:?}/{:?}", mr.metadata.generation, mr.metadata.uid);
            let split_fresh = |a: Option<&AppliedSplit>| {
                a.and_then(|a| a.split.as_ref()).is_some_and(|(split, at)| *split == split_print && ctx.recent(at))
            };
            (!ctx.applied_traffic.with(mr, split_fresh)).then(|| {
                let split = Split {
                    stable_service: workloads::stable_service(mr),
                    canary_service: workloads::canary_service(mr),
                    port: mr.spec.workload.service_port,
                    candidate_active: candidate_version.is_some(),
                    weight: *weight,
                    mirror: *mirror_percent,
                };
                (split_print, split, stable_version.as_str(), candidate_version.as_deref())
            })
        }
        _ => None,
    };
    let services = async {
        match &route {
            Some((_, _, stable, candidate)) => ensure_services(mr, ctx, stable, *candidate).await,
            None => Ok(()),
        }
    };
    try_join(try_join_all(workloads), services).await?;
    if let Some((split_print, split, ..)) = route {
        Router::of(mr).apply(&ctx.client, mr, &split).await?;
        ctx.applied_traffic.update(mr, |a| a.split = Some((split_print, Instant::now())));
    }
    try_join_all(scale_downs).await?;
    Ok(())
}

async fn ensure_workload(
    mr: &ModelRollout,
    ctx: &Context,
    st: &ModelRolloutStatus,
    role: Role,
    model: &ModelSpec,
) -> Result<(), Error> {
    let ns = mr.namespace().unwrap_or_default();
    let active = st.phase.is_some_and(Phase::is_active);
    let ratio = mr.spec.traffic_routing.kind() == RouterKind::ReplicaRatio;
    let (stable_replicas, candidate_replicas) =
        workloads::replicas(mr.spec.workload.replicas, st.canary_weight, ratio, active);
    let (wanted_role, replicas) = match role {
        Role::Stable => (SidecarRole::Stable, stable_replicas.max(if ratio { 0 } else { 1 })),
        Role::Candidate => (super::observe::candidate_role(st), candidate_replicas.max(1)),
    };
    let name = workloads::deployment_name(mr, &model.version);
    let cached = ctx.cached_deployment(&ns, &name);
    let last = ctx.applied_workloads.with(mr, |m| m.and_then(|m| m.get(&name)).cloned());
    // The role a pod reports is fixed when its Deployment is created: neither a stage change nor
    // the promotion itself restarts the pods that serve. (The memo covers the moment between our
    // create and the watch delivering it.)
    let role = cached
        .as_ref()
        .and_then(|d| d.labels().get(workloads::LABEL_ROLE).and_then(|r| SidecarRole::parse(r)))
        .or_else(|| last.as_ref().map(|a| a.role))
        .unwrap_or(wanted_role);
    let d = workloads::deployment(mr, model, role, replicas);
    let print = fingerprint(&d);
    // Nobody changed its spec since our apply (the generation our apply produced) nor our labels
    // and owner reference (which do not move the generation): applying again would change nothing.
    let unchanged = last.is_some_and(|a| {
        a.fingerprint == print
            && cached.as_ref().is_some_and(|c| {
                c.metadata.generation == a.generation && workloads::metadata_holds(&c.metadata, &d.metadata)
            })
    });
    if unchanged {
        return Ok(());
    }
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let applied = deployments.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&d)).await?;
    let record = AppliedWorkload { fingerprint: print, role, generation: applied.metadata.generation };
    ctx.applied_workloads.update(mr, |m| {
        m.insert(name, record);
    });
    Ok(())
}

/// The stable, canary and root Services: each applied when it differs from what was last applied,
/// together. A new candidate changes only the canary Service. One unchanged since an apply that is
/// no longer recent is read first (from the apiserver's watch cache, no etcd read) and applied
/// only if it drifted: at 10,000 settled rollouts, re-applying every Service on each resync was
/// ~17 server-side applies a second for nothing.
async fn ensure_services(
    mr: &ModelRollout,
    ctx: &Context,
    stable_version: &str,
    candidate_version: Option<&str>,
) -> Result<(), Error> {
    let canary_version = candidate_version.unwrap_or(stable_version);
    let wanted = [
        (workloads::stable_service(mr), Some(stable_version)),
        (workloads::canary_service(mr), Some(canary_version)),
        (workloads::root_service(mr), None),
    ];
    let due: Vec<DueService> = ctx.applied_traffic.with(mr, |a| {
        wanted
            .into_iter()
            .enumerate()
            .filter_map(|(slot, (name, version))| {
                let service = workloads::service(mr, name.clone(), version);
                let print = fingerprint(&service);
                let aged = match a.and_then(|a| a.services[slot]) {
                    Some((p, at)) if p == print && ctx.recent(&at) => return None,
                    Some((p, _)) => p == print,
                    None => false,
                };
                Some(DueService { slot, name, print, service, aged })
            })
            .collect()
    });
    if due.is_empty() {
        return Ok(());
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &mr.namespace().unwrap_or_default());
    let ssa = PatchParams::apply(MANAGER).force();
    futures::future::try_join_all(due.iter().map(|d| ensure_service(&services, &ssa, d))).await?;
    let now = Instant::now();
    ctx.applied_traffic.update(mr, |a| {
        for d in due {
            a.services[d.slot] = Some((d.print, now));
        }
    });
    Ok(())
}

/// A Service to apply, or (`aged`: unchanged, only its last apply is old) to check first.
struct DueService {
    /// Its index in [`AppliedSplit::services`].
    slot: usize,
    name: String,
    print: u64,
    service: Service,
    aged: bool,
}

/// Applies a due Service; an aged one only when the live one no longer holds ours.
async fn ensure_service(services: &Api<Service>, ssa: &PatchParams, due: &DueService) -> Result<(), kube::Error> {
    if due.aged {
        match services.get_with(&due.name, &GetParams::any()).await {
            Ok(live) if workloads::service_holds(&live, &due.service) => return Ok(()),
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    services.patch(&due.name, ssa, &Patch::Apply(&due.service)).await.map(drop)
}

async fn scale_down(mr: &ModelRollout, ctx: &Context, version: &str) -> Result<(), Error> {
    let ns = mr.namespace().unwrap_or_default();
    let name = workloads::deployment_name(mr, version);
    let cached = ctx.cached_deployment(&ns, &name);
    if cached.is_some_and(|d| d.spec.as_ref().and_then(|s| s.replicas) != Some(0)) {
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"spec": {"replicas": 0}});
        deployments.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

/// A Kubernetes Event or a webhook notification; neither failing fails the reconcile.
pub(super) async fn announce(mr: &ModelRollout, ctx: &Context, action: &Action) {
    match action {
        Action::Event { kind, reason, action, message } => {
            let ev = Event {
                type_: match kind {
                    EventType::Normal => KubeEventType::Normal,
                    EventType::Warning => KubeEventType::Warning,
                },
                reason: (*reason).into(),
                note: Some(message.chars().take(1000).collect()),
                action: action.chars().take(128).collect(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&ev, &mr.object_ref(&())).await {
                tracing::warn!(error = %e, "publishing an event failed");
            }
        }
        Action::Notify { event, message } => {
            let body = notify::message(&mr.namespace().unwrap_or_default(), &mr.name_any(), *event, message);
            notify::send(&ctx.http, &mr.spec.notifications.webhooks, *event, body);
        }
        _ => {}
    }
}
