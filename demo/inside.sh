#!/usr/bin/env bash
# The demo's second half, run by demo/run.sh inside `cluster.sh run` (KUBECONFIG, Prometheus and
# the cluster dir are set; cluster.sh kills every PID in $MODELROLLOUT_CLUSTER_DIR/*.pid on exit).
set -Eeuo pipefail
DIR=$MODELROLLOUT_CLUSTER_DIR
NS=demo
say() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
export PATH="$DEMO_BIN:$PATH" # kubectl finds kubectl-modelrollout here

kubectl create namespace "$NS" >/dev/null
# The evidence service's volume: this cluster has no provisioner, so a PersistentVolume of a class
# of its own on a directory of the node's host (gone with the cluster's directory).
mkdir -p "$DIR/evidence-volume" && chmod 0777 "$DIR/evidence-volume"
kubectl apply -f - >/dev/null <<PV
apiVersion: v1
kind: PersistentVolume
metadata: {name: demo-evidence}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: demo-evidence
  hostPath: {path: "$DIR/evidence-volume", type: Directory}
PV
say "installing the Helm chart (CRD, RBAC, the controller and the evidence service: images built here, on the real node)"
helm install modelrollout charts/modelrollout --namespace modelrollout-system --create-namespace \
  --set watchNamespaces="{$NS}" --set prometheus.address=http://prometheus.monitoring.svc.cluster.local:9090 \
  --set evidence.enabled=true --set evidence.storageClassName=demo-evidence --set evidence.storage=1Gi \
  --set logFormat=text --set nodeSelector.type=real \
  --set 'tolerations[0].key=modelrollout.dev/real-node,tolerations[0].operator=Exists,tolerations[0].effect=NoSchedule' \
  --wait --timeout 180s >/dev/null
kubectl get pods -n modelrollout-system -o wide | sed 's/^/    /'

say "traffic: 200 req/s through the Gateway ($MODELROLLOUT_GATEWAY_REF at $MODELROLLOUT_GATEWAY, Envoy); labels posted once to the evidence service"
demo-driver traffic "$NS" "$DIR/demo-shares.txt" >"$DIR/demo-traffic.log" 2>&1 &
TRAFFIC=$!
echo $TRAFFIC >"$DIR/demo-traffic.pid"

say "applying the fraud example with v1: it becomes stable"
demo-driver manifest v1 | kubectl apply -n "$NS" -f - >/dev/null
kubectl wait -n "$NS" modelrollout/fraud --for=jsonpath='{.status.phase}'=Idle --timeout=180s >/dev/null
kubectl get pods -n "$NS" -o wide | sed 's/^/    /'
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
  *) say "the rollout did not settle (exit $code); controller log: kubectl logs -n modelrollout-system deploy/modelrollout-controller" ;;
esac
kubectl modelrollout history fraud -n "$NS"
say "what the clients saw, per stage (measured from the answers' x-model-version, not read from the route)"
kill -TERM "$TRAFFIC" 2>/dev/null || true
wait "$TRAFFIC" 2>/dev/null || true
cat "$DIR/demo-shares.txt" 2>/dev/null || tail -5 "$DIR/demo-traffic.log"
if [[ $DEMO_KEEP == 1 ]]; then
  say "still running: source $DIR/env; kubectl modelrollout status fraud -n $NS  (Ctrl-C to tear down)"
  while true; do sleep 3600 & wait $!; done
fi
# Good path: success is promotion; --bad: success is the automatic rollback.
[[ ($DEMO_CANDIDATE == bad && $code == 3) || ($DEMO_CANDIDATE != bad && $code == 0) ]]
