//! Benchmark ceiling: an axum server that parses and validates the same JSON against the same data
//! contract as the sidecar's predict route, then returns a constant without running a model.
//!
//!   cargo run --release -p inference-sidecar --example bare_server -- CONTRACT.yaml PORT

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use inference_sidecar::validate::{Rows, Validator};
use serde_json::Value;

/// The sidecar's allocator, so the ceiling is not lowered by a slower malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let contract = std::fs::read_to_string(args.next().expect("contract file")).unwrap();
    let port: u16 = args.next().expect("port").parse().unwrap();
    let validator = Arc::new(Validator::new(serde_yaml::from_str(&contract).unwrap()).unwrap());
    let app = Router::new().route(
        "/v1/models/{target}",
        post(move |body: Bytes| {
            let validator = validator.clone();
            async move {
                let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                    return (StatusCode::BAD_REQUEST, "malformed".to_string());
                };
                let mut rows = Rows::empty_like(validator.kind);
                for (i, inst) in v["instances"].as_array().into_iter().flatten().enumerate() {
                    let Some(obj) = inst.as_object() else { return (StatusCode::BAD_REQUEST, "instance".into()) };
                    if let Err(e) = validator.encode_instance(obj, &format!("instances[{i}]"), &mut rows) {
                        return (StatusCode::BAD_REQUEST, e.error.to_string());
                    }
                }
                (StatusCode::OK, r#"{"model_version":"v2","predictions":[{"score":0.5,"decision":true}]}"#.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
