"""What the Triton client scripts share: requests built from model metadata with either of
tritonclient's modules (`tritonclient.http` or `tritonclient.grpc`), and the error cases."""

import numpy as np
from tritonclient.utils import InferenceServerException

NP = {"FP32": np.float32, "INT64": np.int64}


def inputs_for(client_module, meta, row, **override):
    """One-row inputs for every tensor metadata lists, from a golden row (`override` replaces a value)."""
    out = []
    for spec in meta["inputs"]:
        value = override.get(spec["name"], row["features"][spec["name"]])
        t = client_module.InferInput(spec["name"], [1], spec["datatype"])
        t.set_data_from_numpy(np.array([value], dtype=NP[spec["datatype"]]))
        out.append(t)
    return out


def wrong_datatype(client_module, meta, row):
    """The same request with its first input sent as FP64."""
    out = inputs_for(client_module, meta, row)
    spec = meta["inputs"][0]
    t = client_module.InferInput(spec["name"], [1], "FP64")
    t.set_data_from_numpy(np.array([row["features"][spec["name"]]], dtype=np.float64))
    out[0] = t
    return out


def error_cases(client, client_module, model, meta, row):
    """Every error class, as the client raises it: {case: {"status", "message"}}."""
    cases = {
        "unknown model": lambda: client.get_model_metadata("nope"),
        "unknown version": lambda: client.get_model_metadata(model, model_version="v999"),
        "wrong datatype": lambda: client.infer(model, wrong_datatype(client_module, meta, row)),
        "out of range": lambda: client.infer(model, inputs_for(client_module, meta, row, amount=-5.0)),
        "unknown output": lambda: client.infer(
            model, inputs_for(client_module, meta, row), outputs=[client_module.InferRequestedOutput("logits")]
        ),
    }
    errors = {}
    for name, call in cases.items():
        try:
            call()
        except InferenceServerException as e:
            errors[name] = {"status": e.status(), "message": e.message()}
            continue
        raise AssertionError(f"{name}: no error")
    assert "datatype FP64, the model's metadata says FP32" in errors["wrong datatype"]["message"], errors
    return errors
