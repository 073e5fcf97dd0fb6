"""What a task kind is, in one place: the :class:`Task` protocol and the registry of kinds.

Everything in taskfit that depends on the kind of task (classify, extract, qa, generate, or a
kind a user adds) asks the kind's :class:`Task` object: how an answer is parsed and whether it is
valid, how it is scored and which metric decides, which columns the scorecard shows, how much
data is enough, which baselines apply, how decoding is constrained, what a hosted model must be
told, and what ``taskfit init`` writes. Adding a kind is one module with one such object, and
one call to :func:`register`.

Five members are optional, for kinds written before them: :meth:`TaskDefaults.answer_values`,
:meth:`TaskDefaults.with_answer_values` and :meth:`TaskDefaults.answer_fields` say where personal
data redaction may touch an answer, :meth:`TaskDefaults.answer_schema` what an answer is as JSON,
for drafting synthetic examples, and ``promptfoo_asserts`` what an external evaluation harness
checks of an answer (reach them through the functions of the same names here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence, runtime_checkable

from taskfit.records import AnswerParts, EvalResult, Example, Prediction

# The baselines a kind can name (taskfit.workflows.evaluate builds them); CLASSICAL and EMBEDDINGS
# are the classical models of taskfit.baselines.classical.
PROMPT_ONLY, FEW_SHOT, RAG, ENDPOINT = "prompt-only", "few-shot", "rag", "endpoint"
CLASSICAL, EMBEDDINGS = "tfidf-logreg", "embeddings-logreg"


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
    between two candidates (right/wrong rows: McNemar; a per-row score: a paired permutation test).
    ``harms`` are shares of the held-out rows that went wrong in a way the main metric does not
    weigh (qa's unsupported answers): a cheaper candidate tied on the main metric is not kept over
    one with significantly fewer of them."""

    main_metric: str
    columns: tuple[Column, ...]
    other_metrics: frozenset[str] = frozenset()
    lower_is_better: frozenset[str] = frozenset()
    paired_test: Literal["mcnemar", "bootstrap"] = "bootstrap"
    harms: frozenset[str] = frozenset()

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
    # Optional (TaskDefaults has it): ``train``, the train.* settings `taskfit init` writes for the
    # kind where they were measured better than the template's. Optional too: ``answer_spelling``
    # (see :func:`answer_spelling`).

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


ANSWER = "answer"  # the field name of a whole-text answer (qa, generate) in data.privacy.keep_fields


@dataclass(frozen=True)
class AnswerValue:
    """One value of an answer as personal-data redaction sees it (see
    :mod:`taskfit.data.redaction`): the field it fills and its text as the answer prints it."""

    field: str  # extract: the field's name, dotted for nested objects; a whole-text answer: "answer"
    text: str
    editable: bool = True  # False: no placeholder can stand in for it (a JSON number) and it stays


def answer_values(task: "Task", spec: Any, target: str) -> list[AnswerValue]:
    """The values of ``target`` that redaction must treat together with the input, in order; the
    kind's own ``answer_values`` when it has one, else the whole answer (none when the kind scores
    labels: a label is never personal data)."""
    own = getattr(task, "answer_values", None)
    if own is not None:
        return own(spec, target)
    return [] if task.scores_labels else TaskDefaults.answer_values(task, spec, target)  # type: ignore[arg-type]


def answer_spelling(task: "Task", spec: Any) -> Callable[[str], str]:
    """A function (built once per data scan) giving the answer a row's written answer stands for,
    before the kind's ``answer_check`` (classify: a label written in another case or spacing is
    that label); the kind's own ``answer_spelling`` when it has one, else the answer as written."""
    own = getattr(task, "answer_spelling", None)
    return own(spec) if own is not None else (lambda answer: answer)


def with_answer_values(task: "Task", spec: Any, target: str, texts: Sequence[str]) -> str:
    """``target`` with its :func:`answer_values` replaced by ``texts`` (same order and number)."""
    own = getattr(task, "with_answer_values", None)
    if own is not None:
        return own(spec, target, texts)
    return texts[0] if texts else target


def answer_fields(task: "Task", spec: Any) -> list[str] | None:
    """The names data.privacy.keep_fields may hold for this kind ([]: nothing can be kept, since
    nothing is redacted; None: any name, the fields come from the data)."""
    own = getattr(task, "answer_fields", None)
    if own is not None:
        return own(spec)
    return [] if task.scores_labels else [ANSWER]


def promptfoo_asserts(task: "Task", spec: Any, example: Example) -> list[dict[str, Any]]:
    """What promptfoo checks of an answer to ``example`` (``taskfit export --format promptfoo``), as
    promptfoo assertions: the kind's own ``promptfoo_asserts(spec, example)``. A kind without one
    cannot be exported: ValueError naming it."""
    own = getattr(task, "promptfoo_asserts", None)
    if own is None:
        raise ValueError(f"task kind {task.kind!r} says nothing of how promptfoo should check its answers "
                         "(it has no promptfoo_asserts)")
    return own(spec, example)


def promptfoo_literal(text: str) -> str:
    """``text`` as a promptfoo assertion value that stands for itself: promptfoo reads a string value
    as a Nunjucks template, so text holding template syntax is wrapped in a raw block."""
    return f"{{% raw %}}{text}{{% endraw %}}" if any(t in text for t in ("{{", "{%", "{#")) else text


def answer_schema(task: "Task", spec: Any) -> dict[str, Any]:
    """The JSON schema of an answer value as a data row holds it (``taskfit data synth`` decodes a
    draft's answer under it): the kind's own ``answer_schema`` when it has one, else text."""
    own = getattr(task, "answer_schema", None)
    return own(spec) if own is not None else TaskDefaults.answer_schema(task, spec)  # type: ignore[arg-type]


@runtime_checkable
class AnswerFacets(Protocol):
    """A kind whose answers ``taskfit monitor`` compares with the training answers, facet by facet
    (optional: a kind without it is monitored on its inputs only)."""

    def answer_facets(self, spec: Any, text: str) -> dict[str, str]:
        """One answer (a training target or a served reply) → facet name → category, e.g.
        ``{"label mix": "billing"}`` or ``{"refusals": "refused"}``: each facet's mix of categories is
        compared between training and recent traffic."""


def plain_text(value: Any) -> str:
    """A data row's answer as text: a non-empty string (what most kinds take as is)."""
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise ValueError("empty")
    return value


_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """Whitespace runs made one space, the ends stripped, case folded. (``str.split`` splits on
    the characters ``\\s`` matches in a str pattern, at a fraction of a regular expression's cost.)
    What look-alike rows are compared by, and two spellings of one label share."""
    return " ".join(text.split()).casefold()


# Characters that show nothing (a soft hyphen, zero-width spaces and joiners, direction marks, a
# byte-order mark): two labels that differ by them alone print the same.
INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")


def label_key(text: str) -> str:
    """What two spellings of one label share: :func:`normalise` of the text without its invisible
    characters ("Billing", "billing\u200b" and "BILLING " are one label)."""
    return normalise(INVISIBLE.sub("", text))


def words(text: str) -> str:
    """The words of ``text`` (letters and digits, case folded), one space apart, so spacing and
    punctuation ("12.50" / "12,50", "NO.1,JALAN" / "No 1 Jalan") do not matter: what look-alike
    texts are compared by (:func:`spelt` splits digits from letters too, for :func:`written_in`)."""
    return " ".join(_WORD.findall(text.casefold()))


_SPELT = re.compile(r"\d+|[^\W\d_]+")  # a run of digits, or of letters: "4x" is 4 and x


def spelt(text: str) -> str:
    """:func:`words`, with runs of digits and of letters apart ("I ordered 4x" holds 4, "3pm"
    holds 3): what :func:`written_in` compares."""
    return " ".join(_SPELT.findall(text.casefold()))


def written_in(value: str, text_words: str) -> bool:
    """Whether ``value``'s words appear, one after the other, in ``text_words`` (from
    :func:`spelt`), digits and letters apart: a quantity of 4 is written in "I ordered 4x"."""
    value_words = spelt(value)
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
    train: Mapping[str, Any] = {}  # the template's own train section (its learning rate: the method's)

    def check_spec(self, spec: Any) -> None:
        pass

    def target_text(self, spec: Any, value: Any) -> str:
        return plain_text(value)

    def answer_check(self, spec: Any) -> Callable[[Example], None]:
        return lambda ex: None

    def answer_parts(self, spec: Any) -> Callable[[Example], AnswerParts]:
        return answer_as_label(spec)

    def answer_values(self, spec: Any, target: str) -> list[AnswerValue]:
        """The values of an answer that redaction treats together with the input: the whole
        answer text, as the field ``answer``."""
        return [AnswerValue(ANSWER, target)]

    def with_answer_values(self, spec: Any, target: str, texts: Sequence[str]) -> str:
        """``target`` with its :meth:`answer_values` replaced by ``texts``, in their order."""
        return texts[0]

    def answer_fields(self, spec: Any) -> list[str] | None:
        """The names data.privacy.keep_fields may hold (None: any name the answers hold)."""
        return [ANSWER]

    def answer_schema(self, spec: Any) -> dict[str, Any]:
        """An answer value as JSON: non-empty text."""
        return {"type": "string", "minLength": 1}

    def grammar(self, spec: Any) -> str | None:
        return None

    def answer_budget(self, spec: Any, evaluation: Any, tokenizer: Any) -> int:
        return evaluation.max_new_tokens

    def instruction(self, spec: Any) -> str:
        return ""

    def answer_facets(self, spec: Any, text: str) -> dict[str, str]:
        return {}


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
