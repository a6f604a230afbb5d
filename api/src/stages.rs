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
    /// This stage's gates, when they differ from `analysis.gates`: replaced for the stage (a
    /// shadow stage judged on matched requests and latency), or some added (a KPI that exists
    /// only with live traffic) and some removed. Unset: the rollout's gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<StageGates>,
    /// The stage advances only once no alert matching `matchLabels` has fired for `for` (read
    /// from Prometheus' `ALERTS` series), counted from the stage's start: a firing alert restarts
    /// the clock, and so does a look at Prometheus that fails (unknown is not clean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_free: Option<AlertFree>,
}

/// A stage's own gate set: `replace` alone, or `add` and `remove` (either or both).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.replace) || has(self.add) || (has(self.remove) && size(self.remove) > 0)",
    "message": "set replace, or add and/or remove",
    "reason": "FieldValueRequired"
}, {
    "rule": "!has(self.replace) || (!has(self.add) && (!has(self.remove) || size(self.remove) == 0))",
    "message": "replace stands alone: a stage either replaces the rollout's gates or adds and removes some",
    "fieldPath": ".replace",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.add) || !has(self.remove) || self.remove.all(n, !((n == 'errorRate' && has(self.add.errorRate)) || (n == 'latencyP95' && has(self.add.latencyP95)) || (n == 'falsePositiveRate' && has(self.add.falsePositiveRate)) || (n == 'captureRate' && has(self.add.captureRate)) || (n == 'precision' && has(self.add.precision)) || (n == 'agreement' && has(self.add.agreement)) || (n == 'paired' && has(self.add.paired)) || (n == 'scoreDrift' && has(self.add.scoreDrift)) || (n == 'inputDrift' && has(self.add.inputDrift)) || (has(self.add.custom) && self.add.custom.exists(c, c.name == n))))",
    "message": "a stage cannot both add and remove the same gate",
    "fieldPath": ".remove",
    "reason": "FieldValueInvalid"
}]))]
pub struct StageGates {
    /// The gates this stage checks instead of `analysis.gates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<Gates>,
    /// Gates this stage checks besides `analysis.gates`. A gate set both here and there is
    /// judged by the limits set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<Gates>,
    /// Gates of `analysis.gates` this stage does not check, by name (`errorRate`, a custom
    /// gate's name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 41), extend("x-kubernetes-list-type" = "set", "items" = {
        "type": "string", "maxLength": 63, "pattern": "^[a-zA-Z][a-zA-Z0-9_-]*$"
    }))]
    pub remove: Vec<String>,
}

/// How long no matching alert may have fired before a stage advances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "duration(self.for) > duration('0s')",
    "message": "for must be more than 0s",
    "fieldPath": ".for",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.matchLabels) || self.matchLabels.all(k, k.matches('^[a-zA-Z_][a-zA-Z0-9_]*$') && k != 'alertstate' && k != '__name__')",
    "message": "matchLabels keys are Prometheus label names, other than alertstate (only firing alerts count) and __name__",
    "fieldPath": ".matchLabels",
    "reason": "FieldValueInvalid"
}]))]
pub struct AlertFree {
    /// The alerts that count: every label here must match exactly (`team: fraud`,
    /// `severity: page`). Empty: every alert Prometheus evaluates.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": 1024}))]
    pub match_labels: std::collections::BTreeMap<String, String>,
    /// How long no matching alert may have fired.
    #[serde(rename = "for")]
    pub for_: Duration,
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
        gates: None,
        alert_free: None,
    };
    vec![
        stage("shadow", 0, Some(100)),
        stage("canary-5", 5, None),
        stage("canary-25", 25, None),
        stage("full", 100, None),
    ]
}

impl Gates {
    /// The names of the gates set, built-ins first.
    pub fn names(&self) -> Vec<&str> {
        let built_in = [
            (GATE_ERROR_RATE, self.error_rate.is_some()),
            (GATE_LATENCY_P95, self.latency_p95.is_some()),
            (GATE_FALSE_POSITIVE_RATE, self.false_positive_rate.is_some()),
            (GATE_CAPTURE_RATE, self.capture_rate.is_some()),
            (GATE_PRECISION, self.precision.is_some()),
            (GATE_AGREEMENT, self.agreement.is_some()),
            (GATE_PAIRED, self.paired.is_some()),
            (GATE_SCORE_DRIFT, self.score_drift.is_some()),
            (GATE_INPUT_DRIFT, self.input_drift.is_some()),
        ];
        built_in
            .iter()
            .filter(|(_, set)| *set)
            .map(|(n, _)| *n)
            .chain(self.custom.iter().map(|c| c.name.as_str()))
            .collect()
    }

    /// These gates with a stage's add and remove: a gate in `add` replaces the one of its name.
    fn adjusted(&self, add: Option<&Gates>, remove: &[String]) -> Gates {
        let empty = Gates::default();
        let add = add.unwrap_or(&empty);
        let keep = |name: &str| !remove.iter().any(|r| r == name);
        fn pick<T: Clone>(added: &Option<T>, base: &Option<T>, kept: bool) -> Option<T> {
            added.clone().or_else(|| base.clone().filter(|_| kept))
        }
        let mut custom: Vec<CustomGate> = self
            .custom
            .iter()
            .filter(|c| keep(&c.name) && !add.custom.iter().any(|a| a.name == c.name))
            .cloned()
            .collect();
        custom.extend(add.custom.iter().cloned());
        Gates {
            error_rate: pick(&add.error_rate, &self.error_rate, keep(GATE_ERROR_RATE)),
            latency_p95: pick(&add.latency_p95, &self.latency_p95, keep(GATE_LATENCY_P95)),
            false_positive_rate: pick(
                &add.false_positive_rate,
                &self.false_positive_rate,
                keep(GATE_FALSE_POSITIVE_RATE),
            ),
            capture_rate: pick(&add.capture_rate, &self.capture_rate, keep(GATE_CAPTURE_RATE)),
            precision: pick(&add.precision, &self.precision, keep(GATE_PRECISION)),
            agreement: pick(&add.agreement, &self.agreement, keep(GATE_AGREEMENT)),
            paired: pick(&add.paired, &self.paired, keep(GATE_PAIRED)),
            score_drift: pick(&add.score_drift, &self.score_drift, keep(GATE_SCORE_DRIFT)),
            input_drift: pick(&add.input_drift, &self.input_drift, keep(GATE_INPUT_DRIFT)),
            custom,
        }
    }
}

impl ModelRolloutSpec {
    /// The gates stage `idx` checks, and where they come from.
    pub fn stage_gates(&self, idx: usize) -> (Gates, GateSet) {
        let base = &self.analysis.gates;
        match self.stages.get(idx).and_then(|s| s.gates.as_ref()) {
            None => (base.clone(), GateSet::Rollout),
            Some(StageGates { replace: Some(own), .. }) => (own.clone(), GateSet::StageReplaced),
            Some(StageGates { add, remove, .. }) => (base.adjusted(add.as_ref(), remove), GateSet::StageAdjusted),
        }
    }

    /// Every gate set the rollout may use: the rollout's, and each stage's own.
    pub fn all_gate_sets(&self) -> Vec<(String, Gates)> {
        let mut sets = vec![("spec.analysis.gates".to_string(), self.analysis.gates.clone())];
        for (i, s) in self.stages.iter().enumerate() {
            if let Some(g) = &s.gates {
                if let Some(r) = &g.replace {
                    sets.push((format!("spec.stages[{i}].gates.replace"), r.clone()));
                }
                if let Some(a) = &g.add {
                    sets.push((format!("spec.stages[{i}].gates.add"), a.clone()));
                }
            }
        }
        sets
    }
}
