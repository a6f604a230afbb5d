//! The `ModelRollout` API (`modelrollout.dev/v1alpha1`).
//!
//! One source of truth: the CRD YAML under `crds/` is generated from these types by `crdgen`.
//! Cross-field rules live here as CEL (`x-kubernetes-validations`) so the apiserver rejects a bad
//! manifest at `kubectl apply` time, not the controller minutes later.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use modelrollout_contract::{DataContract, Device, Duration, Feature, FeatureType, OutputKind, OutputSpec};

/// Rolls a new model version out through traffic stages, gated on Prometheus metrics.
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
        "rule": "size(self.stages) == 0 || self.stages[size(self.stages) - 1].weight == 100",
        "message": "the last stage must send 100% of traffic to the candidate",
        "fieldPath": ".stages",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "self.stages.all(a, self.stages.exists_one(b, b.weight == a.weight)) && self.stages.map(s, s.weight).isSorted()",
        "message": "stage weights must be strictly increasing",
        "fieldPath": ".stages",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "self.stages.all(a, self.stages.exists_one(b, b.name == a.name))",
        "message": "stage names must be unique",
        "fieldPath": ".stages",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "!has(self.webhooks) || self.webhooks.all(a, self.webhooks.exists_one(b, b.name == a.name))",
        "message": "webhook names must be unique",
        "fieldPath": ".webhooks",
        "reason": "FieldValueDuplicate"
    },
    {
        "rule": "!has(self.acceptance) || (has(self.trafficRouting) && (has(self.trafficRouting.gatewayAPI) || has(self.trafficRouting.istio)))",
        "message": "acceptance needs a router (gatewayAPI or istio): with replica-ratio routing the candidate's pods take traffic as soon as they are Ready",
        "fieldPath": ".acceptance",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "!self.stages.exists(s, has(s.match)) || (has(self.trafficRouting) && (has(self.trafficRouting.gatewayAPI) || has(self.trafficRouting.istio)))",
        "message": "an experiment stage (match) needs a router that matches requests (gatewayAPI or istio)",
        "fieldPath": ".stages",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "!has(self.analysis) || !has(self.analysis.reward) || self.stages.exists(s, has(s.match))",
        "message": "analysis.reward picks an experiment's winner: set match on a stage",
        "fieldPath": ".analysis.reward",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "!has(self.analysis) || !has(self.analysis.reward) || !has(self.analysis.interval) || duration(self.analysis.interval) >= duration('5s')",
        "message": "with analysis.reward the interval is at least 5s: each analysis adds its window (the interval, at least 5s) to the reward's evidence, and windows must not overlap",
        "fieldPath": ".analysis.interval",
        "reason": "FieldValueInvalid"
    },
    {
        "rule": "has(self.analysis) && ((has(self.analysis.promoteWithoutGates) && self.analysis.promoteWithoutGates) || (has(self.analysis.gates) && (has(self.analysis.gates.errorRate) || has(self.analysis.gates.latencyP95) || has(self.analysis.gates.falsePositiveRate) || has(self.analysis.gates.captureRate) || (has(self.analysis.gates.custom) && size(self.analysis.gates.custom) > 0))))",
        "message": "set at least one gate in analysis.gates, or analysis.promoteWithoutGates: true to promote on minDuration alone",
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

// ---------------------------------------------------------------------------------------------
// model

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Model name, as served at `/v1/models/{name}` and in metric labels.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Version label, e.g. `v2` or `2026-11-25.1`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"))]
    pub version: String,
    pub artifact: Artifact,
    #[serde(default)]
    pub runtime: RuntimeSpec,
    /// The inputs the model takes and its output. Enforced by the sidecar on every request.
    pub contract: DataContract,
}

impl ModelSpec {
    /// Whether two specs name the same model build (version and digest).
    pub fn same_build(&self, other: &ModelSpec) -> bool {
        self.version == other.version && self.artifact.sha256 == other.artifact.sha256
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.uri.startsWith('https://') || self.uri.startsWith('http://') || self.uri.startsWith('oci://') || self.uri.matches('^s3://[^/]+/.+') || self.uri.startsWith('/')",
    "message": "uri must be an http(s) URL, an s3://bucket/key object, an oci:// image reference or an absolute path in the sidecar's image",
    "fieldPath": ".uri",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.credentialsSecret) || self.uri.startsWith('s3://')",
    "message": "credentialsSecret is for s3:// artifacts",
    "fieldPath": ".credentialsSecret",
    "reason": "FieldValueInvalid"
}, {
    "rule": "self.uri.startsWith('oci://') == has(self.path)",
    "message": "path (the model file inside the image) is required with an oci:// uri, and only with one",
    "fieldPath": ".path",
    "reason": "FieldValueRequired"
}]))]
pub struct Artifact {
    /// Where the model comes from:
    /// - `http(s)://…`: the sidecar downloads it (e.g. from a model store Service in the cluster);
    /// - `s3://bucket/key`: the sidecar downloads it from S3 or an S3-compatible server (see
    ///   `credentialsSecret`);
    /// - `oci://<image reference>`: an OCI image mounted read-only into the pod as a volume
    ///   (Kubernetes ImageVolume, as KServe's modelcars do); `path` names the file in it;
    /// - `/…`: a file already in the sidecar's image.
    ///
    /// The sha256 is verified in every case.
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,
    /// The model file inside an `oci://` image, relative to the image's root, e.g. `models/fraud-v2.onnx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^[^/].*$"))]
    pub path: Option<String>,
    /// Lower-case hex SHA-256 of the artifact. The sidecar refuses to serve a file that differs.
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: String,
    /// For `s3://` artifacts: a Secret in the rollout's namespace whose keys become the pod's
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` for
    /// an S3-compatible server). Without it the pod's own credential chain applies (environment,
    /// web identity from a service account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
    #[serde(default)]
    pub format: ModelFormat,
}

/// Where the pod finds an `oci://` artifact's image: mounted read-only here.
pub const MODEL_IMAGE_MOUNT: &str = "/mnt/models";

/// How an artifact reaches the sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArtifactSource<'a> {
    /// Downloaded by the sidecar (`http(s)://`), or a file already in its image (`/…`).
    Fetched { uri: &'a str },
    /// An OCI image mounted as a volume; the sidecar reads `file` in it.
    Image { reference: &'a str, file: String },
}

impl Artifact {
    pub fn source(&self) -> ArtifactSource<'_> {
        match self.uri.strip_prefix("oci://") {
            Some(reference) => ArtifactSource::Image {
                reference,
                file: format!(
                    "{MODEL_IMAGE_MOUNT}/{}",
                    self.path.as_deref().unwrap_or_default().trim_start_matches('/')
                ),
            },
            None => ArtifactSource::Fetched { uri: &self.uri },
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    #[default]
    Onnx,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSpec {
    #[serde(default)]
    pub device: Device,
    /// Intra-op threads per inference session.
    #[serde(default = "default_threads")]
    #[schemars(range(min = 1, max = 64))]
    pub threads: u32,
    /// Largest batch the sidecar forms from concurrent requests.
    #[serde(default = "default_max_batch_size")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_batch_size: u32,
    /// Longest the sidecar waits for requests already being decoded to join a batch (it never
    /// waits on the chance that more will come).
    #[serde(default = "default_max_batch_delay")]
    pub max_batch_delay: Duration,
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            threads: default_threads(),
            max_batch_size: default_max_batch_size(),
            max_batch_delay: default_max_batch_delay(),
        }
    }
}

fn default_threads() -> u32 {
    1
}
fn default_max_batch_size() -> u32 {
    32
}
fn default_max_batch_delay() -> Duration {
    duration("1ms")
}

/// A default written in this file: always valid.
fn duration(text: &str) -> Duration {
    Duration::parse(text).expect("a valid default duration")
}

// ---------------------------------------------------------------------------------------------
// acceptance

/// Checks before any traffic (see [`ModelRolloutSpec::acceptance`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.goldenSet) || has(self.load)",
    "message": "acceptance needs goldenSet, load or both",
    "fieldPath": ".goldenSet",
    "reason": "FieldValueRequired"
}]))]
pub struct AcceptanceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden_set: Option<GoldenSetCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadCheck>,
    /// How long the checks may take, all together, before the rollout fails.
    #[serde(default = "default_acceptance_timeout")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) > duration('0s')", "message": "timeout must be more than 0s"}]))]
    pub timeout: Duration,
}

fn default_acceptance_timeout() -> Duration {
    duration("10m")
}

/// Labelled rows scored by the candidate's own pods (through its Service), and by stable's when
/// a limit is relative to stable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.auc) || has(self.accuracy) || has(self.maxScoreDifference) || has(self.maxContractFailureRate)",
    "message": "set at least one of auc, accuracy, maxScoreDifference, maxContractFailureRate",
    "fieldPath": ".auc",
    "reason": "FieldValueRequired"
}]))]
pub struct GoldenSetCheck {
    /// The golden set: JSON `{"threshold": 0.5, "rows": [{"features": {…}, "label": 0|1,
    /// "probability": 0.12}, …]}` (`probability`, the reference score, is optional; `threshold`
    /// too). Fetched over http(s) by the controller and verified against `sha256`.
    pub artifact: GoldenSetArtifact,
    /// The score at or above which a row counts as positive (default: the set's own `threshold`,
    /// else 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: Option<f64>,
    /// Area under the ROC curve of the candidate's scores against the labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auc: Option<GoldenLimit>,
    /// The share of rows whose decision at `threshold` matches the label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<GoldenLimit>,
    /// The largest absolute difference between the candidate's score and a row's reference
    /// `probability` (rows without one are skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_score_difference: Option<f64>,
    /// The largest share of rows the candidate may refuse as breaking its data contract (HTTP 400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_contract_failure_rate: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.uri.startsWith('https://') || self.uri.startsWith('http://')",
    "message": "uri must be an http(s) URL",
    "fieldPath": ".uri",
    "reason": "FieldValueInvalid"
}]))]
pub struct GoldenSetArtifact {
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,
    /// Lower-case hex SHA-256 of the file. A file that differs fails the check.
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: String,
}

/// A floor: absolute (`min`), relative to stable scoring the same rows (`maxBelowStable`), or both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.min) || has(self.maxBelowStable)",
    "message": "set min, maxBelowStable or both",
    "fieldPath": ".min",
    "reason": "FieldValueRequired"
}]))]
pub struct GoldenLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_below_stable: Option<f64>,
}

/// Open-loop load against the candidate's Service at `rate` requests a second for `duration`,
/// sent from inside the cluster (the controller's pod) with the golden set's rows as requests (or
/// one row of zeros when there is no golden set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadCheck {
    #[schemars(range(min = 1, max = 5000))]
    pub rate: u32,
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "duration(self) > duration('0s') && duration(self) <= duration('10m')", "message": "duration must be more than 0s and at most 10m"}]))]
    pub duration: Duration,
    /// The p95 latency the candidate must hold at that rate, as the client sees it.
    pub max_latency_p95: Duration,
    /// The largest share of requests that may fail (non-2xx, timeout, connection error).
    #[serde(default = "default_load_error_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: f64,
}

fn default_load_error_rate() -> f64 {
    0.01
}

// ---------------------------------------------------------------------------------------------
// gating webhooks

/// A webhook whose answer gates the rollout. The controller POSTs a JSON payload naming the
/// rollout, the stage, the versions and the last analysis's gate results (see the README).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.url.startsWith('https://') || self.url.startsWith('http://')",
    "message": "url must be an http(s) URL",
    "fieldPath": ".url",
    "reason": "FieldValueInvalid"
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

// ---------------------------------------------------------------------------------------------
// workload

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

// ---------------------------------------------------------------------------------------------
// traffic routing

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
pub struct GatewayApiRouting {
    /// Name of the `HTTPRoute` in the rollout's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub http_route: String,
    /// Create the route (owned by the rollout) instead of patching one the user manages.
    #[serde(default)]
    pub create: bool,
    /// Gateways the created route attaches to (only with `create`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentRef>,
}

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

// ---------------------------------------------------------------------------------------------
// stages

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

// ---------------------------------------------------------------------------------------------
// analysis

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.interval) || duration(self.interval) > duration('0s')",
    "message": "interval must be more than 0s",
    "fieldPath": ".interval",
    "reason": "FieldValueInvalid"
}]))]
pub struct AnalysisSpec {
    /// Time between analyses; also the query window.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    #[serde(default)]
    pub prometheus: PrometheusSpec,
    /// Consecutive failing analyses that roll back.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: u32,
    /// Consecutive inconclusive analyses that trigger `rollback.onInconclusive`.
    #[serde(default = "default_inconclusive_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub inconclusive_limit: u32,
    #[serde(default)]
    pub gates: Gates,
    /// Promote on `minDuration` alone when no gate is set. Without it, a spec with no gates is
    /// refused at apply time (and, if one gets through, its analyses are inconclusive: too little
    /// evidence never promotes). Shown in status as `promotingWithoutGates`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote_without_gates: bool,
    /// The reward that decides an experiment stage's winner (see `Stage.match`); the gates are
    /// its guardrails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<Reward>,
}

/// An experiment's reward: a proportion per arm (click-through, conversion), judged candidate
/// against stable by the sequential judge's anytime-valid interval on their difference, summed
/// over every analysis window of the experiment. The candidate wins once the interval lies wholly
/// beyond `minEffect` in the better direction; stable wins once it lies wholly short of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reward {
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_-]*$"))]
    pub name: String,
    /// PromQL for one arm's proportion over the window (same variables as a custom gate:
    /// `$version`, `$role`, `$interval`, ...).
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// PromQL for the trials behind it over the window (impressions, labelled answers).
    #[schemars(length(min = 1, max = 4096))]
    pub samples_query: String,
    /// Which way is better.
    #[serde(default)]
    pub direction: RewardDirection,
    /// The least improvement worth switching for (same unit as the query, 0.01 = 1 point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_effect: Option<f64>,
    /// The verdict's confidence: a wrong winner at most `1 - confidence` of the time, however
    /// often the controller looks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 0.9999))]
    pub confidence: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RewardDirection {
    /// Higher is better (click-through, conversion).
    #[default]
    Higher,
    /// Lower is better (abandonment, complaints).
    Lower,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            prometheus: PrometheusSpec::default(),
            failure_limit: default_failure_limit(),
            inconclusive_limit: default_inconclusive_limit(),
            gates: Gates::default(),
            promote_without_gates: false,
            reward: None,
        }
    }
}

fn default_interval() -> Duration {
    duration("1m")
}
fn default_failure_limit() -> u32 {
    2
}
fn default_inconclusive_limit() -> u32 {
    3
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.timeout) || duration(self.timeout) > duration('0s')",
    "message": "timeout must be more than 0s",
    "fieldPath": ".timeout",
    "reason": "FieldValueInvalid"
}]))]
pub struct PrometheusSpec {
    /// Prometheus base URL; the controller's `--prometheus-url` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub address: Option<String>,
    /// Per-query timeout. A query that times out is inconclusive.
    #[serde(default = "default_query_timeout")]
    pub timeout: Duration,
}

impl Default for PrometheusSpec {
    fn default() -> Self {
        Self { address: None, timeout: default_query_timeout() }
    }
}

fn default_query_timeout() -> Duration {
    duration("5s")
}

/// The gates every analysis checks. An unset built-in gate is not checked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.custom) || self.custom.all(a, self.custom.exists_one(b, b.name == a.name))",
    "message": "custom gate names must be unique",
    "fieldPath": ".custom",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.custom) || self.custom.all(c, !(c.name in ['errorRate', 'latencyP95', 'falsePositiveRate', 'captureRate']))",
    "message": "custom gate names must differ from the built-in gates",
    "fieldPath": ".custom",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.latencyP95) || !has(self.latencyP95.judge) || self.latencyP95.judge == 'Threshold'",
    "message": "latencyP95 is not a proportion: only the Threshold judge applies",
    "fieldPath": ".latencyP95.judge",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.errorRate) || ((!has(self.errorRate.max) || self.errorRate.max <= 1.0) && (!has(self.errorRate.maxAboveStable) || self.errorRate.maxAboveStable <= 1.0))",
    "message": "errorRate is a fraction: max and maxAboveStable are at most 1 (0.002 = 0.2%)",
    "fieldPath": ".errorRate",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.falsePositiveRate) || ((!has(self.falsePositiveRate.max) || self.falsePositiveRate.max <= 1.0) && (!has(self.falsePositiveRate.maxAboveStable) || self.falsePositiveRate.maxAboveStable <= 1.0))",
    "message": "falsePositiveRate is a fraction: max and maxAboveStable are at most 1",
    "fieldPath": ".falsePositiveRate",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.captureRate) || ((!has(self.captureRate.min) || (self.captureRate.min >= 0.0 && self.captureRate.min <= 1.0)) && (!has(self.captureRate.maxBelowStable) || self.captureRate.maxBelowStable <= 1.0))",
    "message": "captureRate is a fraction: min is between 0 and 1, maxBelowStable at most 1",
    "fieldPath": ".captureRate",
    "reason": "FieldValueInvalid"
}]))]
pub struct Gates {
    /// Share of requests answered 5xx (fraction, 0.002 = 0.2%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<UpperGate>,
    /// 95th-percentile request latency, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95: Option<UpperGate>,
    /// FP / (FP + TN) from label feedback (fraction). Samples are FP + TN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_positive_rate: Option<UpperGate>,
    /// Recall, TP / (TP + FN) from label feedback (fraction). Samples are TP + FN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_rate: Option<LowerGate>,
    /// Your own PromQL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub custom: Vec<CustomGate>,
}

/// A metric that must stay low: `value <= max` and `value <= stable + maxAboveStable`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.max) || has(self.maxAboveStable)",
    "message": "set max, maxAboveStable or both",
    "reason": "FieldValueRequired"
}]))]
pub struct UpperGate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max: Option<f64>,
    /// Allowed excess over the stable version measured over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_above_stable: Option<f64>,
    /// Fewer samples than this in the window make the gate inconclusive, never a pass
    /// (`Threshold` judge only).
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 0))]
    pub min_samples: u64,
    /// How the gate is judged: `Threshold` (default) or `Sequential` (proportion gates only).
    #[serde(default, skip_serializing_if = "Judge::is_threshold")]
    pub judge: Judge,
    /// The `Sequential` judge's confidence: its chance of a wrong verdict, over the whole rollout
    /// however often it looks, is at most `1 - confidence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 0.9999))]
    pub confidence: Option<f64>,
}

/// A metric that must stay high: `value >= min` and `value >= stable - maxBelowStable`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.min) || has(self.maxBelowStable)",
    "message": "set min, maxBelowStable or both",
    "reason": "FieldValueRequired"
}]))]
pub struct LowerGate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Allowed shortfall below the stable version (0 means "at least as good as stable").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_below_stable: Option<f64>,
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 0))]
    pub min_samples: u64,
    /// How the gate is judged: `Threshold` (default) or `Sequential`.
    #[serde(default, skip_serializing_if = "Judge::is_threshold")]
    pub judge: Judge,
    /// The `Sequential` judge's confidence (see [`UpperGate::confidence`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 0.9999))]
    pub confidence: Option<f64>,
}

/// How a proportion gate is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Judge {
    /// The window's value against the limits once `minSamples` are in: simple, and every look at
    /// a noisy estimate is another chance of a wrong verdict.
    #[default]
    Threshold,
    /// An anytime-valid confidence sequence on the candidate's proportion and its difference from
    /// stable, over every labelled sample since the rollout started: pass once the limits are
    /// shown met, fail once shown broken, inconclusive in between, with at most `1 - confidence`
    /// chance of a wrong verdict however often the controller looks.
    Sequential,
}

impl Judge {
    pub fn is_threshold(&self) -> bool {
        *self == Judge::Threshold
    }
}

/// The `Sequential` judge's confidence when a gate sets none.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

fn default_min_samples() -> u64 {
    50
}

/// A PromQL gate. `query` may use `$namespace`, `$name`, `$model`, `$version`, `$role` and
/// `$interval`; values are substituted as escaped string literals (or a duration for `$interval`),
/// never as raw PromQL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.min) || has(self.max) || has(self.maxAboveStable) || has(self.maxBelowStable)",
    "message": "set at least one of min, max, maxAboveStable and maxBelowStable",
    "reason": "FieldValueRequired"
}]))]
pub struct CustomGate {
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_-]*$"))]
    pub name: String,
    /// PromQL returning one sample.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// PromQL returning the sample count for `minSamples`; the candidate's request count in the
    /// window when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub samples_query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Allowed excess over the stable version's value over the same window (a guardrail such as
    /// "latency no more than 5 ms above stable").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_above_stable: Option<f64>,
    /// Allowed shortfall below the stable version's value ("click-through no more than 2
    /// points below stable").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_below_stable: Option<f64>,
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 0))]
    pub min_samples: u64,
}

// ---------------------------------------------------------------------------------------------
// rollback, operations, notifications

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// How long a failed candidate keeps its pods (for inspection) before scaling to zero.
    #[serde(default = "default_scale_down_delay")]
    pub scale_down_delay: Duration,
    /// How long the previous stable keeps its pods after a promotion, for a fast rollback.
    #[serde(default = "default_previous_stable_delay")]
    pub previous_stable_scale_down_delay: Duration,
    /// What `inconclusiveLimit` consecutive inconclusive analyses do. Never promote.
    #[serde(default)]
    pub on_inconclusive: InconclusivePolicy,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        Self {
            scale_down_delay: default_scale_down_delay(),
            previous_stable_scale_down_delay: default_previous_stable_delay(),
            on_inconclusive: InconclusivePolicy::Pause,
        }
    }
}

fn default_scale_down_delay() -> Duration {
    duration("30s")
}
fn default_previous_stable_delay() -> Duration {
    duration("10m")
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InconclusivePolicy {
    /// Hold the current weights and keep analysing; go on once an analysis passes.
    #[default]
    Pause,
    /// Roll back to stable.
    Rollback,
}

/// One-shot requests, written into the spec so they are declarative and survive GitOps.
///
/// Each request carries an `id`; the controller acts on a request once, when its `id` differs from
/// the one recorded in `status.handledOperations`, and leaves it in place. A GitOps tool applying
/// the manifest by server-side apply owns only the fields in Git, so a request written by another
/// field manager (`kubectl modelrollout abort`, `kubectl patch`) is neither removed nor re-run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operations {
    /// Roll back now, at any stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<OperationRequest>,
    /// Skip the gates of the current stage (or, with `full`, of all stages) and advance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<PromoteRequest>,
    /// Start a rolled-back or failed rollout again from the first stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<OperationRequest>,
}

impl Operations {
    pub fn is_empty(&self) -> bool {
        self.abort.is_none() && self.promote.is_none() && self.retry.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationRequest {
    /// Any string unique per request (the kubectl plugin writes a timestamp).
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromoteRequest {
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    /// Promote to 100% at once instead of to the next stage.
    #[serde(default)]
    pub full: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub webhooks: Vec<Webhook>,
}

impl Notifications {
    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    #[schemars(regex(pattern = r"^https?://"), length(max = 2048))]
    pub url: String,
    /// Events to send; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<NotificationEvent>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum NotificationEvent {
    StageChanged,
    Paused,
    RolledBack,
    Promoted,
}

// ---------------------------------------------------------------------------------------------
// status

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelRolloutStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// What holds a `Paused` rollout (set exactly while the phase is `Paused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// The spec sets no gate and `analysis.promoteWithoutGates`: stages advance on `minDuration`
    /// alone, with no evidence.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promoting_without_gates: bool,
    /// Why the rollout is in its phase (CamelCase, see `modelrollout::reasons`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last transition, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_start_time: Option<Time>,
    /// Percent of live traffic the candidate answers.
    #[serde(default)]
    pub canary_weight: i32,
    /// Percent of traffic mirrored to the candidate.
    #[serde(default)]
    pub mirror_percent: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_version: Option<String>,
    /// The stable model as last promoted: what the stable pods serve and what a rollback returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<ModelSpec>,
    /// Digest of the candidate this rollout is about (with `candidateVersion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<AnalysisRun>,
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub consecutive_inconclusive: u32,
    /// When the candidate's pods were last seen not Ready (cleared once they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_unready_since: Option<Time>,
    /// Scale-downs waiting for their delay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_scale_downs: Vec<PendingScaleDown>,
    #[serde(default, skip_serializing_if = "HandledOperations::is_empty")]
    pub handled_operations: HandledOperations,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Past rollouts, newest first, at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// The candidate's acceptance checks (`spec.acceptance`): running, passed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptance: Option<AcceptanceStatus>,
    /// Each gating webhook's last answer (see `spec.webhooks`), for the version it was about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookResult>,
    /// A rollout that ended and whose postRollout webhooks are still to be called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_rollout: Option<EndedRollout>,
    /// The requests routed to the candidate by match (an experiment stage's `match`), while
    /// they are; the candidate's weight is then 0.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<TrafficMatch>,
    /// This rollout's experiment (a stage with `match`): its arms, rule and reward so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentStatus>,
}

/// An experiment stage as it runs, and its result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    pub stage: String,
    /// Which requests reach the candidate, for people.
    pub rule: String,
    /// The share of user keys the candidate gets (`keyShare` only, after rounding to buckets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_share_percent: Option<f64>,
    /// The gates that stop the experiment when they fail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<String>,
    /// The reward's evidence and verdict (absent before the first analysis, or without a reward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<RewardResult>,
}

/// The reward's evidence so far: counts, intervals, the effect and the winner once shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewardResult {
    pub name: String,
    pub direction: RewardDirection,
    /// Candidate minus stable (the estimate), in the query's unit.
    pub effect: f64,
    /// Events and trials per arm, the candidate's interval, the difference's interval and the
    /// samples still needed, at `confidence`.
    pub evidence: SequentialEvidence,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<Arm>,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Arm {
    Stable,
    Candidate,
}

/// A gating webhook's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookResult {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: WebhookKind,
    /// The candidate version it was asked about.
    pub version: String,
    /// Whether it answered 2xx.
    pub ok: bool,
    /// The HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    pub message: String,
    pub attempts: u32,
    pub time: Time,
}

/// A rollout that ended, as its postRollout webhooks hear of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndedRollout {
    pub version: String,
    pub outcome: Outcome,
    pub message: String,
}

/// The acceptance checks of one candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptanceStatus {
    /// The candidate checked (with `sha256`): results never carry over to another build.
    pub version: String,
    pub sha256: String,
    pub start_time: Time,
    /// Absent while the checks run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// One result per limit, e.g. `goldenSet.auc`, `load.latencyP95`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<GateResult>,
    /// What was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden_set: Option<GoldenSetMeasurement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadMeasurement>,
    /// Why the checks could not run, when they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A golden set as scored by one version's pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoldenScores {
    /// Rows scored (rows refused for their contract are not).
    pub rows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// The largest |score − reference probability| over rows with a reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_score_difference: Option<f64>,
    /// Rows refused as breaking the data contract (HTTP 400), over all rows.
    pub contract_failure_rate: f64,
}

/// The golden set's results: the candidate's, and stable's when a limit is relative to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoldenSetMeasurement {
    pub rows: u64,
    pub threshold: f64,
    pub candidate: GoldenScores,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<GoldenScores>,
}

/// What the load check saw at the client.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadMeasurement {
    pub requests: u64,
    pub errors: u64,
    /// Requests a second actually sent (an open loop that fell behind sends fewer).
    pub achieved_rate: f64,
    pub latency_p50_seconds: f64,
    pub latency_p95_seconds: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// The stable version serves everything; nothing to roll out.
    Idle,
    /// A candidate is moving through the stages.
    Progressing,
    /// Held: by `spec.paused`, a manual-approval stage, or inconclusive data.
    Paused,
    /// The candidate became stable.
    Promoted,
    /// The candidate was rolled back (failed gates or abort); stable serves everything.
    RolledBack,
    /// The rollout could not run (contract mismatch, candidate never Ready); stable serves everything.
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "Idle",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Promoted => "Promoted",
            Phase::RolledBack => "RolledBack",
            Phase::Failed => "Failed",
        }
    }

    /// A rollout in this phase is underway (traffic may be on the candidate).
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused)
    }
}

/// What holds a paused rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Hold {
    /// `spec.paused` is true.
    Spec,
    /// `inconclusiveLimit` analyses in a row were inconclusive and `rollback.onInconclusive` is
    /// `Pause`: released by a passing analysis.
    Inconclusive,
    /// A `manualApproval` stage passed its gates: released by `promote`.
    Approval,
    /// The last stage passed and a confirmPromotion webhook has not answered 2xx yet: released by
    /// its 2xx (or `promote`).
    Confirmation,
}

impl Hold {
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::Spec => "Spec",
            Hold::Inconclusive => "Inconclusive",
            Hold::Approval => "Approval",
            Hold::Confirmation => "Confirmation",
        }
    }
}

/// One analysis: every gate's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRun {
    pub time: Time,
    pub stage_index: u32,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateResult {
    pub name: String,
    pub verdict: Verdict,
    /// The candidate's value (absent when there was none to read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The stable version's value over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_value: Option<f64>,
    /// The effective limit the value was judged against, e.g. `<= 0.002` or `>= 0.91`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// The effective numeric limit: the tightest upper bound (or, for gates with only lower limits,
    /// the tightest lower bound) after relative limits are resolved against stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<f64>,
    pub message: String,
    /// The `Sequential` judge's evidence so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialEvidence>,
}

/// What the sequential judge has seen since the rollout started, and what it shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequentialEvidence {
    pub confidence: f64,
    /// The candidate's events (false positives, captures, errors) and trials (labelled samples,
    /// requests), summed over every analysis window since the rollout started.
    pub candidate: Counts,
    pub stable: Counts,
    /// Where the candidate's proportion lies, at `confidence`, whenever it is looked at.
    pub candidate_interval: Interval,
    /// Where candidate minus stable lies (for relative limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difference_interval: Option<Interval>,
    /// About how many more candidate trials would settle the verdict, were the estimates to hold;
    /// absent once settled, or when an estimate sits on its limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_samples: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub events: u64,
    pub trials: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "Pass",
            Verdict::Fail => "Fail",
            Verdict::Inconclusive => "Inconclusive",
            Verdict::Error => "Error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingScaleDown {
    pub version: String,
    pub at: Time,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandledOperations {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}

impl HandledOperations {
    pub fn is_empty(&self) -> bool {
        self.abort.is_none() && self.promote.is_none() && self.retry.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub version: String,
    pub outcome: Outcome,
    pub reason: String,
    pub time: Time,
    /// The experiment's result, when this rollout ran one with a reward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<RewardResult>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Outcome {
    Promoted,
    RolledBack,
    Aborted,
    Failed,
    /// A newer version replaced it mid-rollout.
    Superseded,
}
