"""``taskfit advise``: which approach to pick, measured at a fraction of the whole loop's cost.

The cheap candidates first (every applicable baseline: classical, prompt-only, few-shot, RAG,
the hosted endpoint), then a short learning curve (the project's own fine-tune, by its ``train:``
settings, on ``advise.curve_points`` shares of ``advise.curve_rows`` training rows), every one
scored on the same first ``advise.eval_rows`` held-out rows; then
:func:`taskfit.evaluation.advice.decide` says which to pick and why.

Nothing here is a second implementation: the baselines and the curve's fine-tunes are evaluated
by :func:`~taskfit.workflows.evaluate.evaluate` into the evaluation store of those rows (so
``taskfit compare DIR --rows N`` shows them, named ``fine-tuned@48rows`` and so on), the curve's
runs are ordinary runs under ``runs/`` trained by :func:`~taskfit.workflows.train.train_or_continue`
(marked as learning-curve runs, which ``eval``, ``export`` and ``serve`` never take as the latest),
and a second ``advise`` reuses all of it: it costs the data check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from taskfit.data.split import validation_split
from taskfit.errors import DataError
from taskfit.evaluation.advice import Advice, Setting, TrainingSpeed, decide, interval
from taskfit.evaluation.compare import FINETUNED, curve_name
from taskfit.records import EvalResult
from taskfit.tasks import get_task
from taskfit.tasks.base import RAG
from taskfit.workflows.evaluate import (ADVICE, HEAD, Comparison, _adopt_finetunes, _needs_examples, baseline_project,
                                        compare_project, evaluate, is_head_run, trained_candidate)
from taskfit.workflows.train import train_or_continue, training_speed
from taskfit.workflows.workspace import CURVE_RUN, Workspace

MIN_CURVE_ROWS = 8  # a curve run on fewer rows says nothing (and cannot hold back rows to validate)
PLOT = "plots/learning_curve.png"  # in the evaluation directory


@dataclass
class AdviseSummary:
    advice: Advice
    markdown: Path  # advice.md
    comparison: Comparison  # the scorecard of every candidate on the advice's rows
    curve_runs: list[Path]


def advise_project(project: Path, reporter: Any = None, threads: int | None = None,
                   allow_secrets: bool = False) -> AdviseSummary:
    """Score the cheap candidates and a learning curve on the first ``advise.eval_rows`` held-out
    rows, decide, and write ``advice.md`` and ``advice.json`` beside that store's scorecard (whose
    report.html gains the advice)."""
    ws = Workspace.open(project, reporter, threads, allow_secrets)
    _needs_examples(ws, "advise")
    spec = ws.config.advise
    sizes = curve_sizes(len(ws.train), spec.curve_rows, spec.curve_points)  # before anything is scored
    rows = ws.on_first(spec.eval_rows)
    baselines = baseline_project(rows)
    points, runs, speed = learning_curve(ws, rows, sizes)
    curve = _fit(ws, points)
    c = ws.config
    main = get_task(c.task.kind).scoring.main_metric
    fit, _ = validation_split(ws.train, c.train.validation_share, c.train.validation_max_rows, c.train.seed)
    setting = Setting(kind=c.task.kind, main=main, threshold=c.eval.thresholds.get(main), train_rows=len(ws.train),
                      fit_share=len(fit) / len(ws.train), epochs=c.train.epochs,
                      held_out_rows=len(ws.eval_rows), price_per_hour=c.eval.price_per_hour,
                      queries_per_month=c.eval.queries_per_month,
                      documents=any(r.candidate == RAG for r in baselines), size=ws.prepared.card.size)
    advice = decide(setting, baselines, points, curve, speed)
    root = rows.evals
    if curve is not None:
        _plot(root / PLOT, curve, points, setting, baselines)
    (root / ADVICE).write_text(json.dumps(advice.to_json(), indent=1), encoding="utf-8")
    markdown = root / "advice.md"
    markdown.write_text(advice.markdown(f"Advice: {c.task.name}", PLOT if curve is not None else None),
                        encoding="utf-8")
    return AdviseSummary(advice=advice, markdown=markdown, comparison=compare_project(rows), curve_runs=runs)


def curve_sizes(train_rows: int, curve_rows: int, shares: list[float]) -> list[int]:
    """The training rows of each learning-curve run: ``shares`` of at most ``curve_rows``."""
    budget = min(train_rows, curve_rows)
    sizes = sorted({round(share * budget) for share in shares if round(share * budget) >= MIN_CURVE_ROWS})
    if len(sizes) < 3:
        raise DataError(f"advise: a learning curve of {len(shares)} runs on at most {budget} training rows leaves "
                        f"{len(sizes)} runs of {MIN_CURVE_ROWS} rows or more; it needs three",
                        hint="raise advise.curve_rows or the smallest of advise.curve_points, or add training rows")
    return sizes


def learning_curve(ws: Workspace, rows: Workspace, sizes: list[int]) -> tuple[list[tuple[int, EvalResult]],
                                                                              list[Path], TrainingSpeed | None]:
    """Train (or reuse) the learning curve's runs on nested stratified samples of ``sizes``
    training rows, smallest first, and score each on ``rows``' held-out rows: the (training rows,
    result) of each, their run directories, and the largest run's training speed."""
    from taskfit.data.split import stratified_subsample

    c = ws.config
    samples, sample = {}, list(ws.train)
    for n in reversed(sizes):  # each sample inside the next larger one
        sample = samples[n] = stratified_subsample(sample, n, c.data.seed)
    points, runs, training = [], [], {}
    for i, n in enumerate(sizes, 1):
        ws.reporter.status(f"learning curve {i}/{len(sizes)}: the fine-tune on {n} of {len(ws.train)} training rows")
        if n == len(ws.train):  # the fine-tune `taskfit run` trains: an ordinary run
            trained = train_or_continue(ws)
        else:
            trained = train_or_continue(ws.on_train(samples[n]), name=f"{c.task.name}-curve-{n}rows",
                                        marks={CURVE_RUN: {"rows": n, "of": len(ws.train)}})
        base = HEAD if is_head_run(trained.run_dir) else FINETUNED
        # The free decoding of a sample (eval.generation_sample) is a scorecard figure the advice does not use.
        cand = replace(trained_candidate(rows, trained.run_dir, curve_name(base, n)), free=None)
        if n == len(ws.train):  # where `taskfit run` scored that run already, its answers to these rows are this point's
            _adopt_finetunes(rows)
            cand = replace(cand, same_as=(base,))
        points.append((n, evaluate(rows, cand)))
        runs.append(trained.run_dir)
        training = trained.training
    return points, runs, training_speed(training, sizes[-1], c.train.epochs)


def _fit(ws: Workspace, points: list[tuple[int, EvalResult]]):
    from taskfit.evaluation.curve import fit_curve

    return fit_curve([n for n, _ in points], [r.per_example for _, r in points],
                     resamples=ws.config.advise.resamples, seed=ws.config.data.seed)


def _plot(path: Path, curve: Any, points: list[tuple[int, EvalResult]], setting: Setting,
          baselines: list[EvalResult]) -> None:
    from taskfit.evaluation.report import plot_learning_curve
    from taskfit.stats import bootstrap_mean_ci

    main = setting.main
    # the points the curve was fitted to: each run's mean per-row score
    measured = [(n, score, *bootstrap_mean_ci(r.per_example)) for (n, r), score in zip(points, curve.scores)]
    cheap = max(baselines, key=lambda r: r.metrics[main])
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_learning_curve(curve, measured, path, main, setting.train_rows, setting.threshold,
                        (cheap.candidate, cheap.metrics[main], *interval(cheap, main)))
