"""Task kinds: one module per kind (classify, extract, qa, generate), each with one :class:`Task`
object, found through one registry.

Every candidate's predictions go through :func:`score`, the same scorer for all of them, so the
scorecard compares like with like. Adding a kind: write a module with an object satisfying
:class:`~taskfit.tasks.base.Task` and :func:`register` it.
"""

from __future__ import annotations

from typing import Any, Sequence

from taskfit.records import EvalResult, Example, Prediction
from taskfit.tasks.base import Column, Scoring, Task, TaskRegistry
from taskfit.tasks.classify import ClassifyTask
from taskfit.tasks.extract import ExtractTask
from taskfit.tasks.generate import GenerateTask
from taskfit.tasks.qa import QaTask

__all__ = ["Column", "Task", "get_task", "kinds", "main_metric", "paired", "parse", "register", "score",
           "scoring", "unregister"]

_REGISTRY = TaskRegistry([ClassifyTask(), ExtractTask(), QaTask(), GenerateTask()])


def register(task: Task) -> Task:
    """Make a task kind known to every part of taskfit (config, data checks, baselines, training,
    evaluation, serving, init)."""
    return _REGISTRY.register(task)


def unregister(kind: str) -> None:
    _REGISTRY.unregister(kind)


def get_task(kind: str) -> Task:
    """The kind's :class:`Task` (ValueError naming the known kinds for an unknown one)."""
    return _REGISTRY.get(kind)


def kinds() -> list[str]:
    return _REGISTRY.kinds()


PREFERENCE = "preference"  # DPO's held-out preference pairs: scored per pair, not by a task kind
# The chosen answer has the higher mean log-probability per token, or not.
PREFERENCE_SCORING = Scoring("preference_accuracy",
                             (Column("preference_accuracy", "prefers chosen (per token)"),
                              Column("summed_preference_accuracy", "prefers chosen (summed)")),
                             paired_test="mcnemar")


def scoring(kind: str) -> Scoring:
    """What a scorecard needs of a kind (columns, main metric, paired test): the task kind's, or
    DPO's preference pairs' for ``"preference"``."""
    return PREFERENCE_SCORING if kind == PREFERENCE else get_task(kind).scoring


def size_guidance(kind: str) -> tuple[int, int]:
    """Labelled rows (or preference pairs) a kind needs: the least to try, and a comfortable amount."""
    return (100, 1000) if kind == PREFERENCE else get_task(kind).size_guidance


def main_metric(kind: str) -> str:
    return scoring(kind).main_metric


def parse(task: Any, text: str) -> tuple[str, bool]:
    """A raw answer → (the answer as scored, whether it is well-formed for the task)."""
    return get_task(task.kind).parse(task, text)


def paired(examples: Sequence[Example], predictions: Sequence[Prediction], candidate: str) -> list[Prediction]:
    """The predictions in the examples' order; an example without one is an error, never skipped."""
    by_id = {p.example_id: p for p in predictions}
    missing = [ex.id for ex in examples if ex.id not in by_id]
    if missing:
        raise ValueError(f"{candidate}: no prediction for {len(missing)} examples, e.g. {missing[:3]}")
    return [by_id[ex.id] for ex in examples]


def score(task: Any, spec: Any, candidate: str, examples: Sequence[Example],
          predictions: Sequence[Prediction], n_boot: int = 1000, style: Any = None) -> EvalResult:
    """Score one candidate's predictions on ``examples`` with the task kind's metrics
    (``style``: the generate task's style classifier, when there is one)."""
    preds = paired(examples, predictions, candidate)
    result = get_task(task.kind).score(task, spec, candidate, examples, preds, n_boot=n_boot, style=style)
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
