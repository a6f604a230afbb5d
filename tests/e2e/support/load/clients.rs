//! Clients as users run them, on the real node: every request goes to one address (the Gateway's,
//! through Envoy, or the rollout's own Service, through kube-proxy) and the answer says which
//! version served it (`x-model-version`). Each answer is kept with the time its request started, so
//! a test measures the split where clients see it, stage by stage, and nothing here reads a route.
//!
//! Labels: the evidence service joins them to predictions on `x-request-id` (the Gateway keeps the
//! client's, see tests/gateway/gateway.sh). The client never knows which pod answered, nor needs
//! to: every quarter second it posts the labels gathered since, once, to the chart's evidence
//! service ([`super::post_labels`]), or keeps them for the test to post when it chooses.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};
use serde_json::json;

use super::{Running, golden_rows, now, post_labels, ticker};
use crate::wait_for;

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
    /// Labels taken by the evidence service.
    pub labels_posted: Arc<AtomicU64>,
    /// Labels of answered requests not posted yet (all of them, when kept for the test).
    labels: Arc<Mutex<Vec<(String, bool)>>>,
    running: Running,
}

impl ClientLoad {
    /// Sends `rps` requests a second to `target` for rollout `rollout` in `ns`; with `pin_every`
    /// = Some(n), every n-th request carries [`PIN_HEADER`].
    pub fn start(client: Client, ns: &str, rollout: &str, target: Target, rps: u32, pin_every: Option<u64>) -> Self {
        Self::start_with(client, ns, rollout, target, rps, pin_every, true)
    }

    /// [`ClientLoad::start`], its labels kept (see [`ClientLoad::take_labels`]) unless `post`.
    pub fn start_with(
        client: Client,
        ns: &str,
        rollout: &str,
        target: Target,
        rps: u32,
        pin_every: Option<u64>,
        post: bool,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
        let labels: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let labels_posted = Arc::new(AtomicU64::new(0));
        let mut running = Running::default();
        running.spawn(send(
            client.clone(),
            ns.to_string(),
            rollout.to_string(),
            target,
            rps,
            pin_every,
            answers.clone(),
            labels.clone(),
            running.flag(),
        ));
        if post {
            running.spawn(post_labels(
                ns.to_string(),
                rollout.to_string(),
                labels.clone(),
                labels_posted.clone(),
                running.flag(),
            ));
        }
        Self { answers, labels_posted, labels, running }
    }

    /// The labels of the requests answered since the last call (request id, label).
    pub fn take_labels(&self) -> Vec<(String, bool)> {
        std::mem::take(&mut *self.labels.lock().unwrap())
    }

    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    pub fn sent(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    /// Waits (bounded) for requests in flight to finish, then stops.
    pub async fn shutdown(mut self) -> Vec<Answer> {
        self.running.stop(Duration::from_secs(1)).await;
        self.answers()
    }
}

/// `http://<ClusterIP>:<port>` of Service `name`, once it answers `/readyz` there (kube-proxy
/// rejects connections to a Service until it has programmed a ready endpoint for it).
pub async fn service_address(client: &Client, ns: &str, name: &str) -> Option<String> {
    let spec = Api::<Service>::namespaced(client.clone(), ns).get_opt(name).await.ok()??.spec?;
    let ip = spec.cluster_ip.filter(|ip| ip != "None")?;
    let base = format!("http://{ip}:{}", spec.ports?.first()?.port);
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().ok()?;
    probe.get(format!("{base}/readyz")).send().await.ok()?.status().is_success().then_some(base)
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
    labels: Arc<Mutex<Vec<(String, bool)>>>,
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
    let mut tick = ticker(rps);
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        n += 1;
        let row = rows[golden_walk(n, rows.len())].clone();
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
                    labels.lock().unwrap().push((id.clone(), row.label != 0));
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

/// The row of the n-th request: the golden-ratio walk over the rows, which stays spread evenly over
/// them along any arithmetic subsequence of requests. Walking them in order (n mod rows) aliased
/// with Envoy Gateway's split, which weights backends by smooth weighted round robin: at 5% the
/// candidate got every 20th request, always the same 10 of the 200 rows (the demo at 1f456c6 rolled
/// back a better model on its capture rate: 0 of 10 positives, the same missed rows each time).
pub fn golden_walk(n: u64, len: usize) -> usize {
    const PHI: f64 = 0.618_033_988_749_894_9;
    (((n as f64 * PHI).fract() * len as f64) as usize).min(len - 1)
}

/// Waits until the clients' latest answers all come from `version` (the route is programmed).
pub async fn wait_answered_by(load: &ClientLoad, version: &str) {
    wait_for(&format!("clients answered by {version} through the Gateway"), Duration::from_secs(90), || async {
        let a = load.answers();
        let last: Vec<_> = a.iter().rev().take(50).collect();
        (last.len() == 50 && last.iter().all(|a| a.version.as_deref() == Some(version))).then_some(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::golden_walk;

    /// Every 20th request (a 5% weighted round robin) still sees the rows, nearly all of them.
    #[test]
    fn every_twentieth_request_still_walks_all_the_rows() {
        let rows = 200;
        let seen: std::collections::BTreeSet<usize> = (0..2_000u64).map(|k| golden_walk(20 * k + 7, rows)).collect();
        assert!(seen.len() >= 190, "{} distinct rows of {rows}", seen.len());
        let in_order: std::collections::BTreeSet<usize> = (0..2_000u64).map(|k| (20 * k + 7) as usize % rows).collect();
        assert_eq!(in_order.len(), 10, "the old walk, for contrast: the same 10 rows");
    }
}
