//! Measures a candidate's acceptance checks from inside the cluster (the controller's pod): the
//! golden set scored by the candidate's own pods through its Service (and by stable's, when a
//! limit is relative to stable), then an open-loop load check against the candidate's Service.
//! Judging the measurements against the spec is the core's job (`core::judge_acceptance`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{
    AcceptanceSpec, DataContract, FeatureType, GoldenScores, GoldenSetArtifact, GoldenSetMeasurement, LoadCheck,
    LoadMeasurement,
};
use crate::core::AcceptanceReport;
use crate::outbound::Outbound;

/// The largest golden set fetched (the whole file is held to be parsed).
pub const GOLDEN_SET_MAX_BYTES: usize = 64 << 20;
/// Rows scored at once per version.
const SCORING_CONCURRENCY: usize = 8;
/// Attempts per golden row (a pod restarting, a connection reset) before the check gives up.
const ROW_ATTEMPTS: u32 = 3;

/// Where the checks send their requests: base URLs of the versions' Services, and the version
/// each must answer as (the sidecar names its version in every answer).
#[derive(Clone, Debug)]
pub struct Targets {
    pub model: String,
    pub candidate: String,
    pub candidate_version: String,
    pub stable: String,
    pub stable_version: String,
    /// How long a Service may take to route to the version it now selects (its endpoints and
    /// the proxy's rules follow a selector change within seconds).
    pub routing_wait: Duration,
}

/// One labelled row of a golden set.
#[derive(Clone, Debug, PartialEq)]
pub struct GoldenRow {
    pub features: Value,
    pub label: bool,
    /// The reference score (e.g. what the training framework gave).
    pub probability: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GoldenSet {
    pub threshold: Option<f64>,
    pub rows: Vec<GoldenRow>,
}

/// Runs every check the spec asks for. Never panics; what could not run is an `Error` report.
/// `http` reaches the rollout's own Services; `outbound` the golden set's URL, which the user named.
pub async fn run(
    http: &reqwest::Client,
    outbound: &Outbound,
    spec: &AcceptanceSpec,
    contract: &DataContract,
    to: &Targets,
) -> AcceptanceReport {
    match measure(http, outbound, spec, contract, to).await {
        Ok((golden_set, load)) => AcceptanceReport::Measured { golden_set, load },
        Err(e) => AcceptanceReport::Error(e),
    }
}

async fn measure(
    http: &reqwest::Client,
    outbound: &Outbound,
    spec: &AcceptanceSpec,
    contract: &DataContract,
    to: &Targets,
) -> Result<(Option<GoldenSetMeasurement>, Option<LoadMeasurement>), String> {
    let mut rows = Vec::new();
    let golden = match &spec.golden_set {
        Some(check) => {
            let set = fetch(outbound, &check.artifact).await?;
            routed(&to.candidate, &to.candidate_version, &to.model, &set.rows[0].features, to.routing_wait)
                .await
                .map_err(|e| format!("candidate: {e}"))?;
            let threshold = check.threshold.or(set.threshold).unwrap_or(0.5);
            let candidate = score(http, &to.candidate, &to.candidate_version, &to.model, &set.rows, threshold)
                .await
                .map_err(|e| format!("candidate: {e}"))?;
            let relative = [&check.auc, &check.accuracy].into_iter().flatten().any(|l| l.max_below_stable.is_some());
            let stable = if relative {
                routed(&to.stable, &to.stable_version, &to.model, &set.rows[0].features, to.routing_wait)
                    .await
                    .map_err(|e| format!("stable: {e}"))?;
                Some(
                    score(http, &to.stable, &to.stable_version, &to.model, &set.rows, threshold)
                        .await
                        .map_err(|e| format!("stable: {e}"))?,
                )
            } else {
                None
            };
            rows = set.rows.iter().map(|r| r.features.clone()).collect();
            Some(GoldenSetMeasurement { rows: set.rows.len() as u64, threshold, candidate, stable })
        }
        None => None,
    };
    let load = match &spec.load {
        Some(check) => {
            if rows.is_empty() {
                rows.push(example_row(contract));
            }
            Some(load(http, &to.candidate, load_requests(contract, &to.model, &rows), check).await)
        }
        None => None,
    };
    Ok((golden, load))
}

/// Downloads a golden set, checks its digest, parses it.
pub async fn fetch(http: &Outbound, artifact: &GoldenSetArtifact) -> Result<GoldenSet, String> {
    let resp = http
        .request(reqwest::Method::GET, &artifact.uri)
        .map_err(|e| format!("golden set {e}"))?
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| format!("golden set {}: {e}", artifact.uri))?;
    if !resp.status().is_success() {
        return Err(format!("golden set {}: HTTP {}", artifact.uri, resp.status()));
    }
    let mut body = Vec::new();
    let mut hasher = Sha256::new();
    let mut resp = resp;
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("golden set {}: {e}", artifact.uri))? {
        if body.len() + chunk.len() > GOLDEN_SET_MAX_BYTES {
            return Err(format!("golden set {}: larger than {} MiB", artifact.uri, GOLDEN_SET_MAX_BYTES >> 20));
        }
        hasher.update(&chunk);
        body.extend_from_slice(&chunk);
    }
    let digest = hex::encode(hasher.finalize());
    if digest != artifact.sha256 {
        return Err(format!("golden set {}: sha256 {digest}, the spec says {}", artifact.uri, artifact.sha256));
    }
    parse(&body).map_err(|e| format!("golden set {}: {e}", artifact.uri))
}

/// `{"threshold"?: f64, "rows": [{"features": {…}, "label": 0|1|bool, "probability"?: f64}]}`.
pub fn parse(body: &[u8]) -> Result<GoldenSet, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let rows = v["rows"].as_array().ok_or("no `rows` array")?;
    if rows.is_empty() {
        return Err("no rows".into());
    }
    let rows = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let features =
                r.get("features").filter(|f| f.is_object()).ok_or(format!("row {i}: no `features` object"))?;
            let label = match &r["label"] {
                Value::Bool(b) => *b,
                Value::Number(n) if n.as_f64() == Some(0.0) => false,
                Value::Number(n) if n.as_f64() == Some(1.0) => true,
                other => return Err(format!("row {i}: label {other} is not 0, 1, true or false")),
            };
            Ok(GoldenRow { features: features.clone(), label, probability: r["probability"].as_f64() })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(GoldenSet { threshold: v["threshold"].as_f64(), rows })
}

/// Waits until `base` answers as `version`: a Service whose selector just changed still routes to
/// the old version's pods for a moment. Each probe is a connection of its own (a pooled one would
/// stay on the pod it was made to).
async fn routed(base: &str, version: &str, model: &str, features: &Value, wait: Duration) -> Result<(), String> {
    let probe = reqwest::Client::builder().pool_max_idle_per_host(0).build().map_err(|e| e.to_string())?;
    let url = format!("{base}/v1/models/{model}:predict");
    let start = Instant::now();
    let mut last = String::from("no answer");
    while start.elapsed() < wait {
        match probe.post(&url).json(&json!({"instances": [features]})).timeout(Duration::from_secs(5)).send().await {
            Ok(r) => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                match v["model_version"].as_str() {
                    Some(answered) if answered == version => return Ok(()),
                    // A refusal carries no version: the row itself decides, scoring will say.
                    None => return Ok(()),
                    Some(answered) => last = format!("answered by version {answered}"),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("{base} did not answer as version {version} within {wait:?} ({last})"))
}

/// What one row got: a score, or a refusal for its contract.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scored {
    Score(f64),
    ContractRefused,
}

async fn score_row(http: &reqwest::Client, url: &str, version: &str, features: &Value) -> Result<Scored, String> {
    let mut last = String::new();
    for attempt in 0..ROW_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let resp = match http
            .post(url)
            .json(&json!({"instances": [features]}))
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let status = resp.status();
        if status == reqwest::StatusCode::BAD_REQUEST {
            return Ok(Scored::ContractRefused);
        }
        if !status.is_success() {
            last = format!("HTTP {status}");
            continue;
        }
        let v: Value = resp.json().await.map_err(|e| format!("answer is not JSON: {e}"))?;
        // A Service can still route to another version's pod for a moment (a connection made
        // before its selector changed): only the version checked may score.
        if let Some(answered) = v["model_version"].as_str().filter(|a| *a != version) {
            last = format!("answered by version {answered}, not {version}");
            continue;
        }
        return v["predictions"][0]["score"]
            .as_f64()
            .map(Scored::Score)
            .ok_or_else(|| format!("no predictions[0].score in {v}"));
    }
    Err(last)
}

/// Scores every row through `base` and computes the golden-set figures.
async fn score(
    http: &reqwest::Client,
    base: &str,
    version: &str,
    model: &str,
    rows: &[GoldenRow],
    threshold: f64,
) -> Result<GoldenScores, String> {
    let url = format!("{base}/v1/models/{model}:predict");
    let jobs: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (i, http.clone(), url.clone(), version.to_string(), r.features.clone()))
        .collect();
    let scored: Vec<Scored> = futures::stream::iter(jobs)
        .map(|(i, http, url, version, features)| async move {
            score_row(&http, &url, &version, &features).await.map_err(|e| format!("row {i} via {url}: {e}"))
        })
        .buffered(SCORING_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(figures(rows, &scored, threshold))
}

fn figures(rows: &[GoldenRow], scored: &[Scored], threshold: f64) -> GoldenScores {
    let mut pairs = Vec::new();
    let mut refused = 0u64;
    let mut max_diff: Option<f64> = None;
    for (row, s) in rows.iter().zip(scored) {
        match s {
            Scored::ContractRefused => refused += 1,
            Scored::Score(score) => {
                pairs.push((*score, row.label));
                if let Some(p) = row.probability {
                    let d = (score - p).abs();
                    max_diff = Some(max_diff.map_or(d, |m| m.max(d)));
                }
            }
        }
    }
    let correct = pairs.iter().filter(|(s, l)| (*s >= threshold) == *l).count();
    GoldenScores {
        rows: pairs.len() as u64,
        auc: auc(&pairs),
        accuracy: (!pairs.is_empty()).then(|| correct as f64 / pairs.len() as f64),
        max_score_difference: max_diff,
        contract_failure_rate: if rows.is_empty() { 0.0 } else { refused as f64 / rows.len() as f64 },
    }
}

/// Area under the ROC curve (Mann–Whitney U with average ranks for ties); `None` with only one
/// class.
pub fn auc(pairs: &[(f64, bool)]) -> Option<f64> {
    let positives = pairs.iter().filter(|(_, l)| *l).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool)> = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let rank = (i + j + 2) as f64 / 2.0;
        rank_sum += rank * sorted[i..=j].iter().filter(|(_, l)| *l).count() as f64;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// A row the contract accepts, for a load check without a golden set: each feature at its minimum
/// (or 0), the first category, a one-letter string.
pub fn example_row(contract: &DataContract) -> Value {
    let mut row = serde_json::Map::new();
    for f in &contract.inputs {
        let v = match f.kind {
            FeatureType::Float => json!(f.min.unwrap_or(0.0).max(0.0).min(f.max.unwrap_or(f64::MAX))),
            FeatureType::Int => json!(f.min.unwrap_or(0.0).max(0.0).min(f.max.unwrap_or(f64::MAX)) as i64),
            FeatureType::Category => json!(f.categories.as_ref().and_then(|c| c.first()).cloned().unwrap_or_default()),
            FeatureType::String => json!("a"),
        };
        row.insert(f.name.clone(), v);
    }
    Value::Object(row)
}

/// What the load check sends: the requests clients send, at the API the contract publishes
/// (the first one not deprecated: `POST /moderate {"text"}`, a ranking request of
/// [`DEFAULT_MAX_CANDIDATES`] candidates), else single-row predict requests. The path and the
/// bodies, cycling through `rows`.
pub fn load_requests(contract: &DataContract, model: &str, rows: &[Value]) -> (String, Vec<Vec<u8>>) {
    use modelrollout_contract::api::{self, DEFAULT_MAX_CANDIDATES};
    let body = |v: Value| serde_json::to_vec(&v).expect("JSON");
    match api::current(&contract.apis) {
        Some(a) if a.shape == crate::api::ApiShape::Classify => {
            (a.path.clone(), rows.iter().cloned().map(body).collect())
        }
        Some(a) => {
            // Each request a page of candidates, each naming its item; as many requests as it
            // takes for every row to be sent once, and one at least.
            let pages = rows.len().div_ceil(DEFAULT_MAX_CANDIDATES).max(1);
            let bodies = (0..pages)
                .map(|p| {
                    let candidates: Vec<Value> = (0..DEFAULT_MAX_CANDIDATES)
                        .map(|i| {
                            let k = p * DEFAULT_MAX_CANDIDATES + i;
                            let mut row = rows[k % rows.len()].clone();
                            row[a.item_field()] = json!(format!("item-{k}"));
                            row
                        })
                        .collect();
                    body(json!({"candidates": candidates}))
                })
                .collect();
            (a.path.clone(), bodies)
        }
        None => (format!("/v1/models/{model}:predict"), rows.iter().map(|r| body(json!({"instances": [r]}))).collect()),
    }
}

/// Open loop: a request every 1/rate seconds for the duration, each timed at the client whether
/// or not earlier ones have answered (a closed loop would hide queueing). In flight at most
/// `rate` requests (a second's worth); a tick with that many outstanding is not sent, so the
/// achieved rate shows a candidate that could not keep up.
async fn load(
    http: &reqwest::Client,
    base: &str,
    (path, bodies): (String, Vec<Vec<u8>>),
    check: &LoadCheck,
) -> LoadMeasurement {
    let url = Arc::new(format!("{base}{path}"));
    let bodies = Arc::new(bodies);
    let period = Duration::from_secs_f64(1.0 / f64::from(check.rate.max(1)));
    let duration = check.duration.get();
    let timeout = (check.max_latency_p95.get() * 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(check.rate.max(1) as usize));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        ticker.tick().await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else { continue };
        let (http, url, bodies, errors) = (http.clone(), url.clone(), bodies.clone(), errors.clone());
        let body = bodies[sent as usize % bodies.len()].clone();
        sent += 1;
        tasks.spawn(async move {
            let t = Instant::now();
            let ok = http
                .post(url.as_str())
                .header("content-type", "application/json")
                .body(body)
                .timeout(timeout)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            drop(permit);
            if !ok {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            t.elapsed().as_secs_f64()
        });
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(sent as usize);
    while let Some(r) = tasks.join_next().await {
        latencies.push(r.unwrap_or(timeout.as_secs_f64()));
    }
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
        }
    };
    LoadMeasurement {
        requests: sent,
        errors: errors.load(Ordering::Relaxed),
        achieved_rate: sent as f64 / elapsed.max(1e-9),
        latency_p50_seconds: q(0.50),
        latency_p95_seconds: q(0.95),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The load check sends what the published API takes: a Classify API's feature object, 50
    /// candidates with item ids to a Rank API (every row used), and predict requests without one.
    #[test]
    fn the_load_check_speaks_the_published_api() {
        let contract: DataContract = serde_json::from_value(json!({
            "inputs": [{"name": "x", "type": "float"}],
            "apis": [{"path": "/old", "shape": "Classify", "deprecation": {"since": "2026-01-01"}},
                     {"path": "/moderate", "shape": "Classify"}]
        }))
        .unwrap();
        let rows: Vec<Value> = (0..120).map(|i| json!({"x": i})).collect();
        let (path, bodies) = load_requests(&contract, "m", &rows);
        assert_eq!((path.as_str(), bodies.len()), ("/moderate", 120), "the current API, not the deprecated one");
        assert_eq!(serde_json::from_slice::<Value>(&bodies[7]).unwrap(), json!({"x": 7}));
        let rank: DataContract = serde_json::from_value(json!({
            "inputs": [{"name": "x", "type": "float"}],
            "apis": [{"path": "/v1/rank:score", "shape": "Rank", "itemId": "sku"}]
        }))
        .unwrap();
        let (path, bodies) = load_requests(&rank, "m", &rows);
        assert_eq!((path.as_str(), bodies.len()), ("/v1/rank:score", 3));
        let pages: Vec<Value> = bodies.iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
        assert!(pages.iter().all(|p| p["candidates"].as_array().unwrap().len() == 50));
        assert_eq!(pages[2]["candidates"][19], json!({"x": 119, "sku": "item-119"}));
        assert_eq!(pages[2]["candidates"][20]["x"], 0, "rows cycle to fill the last page");
        let (path, bodies) = load_requests(&DataContract { apis: vec![], ..rank }, "m", &rows[..2]);
        assert_eq!((path.as_str(), bodies.len()), ("/v1/models/m:predict", 2));
        assert_eq!(serde_json::from_slice::<Value>(&bodies[1]).unwrap(), json!({"instances": [{"x": 1}]}));
    }

    #[test]
    fn auc_counts_ties_as_half_and_needs_both_classes() {
        assert_eq!(auc(&[(0.9, true), (0.1, false)]), Some(1.0));
        assert_eq!(auc(&[(0.1, true), (0.9, false)]), Some(0.0));
        assert_eq!(auc(&[(0.5, true), (0.5, false)]), Some(0.5));
        // 2 positives, 2 negatives: pairs (p, n) ordered right 3 of 4 times.
        assert_eq!(auc(&[(0.8, true), (0.4, true), (0.6, false), (0.2, false)]), Some(0.75));
        assert_eq!(auc(&[(0.8, true), (0.4, true)]), None);
    }

    #[test]
    fn figures_skip_refused_rows_and_measure_against_references() {
        let row = |label, probability| GoldenRow { features: json!({}), label, probability };
        let rows = [row(true, Some(0.7)), row(false, Some(0.2)), row(false, None), row(true, Some(0.9))];
        let scored = [Scored::Score(0.75), Scored::Score(0.6), Scored::Score(0.1), Scored::ContractRefused];
        let f = figures(&rows, &scored, 0.5);
        assert_eq!(f.rows, 3);
        assert_eq!(f.contract_failure_rate, 0.25);
        assert!((f.max_score_difference.unwrap() - 0.4).abs() < 1e-9, "{f:?}");
        // 0.75 ≥ 0.5 (label 1) right, 0.6 (label 0) wrong, 0.1 (label 0) right.
        assert!((f.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(f.auc, Some(1.0));
    }

    #[test]
    fn golden_sets_parse_as_the_model_script_writes_them_and_refuse_bad_labels() {
        let text = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/toxicity-v1.golden.json")).unwrap();
        let set = parse(&text).unwrap();
        assert_eq!(set.threshold, Some(0.5));
        assert_eq!(set.rows.len(), 200);
        assert!(set.rows.iter().all(|r| r.probability.is_some()));
        let err = parse(br#"{"rows": [{"features": {"a": 1}, "label": 2}]}"#).unwrap_err();
        assert!(err.contains("label 2"), "{err}");
        assert!(parse(br#"{"rows": []}"#).is_err());
    }
}
