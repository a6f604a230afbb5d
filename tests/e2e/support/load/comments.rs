//! Comments sent to a moderation API through the Gateway as its clients send them: `POST
//! /moderate {"text", "request_id"}` for the comments of a golden set (models/toxicity-v2.golden.json),
//! each answer checked for the published shape (`score`, `label`, `model_version`, the request's
//! id echoed) and kept with the version that answered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::clients::gateway;
use super::now;
use super::{Running, ticker};
use crate::root;

/// One answered (or failed) comment.
#[derive(Clone, Debug)]
pub struct Moderated {
    pub start: f64,
    pub version: Option<String>,
    pub label: Option<String>,
    pub error: Option<String>,
}

pub struct Comments {
    answers: Arc<Mutex<Vec<Moderated>>>,
    running: Running,
}

/// The comments of a golden set (its rows' `text`).
pub fn comments(golden: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("models").join(golden)).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["rows"].as_array().unwrap().iter().map(|r| r["features"]["text"].as_str().unwrap().to_string()).collect()
}

impl Comments {
    /// `rps` comments a second to `path` on the Gateway for `host`.
    pub fn start(host: &str, path: &str, rps: u32) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (addr, ..) = gateway();
        let texts = Arc::new(comments("toxicity-v2.golden.json"));
        let answers: Arc<Mutex<Vec<Moderated>>> = Arc::default();
        let mut running = Running::default();
        let (stop, host, url, out) =
            (running.flag(), host.to_string(), format!("http://{addr}{path}"), answers.clone());
        running.spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
            let mut tick = ticker(rps);
            let mut n: u64 = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                tick.tick().await;
                n += 1;
                let rid = format!("comment-{n}");
                let text = texts[(n as usize) % texts.len()].clone();
                let req = http
                    .post(&url)
                    .header(reqwest::header::HOST, &host)
                    .json(&json!({"text": text, "request_id": rid}));
                let out = out.clone();
                let start = now();
                tokio::spawn(async move {
                    let m = match req.send().await {
                        Ok(r) if r.status().is_success() => {
                            let version =
                                r.headers().get("x-model-version").and_then(|v| v.to_str().ok()).map(String::from);
                            let body: Value = r.json().await.unwrap_or_default();
                            let label =
                                body["label"].as_str().filter(|l| ["toxic", "ok"].contains(l)).map(String::from);
                            let published = label.is_some()
                                && body["score"].is_number()
                                && body["request_id"] == rid.as_str()
                                && body["model_version"].as_str() == version.as_deref();
                            let error = (!published).then(|| format!("{rid}: not the published answer: {body}"));
                            Moderated { start, version, label, error }
                        }
                        Ok(r) => {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            let error = Some(format!("{rid}: HTTP {status}: {body:.200}"));
                            Moderated { start, version: None, label: None, error }
                        }
                        Err(e) => Moderated { start, version: None, label: None, error: Some(format!("{rid}: {e:?}")) },
                    };
                    out.lock().unwrap().push(m);
                });
            }
        });
        Self { answers, running }
    }

    pub fn answers(&self) -> Vec<Moderated> {
        self.answers.lock().unwrap().clone()
    }

    /// Waits (bounded) for requests in flight to finish, then stops.
    pub async fn shutdown(mut self) -> Vec<Moderated> {
        self.running.stop(Duration::from_secs(1)).await;
        self.answers()
    }
}
