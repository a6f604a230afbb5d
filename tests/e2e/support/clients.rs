//! Clients as users run them, on the real node: every request goes to one address (the Gateway's,
//! through Envoy, or the rollout's own Service, through kube-proxy) and the answer says which
//! version served it (`x-model-version`). Each answer is kept with the time its request started, so
//! a test measures the split where clients see it, stage by stage, and nothing here reads a route.
//!
//! Labels: the sidecars join feedback on `x-request-id` (the Gateway keeps the client's, see
//! tests/gateway/gateway.sh). The client does not know which pod answered, so every quarter second
//! it posts the labels gathered since to every ready pod of the rollout (its `<name>` Service's
//! endpoints); a pod counts the ids it did not serve as unknown and ignores them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use modelrollout::api::{ModelRollout, Phase};
use serde_json::{Value, json};

use super::harness::golden_rows;

/// Seconds since the epoch, as a float: the clock the controller's decision timestamps use.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// One request as its client saw it.
#[derive(Clone, Debug)]
pub struct Answer {
    /// When the request started (epoch seconds).
    pub start: f64,
    /// `x-model-version` of the answer; None when it failed.
    pub version: Option<String>,
    /// It carried the header the user's own pinned rule matches.
    pub pinned: bool,
    pub error: Option<String>,
}

/// Where the requests go.
#[derive(Clone, Debug)]
pub enum Target {
    /// The Gateway at `addr` (host:port), for the routes that name `host`.
    Gateway { addr: String, host: String },
    /// The rollout's `<name>` Service (every version's pods) at its ClusterIP, one new connection
    /// per request: kube-proxy picks an endpoint per connection, so each request is its own draw.
    Service,
}

/// The shared Gateway of the real-node cluster (tests/gateway/gateway.sh): its address
/// (host:port), namespace and name.
pub fn gateway() -> (String, String, String) {
    let addr = crate::cluster_env("MODELROLLOUT_GATEWAY");
    let r = crate::cluster_env("MODELROLLOUT_GATEWAY_REF");
    assert!(!addr.is_empty(), "the cluster runs without its Gateway (MODELROLLOUT_WITH_GATEWAY=0?)");
    let (ns, name) = r.split_once('/').expect("namespace/name");
    (addr, ns.to_string(), name.to_string())
}

/// A test namespace's hostname on the shared Gateway.
pub fn gateway_host(ns: &str) -> String {
    format!("{ns}.models.test")
}

/// The request header and value the tests' second, user-owned rule matches.
pub const PIN_HEADER: &str = "x-model-pin";
pub const PIN_VALUE: &str = "stable";

pub struct ClientLoad {
    answers: Arc<Mutex<Vec<Answer>>>,
    /// Labels posted and how many pod posts failed (they are retried with the next batch).
    pub labels_posted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// `http://<ClusterIP>:<port>` of Service `name`, once it answers `/readyz` there (kube-proxy
/// rejects connections to a Service until it has programmed a ready endpoint for it).
async fn service_address(client: &Client, ns: &str, name: &str) -> Option<String> {
    let spec = Api::<Service>::namespaced(client.clone(), ns).get_opt(name).await.ok()??.spec?;
    let ip = spec.cluster_ip.filter(|ip| ip != "None")?;
    let base = format!("http://{ip}:{}", spec.ports?.first()?.port);
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().ok()?;
    probe.get(format!("{base}/readyz")).send().await.ok()?.status().is_success().then_some(base)
}

/// `ip:port` of every ready endpoint of Service `name`.
pub async fn ready_endpoints(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let slices = match Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await
    {
        Ok(s) => s.items,
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    for s in slices {
        let Some(port) = s.ports.as_ref().and_then(|p| p.first()).and_then(|p| p.port) else { continue };
        for e in s.endpoints.iter().flatten() {
            if e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false) {
                out.extend(e.addresses.iter().map(|a| format!("{a}:{port}")));
            }
        }
    }
    out.sort();
    out
}

impl ClientLoad {
    /// Sends `rps` requests a second to `target` for rollout `rollout` in `ns`; with `pin_every`
    /// = Some(n), every n-th request carries [`PIN_HEADER`].
    pub fn start(client: Client, ns: &str, rollout: &str, target: Target, rps: u32, pin_every: Option<u64>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
        let labels: Arc<Mutex<Vec<Value>>> = Arc::default();
        let labels_posted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(send(
            client.clone(),
            ns.to_string(),
            rollout.to_string(),
            target,
            rps,
            pin_every,
            answers.clone(),
            labels.clone(),
            stop.clone(),
        ));
        let feedback = tokio::spawn(post_labels(
            client,
            ns.to_string(),
            rollout.to_string(),
            labels,
            labels_posted.clone(),
            stop.clone(),
        ));
        Self { answers, labels_posted, stop, tasks: vec![load, feedback] }
    }

    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    pub fn sent(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    /// Waits (bounded) for requests in flight to finish, then stops.
    pub async fn shutdown(mut self) -> Vec<Answer> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        // Requests still in flight finish within the client timeout.
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.answers()
    }
}

impl Drop for ClientLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[allow(clippy::too_many_arguments)]
async fn send(
    client: Client,
    ns: String,
    rollout: String,
    target: Target,
    rps: u32,
    pin_every: Option<u64>,
    answers: Arc<Mutex<Vec<Answer>>>,
    labels: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
) {
    let (http, base, host) = match &target {
        Target::Gateway { addr, host } => (
            reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap(),
            format!("http://{addr}"),
            Some(host.clone()),
        ),
        Target::Service => {
            let base = loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(b) = service_address(&client, &ns, &rollout).await {
                    break b;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let http =
                reqwest::Client::builder().timeout(Duration::from_secs(5)).pool_max_idle_per_host(0).build().unwrap();
            (http, base, None)
        }
    };
    let rows = golden_rows();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rps as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        n += 1;
        let row = rows[(n as usize) % rows.len()].clone();
        let id = format!("{ns}-c{n}");
        let pinned = pin_every.is_some_and(|k| n.is_multiple_of(k));
        let mut req = http
            .post(format!("{base}/v1/models/{rollout}:predict"))
            .header("x-request-id", &id)
            .json(&json!({"instances": [row.features]}));
        if let Some(h) = &host {
            req = req.header(reqwest::header::HOST, h);
        }
        if pinned {
            req = req.header(PIN_HEADER, PIN_VALUE);
        }
        let (answers, labels) = (answers.clone(), labels.clone());
        let start = now();
        tokio::spawn(async move {
            let answer = match req.send().await {
                Ok(r) if r.status().is_success() => {
                    let version = r.headers().get("x-model-version").and_then(|v| v.to_str().ok()).map(String::from);
                    let _ = r.bytes().await;
                    labels.lock().unwrap().push(json!({"id": id, "label": row.label}));
                    Answer { start, version, pinned, error: None }
                }
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    Answer { start, version: None, pinned, error: Some(format!("{id}: HTTP {status}: {body:.200}")) }
                }
                Err(e) => Answer { start, version: None, pinned, error: Some(format!("{id}: {e:?}")) },
            };
            answers.lock().unwrap().push(answer);
        });
    }
}

/// Posts the labels gathered (`{"id", "label"}`) every quarter second to every ready pod of
/// rollout `rollout` (its `<name>` Service's endpoints), counting them in `posted`.
pub async fn post_labels(
    client: Client,
    ns: String,
    rollout: String,
    labels: Arc<Mutex<Vec<Value>>>,
    posted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let mut pods: Vec<String> = Vec::new();
    let mut refreshed = tokio::time::Instant::now() - Duration::from_secs(10);
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if refreshed.elapsed() > Duration::from_secs(1) {
            pods = ready_endpoints(&client, &ns, &rollout).await;
            refreshed = tokio::time::Instant::now();
        }
        let batch: Vec<Value> = std::mem::take(&mut *labels.lock().unwrap());
        if batch.is_empty() {
            continue;
        }
        let body = json!({"labels": batch});
        let posts = pods.iter().map(|p| http.post(format!("http://{p}/v1/feedback")).json(&body).send());
        let _ = futures::future::join_all(posts).await;
        posted.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
}

/// The rollout's status over time, sampled every 100 ms: which stage, weight and mirror were in
/// force when. Windows for per-stage shares come from here.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: f64,
    pub phase: Option<Phase>,
    pub stage: Option<String>,
    pub weight: i32,
    pub mirror: i32,
}

pub struct StatusLog {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusLog {
    pub fn start(client: Client, ns: &str, name: &str) -> Self {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let api: Api<ModelRollout> = Api::namespaced(client, ns);
        let (s, st, name) = (samples.clone(), stop.clone(), name.to_string());
        let task = tokio::spawn(async move {
            while !st.load(Ordering::SeqCst) {
                if let Ok(mr) = api.get(&name).await
                    && let Some(status) = mr.status
                {
                    s.lock().unwrap().push(Sample {
                        at: now(),
                        phase: status.phase,
                        stage: status.stage_name,
                        weight: status.canary_weight,
                        mirror: status.mirror_percent,
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { samples, stop, task }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        let samples = self.samples.clone();
        let _ = self.task.await;
        samples.lock().unwrap().clone()
    }
}

/// A span of time in which the status said the same (stage, weight, mirror).
#[derive(Clone, Debug)]
pub struct Window {
    pub stage: Option<String>,
    pub phase: Option<Phase>,
    pub weight: i32,
    pub mirror: i32,
    /// First and last sample that said so.
    pub from: f64,
    pub to: f64,
}

/// The status log cut into runs of equal (stage, weight, mirror, phase).
pub fn windows(samples: &[Sample]) -> Vec<Window> {
    let mut out: Vec<Window> = Vec::new();
    for s in samples {
        match out.last_mut() {
            Some(w) if w.stage == s.stage && w.weight == s.weight && w.mirror == s.mirror && w.phase == s.phase => {
                w.to = s.at
            }
            _ => out.push(Window {
                stage: s.stage.clone(),
                phase: s.phase,
                weight: s.weight,
                mirror: s.mirror,
                from: s.at,
                to: s.at,
            }),
        }
    }
    out
}

/// What clients saw during one stage: the split in force (its longest window: a stage opens with a
/// moment of waiting for the candidate's pods, weight and mirror 0), measured from 1.5 s after the
/// status first said it (Envoy applies a route within about a second, and the route moves just
/// before the status) to 0.5 s before it ended.
#[derive(Clone, Debug)]
pub struct StageShare {
    pub stage: String,
    pub weight: i32,
    pub mirror: i32,
    pub from: f64,
    pub to: f64,
    /// Answers (unpinned) in the window, and how many of them the candidate gave.
    pub requests: u64,
    pub candidate: u64,
}

impl StageShare {
    pub fn share(&self) -> f64 {
        self.candidate as f64 / self.requests.max(1) as f64
    }
}

/// The per-stage shares of a rollout of `candidate`, from the status log and the answers.
pub fn stage_shares(samples: &[Sample], answers: &[Answer], candidate: &str) -> Vec<StageShare> {
    let mut in_force: Vec<Window> = Vec::new();
    for w in windows(samples).into_iter().filter(|w| w.phase == Some(Phase::Progressing) && w.stage.is_some()) {
        match in_force.last_mut() {
            Some(last) if last.stage == w.stage => {
                if w.to - w.from > last.to - last.from {
                    *last = w;
                }
            }
            _ => in_force.push(w),
        }
    }
    in_force
        .into_iter()
        .map(|w| {
            let (from, to) = (w.from + 1.5, w.to - 0.5);
            let by_version = versions_between(answers, from, to, false);
            StageShare {
                stage: w.stage.unwrap_or_default(),
                weight: w.weight,
                mirror: w.mirror,
                from,
                to,
                requests: by_version.values().sum(),
                candidate: by_version.get(candidate).copied().unwrap_or(0),
            }
        })
        .collect()
}

/// Answers by version among those whose request started in [from, to), pinned ones apart.
pub fn versions_between(answers: &[Answer], from: f64, to: f64, pinned: bool) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for a in answers.iter().filter(|a| a.start >= from && a.start < to && a.pinned == pinned) {
        if let Some(v) = &a.version {
            *out.entry(v.clone()).or_default() += 1;
        }
    }
    out
}

/// z for a two-sided 99.9% interval.
pub const Z_999: f64 = 3.2905;

/// The 99.9% normal-approximation interval of the share of `n` Bernoulli(p) draws.
pub fn binomial_interval(p: f64, n: u64) -> (f64, f64) {
    let half = Z_999 * (p * (1.0 - p) / n as f64).sqrt();
    (p - half, p + half)
}

/// A counter of a pod's own /metrics (summed over the series whose labels contain every `must`).
pub async fn pod_counter(addr: &str, family: &str, must: &[&str]) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}/metrics")).await.ok()?.text().await.ok()?;
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(family) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) || !must.iter().all(|m| rest.contains(m)) {
            continue;
        }
        sum += rest.rsplit(' ').next()?.parse::<f64>().ok()?;
    }
    Some(sum)
}
