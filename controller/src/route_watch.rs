//! The routes rollouts drive (HTTPRoutes, GRPCRoutes, VirtualServices), watched by their metadata
//! only.
//!
//! A route is usually the user's, applied by GitOps. When a sync (or a hand edit) writes it back
//! mid-rollout, the controller's split is gone from it; without a watch the controller would put it
//! back only when its remembered split ages out (`--reapply-after`). Here every spec change of a
//! route (its `metadata.generation`; status writes by the gateway do not count) reconciles the
//! rollouts that drive it at once, and the reconcile re-applies the split because the route's
//! generation is no longer the one the controller's own last write left.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::{Stream, StreamExt, TryStreamExt};
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, ResourceExt};

use crate::api::ModelRollout;
use crate::routers::{GatewayRoute, Router, virtual_service_resource};

/// The kinds of route a rollout can drive.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RouteKind {
    HttpRoute,
    GrpcRoute,
    VirtualService,
}

impl RouteKind {
    pub const ALL: [RouteKind; 3] = [RouteKind::HttpRoute, RouteKind::GrpcRoute, RouteKind::VirtualService];

    pub fn resource(self) -> ApiResource {
        match self {
            RouteKind::HttpRoute => GatewayRoute::Http.resource(),
            RouteKind::GrpcRoute => GatewayRoute::Grpc.resource(),
            RouteKind::VirtualService => virtual_service_resource(),
        }
    }
}

/// One route: kind, namespace, name.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteKey {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
}

/// The routes `mr` drives, in the order its router's `apply` reports their generations: the
/// HTTPRoute then the GRPCRoute, or the VirtualService; none with replica ratios.
pub fn routes_of(mr: &ModelRollout) -> Vec<RouteKey> {
    let namespace = mr.namespace().unwrap_or_default();
    let key = |kind, name: &String| RouteKey { kind, namespace: namespace.clone(), name: name.clone() };
    match Router::of(mr) {
        Router::GatewayApi(g) => std::iter::once(key(RouteKind::HttpRoute, &g.http_route))
            .chain(g.grpc_route.as_ref().map(|n| key(RouteKind::GrpcRoute, n)))
            .collect(),
        Router::Istio(i) => vec![key(RouteKind::VirtualService, &i.virtual_service)],
        Router::ReplicaRatio => vec![],
    }
}

/// The generation of every watched route, as the watch last saw it.
#[derive(Default)]
pub struct RouteGenerations(Mutex<HashMap<RouteKey, i64>>);

impl RouteGenerations {
    /// The generation the watch last saw for `key`; None when the route is unwatched or unseen.
    pub fn get(&self, key: &RouteKey) -> Option<i64> {
        self.0.lock().expect("not poisoned").get(key).copied()
    }

    fn apply(&self, kind: RouteKind, event: &watcher::Event<PartialObjectMeta<DynamicObject>>) {
        let key = |o: &PartialObjectMeta<DynamicObject>| RouteKey {
            kind,
            namespace: o.namespace().unwrap_or_default(),
            name: o.name_any(),
        };
        let mut map = self.0.lock().expect("not poisoned");
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                if let Some(g) = o.metadata.generation {
                    map.insert(key(o), g);
                }
            }
            watcher::Event::Delete(o) => {
                map.remove(&key(o));
            }
            // A relist: what it does not list again is gone (a route deleted while disconnected).
            watcher::Event::Init => map.retain(|k, _| k.kind != kind),
            watcher::Event::InitDone => {}
        }
    }
}

/// Whether the route a rollout applied at `applied` (the generation its write left) was changed by
/// someone else since: the watch has seen a later generation.
pub fn changed_since(generations: &RouteGenerations, key: &RouteKey, applied: Option<i64>) -> bool {
    match (applied, generations.get(key)) {
        (Some(ours), Some(seen)) => seen > ours,
        _ => false,
    }
}

/// Whether any of a rollout's routes (`keys`, as [`routes_of`] lists them) was changed by someone
/// else since the generations its writes left (`applied`, in the same order).
pub fn any_changed_since(generations: &RouteGenerations, keys: &[RouteKey], applied: &[Option<i64>]) -> bool {
    keys.iter().zip(applied).any(|(k, a)| changed_since(generations, k, *a))
}

/// Whether the cluster serves `kind` in `namespace` (`None`: every namespace) to this controller:
/// a route kind whose CRD is not installed is not watched (its routes are then repaired after
/// `--reapply-after` only, as before).
pub async fn served(client: &Client, kind: RouteKind, namespace: Option<&str>) -> bool {
    let ar = kind.resource();
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(e) => {
            tracing::info!(kind = ?kind, error = %e, "not watching this route kind: a route edited by others is repaired after --reapply-after");
            false
        }
    }
}

/// The metadata watch of `kind` in `namespace`: it keeps `generations` current and yields each
/// route whose spec changed (a new generation), for [`rollouts_of`] to map.
pub fn changes(
    client: Client,
    kind: RouteKind,
    namespace: Option<&str>,
    generations: std::sync::Arc<RouteGenerations>,
) -> impl Stream<Item = Result<PartialObjectMeta<DynamicObject>, watcher::Error>> + Send + 'static {
    let ar = kind.resource();
    let api: Api<PartialObjectMeta<DynamicObject>> = match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .inspect_ok(move |event| generations.apply(kind, event))
        .touched_objects()
        .predicate_filter(predicates::generation, Default::default())
        .boxed()
}

/// The rollouts in the route's namespace that drive it.
pub fn rollouts_of(
    rollouts: &Store<DeserializeGuard<ModelRollout>>,
    kind: RouteKind,
    route: &PartialObjectMeta<DynamicObject>,
) -> Vec<ObjectRef<DeserializeGuard<ModelRollout>>> {
    let key = RouteKey { kind, namespace: route.namespace().unwrap_or_default(), name: route.name_any() };
    rollouts
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|mr| routes_of(mr).contains(&key))
        .map(|mr| ObjectRef::new(&mr.name_any()).within(&key.namespace))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ObjectMeta;

    fn meta(ns: &str, name: &str, generation: i64) -> PartialObjectMeta<DynamicObject> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                generation: Some(generation),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    fn key(name: &str) -> RouteKey {
        RouteKey { kind: RouteKind::HttpRoute, namespace: "team-a".into(), name: name.into() }
    }

    #[test]
    fn a_later_generation_than_our_write_is_a_change_by_someone_else() {
        let g = RouteGenerations::default();
        g.apply(RouteKind::HttpRoute, &watcher::Event::Apply(meta("team-a", "fraud", 4)));
        assert!(!changed_since(&g, &key("fraud"), Some(4)), "our own write");
        assert!(!changed_since(&g, &key("fraud"), Some(5)), "the watch has not caught up with our write yet");
        assert!(changed_since(&g, &key("fraud"), Some(3)), "a GitOps sync after our write");
        assert!(!changed_since(&g, &key("other"), Some(1)), "an unseen route: nothing to say");
        assert!(!changed_since(&g, &key("fraud"), None), "never applied: nothing to compare");
        g.apply(RouteKind::HttpRoute, &watcher::Event::Delete(meta("team-a", "fraud", 4)));
        assert_eq!(g.get(&key("fraud")), None);
    }

    /// A rollout with a GRPCRoute drives two routes, each watched: a change to either one by
    /// someone else makes its split stale.
    #[test]
    fn a_grpc_route_is_a_second_route_of_the_rollout() {
        let mut mr = crate::fixtures::rollout("fraud", crate::fixtures::spec("v2", crate::fixtures::SHA_V2));
        mr.metadata.namespace = Some("team-a".into());
        mr.spec.traffic_routing.gateway_api.as_mut().unwrap().grpc_route = Some("fraud-grpc".into());
        let grpc = RouteKey { kind: RouteKind::GrpcRoute, namespace: "team-a".into(), name: "fraud-grpc".into() };
        let keys = routes_of(&mr);
        assert_eq!(keys, [key("fraud"), grpc.clone()]);
        let g = RouteGenerations::default();
        g.apply(RouteKind::HttpRoute, &watcher::Event::Apply(meta("team-a", "fraud", 3)));
        g.apply(RouteKind::GrpcRoute, &watcher::Event::Apply(meta("team-a", "fraud-grpc", 5)));
        assert!(!any_changed_since(&g, &keys, &[Some(3), Some(5)]), "both as our writes left them");
        assert!(any_changed_since(&g, &keys, &[Some(3), Some(4)]), "the GRPCRoute written back by GitOps");
        assert_eq!(g.get(&grpc), Some(5));
    }

    #[test]
    fn a_relist_forgets_routes_it_does_not_list_again_of_its_kind_only() {
        let g = RouteGenerations::default();
        g.apply(RouteKind::HttpRoute, &watcher::Event::Apply(meta("team-a", "gone", 2)));
        g.apply(RouteKind::VirtualService, &watcher::Event::Apply(meta("team-a", "vs", 7)));
        g.apply(RouteKind::HttpRoute, &watcher::Event::Init);
        g.apply(RouteKind::HttpRoute, &watcher::Event::InitApply(meta("team-a", "fraud", 9)));
        g.apply(RouteKind::HttpRoute, &watcher::Event::InitDone);
        assert_eq!(g.get(&key("gone")), None);
        assert_eq!(g.get(&key("fraud")), Some(9));
        let vs = RouteKey { kind: RouteKind::VirtualService, namespace: "team-a".into(), name: "vs".into() };
        assert_eq!(g.get(&vs), Some(7), "another kind's watch is not relisting");
    }
}
