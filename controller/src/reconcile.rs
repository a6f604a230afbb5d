//! The reconcile loop: observe (Deployments, Prometheus) -> decide (pure core) -> act (workloads,
//! router, events, webhooks) -> write status through the status subresource when it changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, GetParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::api::{ModelRollout, ModelRolloutStatus, ModelSpec, Phase, RouterKind};
use crate::core::{self, Action, EventType, Observations, Role};
use crate::error::Error;
use crate::gates::{self, Selector};
use crate::notify;
use crate::routers::{Router, Split, TrafficRouter};
use crate::telemetry::{GateLabel, Metrics, PhaseLabel, RolloutLabel};
use crate::workloads::{self, MANAGER};

pub const FINALIZER: &str = "modelrollout.dev/traffic-restore";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    /// `--prometheus-url`, used when a spec names none.
    pub prometheus_url: Option<String>,
    /// The resourceVersion of our last status write per rollout.
    pub last_writes: LastWrites,
    /// The traffic split last applied per rollout, and when.
    pub applied_traffic: AppliedTraffic,
    /// The Deployments this controller manages, as the watch last saw them (one store per watched
    /// namespace set; pod templates and managedFields dropped).
    pub deployments: Vec<reflector::Store<Deployment>>,
    /// The Deployments last applied per rollout.
    pub applied_workloads: AppliedWorkloads,
    /// How long an applied split or Service is trusted (`--reapply-after`).
    pub reapply_after: Duration,
}

impl Context {
    /// Whether an apply made at `at` is still trusted.
    fn recent(&self, at: &Instant) -> bool {
        at.elapsed() < self.reapply_after
    }

    /// The managed Deployment `name` in `ns` from the watch cache.
    fn cached_deployment(&self, ns: &str, name: &str) -> Option<Arc<Deployment>> {
        let key = reflector::ObjectRef::new(name).within(ns);
        self.deployments.iter().find_map(|store| store.get(&key))
    }

    /// Waits until every Deployment store has listed once: an empty cache at start-up would read
    /// as "no Deployment" and re-label the pods that serve.
    async fn deployments_listed(&self) {
        for store in &self.deployments {
            let _ = store.wait_until_ready().await;
        }
    }
}

/// A small memo per rollout (keyed by namespace and name), forgotten when the rollout goes.
pub struct PerRollout<T>(std::sync::Mutex<std::collections::HashMap<(String, String), T>>);

impl<T> Default for PerRollout<T> {
    fn default() -> Self {
        Self(Default::default())
    }
}

impl<T> PerRollout<T> {
    fn key(mr: &ModelRollout) -> (String, String) {
        (mr.namespace().unwrap_or_default(), mr.name_any())
    }

    fn with<R>(&self, mr: &ModelRollout, f: impl FnOnce(Option<&T>) -> R) -> R {
        f(self.0.lock().expect("not poisoned").get(&Self::key(mr)))
    }

    fn set(&self, mr: &ModelRollout, value: T) {
        self.0.lock().expect("not poisoned").insert(Self::key(mr), value);
    }

    fn update(&self, mr: &ModelRollout, f: impl FnOnce(&mut T))
    where
        T: Default,
    {
        f(self.0.lock().expect("not poisoned").entry(Self::key(mr)).or_default());
    }

    /// Reads and may change or clear the memo of `mr` (`None` when it has none).
    fn with_entry<R>(&self, mr: &ModelRollout, f: impl FnOnce(&mut Option<T>) -> R) -> R {
        let mut memo = self.0.lock().expect("not poisoned");
        let key = Self::key(mr);
        let mut entry = memo.remove(&key);
        let result = f(&mut entry);
        if let Some(value) = entry {
            memo.insert(key, value);
        }
        result
    }

    fn forget(&self, mr: &ModelRollout) {
        self.0.lock().expect("not poisoned").remove(&Self::key(mr));
    }
}

/// Services and routes change only when the split does, yet every reconcile (each Deployment status
/// change, each requeue) would re-apply all of them. The split last applied is remembered and the
/// apply skipped while it is unchanged and recent; a changed split (a stage, a rollback) is applied
/// at once, and an unchanged one again after `--reapply-after`, which repairs a hand-edited route.
/// The Services are remembered on their own, one by one: they select versions and do not change
/// with a weight, so a stage change re-applies the route (or, with replica ratios, nothing) but no
/// Service, and a new candidate only the canary Service — while rollouts start, re-applied Services
/// were a third of all writes to the apiserver. An unchanged Service past `--reapply-after` is read
/// and applied only if it drifted (see [`ensure_services`]).
pub type AppliedTraffic = PerRollout<AppliedSplit>;

#[derive(Default)]
pub struct AppliedSplit {
    split: Option<(String, Instant)>,
    /// A hash of each Service (stable, canary, root) as last applied, and when.
    services: [Option<(u64, Instant)>; 3],
}

/// With nothing scheduled, an active (progressing or paused) rollout is reconciled again after this,
/// which re-applies its split (`--reapply-after`) and checks its Services: a route or Service
/// reverted by hand or by a GitOps sync mid-rollout is repaired within minutes. (An edited
/// Deployment is repaired at once: it is watched.)
const ACTIVE_RESYNC: Duration = Duration::from_secs(300);

/// A settled rollout (idle, promoted, rolled back) is reconciled again after about this long,
/// spread by ±25% per rollout. Its Deployments are watched (a change reconciles at once); what
/// the resync repairs is an edited Service or route, which matters less with all traffic on stable,
/// and at 10,000 rollouts every 5 minutes would be 33 reconciles and ~100 reads a second.
/// The spread keeps rollouts reconciled together (a controller restart lists them all) from coming
/// back together.
const SETTLED_RESYNC: Duration = Duration::from_secs(1800);

/// A reconcile slower than this logs where its time went.
const SLOW_RECONCILE: Duration = Duration::from_millis(100);

/// A Deployment as last applied: what was applied (a hash of the object), the role label it got
/// and the generation the apiserver gave it.
#[derive(Clone)]
pub struct AppliedWorkload {
    fingerprint: u64,
    role: String,
    generation: Option<i64>,
}

/// Every reconcile of an active rollout ensures both Deployments; applying an unchanged object is
/// an apiserver round trip for nothing. An apply is skipped while the object we would send is the
/// one we last sent and the cached Deployment (watched) still has the generation our apply
/// produced (nobody changed its spec since) and our labels and owner reference. A controller that
/// restarts remembers nothing, and applies each once.
pub type AppliedWorkloads = PerRollout<std::collections::HashMap<String, AppliedWorkload>>;

fn fingerprint(object: &impl serde::Serialize) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let bytes = serde_json::to_vec(object).unwrap_or_default();
    BuildHasherDefault::<DefaultHasher>::default().hash_one(bytes)
}

/// A reconcile must never decide on a copy older than our own last status write (it would repeat
/// or undo a transition), but the watch delivers that write some milliseconds after the write
/// returns, and meanwhile other changes (a Deployment's status, a spec edit) trigger reconciles.
/// Reading the object first each time is a round trip to a busy apiserver in the reconciles that
/// are already the slowest (a start, a stage change). So the object our write returned is kept until
/// the watch has caught up with it, and a reconcile decides on whichever copy is newer. Entries live
/// only between a write and its watch event, so this holds few objects even at 10,000 rollouts.
pub type LastWrites = PerRollout<LastWrite>;

pub struct LastWrite {
    object: Arc<ModelRollout>,
    /// A hash of the status we wrote: a cached copy with this status has seen our write even when a
    /// later spec change gave it a newer resourceVersion.
    status: u64,
    at: Instant,
}

impl LastWrite {
    fn of(written: ModelRollout) -> Self {
        Self { status: fingerprint(&written.status), object: Arc::new(written), at: Instant::now() }
    }
}

/// A watch delivers a write within milliseconds, seconds on an overloaded apiserver. A cache still
/// behind our write after this long more likely holds someone else's later status (a replica that
/// led meanwhile, a hand edit): the reconcile reads the object instead.
const WATCH_CATCH_UP: Duration = Duration::from_secs(10);

/// The newest copy of a rollout this controller knows: the cached one, unless our last status
/// write is newer than it. `None`: neither can be trusted; read the object.
fn newest_copy(last_writes: &LastWrites, cached: &ModelRollout) -> Option<ModelRollout> {
    last_writes.with_entry(cached, |entry| {
        let Some(last) = entry else { return Some(cached.clone()) };
        let caught_up =
            cached.resource_version() == last.object.resource_version() || fingerprint(&cached.status) == last.status;
        if !caught_up && last.at.elapsed() < WATCH_CATCH_UP {
            return Some((*last.object).clone());
        }
        *entry = None;
        caught_up.then(|| cached.clone())
    })
}

#[tracing::instrument(skip(guard, ctx), fields(namespace, name))]
pub async fn reconcile(guard: Arc<DeserializeGuard<ModelRollout>>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let mr = match &guard.0 {
        Ok(mr) => mr.clone(),
        Err(invalid) => {
            // An object we cannot read is reported and skipped; it never stops the controller.
            tracing::warn!(name = ?invalid.metadata.name, namespace = ?invalid.metadata.namespace, error = %invalid.error, "skipping a ModelRollout that does not deserialize");
            ctx.metrics.reconcile_errors.get_or_create(&crate::telemetry::ErrorLabel { error: "invalid_object" }).inc();
            return Ok(Requeue::await_change());
        }
    };
    let span = tracing::Span::current();
    span.record("namespace", mr.namespace().unwrap_or_default().as_str());
    span.record("name", mr.name_any().as_str());
    let start = Instant::now();
    let api: Api<ModelRollout> = Api::namespaced(ctx.client.clone(), &mr.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, Arc::new(mr), |event| async {
        match event {
            Finalizer::Apply(mr) => apply(&mr, &ctx).await,
            Finalizer::Cleanup(mr) => cleanup(&mr, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconcile_duration.observe(start.elapsed().as_secs_f64());
    result
}

pub fn error_policy(_guard: Arc<DeserializeGuard<ModelRollout>>, error: &Error, ctx: Arc<Context>) -> Requeue {
    tracing::warn!(%error, "reconcile failed; retrying");
    ctx.metrics.reconcile_errors.get_or_create(&crate::telemetry::ErrorLabel { error: error.metric_label() }).inc();
    Requeue::requeue(Duration::from_secs(2))
}

/// Whether a Deployment (from the watch cache: its changes trigger a reconcile, so the cache is as
/// new as what the reconcile reacts to) has all its pods Ready.
fn deployment_ready(d: Option<&Deployment>) -> bool {
    let Some(d) = d else { return false };
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = &d.status else { return false };
    let current = status.observed_generation >= d.metadata.generation;
    want > 0 && current && status.ready_replicas.unwrap_or(0) >= want && status.updated_replicas.unwrap_or(0) >= want
}

fn selector(mr: &ModelRollout, model: &ModelSpec, role: &str) -> Selector {
    Selector {
        namespace: mr.namespace().unwrap_or_default(),
        rollout: mr.name_any(),
        model: model.name.clone(),
        version: model.version.clone(),
        role: role.into(),
    }
}

fn prometheus(ctx: &Context, mr: &ModelRollout) -> Option<prometheus_http_query::Client> {
    let url = mr.spec.analysis.prometheus.address.clone().or_else(|| ctx.prometheus_url.clone())?;
    prometheus_http_query::Client::from(ctx.http.clone(), &url).ok()
}

async fn apply(cached: &ModelRollout, ctx: &Context) -> Result<Requeue, Error> {
    let started = Instant::now();
    let ns = cached.namespace().unwrap_or_default();
    // Decide on the latest object, never on a watch cache that has not yet seen our last status
    // write: a stale status would repeat or undo a transition.
    let api: Api<ModelRollout> = Api::namespaced(ctx.client.clone(), &ns);
    let newest = match newest_copy(&ctx.last_writes, cached) {
        Some(copy) => copy,
        None => match api.get_opt(&cached.name_any()).await? {
            Some(read) => read,
            None => return Ok(Requeue::await_change()),
        },
    };
    let mr = &newest;
    let status = mr.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    ctx.deployments_listed().await;

    // Observe.
    let candidate_differs = status.stable.as_ref().is_some_and(|s| !s.same_build(&mr.spec.model));
    let candidate_ready = candidate_differs
        && deployment_ready(
            ctx.cached_deployment(&ns, &workloads::deployment_name(mr, &mr.spec.model.version)).as_deref(),
        );
    let mut analysis = None;
    let analysis_slot = core::AnalysisSlot::of(mr.metadata.uid.as_deref().unwrap_or_default());
    if candidate_ready && core::analysis_due(&mr.spec, &status, analysis_slot, now) {
        let stable = status.stable.clone().expect("a candidate implies a stable");
        let defs = core::gate_defs(&mr.spec.analysis.gates);
        let timings = core::Timings::of(&mr.spec).ok();
        let window =
            timings.as_ref().map_or(Duration::from_secs(60), |t| t.interval.unsigned_abs()).max(Duration::from_secs(5));
        let timeout = timings.as_ref().map_or(Duration::from_secs(5), |t| t.query_timeout.unsigned_abs());
        let role = if status.mirror_percent > 0 && status.canary_weight == 0 { "shadow" } else { "canary" };
        analysis = Some(match prometheus(ctx, mr) {
            Some(prom) => {
                gates::observe(
                    &prom,
                    &defs,
                    &selector(mr, &mr.spec.model, role),
                    &selector(mr, &stable, "stable"),
                    window,
                    timeout,
                )
                .await
            }
            None => defs
                .iter()
                .map(|d| core::GateObservation {
                    gate: d.name.clone(),
                    candidate: core::Measurement::QueryError("no Prometheus address (spec or --prometheus-url)".into()),
                    stable: core::Measurement::NoData,
                })
                .collect(),
        });
    }
    let observed = started.elapsed();
    let obs = Observations { generation: mr.meta().generation, candidate_ready, analysis, analysis_slot };

    // Decide.
    let decision = core::decide(&mr.spec, &status, &obs, now);
    let new = &decision.status;

    // Act, then record: a crash in between repeats idempotent actions, never loses progress. A
    // decision that moves no traffic (a start, whose candidate is not Ready yet; an analysis that
    // passes) records together with its writes instead: whatever it had to create is ensured again
    // from the recorded status by the next reconcile, and no traffic can go ahead of its record.
    let rolling_back = status.phase.is_some_and(Phase::is_active)
        && matches!(new.phase, Some(Phase::RolledBack | Phase::Failed | Phase::Idle));
    let moves_traffic = (status.canary_weight, status.mirror_percent) != (new.canary_weight, new.mirror_percent)
        || status.stable.as_ref().map(|s| &s.version) != new.stable.as_ref().map(|s| &s.version)
        || decision.actions.iter().any(|a| matches!(a, Action::ScaleDown { .. }));
    let decided = (Instant::now(), std::time::SystemTime::now());
    let act = async {
        let result = execute(mr, ctx, new, &decision.actions).await;
        if rolling_back && result.is_ok() {
            let took = decided.0.elapsed();
            let unix = decided.1.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            ctx.metrics.rollback_restore.observe(took.as_secs_f64());
            let rl = RolloutLabel { namespace: ns.clone(), name: mr.name_any() };
            ctx.metrics.rollback_decided.get_or_create(&rl).set(unix);
            tracing::info!(restore_ms = took.as_secs_f64() * 1e3, reason = ?new.reason, "rolled back: all traffic on stable");
        }
        (result, started.elapsed())
    };
    // The status write and the events it reports go out together: an event records a decision
    // already carried out, and waiting for one before the other was a round trip per transition.
    let write_status = async {
        if !core::status_changed(&status, new) {
            return Ok(());
        }
        // Conditional on the version we decided from: if anything changed meanwhile, the write fails
        // with a conflict and the next reconcile decides again.
        let patch = json!({"apiVersion": "modelrollout.dev/v1alpha1", "kind": "ModelRollout",
                           "metadata": {"resourceVersion": mr.resource_version()}, "status": new});
        let written =
            api.patch_status(&mr.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
        ctx.last_writes.set(mr, LastWrite::of(written));
        Ok(())
    };
    let record = async {
        let announced = futures::future::join_all(decision.actions.iter().map(|action| announce(mr, ctx, action)));
        futures::future::join(write_status, announced).await.0
    };
    let (act_took, recorded) = if moves_traffic {
        let (acted, took) = act.await;
        acted?;
        (took, record.await)
    } else {
        let ((acted, took), recorded) = futures::future::join(act, record).await;
        acted?;
        (took, recorded)
    };
    match recorded {
        Ok(()) => {}
        // The object changed since the copy we decided on (a spec edit the watch has not delivered
        // yet): nothing is lost, the change's own watch event decides again.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!("status write conflicted with a newer object; deciding again");
            // The copy we decided on is behind: the next reconcile goes by the watch cache.
            ctx.last_writes.forget(mr);
            return Ok(Requeue::requeue(Duration::from_millis(200)));
        }
        Err(e) => return Err(e.into()),
    }
    record_metrics(ctx, mr, &status, new);
    let took = started.elapsed();
    // Which step a slow reconcile spent its time in (the histogram only says that it was slow).
    if took > SLOW_RECONCILE {
        tracing::info!(
            total_ms = took.as_millis() as u64,
            observe_ms = observed.as_millis() as u64,
            act_ms = (act_took - observed).as_millis() as u64,
            status_ms = took.saturating_sub(act_took).as_millis() as u64,
            together = !moves_traffic,
            actions = decision.actions.len(),
            "slow reconcile"
        );
    }
    let resync = if new.phase.is_some_and(Phase::is_active) {
        ACTIVE_RESYNC
    } else {
        SETTLED_RESYNC.mul_f64(0.75 + 0.5 * analysis_slot.fraction())
    };
    Ok(Requeue::requeue(decision.requeue_after.unwrap_or(resync).max(Duration::from_millis(200))))
}

/// Carries out the core's writes (events and notifications go out with the status write). The
/// core lists them in a fixed order: workloads, traffic, scale-downs. Writes that do not depend on
/// one another go out together: each apiserver round trip under load is tens of milliseconds, and
/// a start or a settled resync done one write after another was most of the reconciles over
/// 100 ms. What does depend is kept in order: the route follows its Services, and a version is
/// scaled down only after the route has moved off it.
async fn execute(mr: &ModelRollout, ctx: &Context, st: &ModelRolloutStatus, actions: &[Action]) -> Result<(), Error> {
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
    let (role_label, replicas) = match role {
        Role::Stable => ("stable", stable_replicas.max(if ratio { 0 } else { 1 })),
        Role::Candidate => (
            if st.canary_weight == 0 && st.mirror_percent > 0 { "shadow" } else { "canary" },
            candidate_replicas.max(1),
        ),
    };
    let name = workloads::deployment_name(mr, &model.version);
    let cached = ctx.cached_deployment(&ns, &name);
    let last = ctx.applied_workloads.with(mr, |m| m.and_then(|m| m.get(&name)).cloned());
    // The role a pod reports is fixed when its Deployment is created: neither a stage change nor
    // the promotion itself restarts the pods that serve. (The memo covers the moment between our
    // create and the watch delivering it.)
    let role_label = cached
        .as_ref()
        .and_then(|d| d.labels().get(workloads::LABEL_ROLE).cloned())
        .or_else(|| last.as_ref().map(|a| a.role.clone()))
        .unwrap_or_else(|| role_label.to_string());
    let d = workloads::deployment(mr, model, &role_label, replicas);
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
    let record = AppliedWorkload { fingerprint: print, role: role_label, generation: applied.metadata.generation };
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
async fn announce(mr: &ModelRollout, ctx: &Context, action: &Action) {
    match action {
        Action::Event { kind, reason, message } => {
            let ev = Event {
                type_: match kind {
                    EventType::Normal => KubeEventType::Normal,
                    EventType::Warning => KubeEventType::Warning,
                },
                reason: (*reason).into(),
                note: Some(message.chars().take(1000).collect()),
                action: "Reconcile".into(),
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

fn record_metrics(ctx: &Context, mr: &ModelRollout, old: &ModelRolloutStatus, new: &ModelRolloutStatus) {
    let m = &ctx.metrics;
    let (namespace, name) = (mr.namespace().unwrap_or_default(), mr.name_any());
    let rl = RolloutLabel { namespace: namespace.clone(), name: name.clone() };
    m.weight.get_or_create(&rl).set(new.canary_weight as i64);
    m.mirror.get_or_create(&rl).set(new.mirror_percent as i64);
    for p in [Phase::Idle, Phase::Progressing, Phase::Paused, Phase::Promoted, Phase::RolledBack, Phase::Failed] {
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
    if let Some(run) = &new.last_analysis {
        let gauge = m.last_analysis.get_or_create(&rl);
        if let Some(t) = analysis_time_to_export(gauge.get(), run.time.0) {
            gauge.set(t);
        }
        for g in &run.gates {
            for (version, value) in [("candidate", g.value), ("stable", g.stable_value), ("limit", g.bound)] {
                if let Some(v) = value {
                    let l =
                        GateLabel { namespace: namespace.clone(), name: name.clone(), gate: g.name.clone(), version };
                    m.gate_value.get_or_create(&l).set(v);
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

/// Before the object goes: all traffic back to stable, the controller's changes to a user-owned
/// route removed. Owned objects are garbage-collected through their owner references.
async fn cleanup(mr: &ModelRollout, ctx: &Context) -> Result<Requeue, Error> {
    ctx.last_writes.forget(mr);
    ctx.applied_traffic.forget(mr);
    ctx.applied_workloads.forget(mr);
    let split = Split {
        stable_service: workloads::stable_service(mr),
        canary_service: workloads::canary_service(mr),
        port: mr.spec.workload.service_port,
        candidate_active: false,
        weight: 0,
        mirror: 0,
    };
    match Router::of(mr).apply(&ctx.client, mr, &split).await {
        Ok(()) => {}
        // A route already gone needs no restoring.
        Err(Error::Router(msg)) if msg.contains("NotFound") || msg.contains("not found") => {}
        Err(e) => return Err(e),
    }
    let m = &ctx.metrics;
    let (namespace, name) = (mr.namespace().unwrap_or_default(), mr.name_any());
    let rl = RolloutLabel { namespace: namespace.clone(), name: name.clone() };
    m.weight.remove(&rl);
    m.mirror.remove(&rl);
    m.last_analysis.remove(&rl);
    for p in [Phase::Idle, Phase::Progressing, Phase::Paused, Phase::Promoted, Phase::RolledBack, Phase::Failed] {
        m.phase.remove(&PhaseLabel { namespace: namespace.clone(), name: name.clone(), phase: p.as_str() });
    }
    Ok(Requeue::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(resource_version: &str, candidate: Option<&str>) -> ModelRollout {
        serde_json::from_value(json!({
            "apiVersion": "modelrollout.dev/v1alpha1", "kind": "ModelRollout",
            "metadata": {"name": "fraud", "namespace": "team-a", "resourceVersion": resource_version},
            "spec": {"model": {"name": "fraud", "version": "v2",
                               "artifact": {"uri": "/models/fraud.onnx", "sha256": "0".repeat(64)},
                               "contract": {"inputs": [{"name": "amount", "type": "float"}]}}},
            "status": {"stableVersion": "v1", "candidateVersion": candidate},
        }))
        .expect("a valid ModelRollout")
    }

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

    #[test]
    fn a_cache_behind_our_status_write_gives_way_to_the_written_object_until_it_catches_up() {
        let memo = LastWrites::default();
        let before = rollout("10", None);
        assert_eq!(newest_copy(&memo, &before).unwrap().resource_version().as_deref(), Some("10"), "no write yet");

        let written = rollout("11", Some("v2"));
        memo.set(&written, LastWrite::of(written.clone()));
        let decided_on = newest_copy(&memo, &before).expect("trusted");
        assert_eq!(decided_on.resource_version().as_deref(), Some("11"), "the cache has not seen our write");

        // A spec edit on top of our write: newer resourceVersion, our status.
        let edited = rollout("12", Some("v2"));
        assert_eq!(newest_copy(&memo, &edited).unwrap().resource_version().as_deref(), Some("12"));
        // Caught up: the memo is gone, the cache is trusted from now on.
        assert!(memo.with(&edited, |m| m.is_none()));
        assert_eq!(newest_copy(&memo, &before).unwrap().resource_version().as_deref(), Some("10"));
    }

    #[test]
    fn a_cache_that_never_shows_our_write_is_read_again_after_a_while() {
        let memo = LastWrites::default();
        let written = rollout("11", Some("v2"));
        let mut last = LastWrite::of(written.clone());
        last.at -= WATCH_CATCH_UP;
        memo.set(&written, last);
        // Someone else's status (another replica, a hand edit): neither copy can be trusted.
        assert!(newest_copy(&memo, &rollout("13", Some("v3"))).is_none());
        assert!(memo.with(&written, |m| m.is_none()), "forgotten once read");
    }
}
