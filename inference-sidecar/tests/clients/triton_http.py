"""Drives the sidecar's Open Inference Protocol REST API with Triton's own Python client
(tritonclient[http], pinned in scripts/requirements.txt), as a user of a generic OIP server would:
every request is built from the model's metadata alone. Checks the answers against the golden
set's reference probabilities and exits non-zero on the first difference.

Usage: triton_http.py HOST:PORT MODEL VERSION GOLDEN_JSON
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from oip_common import NP, error_cases, inputs_for


def main():
    url, model, version, golden = sys.argv[1:5]
    rows = json.load(open(golden))["rows"]
    c = httpclient.InferenceServerClient(url=url)
    assert c.is_server_live() and c.is_server_ready()
    server = c.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"], server
    for v in ("", version):
        assert c.is_model_ready(model, model_version=v), v
    meta = c.get_model_metadata(model, model_version=version)
    assert meta == c.get_model_metadata(model), "the same metadata with and without the version"
    checked = 0
    for batch in (1, 8, 64):
        for binary_in in (False, True):
            for binary_out in (False, True):
                chunk = [rows[(checked + i) % len(rows)] for i in range(batch)]
                inputs = []
                for spec in meta["inputs"]:
                    values = np.array([r["features"][spec["name"]] for r in chunk], dtype=NP[spec["datatype"]])
                    t = httpclient.InferInput(spec["name"], [batch], spec["datatype"])
                    t.set_data_from_numpy(values, binary_data=binary_in)
                    inputs.append(t)
                outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=binary_out) for o in meta["outputs"]]
                result = c.infer(model, inputs, model_version=version, outputs=outputs, request_id=f"b{batch}")
                probs = result.as_numpy("probability")
                decisions = result.as_numpy("decision")
                assert probs.shape == (batch,) and decisions.shape == (batch,), (probs.shape, decisions.shape)
                want = np.array([r["probability"] for r in chunk], dtype=np.float32)
                assert np.allclose(probs, want, atol=1e-5), (batch, binary_in, binary_out, probs, want)
                assert result.get_response()["model_version"] == version
                checked += batch
    # Requests compressed as the client offers (Content-Encoding: gzip, deflate), binary tensors included.
    chunk = rows[:8]
    want = np.array([r["probability"] for r in chunk], dtype=np.float32)
    for algorithm in ("gzip", "deflate"):
        inputs = []
        for spec in meta["inputs"]:
            t = httpclient.InferInput(spec["name"], [8], spec["datatype"])
            t.set_data_from_numpy(np.array([r["features"][spec["name"]] for r in chunk], dtype=NP[spec["datatype"]]))
            inputs.append(t)
        result = c.infer(model, inputs, request_compression_algorithm=algorithm)
        assert np.allclose(result.as_numpy("probability"), want, atol=1e-5), algorithm
        checked += 8
    # Only the output asked for.
    result = c.infer(model, inputs_for(httpclient, meta, rows[0]), outputs=[httpclient.InferRequestedOutput("decision")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["decision"], result.get_response()
    # Every error class, as the client reports it: the status and the server's message.
    errors = error_cases(c, httpclient, model, meta, rows[0])
    expect = {"unknown model": "404", "unknown version": "404", "wrong datatype": "400", "out of range": "400", "unknown output": "400"}
    for name, status in expect.items():
        assert str(errors[name]["status"]) == status, (name, errors[name])
        assert errors[name]["message"], (name, errors[name])
    print(json.dumps({"rows_checked": checked, "errors": errors}))


if __name__ == "__main__":
    main()
