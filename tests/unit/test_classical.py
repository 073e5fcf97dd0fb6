"""The classical baselines' fitting: cross-validation folds that survive rare classes, C chosen on
the training rows, temperature scaling that recovers a known temperature, confidences that let one
fallback threshold work on a many-label task, and the saved model's key."""

from __future__ import annotations

import random

import numpy as np
import pytest

from taskfit.baselines.classical import (RECIPES, ClassicalPredictor, cv_splits, fit_classical, fit_temperature,
                                         load_classical, save_classical)
from taskfit.errors import DataError
from taskfit.records import Example
from taskfit.tasks.classify import expected_calibration_error, with_fallback

WORDS = "please could you help me with my the a an about this that today now again".split()


def _keyword_rows(n_labels: int, per_label: int, seed: int = 0, noise: float = 0.1) -> list[Example]:
    """Each label has its own keyword among shared filler words; a share ``noise`` of the rows
    carry another label's keyword (as real data is never perfectly separable)."""
    rng = random.Random(seed)
    rows = []
    for lab in range(n_labels):
        for i in range(per_label):
            keyword = lab if rng.random() > noise else rng.randrange(n_labels)
            words = rng.sample(WORDS, 4) + [f"topic{keyword}word"]
            rng.shuffle(words)
            rows.append(Example(id=f"{lab}-{i}", input=" ".join(words), target=f"label{lab}"))
    return rows


def test_cv_folds_keep_rare_classes_in_every_training_part():
    y = ["a"] * 12 + ["b"] * 10 + ["c"] * 3 + ["d"] * 1
    splits = cv_splits(y, seed=0)
    assert len(splits) == 5  # min(5, the median class: 6)
    rare = {i for i, lab in enumerate(y) if lab in ("c", "d")}
    held = np.concatenate([te for _, te in splits])
    assert sorted(held) == [i for i, lab in enumerate(y) if lab in ("a", "b")]  # a partition of a and b
    for tr, te in splits:
        assert not set(tr) & set(te) and rare <= set(tr)
        assert {y[i] for i in tr} == {"a", "b", "c", "d"} and {y[i] for i in te} == {"a", "b"}
    assert len(cv_splits(["a", "a", "b", "b", "c"], seed=0)) == 2  # the median class has 2 rows
    assert cv_splits(["a", "b", "c", "d"], seed=0) == []  # nothing can be held out


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_with():
    rng = np.random.default_rng(0)
    scores = rng.normal(scale=4.0, size=(4000, 6))
    p = np.exp(scores / 2.5)
    p /= p.sum(1, keepdims=True)
    target = np.array([rng.choice(6, p=row) for row in p])
    assert fit_temperature(scores, target) == pytest.approx(2.5, rel=0.1)


def test_c_is_chosen_by_cross_validation_and_confidence_suits_one_threshold_over_many_labels():
    train = _keyword_rows(n_labels=30, per_label=8)
    model = fit_classical(RECIPES["tfidf-logreg"], train, seed=0)
    assert model.folds == 5 and set(model.cv_accuracy) == set(RECIPES["tfidf-logreg"].grid)
    assert model.c == max(model.cv_accuracy, key=lambda c: (model.cv_accuracy[c], -c))
    assert model.rows == 240 and model.temperature > 0
    predictor = ClassicalPredictor(model)
    # Calibrated: on fresh rows of the same kind, the confidence says how often it is right.
    fresh = _keyword_rows(n_labels=30, per_label=10, seed=1)
    answers = [predictor.answer(ex.input) for ex in fresh]
    right = [label == ex.target for (label, _), ex in zip(answers, fresh)]
    assert expected_calibration_error([c for _, c in answers], right) < 0.1
    # Thirty labels: the rows it knows are answered with confidence above one threshold, and what
    # it has never seen falls below it and goes to the fallback.
    for lab in (0, 7, 29):
        label, confidence = predictor.answer(f"could you help with topic{lab}word today")
        assert label == f"label{lab}" and confidence > 0.5
        assert with_fallback(label, confidence, 0.5, "needs_human") == (label, False)
    label, confidence = predictor.answer("zebra quantum marmalade")
    assert confidence < 0.5 and with_fallback(label, confidence, 0.5, "needs_human") == ("needs_human", True)


def test_a_single_class_is_refused_and_a_saved_model_is_only_reused_under_its_key(tmp_path):
    with pytest.raises(DataError, match="1 class"):
        fit_classical(RECIPES["tfidf-logreg"], [Example(id="1", input="x", target="a")] * 3)
    model = fit_classical(RECIPES["tfidf-logreg"], _keyword_rows(3, 5), seed=0)
    save_classical(tmp_path, model, "key-1", {"train_fingerprint": "abc"})
    again = load_classical(tmp_path, "key-1")
    assert again.classes == model.classes and again.c == model.c and again.temperature == model.temperature
    assert np.array_equal(again.proba(["topic1word please"]), model.proba(["topic1word please"]))
    assert load_classical(tmp_path, "key-2") is None  # fitted on other rows or by another definition
