"""The HTML report: what a reader sees first."""

from __future__ import annotations

import random

from taskfit.config import EvalSpec, TaskSpec
from taskfit.evaluation.compare import build_scorecard
from taskfit.evaluation.report import write_scorecard_report
from taskfit.records import Example, Prediction
from taskfit.tasks import score


def test_the_report_states_what_success_means_under_its_title(tmp_path):
    success = "Every ticket lands in the queue a senior agent would pick (not <guessed> & moved)."
    task = TaskSpec(kind="classify", success=success, system_prompt="p", labels=list("abc"))
    rng = random.Random(0)
    examples = [Example(id=str(i), input=f"row {i}", target=rng.choice("abc")) for i in range(40)]
    predictions = {name: [Prediction(example_id=ex.id, output=ex.target if rng.random() < acc else "a",
                                     valid=True, latency_s=0.01, prompt_tokens=5, completion_tokens=1)
                          for ex in examples]
                   for name, acc in (("prompt-only", 0.4), ("fine-tuned", 0.9))}
    card = build_scorecard([score(task, EvalSpec(), name, examples, preds) for name, preds in predictions.items()], {})
    page = write_scorecard_report(tmp_path, "taskfit: triage", card, predictions, success=task.success).read_text()
    shown = "Every ticket lands in the queue a senior agent would pick (not &lt;guessed&gt; &amp; moved)."
    assert page.index("<h1>taskfit: triage</h1>") < page.index(shown) < page.index('id="verdict"')
    plain = write_scorecard_report(tmp_path, "taskfit: triage", card, predictions).read_text()
    assert 'id="success"' not in plain and "Success means" not in plain


def test_the_scores_plot_is_drawn_when_an_interval_misses_its_estimate(tmp_path):
    """An interval computed another way than its estimate can miss it by a hair (a bootstrap of
    macro-F1 on many small classes did); the bar plot draws no error bar below zero length
    instead of failing the whole report."""
    from dataclasses import replace

    from taskfit.evaluation.report import plot_scores

    task = TaskSpec(kind="classify", success="s", system_prompt="p", labels=list("abc"))
    examples = [Example(id=str(i), input=f"row {i}", target="abc"[i % 3]) for i in range(30)]
    preds = [Prediction(example_id=ex.id, output=ex.target, valid=True, latency_s=0.01, prompt_tokens=5,
                        completion_tokens=1) for ex in examples]
    result = score(task, EvalSpec(), "fine-tuned", examples, preds)
    off = replace(result, metrics={**result.metrics, "macro_f1_ci_high": result.metrics["macro_f1"] - 0.001})
    path = plot_scores([result, off], tmp_path / "scores.png", ["accuracy", "macro_f1"])
    assert path.exists() and path.stat().st_size > 1000


def test_a_report_of_many_classes_says_which_it_plots_how_many_buckets_it_leaves_out_and_counts_whole_rows(
        tmp_path, monkeypatch):
    """113 intents of a few held-out rows each: the per-class plot showed 30 of them unsaid (the
    30 with the most rows, which were nearly all alike), the error table 12 buckets of 120 with
    no word of the rest, and the confusions plot ticks of 0.25 of a row."""
    from taskfit.evaluation import report

    labels = [f"intent{i:03d}" for i in range(113)]
    task = TaskSpec(kind="classify", success="s", system_prompt="p", labels=labels)
    rng = random.Random(0)
    examples = [Example(id=f"{lab}-{k}", input=f"row {lab} {k}", target=lab)
                for lab in labels for k in range(rng.randint(1, 4))]
    predictions = {name: [Prediction(example_id=ex.id, output=ex.target if rng.random() < acc else rng.choice(labels),
                                     valid=True, latency_s=0.01, prompt_tokens=5, completion_tokens=1)
                          for ex in examples]
                   for name, acc in (("prompt-only", 0.4), ("fine-tuned", 0.8))}
    results = [score(task, EvalSpec(), name, examples, preds) for name, preds in predictions.items()]
    card = build_scorecard(results, {})
    axes = []
    finish = report._finish
    monkeypatch.setattr(report, "_finish", lambda fig, ax, path, *a, **k: (axes.append(ax), finish(fig, ax, path, *a, **k))[1])
    page = write_scorecard_report(tmp_path, "taskfit: intents", card, predictions).read_text()

    caption = "per-class F1: the 30 of 113 classes with the lowest F1 over the candidates"
    assert f"<figcaption>{caption}</figcaption>" in page
    shown, _ = report.shown_classes(results)
    mean = {lab: sum(r.per_class[lab]["f1"] for r in results) / 2 for lab in labels}
    assert max(mean[lab] for lab in shown) <= min(mean[lab] for lab in labels if lab not in shown)
    # the error table: 12 buckets shown of each candidate's, and a line counting the rest
    for r in results:
        left = list(r.error_counts.values())[12:]
        assert len(left) > 0
        assert (f"<td>… {len(left)} more buckets, not shown</td><td>{sum(left)}</td>") in page
    # the confusions plot (113 labels: the commonest pairs as bars) counts rows in whole numbers
    [pairs] = [ax for ax in axes if ax.get_xlabel().startswith("misclassified rows")]
    ticks = [t for t in pairs.get_xticks() if pairs.get_xlim()[0] <= t <= pairs.get_xlim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
