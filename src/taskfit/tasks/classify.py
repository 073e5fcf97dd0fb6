"""classify: the answer is exactly one label of the taxonomy.

Metrics: accuracy and macro-F1 with 95% bootstrap intervals, per-class precision/recall/F1, the
confusion matrix, expected calibration error, and, when a confidence threshold is set, coverage
(the share answered above it) against accuracy, with the rest sent to the configured fallback.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Any, Callable, Sequence

from taskfit.config import TaskSpec
from taskfit.records import AnswerParts, EvalResult, Example, Prediction
from taskfit.stats import percentile
from taskfit.tasks.base import (CLASSICAL, EMBEDDINGS, ENDPOINT, FEW_SHOT, PROMPT_ONLY, AnswerValue, Column,
                                 Scoring, TaskDefaults, promptfoo_literal)

EXAMPLES_PER_BUCKET = 3
# A free answer as parse_label reads it, in JavaScript: whitespace and . " ' ` around it aside, case folded.
LABEL_TRANSFORM = "output.trim().replace(/^[.\"'`]+|[.\"'`]+$/g, '').trim().toLowerCase()"


_LABEL_WORD = re.compile(r"[^\W_]+")
PREFIX_LETTERS = 4  # a label word and a text's word this long or longer match when one begins the other


def label_written(label: str, text: str) -> bool:
    """Whether a label's name is written in ``text``: each of its words (``shopping_list``:
    shopping, list) is a word of the text, case folded, or one begins the other at four letters
    or more ("order" in "ordering"). Two near-identical inputs whose labels are each written in
    their own input are distinct examples, not a conflict: "what is on my shopping list"
    (shopping_list) and "please order me everything that is on my shopping list" (order), which
    clinc150 holds, differ by the words that name their intents."""
    text = text.casefold()
    label_words = _label_words(label)
    # a word of the text that matches w begins with w's first four letters (all of w if shorter):
    # where one is missing from the text, no word matches (the text's words left unsplit, 10x faster)
    if not all(w[:PREFIX_LETTERS] in text for w in label_words):
        return False
    said = _LABEL_WORD.findall(text)
    known, starts = set(said), " " + " ".join(said)  # a word of the text begins with w: " " + w in starts
    return all(w in known or (len(w) >= PREFIX_LETTERS and (" " + w in starts or any(
        w[:n] in known for n in range(PREFIX_LETTERS, len(w))))) for w in label_words)


@functools.lru_cache(maxsize=1024)
def _label_words(label: str) -> tuple[str, ...]:
    return tuple(_LABEL_WORD.findall(label.casefold()))


def parse_label(task: TaskSpec, text: str) -> tuple[str, bool]:
    """A freely generated answer is valid when it is a label, ignoring case and surrounding
    whitespace or punctuation."""
    clean = text.strip().strip(".\"'`").strip()
    by_lower = {lab.lower(): lab for lab in task.labels or []}
    label = by_lower.get(clean.lower())
    return (label, True) if label is not None else (text.strip(), False)


def with_fallback(label: str, confidence: float | None, threshold: float | None,
                  fallback: str | None) -> tuple[str, bool]:
    """The answer a classifier gives in production, and whether it fell back: ``fallback`` when
    both ``threshold`` and ``fallback`` are set and ``confidence`` is below the threshold, else
    ``label``. Evaluation scores, and the server answers, through this one policy."""
    low = threshold is not None and fallback is not None and confidence is not None and confidence < threshold
    return (fallback if low else label), low


def label_budget(tokenizer, task: TaskSpec) -> int:
    """Tokens a free decoding of a label gets: the longest label and a little slack, enough to
    see whether the output is a label at all."""
    return max(len(tokenizer(lab)["input_ids"]) for lab in task.labels or []) + 3


def _macro_f1_counts(t, p, k, unsupported=None):
    """Macro-F1 from integer-coded labels, over the classes ``t`` has rows of and the classes
    ``unsupported`` marks (by default those ``t`` has none of) that ``p`` predicts: each of the
    classes present in ``t`` or ``p``. A bootstrap resample passes the held-out set's own
    unsupported classes, so a class whose rows the resample left out is not scored 0."""
    import numpy as np

    tp = np.bincount(t[t == p], minlength=k)
    true_n = np.bincount(t, minlength=k)
    pred_n = np.bincount(p, minlength=k)
    if unsupported is None:
        unsupported = true_n == 0
    present = (true_n > 0) | (unsupported & (pred_n > 0))
    denom = true_n + pred_n
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def bootstrap_ci(labels: list[str], y_true: list[str], y_pred: list[str], n_boot: int = 1000,
                 seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% bootstrap intervals for accuracy and macro-F1, both over resampled rows.

    Accuracy's is the percentile interval. Macro-F1 averages per-class figures over the classes
    the held-out set has (true or predicted), and a resample that leaves out all of a rare class's
    rows cannot measure that class: scored as the held-out figure scores a class that is only
    predicted (F1 0), such resamples ran so far below the held-out figure, with many classes of a
    few rows each (151 intents, about 3 rows apiece), that the whole interval lay below it. So a
    resample averages over the classes it has true rows of, plus the classes the held-out set only
    predicts (0, as in the figure itself); and the interval is Efron's bias-corrected (BC)
    percentile interval, whose percentiles move by how far the estimate sits in the resamples'
    distribution (``z0``), so it is placed around the estimate it belongs to. (Resampling within
    each true class instead keeps every class's support but never varies a class of one held-out
    row: 151 intents of one row each got an interval of zero width. ``bench/macro_f1_interval.py``
    measures both methods' coverage.)"""
    import numpy as np
    from scipy.stats import norm

    index = {lab: i for i, lab in enumerate(dict.fromkeys([*labels, *y_true, *y_pred]))}
    k = len(index)
    t = np.array([index[y] for y in y_true], dtype=np.int64)
    p = np.array([index[y] for y in y_pred], dtype=np.int64)
    only_predicted = np.bincount(t, minlength=k) == 0  # scored 0 wherever predicted, as in the figure
    rng = np.random.default_rng(seed)
    accs, f1s = [], []
    for _ in range(n_boot):
        idx = rng.integers(0, len(t), len(t))
        accs.append(float((t[idx] == p[idx]).mean()))
        f1s.append(_macro_f1_counts(t[idx], p[idx], k, only_predicted))
    estimate = _macro_f1_counts(t, p, k) if len(t) else 0.0
    f1 = np.asarray(f1s)
    below = (np.sum(f1 < estimate) + 0.5 * np.sum(f1 == estimate)) / max(1, len(f1))
    z0 = float(norm.ppf(np.clip(below, 1 / (n_boot + 1), n_boot / (n_boot + 1))))
    low, high = (100 * float(norm.cdf(2 * z0 + z)) for z in (norm.ppf(0.025), norm.ppf(0.975)))
    return {"accuracy": (percentile(accs, 2.5), percentile(accs, 97.5)),
            "macro_f1": (percentile(f1s, low), percentile(f1s, high))}


def expected_calibration_error(confidences: Sequence[float], right: Sequence[bool], bins: int = 10) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins
    weighted by how many predictions fall in each."""
    total, n = 0.0, len(confidences)
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidences) if lo < c <= hi or (b == 0 and c == 0)]
        if members:
            conf = sum(confidences[i] for i in members) / len(members)
            acc = sum(right[i] for i in members) / len(members)
            total += len(members) / n * abs(conf - acc)
    return total


def coverage_curve(confidences: Sequence[float], right: Sequence[bool]) -> list[tuple[float, float, float]]:
    """(threshold, coverage, accuracy on the covered rows) at each distinct confidence, for the
    coverage-against-accuracy plot."""
    order = sorted(range(len(confidences)), key=lambda i: -confidences[i])
    points, hits = [], 0
    for rank, i in enumerate(order, 1):
        hits += right[i]
        points.append((confidences[i], rank / len(order), hits / rank))
    return points


def score_classify(candidate: str, labels: list[str], examples: Sequence[Example],
                   preds: Sequence[Prediction], n_boot: int = 1000, threshold: float | None = None,
                   fallback: str | None = None) -> EvalResult:
    """Score ``preds`` (in the examples' order). With ``threshold``, a prediction whose confidence
    is below it becomes ``fallback`` before scoring, as it would in production."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    raw = [p.output for p in preds]
    conf = [p.confidence for p in preds]
    known = all(c is not None for c in conf)
    covered = [not (threshold is not None and known and c < threshold) for c in conf]
    y_pred = [with_fallback(out, c if known else None, threshold, fallback)[0] for out, c in zip(raw, conf)]
    y_true = [ex.target for ex in examples]
    everything = list(dict.fromkeys([*labels, *([fallback] if fallback else [])]))
    present = [lab for lab in everything if lab in set(y_true) | set(y_pred)]
    accuracy = float(accuracy_score(y_true, y_pred))
    macro_f1 = float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
    ci = bootstrap_ci(everything, y_true, y_pred, n_boot=n_boot)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=everything, zero_division=0)
    per_class = {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                       "support": int(s[i])} for i, lab in enumerate(everything)}
    right = [t == q for t, q in zip(y_true, y_pred)]
    metrics = {
        "accuracy": accuracy, "accuracy_ci_low": ci["accuracy"][0], "accuracy_ci_high": ci["accuracy"][1],
        "macro_f1": macro_f1, "macro_f1_ci_low": ci["macro_f1"][0], "macro_f1_ci_high": ci["macro_f1"][1],
        "valid_rate": sum(x.valid for x in preds) / len(preds),
    }
    curves: dict[str, list[list[float]]] = {}
    if known:
        raw_right = [t == q for t, q in zip(y_true, raw)]
        metrics["ece"] = expected_calibration_error([float(c) for c in conf], raw_right)
        points = coverage_curve([float(c) for c in conf], raw_right)
        step = max(1, len(points) // 200)
        curves["coverage"] = [list(pt) for pt in points[::step]] + [list(points[-1])]
        if threshold is not None:
            n_cov = sum(covered)
            metrics["accuracy_raw"] = sum(raw_right) / len(raw_right)  # as if there were no fallback
            metrics["coverage"] = n_cov / len(preds)
            metrics["covered_accuracy"] = (sum(r for r, c in zip(raw_right, covered) if c) / n_cov
                                           if n_cov else 0.0)
    counts: Counter[str] = Counter()
    errors: dict[str, list[dict]] = {}
    for ex, pred, out, ok in zip(examples, preds, y_pred, right):
        if ok:
            continue
        bucket = "invalid format" if not pred.valid else f"confusable: {ex.target} -> {out}"
        counts[bucket] += 1
        if len(errors.setdefault(bucket, [])) < EXAMPLES_PER_BUCKET:
            errors[bucket].append({"id": ex.id, "input": ex.input[:300], "expected": ex.target,
                                   "got": pred.output[:300]})
    return EvalResult(candidate=candidate, metrics=metrics, per_class=per_class,
                      confusion=confusion_matrix(y_true, y_pred, labels=everything).tolist(),
                      labels=everything, n=len(examples), kind="classify",
                      per_example=[float(x) for x in right], error_counts=dict(counts.most_common()),
                      errors=errors, curves=curves)


TEMPLATE = """\
task:
  kind: classify            # classify | extract | qa | generate
  name: ticket-triage       # short name, used in run directory names
  # One sentence: what does success mean for this task?
  success: "Every ticket lands in the queue a senior agent would pick."
  # The instruction every example is rendered with, in training and evaluation alike;
  # {labels} stands for the labels below, comma-separated.
  system_prompt: >-
    You route customer support tickets. Reply with exactly one queue name: {labels}.
  # The fixed taxonomy: the model's answer is always exactly one of these.
  labels: [billing, refund, shipping, account_access, technical_issue, product_question,
           cancellation, feedback]
"""


# What `taskfit init` writes for a classify task (and `taskfit quickstart` trains; `init --from`
# keeps it from 40 training rows a label up, project.HEAD_MIN_ROWS_PER_LABEL): a classification
# head reading the mean of the hidden states, two epochs at lr 1e-3. On the quickstart's tickets
# (seed 0, 480 / 150 rows) it reached 93.3% in about 555 s of training, where the generative
# fine-tune reached 68.7% (lr 1e-3) and 70.7% (lr 2e-3) in one epoch of about the same time, and a
# head in one epoch 83.3% (lr 1e-3) / 86.0% (lr 2e-3): docs/training.md.
HEAD = {"classify_head": True, "head_pooling": "mean", "epochs": 2, "learning_rate": 1e-3}


def label_spelling(labels: Sequence[str]) -> Callable[[str], str]:
    """``answer -> label``: a written answer that differs from exactly one of ``labels`` only in
    case, spacing or invisible characters ("Billing", "BILLING ", "billing\u200b" for billing:
    :func:`~taskfit.tasks.base.label_key`) is that label; any other answer is returned as written
    (an answer that is a label as written is always itself, so labels that differ only in case
    stay apart)."""
    from taskfit.tasks.base import label_key

    exact = set(labels)
    by_key: dict[str, list[str]] = {}
    for label in labels:
        by_key.setdefault(label_key(label), []).append(label)

    def spelling(answer: str) -> str:
        if answer in exact:
            return answer
        if answer.strip() in exact:  # "US " is US, even beside a label us
            return answer.strip()
        found = by_key.get(label_key(answer), [])
        return found[0] if len(found) == 1 else answer

    return spelling

def closest_label(written: str, labels: Sequence[str]) -> str | None:
    """The one label ``written`` is most likely a slip for ("Card" for Cards, "biling" for
    billing), compared by :func:`~taskfit.tasks.base.label_key` as :func:`label_spelling` is; None
    when none is close (difflib's ratio under 0.8), or when the closest key is two labels' (US and us)."""
    import difflib
    from collections import Counter

    from taskfit.tasks.base import label_key

    keys = Counter(label_key(label) for label in labels)
    folded = {label_key(label): label for label in labels if keys[label_key(label)] == 1}
    near = difflib.get_close_matches(label_key(written), list(folded), n=1, cutoff=0.8)
    return folded[near[0]] if near else None


class ClassifyTask(TaskDefaults):
    """classify: exactly one label of a fixed taxonomy, answered by label scoring."""

    kind = "classify"
    description = "one label of a fixed taxonomy (ticket triage, intent routing)"
    scoring = Scoring(
        "accuracy",
        (Column("accuracy", "accuracy [95% CI]"), Column("macro_f1", "macro-F1 [95% CI]"),
         Column("free_valid_rate", "valid labels, free decoding"), Column("coverage", "coverage"),
         Column("accuracy_raw", "accuracy, no fallback"), Column("ece", "ECE", share=False)),
        other_metrics=frozenset({"valid_rate", "covered_accuracy", "ece"}),
        lower_is_better=frozenset({"ece"}), paired_test="mcnemar")
    baselines = (PROMPT_ONLY, FEW_SHOT, CLASSICAL, EMBEDDINGS, ENDPOINT)
    size_guidance = (50, 500)
    scores_labels = True
    free_decoding = True
    error_buckets = ("invalid format", "confusable: EXPECTED -> GOT")
    template = TEMPLATE
    thresholds = {"accuracy": 0.85}
    train = HEAD

    def answer_parts(self, spec: TaskSpec) -> Callable[[Example], AnswerParts]:
        """The label, written in the input where its name is (:func:`label_written`)."""
        return lambda ex: AnswerParts(fixed=(("answer", ex.target, label_written(ex.target, ex.input)),))

    def check_spec(self, spec: TaskSpec) -> None:
        if not spec.labels:
            raise ValueError("task.labels: a classify task needs a non-empty list of labels")
        if len(set(spec.labels)) != len(spec.labels):
            raise ValueError(f"task.labels: labels must be unique, got {spec.labels}")
        if any(not lab.strip() for lab in spec.labels):
            raise ValueError("task.labels: a label cannot be empty")

    def answer_spelling(self, spec: TaskSpec) -> Callable[[str], str]:
        return label_spelling(spec.labels or [])

    def answer_check(self, spec: TaskSpec) -> Callable[[Example], None]:
        labels = set(spec.labels or [])

        def check(ex: Example) -> None:
            if ex.target not in labels:
                near = closest_label(ex.target, spec.labels or [])
                raise ValueError(f"answer: label {ex.target!r} is not in task.labels ({', '.join(spec.labels or [])})"
                                 + (f"; did you mean {near!r}?" if near else ""))

        return check

    def answer_values(self, spec: TaskSpec, target: str) -> list[AnswerValue]:
        return []  # a label is never personal data: redaction leaves it as it is

    def with_answer_values(self, spec: TaskSpec, target: str, texts: Sequence[str]) -> str:
        return target

    def answer_fields(self, spec: TaskSpec) -> list[str] | None:
        return []

    def parse(self, spec: TaskSpec, text: str) -> tuple[str, bool]:
        return parse_label(spec, text)

    def score(self, spec: TaskSpec, evaluation: Any, candidate: str, examples: Sequence[Example],
              predictions: Sequence[Prediction], n_boot: int = 1000, style: Any = None) -> EvalResult:
        return score_classify(candidate, spec.labels or [], examples, predictions, n_boot=n_boot,
                              threshold=evaluation.confidence_threshold, fallback=evaluation.fallback)

    def grammar(self, spec: TaskSpec) -> str | None:
        from taskfit.decoding import choice_grammar

        return choice_grammar(spec.labels or [])

    def answer_budget(self, spec: TaskSpec, evaluation: Any, tokenizer: Any) -> int:
        return label_budget(tokenizer, spec)

    def answer_schema(self, spec: TaskSpec) -> dict[str, Any]:
        """One of task.labels."""
        return {"type": "string", "enum": list(spec.labels or [])}

    def instruction(self, spec: TaskSpec) -> str:
        return "Answer with exactly one of these labels and nothing else: " + ", ".join(spec.labels or [])

    def promptfoo_asserts(self, spec: TaskSpec, example: Example) -> list[dict[str, Any]]:
        """The gold label, compared as :func:`parse_label` reads a free answer."""
        return [{"type": "equals", "value": promptfoo_literal(example.target.lower()), "transform": LABEL_TRANSFORM,
                 "metric": "label"}]

    def answer_facets(self, spec: TaskSpec, text: str) -> dict[str, str]:
        """The label mix: which label each answer is (anything else as one category)."""
        label, valid = parse_label(spec, text)
        return {"label mix": label if valid else "(not a label)"}
