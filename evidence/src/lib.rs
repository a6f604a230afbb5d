//! The evidence service: one place in the cluster that owns the evidence of model quality.
//! Sidecars send it every prediction (stable's and candidates', mirrored ones included); whoever
//! has labels posts them once, days later if need be; it joins them durably (SQLite or
//! PostgreSQL) and exports the joined counts that the controller's quality gates read.
//!
//! * [`tally`]: what a new prediction or label adds to the counts (pure, the rules in one place).
//! * [`store`]: the database, its schema and transactions.
//! * [`auth`]: TokenReview and SubjectAccessReview.
//! * [`api`]: the HTTP routes.
//! * [`cloudevents`]: predictions as KServe's inference logger sends them.
//! * [`export`]: `/metrics` from the stored counts.

pub mod api;
pub mod auth;
pub mod cloudevents;
pub mod export;
pub mod store;
pub mod tally;

/// Every way the service fails.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("the database: {0}")]
    Store(String),
    #[error("the Kubernetes API: {0}")]
    Kubernetes(String),
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("{0}")]
    TooLarge(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
}
