//! The Open Inference Protocol's gRPC service (`GRPCInferenceService`, tonic) on a port of its
//! own: the same metadata, validation, batching and metrics (`route="grpc_infer"`) as REST, with
//! errors as gRPC status codes.

use std::time::Instant;

use tonic::{Code, Status};

use super::oip::{self, InferInput, InferRequest, RequestedOutput};
use super::*;

/// The generated messages and service (build.rs, `proto/grpc_predict_v2.proto`).
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::model_infer_request::InferInputTensor;
use pb::model_infer_response::InferOutputTensor;
use pb::model_metadata_response::TensorMetadata;
use pb::*;

/// The service over the sidecar's shared state.
pub struct Grpc {
    state: Arc<AppState>,
}

/// The tonic service to serve (see `run`): the generated server, wrapped so that a ModelInfer
/// refused before it is decoded (over the size limit, undecodable) is counted under
/// `route="grpc_infer"` as REST's refusals are under theirs: the gates see bad gRPC traffic too.
pub fn service(state: Arc<AppState>) -> Counted {
    let limit = state.max_payload_bytes;
    Counted {
        inner: GrpcInferenceServiceServer::new(Grpc { state: state.clone() }).max_decoding_message_size(limit),
        state,
    }
}

impl Counted {
    /// Accepts requests compressed with `encoding`, and compresses answers with it for a client
    /// that says it accepts it (`grpc-accept-encoding`).
    pub fn compressed(mut self, encoding: tonic::codec::CompressionEncoding) -> Self {
        self.inner = self.inner.accept_compressed(encoding).send_compressed(encoding);
        self
    }
}

/// Set by [`Grpc::model_infer`] when it counted the call itself.
#[derive(Clone, Default)]
struct HandlerCounted(Arc<std::sync::atomic::AtomicBool>);

/// The gRPC server, counting the ModelInfer calls its handler never saw.
#[derive(Clone)]
pub struct Counted {
    inner: GrpcInferenceServiceServer<Grpc>,
    state: Arc<AppState>,
}

impl tonic::server::NamedService for Counted {
    const NAME: &'static str = <GrpcInferenceServiceServer<Grpc> as tonic::server::NamedService>::NAME;
}

/// The HTTP status a gRPC code stands for, as the handler counts (see [`status`]); a call tonic
/// could not decode is a bad request.
fn http_code(code: Code, message: &str) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument => 400,
        Code::NotFound => 404,
        Code::OutOfRange => 413,
        Code::ResourceExhausted => 429,
        Code::Unavailable => 503,
        Code::Internal if message.contains("decode") || message.contains("decompress") => 400,
        _ => 500,
    }
}

impl<B> tower::Service<axum::http::Request<B>> for Counted
where
    GrpcInferenceServiceServer<Grpc>: tower::Service<
            axum::http::Request<B>,
            Response = axum::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    <GrpcInferenceServiceServer<Grpc> as tower::Service<axum::http::Request<B>>>::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<axum::http::Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        let infer = req.uri().path().ends_with("/ModelInfer");
        let counted = HandlerCounted::default();
        req.extensions_mut().insert(counted.clone());
        let (state, start) = (self.state.clone(), Instant::now());
        let response = tower::Service::call(&mut self.inner, req);
        Box::pin(async move {
            let mut resp = response.await?;
            // A compressed message that inflates past the size limit is refused by tonic as
            // RESOURCE_EXHAUSTED (which says "try later"); it is too large, as an uncompressed one
            // over the limit is: OUT_OF_RANGE, counted as 413.
            let headers = resp.headers_mut();
            if headers.get("grpc-status").is_some_and(|v| v == "8")
                && headers.get("grpc-message").and_then(|v| v.to_str().ok()).is_some_and(|m| m.contains("size%20limit"))
            {
                headers.insert("grpc-status", axum::http::HeaderValue::from_static("11"));
            }
            if infer && !counted.0.load(std::sync::atomic::Ordering::SeqCst) {
                // Refused before the handler: a trailers-only answer, its status in the headers.
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(Code::Unknown, Code::from_i32);
                let message = resp.headers().get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or_default();
                state.count(metrics::Route::GrpcInfer.index(), http_code(code, message), start);
            }
            Ok(resp)
        })
    }
}

/// An API error as a gRPC status: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 413 OUT_OF_RANGE, 429
/// RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 500 INTERNAL (details logged, never returned).
pub fn status(e: &ApiError) -> Status {
    let code = match e {
        ApiError::InvalidArgument { .. } => Code::InvalidArgument,
        ApiError::NotFound(_) => Code::NotFound,
        ApiError::PayloadTooLarge { .. } => Code::OutOfRange,
        ApiError::ResourceExhausted => Code::ResourceExhausted,
        ApiError::Unavailable => Code::Unavailable,
        ApiError::UnsupportedEncoding(_) => Code::Unimplemented,
        ApiError::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            Code::Internal
        }
    };
    Status::new(code, e.oip_body()["error"].as_str().unwrap_or_default())
}

fn tensor_json(t: &InferInputTensor, raw: Option<&Vec<u8>>, i: usize) -> Result<Value, ApiError> {
    if let Some(raw) = raw {
        return oip::decode_raw(&t.datatype, raw, &format!("raw_input_contents[{i}]"));
    }
    let c = t.contents.clone().unwrap_or_default();
    check_contents(t, &c, i)?;
    Ok(match t.datatype.as_str() {
        "FP32" => Value::Array(c.fp32_contents.iter().map(|x| oip::float(f64::from(*x))).collect()),
        "FP64" => Value::Array(c.fp64_contents.iter().map(|x| oip::float(*x)).collect()),
        "INT64" => json!(c.int64_contents),
        "INT8" | "INT16" | "INT32" => json!(c.int_contents),
        "UINT64" => json!(c.uint64_contents),
        "UINT8" | "UINT16" | "UINT32" => json!(c.uint_contents),
        "BOOL" => json!(c.bool_contents),
        "BYTES" => {
            let texts = c
                .bytes_contents
                .into_iter()
                .map(|b| String::from_utf8(b).map(Value::String))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    ApiError::invalid(
                        format!("inputs[{i}].contents"),
                        Reason::WrongType,
                        "a BYTES element is not UTF-8",
                    )
                })?;
            Value::Array(texts)
        }
        other => {
            return Err(ApiError::invalid(
                format!("inputs[{i}].datatype"),
                Reason::WrongType,
                format!("{other} is not a datatype this server reads"),
            ));
        }
    })
}

/// The contents field a datatype's values go in, as the protocol assigns them.
fn contents_field(datatype: &str) -> Option<&'static str> {
    Some(match datatype {
        "FP32" => "fp32_contents",
        "FP64" => "fp64_contents",
        "INT64" => "int64_contents",
        "INT8" | "INT16" | "INT32" => "int_contents",
        "UINT64" => "uint64_contents",
        "UINT8" | "UINT16" | "UINT32" => "uint_contents",
        "BOOL" => "bool_contents",
        "BYTES" => "bytes_contents",
        _ => return None,
    })
}

/// Values in another contents field than the datatype's, or no values at all (a client using
/// shared memory, which this server does not offer), are refused: read as the datatype's field
/// they would score no rows and answer OK.
fn check_contents(t: &InferInputTensor, c: &pb::InferTensorContents, i: usize) -> Result<(), ApiError> {
    let Some(want) = contents_field(&t.datatype) else { return Ok(()) };
    let filled = [
        ("fp32_contents", c.fp32_contents.len()),
        ("fp64_contents", c.fp64_contents.len()),
        ("int64_contents", c.int64_contents.len()),
        ("int_contents", c.int_contents.len()),
        ("uint64_contents", c.uint64_contents.len()),
        ("uint_contents", c.uint_contents.len()),
        ("bool_contents", c.bool_contents.len()),
        ("bytes_contents", c.bytes_contents.len()),
    ];
    let field = format!("inputs[{i}].contents");
    if let Some((other, _)) = filled.iter().find(|(name, n)| *name != want && *n > 0) {
        let detail = format!("values in {other} for a {} tensor, whose values go in {want}", t.datatype);
        return Err(ApiError::invalid(field, Reason::WrongType, detail));
    }
    if filled.iter().all(|(_, n)| *n == 0) {
        let detail = format!("no data: {want} or raw_input_contents (shared memory is not supported)");
        return Err(ApiError::invalid(field, Reason::Missing, detail));
    }
    Ok(())
}

/// The gRPC request as the protocol-neutral one REST also builds.
fn request(r: &ModelInferRequest) -> Result<InferRequest, ApiError> {
    if !r.raw_input_contents.is_empty() && r.raw_input_contents.len() != r.inputs.len() {
        return Err(ApiError::invalid(
            "raw_input_contents",
            Reason::Malformed,
            format!("{} entries for {} inputs", r.raw_input_contents.len(), r.inputs.len()),
        ));
    }
    let inputs = r
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(InferInput {
                name: t.name.clone(),
                shape: t.shape.clone(),
                datatype: t.datatype.clone(),
                data: Some(tensor_json(t, r.raw_input_contents.get(i), i)?),
                parameters: Map::new(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let outputs = r.outputs.iter().map(|o| RequestedOutput { name: o.name.clone(), parameters: Map::new() }).collect();
    Ok(InferRequest { id: Some(r.id.clone()), inputs, outputs, parameters: Map::new() })
}

impl Grpc {
    fn check(&self, name: &str, version: &str) -> Result<(), Status> {
        let r = if version.is_empty() {
            check_name(&self.state, name)
        } else {
            oip::check_version(&self.state, name, version)
        };
        r.map_err(|e| status(&e))
    }

    async fn infer(&self, r: ModelInferRequest) -> Result<ModelInferResponse, ApiError> {
        let state = &self.state;
        let arrival = state.arrival();
        if r.model_version.is_empty() {
            check_name(state, &r.model_name)?;
        } else {
            oip::check_version(state, &r.model_name, &r.model_version)?;
        }
        let req = request(&r)?;
        let rid: Arc<str> = Arc::from(state.next_request_id());
        let done = oip::infer_core(state, rid, &req, arrival).await?;
        let n = done.scores.len() as i64;
        let outputs = done
            .outputs
            .iter()
            .map(|(name, _)| InferOutputTensor {
                name: name.to_string(),
                datatype: if *name == oip::PROBABILITY { "FP32" } else { "BOOL" }.into(),
                shape: vec![n],
                ..Default::default()
            })
            .collect();
        // Every output as raw little-endian bytes (what Triton answers, and its clients read).
        let raw_output_contents = done.outputs.iter().map(|(name, _)| done.raw(name)).collect();
        Ok(ModelInferResponse {
            model_name: state.model_name.clone(),
            model_version: state.model_version.clone(),
            id: done.id.to_string(),
            parameters: Default::default(),
            outputs,
            raw_output_contents,
        })
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(
        &self,
        _: tonic::Request<ServerLiveRequest>,
    ) -> Result<tonic::Response<ServerLiveResponse>, Status> {
        Ok(tonic::Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: tonic::Request<ServerReadyRequest>,
    ) -> Result<tonic::Response<ServerReadyResponse>, Status> {
        Ok(tonic::Response::new(ServerReadyResponse { ready: self.state.ready.load(Ordering::Acquire) }))
    }

    async fn model_ready(
        &self,
        r: tonic::Request<ModelReadyRequest>,
    ) -> Result<tonic::Response<ModelReadyResponse>, Status> {
        let r = r.into_inner();
        self.check(&r.name, &r.version)?;
        Ok(tonic::Response::new(ModelReadyResponse { ready: self.state.ready.load(Ordering::Acquire) }))
    }

    async fn server_metadata(
        &self,
        _: tonic::Request<ServerMetadataRequest>,
    ) -> Result<tonic::Response<ServerMetadataResponse>, Status> {
        Ok(tonic::Response::new(ServerMetadataResponse {
            name: oip::SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: oip::EXTENSIONS.map(String::from).to_vec(),
        }))
    }

    async fn model_metadata(
        &self,
        r: tonic::Request<ModelMetadataRequest>,
    ) -> Result<tonic::Response<ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        self.check(&r.name, &r.version)?;
        let tensor = |name: &str, datatype: &str| TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![-1],
        };
        Ok(tonic::Response::new(ModelMetadataResponse {
            name: self.state.model_name.clone(),
            versions: vec![self.state.model_version.clone()],
            platform: oip::PLATFORM.into(),
            inputs: oip::input_tensors(&self.state).iter().map(|(n, d)| tensor(n, d)).collect(),
            outputs: oip::OUTPUT_TENSORS.iter().map(|(n, d)| tensor(n, d)).collect(),
        }))
    }

    async fn model_infer(
        &self,
        r: tonic::Request<ModelInferRequest>,
    ) -> Result<tonic::Response<ModelInferResponse>, Status> {
        let start = Instant::now();
        if let Some(counted) = r.extensions().get::<HandlerCounted>() {
            counted.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let result = self.infer(r.into_inner()).await;
        // Counted as REST's routes are: the code label is the HTTP status the error maps to.
        let code = match &result {
            Ok(_) => 200,
            Err(e) => e.status().as_u16(),
        };
        self.state.count(metrics::Route::GrpcInfer.index(), code, start);
        result.map(tonic::Response::new).map_err(|e| status(&e))
    }
}
