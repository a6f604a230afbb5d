//! The reconcile loop's own tests: back-off, and `reconcile()` end to end against a recording
//! mock apiserver (finalizer, conditional status write, conflict, cleanup).

use super::*;
use crate::fixtures::*;
use kube::runtime::controller::Action as Requeue;
use serde_json::Value;

fn guard(name: &str) -> Arc<DeserializeGuard<ModelRollout>> {
    Arc::new(DeserializeGuard(Ok(crate::fixtures::rollout(name, crate::fixtures::spec("v2", crate::fixtures::SHA_V2)))))
}

#[tokio::test]
async fn each_rollout_backs_off_on_its_own_and_a_success_starts_over() {
    let client = Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let ctx =
        Arc::new(Context::new(client, kube::runtime::events::Reporter { controller: "t".into(), instance: None }));
    let error = Error::Config("the apiserver said no".into());
    let spread = |name: &str| core::AnalysisSlot::of(&format!("uid-{name}")).fraction();
    let (a, b) = (guard("a"), guard("b"));
    for n in 1..=3 {
        assert_eq!(
            error_policy(a.clone(), &error, ctx.clone()),
            Requeue::requeue(retry_delay(n, spread("a"))),
            "a #{n}"
        );
    }
    assert_eq!(
        error_policy(b.clone(), &error, ctx.clone()),
        Requeue::requeue(retry_delay(1, spread("b"))),
        "b has its own count"
    );
    // What a successful reconcile of `a` does:
    ctx.backoff.forget(&a.0.clone().unwrap());
    assert_eq!(error_policy(a, &error, ctx.clone()), Requeue::requeue(retry_delay(1, spread("a"))), "a starts over");
    assert_eq!(error_policy(b, &error, ctx), Requeue::requeue(retry_delay(2, spread("b"))));
}

#[test]
fn retries_back_off_per_failure_and_are_spread() {
    let at = |n, spread| retry_delay(n, spread).as_millis();
    assert_eq!([1, 2, 3, 4, 5].map(|n| at(n, 0.5)), [1000, 2000, 4000, 8000, 16000]);
    assert_eq!(at(30, 0.5), 300_000, "capped at five minutes");
    assert_eq!(at(1, 0.0), 800);
    assert_eq!(at(1, 0.999_999), 1199);
}

// ---------------------------------------------------------------------------------------------
// reconcile() against a recording mock apiserver

const OBJECT: &str = "/apis/modelrollout.dev/v1alpha1/namespaces/team-a/modelrollouts/fraud";
const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/team-a/httproutes/fraud";

/// v1, as the apiserver stores it: with our finalizer unless `new`, at resourceVersion 7.
fn stored(new: bool) -> ModelRollout {
    let mut mr = rollout("fraud", spec("v1", SHA_V1));
    mr.metadata.resource_version = Some("7".into());
    if !new {
        mr.metadata.finalizers = Some(vec![FINALIZER.into()]);
    }
    mr
}

fn json_of(mr: &ModelRollout) -> Value {
    let mut v = serde_json::to_value(mr).unwrap();
    v["apiVersion"] = json!("modelrollout.dev/v1alpha1");
    v["kind"] = json!("ModelRollout");
    v
}

/// The apiserver for one reconcile of `mr`: the object and its route read, writes echoed, the
/// status write answered `status_code`.
fn answering(mr: &ModelRollout, status_code: u16) -> impl FnMut(&str, &str, &Value) -> (u16, Value) + Send + 'static {
    let object = json_of(mr);
    move |method, path, body| match (method, path) {
        ("GET", OBJECT) => (200, object.clone()),
        ("PATCH", p) if p == format!("{OBJECT}/status") => {
            if status_code != 200 {
                return (status_code, status_error(status_code, "Conflict"));
            }
            let mut o = object.clone();
            o["status"] = body["status"].clone();
            o["metadata"]["resourceVersion"] = json!("8");
            (200, o)
        }
        ("PATCH", OBJECT) => (200, object.clone()),
        ("GET", ROUTE) => (200, user_route(stable_only())),
        _ => (200, written(body)),
    }
}

fn requeue_of(r: Result<Requeue, Error>) -> Requeue {
    r.unwrap_or_else(|e| panic!("reconcile failed: {e}"))
}

#[tokio::test]
async fn first_sight_adds_the_finalizer_and_nothing_else() {
    let mr = stored(true);
    let (client, server) = apiserver(answering(&mr, 200));
    let ctx = Arc::new(Context::test(client));
    let done = requeue_of(reconcile(Arc::new(DeserializeGuard(Ok(mr))), ctx.clone()).await);
    assert_eq!(done, Requeue::await_change());
    drop(ctx);
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!((seen[0].method.as_str(), seen[0].path.split('?').next()), ("PATCH", Some(OBJECT)));
    let added = seen[0].body.as_array().unwrap().iter().find(|op| op["op"] == "add").expect("an add");
    assert!(added.to_string().contains(FINALIZER), "{added}");
}

#[tokio::test]
async fn the_status_write_carries_the_resource_version_decided_from() {
    let mr = stored(false);
    let (client, server) = apiserver(answering(&mr, 200));
    let ctx = Arc::new(Context::test(client));
    requeue_of(reconcile(Arc::new(DeserializeGuard(Ok(mr.clone()))), ctx.clone()).await);
    // The write is remembered: the next reconcile decides on it, not on a stale cache.
    let copy = memo::newest_copy(&ctx.last_writes, &mr).expect("our write, newer than the cache");
    assert_eq!(copy.resource_version().as_deref(), Some("8"));
    drop(ctx);
    let seen = server.await.unwrap();
    let status: Vec<_> = seen.iter().filter(|s| s.path.starts_with(&format!("{OBJECT}/status"))).collect();
    assert_eq!(status.len(), 1, "{seen:#?}");
    let write = &status[0];
    assert_eq!(write.method, "PATCH");
    assert!(write.path.contains("fieldManager=modelrollout") && write.path.contains("force=true"), "{}", write.path);
    assert_eq!(write.body["metadata"]["resourceVersion"], "7", "conditional on the version read");
    assert_eq!(write.body["status"]["stableVersion"], "v1");
    assert_eq!(write.body["status"]["phase"], "Idle");
    // Decided on the cached copy (no memo yet: no read); the workloads and route, then the status.
    assert!(!seen.iter().any(|s| s.method == "GET" && s.path == OBJECT), "{seen:#?}");
    assert!(seen.last().unwrap().path.starts_with(&format!("{OBJECT}/status")), "{seen:#?}");
}

#[tokio::test]
async fn a_conflicting_status_write_is_decided_again_soon_from_the_watch_cache() {
    let mr = stored(false);
    let (client, server) = apiserver(answering(&mr, 409));
    let ctx = Arc::new(Context::test(client));
    let again = requeue_of(reconcile(Arc::new(DeserializeGuard(Ok(mr.clone()))), ctx.clone()).await);
    assert_eq!(again, Requeue::requeue(Duration::from_millis(200)));
    let next = memo::newest_copy(&ctx.last_writes, &mr).expect("the cached copy");
    assert_eq!(next.resource_version().as_deref(), Some("7"), "nothing remembered of a write that failed");
    assert_eq!(ctx.backoff.with(&mr, |n| n.copied()), None, "a conflict is no failure");
    drop(ctx);
    server.await.unwrap();
}

#[tokio::test]
async fn cleanup_tolerates_a_missing_route_forgets_the_rollout_and_releases_the_finalizer() {
    let mut mr = stored(false);
    mr.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
    let object = json_of(&mr);
    let (client, server) = apiserver(move |method, path, _| match (method, path) {
        ("GET", ROUTE) => (404, status_error(404, "NotFound")),
        _ => (200, object.clone()),
    });
    let ctx = Arc::new(Context::test(client));
    // What the rollout left behind in memory: memos, a failure count, its series.
    let mut ours = mr.clone();
    ours.metadata.resource_version = Some("9".into());
    ours.status = Some(ModelRolloutStatus { stable_version: Some("v1".into()), ..Default::default() });
    ctx.last_writes.set(&mr, LastWrite::of(ours));
    assert_eq!(memo::newest_copy(&ctx.last_writes, &mr).unwrap().resource_version().as_deref(), Some("9"));
    ctx.backoff.update(&mr, |n| *n = 3);
    let label = RolloutLabel { namespace: "team-a".into(), name: "fraud".into() };
    ctx.metrics.weight.get_or_create(&label).set(5);
    let done = requeue_of(reconcile(Arc::new(DeserializeGuard(Ok(mr.clone()))), ctx.clone()).await);
    assert_eq!(done, Requeue::await_change());
    let next = memo::newest_copy(&ctx.last_writes, &mr).unwrap();
    assert_eq!(next.resource_version().as_deref(), Some("7"), "our last write forgotten");
    assert_eq!(ctx.backoff.with(&mr, |n| n.copied()), None, "failures forgotten");
    assert!(!ctx.metrics.weight.remove(&label), "series forgotten");
    drop(ctx);
    let seen = server.await.unwrap();
    let calls: Vec<_> = seen.iter().map(|s| (s.method.as_str(), s.path.split('?').next().unwrap())).collect();
    assert_eq!(calls, [("GET", ROUTE), ("PATCH", OBJECT)], "{seen:#?}");
    let removed = seen[1].body.as_array().unwrap().iter().find(|op| op["op"] == "remove").expect("a remove");
    assert!(removed["path"].as_str().unwrap().starts_with("/metadata/finalizers"), "{removed}");
}

/// A route the spec names that does not exist: every reconcile fails on it, and the status says so
/// (RouteReady False naming it) and an Event does, not only the log; once it exists, True again.
#[tokio::test]
async fn a_missing_route_is_named_in_a_condition_and_an_event_until_it_exists() {
    let mr = stored(false);
    let object = json_of(&mr);
    let (client, server) = apiserver(move |method, path, body| match (method, path) {
        ("GET", ROUTE) => (404, status_error(404, "NotFound")),
        ("PATCH", p) if p == format!("{OBJECT}/status") => {
            let mut o = object.clone();
            o["status"] = body["status"].clone();
            (200, o)
        }
        _ => (200, written(body)),
    });
    let ctx = Arc::new(Context::test(client));
    let failed = reconcile(Arc::new(DeserializeGuard(Ok(mr.clone()))), ctx.clone()).await;
    assert!(failed.is_err_and(|e| e.to_string().contains("HTTPRoute fraud not found")), "the reconcile fails on it");
    drop(ctx);
    let seen = server.await.unwrap();
    let status = seen.iter().find(|s| s.method == "PATCH" && s.path.starts_with(&format!("{OBJECT}/status")));
    let conditions = &status.unwrap_or_else(|| panic!("no status write: {seen:#?}")).body["status"]["conditions"];
    let route = conditions.as_array().unwrap().iter().find(|c| c["type"] == "RouteReady").expect("RouteReady");
    assert_eq!((&route["status"], &route["reason"]), (&json!("False"), &json!("RouteNotFound")));
    assert!(route["message"].as_str().unwrap().contains("HTTPRoute fraud not found in namespace team-a"), "{route}");
    let event = seen.iter().find(|s| s.method == "POST" && s.path.contains("/events")).expect("an Event");
    assert_eq!(event.body["reason"], "RouteNotFound");
    assert_eq!(event.body["type"], "Warning");

    // The route appears: the next reconcile routes through it and says so.
    let mut now_missing = mr.clone();
    let mut st = now_missing.status.clone().unwrap_or_default();
    st.conditions = serde_json::from_value(conditions.clone()).unwrap();
    now_missing.status = Some(st);
    let (client, server) = apiserver(answering(&now_missing, 200));
    let ctx = Arc::new(Context::test(client));
    requeue_of(reconcile(Arc::new(DeserializeGuard(Ok(now_missing))), ctx.clone()).await);
    drop(ctx);
    let seen = server.await.unwrap();
    let flipped = seen.iter().rev().find(|s| s.path.starts_with(&format!("{OBJECT}/status"))).expect("a status write");
    let route =
        flipped.body["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "RouteReady").cloned();
    assert_eq!(route.map(|c| c["status"].clone()), Some(json!("True")), "{:#?}", flipped.body);
}

/// An experiment stage's rule is traffic: its route is written before any status says the stage
/// runs, and a route write that fails (a pattern the route refuses) leaves no status claiming it.
#[tokio::test]
async fn an_experiment_rule_the_route_refuses_is_never_reported_running() {
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use modelrollout_contract::launch::Role as SidecarRole;
    // Stable v1 idle; v2 applied, its pods Ready; the first stage an experiment (weight 0).
    let mut s = spec("v1", SHA_V1);
    s.stages = serde_json::from_value(json!([
        {"name": "ab", "weight": 0, "match": {"header": {"name": "x-arm", "value": "b"}}, "minDuration": "1m"},
        {"name": "full", "weight": 100, "minDuration": "1m"}
    ]))
    .unwrap();
    let idle = core::decide(&s, &Default::default(), &Default::default(), Timestamp::now()).status;
    s.model = model("v2", SHA_V2);
    let mut mr = rollout("fraud", s);
    mr.status = Some(idle);
    mr.metadata.resource_version = Some("7".into());
    mr.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let mut ready = workloads::deployment(&mr, &mr.spec.model, SidecarRole::Canary, 1, None);
    ready.metadata.generation = Some(1);
    ready.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
        observed_generation: Some(1),
        ready_replicas: Some(1),
        updated_replicas: Some(1),
        ..Default::default()
    });
    let (store, mut writer) = reflector::store::<Deployment>();
    // Listed once, as the watch does at start (reconcile waits for that).
    for event in [Event::Init, Event::InitApply(ready), Event::InitDone] {
        writer.apply_watcher_event(&event);
    }
    let object = json_of(&mr);
    let (client, server) = apiserver(move |method, path, body| match (method, path) {
        ("GET", ROUTE) => (200, user_route(stable_only())),
        ("PATCH", ROUTE) => (422, status_error(422, "Invalid")),
        ("PATCH", p) if p == format!("{OBJECT}/status") => {
            let mut o = object.clone();
            o["status"] = body["status"].clone();
            (200, o)
        }
        _ => (200, written(body)),
    });
    let mut ctx = Context::test(client);
    ctx.deployments = vec![store];
    let ctx = Arc::new(ctx);
    let failed = reconcile(Arc::new(DeserializeGuard(Ok(mr))), ctx.clone()).await;
    assert!(failed.is_err(), "the route write failed");
    drop(ctx);
    let seen = server.await.unwrap();
    assert!(seen.iter().any(|s| s.method == "PATCH" && s.path.starts_with(ROUTE)), "the route was written: {seen:#?}");
    let claims = seen
        .iter()
        .filter(|s| s.path.starts_with(&format!("{OBJECT}/status")))
        .filter(|s| s.body["status"]["match"] != Value::Null || s.body["status"]["stageName"] == "ab")
        .count();
    assert_eq!(claims, 0, "a status claimed the experiment runs: {seen:#?}");
}
