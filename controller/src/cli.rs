//! Command line and the controller's run loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use modelrollout_process::{LogFormat, Shutdown, init_logging};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::events::Reporter;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client};

use crate::api::ModelRollout;
use crate::error::Error;
use crate::leader::LeaderElector;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::route_watch;
use crate::telemetry::{self, Health, Metrics};

#[derive(Clone, Debug, Parser)]
#[command(name = "modelrollout-controller", version, about = "Progressive delivery for ML models on Kubernetes")]
pub struct Args {
    /// Kubeconfig file; in-cluster config or $KUBECONFIG when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Namespaces to watch (comma-separated); all when empty.
    #[arg(long, env = "MODELROLLOUT_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Prometheus used by rollouts whose spec names none.
    #[arg(long, env = "MODELROLLOUT_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// The evidence service every sidecar sends its prediction records to (the chart sets it when
    /// it installs the service); none: sidecars send none.
    #[arg(long, env = "MODELROLLOUT_EVIDENCE_URL")]
    pub evidence_url: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "MODELROLLOUT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    #[arg(long, env = "MODELROLLOUT_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    #[arg(long, env = "MODELROLLOUT_LEADER_ELECTION_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,
    #[arg(long, env = "MODELROLLOUT_LEASE_NAME", default_value = "modelrollout-controller")]
    pub lease_name: String,
    /// Lease duration in seconds: how long a dead leader holds the others back.
    #[arg(long, env = "MODELROLLOUT_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
    /// Where the controller may connect on a user's behalf (gating webhooks, notifications, golden
    /// sets): CIDRs, addresses and host names, comma-separated. Empty (the default): anywhere but
    /// loopback, link-local (the cloud metadata address among them) and unspecified addresses.
    /// Checked after DNS resolution, before connecting; no redirect is followed.
    #[arg(long, env = "MODELROLLOUT_OUTBOUND_ALLOW", value_delimiter = ',')]
    pub outbound_allow: Vec<String>,
    /// This replica's identity in the lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    #[arg(long, env = "MODELROLLOUT_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
    /// Reconciles in flight at once (per watched namespace), and requests to the apiserver in flight
    /// at once (leader election aside). Bounded so that a burst (thousands of rollouts created or
    /// relisted) queues in the controller instead of holding thousands of objects and requests in
    /// memory and flooding the apiserver: a reconcile sends its independent writes together, and
    /// unbounded, a creation burst at 10,000 rollouts kept ~180 writes in flight on an apiserver
    /// that completed ~17 a second, until they timed out (504) and were retried.
    #[arg(long, env = "MODELROLLOUT_MAX_CONCURRENT_RECONCILES", default_value_t = 64)]
    pub max_concurrent_reconciles: u16,
    /// How long an applied split or Service is trusted: on the first reconcile after this, an
    /// unchanged split is applied again and each Service read and applied again if it drifted (a
    /// hand edit, a GitOps sync reverting it). Progressing rollouts are reconciled at least every
    /// 5 minutes, settled ones about every 30. Deployments are watched: an edit is undone at once.
    #[arg(long, env = "MODELROLLOUT_REAPPLY_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub reapply_after: std::time::Duration,
}

fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    crate::api::Duration::parse(value).map(|d| d.get()).map_err(|e| format!("--reapply-after: {e}"))
}

/// A client whose requests in flight at once are capped (`None`: uncapped); beyond the cap they
/// queue in the client.
pub fn client(config: kube::Config, in_flight: Option<usize>) -> Result<Client, Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(match in_flight {
        Some(n) => builder.with_layer(&tower::limit::ConcurrencyLimitLayer::new(n.max(1))).build(),
        None => builder.build(),
    })
}

async fn config(args: &Args) -> Result<kube::Config, Error> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Config(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| Error::Config(e.to_string()))?
        }
        None => kube::Config::infer().await.map_err(|e| Error::Config(e.to_string()))?,
    };
    Ok(config)
}

/// Waits until the ModelRollout CRD is established.
async fn wait_for_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    loop {
        match crds.get_opt("modelrollouts.modelrollout.dev").await {
            Ok(Some(crd)) => {
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
                if established {
                    return;
                }
                tracing::info!("waiting for the ModelRollout CRD to be established");
            }
            Ok(None) => tracing::info!("waiting for the ModelRollout CRD to be installed"),
            Err(e) => tracing::warn!(error = %e, "reading the ModelRollout CRD"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The namespaces watched: all (`None`) or the configured ones.
fn watched_namespaces(args: &Args) -> Vec<Option<String>> {
    if args.namespaces.is_empty() { vec![None] } else { args.namespaces.iter().cloned().map(Some).collect() }
}

/// After the stop signal, how long reconciles in flight may take to finish before the process
/// goes anyway: it exits within a second of SIGTERM, whatever it was doing.
const STOP_GRACE: Duration = Duration::from_millis(300);

async fn run_controller(
    client: Client,
    args: &Args,
    ctx: Arc<Context>,
    deployment_writers: Vec<reflector::store::Writer<Deployment>>,
    shutdown: &Shutdown,
) {
    let watch_cfg = watcher::Config::default().any_semantic();
    // Which route kinds this cluster serves (per watched namespace set, as RBAC may differ).
    let mut served = Vec::new();
    for ns in watched_namespaces(args) {
        let mut kinds = Vec::new();
        for kind in route_watch::RouteKind::ALL {
            let found = tokio::select! {
                found = route_watch::served(&client, kind, ns.as_deref()) => found,
                _ = shutdown.stopped() => return,
            };
            kinds.push((kind, found));
        }
        served.push(kinds);
    }
    let owned_cfg = watcher::Config::default().labels("app.kubernetes.io/managed-by=modelrollout-controller");
    let runs = watched_namespaces(args).into_iter().zip(deployment_writers).zip(served).map(
        |((ns, deployment_writer), route_kinds)| {
            let (mrs, deps): (Api<DeserializeGuard<ModelRollout>>, Api<Deployment>) = match &ns {
                Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
                None => (Api::all(client.clone()), Api::all(client.clone())),
            };
            let ctx = ctx.clone();
            // The cache keeps each ModelRollout without its managedFields: they are the largest part of
            // a cached object and nothing here reads them (memory at 1,000s of rollouts).
            let (reader, writer) = reflector::store();
            let rollouts = watcher(mrs, watch_cfg.clone())
                .default_backoff()
                .modify(|guard: &mut DeserializeGuard<ModelRollout>| {
                    if let Ok(mr) = &mut guard.0 {
                        mr.managed_fields_mut().clear();
                    }
                })
                .reflect(writer)
                .applied_objects();
            // The managed Deployments are cached too (reconciles read readiness and role labels from
            // here, not with a GET each): without the pod template and managedFields, which nothing
            // reads, they cost little.
            let deployments = watcher(deps, owned_cfg.clone())
                .default_backoff()
                .modify(|d: &mut Deployment| {
                    d.managed_fields_mut().clear();
                    if let Some(spec) = d.spec.as_mut() {
                        spec.template = Default::default();
                    }
                })
                .reflect(deployment_writer)
                .touched_objects();
            let mut controller = Controller::for_stream(rollouts, reader.clone())
                .with_config(kube::runtime::controller::Config::default().concurrency(args.max_concurrent_reconciles))
                .owns_stream(deployments);
            // The routes rollouts drive: a spec change by anyone else reconciles their rollouts at once.
            for (kind, served) in &route_kinds {
                if *served {
                    let reader = reader.clone();
                    let kind = *kind;
                    controller = controller.watches_stream_with(
                        route_watch::changes(client.clone(), kind, ns.as_deref(), ctx.routes.clone()),
                        move |route| route_watch::rollouts_of(&reader, kind, &route),
                        kind.resource(),
                    );
                }
            }
            let stop = shutdown.clone();
            controller
                .graceful_shutdown_on(async move { stop.stopped().await })
                .run(reconcile, error_policy, ctx)
                .for_each(|r| async move {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "reconcile");
                    }
                })
        },
    );
    // Reconciles in flight finish within STOP_GRACE of the signal, or are left.
    tokio::select! {
        _ = futures::future::join_all(runs) => {}
        _ = async { shutdown.stopped().await; tokio::time::sleep(STOP_GRACE).await } => {
            tracing::info!("stopping with reconciles still in flight");
        }
    }
}

/// The program; returns the exit code.
pub async fn run(args: Args) -> i32 {
    let format = if args.log_format == "json" { LogFormat::Json } else { LogFormat::Text };
    init_logging(format, "info,kube=warn");
    // Listened for before anything else: a SIGTERM at any step of start-up stops it.
    let shutdown = Shutdown::listen();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The lease is renewed on a client of its own: never queued behind a burst of reconciles.
    let clients = config(&args).await.and_then(|config| {
        Ok((client(config.clone(), Some(args.max_concurrent_reconciles.into()))?, client(config, None)?))
    });
    let (client, lease_client) = match clients {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes client");
            return 2;
        }
    };
    let outbound = match crate::outbound::DestinationPolicy::parse(&args.outbound_allow) {
        Ok(policy) => crate::outbound::Outbound::new(policy),
        Err(e) => {
            tracing::error!(error = %e, "bad destination policy");
            return 2;
        }
    };
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health { metrics: metrics.clone(), ready: false.into() });
    match tokio::net::TcpListener::bind(args.metrics_addr).await {
        Ok(l) => {
            let router = telemetry::router(health.clone());
            tokio::spawn(async move { axum::serve(l, router).await });
        }
        Err(e) => {
            tracing::error!(error = %e, addr = %args.metrics_addr, "cannot serve metrics");
            return 2;
        }
    }
    tokio::select! {
        _ = wait_for_crd(&client) => {}
        _ = shutdown.stopped() => return 0,
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "controller".into()), std::process::id())
    });
    let reporter = Reporter { controller: "modelrollout-controller".into(), instance: Some(identity.clone()) };
    let (deployment_readers, deployment_writers): (Vec<_>, Vec<_>) =
        watched_namespaces(&args).iter().map(|_| reflector::store::<Deployment>()).unzip();
    let ctx = Arc::new(Context {
        metrics: metrics.clone(),
        prometheus_url: args.prometheus_url.clone(),
        evidence_url: args.evidence_url.clone(),
        deployments: deployment_readers,
        reapply_after: args.reapply_after,
        outbound,
        ..Context::new(client.clone(), reporter)
    });
    if !args.leader_election {
        health.ready.store(true, Ordering::Release);
        run_controller(client, &args, ctx, deployment_writers, &shutdown).await;
        return 0;
    }
    let elector = LeaderElector::new(
        lease_client,
        &args.leader_election_namespace,
        &args.lease_name,
        &identity,
        Duration::from_secs(args.lease_seconds.max(3)),
    );
    health.ready.store(true, Ordering::Release);
    tokio::select! {
        _ = elector.acquire() => {}
        _ = shutdown.stopped() => return 0,
    }
    tracing::info!(%identity, "acquired the leader lease");
    metrics.leader.set(1);
    let code = tokio::select! {
        _ = run_controller(client, &args, ctx, deployment_writers, &shutdown) => {
            elector.release().await;
            0
        }
        _ = elector.hold() => {
            tracing::error!("lost the leader lease; exiting so a fresh replica can take over");
            1
        }
    };
    metrics.leader.set(0);
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reapply_after_reads_as_a_duration() {
        assert_eq!(parse_duration("5m"), Ok(std::time::Duration::from_secs(300)));
        assert_eq!(parse_duration("2s"), Ok(std::time::Duration::from_secs(2)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
