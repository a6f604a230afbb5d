//! Controller metrics (prometheus-client, bounded labels) and the /metrics, /healthz, /readyz server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: &'static str,
}

/// Per-rollout series: namespace and name are bounded by the objects in the cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabel {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub namespace: String,
    pub name: String,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateSetLabel {
    pub namespace: String,
    pub name: String,
    /// `Rollout`, `StageReplaced` or `StageAdjusted` (`GateSet::ALL`).
    pub gate_set: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabel {
    pub namespace: String,
    pub name: String,
    pub gate: String,
    /// candidate, stable, or limit (the gate's effective bound).
    pub version: &'static str,
}

/// A gating webhook's answers: `type` and `ok` take a handful of values each.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    pub namespace: String,
    pub name: String,
    pub r#type: &'static str,
    pub ok: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Gating webhook answers by type and whether they were 2xx.
    pub webhook_answers: Family<WebhookLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Family<ErrorLabel, Counter>,
    pub phase: Family<PhaseLabel, Gauge>,
    /// 1 for the gate set the rollout's last analysis used (the stage's own, or the rollout's).
    pub gate_set: Family<GateSetLabel, Gauge>,
    pub weight: Family<RolloutLabel, Gauge>,
    pub mirror: Family<RolloutLabel, Gauge>,
    pub gate_value: Family<GateLabel, Gauge<f64, AtomicU64>>,
    pub rollbacks: Family<RolloutLabel, Counter>,
    pub promotions: Family<RolloutLabel, Counter>,
    /// Undos after a promotion (asked for, a revert of spec.model, or the watch's own).
    pub undos: Family<RolloutLabel, Counter>,
    /// 1 while the promoted version fails its after-promotion gates, 0 while it passes; absent
    /// when nothing watches it.
    pub after_promotion_failing: Family<RolloutLabel, Gauge>,
    pub leader: Gauge,
    /// From the decision to roll back (right after the failing analysis) to the route patched.
    pub rollback_restore: Histogram,
    /// When the last rollback was decided (unix seconds, µs precision), to measure end to end.
    pub rollback_decided: Family<RolloutLabel, Gauge<f64, AtomicU64>>,
    /// When the rollout was last analysed (unix seconds): an alert on `time() - this` catches an
    /// analysis that stopped coming.
    pub last_analysis: Family<RolloutLabel, Gauge<f64, AtomicU64>>,
    /// The gate names each rollout has series for, so that its series can all be removed.
    gates_seen: std::sync::Mutex<std::collections::HashMap<RolloutLabel, std::collections::BTreeSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            // 75 ms between 50 and 100: the p99 target is 100 ms and a bucket bound is all a
            // histogram can say.
            reconcile_duration: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            reconcile_errors: Family::default(),
            phase: Family::default(),
            gate_set: Family::default(),
            weight: Family::default(),
            mirror: Family::default(),
            gate_value: Family::default(),
            rollbacks: Family::default(),
            promotions: Family::default(),
            undos: Family::default(),
            after_promotion_failing: Family::default(),
            leader: Gauge::default(),
            rollback_restore: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            rollback_decided: Family::default(),
            last_analysis: Family::default(),
            gates_seen: Default::default(),
            webhook_answers: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("modelrollout");
        r.register("reconcile_duration_seconds", "Reconcile duration", m.reconcile_duration.clone());
        r.register("reconcile_errors", "Reconcile errors by kind", m.reconcile_errors.clone());
        r.register("rollout_phase", "1 for the rollout's current phase", m.phase.clone());
        r.register(
            "rollout_gate_set",
            "1 for the gate set the last analysis used (Rollout, StageReplaced, StageAdjusted)",
            m.gate_set.clone(),
        );
        r.register("rollout_canary_weight", "Percent of live traffic on the candidate", m.weight.clone());
        r.register("rollout_mirror_percent", "Percent of traffic mirrored to the candidate", m.mirror.clone());
        r.register("rollout_gate_value", "Last measured gate value (candidate, stable)", m.gate_value.clone());
        r.register("rollbacks", "Rollbacks", m.rollbacks.clone());
        r.register("webhook_answers", "Gating webhook answers (ok: 2xx)", m.webhook_answers.clone());
        r.register("promotions", "Promotions", m.promotions.clone());
        r.register("undos", "Undos after a promotion", m.undos.clone());
        r.register(
            "rollout_after_promotion_failing",
            "1 while the promoted version fails its after-promotion gates, 0 while it passes",
            m.after_promotion_failing.clone(),
        );
        r.register("leader", "1 while this replica holds the leader lease", m.leader.clone());
        r.register(
            "rollback_traffic_restore_seconds",
            "From the rollback decision to all traffic routed to stable",
            m.rollback_restore.clone(),
        );
        r.register(
            "rollback_decided_timestamp_seconds",
            "Unix time of the last rollback decision",
            m.rollback_decided.clone(),
        );
        r.register(
            "rollout_last_analysis_timestamp_seconds",
            "Unix time of the rollout's last analysis",
            m.last_analysis.clone(),
        );
        Self { registry, ..m }
    }
}

/// The phases, each a series of [`Metrics::phase`] per rollout.
pub const PHASES: [Phase; 6] =
    [Phase::Idle, Phase::Progressing, Phase::Paused, Phase::Promoted, Phase::RolledBack, Phase::Failed];

/// The `version` label values of [`Metrics::gate_value`].
pub const GATE_SERIES: [&str; 3] = ["candidate", "stable", "limit"];

impl Metrics {
    /// Sets a gate's series and remembers the gate, for [`Metrics::forget_rollout`].
    pub fn set_gate(&self, rollout: &RolloutLabel, gate: &str, version: &'static str, value: f64) {
        let label =
            GateLabel { namespace: rollout.namespace.clone(), name: rollout.name.clone(), gate: gate.into(), version };
        self.gate_value.get_or_create(&label).set(value);
        let mut seen = self.gates_seen.lock().expect("not poisoned");
        let gates = seen.entry(rollout.clone()).or_default();
        if !gates.contains(gate) {
            gates.insert(gate.into());
        }
    }

    /// Removes every series of a rollout (it was deleted): its phase, weights, gates, counts and
    /// timestamps.
    pub fn forget_rollout(&self, rollout: &RolloutLabel) {
        self.weight.remove(rollout);
        self.mirror.remove(rollout);
        self.last_analysis.remove(rollout);
        self.rollbacks.remove(rollout);
        self.promotions.remove(rollout);
        self.undos.remove(rollout);
        self.after_promotion_failing.remove(rollout);
        self.rollback_decided.remove(rollout);
        for kind in crate::api::WebhookKind::ALL {
            for ok in ["true", "false"] {
                self.webhook_answers.remove(&WebhookLabel {
                    namespace: rollout.namespace.clone(),
                    name: rollout.name.clone(),
                    r#type: kind.as_str(),
                    ok,
                });
            }
        }
        for p in PHASES {
            self.phase.remove(&PhaseLabel {
                namespace: rollout.namespace.clone(),
                name: rollout.name.clone(),
                phase: p.as_str(),
            });
        }
        for g in crate::api::GateSet::ALL {
            self.gate_set.remove(&GateSetLabel {
                namespace: rollout.namespace.clone(),
                name: rollout.name.clone(),
                gate_set: g.as_str(),
            });
        }
        let gates = self.gates_seen.lock().expect("not poisoned").remove(rollout).unwrap_or_default();
        for gate in gates {
            for version in GATE_SERIES {
                self.gate_value.remove(&GateLabel {
                    namespace: rollout.namespace.clone(),
                    name: rollout.name.clone(),
                    gate: gate.clone(),
                    version,
                });
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding to a String cannot fail");
        out
    }
}

pub struct Health {
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
}

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(|State(h): State<Arc<Health>>| async move { h.metrics.encode() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Arc<Health>>| async move {
                if h.ready.load(Ordering::Acquire) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .with_state(health)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series_of(text: &str, name: &str) -> Vec<String> {
        let label = format!("name=\"{name}\"");
        text.lines().filter(|l| !l.starts_with('#') && l.contains(&label)).map(str::to_string).collect()
    }

    #[test]
    fn a_deleted_rollout_leaves_no_series_behind() {
        let m = Metrics::default();
        let gone = RolloutLabel { namespace: "team-a".into(), name: "fraud".into() };
        let kept = RolloutLabel { namespace: "team-a".into(), name: "ranking".into() };
        for rl in [&gone, &kept] {
            m.weight.get_or_create(rl).set(5);
            m.mirror.get_or_create(rl).set(0);
            m.last_analysis.get_or_create(rl).set(1.0);
            m.rollbacks.get_or_create(rl).inc();
            m.promotions.get_or_create(rl).inc();
            m.rollback_decided.get_or_create(rl).set(2.0);
            for p in PHASES {
                m.phase
                    .get_or_create(&PhaseLabel {
                        namespace: rl.namespace.clone(),
                        name: rl.name.clone(),
                        phase: p.as_str(),
                    })
                    .set(0);
            }
            m.set_gate(rl, "errorRate", "candidate", 0.01);
            m.set_gate(rl, "latencyP95", "limit", 80.0);
            m.set_gate(rl, "onGpu", "stable", 1.0);
        }
        let before = series_of(&m.encode(), "fraud");
        assert!(before.len() >= 15, "every family has a series for the rollout: {before:?}");
        m.forget_rollout(&gone);
        let text = m.encode();
        assert_eq!(series_of(&text, "fraud"), Vec::<String>::new());
        assert_eq!(series_of(&text, "ranking").len(), before.len(), "the other rollout keeps its series");
    }
}
