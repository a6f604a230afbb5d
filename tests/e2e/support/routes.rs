//! Routes as the platform team writes them (user-owned HTTPRoutes the controller edits one rule
//! of), and reading one back.

use serde_json::{Value, json};

use crate::load::clients::{PIN_HEADER, PIN_VALUE, gateway, gateway_host};
use crate::*;

/// `name`'s HTTPRoute, owned by the platform team, attached to no Gateway: all traffic to the
/// stable Service. The kwok suites' load generators read it as a gateway would.
pub fn unattached_route(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": [{"name": "public"}],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                            "backendRefs": [{"name": format!("{name}-stable"), "port": 8080, "weight": 100}]}]}
    })
}

/// `name`'s HTTPRoute on the shared Gateway for this namespace's hostname: all traffic to the
/// stable Service and, with `pinned_rule`, a second rule of the user's own that keeps requests
/// carrying [`PIN_HEADER`] on stable.
pub fn gateway_route(ns: &str, name: &str, pinned_rule: bool) -> Value {
    let (_, gw_ns, gw_name) = gateway();
    let stable = format!("{name}-stable");
    let mut rules = vec![json!({"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                "backendRefs": [{"name": stable, "port": 8080, "weight": 100}]})];
    if pinned_rule {
        rules.push(json!({"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                                       "headers": [{"name": PIN_HEADER, "value": PIN_VALUE}]}],
                          "backendRefs": [{"name": stable, "port": 8080}]}));
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": [{"name": gw_name, "namespace": gw_ns}], "hostnames": [gateway_host(ns)], "rules": rules}
    })
}

/// The rules of `name`'s HTTPRoute as they stand.
pub fn route_rules(ns: &str, name: &str) -> Vec<Value> {
    let out = kubectl_ok(&["get", "httproute", name, "-n", ns, "-o", "json"], None);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["spec"]["rules"].as_array().unwrap().clone()
}
