# A real node for the local cluster: containerd 2 + runc 1.4, the kubelet, kube-proxy (iptables),
# CoreDNS, Debian's CNI plugins. Sourced by tests/cluster/cluster.sh when MODELROLLOUT_REAL_NODE=1;
# uses its DIR, PKI, KUBECONFIG, start, wait_for, log and die.
#
# The network rule: nothing a pod sends leaves the machine.
#   - pods sit on a host-only bridge (mrbr0, 10.42.0.0/16, the host is 10.42.0.1 and the node IP);
#     the CNI config gives them routes to the pod and Service ranges only: no default route;
#   - the Service range (10.96.0.0/16) routes to that bridge, kwok's fake pod range is a blackhole;
#   - mangle/FORWARD drops whatever the bridge sends towards the default-route interface (v4 and
#     v6), installed before ip_forward is turned on and before any pod starts; kube-proxy never
#     touches the mangle table, so none of its ACCEPTs can come first;
#   - the kubelet's resolv.conf is ours (CoreDNS only); CoreDNS serves cluster.local, no upstream.
# node_check verifies all of this by rules and routes and fails the run if any is missing.
# node_down leaves no interface, route, rule, mount, cgroup or process behind.

NODE_TEMPLATES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/templates
NODE_NAME=real-node-0
NODE_BRIDGE=mrbr0
NODE_IP=10.42.0.1
NODE_POD_CIDR=10.42.0.0/16
NODE_SERVICE_CIDR=10.96.0.0/16
NODE_KWOK_CIDR=10.244.0.0/16
NODE_CGROUP=modelrollout
NODE_TAINT=modelrollout.dev/real-node
# The sandbox image: the static pause binary tests/node/build.sh makes, in a one-layer image.
NODE_PAUSE_IMAGE=localhost/modelrollout/pause:1

node_ext_if() { ip -o route show default | awk '{print $5; exit}'; }

# The host side, before anything runs: the bridge, routes and the FORWARD drop, then ip_forward.
node_net_up() {
  local ext
  ext=$(node_ext_if)
  [[ -n $ext ]] || die "no default-route interface found"
  echo "$ext" >"$DIR/node-ext-if"
  ip link add "$NODE_BRIDGE" type bridge 2>/dev/null || die "$NODE_BRIDGE exists: another real-node run is up (or left it; remove it)"
  echo 1 >"$DIR/node-net"
  ip addr add "$NODE_IP/16" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  ip route add "$NODE_SERVICE_CIDR" dev "$NODE_BRIDGE"
  ip route add blackhole "$NODE_KWOK_CIDR"
  iptables -t mangle -I FORWARD 1 -i "$NODE_BRIDGE" -o "$ext" -j DROP -m comment --comment modelrollout-no-egress
  ip6tables -t mangle -I FORWARD 1 -i "$NODE_BRIDGE" -o "$ext" -j DROP -m comment --comment modelrollout-no-egress
  # The apiserver listens on every address so pods reach it at the node IP: only loopback and the
  # bridge may connect.
  iptables -N MODELROLLOUT-INPUT
  iptables -A MODELROLLOUT-INPUT -i lo -j RETURN
  iptables -A MODELROLLOUT-INPUT -i "$NODE_BRIDGE" -j RETURN
  iptables -A MODELROLLOUT-INPUT -p tcp -m multiport --dports "$API_PORT,$NODE_KUBELET_PORT,$PROM_PORT" -j DROP
  iptables -I INPUT 1 -j MODELROLLOUT-INPUT
  cat /proc/sys/net/ipv4/ip_forward >"$DIR/node-ip-forward"
  node_check_rules
  sysctl -qw net.ipv4.ip_forward=1
}

# The rules and routes the network rule needs; dies naming the first that does not hold.
node_check_rules() {
  local ext r
  ext=$(cat "$DIR/node-ext-if")
  iptables -t mangle -C FORWARD -i "$NODE_BRIDGE" -o "$ext" -j DROP -m comment --comment modelrollout-no-egress \
    || die "network rule: no mangle/FORWARD drop from $NODE_BRIDGE to $ext"
  ip6tables -t mangle -C FORWARD -i "$NODE_BRIDGE" -o "$ext" -j DROP -m comment --comment modelrollout-no-egress \
    || die "network rule: no ip6tables mangle/FORWARD drop from $NODE_BRIDGE to $ext"
  [[ $(iptables -t mangle -S FORWARD | sed -n 2p) == *modelrollout-no-egress* ]] \
    || die "network rule: the FORWARD drop is not the first rule of mangle/FORWARD"
  for addr in 10.96.0.1 10.96.255.254; do
    r=$(ip route get "$addr")
    [[ $r == *"dev $NODE_BRIDGE"* ]] || die "network rule: Service address $addr routes '$r', not to $NODE_BRIDGE"
  done
  for addr in 10.42.0.2 10.42.255.254; do
    r=$(ip route get "$addr")
    [[ $r == *"dev $NODE_BRIDGE"* ]] || die "network rule: pod address $addr routes '$r', not to $NODE_BRIDGE"
  done
  r=$(ip route get 10.244.0.5 2>&1 || true)
  [[ $r == *"No route"* || $r == *blackhole* || $r == *"Invalid argument"* ]] || die "network rule: kwok's range routes '$r'"
}

# Everything the pods see: CNI routes, the kubelet's resolv.conf, CoreDNS's Corefile.
node_check_config() {
  node_check_rules
  python3 - "$DIR/node/cni/10-modelrollout.conflist" <<'PY' || die "network rule: the CNI config gives pods a route out"
import json, sys
conf = json.load(open(sys.argv[1]))
for p in conf["plugins"]:
    for r in p.get("ipam", {}).get("routes", []):
        assert r["dst"] not in ("0.0.0.0/0", "::/0"), r
    assert not p.get("ipMasq"), "ipMasq"
    assert not p.get("isDefaultGateway"), "isDefaultGateway"
PY
  [[ $(grep -c . "$DIR/node/resolv.conf") == 1 ]] && grep -qx "nameserver $NODE_IP" "$DIR/node/resolv.conf" \
    || die "network rule: the kubelet's resolv.conf names more than CoreDNS"
  ! grep -qE '^\s*(forward|proxy)\b' "$DIR/node/Corefile" || die "network rule: CoreDNS forwards upstream"
  [[ $(sysctl -n net.ipv6.conf.all.forwarding) == 0 ]] || die "network rule: IPv6 forwarding is on"
  grep -qx 'server = "http://127.0.0.1:9"' "$DIR/node/registry/_default/hosts.toml" \
    || die "network rule: image pulls are not pinned to a closed local port"
}

# node_render TEMPLATE OUT: tests/node/templates/TEMPLATE with each ${NAME} filled in from the
# node's settings; a name no setting gives fails the render.
node_render() {
  env N="$N" SERVER="${SERVER:-}" PROXY_METRICS_PORT="$PROXY_METRICS_PORT" KUBECONFIG="$KUBECONFIG" PKI="$PKI" \
    NODE_BIN="$NODE_BIN" NODE_NAME="$NODE_NAME" NODE_IP="$NODE_IP" NODE_BRIDGE="$NODE_BRIDGE" \
    NODE_POD_CIDR="$NODE_POD_CIDR" NODE_SERVICE_CIDR="$NODE_SERVICE_CIDR" NODE_PAUSE_IMAGE="$NODE_PAUSE_IMAGE" \
    NODE_DNS_HEALTH_PORT="$NODE_DNS_HEALTH_PORT" NODE_DNS_READY_PORT="$NODE_DNS_READY_PORT" NODE_CGROUP="$NODE_CGROUP" \
    NODE_KUBELET_PORT="$NODE_KUBELET_PORT" NODE_KUBELET_HEALTHZ_PORT="$NODE_KUBELET_HEALTHZ_PORT" NODE_TAINT="$NODE_TAINT" \
    NODE_PROXY_HEALTHZ_PORT="$NODE_PROXY_HEALTHZ_PORT" \
    python3 -c 'import os, string, sys; sys.stdout.write(string.Template(open(sys.argv[1]).read()).substitute(os.environ))' \
    "$NODE_TEMPLATES/$1" >"$2" || die "rendering tests/node/templates/$1 failed"
}

node_write_configs() {
  local n="$DIR/node"
  N=$n
  PROXY_METRICS_PORT=$(free_port)
  mkdir -p "$n"/{cni,containerd,containerd-state,runc,kubelet,pki} "$n/registry/_default"
  # No registry is reachable, and no pull may leave the machine: every registry resolves to a
  # closed local port, so an image that was not imported fails at once (ErrImagePull).
  node_render hosts.toml "$n/registry/_default/hosts.toml"
  node_render 10-modelrollout.conflist "$n/cni/10-modelrollout.conflist"
  node_render containerd.toml "$n/containerd/config.toml"
  echo "nameserver $NODE_IP" >"$n/resolv.conf"
  node_render Corefile "$n/Corefile"
  (
    cd "$n/pki"
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:nodes/CN=system:node:$NODE_NAME" -keyout kubelet.key -out kubelet.csr
    openssl x509 -req -in kubelet.csr -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 2 -extfile "$PKI/client.ext" -out kubelet.crt
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$NODE_NAME" -keyout serving.key -out serving.csr
    printf 'subjectAltName=IP:%s,DNS:%s\nextendedKeyUsage=serverAuth\n' "$NODE_IP" "$NODE_NAME" >serving.ext
    openssl x509 -req -in serving.csr -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 2 -extfile serving.ext -out serving.crt
  ) >/dev/null 2>&1 || die "node certificates failed"
  SERVER=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  node_render kubelet.kubeconfig "$n/kubelet.kubeconfig"
  node_render kubelet.yaml "$n/kubelet.yaml"
  node_render kube-proxy.yaml "$n/kube-proxy.yaml"
}

# Images for the node's runtime: the sandbox (pause) image, then every docker-archive tar named.
node_import_images() {
  local tar
  for tar in "$@"; do
    "$NODE_BIN/ctr" --address "$DIR/node/containerd.sock" -n k8s.io images import --no-unpack=false "$tar" >/dev/null \
      || die "importing $tar into containerd failed"
  done
}

node_pause_image() {
  local out="$DIR/node/pause.tar" c
  local store=(--root "$DIR/node/buildah" --runroot "$DIR/node/buildah-run" --storage-driver vfs)
  c=$(buildah "${store[@]}" from scratch)
  buildah "${store[@]}" copy "$c" "$NODE_BIN/pause" /pause >/dev/null
  buildah "${store[@]}" config --entrypoint '["/pause"]' "$c"
  buildah "${store[@]}" commit --quiet --rm "$c" "$NODE_PAUSE_IMAGE" >/dev/null
  buildah "${store[@]}" push --quiet "$NODE_PAUSE_IMAGE" "docker-archive:$out:$NODE_PAUSE_IMAGE"
  buildah "${store[@]}" rmi --all >/dev/null 2>&1 || true
  rm -rf "$DIR/node/buildah" "$DIR/node/buildah-run"
  echo "$out"
}

# Starts containerd, the kubelet, kube-proxy and CoreDNS; imports images; waits for the node.
# Arguments: docker-archive tars to import (the project's images).
node_up() {
  for sub in /sys/fs/cgroup/*/; do
    [[ -L ${sub%/} ]] && continue
    mkdir -p "$sub$NODE_CGROUP" 2>/dev/null || true
  done
  node_write_configs
  node_check_config
  log "starting containerd $("$NODE_BIN/containerd" --version | awk '{print $3}') and runc $("$NODE_BIN/runc" --version | awk 'NR==1{print $3}')"
  start containerd env PATH="$NODE_BIN:$PATH" "$NODE_BIN/containerd" --config "$DIR/node/containerd/config.toml"
  wait_for containerd 60 "$NODE_BIN/ctr" --address "$DIR/node/containerd.sock" version
  node_import_images "$(node_pause_image)" "$@"
  log "starting CoreDNS on $NODE_IP:53 (cluster.local only, no upstream)"
  start coredns "$NODE_BIN/coredns" -conf "$DIR/node/Corefile"
  wait_for coredns 60 curl -sf "http://127.0.0.1:$NODE_DNS_READY_PORT/ready"
  log "starting the kubelet ($NODE_NAME, $NODE_IP) and kube-proxy (iptables)"
  start kubelet "$NODE_BIN/kubelet" --config "$DIR/node/kubelet.yaml" --kubeconfig "$DIR/node/kubelet.kubeconfig" \
    --root-dir "$DIR/node/kubelet" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "type=real,modelrollout.dev/node=real" -v 1
  start kube-proxy "$NODE_BIN/kube-proxy" --config "$DIR/node/kube-proxy.yaml"
  wait_for kubelet 120 bash -c "kubectl get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
  wait_for kube-proxy 60 curl -sf "http://127.0.0.1:$NODE_PROXY_HEALTHZ_PORT/healthz"
  node_check_config
  log "real node: $(kubectl get node "$NODE_NAME" -o wide --no-headers | tr -s ' ')"
}

# Stops the node and removes what it made. Safe to call when only part of it came up.
node_down() {
  [[ -f "$DIR/node-net" ]] || return 0
  local n="$DIR/node" pid
  # The kubelet first, so it restarts nothing; then every pod's processes via containerd's shims.
  for name in kubelet kube-proxy coredns; do
    [[ -f "$DIR/$name.pid" ]] && kill -TERM "$(cat "$DIR/$name.pid")" 2>/dev/null
  done
  if [[ -S "$n/containerd.sock" ]]; then
    local ctr=("$NODE_BIN/ctr" --address "$n/containerd.sock" -n k8s.io)
    for t in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks kill -s KILL "$t" >/dev/null 2>&1; done
    sleep 1
    for t in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks delete -f "$t" >/dev/null 2>&1; done
  fi
  # Whatever still runs in a pod's cgroup (a container whose task was not listed) ends here.
  for procs in /sys/fs/cgroup/*/"$NODE_CGROUP"/kubepods/cgroup.procs /sys/fs/cgroup/*/"$NODE_CGROUP"/kubepods/*/cgroup.procs \
    /sys/fs/cgroup/*/"$NODE_CGROUP"/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/"$NODE_CGROUP"/kubepods/*/*/*/cgroup.procs; do
    [[ -f $procs ]] || continue
    while read -r pid; do kill -KILL "$pid" 2>/dev/null; done <"$procs"
  done
  # Shims outlive containerd by design: end those of this node.
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $n/containerd.sock" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  [[ -f "$DIR/containerd.pid" ]] && kill -TERM "$(cat "$DIR/containerd.pid")" 2>/dev/null
  for _ in $(seq 50); do
    local alive=0
    for name in kubelet kube-proxy coredns containerd; do
      [[ -f "$DIR/$name.pid" ]] && kill -0 "$(cat "$DIR/$name.pid")" 2>/dev/null && alive=1
    done
    ((alive)) || break
    sleep 0.2
  done
  for name in kubelet kube-proxy coredns containerd; do
    [[ -f "$DIR/$name.pid" ]] && kill -KILL "$(cat "$DIR/$name.pid")" 2>/dev/null
    rm -f "$DIR/$name.pid"
  done
  # kube-proxy's and the kubelet's iptables rules.
  [[ -x "$NODE_BIN/kube-proxy" ]] && "$NODE_BIN/kube-proxy" --cleanup --config "$n/kube-proxy.yaml" >/dev/null 2>&1
  for ipt in iptables ip6tables; do
    for chain in INPUT OUTPUT; do
      while $ipt -D "$chain" -j KUBE-FIREWALL 2>/dev/null; do :; done
    done
    for t in filter nat mangle; do
      for chain in $($ipt -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do
        $ipt -t "$t" -F "$chain" 2>/dev/null
      done
      $ipt -t "$t" -S 2>/dev/null | awk '/^-A/ && / -j KUBE-/' | sed 's/^-A //' | while read -r rule; do
        eval "$ipt -t $t -D $rule" 2>/dev/null
      done
      for chain in $($ipt -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do
        $ipt -t "$t" -X "$chain" 2>/dev/null
      done
    done
  done
  # Mounts under the node's dirs (pod volumes, rootfs overlays, shm, netns bind mounts), deepest first.
  awk -v d="$n" '$2 ~ "^"d {print $2}' /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  # Pod network namespaces the CNI made (containerd names them cni-*, under /run/netns or /var/run/netns).
  for ns in /var/run/netns/cni-* /run/netns/cni-*; do
    [[ -e $ns ]] || continue
    umount "$ns" 2>/dev/null; rm -f "$ns"
  done
  # The network: the bridge (veths went with their namespaces), routes, rules, ip_forward.
  ip link del "$NODE_BRIDGE" 2>/dev/null
  for veth in $(ip -o link show master "$NODE_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$veth" 2>/dev/null; done
  ip route del "$NODE_SERVICE_CIDR" 2>/dev/null
  ip route del blackhole "$NODE_KWOK_CIDR" 2>/dev/null
  # The FORWARD drop, found by its comment (a reclaimed run's record of the interface may be gone).
  for ipt in iptables ip6tables; do
    $ipt -t mangle -S FORWARD 2>/dev/null | grep -- '--comment modelrollout-no-egress' | sed 's/^-A //' | while read -r rule; do
      eval "$ipt -t mangle -D $rule" 2>/dev/null
    done
  done
  iptables -D INPUT -j MODELROLLOUT-INPUT 2>/dev/null
  iptables -F MODELROLLOUT-INPUT 2>/dev/null; iptables -X MODELROLLOUT-INPUT 2>/dev/null
  [[ -f "$DIR/node-ip-forward" ]] && sysctl -qw "net.ipv4.ip_forward=$(cat "$DIR/node-ip-forward")"
  # The pods' cgroups, deepest first.
  for sub in /sys/fs/cgroup/*/; do
    [[ -d "$sub$NODE_CGROUP" ]] && find "$sub$NODE_CGROUP" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  rm -f "$DIR/node-net"
  true
}

# A dead run's node: its cluster.sh was SIGKILLed or its session ended mid-run, so its teardown never
# ran. Its processes died with it (parent-death signal) but the pods' shims, mounts, rules, bridge and
# cgroups stay. Only one real node runs at a time (one bridge), so with no live run holding a node,
# all of that is ours to remove: node_down on each dead run's dir, or on an empty one for the
# host-wide part alone. Dies if a live run holds the node.
node_reclaim() {
  local dirs=() d owner
  for d in "${TMPDIR:-/tmp}"/modelrollout-cluster.*/; do
    d=${d%/}
    [[ -d $d/node && $d != "${DIR:-}" ]] || continue
    owner=$(cat "$d/owner.pid" 2>/dev/null || true)
    if [[ -n $owner ]] && kill -0 "$owner" 2>/dev/null && grep -qa cluster.sh "/proc/$owner/cmdline" 2>/dev/null; then
      die "a live real-node run (pid $owner, $d) holds the node: one real-node run at a time"
    fi
    dirs+=("$d")
  done
  ((${#dirs[@]})) || dirs=("$(mktemp -d "${TMPDIR:-/tmp}/modelrollout-reclaim.XXXXXX")")
  for d in "${dirs[@]}"; do
    log "reclaiming a dead run's real node (${d})"
    # Its PIDs may have been reused by now: stop nothing by PID, only by socket path and cgroup.
    (
      set +e
      DIR=$d
      rm -f "$DIR"/{kubelet,kube-proxy,coredns,containerd}.pid
      touch "$DIR/node-net"
      node_down
    ) || true
    [[ $d == */modelrollout-reclaim.* ]] && rm -rf "$d"
  done
  true
}

# What a previous run left behind, if anything (checked before a run, and after teardown by tests).
node_leftovers() {
  local left=()
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && left+=("interface $NODE_BRIDGE")
  ip route show "$NODE_SERVICE_CIDR" | grep -q . && left+=("route $NODE_SERVICE_CIDR")
  ip route show type blackhole | grep -q "${NODE_KWOK_CIDR%/*}" && left+=("route blackhole $NODE_KWOK_CIDR")
  for ipt in iptables ip6tables; do
    for t in filter nat mangle; do
      $ipt -t "$t" -S 2>/dev/null | grep -qE 'KUBE-|MODELROLLOUT-|modelrollout-no-egress' && left+=("$ipt $t rules")
    done
  done
  grep -q "modelrollout-cluster\..*/node/" /proc/self/mounts && left+=("mounts")
  for sub in /sys/fs/cgroup/*/; do
    [[ -d "$sub$NODE_CGROUP" ]] && { left+=("cgroup $sub$NODE_CGROUP"); break; }
  done
  pgrep -f "^$NODE_BIN/|containerd-shim-runc-v2 .*modelrollout-cluster" >/dev/null && left+=("processes")
  cat /sys/fs/cgroup/pids/"$NODE_CGROUP"/cgroup.procs 2>/dev/null | grep -q . && left+=("processes in cgroup $NODE_CGROUP")
  ((${#left[@]} == 0)) || { printf '%s\n' "${left[@]}"; return 1; }
}
