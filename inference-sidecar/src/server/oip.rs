//! Open Inference Protocol v2 (REST), to the letter of KServe's spec and Triton's HTTP docs:
//! server metadata, model metadata and readiness, and infer, each with and without a version;
//! errors as `{"error": "<message>"}`; the `outputs` a request asks for; the binary tensor data
//! extension (`Inference-Header-Content-Length`) in both directions.

use super::*;

/// The length of the JSON header of a body that carries binary tensor data after it.
pub(super) const INFER_HEADER_LENGTH: HeaderName = HeaderName::from_static("inference-header-content-length");

/// An OIP error response: the protocol's `{"error": "<message>"}`, with our `code`, `field` and
/// `reason` beside it.
pub(super) struct OipFailure(ApiError);

impl From<ApiError> for OipFailure {
    fn from(e: ApiError) -> Self {
        OipFailure(e)
    }
}

impl From<Failure> for OipFailure {
    fn from(f: Failure) -> Self {
        OipFailure(f.0)
    }
}

impl IntoResponse for OipFailure {
    fn into_response(self) -> Response {
        failure_response(self.0, true)
    }
}

/// The server's name, version and protocol extensions, as both protocols report them.
pub(super) const SERVER_NAME: &str = "modelrollout-inference-sidecar";
pub(super) const EXTENSIONS: [&str; 1] = ["binary_tensor_data"];

pub(super) async fn server_metadata() -> Response {
    Json(json!({"name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS})).into_response()
}

pub(super) fn check_version(state: &AppState, name: &str, version: &str) -> Result<(), ApiError> {
    check_name(state, name)?;
    if version == state.model_version { Ok(()) } else { Err(ApiError::NotFound(format!("{name} version {version}"))) }
}

/// The model's input tensors as metadata lists them: exactly what one valid request carries,
/// one `[-1]` tensor per contract input. (A single `input` tensor of shape [N, features] is also
/// accepted for numeric models; see the README.)
pub(super) fn input_tensors(state: &AppState) -> Vec<(String, &'static str)> {
    match state.validator.kind {
        InputKind::Numeric { .. } => {
            state.validator.contract.inputs.iter().map(|f| (f.name.clone(), datatype(f))).collect()
        }
        InputKind::Text => vec![(state.validator.contract.inputs[0].name.clone(), "BYTES")],
    }
}

/// The model's output tensors.
pub(super) const OUTPUT_TENSORS: [(&str, &str); 2] = [(PROBABILITY, "FP32"), (DECISION, "BOOL")];

/// The platform metadata names.
pub(super) const PLATFORM: &str = "onnxruntime_onnx";

fn metadata(state: &AppState) -> Response {
    let tensor = |(name, datatype): (&str, &str)| json!({"name": name, "datatype": datatype, "shape": [-1]});
    let inputs: Vec<Value> = input_tensors(state).iter().map(|(n, d)| tensor((n, d))).collect();
    Json(json!({
        "name": state.model_name,
        "versions": [state.model_version],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": OUTPUT_TENSORS.map(tensor),
    }))
    .into_response()
}

/// The datatype a numeric contract input takes, as metadata lists it: INT64 for `int`, FP32
/// otherwise.
fn datatype(f: &modelrollout_contract::Feature) -> &'static str {
    match f.kind {
        modelrollout_contract::FeatureType::Int => "INT64",
        _ => "FP32",
    }
}

pub(super) const PROBABILITY: &str = "probability";
pub(super) const DECISION: &str = "decision";

pub(super) async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, OipFailure> {
    check_name(&state, &name)?;
    Ok(metadata(&state))
}

pub(super) async fn model_metadata_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, OipFailure> {
    check_version(&state, &name, &version)?;
    Ok(metadata(&state))
}

pub(super) async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, OipFailure> {
    check_name(&state, &name)?;
    Ok(ready(State(state)).await)
}

pub(super) async fn model_ready_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, OipFailure> {
    check_version(&state, &name, &version)?;
    Ok(ready(State(state)).await)
}

/// An inference request, from REST's JSON or from gRPC's message.
#[derive(Deserialize)]
pub(super) struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    pub inputs: Vec<InferInput>,
    #[serde(default)]
    pub outputs: Vec<RequestedOutput>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

#[derive(Deserialize)]
pub(super) struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    /// Absent when the tensor comes as binary data after the JSON (`parameters.binary_data_size`).
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

#[derive(Deserialize)]
pub(super) struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
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
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, OipFailure> {
    check_name(&state, &name)?;
    infer_any(&state, rid, &headers, b).await
}

pub(super) async fn infer_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    Extension(RequestId(rid)): Extension<RequestId>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, OipFailure> {
    check_version(&state, &name, &version)?;
    infer_any(&state, rid, &headers, b).await
}

fn invalid(field: impl Into<String>, reason: Reason, detail: impl Into<String>) -> ApiError {
    ApiError::invalid(field, reason, detail)
}

/// The JSON part of a body, and the binary tensor data after it (empty without the extension).
fn split_body<'a>(headers: &HeaderMap, bytes: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(v) = headers.get(&INFER_HEADER_LENGTH) else { return Ok((bytes, &[])) };
    let n: usize = v
        .to_str()
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| invalid("Inference-Header-Content-Length", Reason::Malformed, "not a length"))?;
    if n > bytes.len() {
        return Err(invalid(
            "Inference-Header-Content-Length",
            Reason::Malformed,
            format!("{n} is more than the body's {} bytes", bytes.len()),
        ));
    }
    Ok(bytes.split_at(n))
}

/// Fills `data` of each input sent as binary (`parameters.binary_data_size`), in input order.
fn decode_binary(req: &mut InferRequest, mut binary: &[u8]) -> Result<(), ApiError> {
    for (i, input) in req.inputs.iter_mut().enumerate() {
        let Some(size) = input.parameters.get("binary_data_size") else {
            if input.data.is_none() {
                return Err(invalid(format!("inputs[{i}].data"), Reason::Missing, "no data and no binary_data_size"));
            }
            continue;
        };
        let size = size.as_u64().ok_or_else(|| {
            invalid(format!("inputs[{i}].parameters.binary_data_size"), Reason::Malformed, "not a size")
        })? as usize;
        if size > binary.len() {
            return Err(invalid(
                format!("inputs[{i}].parameters.binary_data_size"),
                Reason::Malformed,
                format!("{size} bytes, {} left in the body", binary.len()),
            ));
        }
        let (mine, rest) = binary.split_at(size);
        binary = rest;
        input.data = Some(decode_raw(&input.datatype, mine, &format!("inputs[{i}]"))?);
    }
    if !binary.is_empty() {
        return Err(invalid("body", Reason::Malformed, format!("{} bytes of binary data left over", binary.len())));
    }
    Ok(())
}

/// One tensor's raw bytes (the binary extension, gRPC's `raw_input_contents`) as JSON values:
/// little-endian fixed-size elements, or BYTES elements each a 4-byte length and the bytes.
pub(super) fn decode_raw(datatype: &str, mine: &[u8], field: &str) -> Result<Value, ApiError> {
    match datatype {
        // Every fixed-size type is read as what it is; the datatype rule (in `infer_rows`) then
        // says whether this input may be it.
        "FP32" | "FP64" | "INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16" | "UINT32" | "UINT64" | "BOOL" => {
            fixed_size(datatype, mine).map_err(|e| invalid(field, Reason::Malformed, e))
        }
        "BYTES" => {
            let mut items = Vec::new();
            let mut b = mine;
            while !b.is_empty() {
                if b.len() < 4 {
                    return Err(invalid(field, Reason::Malformed, "a BYTES element's length is cut short"));
                }
                let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let Some(text) = b.get(4..4 + len) else {
                    return Err(invalid(field, Reason::Malformed, "a BYTES element is cut short"));
                };
                let text = std::str::from_utf8(text)
                    .map_err(|_| invalid(field, Reason::WrongType, "a BYTES element is not UTF-8"))?;
                items.push(Value::String(text.to_string()));
                b = &b[4 + len..];
            }
            Ok(Value::Array(items))
        }
        other => Err(invalid(
            format!("{field}.datatype"),
            Reason::WrongType,
            format!("{other} is not a datatype this server reads"),
        )),
    }
}

/// A float as a JSON value. JSON has no NaN or infinity (serde_json would make them null, read
/// later as "expected a number"): they become the strings `NaN`, `Infinity`, `-Infinity`, which
/// the contract check refuses as not finite ([`non_finite`]).
pub(super) fn float(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else if x.is_nan() {
        json!("NaN")
    } else if x > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

/// A value [`float`] made of a NaN or an infinity, as that float.
fn non_finite(v: &Value) -> Option<f64> {
    match v.as_str()? {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Little-endian fixed-size elements as JSON values.
fn fixed_size(datatype: &str, bytes: &[u8]) -> Result<Value, String> {
    let width = match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" => 2,
        "FP32" | "INT32" | "UINT32" => 4,
        _ => 8,
    };
    if !bytes.len().is_multiple_of(width) {
        return Err(format!("{datatype} binary data is not a multiple of {width} bytes"));
    }
    let values = bytes.chunks_exact(width).map(|c| {
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(c);
        match datatype {
            "BOOL" => json!(c[0] != 0),
            "INT8" => json!(c[0] as i8),
            "UINT8" => json!(c[0]),
            "INT16" => json!(i16::from_le_bytes([c[0], c[1]])),
            "UINT16" => json!(u16::from_le_bytes([c[0], c[1]])),
            "FP32" => float(f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            "INT32" => json!(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            "UINT32" => json!(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            "FP64" => float(f64::from_le_bytes(b)),
            "INT64" => json!(i64::from_le_bytes(b)),
            _ => json!(u64::from_le_bytes(b)),
        }
    });
    Ok(Value::Array(values.collect()))
}

/// The datatype rule: an input's datatype must be the one model metadata lists. No conversion
/// (an FP64 tensor for an FP32 input would be rounded without a word): the client converts.
fn wrong_datatype(field: &str, got: &str, want: &str) -> ApiError {
    invalid(field, Reason::WrongType, format!("datatype {}, the model's metadata says {want}", crate::error::echo(got)))
}

/// The outputs to answer (all when none is asked for), each as binary data or JSON.
fn requested(req: &InferRequest) -> Result<Vec<(&'static str, bool)>, ApiError> {
    let all_binary = req.parameters.get("binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    if req.outputs.is_empty() {
        return Ok(vec![(PROBABILITY, all_binary), (DECISION, all_binary)]);
    }
    req.outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let name = match o.name.as_str() {
                PROBABILITY => PROBABILITY,
                DECISION => DECISION,
                other => {
                    return Err(invalid(
                        format!("outputs[{i}].name"),
                        Reason::Unknown,
                        format!(
                            "no output named {} (the model has {PROBABILITY} and {DECISION})",
                            crate::error::echo(other)
                        ),
                    ));
                }
            };
            let binary = o.parameters.get("binary_data").and_then(Value::as_bool).unwrap_or(all_binary);
            Ok((name, binary))
        })
        .collect()
}

async fn infer_any(
    state: &AppState,
    rid: Arc<str>,
    headers: &HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, OipFailure> {
    let arrival = state.arrival();
    let bytes = body(b, state.max_payload_bytes)?;
    let (head, binary) = split_body(headers, &bytes)?;
    let mut req: InferRequest = parse(head)?;
    decode_binary(&mut req, binary)?;
    let done = infer_core(state, rid, &req, arrival).await?;
    let n = done.scores.len();
    let mut tail: Vec<u8> = Vec::new();
    let tensors: Vec<Value> = done
        .outputs
        .iter()
        .map(|(name, binary)| {
            let datatype = if *name == PROBABILITY { "FP32" } else { "BOOL" };
            if *binary {
                let raw = done.raw(name);
                let size = raw.len();
                tail.extend(raw);
                json!({"name": name, "datatype": datatype, "shape": [n], "parameters": {"binary_data_size": size}})
            } else {
                let data = if *name == PROBABILITY { json!(done.scores) } else { json!(done.decisions) };
                json!({"name": name, "datatype": datatype, "shape": [n], "data": data})
            }
        })
        .collect();
    let answer = json!({"model_name": state.model_name, "model_version": state.model_version, "id": &*done.id, "outputs": tensors});
    if tail.is_empty() {
        return Ok(Json(answer).into_response());
    }
    let mut out = serde_json::to_vec(&answer).expect("JSON to memory");
    let head_len = out.len();
    out.extend(tail);
    let mut resp = out.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(INFER_HEADER_LENGTH, HeaderValue::from(head_len));
    Ok(resp)
}

/// What an inference answered: its id, the scores and decisions, and the outputs asked for
/// (each as binary or not).
pub(super) struct Inferred {
    pub id: Arc<str>,
    pub scores: Vec<f32>,
    pub decisions: Vec<bool>,
    pub outputs: Vec<(&'static str, bool)>,
}

impl Inferred {
    /// An output's little-endian bytes.
    pub fn raw(&self, name: &str) -> Vec<u8> {
        if name == PROBABILITY {
            self.scores.iter().flat_map(|s| s.to_le_bytes()).collect()
        } else {
            self.decisions.iter().map(|d| u8::from(*d)).collect()
        }
    }
}

/// Validates and scores a request, whichever protocol it came by.
pub(super) async fn infer_core(
    state: &AppState,
    rid: Arc<str>,
    req: &InferRequest,
    arrival: Option<crate::batcher::Arrival>,
) -> Result<Inferred, ApiError> {
    let outputs = requested(req)?;
    let rows = infer_rows(state, req).map_err(|e| match e {
        Ok(v) => state.refuse(v),
        Err(e) => e,
    })?;
    let id: Arc<str> = req.id.as_deref().filter(|i| !i.is_empty()).map_or(rid, Arc::from);
    let (scores, decisions) = state.score(rows, RowIds::instances(id.clone()), arrival).await?;
    Ok(Inferred { id, scores, decisions, outputs })
}

/// Encodes OIP inputs: one `[N, F]` tensor, or one `[N]` tensor per contract feature; BYTES for text.
fn infer_rows(state: &AppState, req: &InferRequest) -> Result<Rows, Result<Violation, ApiError>> {
    let bad = |field: String, reason: Reason, detail: String| Err(Err(ApiError::invalid(field, reason, detail)));
    if req.inputs.is_empty() {
        return bad("inputs".into(), Reason::Missing, "at least one input tensor is required".into());
    }
    let features = &state.validator.contract.inputs;
    match state.validator.kind {
        InputKind::Text => {
            let input = &req.inputs[0];
            if req.inputs.len() != 1 {
                return bad("inputs".into(), Reason::Malformed, "one BYTES tensor is expected".into());
            }
            if input.datatype != "BYTES" {
                return Err(Err(wrong_datatype("inputs[0].datatype", &input.datatype, "BYTES")));
            }
            let mut values = Vec::new();
            flatten(data(input), &mut values);
            if let Err(e) = check_shape(input, 1, values.len(), "inputs[0]") {
                return Err(Err(e));
            }
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
                if input.datatype != "FP32" {
                    return Err(Err(wrong_datatype("inputs[0].datatype", &input.datatype, "FP32")));
                }
                if input.shape[1] != width as i64 {
                    return bad("inputs[0].shape".into(), Reason::Malformed, format!("expected [N, {width}]"));
                }
                let mut flat = Vec::new();
                flatten(data(input), &mut flat);
                if let Err(e) = check_shape(input, 2, flat.len(), "inputs[0]") {
                    return Err(Err(e));
                }
                for (k, v) in flat.iter().enumerate() {
                    let path = format!("inputs[0].data[{k}]");
                    let Some(x) = v.as_f64().or_else(|| non_finite(v)) else {
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
                let want = datatype(&features[j]);
                if input.datatype != want {
                    return Err(Err(wrong_datatype(&format!("inputs[{i}].datatype"), &input.datatype, want)));
                }
                let mut flat = Vec::new();
                flatten(data(input), &mut flat);
                if let Err(e) = check_shape(input, 1, flat.len(), &format!("inputs[{i}]")) {
                    return Err(Err(e));
                }
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
                        Some(c) => match c[r].as_f64().or_else(|| non_finite(c[r])) {
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

/// A tensor's declared shape against what it carries: `rank` dimensions (one tensor per feature,
/// or per text, is rank 1 as metadata says; the single numeric tensor is `[N, F]`), none negative,
/// their product (computed with overflow checks) the number of `elements` sent, and at least one.
fn check_shape(input: &InferInput, rank: usize, elements: usize, at: &str) -> Result<(), ApiError> {
    let field = format!("{at}.shape");
    let shown = || format!("{:?}", input.shape.iter().take(8).collect::<Vec<_>>());
    if input.shape.len() != rank {
        let detail = format!("shape {} has {} dimensions; this input has {rank}", shown(), input.shape.len());
        return Err(ApiError::invalid(field, Reason::Malformed, detail));
    }
    let mut declared: u64 = 1;
    for &d in &input.shape {
        let Ok(d) = u64::try_from(d) else {
            return Err(ApiError::invalid(
                field,
                Reason::Malformed,
                format!("shape {} has a negative dimension", shown()),
            ));
        };
        declared = declared.checked_mul(d).ok_or_else(|| {
            ApiError::invalid(
                field.clone(),
                Reason::Malformed,
                format!("shape {} holds more elements than exist", shown()),
            )
        })?;
    }
    if declared != elements as u64 {
        let detail = format!("shape {} declares {declared} elements; {elements} were sent", shown());
        return Err(ApiError::invalid(field, Reason::Malformed, detail));
    }
    if elements == 0 {
        return Err(ApiError::invalid(field, Reason::Missing, "no elements: at least one row is required"));
    }
    Ok(())
}

/// An input's data (present: `decode_binary` filled in what came as binary, or refused the request).
fn data(input: &InferInput) -> &Value {
    input.data.as_ref().unwrap_or(&Value::Null)
}
