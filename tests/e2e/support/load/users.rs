//! Sticky A/B users, as the search team's experiment sees them: each user has its own random hex
//! key in `x-user-id` and sends `POST /v1/rank:score` (ten candidate items, each with its `item_id`, in the published
//! shape: examples/ranking-scorer.yaml) to the Gateway; the
//! answer's `x-model-version` says which arm served it. A user clicks the item shown first with
//! the probability the rankers' training data gives it (scripts/make_models.py, `ranker_data`),
//! and the click (1) or its absence (0) goes back as label feedback on `<request_id>/<item index>`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::clients::{gateway, gateway_host};
use super::{Running, now, post_labels, ticker};
use crate::env::Env;
use crate::wait_for;

pub const RPS: u32 = 120;

pub const USERS: usize = 3_000;

pub const CANDIDATES: usize = 10;

pub const KEY_HEADER: &str = "x-user-id";

pub const SHARE_PERCENT: i32 = 50;

/// splitmix64: the test's own reproducible randomness.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// One candidate item, drawn as `ranker_data` draws them.
#[derive(Clone, Copy, Debug)]
pub struct Item {
    pub affinity: f64,
    pub popularity: f64,
    pub price: f64,
    pub recency: f64,
}

impl Item {
    pub fn draw(r: &mut Rng) -> Self {
        // Beta(2, 3) is the second smallest of four uniforms.
        let mut u = [r.unit(), r.unit(), r.unit(), r.unit()];
        u.sort_by(f64::total_cmp);
        Item {
            affinity: r.unit(),
            popularity: u[1],
            price: (3.5 + r.normal()).exp().clamp(0.0, 10_000.0),
            recency: (-200.0 * (1.0 - r.unit()).ln()).clamp(0.0, 3650.0),
        }
    }

    /// The chance a user clicks this item when it is shown first: the logit the data was drawn by.
    pub fn click_probability(&self) -> f64 {
        let logit =
            -1.0 + 3.0 * self.affinity + 1.5 * self.popularity - 0.3 * self.price.ln_1p() - 0.002 * self.recency;
        1.0 / (1.0 + (-logit).exp())
    }

    pub fn json(&self) -> Value {
        json!({"user_affinity": self.affinity, "item_popularity": self.popularity, "price": self.price, "recency_days": self.recency})
    }
}

/// Random 16-hex-digit user keys.
pub fn user_keys(n: usize, seed: u64) -> Vec<String> {
    let mut r = Rng(seed);
    let keys: BTreeSet<String> = (0..n).map(|_| format!("{:016x}", r.next_u64())).collect();
    assert_eq!(keys.len(), n);
    keys.into_iter().collect()
}

/// One ranking request as its user saw it.
#[derive(Clone, Debug)]
pub struct Shown {
    pub start: f64,
    pub user: usize,
    pub version: Option<String>,
    pub clicked: bool,
    pub error: Option<String>,
}

/// Users sending ranking requests to the Gateway, a random user each time, and their clicks.
pub struct Users {
    pub keys: Arc<Vec<String>>,
    shown: Arc<Mutex<Vec<Shown>>>,
    running: Running,
}

impl Users {
    /// Users of rollout `name` in `env`'s namespace, through the shared Gateway; `seed` draws their keys,
    /// items and clicks.
    pub fn start(env: &Env, seed: u64) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (addr, ..) = gateway();
        let ns = env.ns.name.clone();
        let keys = Arc::new(user_keys(USERS, seed));
        let shown: Arc<Mutex<Vec<Shown>>> = Arc::default();
        let labels: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let mut running = Running::default();
        {
            let (keys, shown, labels, stop, ns) =
                (keys.clone(), shown.clone(), labels.clone(), running.flag(), ns.clone());
            running.spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                let mut r = Rng(seed ^ 0x5eed);
                let mut tick = ticker(RPS);
                let mut n: u64 = 0;
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    n += 1;
                    let user = (r.next_u64() % keys.len() as u64) as usize;
                    let items: Vec<Item> = (0..CANDIDATES).map(|_| Item::draw(&mut r)).collect();
                    let click_draw = r.unit();
                    let rid = format!("{ns}-r{n}");
                    // The API as the search team published it: each candidate names its item,
                    // the request its id (echoed in the answer).
                    let candidates: Vec<Value> = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            let mut c = item.json();
                            c["item_id"] = json!(format!("item-{i}"));
                            c
                        })
                        .collect();
                    let req = http
                        .post(format!("http://{addr}/v1/rank:score"))
                        .header(reqwest::header::HOST, gateway_host(&ns))
                        .header(KEY_HEADER, &keys[user])
                        .json(&json!({"request_id": rid, "candidates": candidates}));
                    let (shown, labels) = (shown.clone(), labels.clone());
                    let start = now();
                    tokio::spawn(async move {
                        let one = match req.send().await {
                            Ok(resp) if resp.status().is_success() => {
                                let version = resp
                                    .headers()
                                    .get("x-model-version")
                                    .and_then(|v| v.to_str().ok())
                                    .map(String::from);
                                let body: Value = resp.json().await.unwrap_or_default();
                                let top = body["results"][0]["item_id"]
                                    .as_str()
                                    .and_then(|id| id.strip_prefix("item-"))
                                    .and_then(|i| i.parse::<usize>().ok());
                                let answered = body["request_id"] == rid.as_str()
                                    && body["latency_ms"].is_number()
                                    && body["served_model_version"].as_str() == version.as_deref()
                                    && body["results"].as_array().is_some_and(|r| r.len() == CANDIDATES);
                                match top.filter(|_| answered) {
                                    Some(top) => {
                                        let clicked = click_draw < items[top].click_probability();
                                        labels.lock().unwrap().push((format!("{rid}/{top}"), clicked));
                                        Shown { start, user, version, clicked, error: None }
                                    }
                                    None => Shown {
                                        start,
                                        user,
                                        version,
                                        clicked: false,
                                        error: Some(format!("{rid}: not the published answer: {body}")),
                                    },
                                }
                            }
                            Ok(resp) => {
                                let status = resp.status();
                                let text = resp.text().await.unwrap_or_default();
                                Shown {
                                    start,
                                    user,
                                    version: None,
                                    clicked: false,
                                    error: Some(format!("{rid}: HTTP {status}: {text:.200}")),
                                }
                            }
                            Err(e) => Shown {
                                start,
                                user,
                                version: None,
                                clicked: false,
                                error: Some(format!("{rid}: {e:?}")),
                            },
                        };
                        shown.lock().unwrap().push(one);
                    });
                }
            })
        };
        running.spawn(post_labels(ns, env.name.clone(), labels, Arc::new(AtomicU64::new(0)), running.flag()));
        Self { keys, shown, running }
    }

    pub fn shown(&self) -> Vec<Shown> {
        self.shown.lock().unwrap().clone()
    }

    pub async fn wait_answered_by(&self, version: &str) {
        wait_for(&format!("users answered by {version} through the Gateway"), Duration::from_secs(90), || async {
            let s = self.shown();
            let last: Vec<_> = s.iter().rev().take(50).collect();
            (last.len() == 50 && last.iter().all(|a| a.version.as_deref() == Some(version))).then_some(())
        })
        .await;
    }

    pub async fn shutdown(mut self) -> Vec<Shown> {
        self.running.stop(Duration::from_secs(1)).await;
        self.shown()
    }
}
