"""Driven by benches/scale.sh inside the local control plane's environment."""
import ctypes, json, os, re, signal, socket, subprocess, sys, time, urllib.request

N, P = int(os.environ["SCALE_N"]), int(os.environ["SCALE_P"])
# Rollout i lives in namespace scale-(i mod K); the P progressing ones (i < P) are spread the same way.
# One namespace puts every Service where the controller-manager's endpoint controllers scan them on
# each pod change; clusters with thousands of models spread them over teams' namespaces.
K = int(os.environ.get("SCALE_NAMESPACES", "1"))
NAMESPACES = [f"scale-{k}" for k in range(K)]


def ns(i):
    return NAMESPACES[i % K]

SHA = open("models/SHA256SUMS").read().split()[0]


def kubectl(*args, stdin=None):
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, check=True).stdout


def manifest(i, version):
    return {
        "apiVersion": "modelrollout.dev/v1alpha1", "kind": "ModelRollout",
        "metadata": {"name": f"m{i}", "namespace": ns(i), "labels": {"bench-progressing": str(version == "v2").lower()}},
        "spec": {
            "model": {"name": "fraud", "version": version,
                      "artifact": {"uri": "/models/fraud.onnx", "sha256": SHA},
                      "contract": {"inputs": [{"name": "amount", "type": "float"}]}},
            # One pod each (the fake node holds 50,000): at 50% the candidate gets one pod of its own.
            "workload": {"replicas": 1},
            "trafficRouting": {"replicaRatio": {}},
            # Long stages: the progressing ones stay progressing (analysed every 10 s) while measured.
            "stages": [{"name": "a", "weight": 50, "minDuration": "10m"}, {"name": "b", "weight": 100, "minDuration": "10m"}],
            "analysis": {"interval": "10s"},
        },
    }


def apply_all(items):
    for k in range(0, len(items), 200):
        docs = "\n---\n".join(json.dumps(m) for m in items[k:k + 200])
        kubectl("apply", "--server-side", "-f", "-", stdin=docs)


def metrics(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def histogram(text):
    """Cumulative reconcile-duration buckets: [(le, count)]."""
    return [(float(m.group(1)) if m.group(1) != "+Inf" else float("inf"), float(m.group(2)))
            for m in re.finditer(r'modelrollout_reconcile_duration_seconds_bucket\{le="([^"]+)"\} (\S+)', text)]


def quantile(buckets, q):
    """The bucket bound at or under which a fraction q of the reconciles fell."""
    total = buckets[-1][1]
    for le, c in buckets:
        if total and c >= q * total:
            return le
    return float("nan")


def delta(after, before):
    return [(le, c - c0) for (le, c), (_, c0) in zip(after, before)]


def apiserver_requests():
    """The apiserver's own count of write requests by verb and resource, and of single-object reads
    of Services (the controller's drift checks), with the seconds it spent serving them (the sum of
    its request-duration histogram): (count, seconds) per (verb, resource)."""
    counts = {}
    for m in re.finditer(r'^apiserver_request_(total|duration_seconds_sum)\{([^}]*)\} (\S+)$',
                         kubectl("get", "--raw", "/metrics"), re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if labels.get("verb") in ("APPLY", "PATCH", "POST", "PUT", "DELETE", "CREATE", "UPDATE") or \
                (labels.get("verb") == "GET" and labels.get("resource") == "services"):
            key = (labels["verb"], labels.get("resource", "") + ("/" + labels["subresource"] if labels.get("subresource") else ""))
            n, secs = counts.get(key, (0.0, 0.0))
            counts[key] = (n + float(m.group(3)), secs) if m.group(1) == "total" else (n, secs + float(m.group(3)))
    return counts


COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "prometheus"]


def component_pids():
    """The control-plane processes by name (cluster.sh writes their pid files) and the controller."""
    pids = {}
    for name in COMPONENTS:
        path = f"{os.environ['MODELROLLOUT_CLUSTER_DIR']}/{name}.pid"
        if os.path.exists(path):
            pids[name] = open(path).read().strip()
    pids["controller"] = str(ctl.pid)
    return pids


def cpu_ticks():
    """CPU ticks (user + system, children excluded) of each process in PIDS, and the machine's
    idle, steal and total ticks: who had the two cores in a window."""
    ticks = {}
    for name, pid in PIDS.items():
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            ticks[name] = int(fields[11]) + int(fields[12])
        except OSError:
            pass
    cpu = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    # steal: time the hypervisor gave this VM's CPUs to someone else.
    ticks["(idle)"], ticks["(steal)"], ticks["(all)"] = cpu[3] + cpu[4], cpu[7], sum(cpu[:8])
    return ticks


def idle_share(a, b):
    return (b["(idle)"] - a["(idle)"]) / max(1, b["(all)"] - a["(all)"])


def cpu_shares(a, b):
    """Each process's share of both cores between two `cpu_ticks` readings, largest first."""
    all_ticks = max(1, b["(all)"] - a["(all)"])
    used = {k: b[k] - a.get(k, b[k]) for k in b if k != "(all)"}
    # Short-lived processes (kubectl) and the kernel's own threads.
    used["(other)"] = all_ticks - sum(used.values())
    return ", ".join(f"{name} {100 * v / all_ticks:.0f}%"
                     for v, name in sorted(((v, k) for k, v in used.items() if v), reverse=True))


def window(port, seconds, label, sample=None, first=None):
    """Reconcile latency of the reconciles that ran in the next `seconds` (histogram difference),
    counted from before `first` runs when one is given, and the apiserver's writes."""
    h0 = histogram(metrics(port))
    w0 = apiserver_requests()
    c0 = cpu_ticks()
    if first:
        first()
    end = time.time() + seconds
    per_second = [c0]
    while time.time() < end:
        if sample:
            sample()
        time.sleep(1)
        per_second.append(cpu_ticks())
    c1 = per_second[-1]
    d = delta(histogram(metrics(port)), h0)
    within_100ms = next((c for le, c in d if le == 0.1), float("nan"))
    print(f"{label} reconciles={d[-1][1]:.0f} in {seconds}s p50_le={quantile(d, 0.5)}s p99_le={quantile(d, 0.99)}s "
          f"max_le={quantile(d, 1.0)}s over_100ms={d[-1][1] - within_100ms:.0f} rss_mib={rss_mib(ctl.pid):.1f}",
          flush=True)
    w1 = apiserver_requests()
    writes = sorted(((n - w0.get(k, (0, 0))[0], secs - w0.get(k, (0, 0))[1], k) for k, (n, secs) in w1.items()),
                    reverse=True)
    writes = [w for w in writes if w[0] > 0]
    # The mean time the apiserver took to serve each kind (from its own histogram's sum): a slow
    # reconcile that waited on these is the apiserver's time, not the controller's.
    print("  apiserver writes (and Service GETs) in the window, mean ms each as the apiserver timed them: "
          + ", ".join(f"{n:.0f} {verb} {res} ({1e3 * secs / n:.0f} ms)" for n, secs, (verb, res) in writes),
          flush=True)
    print(f"  share of both cores' time in the window: {cpu_shares(c0, c1)}", flush=True)
    # A burst can saturate the cores for a few seconds of a mostly idle window.
    busiest = min(zip(per_second, per_second[1:]), key=lambda ab: idle_share(*ab))
    print(f"  in its busiest second: {cpu_shares(*busiest)}", flush=True)


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


def phases():
    """Rollouts per phase, from the controller's own phase gauge: listing 10,000 objects every few
    seconds would load the apiserver that is being measured."""
    counts = {}
    for m in re.finditer(r'^modelrollout_rollout_phase\{[^}]*phase="(\w+)"[^}]*\} 1$', metrics(port), re.M):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


for name in NAMESPACES:
    kubectl("create", "namespace", name)
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
def die_with_parent():
    # The controller goes when this script goes, even on SIGKILL (PR_SET_PDEATHSIG).
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)


ctl = subprocess.Popen(preexec_fn=die_with_parent, args=[os.environ["CONTROLLER"], *(["--namespaces", NAMESPACES[0]] if K == 1 else []), "--metrics-addr", f"127.0.0.1:{port}",
                        "--leader-election=false", "--log-format", "text"], stderr=open(os.environ["MODELROLLOUT_CLUSTER_DIR"] + "/scale-controller.log", "w"))
PIDS = component_pids()
t0 = time.time()
apply_all([manifest(i, "v1") for i in range(N)])
print(f"applied {N} ModelRollouts in {time.time() - t0:.1f}s", flush=True)
while (idle := phases().get("Idle", 0)) < N:
    if N > 2000:
        print(f"  {time.time() - t0:.0f}s: {idle} Idle, rss_mib={rss_mib(ctl.pid):.1f}", flush=True)
    time.sleep(3 if N <= 2000 else 30)
print(f"all {N} Idle (Deployment + 3 Services each) after {time.time() - t0:.1f}s", flush=True)


def available():
    out = kubectl("get", "deployments", "-A", "-l", "app.kubernetes.io/managed-by=modelrollout-controller", "-o",
                  "jsonpath={range .items[*]}{.status.availableReplicas}{\"\\n\"}{end}")
    return sum(1 for line in out.splitlines() if line.strip() not in ("", "0"))


# The steady state starts once the controller-manager and kwok have caught up too: every stable
# Deployment available (its pod Running and Ready).
while (ready := available()) < N:
    print(f"  {time.time() - t0:.0f}s: {ready} of {N} Deployments available", flush=True)
    time.sleep(3 if N <= 2000 else 30)
print(f"all {N} Deployments available after {time.time() - t0:.1f}s", flush=True)
time.sleep(20)
print(f"after the creation burst: rss_mib={rss_mib(ctl.pid):.1f}", flush=True)
window(port, 60, f"IDLE n={N} steady")

# P rollouts move to a new version and stay in their first stage, analysed every 10 s. Every second
# the analysis times of the progressing ones are read; a gap over interval + 1 s is a missed analysis.
last, worst = {}, [0.0, None]


def sample_analyses():
    """Reads each progressing rollout's last-analysis time from the controller's metrics (a kubectl
    process a second would load the two cores being measured)."""
    text = metrics(port)
    progressing = {m.group(1) for m in re.finditer(
        r'^modelrollout_rollout_phase\{[^}]*name="(m\d+)"[^}]*phase="Progressing"[^}]*\} 1$', text, re.M)}
    for m in re.finditer(
            r'^modelrollout_rollout_last_analysis_timestamp_seconds\{[^}]*name="(m\d+)"[^}]*\} (\S+)$', text, re.M):
        name, ts = m.group(1), float(m.group(2))
        if name not in progressing:
            continue
        if name in last and ts != last[name]:
            gap = ts - last[name]
            if gap > worst[0]:
                worst[:] = [gap, name]
        last[name] = ts


# The rollouts start (candidate Deployments, Services, stable scaled down) and take a first analysis:
# measured on its own, from before the apply (at 10,000 the apply itself took ~14 s, and most of the
# start with it), so the transient and the steady progress each have their numbers.
window(port, 15, f"STARTING p={P} of n={N} (from the apply until 15 s after it)",
       first=lambda: apply_all([manifest(i, "v2") for i in range(P)]))
window(port, 90, f"PROGRESSING p={P} of n={N}", sample_analyses)
print(f"PROGRESSING phases={phases()} analysed={len(last)} worst_gap_between_analyses={worst[0]:.1f}s "
      f"(interval 10s; on time means <= 11s) rollout={worst[1]}", flush=True)
st = json.loads(kubectl("get", "modelrollout", "m0", "-n", ns(0), "-o", "json")).get("status") or {}
print(f"m0: phase={st.get('phase')} reason={st.get('reason')} message={st.get('message')} "
      f"lastAnalysis={(st.get('lastAnalysis') or {}).get('time')}", flush=True)
ctl.terminate(); ctl.wait(timeout=20)
