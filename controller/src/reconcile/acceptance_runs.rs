//! The acceptance checks in flight, one per rollout: started by the core's `RunAcceptance`, read
//! back by `observe` once finished, ended (the task aborted) by a step that no longer asks for
//! them (passed and recorded, aborted, superseded, deleted).

use std::sync::OnceLock;

use super::*;
use crate::acceptance_runner::{self, Targets};

/// A candidate build's checks in flight.
pub struct AcceptanceRun {
    version: String,
    sha256: String,
    result: Arc<OnceLock<core::AcceptanceReport>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AcceptanceRun {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub type AcceptanceRuns = PerRollout<AcceptanceRun>;

fn service_base(mr: &ModelRollout, service: String) -> String {
    let ns = mr.namespace().unwrap_or_default();
    format!("http://{service}.{ns}.svc:{}", mr.spec.workload.service_port)
}

/// Starts the checks of this build unless they already run (or ran) for it.
pub(super) fn ensure(mr: &ModelRollout, ctx: &Context, version: &str, sha256: &str, stable: &str) {
    let Some(spec) = mr.spec.acceptance.clone() else { return };
    ctx.acceptance.with_entry(mr, |entry| {
        if entry.as_ref().is_some_and(|r| r.version == version && r.sha256 == sha256) {
            return;
        }
        let targets = Targets {
            model: mr.spec.model.name.clone(),
            candidate: service_base(mr, workloads::canary_service(mr)),
            candidate_version: version.to_string(),
            stable: service_base(mr, workloads::stable_service(mr)),
            stable_version: stable.to_string(),
            routing_wait: Duration::from_secs(60),
        };
        // A client of the run's own: no connection pooled by an earlier candidate's checks (made
        // to that candidate's pod through the same Service address) is reused.
        let http = reqwest::Client::builder().build().unwrap_or_else(|_| ctx.http.clone());
        let outbound = ctx.outbound.clone();
        let (contract, result) = (mr.spec.model.contract.clone(), Arc::new(OnceLock::new()));
        let out = result.clone();
        let (ns, name) = (mr.namespace().unwrap_or_default(), mr.name_any());
        tracing::info!(%ns, %name, version, "acceptance checks started");
        let task = tokio::spawn(async move {
            let report = acceptance_runner::run(&http, &outbound, &spec, &contract, &targets).await;
            tracing::info!(%ns, %name, ?report, "acceptance checks finished");
            let _ = out.set(report);
        });
        // Replacing an older build's run drops it, which aborts its task.
        *entry = Some(AcceptanceRun { version: version.to_string(), sha256: sha256.to_string(), result, task });
    });
}

/// The finished checks of the rollout's current candidate build, if any.
pub(super) fn finished(mr: &ModelRollout, ctx: &Context) -> Option<core::AcceptanceReport> {
    let (version, sha256) = (&mr.spec.model.version, &mr.spec.model.artifact.sha256);
    ctx.acceptance.with(mr, |run| {
        run.filter(|r| &r.version == version && &r.sha256 == sha256).and_then(|r| r.result.get().cloned())
    })
}

/// Ends the rollout's checks (the core no longer asks for them).
pub(super) fn end(mr: &ModelRollout, ctx: &Context) {
    ctx.acceptance.forget(mr);
}
