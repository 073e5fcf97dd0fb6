"""qa: answers grounded in a context, with the configured refusal when the context does not hold
the answer.

Metrics: exact match and token F1 on answerable questions (SQuAD's normalisation: lower case, no
punctuation or articles), refusal precision and recall on the unanswerable ones, and the rate of
*unsupported* answers: an answer given where the gold says there is none, or an answer whose words
are mostly not in the context it was given (under half of its content tokens found there).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

from taskfit.config import TaskSpec
from taskfit.records import EvalResult, Example, Prediction
from taskfit.stats import bootstrap_mean_ci

EXAMPLES_PER_BUCKET = 3
SUPPORTED_SHARE = 0.5


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
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
            score = token_f1(pred.output, ex.target)
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
        "refusal_precision": refused_right / refused if refused else 0.0,
        "refusal_recall": refused_right / unanswerable if unanswerable else 0.0,
        "unsupported_rate": unsupported / n,
        "valid_rate": sum(p.valid for p in preds) / n,
    }
    return EvalResult(candidate=candidate, metrics=metrics, n=n, kind="qa", per_example=per_example,
                      error_counts=dict(counts.most_common()), errors=errors)
