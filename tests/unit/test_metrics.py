"""Scorers: numbers a user reads in the scorecard."""

from __future__ import annotations

import random

import numpy as np
from sklearn.metrics import f1_score

from taskfit.evaluation.metrics import _macro_f1_counts, bootstrap_ci, score_classify
from taskfit.records import Example, Prediction


def _fake(n=200, acc=0.7, seed=0):
    rng = random.Random(seed)
    labels = list("abcde")
    y_true = [rng.choice(labels) for _ in range(n)]
    y_pred = [y if rng.random() < acc else rng.choice(labels[:3]) for y in y_true]
    return labels, y_true, y_pred


def test_fast_macro_f1_matches_scikit_learn():
    labels, t, p = _fake()
    idx = {lab: i for i, lab in enumerate(labels)}
    ours = _macro_f1_counts(np.array([idx[y] for y in t]), np.array([idx[y] for y in p]), len(labels))
    assert abs(ours - f1_score(t, p, labels=labels, average="macro")) < 1e-12


def test_interval_contains_the_estimate_and_shrinks_with_more_data():
    small = bootstrap_ci(*_fake(n=50))
    large = bootstrap_ci(*_fake(n=2000))
    width = lambda ci: ci["accuracy"][1] - ci["accuracy"][0]
    assert width(large) < width(small)


def test_score_classify_counts():
    labels, t, p = _fake(n=100)
    exs = [Example(id=str(i), input="x", target=y) for i, y in enumerate(t)]
    preds = [Prediction(example_id=str(i), output=y, valid=True, latency_s=0.01 * (i % 10 + 1),
                        prompt_tokens=10, completion_tokens=2) for i, y in enumerate(p)]
    r = score_classify("c", labels, exs, preds, valid_rate=0.5)
    assert r.metrics["accuracy"] == sum(a == b for a, b in zip(t, p)) / 100
    assert r.metrics["accuracy_ci_low"] <= r.metrics["accuracy"] <= r.metrics["accuracy_ci_high"]
    assert sum(map(sum, r.confusion)) == 100
    assert sum(v["support"] for v in r.per_class.values()) == 100
    assert r.metrics["valid_rate"] == 0.5
    assert abs(r.metrics["latency_p50_s"] - 0.055) < 1e-9
