//! Calls gating webhooks (`spec.webhooks`): the payload, and each call's timeout and retries.
//! When to call which kind, and what an answer does, is the core's (`core::webhooks_due`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::api::{GatingWebhook, ModelRolloutStatus, WebhookKind};
use crate::core::WebhookCall;

/// The longest an answer's body is quoted in status.
const QUOTED_BODY: usize = 200;

/// What a webhook is told: the rollout, its stage and versions, the last analysis's gates and,
/// for postRollout, how it ended. `metadata` is the hook's own from the spec.
pub fn payload(namespace: &str, name: &str, st: &ModelRolloutStatus, candidate: &str, hook: &GatingWebhook) -> Value {
    let gates: Vec<Value> = st
        .last_analysis
        .iter()
        .flat_map(|run| &run.gates)
        .map(|g| {
            json!({"name": g.name, "verdict": g.verdict.as_str(), "value": g.value, "stableValue": g.stable_value,
                   "limit": g.limit, "samples": g.samples})
        })
        .collect();
    let mut body = json!({
        "type": hook.kind.as_str(),
        "name": name,
        "namespace": namespace,
        "phase": st.phase.map(|p| p.as_str()),
        "stage": st.stage_name,
        "canaryWeight": st.canary_weight,
        "mirrorPercent": st.mirror_percent,
        "stableVersion": st.stable_version,
        "candidateVersion": candidate,
        "gates": gates,
        "acceptance": st.acceptance.as_ref().and_then(|a| a.verdict).map(|v| v.as_str()),
        "metadata": hook.metadata,
    });
    if hook.kind == WebhookKind::PostRollout
        && let Some(ended) = &st.post_rollout
    {
        body["candidateVersion"] = json!(ended.version);
        body["outcome"] = json!(format!("{:?}", ended.outcome));
        body["message"] = json!(ended.message);
    }
    body
}

/// Calls `hook` with `body`: up to `1 + retries` attempts, each within the hook's timeout, 1 s
/// apart and doubling. A connection error, a timeout or a 5xx is tried again; a 2xx or 4xx is the
/// hook's answer.
pub async fn call(http: &reqwest::Client, hook: &GatingWebhook, body: &Value) -> WebhookCall {
    let timeout = hook.timeout.get();
    let mut delay = Duration::from_secs(1);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (code, message, retry) = match http.post(&hook.url).json(body).timeout(timeout).send().await {
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let quoted: String = text.trim().chars().take(QUOTED_BODY).collect();
                let message =
                    if quoted.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {quoted}") };
                (Some(status.as_u16()), message, status.is_server_error())
            }
            Err(e) if e.is_timeout() => (None, format!("no answer within {}", hook.timeout), true),
            Err(e) => (None, format!("{e}"), true),
        };
        let ok = code.is_some_and(|c| (200..300).contains(&c));
        if ok || !retry || attempts > hook.retries {
            if !ok {
                tracing::warn!(hook = %hook.name, kind = hook.kind.as_str(), attempts, %message, "webhook did not answer 2xx");
            }
            return WebhookCall { name: hook.name.clone(), kind: hook.kind, ok, code, message, attempts };
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
