//! The inference sidecar: serves one ONNX model with its data contract enforced, and exports the
//! metrics the rollout gates read.

pub mod batcher;
pub mod bookkeeping;
pub mod config;
pub mod drift;
pub mod error;
pub mod evidence;
pub mod feedback;
pub mod fetch;
pub mod metrics;
pub mod model;
pub mod run;
pub mod server;
pub mod validate;
