//! The pods that serve the stable and candidate versions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.progressDeadline) || duration(self.progressDeadline) > duration('0s')",
    "message": "progressDeadline must be more than 0s",
    "fieldPath": ".progressDeadline",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.grpcPort) || !has(self.servicePort) || self.grpcPort != self.servicePort",
    "message": "grpcPort must differ from servicePort",
    "fieldPath": ".grpcPort",
    "reason": "FieldValueDuplicate"
}]))]
pub struct WorkloadSpec {
    /// Pods per version at 100% of traffic.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// Port the sidecar listens on and the Services expose.
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub service_port: i32,
    /// Port of the sidecar's Open Inference Protocol gRPC service, exposed as `grpc` on every
    /// Service of the rollout (unset: no gRPC). Its requests count in the gates like REST's
    /// (`route="grpc_infer"`); a gateway splits them with a GRPCRoute of the user's (not managed
    /// here yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub grpc_port: Option<i32>,
    /// Inference sidecar image. Left at its default, a model whose `runtime.device` is `cuda` gets
    /// the CUDA build of the same version (the tag with `-cuda`).
    #[serde(default = "default_sidecar_image")]
    #[schemars(length(min = 1, max = 512))]
    pub sidecar_image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// GPUs (`nvidia.com/gpu`) each pod requests; use with `model.runtime.device: cuda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// A candidate whose pods are not all Ready this long after it was started (or after they last
    /// were) fails the rollout; stable is untouched.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: Duration,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            service_port: default_service_port(),
            grpc_port: None,
            sidecar_image: default_sidecar_image(),
            resources: None,
            gpus: None,
            node_selector: None,
            tolerations: None,
            progress_deadline: default_progress_deadline(),
        }
    }
}

fn default_replicas() -> i32 {
    2
}
fn default_service_port() -> i32 {
    8080
}
/// The sidecar image a rollout gets by default, and its CUDA build (`inference-sidecar/Dockerfile.cuda`).
pub const SIDECAR_IMAGE: &str = "ghcr.io/modelrollout/inference-sidecar:0.1.0";
pub const SIDECAR_IMAGE_CUDA: &str = "ghcr.io/modelrollout/inference-sidecar:0.1.0-cuda";

fn default_sidecar_image() -> String {
    SIDECAR_IMAGE.into()
}
fn default_progress_deadline() -> Duration {
    duration("10m")
}
