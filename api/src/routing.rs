//! How traffic is split between stable and candidate: Gateway API, Istio or replica ratio.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.gatewayAPI) ? 1 : 0) + (has(self.istio) ? 1 : 0) + (has(self.replicaRatio) ? 1 : 0) <= 1",
    "message": "set at most one traffic router: gatewayAPI, istio or replicaRatio",
    "reason": "FieldValueForbidden"
}]))]
pub struct TrafficRouting {
    /// Gateway API `HTTPRoute`: weights on backendRefs, `RequestMirror` filter for shadow.
    #[serde(default, rename = "gatewayAPI", skip_serializing_if = "Option::is_none")]
    pub gateway_api: Option<GatewayApiRouting>,
    /// Istio `VirtualService`: route weights, `mirror` + `mirrorPercentage` for shadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioRouting>,
    /// No mesh: the root Service selects both versions and the replica counts set the split.
    /// Approximate (per-connection, in steps of one pod) and without shadow traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_ratio: Option<ReplicaRatioRouting>,
}

/// Which router a spec selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterKind {
    GatewayApi,
    Istio,
    ReplicaRatio,
}

impl RouterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouterKind::GatewayApi => "gatewayAPI",
            RouterKind::Istio => "istio",
            RouterKind::ReplicaRatio => "replicaRatio",
        }
    }
}

impl TrafficRouting {
    pub fn kind(&self) -> RouterKind {
        if self.gateway_api.is_some() {
            RouterKind::GatewayApi
        } else if self.istio.is_some() {
            RouterKind::Istio
        } else {
            RouterKind::ReplicaRatio
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.hostnames) || (has(self.create) && self.create)",
    "message": "hostnames are for a route the controller creates (create: true); a route you manage has its own",
    "fieldPath": ".hostnames",
    "reason": "FieldValueInvalid"
}]))]
pub struct GatewayApiRouting {
    /// Name of the `HTTPRoute` in the rollout's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub http_route: String,
    /// Name of a `GRPCRoute` in the rollout's namespace that the split drives too, for clients of
    /// the sidecar's gRPC API (`workload.grpcPort`): the same weights, mirror and experiment
    /// header matches as the HTTPRoute, to the Services' `grpc` port. Created beside the
    /// HTTPRoute with `create` (matching the Open Inference Protocol's gRPC service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub grpc_route: Option<String>,
    /// Create the route (owned by the rollout) instead of patching one the user manages.
    #[serde(default)]
    pub create: bool,
    /// Gateways the created route attaches to (only with `create`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentRef>,
    /// Host names the created route answers for (only with `create`); every host of its listeners
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hostnames: Vec<Hostname>,
}

/// A host name as Gateway API takes it: a DNS name, or one with a leading `*.` wildcard label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Hostname(
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub String,
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioRouting {
    /// Name of the `VirtualService` in the rollout's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub virtual_service: String,
    /// Name of the HTTP route inside it to drive; the first one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Create the VirtualService (owned by the rollout) instead of patching one the user manages.
    #[serde(default)]
    pub create: bool,
    /// Hosts of the created VirtualService (only with `create`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Gateways of the created VirtualService (only with `create`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRatioRouting {}
