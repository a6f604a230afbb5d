//! Given: the situations the suites start from, set up as a platform team would (Argo Rollouts'
//! e2e reads Given/When/Then; these are the Givens shared by more than one test).

use std::time::Duration;

use modelrollout::api::{ModelRolloutStatus, Phase};
use serde_json::{Value, json};

use crate::env::Env;
use crate::load::clients::{ClientLoad, Target, gateway, gateway_host, wait_answered_by};
use crate::load::users::Users;
use crate::manifest::*;
use crate::measure::golden_fpr;
use crate::routes::gateway_route;

/// The ranking experiment's rollout name.
pub const RANKER: &str = "ranker";

/// A test's namespace with the chart's controller, the user's route on the shared Gateway, v1
/// stable, and clients sending `rps` through the Gateway (every `pin_every`-th pinned); returns
/// once v1 answers them.
pub async fn through_gateway(prefix: &str, rps: u32, pin_every: Option<u64>) -> (Env, ClientLoad, String) {
    through_gateway_with(prefix, rps, pin_every, true).await
}

/// [`through_gateway`], the clients' labels posted to the evidence service as they come, or (not
/// `post_labels`) kept for the test ([`ClientLoad::take_labels`]).
pub async fn through_gateway_with(
    prefix: &str,
    rps: u32,
    pin_every: Option<u64>,
    post_labels: bool,
) -> (Env, ClientLoad, String) {
    let v1 = Manifest::fraud_on_node("v1", from_image("fraud-v1.onnx")).stages(four_stages(6)).build();
    through_gateway_from(prefix, v1, rps, pin_every, post_labels).await
}

/// [`through_gateway_with`] from this v1 manifest.
pub async fn through_gateway_from(
    prefix: &str,
    v1: Value,
    rps: u32,
    pin_every: Option<u64>,
    post_labels: bool,
) -> (Env, ClientLoad, String) {
    let (addr, ..) = gateway();
    let env = Env::on_node(prefix, "fraud", |ns| Some(gateway_route(ns, "fraud", true)), v1).await;
    let ns = env.ns.name.clone();
    let target = Target::Gateway { addr, host: gateway_host(&ns) };
    let load = ClientLoad::start_with(env.client.clone(), &ns, "fraud", target, rps, pin_every, post_labels);
    wait_answered_by(&load, "v1").await;
    (env, load, ns)
}

/// The search team's experiment: the ranking rollout with `stable_file` as v1 stable on the real
/// node, its route on the shared Gateway, and users sending through it.
pub async fn ab_experiment(prefix: &str, stable_file: &str, seed: u64) -> (Env, Users) {
    let v1 = ranking_experiment("v1", stable_file, 30);
    let env = Env::on_node(prefix, RANKER, |ns| Some(gateway_route(ns, RANKER, false)), v1).await;
    let users = Users::start(&env, seed);
    users.wait_answered_by("v1").await;
    (env, users)
}

/// The sequential judge's scenario: stable is fraud-v1 deciding at 0.87, which flags 1 of the 147
/// legitimate rows the load generators send (0.68%); the candidate is the same model re-tuned to
/// decide at 0.73, which flags 4 of them (2.72%): a 2-point false-positive-rate regression. The
/// only gate is falsePositiveRate, judged sequentially at 95% against `margin` above stable.
pub fn retuned(version: &str, threshold: f64, stages: Value, margin: f64) -> Value {
    let gates = json!({"falsePositiveRate": {"maxAboveStable": margin, "judge": "Sequential", "confidence": 0.95}});
    let mut m = Manifest::fraud(version, local_file("fraud-v1.onnx")).stages(stages).gates(gates).build();
    m["spec"]["model"]["contract"]["output"] = json!({"threshold": threshold});
    m
}

/// The sequential judge's scenario ([`retuned`]): v1 at 0.87 stable, the candidate at 0.73 rolled
/// out through `stages`, until it ends.
pub async fn sequential_scenario(prefix: &str, margin: f64, stages: Value) -> (Env, ModelRolloutStatus) {
    let (stable_fpr, candidate_fpr) = (golden_fpr(0.87), golden_fpr(0.73));
    assert!((candidate_fpr - stable_fpr - 0.0204).abs() < 1e-3, "{stable_fpr} {candidate_fpr}");
    let v1 = retuned("v1", 0.87, four_stages(5), margin);
    let env = Env::kwok(prefix, 500, &["--leader-election=false"], v1).await;
    gitops_apply(&env.ns.name, &retuned("v1-t073", 0.73, stages, margin));
    let mr = env
        .wait(Duration::from_secs(400), "the candidate decided", |s| {
            s.candidate_version.as_deref() == Some("v1-t073")
                && matches!(s.phase, Some(Phase::RolledBack | Phase::Failed))
                || s.phase == Some(Phase::Promoted)
        })
        .await;
    (env, mr.status.unwrap())
}
