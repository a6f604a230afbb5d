//! Loading a model (fetched and verified by [`crate::fetch`]): open ONNX Runtime sessions, check
//! the graph against the data contract, and score encoded rows.

use std::path::Path;

use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::memory::Allocator;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, TensorRef, ValueType};

use crate::config::Device;
use crate::error::{InferenceError, StartError};
use crate::validate::{InputKind, Rows};

static RUNTIME: std::sync::OnceLock<Environment> = std::sync::OnceLock::new();
static RUNTIME_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Loads ONNX Runtime from `ORT_DYLIB_PATH` (checked first: a missing library otherwise panics
/// inside ort) and builds the environment, once per process (ONNX Runtime allows only one).
pub fn init_runtime() -> Result<Environment, StartError> {
    let _guard = RUNTIME_INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = RUNTIME.get() {
        return Ok(env.clone());
    }
    let env = build_runtime()?;
    Ok(RUNTIME.get_or_init(|| env).clone())
}

fn build_runtime() -> Result<Environment, StartError> {
    let path = std::env::var("ORT_DYLIB_PATH").map_err(|_| {
        StartError::Runtime(
            "ORT_DYLIB_PATH is not set: point it at libonnxruntime.so (scripts/python-env.sh prints it)".into(),
        )
    })?;
    if !Path::new(&path).is_file() {
        return Err(StartError::Runtime(format!("ORT_DYLIB_PATH={path} is not a file")));
    }
    let builder = ort::init_from(&path).map_err(|e| StartError::Runtime(format!("loading {path}: {e}")))?;
    builder
        .with_name("inference-sidecar")
        .with_logger(std::sync::Arc::new(onnxruntime_log))
        .build()
        .map_err(|e| StartError::Runtime(e.to_string()))
}

/// ONNX Runtime's own messages as our log lines (target `onnxruntime`). Its warnings matter to an
/// operator: one says which nodes a CUDA session leaves on the CPU. Sessions only emit warnings and
/// worse (see [`builder`]), so nothing is formatted on the inference path.
fn onnxruntime_log(level: LogLevel, category: &str, _id: &str, location: &str, message: &str) {
    match level {
        LogLevel::Fatal | LogLevel::Error => tracing::error!(target: "onnxruntime", category, location, "{message}"),
        LogLevel::Warning => tracing::warn!(target: "onnxruntime", category, location, "{message}"),
        LogLevel::Info => tracing::debug!(target: "onnxruntime", category, location, "{message}"),
        LogLevel::Verbose => tracing::trace!(target: "onnxruntime", category, location, "{message}"),
    }
}

/// One ONNX Runtime session and how to feed it. Not shared: each inference thread owns one.
pub struct Engine {
    session: Session,
    input: String,
    output: String,
    /// Column of the positive-class probability in the output.
    column: usize,
    columns: usize,
    /// Whether the probability output is `[rows, columns]` (else `[rows]`).
    two_dimensional: bool,
    /// Run options by batch size (index = rows): on the CPU only the probability output is
    /// fetched, into a tensor allocated once per size. In-process that is ~0.6 µs less per call (of
    /// ~3.3 µs for one row) than fetching every output freshly allocated; the inference thread's
    /// time per batch is on every request's path (BENCHMARKS.md, session 11).
    run_options: Vec<Option<RunOptions<HasSelectedOutputs>>>,
    pub kind: InputKind,
    /// The device the session ended up on.
    pub device: Device,
}

/// Batch sizes up to this get preallocated outputs; larger ones (rare: a ranking request with many
/// candidates joining a full batch) have theirs allocated by ONNX Runtime each time.
const PREALLOCATED_ROWS: usize = 256;

/// Opens a session on the requested device. CUDA that cannot serve (no provider library, no CUDA
/// libraries, or no GPU visible to the process, which only shows when the session is created) falls
/// back to the CPU with one warning; the device gauge then says `device="cpu",requested="cuda"`.
fn open_session(
    env: &Environment,
    bytes: &[u8],
    threads: usize,
    device: Device,
) -> Result<(Session, Device), StartError> {
    if device == Device::Cuda {
        match cuda_session(builder(env, threads)?, bytes) {
            Ok(session) => return Ok((session, Device::Cuda)),
            Err(reason) => tracing::warn!(error = %reason, "CUDA requested but unavailable; serving on CPU"),
        }
    }
    let session = builder(env, threads)?
        .commit_from_memory(bytes)
        .map_err(|e| StartError::Runtime(format!("loading the graph: {e}")))?;
    Ok((session, Device::Cpu))
}

fn builder(env: &Environment, threads: usize) -> Result<SessionBuilder, StartError> {
    let rt = |e: ort::Error| StartError::Runtime(e.to_string());
    Session::builder(env)
        .map_err(rt)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| rt(e.into()))?
        .with_intra_threads(threads)
        .map_err(|e| rt(e.into()))?
        .with_log_level(LogLevel::Warning)
        .map_err(|e| rt(e.into()))
}

#[cfg(feature = "cuda")]
fn cuda_session(builder: SessionBuilder, bytes: &[u8]) -> Result<Session, String> {
    let mut builder = builder
        .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
        .map_err(|e| e.to_string())?;
    builder.commit_from_memory(bytes).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn cuda_session(_: SessionBuilder, _: &[u8]) -> Result<Session, String> {
    Err("this sidecar was built without the `cuda` feature".into())
}

impl Engine {
    /// Opens a session and checks the graph's input and output against the contract's encoding.
    pub fn new(
        env: &Environment,
        bytes: &[u8],
        threads: usize,
        device: Device,
        kind: InputKind,
    ) -> Result<Self, StartError> {
        let (session, used) = open_session(env, bytes, threads, device)?;
        let mismatch = |m: String| StartError::ContractMismatch(m);
        let inputs = session.inputs();
        if inputs.len() != 1 {
            return Err(mismatch(format!("the graph has {} inputs; one tensor input is supported", inputs.len())));
        }
        let input = &inputs[0];
        let (ty, shape) = match input.dtype() {
            ValueType::Tensor { ty, shape, .. } => (*ty, shape.to_vec()),
            other => return Err(mismatch(format!("input `{}` is {other:?}, not a tensor", input.name()))),
        };
        match kind {
            InputKind::Numeric { width } => {
                if ty != TensorElementType::Float32 {
                    return Err(mismatch(format!(
                        "input `{}` is {ty:?} but the contract is numeric (float32)",
                        input.name()
                    )));
                }
                let cols = shape.get(1).copied().unwrap_or(-1);
                if shape.len() != 2 || (cols != -1 && cols as usize != width) {
                    return Err(mismatch(format!(
                        "input `{}` has shape {shape:?} but the contract has {width} features",
                        input.name()
                    )));
                }
            }
            InputKind::Text => {
                if ty != TensorElementType::String {
                    return Err(mismatch(format!(
                        "input `{}` is {ty:?} but the contract's feature is a string",
                        input.name()
                    )));
                }
            }
        }
        // The probability output: `probabilities` (skl2onnx) or the first float output.
        let outputs = session.outputs();
        let float_outputs: Vec<_> = outputs
            .iter()
            .filter(|o| matches!(o.dtype(), ValueType::Tensor { ty: TensorElementType::Float32, .. }))
            .collect();
        let out = float_outputs
            .iter()
            .find(|o| o.name() == "probabilities")
            .or(float_outputs.first())
            .ok_or_else(|| mismatch("the graph has no float output to read a probability from".into()))?;
        let out_shape = match out.dtype() {
            ValueType::Tensor { shape, .. } => shape.to_vec(),
            _ => unreachable!(),
        };
        let columns = if out_shape.len() == 2 && out_shape[1] > 0 { out_shape[1] as usize } else { 1 };
        let two_dimensional = out_shape.len() == 2;
        if columns > 2 {
            return Err(mismatch(format!(
                "output `{}` has {columns} classes; a binary probability is expected",
                out.name()
            )));
        }
        Ok(Self {
            input: input.name().to_string(),
            output: out.name().to_string(),
            column: columns - 1,
            columns,
            two_dimensional,
            run_options: Vec::new(),
            kind,
            device: used,
            session,
        })
    }

    /// Scores rows: the positive-class probability per row.
    pub fn score(&mut self, rows: &Rows) -> Result<Vec<f32>, InferenceError> {
        let n = rows.len();
        // A CUDA session fetches every output into tensors ONNX Runtime allocates, as it did in the
        // runs on an H100 (BENCHMARKS.md, session 10): selecting and preallocating there has not
        // been run on a GPU.
        let slot = if self.device == Device::Cpu { Some(self.prepare_run_options(n)?) } else { None };
        let input = match rows {
            Rows::Numeric { width, values } => SessionInputValue::from(
                TensorRef::from_array_view(([n, *width], &values[..]))
                    .map_err(|e| InferenceError::Input(e.to_string()))?,
            ),
            Rows::Text(texts) => SessionInputValue::from(
                Tensor::from_string_array(([n, 1], &texts[..])).map_err(|e| InferenceError::Input(e.to_string()))?,
            ),
        };
        let inputs = ort::inputs![self.input.as_str() => input];
        let outputs = match slot {
            Some(slot) => self.session.run_with_options(inputs, self.run_options[slot].as_ref().expect("prepared")),
            None => self.session.run(inputs),
        }
        .map_err(|e| InferenceError::Run(e.to_string()))?;
        let (_, data) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| InferenceError::Output(e.to_string()))?;
        if data.len() != n * self.columns {
            return Err(InferenceError::OutputShape { values: data.len(), rows: n });
        }
        Ok((0..n).map(|i| data[i * self.columns + self.column]).collect())
    }

    /// Makes the run options for a batch of `n` rows on the CPU on first use; returns their index.
    fn prepare_run_options(&mut self, n: usize) -> Result<usize, InferenceError> {
        let prepare = |e: ort::Error| InferenceError::Prepare(e.to_string());
        let slot = n.min(PREALLOCATED_ROWS + 1);
        if self.run_options.len() <= slot {
            self.run_options.resize_with(slot + 1, || None);
        }
        if self.run_options[slot].is_none() {
            let mut selector = OutputSelector::no_default().with(self.output.as_str());
            if n <= PREALLOCATED_ROWS {
                let shape = if self.two_dimensional { vec![n, self.columns] } else { vec![n] };
                let tensor = Tensor::<f32>::new(&Allocator::default(), shape).map_err(prepare)?;
                selector = selector.preallocate(self.output.as_str(), tensor);
            }
            self.run_options[slot] = Some(RunOptions::new().map_err(prepare)?.with_outputs(selector));
        }
        Ok(slot)
    }
}
