//! Calls gating webhooks (`spec.webhooks`): the payload, and each call's timeout and retries.
//! When to call which kind, and what an answer does, is the core's (`core::webhooks_due`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::api::{GatingWebhook, ModelRolloutStatus, WEBHOOK_MESSAGE_HEADER, WebhookKind};
use crate::core::WebhookCall;
use crate::outbound::Outbound;

/// The longest a hook's own message ([`WEBHOOK_MESSAGE_HEADER`]) is quoted in status.
const QUOTED_MESSAGE: usize = 200;

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
/// apart and doubling. A connection error, a timeout or a 5xx is tried again; a 2xx, 3xx (no
/// redirect is followed) or 4xx is the hook's answer. A destination the controller's policy
/// refuses is not called at all.
pub async fn call(http: &Outbound, hook: &GatingWebhook, body: &Value) -> WebhookCall {
    let timeout = hook.timeout.get();
    let mut delay = Duration::from_secs(1);
    let mut attempts = 0;
    let request = match http.request(reqwest::Method::POST, &hook.url) {
        Ok(r) => r,
        Err(message) => {
            tracing::warn!(hook = %hook.name, %message, "webhook not called");
            return WebhookCall {
                name: hook.name.clone(),
                kind: hook.kind,
                ok: false,
                code: None,
                message,
                attempts: 1,
            };
        }
    };
    loop {
        attempts += 1;
        let attempt = request.try_clone().expect("a JSON body clones").json(body).timeout(timeout);
        let (code, message, retry) = match attempt.send().await {
            Ok(r) => {
                let status = r.status();
                let said = r
                    .headers()
                    .get(WEBHOOK_MESSAGE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.chars().filter(|c| !c.is_control()).take(QUOTED_MESSAGE).collect::<String>())
                    .filter(|v| !v.trim().is_empty());
                let message = match said {
                    Some(said) => format!("HTTP {status}: {}", said.trim()),
                    None => format!("HTTP {status}"),
                };
                (Some(status.as_u16()), message, status.is_server_error())
            }
            Err(e) if e.is_timeout() => (None, format!("no answer within {}", hook.timeout), true),
            // A name the policy refused resolves there again: no retry.
            Err(e) => (None, format!("{e}"), !crate::outbound::is_refused(&e)),
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
