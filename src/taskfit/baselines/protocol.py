"""Every system that answers the task is a :class:`Predictor`.

Prompt-only, few-shot, RAG, a classical model, an endpoint, a fine-tuned adapter: evaluation
scores them all through this one protocol, on the same held-out examples, with the same scorer,
so it cannot tell them apart and the comparison is honest by construction.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Protocol, runtime_checkable

from taskfit.records import Example, Prediction


@runtime_checkable
class Predictor(Protocol):
    name: str

    def predict(self, examples: Iterable[Example]) -> Iterator[Prediction]:
        """Yield one prediction per example, in order, as soon as each is made."""
        ...
