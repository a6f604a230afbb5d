//! The model a rollout serves: its name, version, artifact and runtime.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::*;

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
}, {
    "rule": "!has(self.reference) || self.uri.startsWith('oci://') == has(self.reference.path)",
    "message": "reference: path (the file in the model's image) with an oci:// model, else uri",
    "fieldPath": ".reference",
    "reason": "FieldValueInvalid"
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
    /// The model's reference distribution: quantile bins of each numeric input in its training
    /// data (`<model>.reference.json`, as `scripts/make_models.py` writes one beside every model).
    /// With it, the sidecar and the evidence service measure input drift (PSI per feature) and the
    /// `inputDrift` gate can judge it. Fetched and digest-checked like the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceArtifact>,
}

/// Where a model's reference distribution comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.uri) != has(self.path)",
    "message": "set uri or path, not both",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.uri) || self.uri.startsWith('https://') || self.uri.startsWith('http://') || self.uri.matches('^s3://[^/]+/.+') || self.uri.startsWith('/')",
    "message": "uri must be an http(s) URL, an s3://bucket/key object or an absolute path in the sidecar's image",
    "fieldPath": ".uri",
    "reason": "FieldValueInvalid"
}]))]
pub struct ReferenceArtifact {
    /// For a model fetched by the sidecar: where the reference comes from, in the same forms (and
    /// with the same credentials) as the model's `uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub uri: Option<String>,
    /// For an `oci://` model: the reference file in the same image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^[^/].*$"))]
    pub path: Option<String>,
    /// Lower-case hex SHA-256 of the reference file.
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: String,
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

    /// Where the sidecar reads the reference: its uri, or its path in the mounted model image.
    pub fn reference_location(&self) -> Option<(String, &str)> {
        let r = self.reference.as_ref()?;
        let at = match (&r.uri, &r.path) {
            (Some(uri), _) => uri.clone(),
            (None, Some(path)) => format!("{MODEL_IMAGE_MOUNT}/{}", path.trim_start_matches('/')),
            (None, None) => return None,
        };
        Some((at, &r.sha256))
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
