//! Enforces the data contract on every request and encodes valid instances for the model.
//!
//! Numeric contracts (float, int, category) become one `f32` row per instance, features in contract
//! order (a category is its index in `categories`). A contract with one string feature becomes one
//! string per instance.

use std::collections::HashMap;

use modelrollout_contract::{DataContract, Feature, FeatureType};
use serde_json::{Map, Value};

use crate::error::{ApiError, Reason};

/// What the model's input tensor looks like, derived from the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// `f32` tensor `[N, width]`.
    Numeric { width: usize },
    /// string tensor `[N, 1]`.
    Text,
}

/// Instances encoded for the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Rows {
    Numeric { width: usize, values: Vec<f32> },
    Text(Vec<String>),
}

impl Rows {
    pub fn len(&self) -> usize {
        match self {
            Rows::Numeric { width, values } => values.len() / width.max(&1),
            Rows::Text(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn empty_like(kind: InputKind) -> Self {
        match kind {
            InputKind::Numeric { width } => Rows::Numeric { width, values: Vec::new() },
            InputKind::Text => Rows::Text(Vec::new()),
        }
    }

    pub fn clear(&mut self) {
        match self {
            Rows::Numeric { values, .. } => values.clear(),
            Rows::Text(t) => t.clear(),
        }
    }

    /// Appends the rows of `other` (same kind).
    pub fn extend(&mut self, other: &Rows) {
        match (self, other) {
            (Rows::Numeric { values, .. }, Rows::Numeric { values: more, .. }) => values.extend_from_slice(more),
            (Rows::Text(t), Rows::Text(more)) => t.extend(more.iter().cloned()),
            _ => unreachable!("rows of one model have one kind"),
        }
    }
}

/// A validation failure: the API error plus the feature label for the violations metric.
#[derive(Debug)]
pub struct Violation {
    pub error: ApiError,
    /// A contract feature name, or `_request` for problems not tied to one (never a client string).
    pub feature: String,
    pub reason: Reason,
}

pub struct Validator {
    pub contract: DataContract,
    pub kind: InputKind,
    index: HashMap<String, usize>,
}

impl Validator {
    pub fn new(contract: DataContract) -> Result<Self, String> {
        let strings = contract.inputs.iter().filter(|f| f.kind == FeatureType::String).count();
        let kind = match (strings, contract.inputs.len()) {
            (0, n) => InputKind::Numeric { width: n },
            (1, 1) => InputKind::Text,
            _ => return Err("a contract mixing string and numeric features is not supported".into()),
        };
        let index = contract.inputs.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        Ok(Self { contract, kind, index })
    }

    fn violation(&self, path: String, feature: &str, reason: Reason, detail: String) -> Violation {
        Violation { error: ApiError::invalid(path, reason, detail), feature: feature.to_string(), reason }
    }

    /// Validates one instance (an object by feature name) and appends its encoding to `out`.
    pub fn encode_instance(&self, obj: &Map<String, Value>, path: &str, out: &mut Rows) -> Result<(), Violation> {
        for key in obj.keys() {
            if !self.index.contains_key(key) {
                return Err(self.violation(
                    format!("{path}.{key}"),
                    "_request",
                    Reason::Unknown,
                    "unknown feature (not in the data contract)".into(),
                ));
            }
        }
        self.encode_with(|name| obj.get(name), path, out)
    }

    /// Validates one instance whose features come from `lookup` (used to merge ranking context and
    /// candidate) and appends its encoding.
    pub fn encode_with<'v>(
        &self,
        lookup: impl Fn(&str) -> Option<&'v Value>,
        path: &str,
        out: &mut Rows,
    ) -> Result<(), Violation> {
        match out {
            Rows::Numeric { values, .. } => {
                let start = values.len();
                for f in &self.contract.inputs {
                    match self.numeric(f, lookup(&f.name), path) {
                        Ok(v) => values.push(v),
                        Err(e) => {
                            values.truncate(start);
                            return Err(e);
                        }
                    }
                }
            }
            Rows::Text(texts) => {
                let f = &self.contract.inputs[0];
                texts.push(self.text(f, lookup(&f.name), path)?);
            }
        }
        Ok(())
    }

    /// Checks one already-numeric value against feature `i` (OIP tensors).
    pub fn check_number(&self, i: usize, v: f64, path: &str) -> Result<f32, Violation> {
        let f = &self.contract.inputs[i];
        let n = serde_json::Number::from_f64(v);
        match n {
            Some(n) => self.numeric(f, Some(&Value::Number(n)), path),
            None => Err(self.violation(path.to_string(), &f.name, Reason::NotFinite, "NaN or infinite".into())),
        }
    }

    /// Checks one string against the (single) text feature (OIP BYTES tensors).
    pub fn check_text(&self, s: &str, path: &str) -> Result<String, Violation> {
        let f = &self.contract.inputs[0];
        self.text(f, Some(&Value::String(s.to_string())), path)
    }

    fn numeric(&self, f: &Feature, v: Option<&Value>, path: &str) -> Result<f32, Violation> {
        let field = || format!("{path}.{}", f.name);
        let v = match v {
            None if f.nullable => return Ok(f32::NAN),
            None => return Err(self.violation(field(), &f.name, Reason::Missing, "required feature missing".into())),
            Some(Value::Null) if f.nullable => return Ok(f32::NAN),
            Some(Value::Null) => return Err(self.violation(field(), &f.name, Reason::Null, "null not allowed".into())),
            Some(v) => v,
        };
        match f.kind {
            FeatureType::Category => {
                let Value::String(s) = v else {
                    return Err(self.violation(
                        field(),
                        &f.name,
                        Reason::WrongType,
                        "expected a category string".into(),
                    ));
                };
                let cats = f.categories.as_deref().unwrap_or_default();
                match cats.iter().position(|c| c == s) {
                    Some(i) => Ok(i as f32),
                    None => Err(self.violation(
                        field(),
                        &f.name,
                        Reason::NotACategory,
                        "not one of the allowed categories".into(),
                    )),
                }
            }
            FeatureType::Float | FeatureType::Int => {
                let Value::Number(n) = v else {
                    let want = if f.kind == FeatureType::Int { "an integer" } else { "a number" };
                    return Err(self.violation(field(), &f.name, Reason::WrongType, format!("expected {want}")));
                };
                let x = n.as_f64().unwrap_or(f64::NAN);
                if !x.is_finite() {
                    return Err(self.violation(field(), &f.name, Reason::NotFinite, "NaN or infinite".into()));
                }
                if f.kind == FeatureType::Int && x.fract() != 0.0 {
                    return Err(self.violation(field(), &f.name, Reason::WrongType, "expected an integer".into()));
                }
                if f.min.is_some_and(|m| x < m) || f.max.is_some_and(|m| x > m) {
                    let range = format!(
                        "{x} outside [{}, {}]",
                        f.min.map_or("-inf".into(), |m| m.to_string()),
                        f.max.map_or("inf".into(), |m| m.to_string())
                    );
                    return Err(self.violation(field(), &f.name, Reason::OutOfRange, range));
                }
                Ok(x as f32)
            }
            FeatureType::String => unreachable!("numeric rows have no string features"),
        }
    }

    fn text(&self, f: &Feature, v: Option<&Value>, path: &str) -> Result<String, Violation> {
        let field = || format!("{path}.{}", f.name);
        let s = match v {
            None | Some(Value::Null) if f.nullable => return Ok(String::new()),
            None => return Err(self.violation(field(), &f.name, Reason::Missing, "required feature missing".into())),
            Some(Value::Null) => return Err(self.violation(field(), &f.name, Reason::Null, "null not allowed".into())),
            Some(Value::String(s)) => s,
            Some(_) => return Err(self.violation(field(), &f.name, Reason::WrongType, "expected a string".into())),
        };
        // Counted in characters, as people state a limit ("up to 300 characters"): no more
        // characters than bytes, so only a string longer in bytes is counted.
        if let Some(max) = f.max_length
            && s.len() > max as usize
        {
            let chars = s.chars().count();
            if chars > max as usize {
                return Err(self.violation(
                    field(),
                    &f.name,
                    Reason::TooLong,
                    format!("{chars} characters > maxLength {max}"),
                ));
            }
        }
        if s.contains('\0') {
            return Err(self.violation(field(), &f.name, Reason::Malformed, "contains a NUL byte".into()));
        }
        Ok(s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validator() -> Validator {
        let c: DataContract = serde_json::from_value(json!({"inputs": [
            {"name": "amount", "type": "float", "min": 0, "max": 100},
            {"name": "hour", "type": "int", "min": 0, "max": 23},
            {"name": "country", "type": "category", "categories": ["de", "fr"]},
            {"name": "age", "type": "float", "nullable": true}
        ]}))
        .unwrap();
        Validator::new(c).unwrap()
    }

    fn encode(v: Value) -> Result<Vec<f32>, (String, Reason)> {
        let val = validator();
        let mut rows = Rows::empty_like(val.kind);
        val.encode_instance(v.as_object().unwrap(), "instances[0]", &mut rows).map_err(|e| match e.error {
            ApiError::InvalidArgument { field, reason, .. } => (field, reason),
            other => panic!("{other:?}"),
        })?;
        match rows {
            Rows::Numeric { values, .. } => Ok(values),
            Rows::Text(_) => unreachable!(),
        }
    }

    #[test]
    fn encodes_in_contract_order_with_category_index_and_null_as_nan() {
        let row = encode(json!({"hour": 3, "amount": 12.5, "country": "fr"})).unwrap();
        assert_eq!(&row[..3], &[12.5, 3.0, 1.0]);
        assert!(row[3].is_nan());
    }

    #[test]
    fn every_error_names_the_field_and_reason() {
        let cases = [
            (json!({"amount": "12", "hour": 1, "country": "de"}), "instances[0].amount", Reason::WrongType),
            (json!({"amount": 101, "hour": 1, "country": "de"}), "instances[0].amount", Reason::OutOfRange),
            (json!({"amount": 100, "hour": 1.5, "country": "de"}), "instances[0].hour", Reason::WrongType),
            (json!({"hour": 1, "country": "de"}), "instances[0].amount", Reason::Missing),
            (json!({"amount": null, "hour": 1, "country": "de"}), "instances[0].amount", Reason::Null),
            (json!({"amount": 1, "hour": 1, "country": "us"}), "instances[0].country", Reason::NotACategory),
            (json!({"amount": 1, "hour": 1, "country": "de", "x": 1}), "instances[0].x", Reason::Unknown),
        ];
        for (input, field, reason) in cases {
            assert_eq!(encode(input.clone()).unwrap_err(), (field.to_string(), reason), "{input}");
        }
        // Boundaries are inclusive.
        assert!(encode(json!({"amount": 100, "hour": 23, "country": "de"})).is_ok());
        assert!(encode(json!({"amount": 0, "hour": 0, "country": "de"})).is_ok());
    }

    #[test]
    fn text_contract_checks_length_and_nul() {
        let c: DataContract =
            serde_json::from_value(json!({"inputs": [{"name": "text", "type": "string", "maxLength": 5}]})).unwrap();
        let v = Validator::new(c).unwrap();
        assert_eq!(v.kind, InputKind::Text);
        let mut rows = Rows::empty_like(v.kind);
        assert!(v.encode_instance(json!({"text": "hello"}).as_object().unwrap(), "i", &mut rows).is_ok());
        let e = v.encode_instance(json!({"text": "hello!"}).as_object().unwrap(), "i", &mut rows).unwrap_err();
        assert_eq!(e.reason, Reason::TooLong);
        // Characters, not bytes: five characters in eleven bytes fit, six do not.
        assert!(v.encode_instance(json!({"text": "héllö✓"}).as_object().unwrap(), "i", &mut rows).is_err());
        assert!(v.encode_instance(json!({"text": "héll✓"}).as_object().unwrap(), "i", &mut rows).is_ok());
        let e = v.encode_instance(json!({"text": "a\u{0}b"}).as_object().unwrap(), "i", &mut rows).unwrap_err();
        assert_eq!(e.reason, Reason::Malformed);
        assert_eq!(rows.len(), 2);
    }
}
