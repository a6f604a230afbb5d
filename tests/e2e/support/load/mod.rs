//! Load as the suites send it, one file per style, all started and stopped the same way
//! ([`Running`]): [`kwok`] runs each version's sidecar as a local process for kwok's pods and
//! splits requests as the route says; [`clients`] sends through the Gateway or a Service as users
//! do and keeps every answer; [`users`] are sticky A/B users with their clicks; [`comments`] are a
//! moderation API's clients. The golden set's
//! rows are the requests; labels go back as feedback.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::Value;

use crate::root;

pub mod clients;
pub mod comments;
pub mod kwok;
pub mod users;

/// The tasks of one load, running until stopped: the one start and stop every style shares.
/// Dropping it stops them too.
#[derive(Default)]
pub struct Running {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The flag the tasks poll: set once the load stops.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Stops the tasks and waits for them, then `drain` more for requests still in flight (they
    /// finish within the clients' timeout).
    pub async fn stop(&mut self, drain: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        tokio::time::sleep(drain).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A ticker at `rps` requests a second that skips the ticks a slow machine missed (open loop: no
/// burst to catch up).
pub fn ticker(rps: u32) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rps as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

/// One labelled request for the load generators.
#[derive(Clone)]
pub struct GoldenRow {
    pub features: Value,
    pub label: i64,
    /// What fraud-v1 scores it (the golden set's reference).
    pub probability: f64,
}

/// The fraud golden set's rows (models/fraud-v1.golden.json), the requests the load generators send.
pub fn golden_rows() -> Vec<GoldenRow> {
    let text = std::fs::read_to_string(root().join("models/fraud-v1.golden.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| GoldenRow {
            features: r["features"].clone(),
            label: r["label"].as_i64().unwrap(),
            probability: r["probability"].as_f64().unwrap(),
        })
        .collect()
}

/// Seconds since the epoch, as a float: the clock the controller's decision timestamps use.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
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

/// Posts the labels gathered (request id, label) every quarter second, once, to the chart's
/// evidence service for `ns` ([`crate::ChartEvidence::of`]) for rollout `rollout`, as a label
/// poster of `ns` (the real node's path: whoever has labels posts them to the one service, never
/// to pods). Counts what was taken in `posted`.
pub async fn post_labels(
    ns: String,
    rollout: String,
    labels: Arc<Mutex<Vec<(String, bool)>>>,
    posted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let evidence = crate::ChartEvidence::of(&ns).await;
    label_poster(evidence.base, evidence.labeller, ns, rollout, labels, posted, stop).await
}

/// Posts the labels gathered every quarter second, once, to the evidence service at `base` with a
/// label poster's `token`. A batch the service did not take (it was restarting) is posted again;
/// the service counts a label once however often it comes.
pub async fn label_poster(
    base: String,
    token: String,
    ns: String,
    rollout: String,
    labels: Arc<Mutex<Vec<(String, bool)>>>,
    posted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut pending: Vec<(String, bool)> = Vec::new();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if !stopping {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        pending.extend(std::mem::take(&mut *labels.lock().unwrap()));
        // At most the service's batch limit a request: a backlog (the service was restarting or
        // slow to answer) goes out in as many batches as it takes, oldest first.
        while !pending.is_empty() {
            let n = pending.len().min(modelrollout_contract::evidence::MAX_BATCH);
            match crate::evidence::post_labels_at(&base, &ns, &rollout, Some(&token), &pending[..n]).await {
                Ok((200, _)) => {
                    posted.fetch_add(n as u64, Ordering::Relaxed);
                    pending.drain(..n);
                }
                Ok((code, v)) if !matches!(code, 429 | 502 | 503) => {
                    panic!("the evidence service refused {n} labels: {code} {v}")
                }
                _ => break,
            }
        }
        if stopping {
            return;
        }
    }
}
