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


def test_cached_label_scores_match_full_forward(tiny, classify_task):
    scorer = LabelScoringPredictor("base", tiny.model, tiny.tokenizer, classify_task, max_length=256)
    ex = Example(id="1", input="The app crashes when I open reports", target="technical_issue")
    prompt = scorer.prompt_ids(ex)
    fast = scorer.scores(prompt)
    slow = _naive_scores(tiny.model, prompt, scorer.completions)
    assert len({len(c) for c in scorer.completions}) > 1  # labels of different token lengths
    for a, b in zip(fast, slow):
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4)


def test_predictions_are_valid_labels_with_confidence(tiny, classify_task):
    scorer = LabelScoringPredictor("base", tiny.model, tiny.tokenizer, classify_task, max_length=256)
    exs = [Example(id=str(i), input=f"ticket number {i}", target="billing") for i in range(5)]
    preds = list(scorer.predict(exs))
    assert [p.example_id for p in preds] == [e.id for e in exs]
    for p in preds:
        assert p.output in classify_task.labels and p.valid
        assert 0.0 < p.confidence <= 1.0 and p.prompt_tokens > 0 and p.latency_s > 0
