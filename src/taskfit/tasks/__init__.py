"""One module per task kind: how an answer is parsed, whether it is valid, and how it is scored.

Every candidate's predictions go through :func:`score`, the same scorer for all of them, so the
scorecard compares like with like.
"""

from __future__ import annotations

from typing import Any, Sequence

from taskfit.config import EvalSpec, TaskSpec
from taskfit.records import EvalResult, Example, Prediction

# The metric a verdict is decided on, and the share it is reported as, per task kind.
MAIN_METRIC = {"classify": "accuracy", "extract": "field_f1", "qa": "f1", "generate": "rouge_l",
               "preference": "preference_accuracy"}


def parse(task: TaskSpec, text: str) -> tuple[str, bool]:
    """A raw answer → (the answer as scored, whether it is well-formed for the task)."""
    if task.kind == "classify":
        from taskfit.tasks.classify import parse_label

        return parse_label(task, text)
    if task.kind == "extract":
        from taskfit.tasks.extract import parse_record

        return parse_record(task, text)
    if task.kind == "qa":
        return text.strip(), bool(text.strip())
    from taskfit.tasks.generate import parse_reply

    return parse_reply(task, text)


def paired(examples: Sequence[Example], predictions: Sequence[Prediction], candidate: str) -> list[Prediction]:
    """The predictions in the examples' order; an example without one is an error, never skipped."""
    by_id = {p.example_id: p for p in predictions}
    missing = [ex.id for ex in examples if ex.id not in by_id]
    if missing:
        raise ValueError(f"{candidate}: no prediction for {len(missing)} examples, e.g. {missing[:3]}")
    return [by_id[ex.id] for ex in examples]


def score(task: TaskSpec, spec: EvalSpec, candidate: str, examples: Sequence[Example],
          predictions: Sequence[Prediction], n_boot: int = 1000, style: Any = None) -> EvalResult:
    """Score one candidate's predictions on ``examples`` with the task kind's metrics
    (``style``: the generate task's style classifier, when there is one)."""
    preds = paired(examples, predictions, candidate)
    if task.kind == "classify":
        from taskfit.tasks.classify import score_classify

        result = score_classify(candidate, task.labels or [], examples, preds, n_boot=n_boot,
                                threshold=spec.confidence_threshold, fallback=spec.fallback)
    elif task.kind == "extract":
        from taskfit.tasks.extract import score_extract

        result = score_extract(candidate, task, examples, preds, n_boot=n_boot)
    elif task.kind == "qa":
        from taskfit.tasks.qa import score_qa

        result = score_qa(candidate, task, examples, preds, n_boot=n_boot)
    else:
        from taskfit.tasks.generate import score_generate

        result = score_generate(candidate, task, examples, preds, style=style, n_boot=n_boot)
    result.metrics.update(cost_metrics(preds))
    return result


def cost_metrics(preds: Sequence[Prediction]) -> dict[str, float]:
    """Latency percentiles and mean tokens per query."""
    from taskfit.stats import percentile

    latencies = [p.latency_s for p in preds]
    n = max(1, len(preds))
    return {"latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95),
            "latency_mean_s": sum(latencies) / n,
            "prompt_tokens_mean": sum(p.prompt_tokens for p in preds) / n,
            "completion_tokens_mean": sum(p.completion_tokens for p in preds) / n}
