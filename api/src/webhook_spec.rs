//! Gating webhooks: whose answers start, hold, end and follow a rollout.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::*;

/// A webhook whose answer gates the rollout. The controller POSTs a JSON payload naming the
/// rollout, the stage, the versions and the last analysis's gate results (see the README).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.url.startsWith('https://') || self.url.startsWith('http://')",
    "message": "url must be an http(s) URL",
    "fieldPath": ".url",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!self.url.matches('^https?://([^/@]*@)?[[]?(169[.]254[.]|0[.]0[.]0[.]0|[fF][eE]80:)')",
    "message": "the host is a link-local or unspecified address (the cloud metadata address among them): the controller does not call it",
    "fieldPath": ".url",
    "reason": "FieldValueForbidden"
}]))]
pub struct GatingWebhook {
    /// Names the hook in status and Events; unique in the spec.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: WebhookKind,
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// How long one attempt may take.
    #[serde(default = "default_webhook_timeout")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) > duration('0s') && duration(self) <= duration('60s')", "message": "timeout must be more than 0s and at most 60s"}]))]
    pub timeout: Duration,
    /// Attempts after a first that failed to answer (a connection error, a timeout, a 5xx),
    /// 1 s apart, doubling. An answer of 4xx is not retried: it is the hook's answer.
    #[serde(default = "default_webhook_retries")]
    #[schemars(range(max = 10))]
    pub retries: u32,
    /// Sent as the payload's `metadata`, e.g. what a test runner should run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

fn default_webhook_timeout() -> Duration {
    duration("10s")
}
fn default_webhook_retries() -> u32 {
    2
}

/// When a gating webhook is called, and what its answer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WebhookKind {
    /// Once the candidate's pods are Ready (and its acceptance checks passed), before any traffic:
    /// anything but a 2xx fails the rollout.
    PreRollout,
    /// Before the candidate becomes stable (after the last stage passes): the rollout holds, asking
    /// again at every analysis interval, until it answers 2xx.
    ConfirmPromotion,
    /// At every analysis while the rollout runs: a 2xx rolls back now.
    Rollback,
    /// Once, after the rollout ends (promoted, rolled back or failed): its answer changes nothing
    /// but is recorded.
    PostRollout,
}

impl WebhookKind {
    pub const ALL: [WebhookKind; 4] =
        [WebhookKind::PreRollout, WebhookKind::ConfirmPromotion, WebhookKind::Rollback, WebhookKind::PostRollout];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::PreRollout => "preRollout",
            WebhookKind::ConfirmPromotion => "confirmPromotion",
            WebhookKind::Rollback => "rollback",
            WebhookKind::PostRollout => "postRollout",
        }
    }
}

/// The response header in which a gating webhook may give a short reason for its answer (at most
/// 200 characters are kept). Only this is quoted into `status.webhooks[].message`, beside the
/// status code: an answer's body never is (it could be anything the URL returns).
pub const WEBHOOK_MESSAGE_HEADER: &str = "x-modelrollout-message";
