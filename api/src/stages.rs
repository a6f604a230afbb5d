//! Traffic stages, and an experiment stage's match.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.mirrorPercent) || self.weight == 0",
    "message": "mirrorPercent is for shadow stages, whose weight is 0",
    "fieldPath": ".mirrorPercent",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.match) || (self.weight == 0 && !has(self.mirrorPercent))",
    "message": "an experiment stage (match) sends the matching requests, not a weight: its weight is 0 and it mirrors nothing",
    "fieldPath": ".match",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.maxDuration) || (has(self.match) && duration(self.maxDuration) > duration('0s'))",
    "message": "maxDuration (more than 0s) ends an experiment stage (match) that found no winner",
    "fieldPath": ".maxDuration",
    "reason": "FieldValueInvalid"
}]))]
pub struct Stage {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Percent of live traffic the candidate answers.
    #[schemars(range(min = 0, max = 100))]
    pub weight: i32,
    /// Percent of requests copied to the candidate, whose answers are discarded (shadow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub mirror_percent: Option<i32>,
    /// Least time spent in this stage before it may advance.
    #[serde(default = "default_min_duration")]
    pub min_duration: Duration,
    /// Hold at the end of this stage until someone promotes. On an experiment stage: hold once
    /// the candidate has won, so that a person promotes the winner (manual promotion).
    #[serde(default)]
    pub manual_approval: bool,
    /// An A/B experiment stage: the requests this matches go to the candidate, all others to
    /// stable, for the whole stage. The same request key always reaches the same arm. The
    /// stage ends when `analysis.reward` names a winner (the candidate: on to the next stage;
    /// stable: rolled back), when a gate (a guardrail) fails, or at `maxDuration` with no winner
    /// (stable stays). Needs the gatewayAPI or istio router.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<TrafficMatch>,
    /// How long an experiment stage may run without a winner before stable is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<Duration>,
}

/// Which requests an experiment stage sends to the candidate: exactly one of `header`, `cookie`
/// and `keyShare`. The router writes it as a request-header match (Gateway API `HTTPRouteMatch`
/// headers, Istio `HTTPMatchRequest` headers) on a rule of its own, beside the stable rule and
/// with its path matches and filters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.header) ? 1 : 0) + (has(self.cookie) ? 1 : 0) + (has(self.keyShare) ? 1 : 0) == 1",
    "message": "set exactly one of header, cookie and keyShare",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.cookie) || size(self.cookie.value) <= 1024",
    "message": "a cookie's value is at most 1024 characters: the router matches it by an escaped pattern, which must fit a route's 4096-character header match",
    "fieldPath": ".cookie.value",
    "reason": "FieldValueInvalid"
}]))]
pub struct TrafficMatch {
    /// Requests whose header `name` is exactly `value` (an opt-in group, an internal tester).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderValue>,
    /// Requests carrying the cookie `name` with exactly `value` (a cookie an A/B assignment
    /// service set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<HeaderValue>,
    /// A share of users by key: the last two hex digits of header `header` (a random hex id such
    /// as a UUID, or any hex hash of the user id) pick one of 256 buckets, and the lowest
    /// `percent`% of them go to the candidate. The bucket is the key's own, so a user stays on
    /// one arm for the whole experiment, across pod restarts, and a larger share only adds users.
    /// Requests without the header go to stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_share: Option<KeyShare>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderValue {
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"))]
    pub name: String,
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyShare {
    /// The request header that carries the user key.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"))]
    pub header: String,
    /// Percent of keys sent to the candidate, rounded to whole buckets of 1/256.
    #[schemars(range(min = 1, max = 100))]
    pub percent: i32,
}

fn default_min_duration() -> Duration {
    duration("5m")
}

/// shadow -> 5% -> 25% -> 100%.
pub fn default_stages() -> Vec<Stage> {
    let stage = |name: &str, weight, mirror| Stage {
        name: name.into(),
        weight,
        mirror_percent: mirror,
        min_duration: default_min_duration(),
        manual_approval: false,
        match_: None,
        max_duration: None,
    };
    vec![
        stage("shadow", 0, Some(100)),
        stage("canary-5", 5, None),
        stage("canary-25", 25, None),
        stage("full", 100, None),
    ]
}
