//! The controller crate's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("traffic router: {0}")]
    Router(String),
    #[error("traffic router: {kind} {name} not found")]
    RouteNotFound { kind: &'static str, name: String },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the ModelRollout could not be read: {0}")]
    InvalidObject(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// A bounded label for metrics (never object names or messages).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Router(_) => "router",
            Error::RouteNotFound { .. } => "route_not_found",
            Error::Finalizer(_) => "finalizer",
            Error::InvalidObject(_) => "invalid_object",
            Error::Config(_) => "config",
        }
    }
}
