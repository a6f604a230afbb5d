//! The reconcile loop: observe (Deployments, Prometheus: [`observe`]) -> decide (the pure core) ->
//! act (workloads, router, events, webhooks: [`act`]) -> write status through the status
//! subresource when it changed -> record metrics ([`metrics`]). What it remembers between
//! reconciles is in [`memo`].

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

mod acceptance_runs;
mod act;
mod memo;
mod observe;
mod record_metrics;
mod route_condition;

use observe::observe;

pub use acceptance_runs::{AcceptanceRun, AcceptanceRuns};
use act::{announce, execute};
pub use memo::{AppliedTraffic, AppliedWorkloads, LastWrites, PerRollout};
use memo::{LastWrite, newest_copy};
use record_metrics::record_metrics;

use crate::api::{ModelRollout, ModelRolloutStatus, ModelSpec, Phase, RouterKind};
use crate::core::{self, Action, EventType, Observations, Role};
use crate::error::Error;
use crate::notify;
use crate::prometheus::{self, Selector};
use crate::routers::{Router, TrafficRouter};
use crate::telemetry::{Metrics, RolloutLabel};
use crate::workloads::{self, MANAGER};

pub const FINALIZER: &str = "modelrollout.dev/traffic-restore";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    /// For destinations a ModelRollout names (webhooks, notifications, golden sets): the admin's
    /// destination policy, no redirects.
    pub outbound: crate::outbound::Outbound,
    /// `--prometheus-url`, used when a spec names none.
    pub prometheus_url: Option<String>,
    /// `--evidence-url`: the evidence service the sidecars report to.
    pub evidence_url: Option<String>,
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
    /// Failed reconciles in a row per rollout (see [`error_policy`]).
    pub backoff: Backoffs,
    /// The generation of each route as the route watch last saw it (empty without the watch).
    pub routes: Arc<crate::route_watch::RouteGenerations>,
    /// Acceptance checks in flight, one per rollout.
    pub acceptance: AcceptanceRuns,
}

/// Failed reconciles in a row, per rollout.
pub type Backoffs = PerRollout<u32>;

impl Context {
    /// A context for `client`, its Events reported as `reporter`, with nothing remembered yet: no
    /// Prometheus default, no Deployment caches, `--reapply-after` 5 min. The controller sets
    /// those from its flags; tests use it as it is.
    pub fn new(client: Client, reporter: kube::runtime::events::Reporter) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: Default::default(),
            http: reqwest::Client::new(),
            outbound: Default::default(),
            prometheus_url: None,
            evidence_url: None,
            last_writes: Default::default(),
            applied_traffic: Default::default(),
            deployments: Vec::new(),
            applied_workloads: Default::default(),
            reapply_after: Duration::from_secs(300),
            backoff: Default::default(),
            routes: Default::default(),
            acceptance: Default::default(),
        }
    }

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
    let key = mr.clone();
    let result = finalizer(&api, FINALIZER, Arc::new(mr), |event| async {
        match event {
            Finalizer::Apply(mr) => apply(&mr, &ctx).await,
            Finalizer::Cleanup(mr) => cleanup(&mr, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconcile_duration.observe(start.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.backoff.forget(&key);
    }
    result
}

/// A failed reconcile is retried after a delay that doubles with each failure in a row of that
/// rollout (1 s, 2 s, 4 s ... at most 5 min, each spread by up to ±20% per rollout), and starts
/// over after a success. The log names the rollout and the error.
pub fn error_policy(guard: Arc<DeserializeGuard<ModelRollout>>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.reconcile_errors.get_or_create(&crate::telemetry::ErrorLabel { error: error.metric_label() }).inc();
    let Ok(mr) = &guard.0 else {
        tracing::warn!(%error, "reconcile failed on an object that does not deserialize");
        return Requeue::await_change();
    };
    let mut failures = 0;
    ctx.backoff.update(mr, |n| {
        *n += 1;
        failures = *n;
    });
    let slot = core::AnalysisSlot::of(mr.metadata.uid.as_deref().unwrap_or_default());
    let delay = retry_delay(failures, slot.fraction());
    tracing::warn!(
        namespace = %mr.namespace().unwrap_or_default(),
        name = %mr.name_any(),
        error = %error,
        kind = error.metric_label(),
        failures,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed; retrying"
    );
    Requeue::requeue(delay)
}

/// The delay before retry number `failures` (1 for the first): exponential from 1 s, capped at
/// 5 min, scaled by 0.8-1.2 with `spread` in [0, 1) so that rollouts failing together do not retry
/// together.
pub fn retry_delay(failures: u32, spread: f64) -> Duration {
    const FIRST: Duration = Duration::from_secs(1);
    const MOST: Duration = Duration::from_secs(300);
    let exp = failures.saturating_sub(1).min(16);
    let base = FIRST.saturating_mul(1 << exp).min(MOST);
    base.mul_f64(0.8 + 0.4 * spread.clamp(0.0, 1.0))
}

/// One reconcile of a live rollout: observe, decide, act, record.
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

    let analysis_slot = core::AnalysisSlot::of(mr.metadata.uid.as_deref().unwrap_or_default());
    let obs = observe(mr, ctx, &status, analysis_slot, now).await;
    let observed = started.elapsed();

    // Decide.
    let mut decision = core::decide(&mr.spec, &status, &obs, now);
    report_scale(mr, ctx, &mut decision.status);
    let new = &decision.status;

    // Act, then record: a crash in between repeats idempotent actions, never loses progress. A
    // decision that moves no traffic (a start, whose candidate is not Ready yet; an analysis that
    // passes) records together with its writes instead: whatever it had to create is ensured again
    // from the recorded status by the next reconcile, and no traffic can go ahead of its record.
    // An undo after a promotion is a rollback too (measured the same way).
    let rolling_back = core::undid(&status, new)
        || (status.phase.is_some_and(Phase::is_active)
            && matches!(new.phase, Some(Phase::RolledBack | Phase::Failed | Phase::Idle)));
    // An experiment's rule is traffic too: its route is written before a status says it runs.
    let moves_traffic = (status.canary_weight, status.mirror_percent) != (new.canary_weight, new.mirror_percent)
        || status.match_ != new.match_
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
    let (acted, act_took, recorded) = if moves_traffic {
        let (acted, took) = act.await;
        let recorded = if acted.is_ok() { record.await } else { Ok(()) };
        (acted, took, recorded)
    } else {
        let ((acted, took), recorded) = futures::future::join(act, record).await;
        (acted, took, recorded)
    };
    // The RouteReady condition, on the status as it now stands (the decided one if it was written).
    let stored = if recorded.is_ok() && (acted.is_ok() || !moves_traffic) { new } else { &status };
    match &acted {
        Err(Error::RouteNotFound { kind, name }) => route_condition::report_missing(mr, ctx, stored, kind, name).await,
        Ok(()) => route_condition::report_found(mr, ctx, stored).await,
        Err(_) => {}
    }
    acted?;
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

/// The scale subresource's status (`status.replicas`, `status.selector`): the stable version's pods
/// as its Deployment (in the watch cache) has them, and their selector. A HorizontalPodAutoscaler
/// that scales the rollout reads both; `workload.replicas`, which it writes, sizes the versions.
fn report_scale(mr: &ModelRollout, ctx: &Context, st: &mut ModelRolloutStatus) {
    let Some(stable) = st.stable_version.clone() else { return };
    let ns = mr.namespace().unwrap_or_default();
    let deployment = ctx.cached_deployment(&ns, &workloads::deployment_name(mr, &stable));
    st.replicas = deployment.and_then(|d| d.status.as_ref()?.replicas).or(Some(0));
    st.selector = Some(workloads::pod_selector(mr, &stable));
}

/// Before the object goes: all traffic back to stable, the controller's changes to a user-owned
/// route removed. Owned objects are garbage-collected through their owner references.
async fn cleanup(mr: &ModelRollout, ctx: &Context) -> Result<Requeue, Error> {
    ctx.last_writes.forget(mr);
    ctx.applied_traffic.forget(mr);
    ctx.applied_workloads.forget(mr);
    ctx.acceptance.forget(mr);
    Router::of(mr).restore(&ctx.client, mr).await?;
    ctx.metrics.forget_rollout(&RolloutLabel { namespace: mr.namespace().unwrap_or_default(), name: mr.name_any() });
    ctx.backoff.forget(mr);
    Ok(Requeue::await_change())
}

#[cfg(test)]
mod tests;
