//! A/B experiments (issue 24) through Envoy Gateway on the real node, as the search team runs one:
//! examples/ranking-scorer.yaml, applied with this machine's durations and limits. Users, each with
//! its own random hex key in `x-user-id`, send `POST /v1/rank:score` (ten candidate items) to the
//! Gateway; each answer's `x-model-version` says which arm served it. A user clicks the item shown
//! first with the probability the rankers' training data gives it (scripts/make_models.py,
//! `ranker_data`), and the click (1) or its absence (0) goes back as label feedback on
//! `<x-request-id>/<item>`: the click-through the guardrail and the reward read.
//!
//! The arms: `ranker-popularity` (only an item's popularity) and `ranker-v1` (all four features).
//! Personalised ranking gets more clicks, so
//! - with popularity as stable and ranker-v1 as the candidate, the candidate wins the reward and is
//!   promoted;
//! - the other way round, the click-through guardrail fails and everyone goes back to stable.
//!
//! Tolerances: the share of users on the candidate is checked against the share of the 256 key
//! buckets the stage names, with the 99.9% binomial interval over the users seen; every user's arm
//! must be exactly the one its key's last two hex digits select (`KeyShare::selects`), and no user
//! may see both arms while the experiment runs (its window starts 1.5 s after the experiment's rule
//! is in the route and ends 0.5 s before the status left the stage, as in gateway.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelrollout::api::{Arm, KeyShare, ModelRolloutStatus, Outcome, Phase, Verdict};
use modelrollout_e2e::clients::*;
use modelrollout_e2e::node::*;
use modelrollout_e2e::scenario::gitops_apply;
use modelrollout_e2e::*;
use serde_json::{Value, json};

const NAME: &str = "ranker";
const RPS: u32 = 120;
const USERS: usize = 3_000;
const CANDIDATES: usize = 10;
const KEY_HEADER: &str = "x-user-id";
const SHARE_PERCENT: i32 = 50;

/// The platform team's HTTPRoute on the shared Gateway: every path to the stable Service.
fn user_route(ns: &str) -> Value {
    let (_, gw_ns, gw_name) = gateway();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": NAME, "namespace": ns},
        "spec": {
            "parentRefs": [{"name": gw_name, "namespace": gw_ns}],
            "hostnames": [gateway_host(ns)],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                       "backendRefs": [{"name": format!("{NAME}-stable"), "port": 8080, "weight": 100}]}]
        }
    })
}

fn route_rules(ns: &str) -> Vec<Value> {
    let out = kubectl_ok(&["get", "httproute", NAME, "-n", ns, "-o", "json"], None);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["spec"]["rules"].as_array().unwrap().clone()
}

/// examples/ranking-scorer.yaml as shipped, but for: the version and model file, one replica on the
/// real node, this suite's durations (5 s analyses, stages of seconds), and latency and sample
/// floors for two shared cores. The guardrail, the reward and the match are the example's own.
fn example(version: &str, file: &str, experiment_secs: u32) -> Value {
    let text = std::fs::read_to_string(root().join("examples/ranking-scorer.yaml")).unwrap();
    let mut v: Value = serde_yaml::from_str(&text).unwrap();
    let (selector, tolerations) = on_real_node();
    let spec = &mut v["spec"];
    spec["model"]["version"] = json!(version);
    spec["model"]["artifact"] = from_image(file);
    spec["workload"] =
        json!({"replicas": 1, "progressDeadline": "120s", "nodeSelector": selector, "tolerations": tolerations});
    spec["rollback"] = json!({"scaleDownDelay": "2s", "previousStableScaleDownDelay": "3s"});
    let stages = spec["stages"].as_array_mut().unwrap();
    assert_eq!(
        stages[0]["match"]["keyShare"],
        json!({"header": KEY_HEADER, "percent": SHARE_PERCENT}),
        "the example's match"
    );
    stages[0]["minDuration"] = json!(format!("{experiment_secs}s"));
    stages[0]["maxDuration"] = json!("240s");
    stages[1]["minDuration"] = json!("6s");
    let analysis = &mut spec["analysis"];
    assert_eq!(analysis["failureLimit"], 1, "one guardrail breach ends the example's experiment");
    // 5 s: the controller's query window is the interval but at least 5 s, and the reward adds
    // each analysis's window to the experiment's evidence, so windows must not overlap.
    analysis["interval"] = json!("5s");
    analysis["inconclusiveLimit"] = json!(10);
    let gates = &mut analysis["gates"];
    gates["latencyP95"] = json!({"max": 1000, "minSamples": 20});
    gates["errorRate"] = json!({"max": 0.01, "minSamples": 20});
    let guard = &mut gates["custom"][0];
    assert_eq!((&guard["name"], &guard["maxBelowStable"]), (&json!("clickThrough"), &json!(0.05)));
    guard["minSamples"] = json!(100);
    assert_eq!(analysis["reward"]["direction"], "Higher");
    v
}

/// splitmix64: the test's own reproducible randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// One candidate item, drawn as `ranker_data` draws them.
#[derive(Clone, Copy, Debug)]
struct Item {
    affinity: f64,
    popularity: f64,
    price: f64,
    recency: f64,
}

impl Item {
    fn draw(r: &mut Rng) -> Self {
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
    fn click_probability(&self) -> f64 {
        let logit =
            -1.0 + 3.0 * self.affinity + 1.5 * self.popularity - 0.3 * self.price.ln_1p() - 0.002 * self.recency;
        1.0 / (1.0 + (-logit).exp())
    }

    fn json(&self) -> Value {
        json!({"user_affinity": self.affinity, "item_popularity": self.popularity, "price": self.price, "recency_days": self.recency})
    }
}

/// Random 16-hex-digit user keys.
fn user_keys(n: usize, seed: u64) -> Vec<String> {
    let mut r = Rng(seed);
    let keys: BTreeSet<String> = (0..n).map(|_| format!("{:016x}", r.next())).collect();
    assert_eq!(keys.len(), n);
    keys.into_iter().collect()
}

/// One ranking request as its user saw it.
#[derive(Clone, Debug)]
struct Shown {
    start: f64,
    user: usize,
    version: Option<String>,
    clicked: bool,
    error: Option<String>,
}

/// Users sending ranking requests to the Gateway, a random user each time, and their clicks.
struct Users {
    keys: Arc<Vec<String>>,
    shown: Arc<Mutex<Vec<Shown>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Users {
    fn start(env: &RolloutEnv, seed: u64) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (addr, ..) = gateway();
        let ns = env.ns.name.clone();
        let keys = Arc::new(user_keys(USERS, seed));
        let shown: Arc<Mutex<Vec<Shown>>> = Arc::default();
        let labels: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (keys, shown, labels, stop, ns) =
                (keys.clone(), shown.clone(), labels.clone(), stop.clone(), ns.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                let mut r = Rng(seed ^ 0x5eed);
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / RPS as f64));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut n: u64 = 0;
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    n += 1;
                    let user = (r.next() % keys.len() as u64) as usize;
                    let items: Vec<Item> = (0..CANDIDATES).map(|_| Item::draw(&mut r)).collect();
                    let click_draw = r.unit();
                    let rid = format!("{ns}-r{n}");
                    let req = http
                        .post(format!("http://{addr}/v1/rank:score"))
                        .header(reqwest::header::HOST, gateway_host(&ns))
                        .header(KEY_HEADER, &keys[user])
                        .header("x-request-id", &rid)
                        .json(&json!({"candidates": items.iter().map(Item::json).collect::<Vec<_>>()}));
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
                                match body["order"][0].as_u64() {
                                    Some(top) => {
                                        let clicked = click_draw < items[top as usize].click_probability();
                                        labels
                                            .lock()
                                            .unwrap()
                                            .push(json!({"id": format!("{rid}/{top}"), "label": u8::from(clicked)}));
                                        Shown { start, user, version, clicked, error: None }
                                    }
                                    None => Shown {
                                        start,
                                        user,
                                        version,
                                        clicked: false,
                                        error: Some(format!("{rid}: no order in {body}")),
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
        let feedback = tokio::spawn(post_labels(
            env.client.clone(),
            ns,
            NAME.to_string(),
            labels,
            Arc::new(AtomicU64::new(0)),
            stop.clone(),
        ));
        Self { keys, shown, stop, tasks: vec![sender, feedback] }
    }

    fn shown(&self) -> Vec<Shown> {
        self.shown.lock().unwrap().clone()
    }

    async fn wait_answered_by(&self, version: &str) {
        wait_for(&format!("users answered by {version} through the Gateway"), Duration::from_secs(90), || async {
            let s = self.shown();
            let last: Vec<_> = s.iter().rev().take(50).collect();
            (last.len() == 50 && last.iter().all(|a| a.version.as_deref() == Some(version))).then_some(())
        })
        .await;
    }

    async fn shutdown(mut self) -> Vec<Shown> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.shown()
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The experiment stage's window as clients saw it: from 1.5 s after the experiment's rule was
/// seen in the route (`rule_at`; Envoy applies a route within about a second; the stage begins by
/// waiting for the candidate's pods, with no rule yet) to 0.5 s before the status left the stage.
fn experiment_window(samples: &[Sample], rule_at: f64) -> (f64, f64) {
    let in_stage: Vec<&Sample> =
        samples.iter().filter(|s| s.phase == Some(Phase::Progressing) && s.stage.as_deref() == Some("ab")).collect();
    let (first, last) = (in_stage.first().expect("the status said stage ab"), in_stage.last().unwrap());
    (first.at.max(rule_at) + 1.5, last.at - 0.5)
}

/// Each user's arms in [from, to): user -> versions that answered it, and how many times.
fn arms_by_user(shown: &[Shown], from: f64, to: f64) -> BTreeMap<usize, BTreeMap<String, u64>> {
    let mut out: BTreeMap<usize, BTreeMap<String, u64>> = BTreeMap::new();
    for s in shown.iter().filter(|s| s.start >= from && s.start < to) {
        if let Some(v) = &s.version {
            *out.entry(s.user).or_default().entry(v.clone()).or_default() += 1;
        }
    }
    out
}

/// Click-through per version among the answers in [from, to).
fn click_through(shown: &[Shown], from: f64, to: f64) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for s in shown.iter().filter(|s| s.start >= from && s.start < to) {
        if let Some(v) = &s.version {
            let e = out.entry(v.clone()).or_default();
            e.0 += u64::from(s.clicked);
            e.1 += 1;
        }
    }
    out
}

/// Failed requests once the route was first programmed (the first answer): before it, Envoy
/// answers 503 for a hostname it does not route yet, which is setup, not the experiment.
fn failures(shown: &[Shown]) -> Vec<String> {
    let first = shown.iter().filter(|s| s.version.is_some()).map(|s| s.start).fold(f64::INFINITY, f64::min);
    shown.iter().filter(|s| s.start > first).filter_map(|s| s.error.clone()).take(10).collect()
}

/// Stickiness and share, from what users saw during the experiment: every user on exactly the arm
/// its key selects, none on both, and the share of users within its binomial tolerance.
fn check_users(shown: &[Shown], keys: &[String], from: f64, to: f64) {
    let share = KeyShare { header: KEY_HEADER.into(), percent: SHARE_PERCENT };
    let by_user = arms_by_user(shown, from, to);
    let switched: Vec<_> = by_user.iter().filter(|(_, arms)| arms.len() > 1).take(5).collect();
    let requests: u64 = by_user.values().flat_map(|a| a.values()).sum();
    let repeat_users = by_user.values().filter(|a| a.values().sum::<u64>() > 1).count();
    println!(
        "experiment window {:.1} s: {requests} requests from {} users ({repeat_users} of them more than once)",
        to - from,
        by_user.len()
    );
    assert!(by_user.len() >= 1_500, "too few users seen to judge the share: {}", by_user.len());
    assert!(repeat_users >= 500, "too few users came back to judge stickiness: {repeat_users}");
    assert!(switched.is_empty(), "users switched arms during the experiment: {switched:?}");
    let wrong: Vec<_> = by_user
        .iter()
        .filter(|(u, arms)| arms.contains_key("v2") != share.selects(&keys[**u]))
        .take(5)
        .map(|(u, arms)| (&keys[*u], arms))
        .collect();
    assert!(wrong.is_empty(), "users on the arm their key does not select: {wrong:?}");
    let on_candidate = by_user.values().filter(|a| a.contains_key("v2")).count();
    let p = share.share_percent() / 100.0;
    let (lo, hi) = binomial_interval(p, by_user.len() as u64);
    let measured = on_candidate as f64 / by_user.len() as f64;
    println!(
        "users on the candidate: {on_candidate}/{} = {measured:.4} (buckets say {p}, 99.9% [{lo:.4}, {hi:.4}])",
        by_user.len()
    );
    assert!((lo..=hi).contains(&measured), "share of users {measured:.4} outside [{lo:.4}, {hi:.4}]");
}

async fn setup(prefix: &str, stable_file: &str, seed: u64) -> (RolloutEnv, Users) {
    let env = RolloutEnv::setup_named(prefix, NAME, |ns| Some(user_route(ns)), example("v1", stable_file, 30)).await;
    let users = Users::start(&env, seed);
    users.wait_answered_by("v1").await;
    (env, users)
}

fn experiment(st: &ModelRolloutStatus) -> &modelrollout::api::ExperimentStatus {
    st.experiment.as_ref().expect("status.experiment")
}

/// Popularity as stable, personalised ranking as the candidate: users stay on their arm, the share
/// holds, the candidate wins the click-through reward with its interval, and is promoted with the
/// result in its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn an_ab_test_keeps_users_on_their_arm_and_promotes_the_winner() {
    let (env, users) = setup("ab-win", "ranker-popularity.onnx", 1).await;
    let ns = env.ns.name.clone();
    let log = StatusLog::start(env.client.clone(), &ns, NAME);
    gitops_apply(&ns, &example("v2", "ranker-v1.onnx", 40));

    let mr =
        env.wait(Duration::from_secs(180), "the experiment stage", |s| s.stage_name.as_deref() == Some("ab")).await;
    let st = mr.status.unwrap();
    let e = experiment(&st);
    assert_eq!(e.key_share_percent, Some(50.0));
    assert_eq!(e.guardrails, ["errorRate", "latencyP95", "clickThrough"].map(String::from).to_vec(), "{e:?}");
    // The experiment's rule joins the route once the candidate's pods are ready.
    let rules = wait_for("the experiment's rule in the route", Duration::from_secs(120), || async {
        let rules = route_rules(&ns);
        (rules.len() == 2).then_some(rules)
    })
    .await;
    let rule_at = now();
    assert_eq!(rules[1]["backendRefs"][0]["name"], "ranker-canary", "{rules:#?}");
    assert_eq!(rules[1]["matches"][0]["headers"][0]["name"], KEY_HEADER, "{rules:#?}");
    // `kubectl modelrollout status` shows the arms, the key rule, the guardrails and the reward.
    // kubectl finds the plugin on PATH, as on a user's machine.
    let plugin_dir = modelrollout_e2e::harness::bin("kubectl-modelrollout").parent().unwrap().to_path_buf();
    let plugin = tokio::process::Command::new("kubectl")
        .args(["modelrollout", "status", NAME, "-n", &ns])
        .env("PATH", format!("{}:{}", plugin_dir.display(), std::env::var("PATH").unwrap()))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&plugin.stdout);
    println!("{text}");
    assert!(plugin.status.success(), "{}", String::from_utf8_lossy(&plugin.stderr));
    for needle in ["x-user-id", "128/256", "clickThrough", "Guardrails"] {
        assert!(text.contains(needle), "`kubectl modelrollout status` lacks `{needle}`:\n{text}");
    }

    let mr = env
        .wait(Duration::from_secs(300), "the experiment to end", |s| {
            s.stage_name.as_deref() != Some("ab") || s.phase != Some(Phase::Progressing)
        })
        .await;
    let st = mr.status.unwrap();
    let reward = experiment(&st).reward.clone().expect("a reward result");
    println!("reward: {}", reward.message);
    assert_eq!(reward.winner, Some(Arm::Candidate), "{reward:?}\nstatus: {st:?}");
    let d = reward.evidence.difference_interval.expect("the difference's interval");
    assert!(d.low > 0.01 && reward.effect >= d.low && reward.effect <= d.high, "{reward:?}");
    assert!(reward.evidence.candidate.trials >= 100 && reward.evidence.stable.trials >= 100, "{reward:?}");

    let mr = env
        .wait(Duration::from_secs(120), "v2 promoted", |s| {
            s.phase == Some(Phase::Promoted) && s.stable_version.as_deref() == Some("v2")
        })
        .await;
    users.wait_answered_by("v2").await;
    let st = mr.status.unwrap();
    let h = &st.history[0];
    assert_eq!((h.version.as_str(), h.outcome), ("v2", Outcome::Promoted), "{:?}", st.history);
    assert_eq!(h.experiment.as_ref().and_then(|x| x.winner), Some(Arm::Candidate), "{h:?}");
    assert_eq!(route_rules(&ns).len(), 1, "the experiment's rule is gone once it ended");

    let samples = log.stop().await;
    let keys = users.keys.clone();
    let shown = users.shutdown().await;
    let (from, to) = experiment_window(&samples, rule_at);
    check_users(&shown, &keys, from, to);
    let ctr = click_through(&shown, from, to);
    println!("click-through as users clicked, per arm: {ctr:?}");
    let f = failures(&shown);
    assert!(f.len() < 5, "requests failed through the Gateway: {f:?}");
    env.ns.delete().await;
}

/// Personalised ranking as stable, popularity as the candidate, no reward: the click-through
/// guardrail fails at the first analysis with enough feedback, and that same decision sends every
/// user back to stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster with its real node and Gateway: bash tests/run.sh"]
async fn a_guardrail_breach_sends_every_user_to_stable_within_one_analysis() {
    let (env, users) = setup("ab-guard", "ranker-v1.onnx", 2).await;
    let ns = env.ns.name.clone();
    let log = StatusLog::start(env.client.clone(), &ns, NAME);
    let mut m = example("v2", "ranker-popularity.onnx", 40);
    m["spec"]["analysis"].as_object_mut().unwrap().remove("reward");
    gitops_apply(&ns, &m);
    env.wait(Duration::from_secs(180), "the experiment stage", |s| s.stage_name.as_deref() == Some("ab")).await;
    let mr =
        env.wait(Duration::from_secs(120), "the guardrail to stop it", |s| s.phase == Some(Phase::RolledBack)).await;
    let st = mr.status.unwrap();
    let last = st.last_analysis.clone().expect("the analysis that stopped it");
    let guard = last.gates.iter().find(|g| g.name == "clickThrough").expect("the guardrail measured");
    println!("guardrail: {guard:?}");
    assert_eq!(guard.verdict, Verdict::Fail, "{last:?}");
    assert!(st.history[0].reason.contains("clickThrough"), "{:?}", st.history[0]);
    assert!(st.experiment.is_some(), "the experiment's record stays in status");
    // The rollback as the status first said it (the log polls every 100 ms, so it may see it a
    // moment after the wait above did), and the analysis that decided it: one decision.
    let rolled_back = wait_for("the status log to see the rollback", Duration::from_secs(10), || async {
        log.samples().iter().find(|s| s.phase == Some(Phase::RolledBack)).map(|s| s.at)
    })
    .await;
    let samples = log.stop().await;
    let analysed = last.time.0.as_millisecond() as f64 / 1000.0;
    assert!((rolled_back - analysed).abs() < 2.0, "analysis at {analysed}, rollback seen at {rolled_back}");
    // Five seconds of answers after the rollback, then stop.
    wait_for("answers 1.5 to 6.5 s after the rollback", Duration::from_secs(30), || async {
        (now() > rolled_back + 6.5).then_some(())
    })
    .await;
    let shown = users.shutdown().await;
    let (from, _) = experiment_window(&samples, 0.0);
    // Before the breach, half the users were on the candidate; from 1.5 s after the decision every
    // one of them is on stable.
    let before = arms_by_user(&shown, from, analysed);
    let on_candidate = before.values().filter(|a| a.contains_key("v2")).count();
    assert!(on_candidate > 100, "users on the candidate before the breach: {on_candidate}");
    let after: Vec<&Shown> = shown.iter().filter(|s| s.start >= rolled_back + 1.5).collect();
    assert!(after.len() > 200, "{} answers after the rollback", after.len());
    let late: Vec<_> = after.iter().filter(|s| s.version.as_deref() != Some("v1")).take(5).collect();
    assert!(late.is_empty(), "answers not from stable after the rollback: {late:?}");
    let f = failures(&shown);
    assert!(f.len() < 5, "requests failed through the Gateway: {f:?}");
    println!(
        "guardrail breach: decided at {analysed:.1}, status {:.2} s later; every user on stable from 1.5 s after",
        rolled_back - analysed
    );
    assert_eq!(route_rules(&ns).len(), 1, "the experiment's rule is gone");
    env.ns.delete().await;
}
