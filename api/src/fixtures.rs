//! Builders for the objects tests need, the way controller-rs's `fixtures.rs` does it: one
//! spec, model, rollout and clock for every crate's tests (feature `fixtures`).

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::*;

pub const SHA_V1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
pub const SHA_V2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
pub const SHA_V3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

pub fn d(text: &str) -> Duration {
    text.parse().expect("a duration")
}

pub fn t0() -> Timestamp {
    "2026-11-25T12:00:00Z".parse().unwrap()
}

pub fn at(secs: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_secs(secs)).unwrap()
}

pub fn feature(name: &str) -> Feature {
    Feature {
        name: name.into(),
        kind: FeatureType::Float,
        min: None,
        max: None,
        categories: None,
        max_length: None,
        nullable: false,
    }
}

pub fn model(version: &str, sha: &str) -> ModelSpec {
    ModelSpec {
        name: "fraud".into(),
        version: version.into(),
        artifact: Artifact {
            uri: format!("/models/fraud-{version}.onnx"),
            path: None,
            sha256: sha.into(),
            format: ModelFormat::Onnx,
            credentials_secret: None,
            reference: None,
        },
        runtime: RuntimeSpec::default(),
        contract: DataContract { inputs: vec![feature("amount"), feature("age")], ..Default::default() },
    }
}

/// A spec with 10 s stages (shadow, 5, 25, 100), a 5 s interval, every built-in gate, routed by the
/// HTTPRoute `fraud`.
pub fn spec(version: &str, sha: &str) -> ModelRolloutSpec {
    let mut stages = default_stages();
    for s in &mut stages {
        s.min_duration = d("10s");
    }
    ModelRolloutSpec {
        model: model(version, sha),
        workload: WorkloadSpec::default(),
        traffic_routing: TrafficRouting {
            gateway_api: Some(GatewayApiRouting {
                http_route: "fraud".into(),
                grpc_route: None,
                create: false,
                parent_refs: vec![],
                hostnames: vec![],
            }),
            istio: None,
            replica_ratio: None,
        },
        stages,
        after_promotion: None,
        analysis: AnalysisSpec {
            interval: d("5s"),
            failure_limit: 2,
            inconclusive_limit: 3,
            gates: Gates {
                error_rate: Some(UpperGate {
                    max: Some(0.002),
                    max_above_stable: None,
                    min_samples: 100,
                    judge: Judge::Threshold,
                    confidence: None,
                    max_above_stable_ratio: None,
                    comparison: Default::default(),
                }),
                latency_p95: Some(UpperGate {
                    max: Some(120.0),
                    max_above_stable: Some(10.0),
                    min_samples: 100,
                    judge: Judge::Threshold,
                    confidence: None,
                    max_above_stable_ratio: None,
                    comparison: Default::default(),
                }),
                false_positive_rate: Some(UpperGate {
                    max: None,
                    max_above_stable: Some(0.002),
                    min_samples: 50,
                    judge: Judge::Threshold,
                    confidence: None,
                    max_above_stable_ratio: None,
                    comparison: Default::default(),
                }),
                capture_rate: Some(LowerGate {
                    min: None,
                    max_below_stable: Some(0.0),
                    min_samples: 50,
                    judge: Judge::Threshold,
                    confidence: None,
                    max_below_stable_ratio: None,
                    comparison: Default::default(),
                }),
                precision: None,
                agreement: None,
                paired: None,
                score_drift: None,
                input_drift: None,
                custom: vec![],
            },
            ..AnalysisSpec::default()
        },
        rollback: RollbackPolicy { scale_down_delay: d("30s"), ..RollbackPolicy::default() },
        paused: false,
        operations: Operations::default(),
        notifications: Notifications::default(),
        acceptance: None,
        webhooks: Vec::new(),
    }
}

/// The rollout `name` in namespace `team-a` (uid `uid-<name>`, generation 1) with this spec.
pub fn rollout(name: &str, spec: ModelRolloutSpec) -> ModelRollout {
    let mut mr = ModelRollout::new(name, spec);
    mr.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("team-a".into()),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    mr
}

/// A rollout of `version` (routed by the HTTPRoute `fraud`) with this status.
pub fn rollout_with_status(version: &str, status: ModelRolloutStatus) -> ModelRollout {
    let mut mr = rollout("fraud", spec(version, SHA_V2));
    mr.status = Some(status);
    mr
}

/// The spec with an abort request of this id.
pub fn with_abort(mut s: ModelRolloutSpec, id: &str) -> ModelRolloutSpec {
    s.operations.abort =
        Some(OperationRequest { id: id.into(), reason: Some("pager went off".into()), requested_by: None });
    s
}

/// The toxicity classifier's acceptance: AUC >= 0.92 and no worse than stable by 0.01, accuracy
/// >= 0.9, scores within 0.001 of the references, no contract failures; p95 <= 80 ms at 200 req/s.
pub fn acceptance() -> AcceptanceSpec {
    AcceptanceSpec {
        golden_set: Some(GoldenSetCheck {
            artifact: GoldenSetArtifact { uri: "http://store/golden.json".into(), sha256: SHA_V3.into() },
            threshold: None,
            auc: Some(GoldenLimit { min: Some(0.92), max_below_stable: Some(0.01) }),
            accuracy: Some(GoldenLimit { min: Some(0.9), max_below_stable: None }),
            max_score_difference: Some(0.001),
            max_contract_failure_rate: Some(0.0),
        }),
        load: Some(LoadCheck { rate: 200, duration: d("30s"), max_latency_p95: d("80ms"), max_error_rate: 0.01 }),
        timeout: d("10m"),
    }
}

pub fn hook(name: &str, kind: WebhookKind) -> GatingWebhook {
    GatingWebhook {
        name: name.into(),
        kind,
        url: format!("http://hooks/{name}"),
        timeout: d("5s"),
        retries: 2,
        metadata: Default::default(),
    }
}
