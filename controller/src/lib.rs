//! modelrollout: progressive delivery for ML models on Kubernetes.
//!
//! * [`api`]: the `ModelRollout` custom resource.
//! * [`core`]: the pure decision core.
//! * [`conditions`]: condition types and reasons.
//! * [`matching`]: an experiment stage's match as a router's header rule.
//! * [`plugin`]: the `kubectl modelrollout` plugin.
//! * [`reconcile`]: the loop that observes, decides and acts; [`workloads`], [`routers`], [`gates`]
//!   and [`notify`] are its adapters.

pub mod acceptance;
pub mod api;
pub mod cli;
pub mod conditions;
pub mod core;
pub mod crd;
pub mod error;
pub mod gates;
pub mod leader;
pub mod matching;
pub mod notify;
pub mod plugin;
pub mod reconcile;
pub mod route_watch;
pub mod routers;
pub mod telemetry;
pub mod webhooks;
pub mod workloads;
