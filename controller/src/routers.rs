//! Traffic routers behind one trait: Gateway API HTTPRoute, Istio VirtualService, and the no-mesh
//! replica ratio. In a route the user owns, only the rule that routes to the stable Service is
//! touched (and, in an experiment stage, a rule of the controller's own beside it), by a JSON
//! patch guarded by the resourceVersion; a route created on request is owned by the ModelRollout
//! and written whole by server-side apply.
//!
//! An experiment stage's rule sends the requests its match selects to the candidate: the stable
//! rule's path matches, each with the match's header condition added, and the stable rule's
//! filters. Gateway API ranks a rule with more header matches above one with fewer for the same
//! path, and Istio takes the first route that matches, so it goes just before the stable route.
//! The controller knows its Gateway API rule as the one whose every backend is the candidate's
//! Service, and its Istio route by its name, [`EXPERIMENT_ROUTE`].

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::api::matching::HeaderRule;
use crate::api::{GatewayApiRouting, IstioRouting, ModelRollout, TrafficMatch};
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
    /// An experiment stage's match: the requests it selects go to the candidate.
    pub matched: Option<TrafficMatch>,
}

/// The name of the Istio route the controller adds for an experiment stage.
pub const EXPERIMENT_ROUTE: &str = "modelrollout-experiment";

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

/// The Gateway API header match of an experiment's rule.
fn gateway_header(rule: &HeaderRule) -> Value {
    match rule {
        HeaderRule::Exact { name, value } => json!({"type": "Exact", "name": name, "value": value}),
        HeaderRule::Regex { name, pattern } => json!({"type": "RegularExpression", "name": name, "value": pattern}),
    }
}

/// The experiment's rule: each of the stable rule's matches with the header condition added,
/// the stable rule's filters, the candidate's Service alone.
pub fn experiment_rule(stable_rule: &Value, split: &Split, m: &TrafficMatch) -> Value {
    let rule = m.header_rule();
    let header = gateway_header(&rule);
    let mut matches = stable_rule["matches"].as_array().cloned().unwrap_or_default();
    if matches.is_empty() {
        matches.push(json!({"path": {"type": "PathPrefix", "value": "/"}}));
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
pub fn gateway_rules(rules: &[Value], split: &Split) -> Option<Vec<Value>> {
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
        let rule = experiment_rule(&out[idx], split, m);
        out.insert(idx + 1, rule);
    }
    Some(out)
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
            "spec": {"parentRefs": parents, "rules": gateway_rules(&[base], split).expect("the base rule routes to stable")}
        });
        let written = api.patch(&g.http_route, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&route)).await?;
        return Ok(written.metadata.generation);
    }
    let route = api.get(&g.http_route).await.map_err(|e| route_error("HTTPRoute", &g.http_route, e))?;
    let rules = route.data["spec"]["rules"].as_array().cloned().unwrap_or_default();
    let new_rules = gateway_rules(&rules, split).ok_or_else(|| {
        Error::Router(format!(
            "HTTPRoute {} has no rule with a backendRef to Service {}",
            g.http_route, split.stable_service
        ))
    })?;
    if new_rules == rules {
        return Ok(route.metadata.generation);
    }
    // One rule changed: replace that one (the user's other rules are not even rewritten). Rules
    // added or removed (an experiment starts or ends): the list, still guarded.
    let changed: Vec<usize> = (0..rules.len().min(new_rules.len())).filter(|i| rules[*i] != new_rules[*i]).collect();
    let (path, value) = match changed.as_slice() {
        [i] if rules.len() == new_rules.len() => (format!("/spec/rules/{i}"), new_rules[*i].clone()),
        _ => ("/spec/rules".to_string(), Value::Array(new_rules)),
    };
    replace_guarded(&api, &g.http_route, route.resource_version(), &path, value).await
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
    let changed: Vec<usize> =
        (0..routes.len().min(new_routes.len())).filter(|i| routes[*i] != new_routes[*i]).collect();
    let (path, value) = match changed.as_slice() {
        [i] if routes.len() == new_routes.len() => (format!("/spec/http/{i}"), new_routes[*i].clone()),
        _ => ("/spec/http".to_string(), Value::Array(new_routes)),
    };
    replace_guarded(&api, &i.virtual_service, vs.resource_version(), &path, value).await
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
            matched: None,
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

    fn keyed(percent: i32) -> Split {
        use crate::api::KeyShare;
        Split {
            matched: Some(TrafficMatch {
                header: None,
                cookie: None,
                key_share: Some(KeyShare { header: "X-User-Id".into(), percent }),
            }),
            ..split(true, 0, 0)
        }
    }

    /// An experiment adds one rule after the stable rule: the stable rule's matches with the key
    /// condition, its filters, the candidate's Service alone. Applying again changes nothing, a new
    /// share rewrites only that rule, and the end of the experiment restores the route exactly.
    #[test]
    fn an_experiment_rule_follows_the_stable_rule_and_goes_when_it_ends() {
        let user = json!({"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}], "backendRefs": [{"name": "admin", "port": 80}]});
        let stable = json!({
            "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}, "headers": [{"name": "x-user-id", "value": "old"}]},
                        {"path": {"type": "PathPrefix", "value": "/v2"}}],
            "backendRefs": [{"name": "fraud-stable", "port": 8080, "weight": 100}],
            "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x", "value": "y"}]}}]
        });
        let rules = vec![user.clone(), stable.clone()];
        let on = gateway_rules(&rules, &keyed(50)).unwrap();
        assert_eq!(on.len(), 3);
        assert_eq!(on[0], user);
        assert_eq!(on[1]["backendRefs"][0]["weight"], 100, "stable keeps every unmatched request");
        let exp = &on[2];
        assert_eq!(exp["backendRefs"], json!([{"name": "fraud-canary", "port": 8080, "weight": 100}]));
        assert_eq!(exp["filters"], stable["filters"]);
        let want = json!({"type": "RegularExpression", "name": "x-user-id", "value": "^.*(?:[01234567][0-9a-fA-F])$"});
        // The user's own condition on the key header gives way to the experiment's; each match keeps its path.
        assert_eq!(exp["matches"][0]["headers"], json!([want]));
        assert_eq!(exp["matches"][0]["path"], stable["matches"][0]["path"]);
        assert_eq!(exp["matches"][1], json!({"path": {"type": "PathPrefix", "value": "/v2"}, "headers": [want]}));
        assert_eq!(gateway_rules(&on, &keyed(50)).unwrap(), on, "idempotent");
        let wider = gateway_rules(&on, &keyed(75)).unwrap();
        assert_eq!(wider.len(), 3);
        assert_eq!(wider[..2], on[..2]);
        assert_eq!(wider[2]["matches"][1]["headers"][0]["value"], "^.*(?:[0123456789aAbB][0-9a-fA-F])$");
        let off = gateway_rules(&wider, &split(false, 0, 0)).unwrap();
        assert_eq!(off, rules);
        // A rule with no matches of its own matches every path.
        let bare = json!({"backendRefs": [{"name": "fraud-stable", "port": 8080}]});
        let one = gateway_rules(&[bare], &keyed(50)).unwrap();
        assert_eq!(one[1]["matches"][0]["path"], json!({"type": "PathPrefix", "value": "/"}));
        // A user's own rule to the candidate elsewhere in the route is theirs: kept, with or
        // without an experiment.
        let debug = json!({"matches": [{"headers": [{"name": "x-debug", "value": "canary"}]}],
                           "backendRefs": [{"name": "fraud-canary", "port": 8080}]});
        let with_debug = vec![debug.clone(), stable.clone()];
        let on = gateway_rules(&with_debug, &keyed(50)).unwrap();
        assert_eq!((on.len(), &on[0]), (3, &debug));
        assert_eq!(gateway_rules(&on, &split(false, 0, 0)).unwrap(), with_debug);
    }

    /// Istio: the experiment route goes before the primary (first match wins), keeps the primary's
    /// rewrite and timeout, and goes when the experiment ends.
    #[test]
    fn an_istio_experiment_route_precedes_the_primary_and_goes_when_it_ends() {
        let other = json!({"name": "health", "match": [{"uri": {"prefix": "/healthz"}}], "route": [{"destination": {"host": "health"}}]});
        let primary = json!({"name": "primary", "match": [{"uri": {"prefix": "/v1"}}], "timeout": "2s",
                             "route": [{"destination": {"host": "fraud-stable"}, "weight": 100}]});
        let routes = vec![other.clone(), primary.clone()];
        let on = istio_routes(&routes, 1, &keyed(50), "fraud-stable", "fraud-canary");
        assert_eq!(on.len(), 3);
        assert_eq!(on[0], other);
        assert_eq!(on[1]["name"], EXPERIMENT_ROUTE);
        assert_eq!(
            on[1]["match"],
            json!([{"uri": {"prefix": "/v1"}, "headers": {"x-user-id": {"regex": "^.*(?:[01234567][0-9a-fA-F])$"}}}])
        );
        assert_eq!(on[1]["route"], json!([{"destination": {"host": "fraud-canary"}, "weight": 100}]));
        assert_eq!(on[1]["timeout"], "2s");
        assert_eq!(on[2]["route"][0]["weight"], 100);
        assert_eq!(istio_routes(&on, 2, &keyed(50), "fraud-stable", "fraud-canary"), on, "idempotent");
        let off = istio_routes(&on, 2, &split(false, 0, 0), "fraud-stable", "fraud-canary");
        assert_eq!(off, routes);
    }
}
