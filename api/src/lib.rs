//! The `ModelRollout` API (`modelrollout.dev/v1alpha1`): the resource's types, one file per area,
//! the CEL rules beside the types they guard, the condition vocabulary, and the CRD they make.
//!
//! One source of truth: the CRD YAML under `crds/` is generated from these types by `crdgen`.
//! Cross-field rules live here as CEL (`x-kubernetes-validations`) so the apiserver rejects a bad
//! manifest at `kubectl apply` time, not the controller minutes later.

pub mod conditions;
pub mod crd;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod matching;

mod acceptance_spec;
mod after_promotion;
mod analysis_spec;
mod evidence;
mod model;
mod operations;
mod resource;
mod routing;
mod stages;
mod status;
mod webhook_spec;
mod workload;

pub use acceptance_spec::*;
pub use after_promotion::*;
pub use analysis_spec::*;
pub use evidence::*;
pub use model::*;
pub use operations::*;
pub use resource::*;
pub use routing::*;
pub use stages::*;
pub use status::*;
pub use webhook_spec::*;
pub use workload::*;

pub use modelrollout_contract::api as public_api;
pub use modelrollout_contract::hash::stable_hash;
pub use modelrollout_contract::{
    ApiShape, DataContract, DecisionLabels, Deprecation, Device, Duration, ErrorCounting, Feature, FeatureType,
    OutputKind, OutputSpec, PublicApi, ShedLoad,
};

/// A default written in this crate: always valid.
pub(crate) fn duration(text: &str) -> Duration {
    Duration::parse(text).expect("a valid default duration")
}
