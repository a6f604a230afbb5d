#!/usr/bin/env bash
# The demo's second half, run by demo/run.sh inside `cluster.sh run` (KUBECONFIG, Prometheus and
# the cluster dir are set; cluster.sh kills every PID in $MODELROLLOUT_CLUSTER_DIR/*.pid on exit).
set -Eeuo pipefail
DIR=$MODELROLLOUT_CLUSTER_DIR
NS=demo
say() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
export PATH="$DEMO_BIN:$PATH" # kubectl finds kubectl-modelrollout here

kubectl create namespace "$NS" >/dev/null
say "installing the Helm chart (CRD, RBAC, controller Deployment) into modelrollout-system"
helm install modelrollout charts/modelrollout --namespace modelrollout-system --create-namespace \
  --set watchNamespaces="{$NS}" --set prometheus.address="$MODELROLLOUT_PROMETHEUS_URL" --set logFormat=text \
  --wait --timeout 90s >/dev/null

# kwok pods run no containers: the controller runs here, with the chart's arguments, as the
# chart's service account (so it has exactly the chart's RBAC).
TOKEN=$(kubectl create token modelrollout-controller -n modelrollout-system --duration 2h)
SERVER=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
CA=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')
KC="$DIR/kubeconfig-demo-controller"
kubectl config --kubeconfig "$KC" set-cluster demo --server "$SERVER" --certificate-authority "$CA" --embed-certs >/dev/null
kubectl config --kubeconfig "$KC" set-credentials controller --token "$TOKEN" >/dev/null
kubectl config --kubeconfig "$KC" set-context demo --cluster demo --user controller >/dev/null
kubectl config --kubeconfig "$KC" use-context demo >/dev/null
mapfile -t ARGS < <(kubectl get deploy modelrollout-controller -n modelrollout-system \
  -o jsonpath='{range .spec.template.spec.containers[0].args[*]}{@}{"\n"}{end}' | sed 's/^--metrics-addr=.*/--metrics-addr=127.0.0.1:0/')
say "controller: modelrollout-controller ${ARGS[*]}   (log: $DIR/demo-controller.log)"
RUST_LOG=info,kube=warn modelrollout-controller --kubeconfig "$KC" "${ARGS[@]}" >"$DIR/demo-controller.log" 2>&1 &
echo $! >"$DIR/demo-controller.pid"

say "sidecars + traffic: every Deployment the controller creates gets a real sidecar; 200 req/s with label feedback"
demo-driver traffic "$NS" >"$DIR/demo-traffic.log" 2>&1 &
echo $! >"$DIR/demo-traffic.pid"

say "applying the fraud example with v1: it becomes stable"
demo-driver manifest v1 | kubectl apply -n "$NS" -f - >/dev/null
kubectl wait -n "$NS" modelrollout/fraud --for=jsonpath='{.status.phase}'=Idle --timeout=120s >/dev/null
# Let stable serve a little so the relative gates have a baseline.
sleep 10

case $DEMO_CANDIDATE in
  bad) say "rolling out v2-bad-fpr: same model family, clearly more false positives at the same threshold" ;;
  *) say "rolling out v2: shadow -> 5% -> 25% -> 100%, every stage gated on Prometheus" ;;
esac
demo-driver manifest "$DEMO_CANDIDATE" | kubectl apply -n "$NS" -f - >/dev/null
sleep 1
set +e
kubectl modelrollout status fraud -n "$NS" --watch --timeout 8m
code=$?
set -e
echo
case $code in
  0) say "promoted: $(kubectl get mro fraud -n "$NS" -o jsonpath='{.status.stableVersion}') is stable (kubectl modelrollout history fraud -n $NS)" ;;
  3) say "rolled back automatically: stable kept serving (kubectl modelrollout history fraud -n $NS)" ;;
  *) say "the rollout did not settle (exit $code); controller log: $DIR/demo-controller.log" ;;
esac
kubectl modelrollout history fraud -n "$NS"
if [[ $DEMO_KEEP == 1 ]]; then
  say "still running: source $DIR/env; kubectl modelrollout status fraud -n $NS  (Ctrl-C to tear down)"
  while true; do sleep 3600 & wait $!; done
fi
# Good path: success is promotion; --bad: success is the automatic rollback.
[[ ($DEMO_CANDIDATE == bad && $code == 3) || ($DEMO_CANDIDATE != bad && $code == 0) ]]
