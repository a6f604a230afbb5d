//! The sidecar's one configuration struct: clap flags, each also an env var, plus an optional
//! config file holding the model and its data contract (what the controller mounts).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use modelrollout_contract::DataContract;
use serde::Deserialize;

use crate::error::StartError;

use modelrollout_contract::launch::env;
pub use modelrollout_contract::{Device, Role};

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("`{s}`: stable, canary or shadow"))
}

fn parse_device(s: &str) -> Result<Device, String> {
    Device::parse(s).ok_or_else(|| format!("`{s}`: cpu or cuda"))
}

/// Reads a duration with the one parser both binaries share (`modelrollout_contract::duration`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    modelrollout_contract::Duration::parse(s).map(|d| d.get()).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "inference-sidecar",
    version,
    about = "ONNX model server with data contracts and rollout-gate metrics"
)]
pub struct Args {
    /// YAML/JSON file with `model: {name, version, uri, sha256}`, `contract:` and `reference:`.
    #[arg(long, env = env::CONFIG)]
    pub config: Option<PathBuf>,
    #[arg(long, env = env::MODEL_NAME)]
    pub model_name: Option<String>,
    #[arg(long, env = env::MODEL_VERSION)]
    pub model_version: Option<String>,
    /// Path or http(s) URL of the ONNX file.
    #[arg(long, env = env::MODEL_URI)]
    pub model_uri: Option<String>,
    /// Expected lower-case hex SHA-256 of the model file.
    #[arg(long, env = env::MODEL_SHA256)]
    pub model_sha256: Option<String>,
    /// Data contract file (YAML/JSON), if not in --config.
    #[arg(long, env = env::CONTRACT)]
    pub contract: Option<PathBuf>,
    /// The data contract inline as JSON (what the controller sets), if not a file.
    #[arg(long, env = env::CONTRACT_JSON)]
    pub contract_json: Option<String>,
    /// The model's reference distribution (JSON, from scripts/make_models.py) for input drift: a
    /// path, or a URL in the model's forms (http(s)://, s3://).
    #[arg(long, env = env::REFERENCE)]
    pub reference: Option<String>,
    /// The reference's SHA-256; required for a URL (a local file without one is read as is).
    #[arg(long, env = env::REFERENCE_SHA256)]
    pub reference_sha256: Option<String>,
    #[arg(long, env = env::ROLE, value_parser = parse_role, default_value = "stable")]
    pub role: Role,
    #[arg(long, env = env::LISTEN, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Where the Open Inference Protocol's gRPC service listens (none unless set).
    #[arg(long, env = env::GRPC_LISTEN)]
    pub grpc_listen: Option<SocketAddr>,
    /// The cluster's evidence service: every scored row is sent there as a prediction record of
    /// `--namespace`'s `--rollout` (none unless set).
    #[arg(long, env = env::EVIDENCE_URL, requires_all = ["namespace", "rollout"])]
    pub evidence_url: Option<String>,
    #[arg(long, env = env::NAMESPACE)]
    pub namespace: Option<String>,
    #[arg(long, env = env::ROLLOUT)]
    pub rollout: Option<String>,
    /// The bearer token sent to the evidence service, read before each batch (the pod's projected
    /// ServiceAccount token, which the kubelet rotates).
    #[arg(long, env = env::EVIDENCE_TOKEN_FILE, default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token")]
    pub evidence_token_file: PathBuf,
    /// Prediction records waiting to be sent, at most; past it they are dropped and counted.
    #[arg(long, env = env::EVIDENCE_QUEUE, default_value_t = 100_000)]
    pub evidence_queue: usize,
    /// The share of request ids whose predictions are sent (by a fixed hash of the id: every
    /// version keeps the same requests, so matched pairs stay whole).
    #[arg(long, env = env::EVIDENCE_SAMPLE_RATE, default_value_t = 1.0)]
    pub evidence_sample_rate: f64,
    #[arg(long, env = env::DEVICE, value_parser = parse_device, default_value = "cpu")]
    pub device: Device,
    /// Intra-op threads per session.
    #[arg(long, env = env::THREADS, default_value_t = 1)]
    pub threads: usize,
    /// Inference threads, each with its own session.
    #[arg(long, env = env::WORKERS, default_value_t = 1)]
    pub workers: usize,
    /// Threads of the async runtime (HTTP, validation, metrics). Default: the CPUs this process may
    /// use (affinity and cgroup quota) less those the inference threads keep busy, at least one —
    /// more runtime threads than free cores only adds context switches.
    #[arg(long, env = env::RUNTIME_THREADS)]
    pub runtime_threads: Option<usize>,
    #[arg(long, env = env::MAX_BATCH_SIZE, default_value_t = 32)]
    pub max_batch_size: usize,
    /// How long a batch waits to fill, e.g. `1ms`, `500us`.
    #[arg(long, env = env::MAX_BATCH_DELAY, default_value = "1ms", value_parser = parse_duration)]
    pub max_batch_delay: Duration,
    /// Requests waiting for inference beyond this are shed with 429.
    #[arg(long, env = env::QUEUE_CAPACITY, default_value_t = 1024)]
    pub queue_capacity: usize,
    #[arg(long, env = env::MAX_PAYLOAD_BYTES, default_value_t = 64 * 1024)]
    pub max_payload_bytes: usize,
    /// Most candidates one ranking request may score.
    #[arg(long, env = env::MAX_CANDIDATES, default_value_t = modelrollout_contract::api::DEFAULT_MAX_CANDIDATES)]
    pub max_candidates: usize,
    /// Predictions remembered for label feedback.
    #[arg(long, env = env::FEEDBACK_CAPACITY, default_value_t = 200_000)]
    pub feedback_capacity: usize,
    #[arg(long, env = env::FEEDBACK_TTL, default_value = "1h", value_parser = parse_duration)]
    pub feedback_ttl: Duration,
    /// Requests in the rolling drift window.
    #[arg(long, env = env::DRIFT_WINDOW, default_value_t = 10_000)]
    pub drift_window: usize,
    /// Warm-up inferences before turning ready.
    #[arg(long, env = env::WARMUP, default_value_t = 16)]
    pub warmup: usize,
    /// After SIGTERM, how long to keep accepting (readiness already off) so load balancers and
    /// endpoints stop routing here before the listener closes; closing it earlier resets
    /// connections still in its backlog.
    #[arg(long, env = env::SHUTDOWN_GRACE, default_value = "3s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// How long in-flight requests may take to finish once the listener is closed.
    #[arg(long, env = env::SHUTDOWN_DEADLINE, default_value = "20s", value_parser = parse_duration)]
    pub shutdown_deadline: Duration,
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Where downloaded models are kept.
    #[arg(long, env = env::CACHE_DIR, default_value = "/tmp/inference-sidecar")]
    pub cache_dir: PathBuf,
    /// Download the model into --cache-dir, check its sha256, print its path and exit: what an
    /// init container runs so that the server finds it there. Only the model's uri and sha256
    /// are needed (flags or --config). The file streams to disk; it is never held whole.
    #[arg(long)]
    pub fetch_only: bool,
}

impl Args {
    /// The async runtime's thread count (see `runtime_threads`).
    pub fn runtime_threads(&self) -> usize {
        self.runtime_threads.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            cpus.saturating_sub(self.workers * self.threads).max(1)
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    #[serde(default)]
    model: FileModel,
    contract: Option<DataContract>,
    reference: Option<String>,
    reference_sha256: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct FileModel {
    name: Option<String>,
    version: Option<String>,
    uri: Option<String>,
    sha256: Option<String>,
}

/// Everything resolved: flags over file.
#[derive(Clone, Debug)]
pub struct Config {
    pub args: Args,
    pub model_name: String,
    pub model_version: String,
    pub model_uri: String,
    pub model_sha256: String,
    pub contract: DataContract,
    pub reference: Option<ReferenceConfig>,
}

/// Where the reference distribution is read, and the digest it must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceConfig {
    pub uri: String,
    pub sha256: Option<String>,
}

/// A lower-case 64-hex-character digest, or why not.
fn digest(flag: &str, value: &str) -> Result<String, StartError> {
    let sha = value.to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StartError::Config(format!("{flag} `{sha}` is not 64 hex characters")));
    }
    Ok(sha)
}

/// The model's uri and lower-case sha256 (64 hex characters), flags before the config file.
fn model_source(args: &Args, file: &FileConfig) -> Result<(String, String), StartError> {
    let need = |flag: &Option<String>, file: &Option<String>, name: &str| {
        flag.clone()
            .or_else(|| file.clone())
            .ok_or_else(|| StartError::Config(format!("missing {name} (flag, env or config file)")))
    };
    let sha = digest("--model-sha256", &need(&args.model_sha256, &file.model.sha256, "--model-sha256")?)?;
    Ok((need(&args.model_uri, &file.model.uri, "--model-uri")?, sha))
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &PathBuf) -> Result<T, StartError> {
    let text = std::fs::read_to_string(path).map_err(|e| StartError::Config(format!("{}: {e}", path.display())))?;
    serde_yaml::from_str(&text).map_err(|e| StartError::Config(format!("{}: {e}", path.display())))
}

impl Config {
    /// The model's uri and sha256 alone (what `--fetch-only` needs), from flags, env or --config.
    pub fn model_only(args: &Args) -> Result<(String, String), StartError> {
        let file: FileConfig = match &args.config {
            Some(p) => read_yaml(p)?,
            None => FileConfig::default(),
        };
        model_source(args, &file)
    }

    pub fn resolve(args: Args) -> Result<Self, StartError> {
        let file: FileConfig = match &args.config {
            Some(p) => read_yaml(p)?,
            None => FileConfig::default(),
        };
        let need = |flag: &Option<String>, file: Option<String>, name: &str| {
            flag.clone()
                .or(file)
                .ok_or_else(|| StartError::Config(format!("missing {name} (flag, env or config file)")))
        };
        // Before `file.contract` moves out.
        let (model_uri, sha) = model_source(&args, &file)?;
        let contract = match (&args.contract_json, &args.contract, file.contract) {
            (Some(json), _, _) => {
                serde_json::from_str(json).map_err(|e| StartError::Config(format!("--contract-json: {e}")))?
            }
            (None, Some(p), _) => read_yaml(p)?,
            (None, None, Some(c)) => c,
            (None, None, None) => {
                return Err(StartError::Config(
                    "missing the data contract (--contract, --contract-json or config file)".into(),
                ));
            }
        };
        if contract.inputs.is_empty() {
            return Err(StartError::Config("the data contract has no inputs".into()));
        }
        modelrollout_contract::api::check(&contract.apis, &contract.inputs)
            .map_err(|e| StartError::Config(format!("the data contract: {e}")))?;
        if args.max_batch_size == 0 || args.workers == 0 || args.queue_capacity == 0 {
            return Err(StartError::Config("max-batch-size, workers and queue-capacity must be > 0".into()));
        }
        let reference = match args.reference.clone().or(file.reference) {
            Some(uri) => {
                let sha256 = match args.reference_sha256.as_ref().or(file.reference_sha256.as_ref()) {
                    Some(s) => Some(digest("--reference-sha256", s)?),
                    None if crate::fetch::is_remote(&uri) => {
                        return Err(StartError::Config(format!("--reference {uri}: a URL needs --reference-sha256")));
                    }
                    None => None,
                };
                Some(ReferenceConfig { uri, sha256 })
            }
            None => None,
        };
        Ok(Self {
            model_name: need(&args.model_name, file.model.name, "--model-name")?,
            model_version: need(&args.model_version, file.model.version, "--model-version")?,
            model_uri,
            model_sha256: sha,
            contract,
            reference,
            args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_the_contracts() {
        assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
        assert_eq!(parse_duration("1s500ms").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
