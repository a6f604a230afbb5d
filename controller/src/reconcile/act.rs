//! What a reconcile writes: the core's actions as Deployments, Services, routes, scale-downs,
//! Events and webhooks.

use super::memo::{AppliedSplit, AppliedWorkload, fingerprint};
use super::*;
use crate::route_watch;
use crate::routers::{CandidateTraffic, Split};
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
    let mut removals = Vec::new();
    match actions.iter().find_map(|a| match a {
        Action::RunAcceptance { version, sha256 } => Some((version, sha256)),
        _ => None,
    }) {
        Some((version, sha256)) => {
            acceptance_runs::ensure(mr, ctx, version, sha256, st.stable_version.as_deref().unwrap_or_default())
        }
        None => acceptance_runs::end(mr, ctx),
    }
    for action in actions {
        match action {
            Action::EnsureWorkload { role, model } => workloads.push(ensure_workload(mr, ctx, st, *role, model)),
            Action::SetTraffic { .. } => traffic = Some(action),
            Action::ScaleDown { version } => scale_downs.push(scale_down(mr, ctx, version)),
            Action::RemoveWorkload { version } => removals.push(remove(mr, ctx, version)),
            // Published with the status write (see `apply`).
            Action::Event { .. } | Action::Notify { .. } => {}
            Action::RunAcceptance { .. } => {}
        }
    }
    let route = match traffic {
        Some(Action::SetTraffic { stable_version, candidate_version, weight, mirror_percent, matched }) => {
            // The spec's generation and uid are part of it: a changed router or port applies.
            let split_print = format!("{traffic:?}/{:?}/{:?}", mr.metadata.generation, mr.metadata.uid);
            // Stale when it changed, aged past --reapply-after, or the route was written by someone
            // else since (a GitOps sync: the route watch saw a later generation than ours).
            let routes = route_watch::routes_of(mr);
            let split_fresh = |a: Option<&AppliedSplit>| {
                a.and_then(|a| a.split.as_ref()).is_some_and(|(split, at, generations)| {
                    *split == split_print
                        && ctx.recent(at)
                        && !route_watch::any_changed_since(&ctx.routes, &routes, generations)
                })
            };
            (!ctx.applied_traffic.with(mr, split_fresh)).then(|| {
                let candidate = candidate_version.as_ref().map(|_| CandidateTraffic {
                    weight: *weight,
                    mirror: *mirror_percent,
                    matched: matched.clone(),
                });
                let split = Split::of(mr, candidate);
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
        let generations = Router::of(mr).apply(&ctx.client, mr, &split).await?;
        ctx.applied_traffic.update(mr, |a| a.split = Some((split_print, Instant::now(), generations)));
    }
    try_join(try_join_all(scale_downs), try_join_all(removals)).await?;
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
    // The stage's share (its configured traffic, not the status's, which is 0 until the candidate
    // is Ready and through its checks: the acceptance load check runs on the first stage's size).
    let share = match st.stage_index.and_then(|i| mr.spec.stages.get(i as usize)) {
        Some(stage) if stage.match_.is_some() => 100,
        Some(stage) => stage.weight.max(stage.mirror_percent.unwrap_or(0)),
        None => 100,
    };
    let (stable_replicas, candidate_replicas) =
        workloads::replicas(mr.spec.workload.replicas, st.canary_weight, share, ratio, active);
    let name = workloads::deployment_name(mr, &model.version);
    let cached = ctx.cached_deployment(&ns, &name);
    let (wanted_role, replicas) = match role {
        Role::Stable => {
            // Replica ratios: while the candidate's pods for this stage are still coming up, the
            // stable keeps the pods it has; it shrinks once they are Ready (capacity never dips).
            let keep = if ratio && st.candidate_unready_since.is_some() {
                cached.as_ref().and_then(|d| d.spec.as_ref()?.replicas).unwrap_or(0)
            } else {
                0
            };
            (SidecarRole::Stable, stable_replicas.max(keep).max(if ratio { 0 } else { 1 }))
        }
        Role::Candidate => (super::observe::candidate_role(st), candidate_replicas.max(1)),
        // Kept warm at its own size, or (an undo) at the size the stable it becomes needs: the
        // replicas the spec (or an autoscaler scaling the rollout) asks for now.
        Role::Retained => {
            let warm = mr.spec.after_promotion.as_ref().and_then(|a| a.warm_replicas);
            let size =
                if st.undo.is_some() { mr.spec.workload.replicas } else { warm.unwrap_or(mr.spec.workload.replicas) };
            (SidecarRole::Stable, size.max(1))
        }
    };
    let last = ctx.applied_workloads.with(mr, |m| m.and_then(|m| m.get(&name)).cloned());
    // The role a pod reports is fixed when its Deployment is created: neither a stage change nor
    // the promotion itself restarts the pods that serve. (The memo covers the moment between our
    // create and the watch delivering it.)
    let role = cached
        .as_ref()
        .and_then(|d| d.labels().get(workloads::LABEL_ROLE).and_then(|r| SidecarRole::parse(r)))
        .or_else(|| last.as_ref().map(|a| a.role))
        .unwrap_or(wanted_role);
    let d = workloads::deployment(mr, model, role, replicas, ctx.evidence_url.as_deref());
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

/// Deletes a deprecated version's Deployment (its pods go with it); one already gone is fine.
async fn remove(mr: &ModelRollout, ctx: &Context, version: &str) -> Result<(), Error> {
    let ns = mr.namespace().unwrap_or_default();
    let name = workloads::deployment_name(mr, version);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    match deployments.delete(&name, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.applied_workloads.update(mr, |m| {
        m.remove(&name);
    });
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
            notify::send(&ctx.outbound, &mr.spec.notifications.webhooks, *event, body);
        }
        _ => {}
    }
}

/// The path from the core's actions to API requests, without a cluster: the client talks to a
/// mock service (tower-test, as kube-rs's controller-rs does) that answers like the apiserver and
/// records each request's method, path and body for the test to check.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Observations, decide};
    use crate::fixtures::*;
    use serde_json::Value;

    /// Answers every request as the apiserver would for these kinds (the applied object back, the
    /// route for a GET and for its JSON patch) and records it, until the client is dropped.
    fn apiserver(route: Value) -> (Client, tokio::task::JoinHandle<Vec<Seen>>) {
        crate::fixtures::apiserver(move |_, path, body| {
            // A JSON patch is answered with the object too; its content is not read.
            (200, if path.contains("/httproutes/") { route.clone() } else { written(body) })
        })
    }

    fn context(client: Client) -> Context {
        Context::test(client)
    }

    fn rollout(version: &str, status: ModelRolloutStatus) -> ModelRollout {
        rollout_with_status(version, status)
    }

    fn obs(ready: bool) -> Observations {
        Observations { generation: Some(1), candidate_ready: ready, ..Default::default() }
    }

    #[tokio::test]
    async fn a_shadow_stage_applies_both_deployments_the_services_and_the_route_rule_it_owns() {
        let now = jiff::Timestamp::now();
        let first = decide(&rollout("v1", Default::default()).spec, &Default::default(), &obs(false), now).status;
        let mr = rollout("v2", first.clone());
        let decision = decide(&mr.spec, &first, &obs(true), now);
        assert_eq!((decision.status.canary_weight, decision.status.mirror_percent), (0, 100));
        let (client, server) = apiserver(user_route(stable_only()));
        let ctx = context(client);
        execute(&mr, &ctx, &decision.status, &decision.actions).await.unwrap();
        drop(ctx);
        let seen = server.await.unwrap();
        let find = |method: &str, path: &str| {
            seen.iter()
                .find(|s| s.method == method && s.path.starts_with(path))
                .unwrap_or_else(|| panic!("no {method} {path} in {seen:#?}"))
        };
        for name in ["fraud-v1", "fraud-v2"] {
            let d = find("PATCH", &format!("/apis/apps/v1/namespaces/team-a/deployments/{name}"));
            assert!(d.path.contains("fieldManager=modelrollout") && d.path.contains("force=true"), "{}", d.path);
            let env = &d.body["spec"]["template"]["spec"]["containers"][0]["env"];
            let role = env.as_array().unwrap().iter().find(|e| e["name"] == "SIDECAR_ROLE").unwrap();
            assert_eq!(role["value"], if name == "fraud-v1" { "stable" } else { "shadow" }, "{name}");
        }
        for svc in ["fraud-stable", "fraud-canary", "fraud"] {
            find("PATCH", &format!("/api/v1/namespaces/team-a/services/{svc}?"));
        }
        find("GET", "/apis/gateway.networking.k8s.io/v1/namespaces/team-a/httproutes/fraud");
        let route = find("PATCH", "/apis/gateway.networking.k8s.io/v1/namespaces/team-a/httproutes/fraud");
        // A JSON patch guarded by the resourceVersion read, replacing only the rule we own.
        assert_eq!(route.body[0], json!({"op": "test", "path": "/metadata/resourceVersion", "value": "41"}));
        assert_eq!(route.body[1]["op"], "replace");
        assert_eq!(route.body[1]["path"], "/spec/rules/0");
        let rule = &route.body[1]["value"];
        assert_eq!(rule["backendRefs"][0], json!({"name": "fraud-stable", "port": 8080, "weight": 100}));
        assert_eq!(rule["filters"][0]["requestMirror"]["backendRef"]["name"], "fraud-canary");
        assert_eq!(rule["filters"][0]["requestMirror"]["percent"], 100);
        assert_eq!(seen.len(), 2 + 3 + 2, "nothing else: {seen:#?}");
    }

    #[tokio::test]
    async fn a_rollback_moves_traffic_off_the_candidate_before_scaling_it_down() {
        let now = jiff::Timestamp::now();
        let first = decide(&rollout("v1", Default::default()).spec, &Default::default(), &obs(false), now).status;
        let mut mr = rollout("v2", first.clone());
        let started = decide(&mr.spec, &first, &obs(true), now).status;
        mr.spec.operations.abort =
            Some(crate::api::OperationRequest { id: "a1".into(), reason: None, requested_by: None });
        mr.spec.rollback.scale_down_delay = "0s".parse().unwrap();
        let decision = decide(&mr.spec, &started, &obs(true), now);
        assert_eq!(decision.status.phase, Some(Phase::RolledBack));
        // The candidate's Deployment is in the watch cache, at 2 replicas: the scale-down patches it.
        let (store, mut writer) = reflector::store::<Deployment>();
        let cached = workloads::deployment(&mr, &mr.spec.model, SidecarRole::Shadow, 2, None);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(cached));
        // The route as the shadow stage left it: a mirror to the candidate.
        let shadow = json!({
            "backendRefs": [{"name": "fraud-stable", "port": 8080, "weight": 100}, {"name": "fraud-canary", "port": 8080, "weight": 0}],
            "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "fraud-canary", "port": 8080}, "percent": 100}}]
        });
        let (client, server) = apiserver(user_route(shadow));
        let mut ctx = context(client);
        ctx.deployments = vec![store];
        execute(&mr, &ctx, &decision.status, &decision.actions).await.unwrap();
        drop(ctx);
        let seen = server.await.unwrap();
        let at = |pred: &dyn Fn(&Seen) -> bool| seen.iter().position(pred).unwrap_or_else(|| panic!("{seen:#?}"));
        let route = at(&|s| s.method == "PATCH" && s.path.contains("/httproutes/fraud"));
        let scale =
            at(&|s| s.method == "PATCH" && s.path.contains("/deployments/fraud-v2") && s.body["spec"]["replicas"] == 0);
        assert!(route < scale, "the route moves off the candidate first: {seen:#?}");
        let rule = &seen[route].body[1]["value"];
        assert_eq!(rule["backendRefs"], json!([{"name": "fraud-stable", "port": 8080, "weight": 100}]));
        assert!(rule.get("filters").is_none_or(|f| f.as_array().is_some_and(Vec::is_empty)), "no mirror: {rule}");
        assert!(!seen.iter().any(|s| s.method == "DELETE"), "nothing is deleted");
    }
}
