"""Sends ModelInfer calls through a Gateway with Triton's own Python client (tritonclient[grpc],
pinned in scripts/requirements.txt), as a client of a GRPCRoute does: one channel to the Gateway's
address, the route's host name as the `:authority`, requests built from the model's metadata, no
version asked for (the route picks it). Prints, as one JSON line, how many answers each
`model_version` gave and the errors.

Usage: grpc_versions.py GATEWAY_HOST:PORT AUTHORITY MODEL GOLDEN_JSON CALLS [HEADER=VALUE]
(the header, if given, sent as metadata with every call).
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

NP = {"FP32": np.float32, "INT64": np.int64, "BYTES": np.object_}


def main():
    gateway, authority, model, golden, calls = sys.argv[1:6]
    headers = dict([sys.argv[6].split("=", 1)]) if len(sys.argv) > 6 else None
    rows = json.load(open(golden))["rows"]
    c = grpcclient.InferenceServerClient(url=gateway, channel_args=[("grpc.default_authority", authority)])
    meta = c.get_model_metadata(model, as_json=True)
    versions, errors = {}, []
    for i in range(int(calls)):
        row = rows[i % len(rows)]
        inputs = []
        for spec in meta["inputs"]:
            t = grpcclient.InferInput(spec["name"], [1], spec["datatype"])
            t.set_data_from_numpy(np.array([row["features"][spec["name"]]], dtype=NP[spec["datatype"]]))
            inputs.append(t)
        try:
            result = c.infer(model, inputs, request_id=f"grpc-{i}", headers=headers)
            v = result.get_response().model_version
            versions[v] = versions.get(v, 0) + 1
        except InferenceServerException as e:
            errors.append(str(e)[:200])
    print(json.dumps({"versions": versions, "errors": errors}))


if __name__ == "__main__":
    main()
