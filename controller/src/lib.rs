//! modelrollout's controller: the reconcile loop and its adapters.
//!
//! * [`reconcile`]: observe -> decide (the pure core, `modelrollout-core`) -> act -> record.
//! * The adapters, named by what they talk to: [`workloads`] (Deployments and Services),
//!   [`routers`] (Gateway API, Istio, replica ratio), [`prometheus`] (the gates' queries),
//!   [`acceptance_runner`] (a candidate's golden-set and load checks), [`webhook_calls`] (gating
//!   webhooks), [`notify`] (notifications), [`route_watch`] (routes edited by others); [`outbound`]
//!   is the destination policy for whatever a ModelRollout names.
//! * [`leader`] election, [`telemetry`] (metrics and health), [`cli`] (flags and start-up).
//!
//! The API types are `modelrollout-api`'s, re-exported as [`api`]; the decision core is
//! `modelrollout-core`'s, re-exported as [`core`].

pub use modelrollout_api as api;
pub use modelrollout_api::{conditions, crd};
pub use modelrollout_core as core;

pub mod acceptance_runner;
pub mod cli;
pub mod error;
#[cfg(test)]
pub mod fixtures;
pub mod leader;
pub mod notify;
pub mod outbound;
pub mod prometheus;
pub mod reconcile;
pub mod route_watch;
pub mod routers;
pub mod telemetry;
pub mod webhook_calls;
pub mod workloads;
