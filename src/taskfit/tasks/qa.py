"""qa: answers grounded in a context, with the configured refusal when the context does not hold
the answer.

Metrics: exact match and token F1 on answerable questions (SQuAD's normalisation: lower case, no
punctuation or articles), refusal precision and recall on the unanswerable ones (no precision,
shown n/a, for a candidate that refused nothing: none of its refusals can be right or wrong), and
the rate of *unsupported* answers: an answer given where the gold says there is none, or an answer
whose words are mostly not in the context it was given (under half of its content tokens found
there).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any, Callable, Sequence

from taskfit.config import TaskSpec
from taskfit.records import AnswerParts, EvalResult, Example, Prediction
from taskfit.stats import bootstrap_mean_ci, paired_difference
from taskfit.tasks.base import (ENDPOINT, FEW_SHOT, PROMPT_ONLY, RAG, Column, Scoring, TaskDefaults, plain_text,
                                 promptfoo_literal)

EXAMPLES_PER_BUCKET = 3
SUPPORTED_SHARE = 0.5


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    text = text.lower().translate(_NO_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    p, g = normalize(prediction).split(), normalize(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def is_refusal(task: TaskSpec, text: str) -> bool:
    """The configured refusal, allowing case, punctuation and a little wording around it."""
    answer, refusal = normalize(text), normalize(task.refusal)
    return bool(refusal) and (answer == refusal or refusal in answer)


def supported(answer: str, context: str | None) -> bool:
    words = normalize(answer).split()
    if context is None or not words:
        return True
    ctx = set(normalize(context).split())
    return sum(w in ctx for w in words) / len(words) >= SUPPORTED_SHARE


def score_qa(candidate: str, task: TaskSpec, examples: Sequence[Example], preds: Sequence[Prediction],
             n_boot: int = 1000) -> EvalResult:
    em = f1 = 0.0
    answerable = refused = refused_right = unanswerable = unsupported = 0
    per_example: list[float] = []
    counts: Counter[str] = Counter()
    errors: dict[str, list[dict]] = {}

    def note(bucket: str, ex: Example, pred: Prediction) -> None:
        counts[bucket] += 1
        if len(errors.setdefault(bucket, [])) < EXAMPLES_PER_BUCKET:
            errors[bucket].append({"id": ex.id, "input": ex.input[:300], "expected": ex.target[:300],
                                   "got": pred.output[:300]})

    for ex, pred in zip(examples, preds):
        context = pred.details.get("context", ex.context)
        gold_refuses = is_refusal(task, ex.target)
        says_refuse = is_refusal(task, pred.output)
        refused += says_refuse
        if gold_refuses:
            unanswerable += 1
            refused_right += says_refuse
            score = float(says_refuse)
            if not says_refuse:
                unsupported += 1
                note("unsupported answer", ex, pred)
        else:
            answerable += 1
            # a refusal answers nothing: no credit for the words it shares with the gold answer
            # ("in", "provided": a model refusing all 40 rows of a walkthrough scored 1.1% F1 on the
            # answerable ones, and so above refusing everything)
            score = 0.0 if says_refuse else token_f1(pred.output, ex.target)
            em += normalize(pred.output) == normalize(ex.target)
            f1 += score
            if says_refuse:
                note("wrong refusal", ex, pred)
                if pred.details.get("retrieval_hit") is False:
                    note("retrieval miss", ex, pred)
            elif not supported(pred.output, context):
                unsupported += 1
                note("unsupported answer", ex, pred)
            elif score < 1.0:
                note("partial or wrong answer", ex, pred)
        per_example.append(score)
    n = len(examples)
    low, high = bootstrap_mean_ci(per_example, n_boot=n_boot)
    metrics = {
        "f1": sum(per_example) / n, "f1_ci_low": low, "f1_ci_high": high,
        "answerable_exact_match": em / answerable if answerable else 0.0,
        "answerable_f1": f1 / answerable if answerable else 0.0,
        "refusal_recall": refused_right / unanswerable if unanswerable else 0.0,
        "unsupported_rate": unsupported / n,
        "valid_rate": sum(p.valid for p in preds) / n,
        "refusal_rate": refused / n,
        # what answering the refusal to every row would score: the unanswerable rows' share; and
        # the paired swap test's p of the candidate against it, row by row (a candidate that
        # refuses all but one question sits a partial answer above it, by chance)
        "refuse_all_f1": unanswerable / n,
        "refuse_all_p": paired_difference(per_example, [float(is_refusal(task, ex.target)) for ex in examples],
                                          n_boot=n_boot)[2],
    }
    if refused:  # a candidate that refused nothing has no refusal precision: the scorecard shows n/a
        metrics["refusal_precision"] = refused_right / refused
    return EvalResult(candidate=candidate, metrics=metrics, n=n, kind="qa", per_example=per_example,
                      error_counts=dict(counts.most_common()), errors=errors)


TEMPLATE = """\
task:
  kind: qa                  # classify | extract | qa | generate
  name: policy-answers
  success: "Answers are correct and grounded in the documents, and it says so when they are silent."
  # {refusal} stands for task.refusal below.
  system_prompt: >-
    Answer the question using only the context. If the context does not contain the answer,
    say exactly: {refusal}.
  # The answer expected when the context does not hold one.
  refusal: "not enough evidence in the provided documents"
"""


class QaTask(TaskDefaults):
    """qa: an answer grounded in the row's context, or the configured refusal."""

    kind = "qa"
    description = "answers grounded in a passage, refusing when it is silent"
    scoring = Scoring(
        "f1",
        (Column("f1", "F1 [95% CI]"), Column("answerable_exact_match", "EM (answerable)"),
         Column("refusal_precision", "refusal P"), Column("refusal_recall", "refusal R"),
         Column("unsupported_rate", "unsupported answers")),
        other_metrics=frozenset({"answerable_f1", "valid_rate"}), lower_is_better=frozenset({"unsupported_rate"}),
        harms=frozenset({"unsupported_rate"}))
    baselines = (PROMPT_ONLY, FEW_SHOT, RAG, ENDPOINT)
    size_guidance = (200, 1000)
    takes_context = True
    validation_side = "refusal_recall"
    error_buckets = ("unsupported answer", "wrong refusal", "retrieval miss", "partial or wrong answer")
    template = TEMPLATE
    thresholds = {"f1": 0.6, "unsupported_rate": 0.1}
    # squad2_dev (150 training rows, 60 held out, one epoch): lr 1e-3 reached 51.7% answer F1 where
    # the method's 2e-4 reached 49.7%; three epochs at 1e-3 (the best validation kept) 47.9%:
    # docs/benchmarks.md, "Training defaults for qa and generate".
    train = {"learning_rate": 1e-3}

    def check_spec(self, spec: TaskSpec) -> None:
        if not spec.refusal.strip():
            raise ValueError("task.refusal: a qa task needs the answer it gives when the context is silent")

    def target_text(self, spec: TaskSpec, value: Any) -> str:
        # null, or an empty cell (a CSV or TSV cell cannot hold a null): the context does not hold it
        if value is None or (isinstance(value, str) and not value.strip()):
            return spec.refusal
        return plain_text(value)

    def answer_spelling(self, spec: TaskSpec) -> Callable[[str], str]:
        """The refusal written in another case or punctuation ("Not enough evidence in the provided
        documents.") is task.refusal as configured, so that the model learns one refusal."""
        refusal = normalize(spec.refusal)

        def spelling(answer: str) -> str:
            return spec.refusal if refusal and answer != spec.refusal and normalize(answer) == refusal else answer

        return spelling

    def answer_check(self, spec: TaskSpec) -> Callable[[Example], None]:
        def check(ex: Example) -> None:
            if ex.context is None:
                raise ValueError("context: a qa row needs a context (map it with data.columns.context)")

        return check

    def answer_parts(self, spec: TaskSpec) -> Callable[[Example], AnswerParts]:
        """The answer, written in the input when it is the refusal or is found in the context (as
        a span of characters, as SQuAD marks answers: "Saudi" in "Saudi-based"): "What does X
        mean?" and "What doesn't X mean?" about one passage are two questions."""

        def parts(ex: Example) -> AnswerParts:
            answer = normalize(ex.target)
            grounded = is_refusal(spec, ex.target) or answer in normalize(ex.context or "")
            return AnswerParts(fixed=(("answer", answer, grounded),))

        return parts

    def parse(self, spec: TaskSpec, text: str) -> tuple[str, bool]:
        return text.strip(), bool(text.strip())

    def score(self, spec: TaskSpec, evaluation: Any, candidate: str, examples: Sequence[Example],
              predictions: Sequence[Prediction], n_boot: int = 1000, style: Any = None) -> EvalResult:
        return score_qa(candidate, spec, examples, predictions, n_boot=n_boot)

    def instruction(self, spec: TaskSpec) -> str:
        return f"If the context does not hold the answer, reply exactly: {spec.refusal}"

    def promptfoo_asserts(self, spec: TaskSpec, example: Example) -> list[dict[str, Any]]:
        """The refusal where the context does not hold the answer, else the gold answer, each
        contained in the reply, case aside (a pass/fail proxy of the refusal figures and the F1)."""
        refuses = is_refusal(spec, example.target)
        return [{"type": "icontains", "value": promptfoo_literal(spec.refusal if refuses else example.target),
                 "metric": "refusal" if refuses else "answer"}]

    def answer_facets(self, spec: TaskSpec, text: str) -> dict[str, str]:
        """The refusal rate: whether each answer is the configured refusal."""
        return {"refusals": "refused" if is_refusal(spec, text) else "answered"}
