//! Traffic routers behind one trait, one file per provider: Gateway API HTTPRoute
//! ([`gateway_api`]), Istio VirtualService ([`istio`]), and the no-mesh replica ratio
//! ([`replica_ratio`]); the weight arithmetic they share is [`weights`]. In a route the user owns, only the rule that routes to the stable Service is
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

use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

pub mod gateway_api;
pub mod istio;
pub mod replica_ratio;
pub mod weights;

pub use gateway_api::{
    GatewayRoute, OIP_GRPC_SERVICE, created_grpc_rule, created_rule, experiment_rule, gateway_rule, gateway_rules,
    http_route_resource,
};
pub use istio::{EXPERIMENT_ROUTE, istio_route, istio_routes, virtual_service_resource};

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

/// What a stage routes to the candidate, as the core decided it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CandidateTraffic {
    pub weight: i32,
    pub mirror: i32,
    pub matched: Option<TrafficMatch>,
}

impl Split {
    /// The one constructor of a rollout's split: its Services and port, and the candidate's
    /// traffic when a candidate is active (None: all traffic to stable).
    pub fn of(mr: &ModelRollout, candidate: Option<CandidateTraffic>) -> Self {
        let mut split =
            Self::none(&workloads::stable_service(mr), &workloads::canary_service(mr), mr.spec.workload.service_port);
        if let Some(c) = candidate {
            split.candidate_active = true;
            split.weight = c.weight;
            split.mirror = c.mirror;
            split.matched = c.matched;
        }
        split
    }

    /// All traffic to `stable_service`, nothing to `canary_service`.
    pub fn none(stable_service: &str, canary_service: &str, port: i32) -> Self {
        Self {
            stable_service: stable_service.into(),
            canary_service: canary_service.into(),
            port,
            candidate_active: false,
            weight: 0,
            mirror: 0,
            matched: None,
        }
    }

    /// The candidate's weight in force: none without an active candidate.
    pub fn candidate_weight(&self) -> i32 {
        if self.candidate_active { self.weight } else { 0 }
    }
}

/// Each route's `metadata.generation` as a write left it (or as read, when it already said the
/// split), in `route_watch::routes_of`'s order.
pub type Generations = Vec<Option<i64>>;

pub trait TrafficRouter {
    /// Makes the routes send the split. Idempotent. Returns each route's generation (none
    /// without a route).
    fn apply(
        &self,
        client: &Client,
        mr: &ModelRollout,
        split: &Split,
    ) -> impl Future<Output = Result<Generations, Error>> + Send;

    /// Before the rollout goes (its finalizer): all traffic back to stable and the controller's
    /// changes to a user-owned route removed. A route already gone needs no restoring.
    fn restore(&self, client: &Client, mr: &ModelRollout) -> impl Future<Output = Result<(), Error>> + Send
    where
        Self: Sync,
    {
        async move {
            match self.apply(client, mr, &Split::of(mr, None)).await {
                Ok(_) | Err(Error::RouteNotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
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
    async fn apply(&self, client: &Client, mr: &ModelRollout, split: &Split) -> Result<Generations, Error> {
        match self {
            Router::GatewayApi(g) => gateway_api::apply(client, mr, g, split).await,
            Router::Istio(i) => Ok(vec![istio::apply(client, mr, i, split).await?]),
            Router::ReplicaRatio => replica_ratio::apply(client, mr, split).await,
        }
    }
}

/// Replaces one list item of a user-owned object, only if nobody changed the object since we read
/// it (a JSON patch `test` on the resourceVersion): everything else in the object stays theirs.
pub(super) async fn replace_guarded(
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

/// A failed read of the user's route: `RouteNotFound` when it does not exist (typed, never matched
/// by its text), the API error otherwise.
pub(super) fn route_error(kind: &'static str, name: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(status) if status.code == 404 => Error::RouteNotFound { kind, name: name.into() },
        other => Error::Router(format!("{kind} {name}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn split(active: bool, weight: i32, mirror: i32) -> Split {
        Split { candidate_active: active, weight, mirror, ..Split::none("fraud-stable", "fraud-canary", 8080) }
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
        let on = gateway_rules(GatewayRoute::Http, &rules, &keyed(50)).unwrap();
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
        assert_eq!(gateway_rules(GatewayRoute::Http, &on, &keyed(50)).unwrap(), on, "idempotent");
        let wider = gateway_rules(GatewayRoute::Http, &on, &keyed(75)).unwrap();
        assert_eq!(wider.len(), 3);
        assert_eq!(wider[..2], on[..2]);
        assert_eq!(wider[2]["matches"][1]["headers"][0]["value"], "^.*(?:[0123456789aAbB][0-9a-fA-F])$");
        let off = gateway_rules(GatewayRoute::Http, &wider, &split(false, 0, 0)).unwrap();
        assert_eq!(off, rules);
        // A rule with no matches of its own matches every path.
        let bare = json!({"backendRefs": [{"name": "fraud-stable", "port": 8080}]});
        let one = gateway_rules(GatewayRoute::Http, &[bare], &keyed(50)).unwrap();
        assert_eq!(one[1]["matches"][0]["path"], json!({"type": "PathPrefix", "value": "/"}));
        // A user's own rule to the candidate elsewhere in the route is theirs: kept, with or
        // without an experiment.
        let debug = json!({"matches": [{"headers": [{"name": "x-debug", "value": "canary"}]}],
                           "backendRefs": [{"name": "fraud-canary", "port": 8080}]});
        let with_debug = vec![debug.clone(), stable.clone()];
        let on = gateway_rules(GatewayRoute::Http, &with_debug, &keyed(50)).unwrap();
        assert_eq!((on.len(), &on[0]), (3, &debug));
        assert_eq!(gateway_rules(GatewayRoute::Http, &on, &split(false, 0, 0)).unwrap(), with_debug);
    }

    /// A route the controller creates matches what the contract publishes and nothing else; with no
    /// published API, every path. An experiment's rule keeps those matches.
    #[test]
    fn a_created_route_matches_the_published_apis_exactly() {
        let api = |path: &str| crate::api::PublicApi {
            path: path.into(),
            shape: crate::api::ApiShape::Classify,
            labels: None,
            item_id: None,
            deprecation: None,
        };
        let every = created_rule(&[], &split(false, 0, 0));
        assert!(every.get("matches").is_none(), "{every}");
        let rule = created_rule(&[api("/moderate"), api("/v0/moderate")], &split(false, 0, 0));
        assert_eq!(
            rule["matches"],
            json!([{"path": {"type": "Exact", "value": "/moderate"}, "method": "POST"},
                   {"path": {"type": "Exact", "value": "/v0/moderate"}, "method": "POST"}])
        );
        let on = gateway_rules(GatewayRoute::Http, std::slice::from_ref(&rule), &keyed(50)).unwrap();
        assert_eq!(on[1]["matches"][1]["path"], rule["matches"][1]["path"]);
        assert_eq!(on[1]["matches"][1]["method"], "POST");
    }

    /// A GRPCRoute takes the split as an HTTPRoute does (weights and mirror on the stable rule, to
    /// the gRPC port); its experiment rule matches every method with the key header; a created
    /// one matches the Open Inference Protocol's service.
    #[test]
    fn a_grpc_route_gets_weights_mirror_and_the_experiment_rule() {
        let grpc = |s: Split| Split { port: 9001, ..s };
        let base = created_grpc_rule(&grpc(split(false, 0, 0)));
        assert_eq!(
            base["matches"],
            json!([{"method": {"type": "Exact", "service": "inference.GRPCInferenceService"}}])
        );
        let shadow =
            gateway_rules(GatewayRoute::Grpc, std::slice::from_ref(&base), &grpc(split(true, 0, 100))).unwrap();
        assert_eq!(
            shadow[0]["filters"],
            json!([{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "fraud-canary", "port": 9001}, "percent": 100}}])
        );
        let quarter = gateway_rules(GatewayRoute::Grpc, &shadow, &grpc(split(true, 25, 0))).unwrap();
        assert_eq!(quarter.len(), 1);
        assert_eq!(
            quarter[0]["backendRefs"],
            json!([{"name": "fraud-stable", "port": 9001, "weight": 75}, {"name": "fraud-canary", "port": 9001, "weight": 25}])
        );
        assert!(quarter[0].get("filters").is_none(), "the mirror goes with the shadow stage");
        // An experiment on a user's GRPCRoute whose stable rule matches every method.
        let bare = json!({"backendRefs": [{"name": "fraud-stable", "port": 9001}]});
        let on = gateway_rules(GatewayRoute::Grpc, &[bare], &grpc(keyed(50))).unwrap();
        assert_eq!(
            on[1]["matches"],
            json!([{"headers": [{"type": "RegularExpression", "name": "x-user-id", "value": "^.*(?:[01234567][0-9a-fA-F])$"}]}])
        );
        assert_eq!(on[1]["backendRefs"], json!([{"name": "fraud-canary", "port": 9001, "weight": 100}]));
        let off = gateway_rules(GatewayRoute::Grpc, &on, &grpc(split(false, 0, 0))).unwrap();
        assert_eq!(off.len(), 1, "the experiment's rule goes when it ends: {off:?}");
        let names: Vec<&str> =
            off[0]["backendRefs"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["fraud-stable"]);
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
