"""What a task kind is, in one place: the :class:`Task` protocol and the registry of kinds.

Everything in taskfit that depends on the kind of task (classify, extract, qa, generate, or a
kind a user adds) asks the kind's :class:`Task` object: how an answer is parsed and whether it is
valid, how it is scored and which metric decides, which columns the scorecard shows, how much
data is enough, which baselines apply, how decoding is constrained, what a hosted model must be
told, and what ``taskfit init`` writes. Adding a kind is one module with one such object, and
one call to :func:`register`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence, runtime_checkable

from taskfit.records import AnswerParts, EvalResult, Example, Prediction

# The baselines a kind can name (taskfit.workflows.evaluate builds them).
PROMPT_ONLY, FEW_SHOT, RAG, CLASSICAL, ENDPOINT = "prompt-only", "few-shot", "rag", "tfidf-logreg", "endpoint"


@dataclass(frozen=True)
class Column:
    """One scorecard column: the metric, its header, and whether it is a share (shown as %)."""

    metric: str
    header: str
    share: bool = True


@dataclass(frozen=True)
class Scoring:
    """How a kind's answers are judged on a scorecard: the metric the verdict is decided on (a
    share, higher is better), the kind's columns (main metric first), the other shares a threshold
    may name besides the share columns, those whose thresholds are maxima, and the paired test
    between two candidates (right/wrong rows: McNemar; a per-row score: a paired bootstrap)."""

    main_metric: str
    columns: tuple[Column, ...]
    other_metrics: frozenset[str] = frozenset()
    lower_is_better: frozenset[str] = frozenset()
    paired_test: Literal["mcnemar", "bootstrap"] = "bootstrap"

    @property
    def metrics(self) -> frozenset[str]:
        """Every metric a threshold may name: the share columns' and the others."""
        return frozenset(c.metric for c in self.columns if c.share) | self.other_metrics


@runtime_checkable
class Task(Protocol):
    """One task kind. Attributes are data; methods take the project's ``TaskSpec`` (``spec``)."""

    kind: str  # the value of task.kind in taskfit.yaml
    description: str  # one line for `taskfit init --help` and the docs
    scoring: Scoring  # the main metric, scorecard columns, thresholdable metrics, paired test
    baselines: Sequence[str]  # which baselines apply, in the order they are run
    size_guidance: tuple[int, int]  # labelled rows: the least to try, and a comfortable amount
    scores_labels: bool  # answered by scoring a fixed set of answers (confidence, fallback)
    free_decoding: bool  # decoded under a constraint: also measured unconstrained on a sample
    style_classifier: bool  # scored with a style classifier (references against base-model replies)
    takes_context: bool  # each row (and each served request) carries a passage to answer from
    validation_side: str | None  # a second figure shown beside the main one during training
    error_buckets: Sequence[str]  # the kinds of miss the error analysis sorts answers into
    template: str  # the task section `taskfit init` writes (commented YAML)
    thresholds: Mapping[str, float]  # the acceptance thresholds `taskfit init` writes

    def check_spec(self, spec: Any) -> None:
        """Raise ValueError naming the key when ``spec`` lacks what the kind needs."""

    def target_text(self, spec: Any, value: Any) -> str:
        """A data row's answer value (a string, a JSON object, None) as the answer text."""

    def answer_check(self, spec: Any) -> Callable[[Example], None]:
        """A function (built once per data scan) that raises ValueError("answer: ...") when a
        row's answer is not valid for the task."""

    def answer_parts(self, spec: Any) -> Callable[[Example], AnswerParts]:
        """A function (built once per data scan) giving what a row's answer is made of, for
        telling a look-alike row that copies it from a distinct example and from a conflict
        (:class:`~taskfit.records.AnswerParts`)."""

    def parse(self, spec: Any, text: str) -> tuple[str, bool]:
        """A raw answer → (the answer as scored, whether it is well-formed for the task)."""

    def score(self, spec: Any, evaluation: Any, candidate: str, examples: Sequence[Example],
              predictions: Sequence[Prediction], n_boot: int, style: Any) -> EvalResult:
        """Score ``predictions`` (in the examples' order) with the kind's metrics."""

    def grammar(self, spec: Any) -> str | None:
        """The llguidance grammar answers are decoded under (None: free text)."""

    def answer_budget(self, spec: Any, evaluation: Any, tokenizer: Any) -> int:
        """Tokens a generated answer may take."""

    def instruction(self, spec: Any) -> str:
        """What a hosted model must be told that a fine-tuned one learned ('' for nothing)."""


def plain_text(value: Any) -> str:
    """A data row's answer as text: a non-empty string (what most kinds take as is)."""
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise ValueError("empty")
    return value


_WORD = re.compile(r"\w+")


def words(text: str) -> str:
    """The words of ``text`` (letters and digits, case folded), one space apart: what
    :func:`written_in` compares, so spacing and punctuation ("12.50" / "12,50", "NO.1,JALAN" /
    "No 1 Jalan") do not matter."""
    return " ".join(_WORD.findall(text.casefold()))


def written_in(value: str, text_words: str) -> bool:
    """Whether ``value``'s words appear, one after the other, in ``text_words`` (from :func:`words`)."""
    value_words = words(value)
    return bool(value_words) and f" {value_words} " in f" {text_words} "


def answer_as_label(spec: Any) -> Callable[[Example], AnswerParts]:
    """The answer as one part that is never written in the input (a label): a look-alike with
    another answer is a conflict. What a kind compares by when it says nothing else."""
    return lambda ex: AnswerParts(fixed=(("answer", ex.target, False),))


class TaskDefaults:
    """What most task kinds share, for a kind's class to inherit instead of restating: free-text
    answers scored per row, the language-model baselines, no context, no constraint. A kind
    implements :class:`Task` whether it takes these or states everything itself."""

    baselines: Sequence[str] = (PROMPT_ONLY, FEW_SHOT, ENDPOINT)
    scores_labels = False
    free_decoding = False
    style_classifier = False
    takes_context = False
    validation_side: str | None = None

    def check_spec(self, spec: Any) -> None:
        pass

    def target_text(self, spec: Any, value: Any) -> str:
        return plain_text(value)

    def answer_check(self, spec: Any) -> Callable[[Example], None]:
        return lambda ex: None

    def answer_parts(self, spec: Any) -> Callable[[Example], AnswerParts]:
        return answer_as_label(spec)

    def grammar(self, spec: Any) -> str | None:
        return None

    def answer_budget(self, spec: Any, evaluation: Any, tokenizer: Any) -> int:
        return evaluation.max_new_tokens

    def instruction(self, spec: Any) -> str:
        return ""


class TaskRegistry:
    """The task kinds taskfit knows, by name."""

    def __init__(self, tasks: Sequence[Task] = ()):
        self._tasks: dict[str, Task] = {t.kind: t for t in tasks}

    def register(self, task: Task) -> Task:
        if not isinstance(task, Task):
            raise TypeError(f"{task!r} does not implement taskfit.tasks.base.Task")
        self._tasks[task.kind] = task
        return task

    def unregister(self, kind: str) -> None:
        self._tasks.pop(kind, None)

    def get(self, kind: str) -> Task:
        try:
            return self._tasks[kind]
        except KeyError:
            raise ValueError(f"task.kind: got {kind!r}; allowed: {', '.join(self._tasks)}") from None

    def kinds(self) -> list[str]:
        return list(self._tasks)
