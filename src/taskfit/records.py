"""Frozen records that cross module boundaries. Dicts appear only at I/O edges."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Provenance:
    """What every training record carries besides its content, keyword-only and last in the
    constructor: ``system`` is set only when the source row carried its own system prompt
    (otherwise the task's applies); ``source`` is ``"file:line"`` so errors can point at it."""

    system: str | None = field(default=None, kw_only=True)
    source: str = field(default="", kw_only=True)
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False, kw_only=True)


@dataclass(frozen=True)
class Example(Provenance):
    """One task example: the user's input, the expected output, and where it came from."""

    id: str
    input: str
    target: str
    context: str | None = None  # qa: the passage the answer must be grounded in


@dataclass(frozen=True)
class PreferencePair(Provenance):
    """A prompt with a preferred (``chosen``) and a dispreferred (``rejected``) answer, for DPO."""

    id: str
    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class AnswerParts:
    """A row's answer as the data scan compares it with a look-alike's (a row whose input is
    near-identical; see :mod:`taskfit.data.lookalike`). ``fixed`` parts (a label, each field of a
    record, an answer span) are compared by value, and each says whether its value is written in
    the row's own input; ``free`` texts (a reply) are compared by similarity.

    Two look-alikes are *copies* when every fixed part is equal and every free text is
    near-identical; *distinct examples* when each fixed part that differs is written in its own
    row's input (and the inputs' words differ); a *conflict* otherwise.
    """

    fixed: tuple[tuple[str, str, bool], ...] = ()  # (part name, normalised value, written in the input)
    free: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prediction:
    """What one candidate answered for one example, with its cost.

    ``valid`` says whether ``output`` is a well-formed answer for the task (a label of the
    taxonomy for ``classify``); ``confidence`` is the candidate's probability for it, when known.
    """

    example_id: str
    output: str
    valid: bool
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    confidence: float | None = None
    details: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # details: what else the candidate reports, e.g. the retrieved chunks a RAG answer cites


@dataclass(frozen=True)
class LabelChoice:
    """A label scorer's answer for one prompt: the likeliest label and the model's confidence in
    it (its share of the labels' probability: a softmax over the labels' log-probabilities)."""

    best: int  # the label's index in task.labels
    confidence: float


@dataclass(frozen=True)
class EvalResult:
    """The scores of one candidate on one held-out split.

    ``per_example`` holds one score in [0, 1] per example, in the split's order (1/0 for a right
    or wrong label; a field or token F1 otherwise): the paired tests of ``compare`` read it.
    ``errors`` maps an error bucket (``confusable: billing -> refund``, ``invented field``...) to
    up to a few example misses, and ``error_counts`` counts every miss per bucket.
    ``per_class`` maps a label (classify: precision, recall, f1, support) or a schema field
    (extract, dotted for nested objects: support, accuracy, precision, recall, f1, missing,
    invented, wrong; see ``taskfit.tasks.extract.per_field_scores``) to its figures.
    """

    candidate: str
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    n: int = 0
    kind: str = "classify"
    per_example: list[float] = field(default_factory=list)
    # extract: [fields right, fields answered, gold fields] per example, the parts of the pooled
    # field F1, so that the paired test compares what the scorecard shows (not a mean per record)
    per_example_counts: list[list[int]] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    curves: dict[str, list[list[float]]] = field(default_factory=dict)  # e.g. coverage: [threshold, coverage, accuracy]


@dataclass(frozen=True)
class ForgettingResult:
    """What a fine-tune cost outside its task (``eval.forgetting``): the base model and the
    fine-tuned one on the general probe set, item by item, in the probe's order.

    Each item is a passage, a question and its gold answer, rendered with the model's chat
    template and read once (teacher-forced). ``*_right`` is 1 when every token of the gold answer
    (the end-of-turn token left out) is the model's greedy choice given the tokens before (greedy
    decoding would write the answer), else 0; ``*_loglik`` the mean log-probability of those tokens
    (nats); ``kl`` the mean KL(fine-tuned ‖ base) of the two next-token distributions at those
    positions (nats per token). ``skipped`` says why a fine-tuned candidate was not measured (then
    the lists are empty)."""

    candidate: str
    probe: str  # the probe set's source, in words
    licence: str
    n: int = 0
    base_right: list[float] = field(default_factory=list)
    tuned_right: list[float] = field(default_factory=list)
    base_loglik: list[float] = field(default_factory=list)
    tuned_loglik: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    skipped: str = ""


def in_batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter), read as they come, so that what
    answers or checks a batch at a time still yields each batch's results at once."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
