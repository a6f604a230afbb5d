"""Drives the sidecar's Open Inference Protocol gRPC service with Triton's own Python client
(tritonclient[grpc], pinned in scripts/requirements.txt), requests built from the model's metadata
alone: health, metadata with and without a version, batches of 1, 8 and 64 as typed contents and as
raw_input_contents, checked against the golden set's reference probabilities; every error class as
the client raises it (the gRPC status and the server's message).

Usage: triton_grpc.py HOST:PORT MODEL VERSION GOLDEN_JSON
"""

import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from oip_common import NP, error_cases


def main():
    url, model, version, golden = sys.argv[1:5]
    rows = json.load(open(golden))["rows"]
    c = grpcclient.InferenceServerClient(url=url)
    assert c.is_server_live() and c.is_server_ready()
    server = c.get_server_metadata(as_json=True)
    assert "binary_tensor_data" in server["extensions"], server
    assert c.is_model_ready(model) and c.is_model_ready(model, model_version=version)
    meta = c.get_model_metadata(model, model_version=version, as_json=True)
    assert meta == c.get_model_metadata(model, as_json=True)
    checked = 0
    for batch in (1, 8, 64):
        chunk = [rows[(checked + i) % len(rows)] for i in range(batch)]
        inputs = []
        for spec in meta["inputs"]:
            values = np.array([r["features"][spec["name"]] for r in chunk], dtype=NP[spec["datatype"]])
            t = grpcclient.InferInput(spec["name"], [batch], spec["datatype"])
            t.set_data_from_numpy(values)  # raw_input_contents, as the client sends by default
            inputs.append(t)
        outputs = [grpcclient.InferRequestedOutput(o["name"]) for o in meta["outputs"]]
        result = c.infer(model, inputs, model_version=version, outputs=outputs, request_id=f"g{batch}")
        probs = result.as_numpy("probability")
        want = np.array([r["probability"] for r in chunk], dtype=np.float32)
        assert probs.shape == (batch,), probs.shape
        assert np.allclose(probs, want, atol=1e-5), (batch, probs, want)
        assert result.as_numpy("decision").shape == (batch,)
        assert result.get_response(as_json=True)["id"] == f"g{batch}"
        checked += batch
    # A request compressed with gzip, as the client offers.
    inputs = []
    for spec in meta["inputs"]:
        t = grpcclient.InferInput(spec["name"], [8], spec["datatype"])
        t.set_data_from_numpy(np.array([r["features"][spec["name"]] for r in rows[:8]], dtype=NP[spec["datatype"]]))
        inputs.append(t)
    result = c.infer(model, inputs, compression_algorithm="gzip")
    want = np.array([r["probability"] for r in rows[:8]], dtype=np.float32)
    assert np.allclose(result.as_numpy("probability"), want, atol=1e-5)
    checked += 8
    # grpc.health.v1 as any gRPC client (a Kubernetes probe, a load balancer) asks it, with no
    # generated stub: an empty HealthCheckRequest (the whole server), answered status 1, SERVING.
    with grpc.insecure_channel(url) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert check(b"", timeout=5) == b"\x08\x01", "SERVING"
    errors = error_cases(c, grpcclient, model, meta, rows[0])
    expect = {
        "unknown model": "StatusCode.NOT_FOUND",
        "unknown version": "StatusCode.NOT_FOUND",
        "wrong datatype": "StatusCode.INVALID_ARGUMENT",
        "out of range": "StatusCode.INVALID_ARGUMENT",
        "unknown output": "StatusCode.INVALID_ARGUMENT",
    }
    for name, status in expect.items():
        assert errors[name]["status"] == status, (name, errors[name])
    print(json.dumps({"rows_checked": checked, "errors": errors}))


if __name__ == "__main__":
    main()
