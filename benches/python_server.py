"""The baseline: FastAPI + uvicorn (one worker, uvloop, orjson) + onnxruntime, doing the same contract
validation and scoring as the sidecar's /v1/models/{name}:predict. No artificial slowness.

  python python_server.py MODEL.onnx PORT
"""
import math
import sys

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse, Response

FEATURES = [  # name, type, min, max: the fraud contract
    ("amount", "float", 0, 20000),
    ("hour", "int", 0, 23),
    ("merchant_risk", "float", 0, 1),
    ("distance_km", "float", 0, 20000),
    ("card_age_days", "int", 0, 20000),
    ("foreign", "int", 0, 1),
]
NAMES = {f[0] for f in FEATURES}
THRESHOLD = 0.5
MAX_BYTES = 64 * 1024

sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
INPUT = sess.get_inputs()[0].name
app = FastAPI()


def bad(field, reason, status=400):
    return ORJSONResponse({"error": {"code": "INVALID_ARGUMENT", "field": field, "reason": reason}}, status_code=status)


@app.post("/v1/models/{target}")
async def predict(target: str, request: Request):
    body = await request.body()
    if len(body) > MAX_BYTES:
        return ORJSONResponse({"error": {"code": "PAYLOAD_TOO_LARGE"}}, status_code=413)
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError:
        return bad("body", "malformed")
    instances = req.get("instances")
    if not isinstance(instances, list) or not instances:
        return bad("instances", "missing")
    rows = np.empty((len(instances), len(FEATURES)), dtype=np.float32)
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            return bad(f"instances[{i}]", "wrong_type")
        for k in inst:
            if k not in NAMES:
                return bad(f"instances[{i}].{k}", "unknown")
        for j, (name, kind, lo, hi) in enumerate(FEATURES):
            v = inst.get(name)
            if v is None:
                return bad(f"instances[{i}].{name}", "missing")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return bad(f"instances[{i}].{name}", "wrong_type")
            if kind == "int" and not float(v).is_integer():
                return bad(f"instances[{i}].{name}", "wrong_type")
            if not math.isfinite(v):
                return bad(f"instances[{i}].{name}", "not_finite")
            if v < lo or v > hi:
                return bad(f"instances[{i}].{name}", "out_of_range")
            rows[i, j] = v
    probs = [o for o in sess.run(None, {INPUT: rows}) if getattr(o, "ndim", 0) == 2][0][:, 1]
    out = [{"score": float(p), "decision": bool(p >= THRESHOLD)} for p in probs]
    return Response(orjson.dumps({"model_version": "v2", "predictions": out}), media_type="application/json")


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), workers=1, loop="uvloop", log_level="warning", access_log=False)
