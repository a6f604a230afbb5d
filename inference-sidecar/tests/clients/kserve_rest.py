"""Drives the sidecar's Open Inference Protocol REST API with KServe's Python SDK
(`kserve.InferenceRESTClient`, protocol v2; pinned in scripts/requirements.txt): health, model
readiness, JSON and binary tensors in, JSON and binary outputs asked for, batches of 1, 8 and 64,
checked against the golden set's reference probabilities; and the errors it raises.

Usage: kserve_rest.py BASE_URL MODEL VERSION GOLDEN_JSON
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

NP = {"FP32": np.float32, "INT64": np.int64}


async def main():
    base, model, version, golden = sys.argv[1:5]
    rows = json.load(open(golden))["rows"]
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=10))
    assert await client.is_server_live(base)
    assert await client.is_server_ready(base)
    assert await client.is_model_ready(base, model)
    # The SDK has no metadata call: read it as any v2 client would, then build requests from it.
    import httpx

    meta = httpx.get(f"{base}/v2/models/{model}/versions/{version}").json()
    checked = 0
    for batch in (1, 8, 64):
        for binary_in in (False, True):
            for binary_out in (False, True):
                chunk = [rows[(checked + i) % len(rows)] for i in range(batch)]
                inputs = []
                for spec in meta["inputs"]:
                    values = np.array([r["features"][spec["name"]] for r in chunk], dtype=NP[spec["datatype"]])
                    t = InferInput(spec["name"], [batch], spec["datatype"])
                    t.set_data_from_numpy(values, binary_data=binary_in)
                    inputs.append(t)
                outputs = [RequestedOutput(o["name"], parameters={"binary_data": binary_out}) for o in meta["outputs"]]
                request = InferRequest(model, inputs, request_id=f"k{batch}", request_outputs=outputs)
                response = await client.infer(base, request, model_name=model)
                probs = response.get_output_by_name("probability").as_numpy()
                want = np.array([r["probability"] for r in chunk], dtype=np.float32)
                assert probs.shape == (batch,), probs.shape
                assert np.allclose(probs, want, atol=1e-5), (batch, binary_in, binary_out, probs, want)
                decisions = response.get_output_by_name("decision").as_numpy()
                assert decisions.shape == (batch,), decisions.shape
                checked += batch
    # An error comes back as the SDK raises it: an HTTP status error carrying the server's message.
    bad = InferInput(meta["inputs"][0]["name"], [1], "FP32", data=[-5.0])
    rest = []
    for spec in meta["inputs"][1:]:
        rest.append(InferInput(spec["name"], [1], spec["datatype"], data=[rows[0]["features"][spec["name"]]]))
    try:
        await client.infer(base, InferRequest(model, [bad] + rest), model_name=model)
        raise AssertionError("an out-of-range value was accepted")
    except httpx.HTTPStatusError as e:
        assert e.response.status_code == 400, e
        message = e.response.json()["error"]
        assert isinstance(message, str) and "outside" in message, message
    await client.close()
    print(json.dumps({"rows_checked": checked, "error": message}))


if __name__ == "__main__":
    asyncio.run(main())
