//! Webhook notifications: a JSON message with a Slack-compatible `text` field. Sent in the
//! background with retries and backoff; a failing webhook never blocks a rollout.

use std::time::Duration;

use serde_json::json;

use crate::api::{NotificationEvent, Webhook};
use crate::outbound::Outbound;

pub fn message(namespace: &str, name: &str, event: NotificationEvent, text: &str) -> serde_json::Value {
    let event_name = match event {
        NotificationEvent::StageChanged => "StageChanged",
        NotificationEvent::Paused => "Paused",
        NotificationEvent::RolledBack => "RolledBack",
        NotificationEvent::Promoted => "Promoted",
        NotificationEvent::AfterPromotionFailed => "AfterPromotionFailed",
    };
    json!({
        "text": format!("[modelrollout] {namespace}/{name} {event_name}: {text}"),
        "event": event_name,
        "namespace": namespace,
        "name": name,
        "message": text,
    })
}

/// Sends to every webhook subscribed to `event`, each in its own task.
/// A destination the controller's policy refuses is not called.
pub fn send(http: &Outbound, hooks: &[Webhook], event: NotificationEvent, body: serde_json::Value) {
    for hook in hooks.iter().filter(|h| h.events.is_empty() || h.events.contains(&event)) {
        let (url, body) = (hook.url.clone(), body.clone());
        let request = match http.request(reqwest::Method::POST, &url) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%url, error = %e, "notification not sent");
                continue;
            }
        };
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            for attempt in 1..=5 {
                let request = request.try_clone().expect("a JSON body clones");
                match request.json(&body).timeout(Duration::from_secs(5)).send().await {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => tracing::warn!(%url, attempt, status = %r.status(), "webhook refused"),
                    Err(e) if crate::outbound::is_refused(&e) => {
                        tracing::warn!(%url, error = %e, "notification not sent");
                        return;
                    }
                    Err(e) => tracing::warn!(%url, attempt, error = %e, "webhook failed"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            tracing::error!(%url, "webhook given up after 5 attempts");
        });
    }
}
