"""Trains the project's small real ONNX models from synthetic data with a fixed seed.

Outputs (committed, each well under 1 MB) in models/:
  fraud-v1.onnx          logistic regression, the stable fraud model
  fraud-v2.onnx          gradient boosting, a better candidate (higher recall, no more false positives)
  fraud-v2-bad-fpr.onnx  a candidate with a clearly higher false-positive rate at the same threshold
  fraud-v2-slow.onnx     fraud-v2 plus real extra compute (~10 ms/row): a latency-regression candidate
  toxicity-v1.onnx       TF-IDF + logistic regression over a string input (real-time text classifier)
  toxicity-v2.onnx       its successor: word 1-3-grams, trained on comments up to 300 characters too;
                         toxicity-v2.golden.json is 1,000 labelled comments (the acceptance set)
  ranker-v1.onnx         logistic regression scoring (user, item) pairs for the ranking example
  ranker-popularity.onnx a ranker that sees only item popularity: the A/B experiment's weaker arm
  <model>.reference.json feature statistics (quantile bins) the sidecar computes drift (PSI) against
  <model>.golden.json    labelled rows with the probabilities Python onnxruntime gives
  SHA256SUMS             digests of the models and references, as the ModelRollout manifests name them

Run: scripts/make_models.sh (uses the pinned environment from scripts/python-env.sh).
"""

import hashlib
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "models")
SEED = 20261125
THRESHOLD = 0.5

FRAUD_FEATURES = [
    # name, type, min, max
    ("amount", "float", 0.0, 20000.0),
    ("hour", "int", 0, 23),
    ("merchant_risk", "float", 0.0, 1.0),
    ("distance_km", "float", 0.0, 20000.0),
    ("card_age_days", "int", 0, 20000),
    ("foreign", "int", 0, 1),
]
RANKER_FEATURES = [
    ("user_affinity", "float", 0.0, 1.0),
    ("item_popularity", "float", 0.0, 1.0),
    ("price", "float", 0.0, 10000.0),
    ("recency_days", "float", 0.0, 3650.0),
]


def fraud_data(rng, n):
    amount = rng.lognormal(4.0, 1.2, n).clip(0, 20000)
    hour = rng.integers(0, 24, n)
    merchant_risk = rng.beta(2, 5, n)
    distance = rng.exponential(50, n).clip(0, 20000)
    card_age = rng.integers(0, 3000, n)
    foreign = (rng.random(n) < 0.1).astype(int)
    logit = (
        -5.0
        + 0.6 * np.log1p(amount)
        + 6.0 * merchant_risk
        + 1.5 * foreign
        + 1.5 * ((hour < 5) | (hour > 22))
        + 0.006 * np.minimum(distance, 500)
        - 0.0008 * card_age
        # interactions a linear model cannot see: risky merchants abroad at night, far from home
        + 3.0 * (merchant_risk > 0.4) * ((hour < 5) | (hour > 22))
        + 2.0 * (distance > 100) * foreign
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    x = np.column_stack([amount, hour, merchant_risk, distance, card_age, foreign]).astype(np.float32)
    return x, y


def ranker_data(rng, n):
    aff = rng.random(n)
    pop = rng.beta(2, 3, n)
    price = rng.lognormal(3.5, 1.0, n).clip(0, 10000)
    rec = rng.exponential(200, n).clip(0, 3650)
    logit = -1.0 + 3.0 * aff + 1.5 * pop - 0.3 * np.log1p(price) - 0.002 * rec
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return np.column_stack([aff, pop, price, rec]).astype(np.float32), y


TOXIC = ["idiot", "stupid", "hate", "trash", "loser", "shut up", "pathetic", "moron", "disgusting", "worthless"]
NEUTRAL = ["thanks", "great", "the weather", "meeting", "lunch", "project", "release", "review", "coffee", "music"]


def text_data(rng, n):
    texts, labels = [], []
    for _ in range(n):
        toxic = rng.random() < 0.3
        words = list(rng.choice(NEUTRAL, size=rng.integers(2, 6)))
        if toxic:
            words += list(rng.choice(TOXIC, size=rng.integers(1, 3)))
        elif rng.random() < 0.05:
            words.append(rng.choice(TOXIC))  # label noise: mild words in friendly messages
        rng.shuffle(words)
        texts.append("you " + " ".join(words))
        labels.append(int(toxic))
    return np.array(texts, dtype=object), np.array(labels)


FILLER = ["I think", "to be honest", "as I said before", "in the last release", "for the team",
          "after the meeting", "before lunch", "about the project", "in my review", "with some coffee"]


def comment_data(rng, n, max_chars=300):
    """Comments as a moderation API gets them: short ones as text_data makes, and long ones (up to
    max_chars characters) padded with ordinary phrases, the toxic words anywhere in them."""
    texts, labels = text_data(rng, n)
    out = []
    for t in texts:
        if rng.random() < 0.5:
            words = t.split(" ")
            target = int(rng.integers(len(t), max_chars + 1))
            while True:
                phrase = str(rng.choice(FILLER))
                at = int(rng.integers(0, len(words) + 1))
                longer = words[:at] + phrase.split(" ") + words[at:]
                if len(" ".join(longer)) > target:
                    break
                words = longer
            t = " ".join(words)
        assert len(t) <= max_chars, t
        out.append(t)
    return np.array(out, dtype=object), labels


def text_pipeline(texts, labels, name, ngrams, max_features):
    pipe = Pipeline([
        ("tfidf", TfidfVectorizer(token_pattern=r"[A-Za-z0-9_]{2,}", max_features=max_features, ngram_range=ngrams)),
        ("lr", LogisticRegression(max_iter=2000)),
    ]).fit(texts, labels)
    onx = convert_sklearn(
        pipe,
        name,
        initial_types=[("input", StringTensorType([None, 1]))],
        options={id(pipe.steps[1][1]): {"zipmap": False}, id(pipe.steps[0][1]): {"locale": "C.UTF-8"}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString()


def text_probabilities(path, texts):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return [o for o in sess.run(None, {"input": texts.reshape(-1, 1)}) if o.ndim == 2][0][:, 1]


def auc(labels, probs):
    pos = [p for p, l in zip(probs, labels) if l]
    neg = [p for p, l in zip(probs, labels) if not l]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def to_onnx(model, n_features, name):
    onx = convert_sklearn(
        model,
        name,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString()


def reference_stats(x, features, bins=10):
    stats = []
    for i, (name, kind, lo, hi) in enumerate(features):
        col = x[:, i].astype(float)
        edges = np.unique(np.quantile(col, np.linspace(0, 1, bins + 1)[1:-1]))
        # Right-closed bins, as the sidecar bins a value: (-inf, e0], (e0, e1], ..., (en, inf).
        # (np.histogram's are left-closed: a whole-number feature such as `foreign` or `hour`
        # would land one bin over from where the sidecar puts it.)
        counts = np.bincount(np.searchsorted(edges, col, side="left"), minlength=len(edges) + 1)
        stats.append({"name": name, "edges": [float(e) for e in edges], "proportions": [float(c) / len(col) for c in counts]})
    return {"features": stats}


def slow_variant(onnx_bytes, width=1024, layers=64):
    """The same classifier plus a branch that really computes (`layers` width x width MatMul + Tanh
    on the input) and then adds exactly 0 to the probabilities: identical scores and decisions,
    about 10 ms more per row on one core. The latency-regression candidate of the end-to-end tests.
    The weights come from ConstantOfShape, so the file stays a few KB."""
    m = onnx.load_from_string(onnx_bytes)
    g = m.graph
    for node in g.node:
        for i, out in enumerate(node.output):
            if out == "probabilities":
                node.output[i] = "probabilities_fast"
    g.initializer.extend([
        numpy_helper.from_array(np.array([6, width], dtype=np.int64), "slow_in_shape"),
        numpy_helper.from_array(np.array([width, width], dtype=np.int64), "slow_w_shape"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "slow_axes"),
        numpy_helper.from_array(np.array([0.0], dtype=np.float32), "slow_zero"),
    ])
    fill = lambda v: helper.make_tensor("value", TensorProto.FLOAT, [1], [v])
    nodes = [
        helper.make_node("ConstantOfShape", ["slow_in_shape"], ["slow_w_in"], value=fill(1e-3)),
        helper.make_node("ConstantOfShape", ["slow_w_shape"], ["slow_w"], value=fill(1.0 / width)),
        helper.make_node("MatMul", ["input", "slow_w_in"], ["slow_h0"]),
    ]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"slow_h{i}", "slow_w"], [f"slow_m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"slow_m{i}"], [f"slow_h{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"slow_h{layers}", "slow_axes"], ["slow_sum"], keepdims=1),
        helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nothing"]),
        helper.make_node("Add", ["probabilities_fast", "slow_nothing"], ["probabilities"]),
    ]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    return m.SerializeToString()


def write(name, data):
    path = os.path.join(OUT, name)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(path, mode) as f:
        f.write(data)
    return path


def onnx_probabilities(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"input": x})
    probs = [o for o in outs if getattr(o, "ndim", 0) == 2][0]
    return probs[:, 1].astype(float)


def rates(y, p):
    d = p >= THRESHOLD
    tp = int(((d == 1) & (y == 1)).sum())
    fp = int(((d == 1) & (y == 0)).sum())
    tn = int(((d == 0) & (y == 0)).sum())
    fn = int(((d == 0) & (y == 1)).sum())
    return {"fpr": fp / max(fp + tn, 1), "capture": tp / max(tp + fn, 1), "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def golden_rows(x, y, probs, features, n=200):
    rows = []
    for i in range(n):
        rows.append({
            "features": {f[0]: (int(x[i, j]) if f[1] == "int" else float(x[i, j])) for j, f in enumerate(features)},
            "label": int(y[i]),
            "probability": float(probs[i]),
        })
    return rows


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(SEED)
    x_train, y_train = fraud_data(rng, 40000)
    x_test, y_test = fraud_data(rng, 20000)

    # Feature scaling inside the graph would add ops; logistic regression copes with raw features here.
    v1 = LogisticRegression(max_iter=2000, C=1.0).fit(x_train[:, [0, 2, 5]], y_train)
    # v1 sees only amount, merchant_risk, foreign: wrap it so the ONNX graph takes all six features.
    w = np.zeros((1, 6))
    w[0, [0, 2, 5]] = v1.coef_[0]
    v1_full = LogisticRegression()
    v1_full.classes_ = np.array([0, 1])
    v1_full.coef_ = w
    v1_full.intercept_ = v1.intercept_.copy()
    v1_full.n_features_in_ = 6
    models = {
        "fraud-v1": v1_full,
        "fraud-v2": GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=SEED).fit(x_train, y_train),
        # Over-weights the positive class: flags far more legitimate transactions at threshold 0.5.
        "fraud-v2-bad-fpr": LogisticRegression(max_iter=2000, class_weight={0: 1, 1: 6}).fit(x_train, y_train),
    }
    report = {}
    sums = {}
    for name, model in models.items():
        path = write(f"{name}.onnx", to_onnx(model, 6, name))
        probs = onnx_probabilities(path, x_test)
        report[name] = rates(y_test, probs)
        write(f"{name}.golden.json", json.dumps({"threshold": THRESHOLD, "rows": golden_rows(x_test, y_test, probs, FRAUD_FEATURES)}, indent=1))
        write(f"{name}.reference.json", json.dumps(reference_stats(x_train, FRAUD_FEATURES), indent=1))

    slow = write("fraud-v2-slow.onnx", slow_variant(open(os.path.join(OUT, "fraud-v2.onnx"), "rb").read()))
    probs = onnx_probabilities(slow, x_test)
    assert np.array_equal(probs, onnx_probabilities(os.path.join(OUT, "fraud-v2.onnx"), x_test)), "slow == v2"
    report["fraud-v2-slow"] = rates(y_test, probs)
    write("fraud-v2-slow.golden.json", json.dumps({"threshold": THRESHOLD, "rows": golden_rows(x_test, y_test, probs, FRAUD_FEATURES)}, indent=1))
    write("fraud-v2-slow.reference.json", json.dumps(reference_stats(x_train, FRAUD_FEATURES), indent=1))

    xr, yr = ranker_data(rng, 20000)
    ranker = LogisticRegression(max_iter=2000).fit(xr, yr)
    path = write("ranker-v1.onnx", to_onnx(ranker, 4, "ranker-v1"))
    probs = onnx_probabilities(path, xr[:200])
    write("ranker-v1.golden.json", json.dumps({"threshold": THRESHOLD, "rows": golden_rows(xr, yr, probs, RANKER_FEATURES)}, indent=1))
    write("ranker-v1.reference.json", json.dumps(reference_stats(xr, RANKER_FEATURES), indent=1))

    texts, labels = text_data(rng, 6000)
    pipe = Pipeline([
        ("tfidf", TfidfVectorizer(token_pattern=r"[A-Za-z0-9_]{2,}", max_features=2000, ngram_range=(1, 2))),
        ("lr", LogisticRegression(max_iter=2000)),
    ]).fit(texts, labels)
    onx = convert_sklearn(
        pipe,
        "toxicity-v1",
        initial_types=[("input", StringTensorType([None, 1]))],
        options={id(pipe.steps[1][1]): {"zipmap": False}, id(pipe.steps[0][1]): {"locale": "C.UTF-8"}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path = write("toxicity-v1.onnx", onx.SerializeToString())
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    test_texts, test_labels = text_data(rng, 200)
    probs = [o for o in sess.run(None, {"input": test_texts.reshape(-1, 1)}) if o.ndim == 2][0][:, 1]
    report["toxicity-v1"] = rates(test_labels, probs)
    # A text model's reference: the length of its training texts in characters.
    lengths = np.array([[len(str(t))] for t in texts], dtype=float)
    text_ref = reference_stats(lengths, [("text", "length", 0, None)])
    text_ref["features"][0]["measure"] = "length"
    write("toxicity-v1.reference.json", json.dumps(text_ref, indent=1))
    write("toxicity-v1.golden.json", json.dumps({"threshold": THRESHOLD, "rows": [
        {"features": {"text": str(t)}, "label": int(l), "probability": float(p)} for t, l, p in zip(test_texts, test_labels, probs)
    ]}, indent=1))

    # Last, from a generator of its own, so that every model above stays byte for byte the same:
    # the ranker that knows only how popular an item is (the usual baseline before personalisation).
    rng_pop = np.random.default_rng(SEED + 1)
    xp, yp = ranker_data(rng_pop, 20000)
    only_pop = LogisticRegression(max_iter=2000).fit(xp[:, [1]], yp)
    pop_full = LogisticRegression()
    pop_full.classes_ = np.array([0, 1])
    pop_full.coef_ = np.zeros((1, 4))
    pop_full.coef_[0, 1] = only_pop.coef_[0, 0]
    pop_full.intercept_ = only_pop.intercept_.copy()
    pop_full.n_features_in_ = 4
    path = write("ranker-popularity.onnx", to_onnx(pop_full, 4, "ranker-popularity"))
    probs = onnx_probabilities(path, xp[:200])
    write("ranker-popularity.golden.json", json.dumps({"threshold": THRESHOLD, "rows": golden_rows(xp, yp, probs, RANKER_FEATURES)}, indent=1))
    write("ranker-popularity.reference.json", json.dumps(reference_stats(xp, RANKER_FEATURES), indent=1))

    # The toxicity model's successor, from a generator of its own (every model above unchanged):
    # trained on comments up to 300 characters; its acceptance set is 1,000 such comments, scored
    # by both versions here so the manifest's limits can be read against what each one gives.
    rng_tox = np.random.default_rng(SEED + 2)
    texts2, labels2 = comment_data(rng_tox, 20000)
    path = write("toxicity-v2.onnx", text_pipeline(texts2, labels2, "toxicity-v2", (1, 3), 5000))
    golden_texts, golden_labels = comment_data(rng_tox, 1000)
    probs = text_probabilities(path, golden_texts)
    report["toxicity-v2"] = rates(golden_labels, probs)
    report["toxicity-v2"]["auc"] = auc(golden_labels, probs)
    report["toxicity-v2"]["auc_of_v1_on_its_golden_set"] = auc(golden_labels, text_probabilities(os.path.join(OUT, "toxicity-v1.onnx"), golden_texts))
    lengths = np.array([[len(str(t))] for t in texts2], dtype=float)
    text_ref = reference_stats(lengths, [("text", "length", 0, None)])
    text_ref["features"][0]["measure"] = "length"
    write("toxicity-v2.reference.json", json.dumps(text_ref, indent=1))
    write("toxicity-v2.golden.json", json.dumps({"threshold": THRESHOLD, "rows": [
        {"features": {"text": str(t)}, "label": int(l), "probability": float(p)} for t, l, p in zip(golden_texts, golden_labels, probs)
    ]}, indent=1))

    for f in sorted(os.listdir(OUT)):
        if f.endswith(".onnx") or f.endswith(".reference.json"):
            sums[f] = hashlib.sha256(open(os.path.join(OUT, f), "rb").read()).hexdigest()
    write("SHA256SUMS", "".join(f"{h}  {f}\n" for f, h in sums.items()))
    write("quality.json", json.dumps(report, indent=1, sort_keys=True))
    print(json.dumps(report, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
