//! One test's environment, for every suite: a fresh namespace, a client, the rollout's name, the
//! controller (this build's binary as a process for kwok, the chart's pod on the real node), and
//! the load when one runs. Set up as the suites need it, then read and waited on the same way.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::DynamicObject;
use kube::{Api, Client};
use modelrollout::api::{ModelRollout, ModelRolloutStatus, Phase};
use serde_json::{Value, json};

use crate::controller::{ControllerProc, controller_logs, helm_install_controller, service_account_kubeconfig};
use crate::load::kwok::{Harness, Labels};
use crate::manifest::{Manifest, four_stages, gitops_apply, local_file};
use crate::real_node::{ensure_model_store, require_real_node, running_pods};
use crate::routes::unattached_route;
use crate::*;

pub struct Env {
    pub ns: TestNamespace,
    pub client: Client,
    /// The ModelRollout's name.
    pub name: String,
    /// The controller as a process of this build (kwok suites); None: the chart's pod.
    pub controller: Option<ControllerProc>,
    /// The kubeconfig of the chart's service account the process controller runs as.
    pub kubeconfig: Option<PathBuf>,
    /// The load, when one runs: the kwok harness (its sidecar processes) or, on the real node,
    /// its generator sending to each version's Service.
    pub harness: Option<Harness>,
    /// The namespace's own evidence service (kwok suites), when the environment started one.
    pub evidence: Option<EvidenceProc>,
}

impl Env {
    /// kwok: the platform team's HTTPRoute, this build's controller as a process with `args`, the
    /// harness at `rps`, and `v1` applied by GitOps; returns once v1 is Idle and its sidecar runs.
    pub async fn kwok(prefix: &str, rps: u32, args: &[&str], v1: Value) -> Self {
        Self::kwok_with(prefix, rps, args, v1, Labels::OwnEvidence).await
    }

    /// [`Env::kwok`], the generator's labels going to `labels`; with [`Labels::OwnEvidence`] the
    /// namespace gets its own evidence service (this build's process, the chart's RBAC), the
    /// controller's `--evidence-url` names it, and every label is posted to it once.
    pub async fn kwok_with(prefix: &str, rps: u32, args: &[&str], v1: Value, labels: Labels) -> Self {
        let ns = TestNamespace::new(prefix).await;
        kubectl_ok(
            &["apply", "--server-side", "--field-manager", "platform-team", "-f", "-"],
            Some(&unattached_route(&ns.name, "fraud").to_string()),
        );
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (evidence, labels) = match labels {
            Labels::OwnEvidence => {
                let port = free_port();
                let evidence = EvidenceProc::start(&ns.name, port).await;
                args.push(format!("--evidence-url={}", evidence.base));
                let labels = Labels::ToEvidence { base: evidence.base.clone(), token: labeller_token(&ns.name) };
                (Some(evidence), labels)
            }
            other => (None, other),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let kubeconfig = service_account_kubeconfig(&ns.name);
        let controller = ControllerProc::start(&ns.name, &kubeconfig, &args);
        let client = client().await;
        let harness = Harness::start_with(client.clone(), &ns.name, "fraud", "fraud", rps, labels);
        let stable = v1["spec"]["model"]["version"].as_str().expect("a version").to_string();
        gitops_apply(&ns.name, &v1);
        let env = Self {
            ns,
            client,
            name: "fraud".into(),
            controller: Some(controller),
            kubeconfig: Some(kubeconfig),
            harness: Some(harness),
            evidence,
        };
        env.wait(Duration::from_secs(60), "v1 stable", |s| s.phase == Some(Phase::Idle)).await;
        wait_for("the stable sidecar", Duration::from_secs(30), || async {
            env.harness().running_versions().contains(&stable).then_some(())
        })
        .await;
        env
    }

    /// The real node: the namespace, the chart's controller, `route` (a user-owned HTTPRoute,
    /// applied by the platform team's field manager, when given) and `v1` (applied by GitOps);
    /// returns once v1 is Idle and its pods run. No load.
    pub async fn on_node(prefix: &str, name: &str, route: impl FnOnce(&str) -> Option<Value>, v1: Value) -> Self {
        require_real_node();
        ensure_model_store().await;
        let ns = TestNamespace::new(prefix).await;
        helm_install_controller(&ns.name).await;
        if let Some(route) = route(&ns.name) {
            kubectl_ok(
                &["apply", "--server-side", "--field-manager", "platform-team", "-f", "-"],
                Some(&route.to_string()),
            );
        }
        let client = client().await;
        gitops_apply(&ns.name, &v1);
        let env = Self {
            ns,
            client,
            name: name.to_string(),
            controller: None,
            kubeconfig: None,
            harness: None,
            evidence: None,
        };
        env.wait(Duration::from_secs(180), "v1 stable", |s| s.phase == Some(Phase::Idle)).await;
        running_pods(&env.ns.name, "modelrollout.dev/version=v1").await;
        env
    }

    /// [`Env::on_node`] with the platform team's unattached HTTPRoute and the harness's generator
    /// at `rps`, sending to the versions' Services in the route's proportions.
    pub async fn on_node_with_load(prefix: &str, rps: u32, v1_artifact: Value) -> Self {
        let v1 = Manifest::fraud_on_node("v1", v1_artifact).stages(four_stages(6)).build();
        let mut env = Self::on_node(prefix, "fraud", |ns| Some(unattached_route(ns, "fraud")), v1).await;
        env.harness = Some(Harness::start_on_node(env.client.clone(), &env.ns.name, "fraud", "fraud", rps));
        env
    }

    /// The kwok environment most rollout tests start from: v1 from models/fraud-v1.onnx.
    pub async fn kwok_fraud(prefix: &str, rps: u32) -> Self {
        Self::kwok(
            prefix,
            rps,
            &["--leader-election=false"],
            Manifest::fraud("v1", local_file("fraud-v1.onnx")).build(),
        )
        .await
    }

    /// Another controller process of this build for the namespace (a standby, a restart), as the
    /// chart's service account, with `args` and the environment's evidence service.
    pub fn start_controller(&self, args: &[&str]) -> ControllerProc {
        let url = self.evidence.as_ref().map(|e| format!("--evidence-url={}", e.base));
        let args: Vec<&str> = args.iter().copied().chain(url.as_deref()).collect();
        ControllerProc::start(&self.ns.name, self.kubeconfig(), &args)
    }

    /// Stops the load (and its sidecar processes) and lets the namespace go.
    pub async fn shutdown(mut self) {
        if let Some(h) = self.harness.take() {
            h.shutdown().await;
        }
    }

    pub fn harness(&self) -> &Harness {
        self.harness.as_ref().expect("this environment runs no load")
    }

    /// The process controller (kwok suites).
    pub fn controller(&self) -> &ControllerProc {
        self.controller.as_ref().expect("the controller runs as the chart's pod here")
    }

    pub fn controller_mut(&mut self) -> &mut ControllerProc {
        self.controller.as_mut().expect("the controller runs as the chart's pod here")
    }

    pub fn kubeconfig(&self) -> &std::path::Path {
        self.kubeconfig.as_deref().expect("the controller runs as the chart's pod here")
    }

    /// The controller's log: the process's, or the chart pod's (`kubectl logs`).
    pub fn controller_logs(&self) -> String {
        match &self.controller {
            Some(c) => c
                .logs()
                .lines()
                .rev()
                .take(8)
                .map(|l| l.chars().take(400).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n"),
            None => controller_logs(&self.ns.name),
        }
    }

    pub fn api(&self) -> Api<ModelRollout> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub async fn get(&self) -> ModelRollout {
        self.api().get(&self.name).await.unwrap()
    }

    /// Waits until the status satisfies `ok`; on timeout shows the status and the controller's log.
    pub async fn wait(
        &self,
        timeout: Duration,
        what: &str,
        mut ok: impl FnMut(&ModelRolloutStatus) -> bool,
    ) -> ModelRollout {
        let start = Instant::now();
        loop {
            let mr = self.get().await;
            if let Some(s) = &mr.status
                && ok(s)
            {
                return mr;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out waiting for {what}; status: {}\ncontroller log tail:\n{}",
                    serde_json::to_string_pretty(&mr.status).unwrap(),
                    self.controller_logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the rollout is decided (promoted, rolled back or failed), and returns it.
    pub async fn decided(&self, timeout: Duration, what: &str) -> ModelRollout {
        self.wait(timeout, what, |s| matches!(s.phase, Some(Phase::Promoted | Phase::RolledBack | Phase::Failed))).await
    }

    /// Changes the spec in a way that does not change the decision (the Prometheus query timeout,
    /// from 5s to 6s and back: a field the GitOps manifest leaves alone, so its next apply does not
    /// conflict), then waits until the controller has reconciled that generation: whatever the
    /// status says afterwards, the controller decided it with the spec as it stands.
    pub async fn reconciled(&self) -> ModelRollout {
        let now = self.get().await;
        let timeout = if now.spec.analysis.prometheus.timeout.as_str() == "6s" { "5s" } else { "6s" };
        let patch = json!({"spec": {"analysis": {"prometheus": {"timeout": timeout}}}});
        let patched = self
            .api()
            .patch(&self.name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
            .await
            .unwrap();
        let generation = patched.metadata.generation;
        self.wait(Duration::from_secs(30), "the spec change reconciled", |s| s.observed_generation >= generation).await
    }

    /// The route's first rule, with backendRefs reduced to name/port/weight (the CRD defaults group/kind).
    pub async fn route_rule(&self) -> Value {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns.name, &modelrollout::routers::http_route_resource());
        let mut rule = api.get(&self.name).await.unwrap().data["spec"]["rules"][0].clone();
        if let Some(refs) = rule["backendRefs"].as_array_mut() {
            for r in refs {
                *r = json!({"name": r["name"], "port": r["port"], "weight": r["weight"]});
            }
        }
        rule
    }

    pub async fn deployment(&self, name: &str) -> Option<Deployment> {
        Api::<Deployment>::namespaced(self.client.clone(), &self.ns.name).get_opt(name).await.unwrap()
    }

    pub async fn replicas(&self, name: &str) -> Option<i32> {
        self.deployment(name).await.and_then(|d| d.spec?.replicas)
    }
}
