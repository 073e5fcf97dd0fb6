"""A model with a classification head (``train.classify_head``) as a candidate and as the server's
label scorer.

It reads each row once (:func:`taskfit.rendering.classifier_ids`: the input text alone) and gives
a softmax over every label at once, so a label costs nothing more to consider and the confidence
is a full distribution, not a bound. It writes no tokens: its answer is the label itself.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator, Sequence

from taskfit.baselines.label_tree import label_choice
from taskfit.baselines.protocol import by_prompt_length
from taskfit.records import in_batches
from taskfit.errors import DataError
from taskfit.models.head import Head, head_logits
from taskfit.records import Example, LabelChoice, Prediction
from taskfit.rendering import classifier_ids


class HeadClassifier:
    """Classify by a head over the text's final hidden states (their mean, or the last token's:
    ``head.pooling``): a :class:`~taskfit.baselines.protocol.Predictor` (``batch_size`` rows per
    pass) and a :class:`~taskfit.baselines.protocol.LabelScorer` whose scores are the labels'
    log-probabilities, so the server answers it, confidence and fallback included, as it answers a
    label-scoring adapter."""

    def __init__(self, name: str, model: Any, tokenizer: Any, head: Head, batch_size: int = 1):
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.labels = list(head.labels)
        self.max_length = head.max_length
        self.pooling = head.pooling
        self.batch_size = max(1, batch_size)
        self.completions: list[list[int]] = [[] for _ in self.labels]  # a head writes no tokens

    def prompt_ids(self, example: Example) -> list[int]:
        try:
            return classifier_ids(self.tokenizer, example, self.max_length)
        except ValueError as exc:
            raise DataError(f"{example.source or f'row id {example.id}'}: {exc}") from None

    def log_probs(self, prompts: Sequence[list[int]]) -> Any:
        """Each prompt's log-probability of every label, [len(prompts), labels], in one pass."""
        import torch

        with torch.inference_mode():
            logits = head_logits(self.model, prompts, self.tokenizer.pad_token_id, self.pooling)
            return torch.log_softmax(logits, dim=-1)

    def scores(self, prompt: list[int]) -> list[float]:
        return self.log_probs([prompt])[0].tolist()

    def choose(self, prompts: Sequence[list[int]]) -> list[LabelChoice]:
        return [label_choice(totals) for totals in self.log_probs(prompts).tolist()]

    def order(self, examples: Sequence[Example]) -> list[Example]:
        """The order to answer ``examples`` in (:func:`~taskfit.baselines.protocol.by_prompt_length`)."""
        return by_prompt_length(self, examples)

    def predict(self, examples: Iterable[Example]) -> Iterator[Prediction]:
        for batch in in_batches(examples, self.batch_size):
            yield from self._batch(batch)

    def _batch(self, examples: list[Example]) -> Iterator[Prediction]:
        start = time.perf_counter()
        prompts = [self.prompt_ids(ex) for ex in examples]
        choices = self.choose(prompts)
        share = (time.perf_counter() - start) / len(examples)  # the batch's time, shared by its rows
        for ex, prompt, c in zip(examples, prompts, choices):
            yield Prediction(example_id=ex.id, output=self.labels[c.best], valid=True, latency_s=share,
                             prompt_tokens=len(prompt), completion_tokens=0, confidence=c.confidence)
