"""The tokens every prompt of a task begins with (chat header, system prompt, user header) are read
once per model and copied into each batch's cache: the same answers as reading every prompt whole,
for generation and for label scoring, with fewer tokens fed to the model."""

from __future__ import annotations

import pytest

from taskfit.baselines import LabelScoringPredictor
from taskfit.baselines.model import prompt_ids
from taskfit.decoding import Sampling, decode_batch
from taskfit.models.prefix import PrefixCache
from taskfit.records import Example

TEXTS = ["The app crashes when I open reports", "refund my order", "invoice",
         "I cannot log in to my account since the update last Tuesday, please help"]


def _prompts(tiny, task):
    return [prompt_ids(tiny.tokenizer, task, Example(id=str(i), input=t, target=""), 256, 8)
            for i, t in enumerate(TEXTS)]


def test_the_prefix_is_the_system_prompt_and_headers_every_prompt_begins_with(tiny, classify_task):
    prefix = PrefixCache.for_task(tiny.tokenizer, classify_task)
    text = tiny.tokenizer.decode(prefix.ids)
    assert classify_task.system_text in text and not any(t in text for t in TEXTS)
    prompts = _prompts(tiny, classify_task)
    assert prefix.length_for(prompts) == len(prefix.ids) > 0
    # a prompt that does not begin with it (another system prompt) is read whole
    other = prompt_ids(tiny.tokenizer, classify_task, Example(id="x", input="hi", target="", system="Other."), 256, 8)
    assert prefix.length_for(prompts + [other]) == 0


def test_decoding_from_the_prefix_cache_gives_what_reading_each_prompt_whole_gives(peaked, classify_task):
    tiny = peaked
    prompts = _prompts(tiny, classify_task)
    # sampled (seeded), so that the tokens follow the probabilities and not only their argmax
    samplings = [Sampling(max_tokens=n, temperature=1.0, seed=i) for i, n in enumerate([12, 5, 12, 9])]
    whole = decode_batch(tiny.model, tiny.tokenizer, prompts, samplings)
    prefix = PrefixCache.for_task(tiny.tokenizer, classify_task)
    for rows in (slice(None), slice(1, 2)):  # a batch, and a lone request
        got = decode_batch(tiny.model, tiny.tokenizer, prompts[rows], samplings[rows], prefix=prefix)
        want = whole[rows]
        assert [g.text for g in got] == [g.text for g in want]
        assert [(g.prompt_tokens, g.completion_tokens) for g in got] == [(g.prompt_tokens, g.completion_tokens)
                                                                         for g in want]
    assert prefix.uses == 2  # the prefix was read once, then copied for both batches


def test_label_scoring_from_the_prefix_cache_reads_fewer_tokens_for_the_same_scores(peaked, classify_task):
    tiny = peaked
    scorer = LabelScoringPredictor("base", tiny.model, tiny.tokenizer, classify_task, max_length=256, tolerance=0.0)
    prompts = [scorer.prompt_ids(Example(id=str(i), input=t, target="")) for i, t in enumerate(TEXTS)]
    n = len(scorer.prefix.ids)
    for rows in ([p] for p in prompts):  # one at a time: a lone request reads only its own tokens
        cached, whole = {}, {}
        with_prefix = scorer.search(rows, cached)
        scorer_prefix, scorer.prefix = scorer.prefix, None
        without = scorer.search(rows, whole)
        scorer.prefix = scorer_prefix
        assert whole["tokens"] - cached["tokens"] == n
        a, b = with_prefix[0], without[0]
        assert sorted(a.totals) == sorted(b.totals)
        for label, total in b.totals.items():
            assert a.totals[label] == pytest.approx(total, abs=1e-4)
