//! The sidecar binary as a process: digest and contract failures at start, CUDA fallback, and a
//! SIGTERM drain that loses no request in flight.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(name: &str, file: &str, sha: &str, contract: &std::path::Path, port: u16, extra: &[&str]) -> Child {
    require_ort();
    Command::new(env!("CARGO_BIN_EXE_inference-sidecar"))
        .args(["--model-name", name, "--model-version", "v1", "--model-sha256", sha, "--log-format", "text"])
        .arg("--model-uri")
        .arg(models().join(file))
        .arg("--contract")
        .arg(contract)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sidecar binary runs")
}

async fn wait_ready(base: &str) {
    let client = http();
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not ready in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
#[ignore = "needs ONNX Runtime: bash tests/run.sh"]
fn a_digest_mismatch_is_never_served_and_names_both_digests() {
    let c = contract_file(FRAUD_CONTRACT);
    let wrong = "0".repeat(64);
    let port = free_port();
    let mut child = spawn("fraud", "fraud-v2.onnx", &wrong, &c.0, port, &[]);
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(20));
    assert_ne!(code, 0);
    let line: Vec<&str> = stderr.lines().filter(|l| l.contains("sha256 mismatch")).collect();
    assert_eq!(line.len(), 1, "one clear line: {stderr}");
    assert!(line[0].contains(&wrong) && line[0].contains(&sha("fraud-v2.onnx")), "{}", line[0]);
    assert!(!stderr.contains("ready;"), "never ready: {stderr}");
}

#[test]
#[ignore = "needs ONNX Runtime: bash tests/run.sh"]
fn a_model_that_disagrees_with_its_contract_fails_at_start() {
    // Five features in the contract, six inputs in the graph.
    let five = FRAUD_CONTRACT.replace("  - {name: foreign, type: int, min: 0, max: 1}\n", "");
    assert_ne!(five, FRAUD_CONTRACT, "the contract lost its sixth feature");
    let c = contract_file(&five);
    let mut child = spawn("fraud", "fraud-v2.onnx", &sha("fraud-v2.onnx"), &c.0, free_port(), &[]);
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(20));
    assert_ne!(code, 0);
    assert!(stderr.contains("does not match its data contract") && stderr.contains("5 features"), "{stderr}");
    // A string contract for a numeric graph too.
    let c = contract_file(TOXICITY_CONTRACT);
    let mut child = spawn("fraud", "fraud-v2.onnx", &sha("fraud-v2.onnx"), &c.0, free_port(), &[]);
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(20));
    assert_ne!(code, 0);
    assert!(stderr.contains("does not match its data contract"), "{stderr}");
}

#[tokio::test]
#[ignore = "needs ONNX Runtime: bash tests/run.sh"]
async fn cuda_requested_without_a_gpu_falls_back_to_cpu_and_says_so() {
    let c = contract_file(FRAUD_CONTRACT);
    let port = free_port();
    let mut child = spawn("fraud", "fraud-v2.onnx", &sha("fraud-v2.onnx"), &c.0, port, &["--device", "cuda"]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    let text = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(
        metric(
            &text,
            r#"modelrollout_sidecar_device{model="fraud",version="v1",role="stable",device="cpu",requested="cuda"}"#
        ),
        1.0,
        "{text}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (code, stderr) = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(code, 0);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("CUDA requested but unavailable")).collect();
    assert_eq!(warnings.len(), 1, "one clear warning: {stderr}");
    // The reason: the build, or (built with `cuda`, as tests/run.sh also runs this) ONNX Runtime's own.
    let reason = if cfg!(feature = "cuda") { "CUDA" } else { "built without the `cuda` feature" };
    assert!(warnings[0].split_once("unavailable").unwrap().1.contains(reason), "{}", warnings[0]);
}

#[tokio::test]
#[ignore = "needs ONNX Runtime: bash tests/run.sh"]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let c = contract_file(TOXICITY_CONTRACT);
    let port = free_port();
    let mut child = spawn(
        "toxicity",
        "toxicity-v1.onnx",
        &sha("toxicity-v1.onnx"),
        &c.0,
        port,
        &["--workers", "1", "--max-batch-size", "64", "--shutdown-grace", "300ms"],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    let instances: Vec<_> =
        (0..400).map(|i| json!({"text": format!("you are a wonderful colleague number {i}, thanks")})).collect();
    let body = json!({"instances": instances}).to_string();
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, base, body) = (client.clone(), base.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = client.post(format!("{base}/v1/models/toxicity:predict")).body(body).send().await;
            let done = Instant::now();
            match r {
                Ok(r) => (Some(r.status().as_u16()), r.text().await.is_ok(), done, false),
                Err(e) => (None, false, done, e.is_connect()),
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    let signalled = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // Sent during the grace period: answered, and told to leave its keep-alive connection (so no
    // client sends on a connection the drain is about to close).
    let late = client
        .post(format!("{base}/v1/models/toxicity:predict"))
        .body(json!({"instances": [{"text": "hello"}]}).to_string())
        .send()
        .await
        .expect("a request in the grace period is served");
    assert_eq!(late.status(), 200);
    assert_eq!(late.headers().get("connection").map(|v| v.to_str().unwrap()), Some("close"));
    let mut after_signal = 0;
    for t in tasks {
        let (status, body_ok, done, refused) = t.await.unwrap();
        match status {
            Some(200) => {
                assert!(body_ok, "a response was cut off");
                if done > signalled {
                    after_signal += 1;
                }
            }
            Some(other) => panic!("request answered {other} during shutdown"),
            None => assert!(refused, "a request was lost mid-flight (not a refused connection)"),
        }
    }
    assert!(after_signal > 0, "no request was in flight at SIGTERM: the test proved nothing");
    let (code, stderr) =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(30))).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("drained"), "{stderr}");
}

/// The sidecar started with nothing but the environment a controller's `Launch` turns into (no
/// flags): it reads every variable back (model, digest, contract, role, port, batching) and serves
/// as that launch says.
#[tokio::test]
#[ignore = "needs ONNX Runtime: bash tests/run.sh"]
async fn the_launch_environment_the_controller_writes_is_the_one_the_sidecar_reads() {
    use modelrollout_contract::launch::{Launch, Role, env};
    require_ort();
    let contract: modelrollout_contract::DataContract = serde_yaml::from_str(FRAUD_CONTRACT).unwrap();
    let (port, grpc_port) = (free_port(), free_port());
    let launch = Launch {
        model_name: "fraud".into(),
        model_version: "v7".into(),
        model_uri: models().join("fraud-v2.onnx").display().to_string(),
        model_sha256: sha("fraud-v2.onnx"),
        contract,
        reference: Some(modelrollout_contract::ReferenceSource {
            uri: models().join("fraud-v2.reference.json").display().to_string(),
            sha256: sha("fraud-v2.reference.json"),
        }),
        role: Role::Shadow,
        port,
        grpc_port: Some(grpc_port),
        device: modelrollout_contract::Device::Cpu,
        threads: 1,
        max_batch_size: 8,
        max_batch_delay: "1s500ms".parse().unwrap(),
        evidence: None,
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_inference-sidecar"));
    // Only the launch's variables (and what ONNX Runtime needs): no SIDECAR_* from elsewhere.
    command.env_clear();
    for key in ["ORT_DYLIB_PATH", "PATH", "HOME"] {
        if let Ok(v) = std::env::var(key) {
            command.env(key, v);
        }
    }
    command.env(env::LOG_FORMAT, "text");
    for (name, value) in launch.to_env() {
        command.env(name, value);
    }
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    let row = json!({"amount": 120.5, "hour": 3, "merchant_risk": 0.8, "distance_km": 300, "card_age_days": 20, "foreign": 1});
    let answer: serde_json::Value = http()
        .post(format!("{base}/v1/models/fraud:predict"))
        .json(&json!({"instances": [row]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The gRPC service, on the port the launch names.
    use inference_sidecar::server::grpc::pb;
    let mut grpc =
        pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(format!("http://127.0.0.1:{grpc_port}"))
            .await
            .unwrap();
    let meta = grpc
        .model_metadata(pb::ModelMetadataRequest { name: "fraud".into(), version: "v7".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.inputs.len(), 6);
    let text = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    // The reference the launch names was fetched, digest-checked and binned against: the drift
    // gauges appear (published every 2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        if text.contains(r#"feature="merchant_risk""#) {
            break;
        }
        assert!(Instant::now() < deadline, "no drift gauge for merchant_risk: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // grpc.health.v1, as a Kubernetes `grpc:` probe asks it (the whole server, ""), and for the
    // inference service: SERVING while ready, NOT_SERVING from SIGTERM (the grace period, 3 s).
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let mut status = async |service: &str| {
        let req = HealthCheckRequest { service: service.into() };
        health.check(req).await.unwrap().into_inner().status
    };
    for service in ["", "inference.GRPCInferenceService"] {
        assert_eq!(status(service).await, ServingStatus::Serving as i32, "{service:?}");
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while status("").await != ServingStatus::NotServing as i32 {
        assert!(Instant::now() < deadline, "still SERVING 2 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status("inference.GRPCInferenceService").await, ServingStatus::NotServing as i32);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer["model_version"], "v7", "{answer}");
    assert!(answer["predictions"][0]["score"].as_f64().is_some(), "{answer}");
    assert!(text.contains(r#"model="fraud",version="v7",role="shadow""#), "{text}");
}
