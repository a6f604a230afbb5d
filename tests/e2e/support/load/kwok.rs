//! Load for the kwok suites: kwok's pods run no containers, so each version's sidecar runs here as
//! a process with its Deployment's own environment (Prometheus scrapes it), and a load generator
//! sends requests in the proportions the controller wrote into the HTTPRoute, mirrors during
//! shadow, and posts labels. On the real node ([`Harness::start_on_node`]) the same generator
//! sends to each version's Service instead.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::{GoldenRow, Running, golden_rows, ticker};
use crate::controller::release_bin;
use crate::{cluster_env, free_port, prometheus_targets_dir};

struct SidecarProc {
    child: Child,
    base: String,
    target: PathBuf,
    /// Like a pod's readiness: traffic goes to a sidecar only once its /readyz answers 200.
    ready: Arc<AtomicBool>,
}

impl Drop for SidecarProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.target);
    }
}

/// What the load generator saw.
#[derive(Default)]
pub struct Traffic {
    pub stable_ok: AtomicU64,
    pub stable_errors: AtomicU64,
    pub canary_ok: AtomicU64,
    pub canary_errors: AtomicU64,
    pub mirrored: AtomicU64,
    /// The first few failures, for the assertion message.
    pub error_samples: Mutex<Vec<String>>,
}

impl Traffic {
    fn error(&self, what: String) {
        let mut e = self.error_samples.lock().unwrap();
        if e.len() < 10 {
            e.push(what);
        }
    }
}

/// Where the generator's labels go.
#[derive(Clone)]
pub enum Labels {
    /// Kept, (request id, label) for each request answered, for the test to post to the evidence
    /// service when it chooses; a mirrored copy carries its request's id, as Envoy's does.
    Kept(Arc<Mutex<Vec<(String, bool)>>>),
    /// Posted once, every quarter second, to the evidence service at `base` with a label poster's
    /// `token` ([`super::label_poster`]).
    ToEvidence { base: String, token: String },
    /// [`Env::kwok_with`](crate::Env::kwok_with): start the namespace's own evidence service (this
    /// build's process), point the controller at it, and post there.
    OwnEvidence,
}

pub struct Harness {
    pub ns: String,
    pub rollout: String,
    pub traffic: Arc<Traffic>,
    sidecars: Arc<Mutex<HashMap<String, SidecarProc>>>,
    running: Running,
}

impl Harness {
    /// Starts a load generator at `rps` for rollout `name` routed by HTTPRoute `route`, whose
    /// sidecars run as real pods on the real node: requests go to each version's Service (its
    /// ClusterIP, through kube-proxy) once that Service has a ready endpoint.
    /// Labels go once to the chart's evidence service ([`super::post_labels`]).
    pub fn start_on_node(client: Client, ns: &str, name: &str, route: &str, rps: u32) -> Self {
        let queue: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let mut running = Running::default();
        let posted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        running.spawn(super::post_labels(ns.to_string(), name.to_string(), queue.clone(), posted, running.flag()));
        Self::with_load(client, ns, name, route, rps, None, running, Labels::Kept(queue))
    }

    /// Starts the sidecar manager and a load generator at `rps` for rollout `name` routed by
    /// HTTPRoute `route`, its labels going to `labels` (`Kept` or `ToEvidence`).
    pub fn start_with(client: Client, ns: &str, name: &str, route: &str, rps: u32, labels: Labels) -> Self {
        // Without it every sidecar stays unready and a test times out minutes later on "no data".
        assert!(
            std::env::var_os("ORT_DYLIB_PATH").is_some(),
            "ORT_DYLIB_PATH is not set: run through tests/run.sh, or eval \"$(bash scripts/python-env.sh)\" first"
        );
        let sidecars: Arc<Mutex<HashMap<String, SidecarProc>>> = Arc::default();
        let mut running = Running::default();
        let manager =
            manage_sidecars(client.clone(), ns.to_string(), name.to_string(), sidecars.clone(), running.flag());
        running.spawn(manager);
        let labels = match labels {
            Labels::ToEvidence { base, token } => {
                let queue: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
                let posted = Arc::new(std::sync::atomic::AtomicU64::new(0));
                let (ns, name, flag) = (ns.to_string(), name.to_string(), running.flag());
                running.spawn(super::label_poster(base, token, ns, name, queue.clone(), posted, flag));
                Labels::Kept(queue)
            }
            Labels::OwnEvidence => panic!("Env::kwok_with starts the namespace's evidence service"),
            kept => kept,
        };
        Self::with_load(client, ns, name, route, rps, Some(sidecars), running, labels)
    }

    /// The load generator added to `running`: to the harness's own `sidecars`, or (None) to the
    /// real pods behind their Services.
    #[allow(clippy::too_many_arguments)]
    fn with_load(
        client: Client,
        ns: &str,
        name: &str,
        route: &str,
        rps: u32,
        sidecars: Option<Arc<Mutex<HashMap<String, SidecarProc>>>>,
        mut running: Running,
        labels: Labels,
    ) -> Self {
        let traffic = Arc::new(Traffic::default());
        let (ns, name, route) = (ns.to_string(), name.to_string(), route.to_string());
        let flag = running.flag();
        running.spawn(generate_load(
            client,
            ns.clone(),
            name.clone(),
            route,
            rps,
            sidecars.clone(),
            traffic.clone(),
            flag,
            labels,
        ));
        Self { ns, rollout: name, traffic, sidecars: sidecars.unwrap_or_default(), running }
    }

    pub fn running_versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.sidecars.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    pub async fn shutdown(mut self) {
        self.running.stop(Duration::ZERO).await;
        self.sidecars.lock().unwrap().clear();
    }

    /// Stops `version`'s sidecar as the kubelet stops a pod (SIGTERM: it drains and exits; what it
    /// held in memory is gone); the manager starts a new one, which this waits for.
    pub async fn restart(&self, version: &str) {
        let mut old = self.sidecars.lock().unwrap().remove(version).expect("that version's sidecar runs");
        let old_base = old.base.clone();
        let _ = Command::new("kill").args(["-TERM", &old.child.id().to_string()]).status();
        crate::wait_for("the stopped sidecar to exit", Duration::from_secs(30), || {
            let exited = matches!(old.child.try_wait(), Ok(Some(_)));
            async move { exited.then_some(()) }
        })
        .await;
        drop(old);
        crate::wait_for("the restarted sidecar", Duration::from_secs(60), || async {
            let s = self.sidecars.lock().unwrap();
            s.get(version).filter(|p| p.base != old_base && p.ready.load(Ordering::SeqCst)).map(|_| ())
        })
        .await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // `running` stops the load when it drops; the sidecars go now.
        if let Ok(mut s) = self.sidecars.lock() {
            s.clear();
        }
    }
}

fn env_of(d: &Deployment) -> Vec<(String, String)> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.value.map(|v| (e.name, v)))
        .collect()
}

/// Runs one local sidecar per Deployment with replicas > 0, with that Deployment's environment.
async fn manage_sidecars(
    client: Client,
    ns: String,
    rollout: String,
    sidecars: Arc<Mutex<HashMap<String, SidecarProc>>>,
    stop: Arc<AtomicBool>,
) {
    let api: Api<Deployment> = Api::namespaced(client, &ns);
    let lp = ListParams::default().labels(&format!("modelrollout.dev/rollout={rollout}"));
    let sidecar_bin = release_bin("inference-sidecar");
    while !stop.load(Ordering::SeqCst) {
        if let Ok(list) = api.list(&lp).await {
            let wanted: HashMap<String, Deployment> = list
                .items
                .into_iter()
                .filter(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0)
                .filter_map(|d| d.labels().get("modelrollout.dev/version").cloned().map(|v| (v, d)))
                .collect();
            let mut running = sidecars.lock().unwrap();
            running.retain(|v, _| wanted.contains_key(v));
            for (version, d) in wanted {
                if running.contains_key(&version) {
                    continue;
                }
                let port = free_port();
                let mut cmd = Command::new(&sidecar_bin);
                let env = env_of(&d);
                // A sidecar that reports to the evidence service presents its namespace's default
                // ServiceAccount token, as a pod's projected token.
                if env.iter().any(|(k, _)| k == "SIDECAR_EVIDENCE_URL") {
                    cmd.env("SIDECAR_EVIDENCE_TOKEN_FILE", service_account_token_file(&ns, "default"));
                }
                for (k, v) in env {
                    cmd.env(k, v);
                }
                let child = cmd
                    .env("SIDECAR_LISTEN", format!("127.0.0.1:{port}"))
                    .env("SIDECAR_LOG_FORMAT", "text")
                    .env("SIDECAR_SHUTDOWN_GRACE", "0s")
                    .env("SIDECAR_WARMUP", "2")
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::File::create(
                            PathBuf::from(cluster_env("MODELROLLOUT_CLUSTER_DIR"))
                                .join(format!("sidecar-{ns}-{version}-{port}.log")),
                        )
                        .unwrap(),
                    )
                    .spawn()
                    .expect("the sidecar binary runs");
                let target = prometheus_targets_dir().join(format!("{ns}-{version}.json"));
                let labels = json!({"namespace": ns, "rollout": rollout});
                std::fs::write(
                    &target,
                    json!([{"targets": [format!("127.0.0.1:{port}")], "labels": labels}]).to_string(),
                )
                .unwrap();
                let base = format!("http://127.0.0.1:{port}");
                let ready = Arc::new(AtomicBool::new(false));
                let (probe_base, probe_ready) = (base.clone(), ready.clone());
                tokio::spawn(async move {
                    let _ = rustls::crypto::ring::default_provider().install_default();
                    let http = reqwest::Client::new();
                    for _ in 0..600 {
                        if let Ok(r) = http.get(format!("{probe_base}/readyz")).send().await
                            && r.status().is_success()
                        {
                            probe_ready.store(true, Ordering::SeqCst);
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
                running.insert(version, SidecarProc { child, base, target, ready });
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A file holding a fresh token of ServiceAccount `sa` in `ns` (made once per run of the suite).
pub fn service_account_token_file(ns: &str, sa: &str) -> PathBuf {
    let path = PathBuf::from(cluster_env("MODELROLLOUT_CLUSTER_DIR")).join(format!("token-{ns}-{sa}"));
    if !path.exists() {
        let token = crate::kubectl_ok(&["create", "token", sa, "-n", ns, "--duration", "2h"], None);
        std::fs::write(&path, token.trim()).unwrap();
    }
    path
}

/// The split the route currently says, and which version each Service selects.
#[derive(Clone, Debug, Default)]
struct Route {
    stable_version: Option<String>,
    canary_version: Option<String>,
    weight: u32,
    mirror: u32,
    /// On the real node: each Service's address, when it has a ready endpoint.
    stable_base: Option<String>,
    canary_base: Option<String>,
}

/// `http://<ClusterIP>:<port>` of Service `name` once one of its endpoints is ready and the
/// address answers `/readyz` (kube-proxy programs a new endpoint a moment after the EndpointSlice
/// says it is ready; a gateway's health check waits the same way).
async fn service_base(client: &Client, ns: &str, name: &str) -> Option<String> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let svc = Api::<Service>::namespaced(client.clone(), ns).get_opt(name).await.ok()??;
    let spec = svc.spec?;
    let ip = spec.cluster_ip.filter(|ip| ip != "None")?;
    let port = spec.ports?.first()?.port;
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await
        .ok()?;
    let ready = slices
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false));
    if !ready {
        return None;
    }
    let base = format!("http://{ip}:{port}");
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().ok()?;
    let ok = probe.get(format!("{base}/readyz")).send().await.ok()?.status().is_success();
    ok.then_some(base)
}

async fn read_route(client: &Client, ns: &str, rollout: &str, route: &str, on_node: bool) -> Option<Route> {
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &modelrollout::routers::http_route_resource());
    let r = routes.get(route).await.ok()?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let version = |s: Option<Service>| s.and_then(|s| s.spec?.selector?.get("modelrollout.dev/version").cloned());
    let stable_svc = format!("{rollout}-stable");
    let canary_svc = format!("{rollout}-canary");
    let mut out = Route {
        stable_version: version(services.get_opt(&stable_svc).await.ok()?),
        canary_version: version(services.get_opt(&canary_svc).await.ok()?),
        ..Default::default()
    };
    if on_node {
        out.stable_base = service_base(client, ns, &stable_svc).await;
        out.canary_base = service_base(client, ns, &canary_svc).await;
    }
    for rule in r.data["spec"]["rules"].as_array()? {
        for b in rule["backendRefs"].as_array().into_iter().flatten() {
            if b["name"] == canary_svc.as_str() {
                out.weight = b["weight"].as_u64().unwrap_or(0) as u32;
            }
        }
        for f in rule["filters"].as_array().into_iter().flatten() {
            if f["type"] == "RequestMirror" && f["requestMirror"]["backendRef"]["name"] == canary_svc.as_str() {
                out.mirror = f["requestMirror"]["percent"].as_u64().unwrap_or(100) as u32;
            }
        }
    }
    Some(out)
}

/// Which row each version's k-th request carries, so that any run of a version's requests is a
/// fair sample of the golden set and the same one every run.
///
/// Rows are ordered by (label, stable's score) and walked by the golden-ratio sequence, whose
/// prefixes are spread over [0, 1) as evenly as any sequence's can be: after k requests a version
/// has seen the negatives (and the positives) in their share, from every part of the score range.
/// Its false-positive and capture rates are then those of the whole set within about 1/k, not
/// within the ±1/√k of rows drawn at random, and a test about latency or the device fails no
/// quality gate by chance. Counting per version, not per request, keeps the canary's rows from
/// following the slots the traffic split gives it.
struct RowPicker {
    order: Vec<usize>,
    next: [u64; 2],
}

impl RowPicker {
    const PHI_CONJ: f64 = 0.618_033_988_749_894_9;

    fn new(rows: &[GoldenRow]) -> Self {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| {
            (rows[a].label, rows[a].probability).partial_cmp(&(rows[b].label, rows[b].probability)).unwrap()
        });
        RowPicker { order, next: [0; 2] }
    }

    /// The row for the next request to the canary (`true`) or to stable.
    fn pick(&mut self, to_canary: bool) -> usize {
        let k = &mut self.next[to_canary as usize];
        *k += 1;
        let at = ((*k as f64 * Self::PHI_CONJ).fract() * self.order.len() as f64) as usize;
        self.order[at.min(self.order.len() - 1)]
    }
}

#[allow(clippy::too_many_arguments)]
async fn generate_load(
    client: Client,
    ns: String,
    rollout: String,
    route_name: String,
    rps: u32,
    // The harness's own sidecar processes (kwok), or None: real pods behind their Services.
    sidecars: Option<Arc<Mutex<HashMap<String, SidecarProc>>>>,
    traffic: Arc<Traffic>,
    stop: Arc<AtomicBool>,
    labels: Labels,
) {
    let on_node = sidecars.is_none();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let rows = golden_rows();
    let mut picker = RowPicker::new(&rows);
    let route = Arc::new(Mutex::new(Route::default()));
    // Re-read the route twice a second, as a gateway would watch it.
    {
        let (client, ns, rollout, route_name, route, stop) =
            (client.clone(), ns.clone(), rollout.clone(), route_name.clone(), route.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Some(r) = read_route(&client, &ns, &rollout, &route_name, on_node).await {
                    *route.lock().unwrap() = r;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    let mut tick = ticker(rps);
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        n += 1;
        let r = route.lock().unwrap().clone();
        let Some(stable_v) = r.stable_version.clone() else { continue };
        let (stable_base, canary_base) = match &sidecars {
            None => (r.stable_base.clone(), r.canary_base.clone().filter(|_| r.canary_version.is_some())),
            Some(sidecars) => {
                let s = sidecars.lock().unwrap();
                let routable = |p: &&SidecarProc| p.ready.load(Ordering::SeqCst);
                (
                    s.get(&stable_v).filter(routable).map(|p| p.base.clone()),
                    r.canary_version.as_ref().and_then(|v| s.get(v)).filter(routable).map(|p| p.base.clone()),
                )
            }
        };
        let Some(stable_base) = stable_base else { continue };
        // Deterministic spread: request n goes to the canary when its slot falls under the weight.
        let to_canary = r.weight > 0 && (n * 7919 % 100) < r.weight as u64 && canary_base.is_some();
        let mirror = r.mirror > 0 && (n * 104_729 % 100) < r.mirror as u64 && canary_base.is_some();
        // A mirrored copy carries the same row as the request it copies.
        let row = rows[picker.pick(to_canary)].clone();
        let (base, is_canary) = if to_canary { (canary_base.clone().unwrap(), true) } else { (stable_base, false) };
        let (http2, traffic2, labels2) = (http.clone(), traffic.clone(), labels.clone());
        let id = format!("{ns}-{n}");
        let row2 = row.clone();
        let primary_id = id.clone();
        tokio::spawn(async move {
            let ok = match predict_and_label(&http2, &base, &id, &row2, &labels2).await {
                Ok(()) => true,
                Err(e) => {
                    traffic2.error(format!("{} {id}: {e}", if is_canary { "canary" } else { "stable" }));
                    false
                }
            };
            let counter = match (is_canary, ok) {
                (false, true) => &traffic2.stable_ok,
                (false, false) => &traffic2.stable_errors,
                (true, true) => &traffic2.canary_ok,
                (true, false) => &traffic2.canary_errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
        if mirror {
            let (http2, traffic2, base) = (http.clone(), traffic.clone(), canary_base.unwrap());
            // Labels are the evidence service's: the mirror carries the request's own id (a
            // matched request) and its label is the request's, kept once.
            let (id, mirror_labels) = (primary_id, Labels::Kept(Arc::default()));
            tokio::spawn(async move {
                // The mirror's answer is discarded, as a gateway does; its labels still arrive.
                let _ = predict_and_label(&http2, &base, &id, &row, &mirror_labels).await;
                traffic2.mirrored.fetch_add(1, Ordering::Relaxed);
            });
        }
    }
}

async fn predict_and_label(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    row: &GoldenRow,
    labels: &Labels,
) -> Result<(), String> {
    let resp = http
        .post(format!("{base}/v1/models/fraud:predict"))
        .header("x-request-id", id)
        .json(&json!({"instances": [row.features]}))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    if let Labels::Kept(kept) = labels {
        kept.lock().unwrap().push((id.to_string(), row.label != 0));
    }
    Ok(())
}
