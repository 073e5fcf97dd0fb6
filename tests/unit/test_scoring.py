"""Label scoring: the prefix-tree search over a batch's cache gives what scoring every label's full
completion after the prompt, one forward pass each, gives."""

from __future__ import annotations

import math

import pytest
import torch

from taskfit.baselines import LabelScoringPredictor
from taskfit.baselines.label_tree import label_choice
from taskfit.records import Example

# Labels that share prefixes (billing / billing_dispute / billing_error), some the start of
# others, of different token lengths: the tree has branches, chains and inner nodes that end a label.
LABELS = ["billing", "bill", "billing_dispute", "billing_error", "shipping", "shipping_delay", "ship",
          "technical_issue", "account", "refund", "refund_request", "refunds", "other"]
TEXTS = ["The app crashes when I open reports", "refund my order", "invoice", "hello there",
         "I cannot log in to my account since the update last Tuesday, please help", "where is my parcel"]


def _naive_scores(model, prompt, completions):
    out = []
    for c in completions:
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + c])).logits[0].float(), dim=-1)
        out.append(sum(float(logp[len(prompt) + j - 1, tok]) for j, tok in enumerate(c)))
    return out


@pytest.fixture()
def shared_prefixes(classify_task):
    return classify_task.model_copy(update={"labels": LABELS})


def _scorer(tiny, task, **kw):
    return LabelScoringPredictor("base", tiny.model, tiny.tokenizer, task, max_length=256, **kw)


def test_the_labels_share_prefixes_and_differ_in_length(tiny, shared_prefixes):
    scorer = _scorer(tiny, shared_prefixes)
    assert len({len(c) for c in scorer.completions}) > 2
    billing, dispute, error = (scorer.completions[LABELS.index(n)] for n in ("billing", "billing_dispute", "billing_error"))
    assert dispute[:len(billing) - 1] == billing[:-1]  # "billing" ends where "billing_dispute" goes on
    assert dispute[:len(billing)] == error[:len(billing)] and dispute != error  # and branches after


def test_with_no_tolerance_every_label_is_scored_exactly_in_a_batch_of_prompts(tiny, shared_prefixes):
    scorer = _scorer(tiny, shared_prefixes, tolerance=0.0)
    prompts = [scorer.prompt_ids(Example(id=str(i), input=t, target="")) for i, t in enumerate(TEXTS)]
    assert len({len(p) for p in prompts}) > 1  # different lengths: left padding is exercised
    for prompt, found in zip(prompts, scorer.search(prompts)):
        slow = _naive_scores(tiny.model, prompt, scorer.completions)
        assert sorted(found.totals) == list(range(len(LABELS))) and found.unread == 0.0
        for i, s in enumerate(slow):
            assert found.totals[i] == pytest.approx(s, abs=1e-4)


@pytest.mark.parametrize("tolerance", [0.01, 0.3])
def test_best_first_gives_the_full_scoring_argmax_and_confidence_within_tolerance(tiny, shared_prefixes, tolerance):
    scorer = _scorer(tiny, shared_prefixes, tolerance=tolerance)
    prompts = [scorer.prompt_ids(Example(id=str(i), input=t, target="")) for i, t in enumerate(TEXTS)]
    searched = scorer.search(prompts)
    skipped = 0
    for prompt, found, choice in zip(prompts, searched, scorer.choose(prompts)):
        full = label_choice(_naive_scores(tiny.model, prompt, scorer.completions))
        assert choice.best == full.best
        assert full.confidence - tolerance - 1e-6 <= choice.confidence <= full.confidence + 1e-6
        skipped += len(LABELS) - len(found.totals)
    if tolerance == 0.3:
        assert skipped > 0  # some labels were never read, and it did not change the answer


def test_batched_predictions_equal_one_at_a_time(tiny, shared_prefixes):
    exs = [Example(id=str(i), input=t, target="billing") for i, t in enumerate(TEXTS)]
    alone = list(_scorer(tiny, shared_prefixes).predict(exs))
    together = list(_scorer(tiny, shared_prefixes, batch_size=4).predict(exs))
    assert [p.example_id for p in together] == [e.id for e in exs]
    assert [p.output for p in together] == [p.output for p in alone]
    for a, b in zip(alone, together):
        assert b.confidence == pytest.approx(a.confidence, abs=1e-4)
        assert (b.prompt_tokens, b.completion_tokens) == (a.prompt_tokens, a.completion_tokens)
    # A batch's time is shared among its rows: the first four rows cost the same.
    assert len({p.latency_s for p in together[:4]}) == 1 and together[4].latency_s > 0


def test_predictions_are_valid_labels_with_confidence(tiny, classify_task):
    scorer = _scorer(tiny, classify_task)
    exs = [Example(id=str(i), input=f"ticket number {i}", target="billing") for i in range(5)]
    preds = list(scorer.predict(exs))
    assert [p.example_id for p in preds] == [e.id for e in exs]
    for p in preds:
        assert p.output in classify_task.labels and p.valid
        assert 0.0 < p.confidence <= 1.0 and p.prompt_tokens > 0 and p.latency_s > 0


def test_label_choice_is_a_softmax_over_the_labels():
    choice = label_choice([math.log(0.2), math.log(0.6), math.log(0.2)])
    assert choice.best == 1 and choice.confidence == pytest.approx(0.6)


@pytest.mark.parametrize("tolerance", [0.0, 0.01])
def test_rows_that_read_different_numbers_of_nodes_share_a_step(tiny, classify_task, tolerance):
    """More first tokens than a step reads, with different numbers of labels below each: each row
    reads its own likeliest nodes first, so in a later step some rows have fewer nodes left to read
    than others read (full scoring of clinc150's 151 intents met this on the embedded model). Each
    row still gets the argmax of scoring every label whole, and with no tolerance every score."""
    heads = ["alarm", "balance", "calendar", "damaged", "exchange", "flight", "gas", "hotel", "insurance", "jump",
             "kitchen", "lost", "meeting", "nutrition", "oil", "pay", "quiz", "recipe", "spelling", "timer",
             "uber", "vaccines", "weather", "yes", "zodiac", "account", "bill", "car", "direct", "expiration",
             "food", "greeting", "how", "income", "jokes", "key", "language", "measurement", "next", "order"]
    tails = ["", "_balance", "_due", "_history", "_status"]
    labels = [h + t for k, h in enumerate(heads) for t in tails[: 1 + k % len(tails)]]
    task = classify_task.model_copy(update={"labels": labels})
    scorer = _scorer(tiny, task, tolerance=tolerance, batch_size=len(TEXTS) * 2)
    prompts = [scorer.prompt_ids(Example(id=str(i), input=t, target="")) for i, t in enumerate(TEXTS * 2)]
    for prompt, found in zip(prompts, scorer.search(prompts)):
        slow = _naive_scores(tiny.model, prompt, scorer.completions)
        assert found.choice().best == label_choice(slow).best
        if tolerance == 0.0:
            assert [found.totals[i] for i in range(len(labels))] == pytest.approx(slow, abs=1e-4)
