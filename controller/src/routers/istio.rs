//! Istio: the VirtualService's primary http route gets the split's weights and mirror; in an
//! experiment stage a route of the controller's own, [`EXPERIMENT_ROUTE`], goes just before it
//! (Istio takes the first route that matches).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::weights::{replacement, weigh};
use super::{Split, replace_guarded, route_error};
use crate::api::matching::HeaderRule;
use crate::api::{IstioRouting, ModelRollout};
use crate::error::Error;
use crate::workloads::{self, MANAGER};

/// The name of the Istio route the controller adds for an experiment stage.
pub const EXPERIMENT_ROUTE: &str = "modelrollout-experiment";

pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

/// The Istio route's destinations and mirror for the split.
pub fn istio_route(route: &Value, split: &Split, stable_host: &str, canary_host: &str) -> Value {
    let mut route = route.clone();
    let dests = route["route"].as_array().cloned().unwrap_or_default();
    let out = weigh(
        &dests,
        split,
        stable_host,
        canary_host,
        |d| d["destination"]["host"].as_str().unwrap_or_default(),
        || json!({"destination": {"host": canary_host}}),
    );
    route["route"] = Value::Array(out);
    if let Some(o) = route.as_object_mut() {
        if split.candidate_active && split.mirror > 0 {
            o.insert("mirror".into(), json!({"host": canary_host}));
            o.insert("mirrorPercentage".into(), json!({"value": split.mirror as f64}));
        } else if o.get("mirror").and_then(|m| m["host"].as_str()) == Some(canary_host) {
            o.remove("mirror");
            o.remove("mirrorPercentage");
        }
    }
    route
}

/// The Istio header condition of an experiment's route.
fn istio_header(rule: &HeaderRule) -> (String, Value) {
    match rule {
        HeaderRule::Exact { name, value } => (name.clone(), json!({"exact": value})),
        HeaderRule::Regex { name, pattern } => (name.clone(), json!({"regex": pattern})),
    }
}

/// A VirtualService's http routes for the split: the primary route (at `idx`) rewritten by
/// [`istio_route`], the experiment route just before it while a match is in force.
pub fn istio_routes(routes: &[Value], idx: usize, split: &Split, stable_host: &str, canary_host: &str) -> Vec<Value> {
    let primary = istio_route(&routes[idx], split, stable_host, canary_host);
    let mut out = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        if r["name"] == EXPERIMENT_ROUTE {
            continue;
        }
        if i == idx {
            if split.candidate_active
                && let Some(m) = &split.matched
            {
                let (name, cond) = istio_header(&m.header_rule());
                let mut matches = primary["match"].as_array().cloned().unwrap_or_default();
                if matches.is_empty() {
                    matches.push(json!({}));
                }
                for one in &mut matches {
                    one["headers"][&name] = cond.clone();
                }
                let mut route = json!({
                    "name": EXPERIMENT_ROUTE,
                    "match": matches,
                    "route": [{"destination": {"host": canary_host}, "weight": 100}]
                });
                for keep in ["rewrite", "headers", "timeout", "retries", "corsPolicy"] {
                    if let Some(v) = primary.get(keep) {
                        route[keep] = v.clone();
                    }
                }
                out.push(route);
            }
            out.push(primary.clone());
        } else {
            out.push(r.clone());
        }
    }
    out
}

pub(super) async fn apply(
    client: &Client,
    mr: &ModelRollout,
    i: &IstioRouting,
    split: &Split,
) -> Result<Option<i64>, Error> {
    let ar = virtual_service_resource();
    let ns = mr.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    if i.create {
        let name = i.route.clone().unwrap_or_else(|| "primary".into());
        let base = json!({"name": name, "route": [{"destination": {"host": split.stable_service}, "weight": 100}]});
        let hosts = if i.hosts.is_empty() { vec![workloads::root_service(mr)] } else { i.hosts.clone() };
        let vs = json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": i.virtual_service, "namespace": ns, "ownerReferences": [workloads::owner_ref(mr)]},
            "spec": {"hosts": hosts, "gateways": i.gateways,
                     "http": istio_routes(&[base], 0, split, &split.stable_service, &split.canary_service)}
        });
        let written = api.patch(&i.virtual_service, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&vs)).await?;
        return Ok(written.metadata.generation);
    }
    let vs = api.get(&i.virtual_service).await.map_err(|e| route_error("VirtualService", &i.virtual_service, e))?;
    let routes = vs.data["spec"]["http"].as_array().cloned().unwrap_or_default();
    let idx = match &i.route {
        Some(name) => routes.iter().position(|r| r["name"] == name.as_str()),
        None => routes.iter().position(|r| r["name"] != EXPERIMENT_ROUTE),
    }
    .ok_or_else(|| Error::Router(format!("VirtualService {} has no http route {:?}", i.virtual_service, i.route)))?;
    // Keep the host style the user wrote (short name or FQDN) for the canary destination too.
    let stable_host = routes[idx]["route"]
        .as_array()
        .and_then(|ds| {
            ds.iter()
                .filter_map(|d| d["destination"]["host"].as_str())
                .find(|h| *h == split.stable_service || h.starts_with(&format!("{}.", split.stable_service)))
        })
        .ok_or_else(|| {
            Error::Router(format!(
                "VirtualService {} routes nowhere near Service {}",
                i.virtual_service, split.stable_service
            ))
        })?
        .to_string();
    let canary_host = stable_host.replacen(&split.stable_service, &split.canary_service, 1);
    let new_routes = istio_routes(&routes, idx, split, &stable_host, &canary_host);
    if new_routes == routes {
        return Ok(vs.metadata.generation);
    }
    let (path, value) = replacement("/spec/http", &routes, new_routes);
    replace_guarded(&api, &i.virtual_service, vs.resource_version(), &path, value).await
}
