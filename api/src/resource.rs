//! The `ModelRollout` resource and its spec, with the cross-field rules (CEL) that guard the spec
//! as a whole. The rules for one field sit beside that field's type.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use kube_derive::CustomResource;

use crate::*;

/// Rolls a new model version out through traffic stages, gated on Prometheus metrics.
///
/// The spec's own rules ratchet: each refuses a change that breaks it, not one to an object that
/// broke it already (stored before the rule existed), so `pause`, `abort` and `promote` go
/// through on every stored object. (`optionalOldSelf`: on create there is no old object.)
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "modelrollout.dev",
    version = "v1alpha1",
    kind = "ModelRollout",
    plural = "modelrollouts",
    shortname = "mro",
    namespaced,
    status = "ModelRolloutStatus",
    category = "all",
    // A HorizontalPodAutoscaler scales the rollout itself: it sets `workload.replicas`, reads the
    // stable version's pods, and the controller sizes every version from it (never over it).
    scale(
        spec_replicas_path = ".spec.workload.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    crates(kube_core = "::kube_core"),
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Stage","type":"string","jsonPath":".status.stageName"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Stable","type":"string","jsonPath":".status.stableVersion"}"#,
    printcolumn = r#"{"name":"Candidate","type":"string","jsonPath":".status.candidateVersion"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(size(self.stages) == 0 || self.stages[size(self.stages) - 1].weight == 100) || (oldSelf.hasValue() && !(size(oldSelf.value().stages) == 0 || oldSelf.value().stages[size(oldSelf.value().stages) - 1].weight == 100))",
        "optionalOldSelf": true,
        "message": "the last stage must send 100% of traffic to the candidate",
        "fieldPath": ".stages",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "(self.stages.all(a, self.stages.exists_one(b, b.weight == a.weight)) && self.stages.map(s, s.weight).isSorted()) || (oldSelf.hasValue() && !(oldSelf.value().stages.all(a, oldSelf.value().stages.exists_one(b, b.weight == a.weight)) && oldSelf.value().stages.map(s, s.weight).isSorted()))",
        "optionalOldSelf": true,
        "message": "stage weights must be strictly increasing",
        "fieldPath": ".stages",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "(self.stages.all(a, self.stages.exists_one(b, b.name == a.name))) || (oldSelf.hasValue() && !(oldSelf.value().stages.all(a, oldSelf.value().stages.exists_one(b, b.name == a.name))))",
        "optionalOldSelf": true,
        "message": "stage names must be unique",
        "fieldPath": ".stages",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "(!has(self.webhooks) || self.webhooks.all(a, self.webhooks.exists_one(b, b.name == a.name))) || (oldSelf.hasValue() && !(!has(oldSelf.value().webhooks) || oldSelf.value().webhooks.all(a, oldSelf.value().webhooks.exists_one(b, b.name == a.name))))",
        "optionalOldSelf": true,
        "message": "webhook names must be unique",
        "fieldPath": ".webhooks",
        "reason": "FieldValueDuplicate"
    },
    {
        "rule": "(!has(self.acceptance) || (has(self.trafficRouting) && (has(self.trafficRouting.gatewayAPI) || has(self.trafficRouting.istio)))) || (oldSelf.hasValue() && !(!has(oldSelf.value().acceptance) || (has(oldSelf.value().trafficRouting) && (has(oldSelf.value().trafficRouting.gatewayAPI) || has(oldSelf.value().trafficRouting.istio)))))",
        "optionalOldSelf": true,
        "message": "acceptance needs a router (gatewayAPI or istio): with replica-ratio routing the candidate's pods take traffic as soon as they are Ready",
        "fieldPath": ".acceptance",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "(!self.stages.exists(s, has(s.match)) || (has(self.trafficRouting) && (has(self.trafficRouting.gatewayAPI) || has(self.trafficRouting.istio)))) || (oldSelf.hasValue() && !(!oldSelf.value().stages.exists(s, has(s.match)) || (has(oldSelf.value().trafficRouting) && (has(oldSelf.value().trafficRouting.gatewayAPI) || has(oldSelf.value().trafficRouting.istio)))))",
        "optionalOldSelf": true,
        "message": "an experiment stage (match) needs a router that matches requests (gatewayAPI or istio)",
        "fieldPath": ".stages",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "(!has(self.analysis) || !has(self.analysis.reward) || self.stages.exists(s, has(s.match))) || (oldSelf.hasValue() && !(!has(oldSelf.value().analysis) || !has(oldSelf.value().analysis.reward) || oldSelf.value().stages.exists(s, has(s.match))))",
        "optionalOldSelf": true,
        "message": "analysis.reward picks an experiment's winner: set match on a stage",
        "fieldPath": ".analysis.reward",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "(!has(self.analysis) || !has(self.analysis.reward) || !has(self.analysis.interval) || duration(self.analysis.interval) >= duration('5s')) || (oldSelf.hasValue() && !(!has(oldSelf.value().analysis) || !has(oldSelf.value().analysis.reward) || !has(oldSelf.value().analysis.interval) || duration(oldSelf.value().analysis.interval) >= duration('5s')))",
        "optionalOldSelf": true,
        "message": "with analysis.reward the interval is at least 5s: the reward sums its analyses' windows, each at least half an interval, and a window of a few Prometheus scrapes reads little or nothing",
        "fieldPath": ".analysis.interval",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "(self.stages.all(s, !has(s.gates) || !has(s.gates.remove) || s.gates.remove.all(n, has(self.analysis) && has(self.analysis.gates) && ((n == 'errorRate' && has(self.analysis.gates.errorRate)) || (n == 'latencyP95' && has(self.analysis.gates.latencyP95)) || (n == 'falsePositiveRate' && has(self.analysis.gates.falsePositiveRate)) || (n == 'captureRate' && has(self.analysis.gates.captureRate)) || (n == 'precision' && has(self.analysis.gates.precision)) || (n == 'agreement' && has(self.analysis.gates.agreement)) || (n == 'paired' && has(self.analysis.gates.paired)) || (n == 'scoreDrift' && has(self.analysis.gates.scoreDrift)) || (n == 'inputDrift' && has(self.analysis.gates.inputDrift)) || (has(self.analysis.gates.custom) && self.analysis.gates.custom.exists(c, c.name == n)))))) || (oldSelf.hasValue() && !(oldSelf.value().stages.all(s, !has(s.gates) || !has(s.gates.remove) || s.gates.remove.all(n, has(oldSelf.value().analysis) && has(oldSelf.value().analysis.gates) && ((n == 'errorRate' && has(oldSelf.value().analysis.gates.errorRate)) || (n == 'latencyP95' && has(oldSelf.value().analysis.gates.latencyP95)) || (n == 'falsePositiveRate' && has(oldSelf.value().analysis.gates.falsePositiveRate)) || (n == 'captureRate' && has(oldSelf.value().analysis.gates.captureRate)) || (n == 'precision' && has(oldSelf.value().analysis.gates.precision)) || (n == 'agreement' && has(oldSelf.value().analysis.gates.agreement)) || (n == 'paired' && has(oldSelf.value().analysis.gates.paired)) || (n == 'scoreDrift' && has(oldSelf.value().analysis.gates.scoreDrift)) || (n == 'inputDrift' && has(oldSelf.value().analysis.gates.inputDrift)) || (has(oldSelf.value().analysis.gates.custom) && oldSelf.value().analysis.gates.custom.exists(c, c.name == n)))))))",
        "optionalOldSelf": true,
        "message": "a stage's gates.remove names a gate that analysis.gates does not set",
        "fieldPath": ".stages",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "(!has(self.trafficRouting) || !has(self.trafficRouting.gatewayAPI) || !has(self.trafficRouting.gatewayAPI.grpcRoute) || (has(self.workload) && has(self.workload.grpcPort))) || (oldSelf.hasValue() && !(!has(oldSelf.value().trafficRouting) || !has(oldSelf.value().trafficRouting.gatewayAPI) || !has(oldSelf.value().trafficRouting.gatewayAPI.grpcRoute) || (has(oldSelf.value().workload) && has(oldSelf.value().workload.grpcPort))))",
        "optionalOldSelf": true,
        "message": "gatewayAPI.grpcRoute routes the sidecar's gRPC API: set workload.grpcPort",
        "fieldPath": ".trafficRouting.gatewayAPI.grpcRoute",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "((has(self.analysis) && ((has(self.analysis.promoteWithoutGates) && self.analysis.promoteWithoutGates) || (has(self.analysis.gates) && (has(self.analysis.gates.errorRate) || has(self.analysis.gates.latencyP95) || has(self.analysis.gates.falsePositiveRate) || has(self.analysis.gates.captureRate) || has(self.analysis.gates.precision) || has(self.analysis.gates.agreement) || has(self.analysis.gates.paired) || has(self.analysis.gates.scoreDrift) || has(self.analysis.gates.inputDrift) || (has(self.analysis.gates.custom) && size(self.analysis.gates.custom) > 0))))) || self.stages.all(s, has(s.gates) && (has(s.gates.replace) || has(s.gates.add)))) || (oldSelf.hasValue() && !((has(oldSelf.value().analysis) && ((has(oldSelf.value().analysis.promoteWithoutGates) && oldSelf.value().analysis.promoteWithoutGates) || (has(oldSelf.value().analysis.gates) && (has(oldSelf.value().analysis.gates.errorRate) || has(oldSelf.value().analysis.gates.latencyP95) || has(oldSelf.value().analysis.gates.falsePositiveRate) || has(oldSelf.value().analysis.gates.captureRate) || has(oldSelf.value().analysis.gates.precision) || has(oldSelf.value().analysis.gates.agreement) || has(oldSelf.value().analysis.gates.paired) || has(oldSelf.value().analysis.gates.scoreDrift) || has(oldSelf.value().analysis.gates.inputDrift) || (has(oldSelf.value().analysis.gates.custom) && size(oldSelf.value().analysis.gates.custom) > 0))))) || oldSelf.value().stages.all(s, has(s.gates) && (has(s.gates.replace) || has(s.gates.add)))))",
        "optionalOldSelf": true,
        "message": "set at least one gate in analysis.gates (or in every stage's gates), or analysis.promoteWithoutGates: true to promote on minDuration alone",
        "fieldPath": ".analysis.gates",
        "reason": "FieldValueRequired"
    }
]))]
pub struct ModelRolloutSpec {
    /// The model version to roll out. Changing `version` (or `sha256`) starts a rollout.
    pub model: ModelSpec,
    /// The pods that serve the stable and candidate versions.
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// How traffic is split between stable and candidate. At most one router; none means replica ratio.
    #[serde(default)]
    pub traffic_routing: TrafficRouting,
    /// Traffic stages, in order. Weights strictly increase and end at 100.
    #[serde(default = "default_stages")]
    #[schemars(length(min = 1, max = 16))]
    pub stages: Vec<Stage>,
    /// How each stage is judged.
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// What happens when a candidate fails or data stays inconclusive.
    #[serde(default)]
    pub rollback: RollbackPolicy,
    /// The days after a promotion: the previous version retained for an undo, the promoted
    /// version still judged, the previous version deprecated and removed. See [`AfterPromotion`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_promotion: Option<AfterPromotion>,
    /// Holds the rollout at its current weights while true. Abort still works while paused.
    #[serde(default)]
    pub paused: bool,
    /// One-shot requests (abort, promote, retry). See [`Operations`].
    #[serde(default, skip_serializing_if = "Operations::is_empty")]
    pub operations: Operations,
    /// Webhooks told about rollout events.
    #[serde(default, skip_serializing_if = "Notifications::is_empty")]
    pub notifications: Notifications,
    /// Checks a candidate must pass once its pods are Ready and before any traffic moves to it:
    /// a labelled golden set scored by its own pods, and a load check against its Service. A
    /// failure ends the rollout as `Failed`, naming the check; no traffic has moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptance: Option<AcceptanceSpec>,
    /// Gating webhooks (as Flagger's): their answers start, hold, end and follow the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub webhooks: Vec<GatingWebhook>,
}
