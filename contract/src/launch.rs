//! How the controller starts a sidecar: one [`Launch`] turns into the pod's environment
//! ([`Launch::to_env`]) and is read back from it ([`Launch::from_env`]); the sidecar's flags take
//! their environment variables from the [`env`] names here, so the two cannot drift apart.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::DataContract;
use crate::duration::Duration;

/// The environment variables the sidecar reads.
pub mod env {
    pub const CONFIG: &str = "SIDECAR_CONFIG";
    pub const MODEL_NAME: &str = "SIDECAR_MODEL_NAME";
    pub const MODEL_VERSION: &str = "SIDECAR_MODEL_VERSION";
    pub const MODEL_URI: &str = "SIDECAR_MODEL_URI";
    pub const MODEL_SHA256: &str = "SIDECAR_MODEL_SHA256";
    pub const CONTRACT: &str = "SIDECAR_CONTRACT";
    pub const CONTRACT_JSON: &str = "SIDECAR_CONTRACT_JSON";
    /// The model's reference distribution: a path or URL in the model's own forms.
    pub const REFERENCE: &str = "SIDECAR_REFERENCE";
    pub const REFERENCE_SHA256: &str = "SIDECAR_REFERENCE_SHA256";
    pub const ROLE: &str = "SIDECAR_ROLE";
    pub const LISTEN: &str = "SIDECAR_LISTEN";
    pub const GRPC_LISTEN: &str = "SIDECAR_GRPC_LISTEN";
    pub const DEVICE: &str = "SIDECAR_DEVICE";
    pub const THREADS: &str = "SIDECAR_THREADS";
    pub const WORKERS: &str = "SIDECAR_WORKERS";
    pub const RUNTIME_THREADS: &str = "SIDECAR_RUNTIME_THREADS";
    pub const MAX_BATCH_SIZE: &str = "SIDECAR_MAX_BATCH_SIZE";
    pub const MAX_BATCH_DELAY: &str = "SIDECAR_MAX_BATCH_DELAY";
    pub const QUEUE_CAPACITY: &str = "SIDECAR_QUEUE_CAPACITY";
    pub const MAX_PAYLOAD_BYTES: &str = "SIDECAR_MAX_PAYLOAD_BYTES";
    pub const MAX_CANDIDATES: &str = "SIDECAR_MAX_CANDIDATES";
    pub const FEEDBACK_CAPACITY: &str = "SIDECAR_FEEDBACK_CAPACITY";
    pub const FEEDBACK_TTL: &str = "SIDECAR_FEEDBACK_TTL";
    pub const DRIFT_WINDOW: &str = "SIDECAR_DRIFT_WINDOW";
    pub const WARMUP: &str = "SIDECAR_WARMUP";
    pub const SHUTDOWN_GRACE: &str = "SIDECAR_SHUTDOWN_GRACE";
    pub const SHUTDOWN_DEADLINE: &str = "SIDECAR_SHUTDOWN_DEADLINE";
    pub const LOG_FORMAT: &str = "SIDECAR_LOG_FORMAT";
    pub const CACHE_DIR: &str = "SIDECAR_CACHE_DIR";
    pub const EVIDENCE_URL: &str = "SIDECAR_EVIDENCE_URL";
    pub const NAMESPACE: &str = "SIDECAR_NAMESPACE";
    pub const ROLLOUT: &str = "SIDECAR_ROLLOUT";
    pub const EVIDENCE_TOKEN_FILE: &str = "SIDECAR_EVIDENCE_TOKEN_FILE";
    pub const EVIDENCE_QUEUE: &str = "SIDECAR_EVIDENCE_QUEUE";
    pub const EVIDENCE_SAMPLE_RATE: &str = "SIDECAR_EVIDENCE_SAMPLE_RATE";
}

/// The role a sidecar serves in: the `role` label of every series it exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Stable,
    Canary,
    Shadow,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Stable, Role::Canary, Role::Shadow];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Canary => "canary",
            Role::Shadow => "shadow",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    /// CUDA execution provider; the sidecar falls back to CPU (and says so) when no GPU is usable.
    Cuda,
}

impl Device {
    pub const ALL: [Device; 2] = [Device::Cpu, Device::Cuda];

    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// Everything the controller tells one sidecar.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub model_name: String,
    pub model_version: String,
    pub model_uri: String,
    pub model_sha256: String,
    pub contract: DataContract,
    /// The model's reference distribution (input drift), fetched and digest-checked like the model.
    pub reference: Option<ReferenceSource>,
    pub role: Role,
    pub port: u16,
    /// The Open Inference Protocol's gRPC port, when the pod serves it.
    pub grpc_port: Option<u16>,
    pub device: Device,
    pub threads: u32,
    pub max_batch_size: u32,
    pub max_batch_delay: Duration,
    /// Where the sidecar sends its prediction records, when the cluster has an evidence service.
    pub evidence: Option<EvidenceTarget>,
}

/// Where a sidecar reads the model's reference distribution, and its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceSource {
    pub uri: String,
    pub sha256: String,
}

/// The evidence service a sidecar reports to, and the rollout its records belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidenceTarget {
    pub url: String,
    pub namespace: String,
    pub rollout: String,
}

/// Why an environment does not describe a launch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name}: `{value}` is not valid: {why}")]
    Invalid { name: &'static str, value: String, why: String },
}

impl Launch {
    /// The pod's environment, in a fixed order.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let contract = serde_json::to_string(&self.contract).expect("a contract serialises");
        let mut out = vec![
            (env::MODEL_NAME, self.model_name.clone()),
            (env::MODEL_VERSION, self.model_version.clone()),
            (env::MODEL_URI, self.model_uri.clone()),
            (env::MODEL_SHA256, self.model_sha256.clone()),
            (env::CONTRACT_JSON, contract),
            (env::ROLE, self.role.as_str().into()),
            (env::LISTEN, format!("0.0.0.0:{}", self.port)),
            (env::DEVICE, self.device.as_str().into()),
            (env::THREADS, self.threads.to_string()),
            (env::MAX_BATCH_SIZE, self.max_batch_size.to_string()),
            (env::MAX_BATCH_DELAY, self.max_batch_delay.to_string()),
        ];
        if let Some(r) = &self.reference {
            out.push((env::REFERENCE, r.uri.clone()));
            out.push((env::REFERENCE_SHA256, r.sha256.clone()));
        }
        if let Some(p) = self.grpc_port {
            out.push((env::GRPC_LISTEN, format!("0.0.0.0:{p}")));
        }
        if let Some(e) = &self.evidence {
            out.push((env::EVIDENCE_URL, e.url.clone()));
            out.push((env::NAMESPACE, e.namespace.clone()));
            out.push((env::ROLLOUT, e.rollout.clone()));
        }
        out
    }

    /// Reads a launch back from an environment (`lookup` gives a variable's value).
    pub fn from_env(lookup: impl Fn(&'static str) -> Option<String>) -> Result<Self, LaunchError> {
        let get = |name: &'static str| lookup(name).ok_or(LaunchError::Missing(name));
        let invalid =
            |name: &'static str, value: &str, why: String| LaunchError::Invalid { name, value: value.into(), why };
        let number = |name: &'static str| -> Result<u32, LaunchError> {
            let v = get(name)?;
            v.parse().map_err(|e: std::num::ParseIntError| invalid(name, &v, e.to_string()))
        };
        let contract_json = get(env::CONTRACT_JSON)?;
        let role = get(env::ROLE)?;
        let listen = get(env::LISTEN)?;
        let device = get(env::DEVICE)?;
        let delay = get(env::MAX_BATCH_DELAY)?;
        let port_of = |name: &'static str, v: &str| {
            v.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).ok_or_else(|| invalid(name, v, "not HOST:PORT".into()))
        };
        let grpc_port = match lookup(env::GRPC_LISTEN) {
            Some(v) => Some(port_of(env::GRPC_LISTEN, &v)?),
            None => None,
        };
        let evidence = match lookup(env::EVIDENCE_URL) {
            Some(url) => Some(EvidenceTarget { url, namespace: get(env::NAMESPACE)?, rollout: get(env::ROLLOUT)? }),
            None => None,
        };
        let reference = match lookup(env::REFERENCE) {
            Some(uri) => Some(ReferenceSource { uri, sha256: get(env::REFERENCE_SHA256)? }),
            None => None,
        };
        Ok(Self {
            model_name: get(env::MODEL_NAME)?,
            model_version: get(env::MODEL_VERSION)?,
            model_uri: get(env::MODEL_URI)?,
            model_sha256: get(env::MODEL_SHA256)?,
            contract: serde_json::from_str(&contract_json)
                .map_err(|e| invalid(env::CONTRACT_JSON, &contract_json, e.to_string()))?,
            reference,
            role: Role::parse(&role).ok_or_else(|| invalid(env::ROLE, &role, "stable, canary or shadow".into()))?,
            port: port_of(env::LISTEN, &listen)?,
            grpc_port,
            device: Device::parse(&device).ok_or_else(|| invalid(env::DEVICE, &device, "cpu or cuda".into()))?,
            threads: number(env::THREADS)?,
            max_batch_size: number(env::MAX_BATCH_SIZE)?,
            max_batch_delay: delay
                .parse()
                .map_err(|e: crate::duration::DurationError| invalid(env::MAX_BATCH_DELAY, &delay, e.to_string()))?,
            evidence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Feature, FeatureType, OutputSpec};

    #[test]
    fn a_launch_survives_the_environment() {
        let launch = Launch {
            model_name: "fraud".into(),
            model_version: "v2".into(),
            model_uri: "http://models/fraud-v2.onnx".into(),
            model_sha256: "a".repeat(64),
            contract: DataContract {
                inputs: vec![Feature {
                    name: "amount".into(),
                    kind: FeatureType::Float,
                    min: Some(0.0),
                    max: None,
                    categories: None,
                    max_length: None,
                    nullable: true,
                }],
                output: OutputSpec::default(),
                apis: vec![crate::PublicApi {
                    path: "/v1/score".into(),
                    shape: crate::ApiShape::Classify,
                    labels: None,
                    item_id: None,
                    deprecation: None,
                }],
                errors: crate::ErrorCounting { shed_load: crate::ShedLoad::Error },
            },
            reference: Some(ReferenceSource {
                uri: "http://models/fraud-v2.reference.json".into(),
                sha256: "b".repeat(64),
            }),
            role: Role::Shadow,
            port: 8080,
            grpc_port: Some(8081),
            device: Device::Cuda,
            threads: 2,
            max_batch_size: 16,
            max_batch_delay: "1s500ms".parse().unwrap(),
            evidence: Some(EvidenceTarget {
                url: "http://modelrollout-evidence.modelrollout-system:8090".into(),
                namespace: "team-a".into(),
                rollout: "fraud".into(),
            }),
        };
        let env: std::collections::HashMap<_, _> = launch.to_env().into_iter().collect();
        assert_eq!(Launch::from_env(|k| env.get(k).cloned()), Ok(launch));
        assert_eq!(Launch::from_env(|_| None), Err(LaunchError::Missing(env::CONTRACT_JSON)));
    }
}
