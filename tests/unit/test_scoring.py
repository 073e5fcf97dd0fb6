"""Label scoring: the cached, batched computation equals a plain full-sequence computation."""

from __future__ import annotations

import math

import torch

from taskfit.baselines import LabelScoringPredictor
from taskfit.records import Example


def _naive_scores(model, prompt, completions):
    out = []
    for c in completions:
        ids = torch.tensor([prompt + c])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        out.append(sum(float(logp[len(prompt) + j - 1, tok]) for j, tok in enumerate(c)))
    return out


def test_best_first_label_scores_are_exact_or_a_bound_that_cannot_win(tiny, classify_task):
    scorer = LabelScoringPredictor("base", tiny.model, tiny.tokenizer, classify_task, max_length=256)
    assert len({len(c) for c in scorer.completions}) > 1  # labels of different token lengths
    exact = pruned = 0
    for text in ["The app crashes when I open reports", "refund my order", "invoice", "hello there",
                 "I cannot log in", "where is my parcel"]:
        prompt = scorer.prompt_ids(Example(id="1", input=text, target=""))
        fast = scorer.scores(prompt)
        slow = _naive_scores(tiny.model, prompt, scorer.completions)
        best = max(range(len(fast)), key=fast.__getitem__)
        assert best == max(range(len(slow)), key=slow.__getitem__)  # the same answer as scoring all
        for a, b in zip(fast, slow):
            if math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4):
                exact += 1
            else:  # skipped: its bound is above its true score and below the winner
                assert b < a < fast[best]
                pruned += 1
    assert exact > 0


def test_predictions_are_valid_labels_with_confidence(tiny, classify_task):
    scorer = LabelScoringPredictor("base", tiny.model, tiny.tokenizer, classify_task, max_length=256)
    exs = [Example(id=str(i), input=f"ticket number {i}", target="billing") for i in range(5)]
    preds = list(scorer.predict(exs))
    assert [p.example_id for p in preds] == [e.id for e in exs]
    for p in preds:
        assert p.output in classify_task.labels and p.valid
        assert 0.0 < p.confidence <= 1.0 and p.prompt_tokens > 0 and p.latency_s > 0
