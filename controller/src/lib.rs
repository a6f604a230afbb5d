//! modelrollout: progressive delivery for ML models on Kubernetes.
//!
//! * [`api`]: the `ModelRollout` custom resource.
//! * [`core`]: the pure decision core.
//! * [`conditions`]: condition types and reasons.

pub mod api;
pub mod conditions;
pub mod core;
pub mod crd;
