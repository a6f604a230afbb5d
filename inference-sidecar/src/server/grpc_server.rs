//! The gRPC server as its users expect it: the Open Inference Protocol service (gzip-compressed
//! requests accepted, answers compressed for a client that asks), `grpc.health.v1` reporting the
//! model's readiness (Kubernetes `grpc:` probes, gRPC load balancers), and server reflection, v1
//! and v1alpha (grpcurl, Postman and the like list and call the service without the .proto).

use tonic::codec::CompressionEncoding;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::grpc::{self, Counted};
use super::*;

/// The descriptors of the OIP service, written by build.rs for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/oip_descriptor.bin"));

/// What a health check names: the whole server (`""`, what a Kubernetes probe asks by default) and
/// the inference service.
const HEALTH_SERVICES: [&str; 2] = ["", <Counted as tonic::server::NamedService>::NAME];

/// The readiness that `grpc.health.v1` reports, kept in step with the REST `/readyz`.
#[derive(Clone)]
pub struct Health(HealthReporter);

impl Health {
    /// SERVING once the model is loaded and warm; NOT_SERVING before and while draining.
    pub async fn set(&self, ready: bool) {
        let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
        for name in HEALTH_SERVICES {
            self.0.set_service_status(name, status).await;
        }
    }
}

/// The gRPC router with every service, and the handle that sets its health. Health starts as the
/// state's readiness says.
pub async fn server(
    state: Arc<AppState>,
    builder: tonic::transport::Server,
) -> (tonic::transport::server::Router, Health) {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health(reporter);
    health.set(state.ready.load(Ordering::Acquire)).await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // The descriptors are this binary's own (build.rs): one that does not parse is a build defect.
    let v1 = reflection().build_v1().expect("the OIP and health descriptors parse");
    let v1alpha = reflection().build_v1alpha().expect("the OIP and health descriptors parse");
    let oip = grpc::service(state).compressed(CompressionEncoding::Gzip);
    let mut builder = builder;
    let router = builder.add_service(oip).add_service(health_service).add_service(v1).add_service(v1alpha);
    (router, health)
}
