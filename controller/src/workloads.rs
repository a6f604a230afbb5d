//! Pure builders for what a ModelRollout owns: one Deployment per model version running the
//! inference sidecar, and the stable, canary and root Services.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar, HTTPGetAction,
    ImageVolumeSource, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretEnvSource,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use modelrollout_contract::launch::{EvidenceTarget, Launch, Role as SidecarRole};

use crate::api::{ArtifactSource, MODEL_IMAGE_MOUNT, ModelRollout, ModelSpec};

pub const LABEL_ROLLOUT: &str = "modelrollout.dev/rollout";
pub const LABEL_VERSION: &str = "modelrollout.dev/version";
pub const LABEL_ROLE: &str = "modelrollout.dev/role";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "modelrollout-controller";

/// A DNS-label-safe suffix for a version (`v2.1_rc` -> `v2-1-rc`).
pub fn version_slug(version: &str) -> String {
    let s: String =
        version.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    s.trim_matches('-').to_string()
}

pub fn deployment_name(mr: &ModelRollout, version: &str) -> String {
    let name = format!("{}-{}", mr.name_any(), version_slug(version));
    name.chars().take(63).collect::<String>().trim_end_matches('-').to_string()
}

pub fn stable_service(mr: &ModelRollout) -> String {
    format!("{}-stable", mr.name_any())
}

pub fn canary_service(mr: &ModelRollout) -> String {
    format!("{}-canary", mr.name_any())
}

pub fn root_service(mr: &ModelRollout) -> String {
    mr.name_any()
}

pub fn owner_ref(mr: &ModelRollout) -> OwnerReference {
    mr.controller_owner_ref(&()).expect("a ModelRollout from the apiserver has a uid")
}

fn meta(mr: &ModelRollout, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: mr.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![owner_ref(mr)]),
        ..Default::default()
    }
}

/// The label selector of one version's pods, as a list call takes it.
pub fn pod_selector(mr: &ModelRollout, version: &str) -> String {
    selector_labels(mr, Some(version)).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn selector_labels(mr: &ModelRollout, version: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([(LABEL_ROLLOUT.to_string(), mr.name_any())]);
    if let Some(v) = version {
        l.insert(LABEL_VERSION.to_string(), version_slug(v));
    }
    l
}

/// The image a model's sidecar runs: the one the rollout names, except that the default image is
/// swapped for its CUDA build when the model asks for CUDA (the default build serves on the CPU only).
fn sidecar_image(named: &str, device: crate::api::Device) -> &str {
    match device {
        crate::api::Device::Cuda if named == crate::api::SIDECAR_IMAGE => crate::api::SIDECAR_IMAGE_CUDA,
        _ => named,
    }
}

/// The sidecar Deployment for one model version. `role` is what the pods report in their metrics
/// (`stable`, `canary`, `shadow`); it is a start-up argument, so it is fixed for the pods' life.
/// `evidence`: the evidence service's URL (`--evidence-url`), which every sidecar then sends its
/// prediction records to, as this rollout's.
pub fn deployment(
    mr: &ModelRollout,
    model: &ModelSpec,
    role: SidecarRole,
    replicas: i32,
    evidence: Option<&str>,
) -> Deployment {
    let w = &mr.spec.workload;
    let port = w.service_port;
    let pod_labels = selector_labels(mr, Some(&model.version));
    let mut labels = pod_labels.clone();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGER.into());
    labels.insert(LABEL_ROLE.into(), role.as_str().into());
    let rt = &model.runtime;
    let launch = Launch {
        model_name: model.name.clone(),
        model_version: model.version.clone(),
        model_uri: match model.artifact.source() {
            ArtifactSource::Fetched { uri } => uri.to_string(),
            ArtifactSource::Image { file, .. } => file,
        },
        model_sha256: model.artifact.sha256.clone(),
        contract: model.contract.clone(),
        reference: model
            .artifact
            .reference_location()
            .map(|(uri, sha256)| modelrollout_contract::ReferenceSource { uri, sha256: sha256.to_string() }),
        role,
        port: u16::try_from(port).expect("the schema bounds the port to 1-65535"),
        grpc_port: w.grpc_port.and_then(|p| u16::try_from(p).ok()),
        device: rt.device,
        threads: rt.threads,
        max_batch_size: rt.max_batch_size,
        max_batch_delay: rt.max_batch_delay.clone(),
        evidence: evidence.map(|url| EvidenceTarget {
            url: url.to_string(),
            namespace: mr.namespace().unwrap_or_default(),
            rollout: mr.name_any(),
        }),
    };
    let mut resources = w.resources.clone().unwrap_or_default();
    if let Some(gpus) = w.gpus.filter(|g| *g > 0) {
        let limits = resources.limits.get_or_insert_with(BTreeMap::new);
        limits.insert("nvidia.com/gpu".into(), Quantity(gpus.to_string()));
    }
    let probe = |path: &str, period| Probe {
        http_get: Some(HTTPGetAction { path: Some(path.into()), port: IntOrString::Int(port), ..Default::default() }),
        period_seconds: Some(period),
        ..Default::default()
    };
    // The sidecar writes only its model cache, on an emptyDir at /tmp; an `oci://` model is an
    // image volume, read-only.
    let mut volumes =
        vec![Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() }];
    let mut volume_mounts = vec![VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() }];
    if let ArtifactSource::Image { reference, .. } = model.artifact.source() {
        volumes.push(Volume {
            name: "model".into(),
            image: Some(ImageVolumeSource {
                reference: Some(reference.into()),
                pull_policy: Some("IfNotPresent".into()),
            }),
            ..Default::default()
        });
        volume_mounts.push(VolumeMount {
            name: "model".into(),
            mount_path: MODEL_IMAGE_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let container = Container {
        name: "sidecar".into(),
        image: Some(sidecar_image(&w.sidecar_image, rt.device).into()),
        env: Some(
            launch
                .to_env()
                .into_iter()
                .map(|(name, value)| EnvVar { name: name.into(), value: Some(value), ..Default::default() })
                .collect(),
        ),
        // An s3:// artifact's credentials, from the Secret the spec names.
        env_from: model.artifact.credentials_secret.as_ref().map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource { name: name.clone(), optional: Some(false) }),
                ..Default::default()
            }]
        }),
        ports: Some(
            std::iter::once(("http", port))
                .chain(w.grpc_port.map(|p| ("grpc", p)))
                .map(|(name, p)| ContainerPort { name: Some(name.into()), container_port: p, ..Default::default() })
                .collect(),
        ),
        // A sidecar that exits (a model that fails its sha256 or its contract) leaves its last log
        // lines in the pod's status, where the controller quotes them when it fails the rollout.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        readiness_probe: Some(probe("/readyz", 2)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: Some(ResourceRequirements { ..resources }),
        // Restricted Pod Security: the sidecar writes only its model cache, on an emptyDir at /tmp.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Default::default()
    };
    Deployment {
        metadata: meta(mr, deployment_name(mr, &model.version), labels),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(pod_labels.clone()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([
                        ("prometheus.io/scrape".into(), "true".into()),
                        ("prometheus.io/port".into(), port.to_string()),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    node_selector: w.node_selector.clone(),
                    tolerations: w.tolerations.clone(),
                    termination_grace_period_seconds: Some(30),
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// A Service selecting one version (`Some`) or every version of the rollout (`None`, the root).
pub fn service(mr: &ModelRollout, name: String, version: Option<&str>) -> Service {
    let mut labels = selector_labels(mr, None);
    labels.insert(LABEL_MANAGED_BY.into(), MANAGER.into());
    Service {
        metadata: meta(mr, name, labels),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(mr, version)),
            ports: Some(
                std::iter::once(("http", mr.spec.workload.service_port))
                    .chain(mr.spec.workload.grpc_port.map(|p| ("grpc", p)))
                    .map(|(name, port)| ServicePort {
                        name: Some(name.into()),
                        port,
                        target_port: Some(IntOrString::String(name.into())),
                        // gRPC is HTTP/2: say so, for the proxies that read it (Envoy Gateway, Istio).
                        app_protocol: (name == "grpc").then(|| "kubernetes.io/h2c".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

/// Whether a live object's metadata still carries ours: our labels and annotations with our
/// values, and our owner reference. (What others added is theirs: our apply would not remove it.)
pub fn metadata_holds(live: &ObjectMeta, ours: &ObjectMeta) -> bool {
    let map_holds = |live: &Option<BTreeMap<String, String>>, ours: &Option<BTreeMap<String, String>>| {
        ours.iter().flatten().all(|(k, v)| live.as_ref().and_then(|l| l.get(k)) == Some(v))
    };
    map_holds(&live.labels, &ours.labels)
        && map_holds(&live.annotations, &ours.annotations)
        && ours.owner_references.iter().flatten().all(|o| live.owner_references.iter().flatten().any(|l| l == o))
}

/// Whether a live Service still routes as ours does: our metadata, exactly our selector (it is
/// atomic: a key added by hand would select other pods, or none) and our port.
pub fn service_holds(live: &Service, ours: &Service) -> bool {
    let (Some(live_spec), Some(our_spec)) = (&live.spec, &ours.spec) else { return false };
    let port_held = |p: &ServicePort| {
        live_spec.ports.iter().flatten().any(|l| l.name == p.name && l.port == p.port && l.target_port == p.target_port)
    };
    metadata_holds(&live.metadata, &ours.metadata)
        && live_spec.selector == our_spec.selector
        && our_spec.ports.iter().flatten().all(port_held)
}

/// Replicas for (stable, candidate), from `total` (`workload.replicas`: what the spec, or an
/// autoscaler scaling the rollout, sets for 100% of traffic). With replica-ratio routing the split
/// is the traffic split (approximate, in steps of one pod). With a router, stable keeps the full
/// count (it takes the traffic back at once on a rollback) and the candidate gets its stage's
/// share of it (`share`: the stage's weight, or its mirror, whichever is larger; 100 for an
/// experiment's), rounded up, at least one pod.
pub fn replicas(total: i32, weight: i32, share: i32, replica_ratio: bool, candidate_active: bool) -> (i32, i32) {
    if !candidate_active {
        return (total, 0);
    }
    if !replica_ratio {
        let candidate = ((total as i64 * share.clamp(0, 100) as i64 + 99) / 100).max(1) as i32;
        return (total, candidate);
    }
    let canary = if weight <= 0 { 0 } else { ((total as i64 * weight as i64 + 99) / 100).max(1) as i32 };
    let stable = if weight >= 100 { 0 } else { (total - canary).max(1) };
    (stable, canary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ratio_splits_in_whole_pods() {
        assert_eq!(replicas(20, 5, 5, true, true), (19, 1));
        assert_eq!(replicas(20, 25, 25, true, true), (15, 5));
        assert_eq!(replicas(3, 5, 5, true, true), (2, 1), "at least one canary pod once weight > 0");
        assert_eq!(replicas(3, 0, 0, true, true), (3, 0));
        assert_eq!(replicas(3, 100, 100, true, true), (0, 3));
        assert_eq!(replicas(3, 25, 25, false, false), (3, 0));
    }

    #[test]
    fn with_a_router_the_candidate_gets_its_stages_share_of_the_stables_size() {
        assert_eq!(replicas(3, 0, 100, false, true), (3, 3), "a shadow stage mirrors everything");
        assert_eq!(replicas(8, 5, 5, false, true), (8, 1));
        assert_eq!(replicas(8, 25, 25, false, true), (8, 2));
        assert_eq!(replicas(8, 30, 30, false, true), (8, 3), "rounded up");
        assert_eq!(replicas(8, 100, 100, false, true), (8, 8));
        assert_eq!(replicas(2, 5, 5, false, true), (2, 1), "at least one pod");
        // An autoscaler raised the size mid-stage: the candidate follows at the stage's share.
        assert_eq!(replicas(12, 25, 25, false, true), (12, 3));
    }

    fn rollout() -> ModelRollout {
        crate::fixtures::rollout("fraud", crate::fixtures::spec("v2", crate::fixtures::SHA_V2))
    }

    /// Ours as the apiserver returns it: defaults filled in and fields of other managers added.
    fn live(ours: &Service) -> Service {
        let mut live = ours.clone();
        live.metadata.labels.get_or_insert_default().insert("team".into(), "fraud".into());
        live.metadata.annotations = Some(BTreeMap::from([("argocd.argoproj.io/tracking-id".into(), "x".into())]));
        live.metadata.resource_version = Some("42".into());
        let spec = live.spec.as_mut().unwrap();
        spec.cluster_ip = Some("10.96.0.12".into());
        spec.type_ = Some("ClusterIP".into());
        for p in spec.ports.iter_mut().flatten() {
            p.protocol = Some("TCP".into());
        }
        live
    }

    #[test]
    fn a_service_holds_while_what_we_apply_is_unchanged_whatever_others_added() {
        let mr = rollout();
        let ours = service(&mr, stable_service(&mr), Some("v1"));
        assert!(service_holds(&live(&ours), &ours));

        type Edit = fn(&mut Service);
        let drifted: [(&str, Edit); 6] = [
            ("selector edited", |s| {
                s.spec.as_mut().unwrap().selector.get_or_insert_default().insert(LABEL_VERSION.into(), "v2".into());
            }),
            ("selector key added", |s| {
                s.spec.as_mut().unwrap().selector.get_or_insert_default().insert("extra".into(), "x".into());
            }),
            ("port changed", |s| s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 9000),
            ("target port changed", |s| {
                s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = Some(IntOrString::Int(8080));
            }),
            ("our label removed", |s| {
                s.metadata.labels.as_mut().unwrap().remove(LABEL_MANAGED_BY);
            }),
            ("owner reference removed", |s| s.metadata.owner_references = None),
        ];
        for (what, edit) in drifted {
            let mut l = live(&ours);
            edit(&mut l);
            assert!(!service_holds(&l, &ours), "{what}: not noticed");
        }
    }

    #[test]
    fn deployment_metadata_holds_until_our_labels_or_owner_change() {
        let mr = rollout();
        let ours = deployment(&mr, &mr.spec.model, SidecarRole::Stable, 2, None);
        let mut live = ours.clone();
        live.metadata.labels.as_mut().unwrap().insert("team".into(), "fraud".into());
        live.metadata.generation = Some(3);
        assert!(metadata_holds(&live.metadata, &ours.metadata));
        live.metadata.labels.as_mut().unwrap().insert(LABEL_ROLE.into(), "canary".into());
        assert!(!metadata_holds(&live.metadata, &ours.metadata));
        let mut orphaned = ours.clone();
        orphaned.metadata.owner_references = Some(vec![]);
        assert!(!metadata_holds(&orphaned.metadata, &ours.metadata));
    }

    #[test]
    fn an_oci_model_is_an_image_volume_the_sidecar_reads_read_only_and_a_url_is_fetched() {
        let mut mr = rollout();
        mr.spec.model.artifact.uri = "oci://registry.example/models/fraud:v2".into();
        mr.spec.model.artifact.path = Some("models/fraud-v2.onnx".into());
        let spec = deployment(&mr, &mr.spec.model, SidecarRole::Canary, 1, None).spec.unwrap().template.spec.unwrap();
        let volume = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "model").expect("a model volume");
        let image = volume.image.as_ref().expect("an image volume");
        assert_eq!(image.reference.as_deref(), Some("registry.example/models/fraud:v2"));
        let c = &spec.containers[0];
        let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "model").unwrap();
        assert_eq!((mount.mount_path.as_str(), mount.read_only), (MODEL_IMAGE_MOUNT, Some(true)));
        let env = |name: &str| c.env.as_ref().unwrap().iter().find(|e| e.name == name).unwrap().value.clone().unwrap();
        assert_eq!(env(modelrollout_contract::launch::env::MODEL_URI), "/mnt/models/models/fraud-v2.onnx");

        let mut mr = rollout();
        mr.spec.model.artifact.uri = "http://model-store.models.svc/fraud-v2.onnx".into();
        let spec = deployment(&mr, &mr.spec.model, SidecarRole::Canary, 1, None).spec.unwrap().template.spec.unwrap();
        assert!(spec.volumes.unwrap().iter().all(|v| v.image.is_none()), "a URL needs no volume");
        let c = &spec.containers[0];
        let uri = c.env.as_ref().unwrap().iter().find(|e| e.name == modelrollout_contract::launch::env::MODEL_URI);
        assert_eq!(uri.unwrap().value.as_deref(), Some("http://model-store.models.svc/fraud-v2.onnx"));
    }

    #[test]
    fn a_cuda_model_gets_the_cuda_build_unless_the_rollout_names_an_image() {
        let image = |mr: &ModelRollout| {
            let d = deployment(mr, &mr.spec.model, SidecarRole::Stable, 1, None);
            d.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap()
        };
        let mut mr = rollout();
        assert_eq!(image(&mr), crate::api::SIDECAR_IMAGE);
        mr.spec.model.runtime.device = crate::api::Device::Cuda;
        assert_eq!(image(&mr), crate::api::SIDECAR_IMAGE_CUDA);
        mr.spec.workload.sidecar_image = "registry.example/sidecar:gpu".into();
        assert_eq!(image(&mr), "registry.example/sidecar:gpu", "a named image is the platform team's choice");
    }

    /// The pod's environment is the launch the sidecar reads back: the same names, the same values.
    #[test]
    fn the_pod_environment_reads_back_as_the_launch() {
        let mr = rollout();
        let d = deployment(&mr, &mr.spec.model, SidecarRole::Shadow, 1, None);
        let env: BTreeMap<String, String> = d.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap()))
            .collect();
        let launch = Launch::from_env(|k| env.get(k).cloned()).expect("a complete launch");
        assert_eq!(launch.role, SidecarRole::Shadow);
        assert_eq!(launch.model_version, mr.spec.model.version);
        assert_eq!(launch.contract, mr.spec.model.contract);
        assert_eq!(launch.max_batch_delay, mr.spec.model.runtime.max_batch_delay);
        assert_eq!(i32::from(launch.port), mr.spec.workload.service_port);
        assert_eq!(launch.grpc_port, None, "no gRPC unless asked for");
    }

    /// An `s3://` artifact's credentials Secret becomes the sidecar's environment.
    #[test]
    fn an_s3_artifacts_credentials_secret_is_the_sidecars_environment() {
        let mut mr = rollout();
        assert!(
            deployment(&mr, &mr.spec.model, SidecarRole::Canary, 1, None)
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .containers[0]
                .env_from
                .is_none()
        );
        mr.spec.model.artifact.uri = "s3://models/fraud-v2.onnx".into();
        mr.spec.model.artifact.credentials_secret = Some("model-store-s3".into());
        let c = deployment(&mr, &mr.spec.model, SidecarRole::Canary, 1, None)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .clone();
        let from = c.env_from.unwrap();
        assert_eq!(from[0].secret_ref.as_ref().unwrap().name, "model-store-s3");
        let uri = c.env.unwrap().into_iter().find(|e| e.name == "SIDECAR_MODEL_URI").unwrap().value.unwrap();
        assert_eq!(uri, "s3://models/fraud-v2.onnx", "the sidecar fetches it itself");
    }

    /// `workload.grpcPort`: the sidecar's gRPC listener, a `grpc` container port, and a `grpc`
    /// port (h2c) on every Service.
    #[test]
    fn a_grpc_port_reaches_the_pod_and_every_service() {
        let mut mr = rollout();
        mr.spec.workload.grpc_port = Some(9001);
        let d = deployment(&mr, &mr.spec.model, SidecarRole::Canary, 1, None);
        let c = d.spec.unwrap().template.spec.unwrap().containers[0].clone();
        let env: BTreeMap<String, String> = c.env.unwrap().into_iter().map(|e| (e.name, e.value.unwrap())).collect();
        assert_eq!(Launch::from_env(|k| env.get(k).cloned()).unwrap().grpc_port, Some(9001));
        let ports: Vec<(String, i32)> =
            c.ports.unwrap().into_iter().map(|p| (p.name.unwrap(), p.container_port)).collect();
        assert_eq!(ports, [("http".to_string(), 8080), ("grpc".to_string(), 9001)]);
        for name in [stable_service(&mr), canary_service(&mr), root_service(&mr)] {
            let svc = service(&mr, name, None);
            let grpc =
                svc.spec.unwrap().ports.unwrap().into_iter().find(|p| p.name.as_deref() == Some("grpc")).unwrap();
            assert_eq!((grpc.port, grpc.app_protocol.as_deref()), (9001, Some("kubernetes.io/h2c")));
            assert_eq!(grpc.target_port, Some(IntOrString::String("grpc".into())));
        }
    }

    #[test]
    fn slugs_are_dns_labels() {
        assert_eq!(version_slug("V2.1_rc"), "v2-1-rc");
    }
}
