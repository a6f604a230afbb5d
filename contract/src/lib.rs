//! What the controller and the inference sidecar agree on.
//!
//! * [`DataContract`]: the features a model takes and the output it gives. The controller embeds it in
//!   the `ModelRollout` spec and hands it to the sidecar; the sidecar enforces it on every request.
//! * [`metrics`]: the names and labels of the series the sidecar exports and the controller's built-in
//!   gates query. Changing one here changes both sides at once.
//! * [`duration`]: the one duration type, parser and schema pattern of both binaries.
//! * [`launch`]: how the controller starts a sidecar (its environment, role and device).
//! * [`evidence`]: the records, paths and series of the evidence service.
//! * [`api`]: the APIs a team published for its model, served by the sidecar and matched by the
//!   route the controller creates.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod api;
pub mod duration;
pub mod evidence;
pub mod hash;
pub mod launch;
pub mod metrics;

pub use api::{ApiShape, DecisionLabels, Deprecation, PublicApi};
pub use duration::Duration;
pub use launch::{Device, EvidenceTarget, Launch, ReferenceSource, Role};

/// The inputs a model needs and the output it produces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.apis) || self.apis.all(a, self.apis.exists_one(b, b.path == a.path))",
    "message": "each api path is published once",
    "fieldPath": ".apis",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.apis) || self.apis.all(a, a.shape != 'Rank' || !self.inputs.exists(f, f.name == (has(a.itemId) ? a.itemId : 'item_id')))",
    "message": "a Rank api's itemId (item_id when not set) names the item, not an input feature",
    "fieldPath": ".apis",
    "reason": "FieldValueInvalid"
}]))]
pub struct DataContract {
    /// Input features, by name. Requests naming a feature not listed here are rejected.
    #[schemars(length(min = 1, max = 512))]
    pub inputs: Vec<Feature>,
    /// How to read the model's output.
    #[serde(default)]
    pub output: OutputSpec,
    /// The APIs the team published for the model (`POST /moderate`, `/v1/rank:score`), served
    /// beside the standard routes. A route the controller creates matches exactly these paths
    /// when any is listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub apis: Vec<PublicApi>,
    /// What the error-rate gate counts as an error in this model's answers.
    #[serde(default, skip_serializing_if = "ErrorCounting::is_default")]
    pub errors: ErrorCounting,
}

/// What the error-rate gate counts as an error: answers with a 5xx status always; load shed
/// (429 with `Retry-After`, the queue full) only when the contract says so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorCounting {
    /// `NotAnError` (the default): a candidate shedding load is slow, which the latency gate
    /// judges. `Error`: every 429 counts against the error rate as a 5xx does.
    #[serde(default)]
    pub shed_load: ShedLoad,
}

impl ErrorCounting {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The HTTP statuses counted as errors, as a PromQL regular expression on the `code` label.
    pub fn code_regex(&self) -> &'static str {
        match self.shed_load {
            ShedLoad::NotAnError => "5..",
            ShedLoad::Error => "5..|429",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ShedLoad {
    #[default]
    NotAnError,
    Error,
}

/// One input feature and the values it accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    /// Feature name as clients send it and as the ONNX graph input is named.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"))]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FeatureType,
    /// Smallest accepted value (float and int features).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest accepted value (float and int features).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Accepted values (category features).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Longest accepted string in characters (Unicode scalar values; string features).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub max_length: Option<u32>,
    /// Whether `null` is accepted (the model then sees NaN for numbers and "" for strings).
    #[serde(default)]
    pub nullable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FeatureType {
    Float,
    Int,
    String,
    Category,
}

impl FeatureType {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureType::Float => "float",
            FeatureType::Int => "int",
            FeatureType::String => "string",
            FeatureType::Category => "category",
        }
    }
}

/// How the model's output is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    #[serde(default)]
    pub kind: OutputKind,
    /// Scores at or above the threshold are positive decisions.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: f64,
}

impl Default for OutputSpec {
    fn default() -> Self {
        Self { kind: OutputKind::Probability, threshold: default_threshold() }
    }
}

fn default_threshold() -> f64 {
    0.5
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// The probability of the positive class, in [0, 1].
    #[default]
    Probability,
}

/// Why a candidate contract cannot be served from what the stable contract's clients send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContractMismatch {
    #[error("input `{0}` is required by the candidate but not provided by the stable contract")]
    MissingInput(String),
    #[error("input `{name}` is {stable} in the stable contract but {candidate} in the candidate")]
    TypeChanged { name: String, stable: &'static str, candidate: &'static str },
    #[error("api `{0}` is published by the stable contract but not served by the candidate")]
    ApiDropped(String),
    #[error("api `{0}` answers in another shape in the candidate")]
    ApiShapeChanged(String),
}

impl DataContract {
    /// The inputs the candidate needs that callers of the stable version do not send (or send with
    /// another type). Empty means the candidate can take the stable version's traffic unchanged.
    /// A nullable candidate input may be absent: callers that omit it get the null treatment.
    pub fn unmet_by(&self, stable: &DataContract) -> Vec<ContractMismatch> {
        let mut problems = Vec::new();
        for input in &self.inputs {
            match stable.inputs.iter().find(|s| s.name == input.name) {
                None if input.nullable => {}
                None => problems.push(ContractMismatch::MissingInput(input.name.clone())),
                Some(s) if s.kind != input.kind => problems.push(ContractMismatch::TypeChanged {
                    name: input.name.clone(),
                    stable: s.kind.as_str(),
                    candidate: input.kind.as_str(),
                }),
                Some(_) => {}
            }
        }
        for api in &stable.apis {
            match self.apis.iter().find(|a| a.path == api.path) {
                None => problems.push(ContractMismatch::ApiDropped(api.path.clone())),
                Some(a) if a.shape != api.shape => problems.push(ContractMismatch::ApiShapeChanged(api.path.clone())),
                Some(_) => {}
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(name: &str, kind: FeatureType, nullable: bool) -> Feature {
        Feature { name: name.into(), kind, min: None, max: None, categories: None, max_length: None, nullable }
    }

    fn contract(inputs: Vec<Feature>) -> DataContract {
        DataContract { inputs, ..Default::default() }
    }

    #[test]
    fn candidate_needing_a_new_input_is_unmet() {
        let stable = contract(vec![feature("amount", FeatureType::Float, false)]);
        let candidate = contract(vec![
            feature("amount", FeatureType::Float, false),
            feature("device_age", FeatureType::Int, false),
        ]);
        assert_eq!(candidate.unmet_by(&stable), vec![ContractMismatch::MissingInput("device_age".into())]);
    }

    #[test]
    fn nullable_new_input_and_dropped_inputs_are_fine() {
        let stable =
            contract(vec![feature("amount", FeatureType::Float, false), feature("x", FeatureType::Int, false)]);
        let candidate =
            contract(vec![feature("amount", FeatureType::Float, false), feature("new", FeatureType::Float, true)]);
        assert!(candidate.unmet_by(&stable).is_empty());
    }

    #[test]
    fn changed_type_is_unmet() {
        let stable = contract(vec![feature("country", FeatureType::String, false)]);
        let candidate = contract(vec![feature("country", FeatureType::Category, false)]);
        assert_eq!(
            candidate.unmet_by(&stable),
            vec![ContractMismatch::TypeChanged { name: "country".into(), stable: "string", candidate: "category" }]
        );
    }

    #[test]
    fn a_published_api_must_stay_served_in_its_shape() {
        let api =
            |path: &str, shape| PublicApi { path: path.into(), shape, labels: None, item_id: None, deprecation: None };
        let inputs = vec![feature("text", FeatureType::String, false)];
        let stable = DataContract { apis: vec![api("/moderate", ApiShape::Classify)], ..contract(inputs.clone()) };
        let same = DataContract {
            apis: vec![api("/moderate", ApiShape::Classify), api("/v2/x", ApiShape::Rank)],
            ..contract(inputs.clone())
        };
        assert!(same.unmet_by(&stable).is_empty(), "a new path beside the old one is fine");
        let dropped = contract(inputs.clone());
        assert_eq!(dropped.unmet_by(&stable), vec![ContractMismatch::ApiDropped("/moderate".into())]);
        let reshaped = DataContract { apis: vec![api("/moderate", ApiShape::Rank)], ..contract(inputs) };
        assert_eq!(reshaped.unmet_by(&stable), vec![ContractMismatch::ApiShapeChanged("/moderate".into())]);
    }

    #[test]
    fn shed_load_counts_as_an_error_only_when_the_contract_says_so() {
        assert_eq!(ErrorCounting::default().code_regex(), "5..");
        assert_eq!(ErrorCounting { shed_load: ShedLoad::Error }.code_regex(), "5..|429");
        let c: DataContract =
            serde_json::from_str(r#"{"inputs":[{"name":"a","type":"float"}],"errors":{"shedLoad":"Error"}}"#).unwrap();
        assert_eq!(c.errors.shed_load, ShedLoad::Error);
    }

    #[test]
    fn output_defaults_to_probability_at_one_half() {
        let c: DataContract = serde_json::from_str(r#"{"inputs":[{"name":"a","type":"float"}]}"#).unwrap();
        assert_eq!(c.output, OutputSpec { kind: OutputKind::Probability, threshold: 0.5 });
        assert!(!c.inputs[0].nullable);
    }
}
