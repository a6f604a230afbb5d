//! Traffic routers behind one trait: Gateway API HTTPRoute, Istio VirtualService, and the no-mesh
//! replica ratio. In a route the user owns, only the rule that routes to the stable Service is
//! touched, by a JSON patch guarded by the resourceVersion; a route created on request is owned by
//! the ModelRollout and written whole by server-side apply.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::api::{GatewayApiRouting, IstioRouting, ModelRollout};
use crate::error::Error;
use crate::workloads::{self, MANAGER};

/// The split to route: `weight`% to the canary Service, `mirror`% copied to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub stable_service: String,
    pub canary_service: String,
    pub port: i32,
    /// None: no candidate; all traffic to stable, canary references removed.
    pub candidate_active: bool,
    pub weight: i32,
    pub mirror: i32,
}

pub trait TrafficRouter {
    /// Makes the route send the split. Idempotent. Returns the route's `metadata.generation` as
    /// this write left it (or as read, when it already said the split); None without a route.
    fn apply(
        &self,
        client: &Client,
        mr: &ModelRollout,
        split: &Split,
    ) -> impl Future<Output = Result<Option<i64>, Error>> + Send;
}

pub enum Router<'a> {
    GatewayApi(&'a GatewayApiRouting),
    Istio(&'a IstioRouting),
    /// The replica counts are the split; nothing to route.
    ReplicaRatio,
}

impl<'a> Router<'a> {
    pub fn of(mr: &'a ModelRollout) -> Self {
        let t = &mr.spec.traffic_routing;
        match (&t.gateway_api, &t.istio) {
            (Some(g), _) => Router::GatewayApi(g),
            (None, Some(i)) => Router::Istio(i),
            _ => Router::ReplicaRatio,
        }
    }
}

impl TrafficRouter for Router<'_> {
    async fn apply(&self, client: &Client, mr: &ModelRollout, split: &Split) -> Result<Option<i64>, Error> {
        match self {
            Router::GatewayApi(g) => gateway_api(client, mr, g, split).await,
            Router::Istio(i) => istio(client, mr, i, split).await,
            Router::ReplicaRatio => Ok(None),
        }
    }
}

pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

/// The rule's backendRefs and filters for the split, other backends and filters left as they were.
pub fn gateway_rule(rule: &Value, split: &Split) -> Value {
    let mut rule = rule.clone();
    let refs = rule["backendRefs"].as_array().cloned().unwrap_or_default();
    let mut out: Vec<Value> = Vec::new();
    let mut has_canary = false;
    for mut r in refs {
        let name = r["name"].as_str().unwrap_or_default().to_string();
        if name == split.stable_service {
            r["weight"] = json!(100 - if split.candidate_active { split.weight } else { 0 });
        } else if name == split.canary_service {
            if !split.candidate_active {
                continue;
            }
            r["weight"] = json!(split.weight);
            has_canary = true;
        }
        out.push(r);
    }
    if split.candidate_active && !has_canary {
        out.push(json!({"name": split.canary_service, "port": split.port, "weight": split.weight}));
    }
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

async fn gateway_api(
    client: &Client,
    mr: &ModelRollout,
    g: &GatewayApiRouting,
    split: &Split,
) -> Result<Option<i64>, Error> {
    let ar = http_route_resource();
    let ns = mr.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    if g.create {
        let base = json!({"backendRefs": [{"name": split.stable_service, "port": split.port, "weight": 100}]});
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
        let route = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": g.http_route, "namespace": ns, "ownerReferences": [workloads::owner_ref(mr)]},
            "spec": {"parentRefs": parents, "rules": [gateway_rule(&base, split)]}
        });
        let written = api.patch(&g.http_route, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&route)).await?;
        return Ok(written.metadata.generation);
    }
    let route = api.get(&g.http_route).await.map_err(|e| route_error("HTTPRoute", &g.http_route, e))?;
    let rules = route.data["spec"]["rules"].as_array().cloned().unwrap_or_default();
    let idx = rules
        .iter()
        .position(|r| {
            r["backendRefs"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|b| b["name"] == split.stable_service.as_str()))
        })
        .ok_or_else(|| {
            Error::Router(format!(
                "HTTPRoute {} has no rule with a backendRef to Service {}",
                g.http_route, split.stable_service
            ))
        })?;
    let new_rule = gateway_rule(&rules[idx], split);
    if new_rule == rules[idx] {
        return Ok(route.metadata.generation);
    }
    replace_guarded(&api, &g.http_route, route.resource_version(), &format!("/spec/rules/{idx}"), new_rule).await
}

/// Replaces one list item of a user-owned object, only if nobody changed the object since we read
/// it (a JSON patch `test` on the resourceVersion): everything else in the object stays theirs.
async fn replace_guarded(
    api: &Api<DynamicObject>,
    name: &str,
    resource_version: Option<String>,
    path: &str,
    value: Value,
) -> Result<Option<i64>, Error> {
    let patch = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "replace", "path": path, "value": value}
    ]);
    let patch: json_patch::Patch = serde_json::from_value(patch).expect("a well-formed JSON patch");
    let params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    let written = api.patch(name, &params, &Patch::Json::<()>(patch)).await?;
    Ok(written.metadata.generation)
}

/// The Istio route's destinations and mirror for the split.
pub fn istio_route(route: &Value, split: &Split, stable_host: &str, canary_host: &str) -> Value {
    let mut route = route.clone();
    let dests = route["route"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    let mut has_canary = false;
    for mut d in dests {
        let host = d["destination"]["host"].as_str().unwrap_or_default().to_string();
        if host == stable_host {
            d["weight"] = json!(100 - if split.candidate_active { split.weight } else { 0 });
        } else if host == canary_host {
            if !split.candidate_active {
                continue;
            }
            d["weight"] = json!(split.weight);
            has_canary = true;
        }
        out.push(d);
    }
    if split.candidate_active && !has_canary {
        out.push(json!({"destination": {"host": canary_host}, "weight": split.weight}));
    }
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

async fn istio(client: &Client, mr: &ModelRollout, i: &IstioRouting, split: &Split) -> Result<Option<i64>, Error> {
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
                     "http": [istio_route(&base, split, &split.stable_service, &split.canary_service)]}
        });
        let written = api.patch(&i.virtual_service, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&vs)).await?;
        return Ok(written.metadata.generation);
    }
    let vs = api.get(&i.virtual_service).await.map_err(|e| route_error("VirtualService", &i.virtual_service, e))?;
    let routes = vs.data["spec"]["http"].as_array().cloned().unwrap_or_default();
    let idx = match &i.route {
        Some(name) => routes.iter().position(|r| r["name"] == name.as_str()),
        None => (!routes.is_empty()).then_some(0),
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
    let new_route = istio_route(&routes[idx], split, &stable_host, &canary_host);
    if new_route == routes[idx] {
        return Ok(vs.metadata.generation);
    }
    replace_guarded(&api, &i.virtual_service, vs.resource_version(), &format!("/spec/http/{idx}"), new_route).await
}

/// A failed read of the user's route: `RouteNotFound` when it does not exist (typed, never matched
/// by its text), the API error otherwise.
fn route_error(kind: &'static str, name: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(status) if status.code == 404 => Error::RouteNotFound { kind, name: name.into() },
        other => Error::Router(format!("{kind} {name}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(active: bool, weight: i32, mirror: i32) -> Split {
        Split {
            stable_service: "fraud-stable".into(),
            canary_service: "fraud-canary".into(),
            port: 8080,
            candidate_active: active,
            weight,
            mirror,
        }
    }

    #[test]
    fn gateway_rule_sets_weights_and_mirror_and_keeps_the_rest() {
        let rule = json!({
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": "fraud-stable", "port": 8080, "weight": 100}, {"name": "other", "port": 80, "weight": 0}],
            "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x", "value": "y"}]}}]
        });
        let shadow = gateway_rule(&rule, &split(true, 0, 100));
        assert_eq!(shadow["backendRefs"][2], json!({"name": "fraud-canary", "port": 8080, "weight": 0}));
        assert_eq!(shadow["filters"][1]["requestMirror"]["percent"], 100);
        assert_eq!(shadow["matches"], rule["matches"]);
        let five = gateway_rule(&shadow, &split(true, 5, 0));
        assert_eq!(five["backendRefs"][0]["weight"], 95);
        assert_eq!(five["backendRefs"][2]["weight"], 5);
        assert_eq!(five["filters"].as_array().unwrap().len(), 1, "mirror removed, user filter kept");
        let restored = gateway_rule(&five, &split(false, 0, 0));
        assert_eq!(
            restored["backendRefs"],
            json!([{"name": "fraud-stable", "port": 8080, "weight": 100}, {"name": "other", "port": 80, "weight": 0}])
        );
        assert_eq!(restored, {
            let mut r = rule.clone();
            r["backendRefs"][0]["weight"] = json!(100);
            r
        });
    }

    #[test]
    fn istio_route_sets_weights_and_mirror_percentage() {
        let route = json!({"name": "primary", "route": [{"destination": {"host": "fraud-stable"}, "weight": 100}]});
        let s = istio_route(&route, &split(true, 0, 50), "fraud-stable", "fraud-canary");
        assert_eq!(s["mirror"]["host"], "fraud-canary");
        assert_eq!(s["mirrorPercentage"]["value"], 50.0);
        let c = istio_route(&s, &split(true, 25, 0), "fraud-stable", "fraud-canary");
        assert_eq!(c["route"][0]["weight"], 75);
        assert_eq!(c["route"][1]["weight"], 25);
        assert!(c.get("mirror").is_none());
        let r = istio_route(&c, &split(false, 0, 0), "fraud-stable", "fraud-canary");
        assert_eq!(r, json!({"name": "primary", "route": [{"destination": {"host": "fraud-stable"}, "weight": 100}]}));
    }
}
