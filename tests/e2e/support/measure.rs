//! What the tests measure where clients and operators see it: the rollout's status over time, the
//! share each version got per stage, intervals for shares, counters read from pods and the
//! controller, an A/B experiment's arms and clicks, and the golden set's rates.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kube::{Api, Client};
use modelrollout::api::{KeyShare, ModelRollout, ModelRolloutStatus, Phase};
use serde_json::Value;

use crate::load::clients::Answer;
use crate::load::users::{KEY_HEADER, SHARE_PERCENT, Shown};
use crate::*;

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

/// A value of the controller pod's own /metrics (the chart's metrics port).
pub async fn controller_metric(env: &crate::env::Env, family: &str) -> f64 {
    let pods = running_pods(&env.ns.name, "app.kubernetes.io/component=controller").await;
    let ip = pods[0].status.as_ref().unwrap().pod_ip.clone().unwrap();
    pod_counter(&format!("{ip}:8080"), family, &[]).await.unwrap_or_else(|| panic!("{family} from the controller pod"))
}

/// The experiment stage's window as clients saw it: from 1.5 s after the experiment's rule was
/// seen in the route (`rule_at`; Envoy applies a route within about a second; the stage begins by
/// waiting for the candidate's pods, with no rule yet) to 0.5 s before the status left the stage.
pub fn experiment_window(samples: &[Sample], rule_at: f64) -> (f64, f64) {
    let in_stage: Vec<&Sample> =
        samples.iter().filter(|s| s.phase == Some(Phase::Progressing) && s.stage.as_deref() == Some("ab")).collect();
    let (first, last) = (in_stage.first().expect("the status said stage ab"), in_stage.last().unwrap());
    (first.at.max(rule_at) + 1.5, last.at - 0.5)
}

/// Each user's arms in [from, to): user -> versions that answered it, and how many times.
pub fn arms_by_user(shown: &[Shown], from: f64, to: f64) -> BTreeMap<usize, BTreeMap<String, u64>> {
    let mut out: BTreeMap<usize, BTreeMap<String, u64>> = BTreeMap::new();
    for s in shown.iter().filter(|s| s.start >= from && s.start < to) {
        if let Some(v) = &s.version {
            *out.entry(s.user).or_default().entry(v.clone()).or_default() += 1;
        }
    }
    out
}

/// Click-through per version among the answers in [from, to).
pub fn click_through(shown: &[Shown], from: f64, to: f64) -> BTreeMap<String, (u64, u64)> {
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

/// The false-positive rates the two thresholds give on the rows the load generators send.
pub fn golden_fpr(threshold: f64) -> f64 {
    let text = std::fs::read_to_string(root().join("models/fraud-v1.golden.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let negatives: Vec<f64> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["label"] == 0)
        .map(|r| r["probability"].as_f64().unwrap())
        .collect();
    negatives.iter().filter(|p| **p >= threshold).count() as f64 / negatives.len() as f64
}

pub fn fpr_result(st: &modelrollout::api::ModelRolloutStatus) -> modelrollout::api::GateResult {
    let run = st.last_analysis.clone().expect("analysed");
    run.gates.into_iter().find(|g| g.name == "falsePositiveRate").expect("the gate")
}

/// The AUC of a golden file's own reference scores (what the served model must reproduce).
pub fn reference_auc(file: &str) -> f64 {
    let text = std::fs::read(root().join("models").join(file)).unwrap();
    let set = modelrollout::acceptance_runner::parse(&text).unwrap();
    let pairs: Vec<(f64, bool)> = set.rows.iter().map(|r| (r.probability.unwrap(), r.label)).collect();
    modelrollout::acceptance_runner::auc(&pairs).unwrap()
}

/// How many answers in a row, in the order their requests started, say the route is programmed
/// (what [`wait_answered_by`](crate::wait_answered_by) waits for before a test goes on).
const SETTLED_RUN: usize = 50;

/// The first failed answers once the route was programmed and answering steadily (the first of
/// [`SETTLED_RUN`] answers in a row), for an assertion's message. Before it is setup, not the
/// test: Envoy answers 503 for a hostname it does not route yet (the CI run at 3b1e... failed on
/// its first three requests so), and while Envoy Gateway programs the rollout's first route
/// changes Envoy can briefly answer an empty 503 for a cluster it has not warmed yet (the run at
/// 1e8638f: 10 of the first 33 requests after the first success, before the test began).
pub fn answer_failures(answers: &[Answer]) -> Vec<String> {
    let mut by_start: Vec<&Answer> = answers.iter().collect();
    by_start.sort_by(|a, b| a.start.total_cmp(&b.start));
    let settled = by_start
        .windows(SETTLED_RUN)
        .find(|w| w.iter().all(|a| a.version.is_some()))
        .map_or(f64::INFINITY, |w| w[0].start);
    by_start.into_iter().filter(|a| a.start >= settled).filter_map(|a| a.error.clone()).take(10).collect()
}

/// The first failed ranking requests once the route was first programmed (see
/// [`answer_failures`]), for an assertion's message.
pub fn shown_failures(shown: &[Shown]) -> Vec<String> {
    let first = shown.iter().filter(|s| s.version.is_some()).map(|s| s.start).fold(f64::INFINITY, f64::min);
    shown.iter().filter(|s| s.start > first).filter_map(|s| s.error.clone()).take(10).collect()
}

/// Stickiness and share, from what users saw during the experiment: every user on exactly the arm
/// its key selects, none on both, and the share of users within its binomial tolerance.
pub fn check_users(shown: &[Shown], keys: &[String], from: f64, to: f64) {
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

/// The experiment in a status.
pub fn experiment(st: &ModelRolloutStatus) -> &modelrollout::api::ExperimentStatus {
    st.experiment.as_ref().expect("status.experiment")
}
