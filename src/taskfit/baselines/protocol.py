"""Every system that answers the task is a :class:`Predictor`.

Prompt-only, few-shot, RAG, a classical model, an endpoint, a fine-tuned adapter: evaluation
scores them all through this one protocol, on the same held-out examples, with the same scorer,
so it cannot tell them apart and the comparison is honest by construction.

A classifier built on a language model is a :class:`LabelScorer`: evaluation and the server ask
the same scorer (label scoring on transformers or llama.cpp, or a classification head) with the
same prompt ids for the best label and its confidence, several prompts at a time.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Protocol, Sequence, runtime_checkable

from taskfit.records import Example, LabelChoice, Prediction


@runtime_checkable
class Predictor(Protocol):
    name: str

    def predict(self, examples: Iterable[Example]) -> Iterator[Prediction]:
        """Yield one prediction per example, in order, as soon as each is made."""
        ...


def by_prompt_length(predictor: Any, examples: Sequence[Example]) -> list[Example]:
    """``examples`` in the order a local model reading ``predictor.batch_size`` rows a pass
    should answer them in, for a caller that takes answers in any order (evaluation's
    ``order``): by prompt length, so a batch's padded pass reads little padding; as given when
    rows are answered one at a time. Each prompt is rendered to be measured, then again when
    answered (a millisecond or two; with a retrieval for few-shot, about 1% of answering it)."""
    if predictor.batch_size <= 1:
        return list(examples)
    return sorted(examples, key=lambda ex: len(predictor.prompt_ids(ex)))


@runtime_checkable
class LabelScorer(Protocol):
    """Picks a classify task's label after a prompt by the labels' likelihood (label scoring,
    not free text)."""

    completions: Sequence[list[int]]  # each label's answer tokens, end-of-turn token included

    def prompt_ids(self, example: Example) -> list[int]:
        """The prompt a label is scored after: the example rendered and cut as in training."""
        ...

    def choose(self, prompts: Sequence[list[int]]) -> list[LabelChoice]:
        """For each prompt, the label whose completion is likeliest after it (exactly the argmax
        of every label's log-probability) and its confidence (a softmax over the labels'
        log-probabilities)."""
        ...
