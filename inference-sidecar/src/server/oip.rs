//! Open Inference Protocol v2: model metadata, readiness and `/v2/models/{name}/infer`.

use super::*;

pub(super) async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    check_name(&state, &name)?;
    let inputs: Vec<Value> = match state.validator.kind {
        InputKind::Numeric { width } => state
            .validator
            .contract
            .inputs
            .iter()
            .map(|f| json!({"name": f.name, "datatype": "FP32", "shape": [-1]}))
            .chain(std::iter::once(json!({"name": "input", "datatype": "FP32", "shape": [-1, width]})))
            .collect(),
        InputKind::Text => {
            vec![json!({"name": state.validator.contract.inputs[0].name, "datatype": "BYTES", "shape": [-1]})]
        }
    };
    Ok(Json(json!({
        "name": state.model_name,
        "versions": [state.model_version],
        "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [-1]},
            {"name": "decision", "datatype": "BOOL", "shape": [-1]}
        ]
    }))
    .into_response())
}

pub(super) async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    check_name(&state, &name)?;
    Ok(ready(State(state)).await)
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InferInput>,
}

#[derive(Deserialize)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

/// Flattens nested JSON arrays (the OIP allows row-major nesting).
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

pub(super) async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Extension(RequestId(rid)): Extension<RequestId>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    check_name(&state, &name)?;
    let arrival = state.arrival();
    let bytes = body(b, state.max_payload_bytes)?;
    let req: InferRequest = parse(&bytes)?;
    let rows = infer_rows(&state, &req).map_err(|e| match e {
        Ok(v) => state.refuse(v),
        Err(e) => e,
    })?;
    let id: Arc<str> = req.id.as_deref().map_or(rid, Arc::from);
    let n = rows.len();
    let (scores, decisions) = state.score(rows, RowIds::instances(id.clone()), arrival).await?;
    Ok(Json(json!({
        "model_name": state.model_name,
        "model_version": state.model_version,
        "id": &*id,
        "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [n], "data": scores},
            {"name": "decision", "datatype": "BOOL", "shape": [n], "data": decisions}
        ]
    }))
    .into_response())
}

/// Encodes OIP inputs: one `[N, F]` tensor, or one `[N]` tensor per contract feature; BYTES for text.
fn infer_rows(state: &AppState, req: &InferRequest) -> Result<Rows, Result<Violation, ApiError>> {
    let bad = |field: String, reason: Reason, detail: String| Err(Err(ApiError::invalid(field, reason, detail)));
    if req.inputs.is_empty() {
        return bad("inputs".into(), Reason::Missing, "at least one input tensor is required".into());
    }
    let features = &state.validator.contract.inputs;
    let numeric_type =
        |dt: &str| matches!(dt, "FP32" | "FP64" | "FP16" | "INT8" | "INT16" | "INT32" | "INT64" | "UINT8");
    match state.validator.kind {
        InputKind::Text => {
            let input = &req.inputs[0];
            if req.inputs.len() != 1 || input.datatype != "BYTES" {
                return bad("inputs[0].datatype".into(), Reason::WrongType, "one BYTES tensor is expected".into());
            }
            let mut values = Vec::new();
            flatten(&input.data, &mut values);
            let mut texts = Vec::with_capacity(values.len());
            for (i, v) in values.iter().enumerate() {
                let path = format!("inputs[0].data[{i}]");
                let Value::String(s) = v else {
                    return bad(path, Reason::WrongType, "expected a string".into());
                };
                texts.push(state.validator.check_text(s, &path).map_err(Ok)?);
            }
            Ok(Rows::Text(texts))
        }
        InputKind::Numeric { width } => {
            let mut values = Vec::new();
            if req.inputs.len() == 1 && req.inputs[0].shape.len() == 2 {
                let input = &req.inputs[0];
                if !numeric_type(&input.datatype) {
                    return bad(
                        "inputs[0].datatype".into(),
                        Reason::WrongType,
                        format!("{} is not numeric", input.datatype),
                    );
                }
                if input.shape[1] != width as i64 {
                    return bad("inputs[0].shape".into(), Reason::Malformed, format!("expected [N, {width}]"));
                }
                let mut flat = Vec::new();
                flatten(&input.data, &mut flat);
                if flat.len() as i64 != input.shape[0] * width as i64 {
                    return bad("inputs[0].data".into(), Reason::Malformed, "data does not match shape".into());
                }
                for (k, v) in flat.iter().enumerate() {
                    let path = format!("inputs[0].data[{k}]");
                    let Some(x) = v.as_f64() else {
                        return bad(path, Reason::WrongType, "expected a number".into());
                    };
                    values.push(state.validator.check_number(k % width, x, &path).map_err(Ok)?);
                }
                return Ok(Rows::Numeric { width, values });
            }
            // One tensor per feature, by name.
            let mut columns: Vec<Option<Vec<&Value>>> = vec![None; width];
            for (i, input) in req.inputs.iter().enumerate() {
                let Some(j) = features.iter().position(|f| f.name == input.name) else {
                    let v = Violation {
                        error: ApiError::invalid(
                            format!("inputs[{i}].name"),
                            Reason::Unknown,
                            "unknown feature (not in the data contract)",
                        ),
                        feature: "_request".into(),
                        reason: Reason::Unknown,
                    };
                    return Err(Ok(v));
                };
                if !numeric_type(&input.datatype) {
                    return bad(
                        format!("inputs[{i}].datatype"),
                        Reason::WrongType,
                        format!("{} is not numeric", input.datatype),
                    );
                }
                let mut flat = Vec::new();
                flatten(&input.data, &mut flat);
                columns[j] = Some(flat);
            }
            let n = columns.iter().flatten().map(Vec::len).max().unwrap_or(0);
            for (j, col) in columns.iter().enumerate() {
                match col {
                    Some(c) if c.len() == n => {}
                    Some(_) => {
                        return bad(format!("inputs.{}", features[j].name), Reason::Malformed, "length differs".into());
                    }
                    None if features[j].nullable => {}
                    None => {
                        let v = Violation {
                            error: ApiError::invalid(
                                format!("inputs.{}", features[j].name),
                                Reason::Missing,
                                "required feature missing",
                            ),
                            feature: features[j].name.clone(),
                            reason: Reason::Missing,
                        };
                        return Err(Ok(v));
                    }
                }
            }
            for r in 0..n {
                for (j, col) in columns.iter().enumerate() {
                    let path = format!("inputs.{}[{r}]", features[j].name);
                    let x = match col {
                        Some(c) => match c[r].as_f64() {
                            Some(x) => x,
                            None => return bad(path, Reason::WrongType, "expected a number".into()),
                        },
                        None => {
                            values.push(f32::NAN);
                            continue;
                        }
                    };
                    values.push(state.validator.check_number(j, x, &path).map_err(Ok)?);
                }
            }
            Ok(Rows::Numeric { width, values })
        }
    }
}
