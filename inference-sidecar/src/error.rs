//! Errors: what stops the sidecar from starting, and the one table from API error to HTTP status.

use axum::http::StatusCode;
use serde::Serialize;

/// Why the sidecar cannot start. Each is fatal: the process exits non-zero and is never ready.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("model download from {uri} failed: {reason}")]
    Download { uri: String, reason: String },
    #[error("model {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("model sha256 mismatch: expected {expected}, got {actual} ({uri})")]
    DigestMismatch { uri: String, expected: String, actual: String },
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("model does not match its data contract: {0}")]
    ContractMismatch(String),
    #[error("warm-up inference failed: {0}")]
    Warmup(#[from] InferenceError),
    #[error("warm-up inference gave non-finite scores {0:?}")]
    WarmupScores(Vec<f32>),
    #[error("reference statistics {path}: {reason}")]
    Reference { path: String, reason: String },
    #[error("listen: {0}")]
    Listen(String),
}

/// An API error, rendered as `{"error": {"code", "message", "field", "reason"}}` without internals.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {detail}")]
    InvalidArgument { field: String, reason: Reason, detail: String },
    #[error("payload over {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("Content-Encoding {0} is not decoded here (gzip, deflate or identity)")]
    UnsupportedEncoding(String),
    #[error("queue full, try again later")]
    ResourceExhausted,
    #[error("model not ready")]
    Unavailable,
    #[error("no model named {}", echo(.0))]
    NotFound(String),
    #[error("internal error")]
    Internal(#[from] InferenceError),
}

/// Why scoring a batch failed. Every request of the batch gets it (as a 500 that hides it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferenceError {
    #[error("building the input tensor: {0}")]
    Input(String),
    #[error("preparing the run: {0}")]
    Prepare(String),
    #[error("ONNX Runtime run: {0}")]
    Run(String),
    #[error("reading the output: {0}")]
    Output(String),
    #[error("the output has {values} values for {rows} rows")]
    OutputShape { values: usize, rows: usize },
    #[error("the inference thread ended")]
    ThreadEnded,
}

/// Why a field was refused; bounded, so it can be a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    WrongType,
    OutOfRange,
    NotFinite,
    Missing,
    Unknown,
    TooLong,
    NotACategory,
    Null,
    TooManyCandidates,
    Malformed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::WrongType => "wrong_type",
            Reason::OutOfRange => "out_of_range",
            Reason::NotFinite => "not_finite",
            Reason::Missing => "missing",
            Reason::Unknown => "unknown",
            Reason::TooLong => "too_long",
            Reason::NotACategory => "not_a_category",
            Reason::Null => "null",
            Reason::TooManyCandidates => "too_many_candidates",
            Reason::Malformed => "malformed",
        }
    }
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, reason: Reason, detail: impl Into<String>) -> Self {
        ApiError::InvalidArgument { field: field.into(), reason, detail: detail.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument { .. } => "INVALID_ARGUMENT",
            ApiError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedEncoding(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ApiError::Unavailable => "UNAVAILABLE",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    /// The Open Inference Protocol's error body: `error` is the message string; our code, and
    /// the field and reason of an invalid argument, ride along as extra keys.
    pub fn oip_body(&self) -> serde_json::Value {
        match self {
            ApiError::InvalidArgument { field, reason, detail } => serde_json::json!({
                "error": format!("{field}: {detail}"), "code": self.code(), "field": field, "reason": reason
            }),
            ApiError::Internal(_) => serde_json::json!({"error": "internal error", "code": self.code()}),
            other => serde_json::json!({"error": other.to_string(), "code": self.code()}),
        }
    }

    /// The JSON body. Internal details are logged, never returned.
    pub fn body(&self) -> serde_json::Value {
        match self {
            ApiError::InvalidArgument { field, reason, detail } => serde_json::json!({"error": {
                "code": self.code(), "message": format!("{field}: {detail}"), "field": field, "reason": reason
            }}),
            ApiError::Internal(_) => serde_json::json!({"error": {"code": self.code(), "message": "internal error"}}),
            other => serde_json::json!({"error": {"code": self.code(), "message": other.to_string()}}),
        }
    }
}

/// The longest piece of a request echoed back in an error message, in characters: a message (and
/// a gRPC status, whose trailer has a size limit) stays small whatever the request held.
pub const ECHO_LIMIT: usize = 128;

/// `text` as an error message may quote it: at most [`ECHO_LIMIT`] characters, then how long it was.
pub fn echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_LIMIT) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
    }
}
