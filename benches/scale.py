"""Driven by benches/scale.sh inside the local control plane's environment."""
import json, os, re, socket, subprocess, sys, time, urllib.request

N, P = int(os.environ["SCALE_N"]), int(os.environ["SCALE_P"])
NS = "scale"
SHA = open("models/SHA256SUMS").read().split()[0]


def kubectl(*args, stdin=None):
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, check=True).stdout


def manifest(i, version):
    return {
        "apiVersion": "modelrollout.dev/v1alpha1", "kind": "ModelRollout",
        "metadata": {"name": f"m{i}", "namespace": NS},
        "spec": {
            "model": {"name": "fraud", "version": version,
                      "artifact": {"uri": "/models/fraud.onnx", "sha256": SHA},
                      "contract": {"inputs": [{"name": "amount", "type": "float"}]}},
            "workload": {"replicas": 1},
            "trafficRouting": {"replicaRatio": {}},
            "stages": [{"name": "a", "weight": 50, "minDuration": "20s"}, {"name": "b", "weight": 100, "minDuration": "20s"}],
            "analysis": {"interval": "10s"},
        },
    }


def apply_all(items):
    for k in range(0, len(items), 200):
        docs = "\n---\n".join(json.dumps(m) for m in items[k:k + 200])
        kubectl("apply", "--server-side", "-f", "-", stdin=docs)


def metrics(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def reconcile_quantile(text, q):
    buckets = [(float(m.group(1)) if m.group(1) != "+Inf" else float("inf"), float(m.group(2)))
               for m in re.finditer(r'modelrollout_reconcile_duration_seconds_bucket\{le="([^"]+)"\} (\S+)', text)]
    total = buckets[-1][1]
    for le, c in buckets:
        if c >= q * total:
            return le, total
    return float("inf"), total


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


def phases():
    out = json.loads(kubectl("get", "modelrollouts", "-n", NS, "-o", "json"))
    counts = {}
    for it in out["items"]:
        ph = (it.get("status") or {}).get("phase", "None")
        counts[ph] = counts.get(ph, 0) + 1
    return counts


kubectl("create", "namespace", NS)
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
ctl = subprocess.Popen([os.environ["CONTROLLER"], "--namespaces", NS, "--metrics-addr", f"127.0.0.1:{port}",
                        "--leader-election=false", "--log-format", "text"], stderr=open(os.environ["MODELROLLOUT_CLUSTER_DIR"] + "/scale-controller.log", "w"))
t0 = time.time()
apply_all([manifest(i, "v1") for i in range(N)])
print(f"applied {N} ModelRollouts in {time.time() - t0:.1f}s", flush=True)
while phases().get("Idle", 0) < N:
    time.sleep(3)
print(f"all {N} Idle (Deployment + 3 Services each) after {time.time() - t0:.1f}s", flush=True)
time.sleep(20)
text = metrics(port)
p99, count = reconcile_quantile(text, 0.99)
p50, _ = reconcile_quantile(text, 0.50)
print(f"IDLE n={N} rss_mib={rss_mib(ctl.pid):.1f} reconciles={count:.0f} reconcile_p50_le={p50}s reconcile_p99_le={p99}s", flush=True)
t1 = time.time()
apply_all([manifest(i, "v2") for i in range(P)])
time.sleep(45)
text2 = metrics(port)
print(f"PROGRESSING p={P} phases={phases()} rss_mib={rss_mib(ctl.pid):.1f}", flush=True)
p99b, count2 = reconcile_quantile(text2, 0.99)
print(f"PROGRESSING reconciles_total={count2:.0f} reconcile_p99_le={p99b}s (cumulative histogram)", flush=True)
ctl.terminate(); ctl.wait(timeout=20)
