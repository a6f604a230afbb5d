//! Webhook receivers on 127.0.0.1 for notifications and gating webhooks.

use serde_json::{Value, json};

use crate::*;

/// A webhook receiver on 127.0.0.1: answers 500 to the first `fail_first` requests (to exercise
/// retries), then 200, and keeps every JSON body it accepted.
pub struct Webhook {
    pub url: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    _server: TestServer,
}

impl Webhook {
    pub async fn start(fail_first: usize) -> Self {
        let received: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let store = received.clone();
        let server = TestServer::start(move |body| {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < fail_first {
                return (500, String::new());
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                store.lock().unwrap().push(v);
            }
            (200, String::new())
        })
        .await;
        Self { url: format!("http://{}/hook", server.addr), received, _server: server }
    }

    pub fn events(&self) -> Vec<String> {
        self.received.lock().unwrap().iter().filter_map(|v| v["event"].as_str().map(str::to_string)).collect()
    }
}

/// Gating webhooks' server (preRollout, confirmPromotion, rollback, postRollout at one URL): each
/// kind answers the status the test sets for it (`set`), and every payload is kept.
pub struct GatingHooks {
    pub url: String,
    codes: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u16>>>,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    _server: TestServer,
}

impl GatingHooks {
    pub async fn start() -> Self {
        let codes: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u16>>> = Default::default();
        let received: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
        let (c, r) = (codes.clone(), received.clone());
        let server = TestServer::start(move |body| {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let kind = v["type"].as_str().unwrap_or_default().to_string();
            r.lock().unwrap().push(v);
            let code = c.lock().unwrap().get(&kind).copied().unwrap_or(200);
            (code, format!("{kind} answered {code}"))
        })
        .await;
        Self { url: format!("http://{}/gate", server.addr), codes, received, _server: server }
    }

    /// What `kind` (e.g. `preRollout`) answers from now on.
    pub fn set(&self, kind: &str, code: u16) {
        self.codes.lock().unwrap().insert(kind.to_string(), code);
    }

    /// The payloads of `kind` received so far.
    pub fn of(&self, kind: &str) -> Vec<Value> {
        self.received.lock().unwrap().iter().filter(|v| v["type"] == kind).cloned().collect()
    }

    /// One hook of each kind, as `spec.webhooks`.
    pub fn spec(&self) -> Value {
        let hook = |name: &str, kind: &str| json!({"name": name, "type": kind, "url": self.url, "timeout": "2s", "retries": 1, "metadata": {"suite": "e2e"}});
        json!([
            hook("smoke-tests", "preRollout"),
            hook("change-window", "confirmPromotion"),
            hook("kill-switch", "rollback"),
            hook("report", "postRollout")
        ])
    }
}
