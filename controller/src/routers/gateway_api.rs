//! Gateway API: the HTTPRoute's rule that routes to the stable Service gets the split's weights
//! and mirror; in an experiment stage a rule of the controller's own follows it (Gateway API ranks
//! a rule with more header matches above one with fewer for the same path). The controller knows
//! its rule as the one right after the stable rule whose every backend is the candidate's Service.
//! A GRPCRoute (`grpcRoute`, for clients of the sidecar's gRPC API) gets the same, to the
//! Services' `grpc` port: its rules, backendRefs, RequestMirror filter and header matches have the
//! HTTPRoute's shape; only a match of every request differs (any method instead of path `/`).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::weights::{replacement, weigh};
use super::{Split, replace_guarded, route_error};
use crate::api::matching::HeaderRule;
use crate::api::{GatewayApiRouting, ModelRollout, TrafficMatch};
use crate::error::Error;
use crate::workloads::{self, MANAGER};

/// The Gateway API route kinds the split drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GatewayRoute {
    Http,
    Grpc,
}

impl GatewayRoute {
    pub fn kind(self) -> &'static str {
        match self {
            GatewayRoute::Http => "HTTPRoute",
            GatewayRoute::Grpc => "GRPCRoute",
        }
    }

    pub fn resource(self) -> ApiResource {
        let plural = match self {
            GatewayRoute::Http => "httproutes",
            GatewayRoute::Grpc => "grpcroutes",
        };
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", self.kind()),
            plural,
        )
    }

    /// A match of every request of this kind: path prefix `/`, or any gRPC method.
    fn match_all(self) -> Value {
        match self {
            GatewayRoute::Http => json!({"path": {"type": "PathPrefix", "value": "/"}}),
            GatewayRoute::Grpc => json!({}),
        }
    }
}

/// The gRPC service a created GRPCRoute matches: the Open Inference Protocol's, which the
/// sidecar serves on `workload.grpcPort`.
pub const OIP_GRPC_SERVICE: &str = "inference.GRPCInferenceService";

pub fn http_route_resource() -> ApiResource {
    GatewayRoute::Http.resource()
}

/// The rule's backendRefs and filters for the split, other backends and filters left as they were.
pub fn gateway_rule(rule: &Value, split: &Split) -> Value {
    let mut rule = rule.clone();
    let refs = rule["backendRefs"].as_array().cloned().unwrap_or_default();
    let out = weigh(
        &refs,
        split,
        &split.stable_service,
        &split.canary_service,
        |r| r["name"].as_str().unwrap_or_default(),
        || json!({"name": split.canary_service, "port": split.port}),
    );
    rule["backendRefs"] = Value::Array(out);
    let mut filters: Vec<Value> = rule["filters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| {
            !(f["type"] == "RequestMirror" && f["requestMirror"]["backendRef"]["name"] == split.canary_service.as_str())
        })
        .collect();
    if split.candidate_active && split.mirror > 0 {
        filters.push(json!({"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": split.canary_service, "port": split.port},
            "percent": split.mirror
        }}));
    }
    if filters.is_empty() {
        if let Some(o) = rule.as_object_mut() {
            o.remove("filters");
        }
    } else {
        rule["filters"] = Value::Array(filters);
    }
    rule
}

/// The Gateway API header match of an experiment's rule.
fn gateway_header(rule: &HeaderRule) -> Value {
    match rule {
        HeaderRule::Exact { name, value } => json!({"type": "Exact", "name": name, "value": value}),
        HeaderRule::Regex { name, pattern } => json!({"type": "RegularExpression", "name": name, "value": pattern}),
    }
}

/// The experiment's rule: each of the stable rule's matches with the header condition added,
/// the stable rule's filters, the candidate's Service alone.
pub fn experiment_rule(kind: GatewayRoute, stable_rule: &Value, split: &Split, m: &TrafficMatch) -> Value {
    let rule = m.header_rule();
    let header = gateway_header(&rule);
    let mut matches = stable_rule["matches"].as_array().cloned().unwrap_or_default();
    if matches.is_empty() {
        matches.push(kind.match_all());
    }
    for one in &mut matches {
        let mut headers = one["headers"].as_array().cloned().unwrap_or_default();
        headers.retain(|h| !h["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(rule.name())));
        headers.push(header.clone());
        one["headers"] = Value::Array(headers);
    }
    let mut rule = json!({
        "matches": matches,
        "backendRefs": [{"name": split.canary_service, "port": split.port, "weight": 100}]
    });
    let filters: Vec<Value> = stable_rule["filters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f["type"] != "RequestMirror")
        .collect();
    if !filters.is_empty() {
        rule["filters"] = Value::Array(filters);
    }
    rule
}

/// Whether a rule looks like the controller's experiment rule: every backend is the candidate's
/// Service. Only the rule right after the stable rule is taken for it (that is where it goes).
fn is_experiment_rule(rule: &Value, split: &Split) -> bool {
    rule["backendRefs"]
        .as_array()
        .is_some_and(|refs| !refs.is_empty() && refs.iter().all(|b| b["name"] == split.canary_service.as_str()))
}

/// A route's rules for the split: the stable rule (the first that routes to the stable Service)
/// rewritten by [`gateway_rule`], the experiment rule after it while a match is in force, every
/// other rule as it was. None when no rule routes to stable.
pub fn gateway_rules(kind: GatewayRoute, rules: &[Value], split: &Split) -> Option<Vec<Value>> {
    let mut out = rules.to_vec();
    let idx = out.iter().position(|r| {
        r["backendRefs"].as_array().is_some_and(|refs| refs.iter().any(|b| b["name"] == split.stable_service.as_str()))
    })?;
    if out.get(idx + 1).is_some_and(|r| is_experiment_rule(r, split)) {
        out.remove(idx + 1);
    }
    out[idx] = gateway_rule(&out[idx], split);
    if split.candidate_active
        && let Some(m) = &split.matched
    {
        let rule = experiment_rule(kind, &out[idx], split, m);
        out.insert(idx + 1, rule);
    }
    Some(out)
}

/// The rule of a route the controller creates: every path to stable, or, when the contract
/// publishes its APIs, exactly their paths (`POST`), so the route and the sidecar agree from the
/// one list and the Gateway exposes nothing else of the pods.
pub fn created_rule(apis: &[crate::api::PublicApi], split: &Split) -> Value {
    let mut rule = json!({"backendRefs": [{"name": split.stable_service, "port": split.port, "weight": 100}]});
    if !apis.is_empty() {
        let matches: Vec<Value> =
            apis.iter().map(|a| json!({"path": {"type": "Exact", "value": a.path}, "method": "POST"})).collect();
        rule["matches"] = Value::Array(matches);
    }
    rule
}

/// The rule of a created GRPCRoute: the Open Inference Protocol's gRPC service, to stable.
pub fn created_grpc_rule(split: &Split) -> Value {
    json!({
        "matches": [{"method": {"type": "Exact", "service": OIP_GRPC_SERVICE}}],
        "backendRefs": [{"name": split.stable_service, "port": split.port, "weight": 100}]
    })
}

pub(super) async fn apply(
    client: &Client,
    mr: &ModelRollout,
    g: &GatewayApiRouting,
    split: &Split,
) -> Result<super::Generations, Error> {
    let http = apply_one(client, mr, g, GatewayRoute::Http, &g.http_route, split).await?;
    let Some(grpc_route) = &g.grpc_route else { return Ok(vec![http]) };
    let port = mr.spec.workload.grpc_port.ok_or_else(|| {
        Error::Router(format!("GRPCRoute {grpc_route}: the sidecar serves no gRPC (set workload.grpcPort)"))
    })?;
    let grpc_split = Split { port, ..split.clone() };
    let grpc = apply_one(client, mr, g, GatewayRoute::Grpc, grpc_route, &grpc_split).await?;
    Ok(vec![http, grpc])
}

/// One route of the split: created whole (server-side apply, owned by the rollout) with `create`,
/// else the user's route's stable rule (and the experiment's rule beside it) replaced, guarded.
async fn apply_one(
    client: &Client,
    mr: &ModelRollout,
    g: &GatewayApiRouting,
    kind: GatewayRoute,
    name: &str,
    split: &Split,
) -> Result<Option<i64>, Error> {
    let ar = kind.resource();
    let ns = mr.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    if g.create {
        let base = match kind {
            GatewayRoute::Http => created_rule(&mr.spec.model.contract.apis, split),
            GatewayRoute::Grpc => created_grpc_rule(split),
        };
        let parents: Vec<Value> = g
            .parent_refs
            .iter()
            .map(|p| {
                let mut v = json!({"name": p.name});
                if let Some(n) = &p.namespace {
                    v["namespace"] = json!(n);
                }
                if let Some(s) = &p.section_name {
                    v["sectionName"] = json!(s);
                }
                v
            })
            .collect();
        let rules = gateway_rules(kind, &[base], split).expect("the base rule routes to stable");
        let mut route = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": kind.kind(),
            "metadata": {"name": name, "namespace": ns, "ownerReferences": [workloads::owner_ref(mr)]},
            "spec": {"parentRefs": parents, "rules": rules}
        });
        if !g.hostnames.is_empty() {
            route["spec"]["hostnames"] = json!(g.hostnames);
        }
        let written = api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&route)).await?;
        return Ok(written.metadata.generation);
    }
    let route = api.get(name).await.map_err(|e| route_error(kind.kind(), name, e))?;
    let rules = route.data["spec"]["rules"].as_array().cloned().unwrap_or_default();
    let new_rules = gateway_rules(kind, &rules, split).ok_or_else(|| {
        Error::Router(format!(
            "{} {name} has no rule with a backendRef to Service {}",
            kind.kind(),
            split.stable_service
        ))
    })?;
    if new_rules == rules {
        return Ok(route.metadata.generation);
    }
    // One rule changed: replace that one (the user's other rules are not even rewritten). Rules
    // added or removed (an experiment starts or ends): the list, still guarded.
    let (path, value) = replacement("/spec/rules", &rules, new_rules);
    replace_guarded(&api, name, route.resource_version(), &path, value).await
}
