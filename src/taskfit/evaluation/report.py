"""The run report: ``report.md`` and a self-contained ``report.html`` (images inlined)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Sequence

from taskfit.records import EvalResult, Prediction
from taskfit.tasks.extract import shown_fields


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, path: Path, grid_axis: str | None = "both") -> Path:
    """Legend, light grid, tight layout, write the PNG, free the figure."""
    if grid_axis:
        ax.legend()
        ax.grid(axis=grid_axis, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_loss(losses: Sequence[float], path: Path, validations: Sequence[dict[str, Any]] = (),
              metric_name: str | None = None) -> Path:
    """Training loss per step, validation loss at each validation and, on a second axis, the
    task metric measured there."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(range(1, len(losses) + 1), losses, color="#999", lw=0.8, label="train, per step")
    if len(losses) >= 5:
        w = max(2, len(losses) // 10)
        smooth = [sum(losses[max(0, i - w + 1): i + 1]) / len(losses[max(0, i - w + 1): i + 1])
                  for i in range(len(losses))]
        ax.plot(range(1, len(losses) + 1), smooth, color="#1f77b4", lw=2, label=f"train, mean of {w}")
    if validations:
        ax.plot([v["step"] for v in validations], [v["val_loss"] for v in validations], "o-",
                color="#d62728", lw=1.5, label="validation")
        metric = [(v["step"], v["metric"]) for v in validations if v.get("metric") is not None]
        if metric:
            ax2 = ax.twinx()
            ax2.plot(*zip(*metric), "s--", color="#2ca02c", lw=1.2, label=metric_name or "metric")
            ax2.set_ylim(0, 1)
            ax2.set_ylabel(f"validation {metric_name or 'metric'}")
            ax2.legend(loc="center right")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (answer tokens)")
    return _finish(fig, ax, path)


def plot_scores(results: Sequence[EvalResult], path: Path, metrics: Sequence[str]) -> Path:
    """The main metrics per candidate, with 95% bootstrap intervals where known."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(results) + 2), 3.4))
    width = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(results))]
        vals = [r.metrics.get(metric, 0.0) for r in results]
        err = None
        if all(f"{metric}_ci_low" in r.metrics for r in results):  # an interval may miss its estimate by a hair
            err = [[max(0.0, v - r.metrics[f"{metric}_ci_low"]) for v, r in zip(vals, results)],
                   [max(0.0, r.metrics[f"{metric}_ci_high"] - v) for v, r in zip(vals, results)]]
        ax.bar(xs, vals, width, yerr=err, capsize=4, label=metric.replace("_", "-"))
    ax.set_xticks(range(len(results)), [r.candidate for r in results], rotation=15, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out score")
    return _finish(fig, ax, path, grid_axis="y")


def plot_learning_curve(curve: Any, points: Sequence[tuple[int, float, float, float]], path: Path, metric: str,
                        project_to: int, threshold: float | None = None,
                        reference: tuple[str, float, float, float] | None = None) -> Path:
    """The learning curve (a :class:`~taskfit.evaluation.curve.LearningCurve`): each run's score
    with its 95% interval (``points``: rows, score, low, high), the fitted curve and its bootstrap
    band out to ``project_to`` rows (only over the runs when the curve does not rise: it projects
    nothing), the threshold, and the best cheap candidate (``reference``: name, score, low, high)
    as a band."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    reach = max(project_to, points[-1][0]) if curve.rises else points[-1][0]
    xs = np.geomspace(min(p[0] for p in points) / 1.3, reach * 1.3, 120)
    draws = curve.draws
    ys = draws[:, 0][None] - draws[:, 1][None] * np.power(xs[:, None], -draws[:, 2][None])  # (x, resample)
    ax.fill_between(xs, np.percentile(ys, 2.5, axis=1), np.percentile(ys, 97.5, axis=1), color="#1f77b4",
                    alpha=0.15, label="95% band (resampled rows)")
    ax.plot(xs, [curve.at(x) for x in xs], color="#1f77b4", lw=1.8, label="fitted a - b n^-c")
    ax.errorbar([p[0] for p in points], [p[1] for p in points],
                yerr=[[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]], fmt="o", color="#1f77b4",
                capsize=4, label="fine-tune, measured")
    if reference:
        name, value, low, high = reference
        ax.axhspan(low, high, color="#2ca02c", alpha=0.12)
        ax.axhline(value, color="#2ca02c", lw=1.2, label=f"{name} (measured)")
    if threshold is not None:
        ax.axhline(threshold, color="#d62728", ls="--", lw=1.2, label=f"threshold {threshold:g}")
    ax.axvline(project_to, color="#777", ls=":", lw=1, label=f"all training rows ({project_to})")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("training rows (log scale)")
    ax.set_ylabel(f"held-out {metric.replace('_', '-')}")
    return _finish(fig, ax, path)


def plot_latency(latencies: dict[str, list[float]], path: Path) -> Path:
    """Evaluation time per example per candidate (box: quartiles; whiskers: 5th-95th percentile);
    a batch's time is shared among its rows (what a query costs at that throughput)."""
    plt = _plt()
    names = [n for n, v in latencies.items() if v]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) + 2), 3.2))
    ax.boxplot([[1000 * x for x in latencies[n]] for n in names], whis=(5, 95), showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=15, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("time per example (ms, log scale)")
    return _finish(fig, ax, path, grid_axis=None)


def plot_coverage(curves: dict[str, list[tuple[float, float, float]]], path: Path) -> Path:
    """Accuracy on the rows answered against the share answered, as the confidence threshold rises."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, points in curves.items():
        ax.plot([c for _, c, _ in points], [a for _, _, a in points], label=name)
    ax.set_xlabel("coverage (share answered, not sent to the fallback)")
    ax.set_ylabel("accuracy on answered rows")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    return _finish(fig, ax, path)


def _grouped_bars(results: Sequence[EvalResult], keys: Sequence[str], figure: str, ylabel: str,
                  path: Path) -> Path:
    """One group of bars per key of ``per_class`` (a label, a field), one bar per candidate."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(7, 0.3 * len(keys) + 3), 3.4))
    width = 0.8 / len(results)
    for j, r in enumerate(results):
        xs = [i + (j - (len(results) - 1) / 2) * width for i in range(len(keys))]
        ax.bar(xs, [r.per_class.get(k, {}).get(figure, 0.0) for k in keys], width, label=r.candidate)
    ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    # above the axes: inside, it would hide the bars, which fill the plot up to 1
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(results), 4), frameon=False)
    return _finish(fig, ax, path, grid_axis=None)


def shown_classes(results: Sequence[EvalResult], most: int = 30) -> tuple[list[str], str]:
    """The classes the per-class plot shows, and a caption that says which: every class the
    held-out rows have or a candidate predicts, or with more than ``most`` of them the ``most``
    with the lowest F1 averaged over the candidates (the weak ones; ties: the most held-out rows
    first). Picking by support alone said nothing where nearly every class has a few rows."""
    seen = {lab for r in results for lab, row, column in zip(r.labels, r.confusion, zip(*r.confusion))
            if sum(row) or sum(column)}
    present = [lab for lab in results[0].labels if lab in seen]
    if len(present) <= most:
        return present, f"per-class F1 (all {len(present)} classes)"
    figure = {lab: [r.per_class.get(lab, {}) for r in results] for lab in present}
    shown = sorted(present, key=lambda lab: (sum(f.get("f1", 0.0) for f in figure[lab]) / len(results),
                                             -max(f.get("support", 0) for f in figure[lab])))[:most]
    over = " over the candidates" if len(results) > 1 else ""
    return shown, f"per-class F1: the {most} of {len(present)} classes with the lowest F1{over}"


def plot_per_class(results: Sequence[EvalResult], path: Path, most: int = 30) -> Path:
    """Per-class F1 per candidate, for the classes :func:`shown_classes` picks."""
    labels, _ = shown_classes(results, most)
    return _grouped_bars(results, labels, "f1", "F1", path)


def plot_per_field(results: Sequence[EvalResult], path: Path, figure: str = "accuracy", most: int = 30) -> Path:
    """extract: a per-field figure per candidate (``accuracy``: a row where both leave the field
    empty counts as right; ``f1``); with many fields, the ``most`` with the most support."""
    ylabel = {"accuracy": "accuracy (rows with the field right)", "f1": "F1 (field = value pairs)"}[figure]
    return _grouped_bars(results, shown_fields(results, most), figure, ylabel, path)


def plot_confusion(result: EvalResult, path: Path) -> Path:
    plt = _plt()
    n = len(result.labels)
    if n > 40:  # 150 intents: a matrix of dots says nothing; the error buckets list the confusions
        return _plot_confusion_pairs(result, path)
    fig, ax = plt.subplots(figsize=(0.55 * n + 2.5, 0.55 * n + 1.8))
    ax.imshow(result.confusion, cmap="Blues")
    for i in range(n):
        for j in range(n):
            v = result.confusion[i][j]
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color="white" if v > max(map(max, result.confusion)) / 2 else "black")
    ax.set_xticks(range(n), result.labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), result.labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix: {result.candidate}")
    return _finish(fig, ax, path, grid_axis=None)


def _plot_confusion_pairs(result: EvalResult, path: Path, most: int = 15) -> Path:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    pairs = sorted(((result.confusion[i][j], f"{result.labels[i]} -> {result.labels[j]}")
                    for i in range(len(result.labels)) for j in range(len(result.labels))
                    if i != j and result.confusion[i][j]), reverse=True)[:most]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(pairs) + 1.5))
    ax.barh([p for _, p in pairs][::-1], [c for c, _ in pairs][::-1], color="#d62728")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rows are counted: no 0.25 of one
    ax.set_xlabel("misclassified rows (true -> predicted)")
    ax.set_title(f"most frequent confusions: {result.candidate}")
    return _finish(fig, ax, path, grid_axis=None)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    out = f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in header)
    out += "</tr></thead><tbody>"
    out += "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return out + "</tbody></table>"


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; } th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } .verdict { font-size: 1.15em; padding: .6em 1em; background: #eef6ee; border-left: 4px solid #3a3; }
.success { font-style: italic; color: #444; }
.warning { padding: .5em 1em; background: #fff6e0; border-left: 4px solid #e90; }
figure { display: inline-block; margin: .5em; } img { max-width: 100%; } details { margin: .4em 0; }
"""


def error_section(results: Sequence[EvalResult], most: int = 12) -> str:
    """Error buckets per candidate: counts, and a few example misses in each; the ``most``
    largest buckets, and a line for those left out."""
    parts = []
    for r in results:
        if not r.error_counts:
            continue
        rows = []
        for bucket, count in list(r.error_counts.items())[:most]:
            examples = r.errors.get(bucket, [])
            shown = " | ".join(f"{e.get('input', '')[:80]!r} expected {e.get('expected', '')[:60]!r}, "
                               f"got {e.get('got', '')[:60]!r}" + (f" ({e['detail']})" if e.get("detail") else "")
                               for e in examples[:2])
            rows.append([bucket, str(count), shown])
        left = list(r.error_counts.values())[most:]
        if left:
            rows.append([f"… {len(left)} more buckets, not shown", str(sum(left)), ""])
        parts.append(f"<details><summary><b>{html.escape(r.candidate)}</b>: "
                     f"{sum(r.error_counts.values())} misses in {len(r.error_counts)} buckets</summary>"
                     + _table(["bucket", "count", "examples"], rows, "errors") + "</details>")
    return "".join(parts) or "<p>No misses.</p>"


def per_field_section(results: Sequence[EvalResult]) -> str:
    """extract: one table with a row per field and a column per candidate (accuracy / F1), then
    each candidate's full figures per field, folded."""
    names = shown_fields(results)
    if not names:
        return "<p>No field in the gold records or the answers.</p>"
    support = {k: max(r.per_class.get(k, {}).get("support", 0) for r in results) for k in names}
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    rows = [[k, str(support[k])] + [f"{pct(r.per_class[k]['accuracy'])} / {pct(r.per_class[k]['f1'])}"
                                    if k in r.per_class else "n/a" for r in results] for k in names]
    parts = [_table(["field", "support"] + [f"{r.candidate}: accuracy / F1" for r in results], rows,
                    "per-field")]
    for r in results:
        detail = [[k, str(f["support"]), pct(f["accuracy"]), pct(f["precision"]), pct(f["recall"]),
                   pct(f["f1"]), str(f["missing"]), str(f["invented"]), str(f["wrong"])]
                  for k in names if (f := r.per_class.get(k))]
        parts.append(f"<details><summary><b>{html.escape(r.candidate)}</b>: figures per field</summary>"
                     + _table(["field", "support", "accuracy", "precision", "recall", "F1", "missing",
                               "invented", "wrong"], detail, "per-field-detail") + "</details>")
    return ("<p>Accuracy: share of rows whose answer has the field's gold value, a row where both "
            "leave it empty (absent, null or empty) counting as right, so a field most rows lack scores "
            "near 100% unless it is invented. Precision: share of the "
            "answers' values for the field that are right; recall: share of the gold values found. "
            "Support: rows whose gold record has the field.</p>"
            + "".join(parts))


def advice_section(advice: Any, plot: Path | None = None) -> str:
    """``taskfit advise``'s advice (an :class:`~taskfit.evaluation.advice.Advice`): its headline,
    each section's words and table, and the learning curve."""
    from taskfit.evaluation.advice import CURVE_SECTION

    parts = [f'<p class="verdict" id="advice">{html.escape(advice.headline)}</p>']
    for section in advice.sections:
        parts.append(f"<h3>{html.escape(section.title)}</h3>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        if section.table:
            parts.append(_table(*section.table, "advice"))
        if plot is not None and plot.exists() and section.title == CURVE_SECTION:
            parts.append(_img(plot, "learning curve"))
    return "".join(parts)


def forgetting_section(card: Any) -> str:
    """The forgetting check: how it is measured, the probe's source and licence, the table, and
    why a fine-tune was not measured."""
    table = card.forgetting_table()
    skipped = [f for f in card.forgetting if f.skipped]
    if table is None and not skipped:
        return ""
    parts = ["<h2>Outside the task: the forgetting check</h2>"]
    if table is not None:
        _, header, rows = table
        probe = next(f for f in card.forgetting if not f.skipped)
        parts.append(
            f"<p>The base model and each fine-tune read the same {probe.n} general items (a passage, a "
            "question and its short gold answer, after three solved ones, in the model's chat template) "
            "once each, teacher-forced. <i>Answered right</i>: every token of the gold answer is the "
            "model's greedy choice given the ones before (greedy decoding would write it); <i>log-prob</i>: "
            "the mean log-probability of those tokens (nats); intervals: paired bootstrap over the items; "
            "<i>KL</i>: how far the fine-tuned next-token distribution moved from the base's at those "
            f"positions (nats per token). The verdict warns when the share answered right falls more than "
            f"{100 * card.max_drop:.1f} points (eval.forgetting.max_drop).</p>"
            f'<p class="probe">Probe: {html.escape(probe.probe)}; licence {html.escape(probe.licence)} '
            "(taskfit/probes/SOURCE.md).</p>")
        parts.append(_table(header, rows, "forgetting"))
    parts += [f"<p>{html.escape(f.candidate)}: {html.escape(f.skipped)}.</p>" for f in skipped]
    return "\n".join(parts)


def write_scorecard_report(root: Path, title: str, card: Any, predictions: dict[str, Sequence[Prediction]],
                           data_card: str = "", facts: dict[str, Any] | None = None,
                           extra_plots: dict[str, Path] | None = None, success: str | None = None,
                           advice: str = "") -> Path:
    """A self-contained ``report.html`` (images inlined, no network): verdict, scorecard, paired
    tests, ``taskfit advise``'s advice (``advice``: :func:`advice_section`'s HTML) when there is
    one, figures, error buckets with examples, and the data summary. ``success`` (the project's
    task.success) is shown under the title: what the numbers below are meant to show."""
    plots_dir = root / "plots"
    plots_dir.mkdir(exist_ok=True)
    results = card.results
    main = [c.metric for c in card.columns[:2] if c.share]
    plots = dict(extra_plots or {})
    plots["held-out scores (95% CI)"] = plot_scores(results, plots_dir / "scores.png", main)
    latencies = {name: [p.latency_s for p in preds] for name, preds in predictions.items()}
    if any(latencies.values()):
        plots["evaluation time per example (batched rows share their batch's time)"] = plot_latency(latencies, plots_dir / "latency.png")
    labelled = [r for r in results if r.confusion]  # answers from a fixed set of labels
    if labelled:
        plots[shown_classes(labelled)[1]] = plot_per_class(labelled, plots_dir / "per_class_f1.png")
        best = max(labelled, key=lambda r: r.metrics[card.main])
        plots[f"confusions ({best.candidate})"] = plot_confusion(best, plots_dir / "confusion.png")
    curves = {r.candidate: r.curves["coverage"] for r in results if r.curves.get("coverage")}
    if curves:
        plots["coverage against accuracy"] = plot_coverage(curves, plots_dir / "coverage.png")
    fielded = [r for r in results if r.per_class and not r.confusion]  # figures per field (extract)
    if fielded and shown_fields(fielded):
        plots["per-field accuracy"] = plot_per_field(fielded, plots_dir / "per_field_accuracy.png")
        # where most rows leave a field empty, its accuracy is near 1 whatever the model does; F1 tells
        plots["per-field F1"] = plot_per_field(fielded, plots_dir / "per_field_f1.png", "f1")
    tests = [[t.candidate, t.against, t.test, f"{100 * t.difference:+.1f} pts",
              f"[{100 * t.ci[0]:+.1f}, {100 * t.ci[1]:+.1f}]" if t.ci else "-", t.p_shown,
              str(t.rows_needed or "-")] for t in card.tests]
    facts_html = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                         for k, v in (facts or {}).items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
{f'<p class="success" id="success"><b>Success means:</b> {html.escape(success)}</p>' if success else ''}
<p class="verdict" id="verdict">{html.escape(card.verdict)}</p>
{''.join(f'<p class="warning">{html.escape(w)}</p>' for w in card.warnings)}
<h2>Scorecard (held-out split)</h2>
{_table(card.header, card.rows(), "scorecard")}
{''.join(f'<p class="review">{html.escape(r)}</p>' for r in card.reviews + card.notes)}
<h2>Paired tests against the best baseline</h2>
{_table(["candidate", "against", "test", "difference", "95% CI", "p", "rows to detect"], tests, "tests") if tests else "<p>No fine-tuned candidate yet.</p>"}
{forgetting_section(card)}
{"<h2>Per field</h2>" + per_field_section(fielded) if fielded else ""}
{"<h2>Advice (taskfit advise)</h2>" + advice if advice else ""}
<h2>Figures</h2>
{''.join(_img(p, name) for name, p in plots.items())}
<h2>Where the misses are</h2>
{error_section(results)}
<h2>Data</h2>
<p>{html.escape(data_card)}</p>
{f"<ul>{facts_html}</ul>" if facts_html else ""}
</body></html>
"""
    out = root / "report.html"
    out.write_text(page, encoding="utf-8")
    return out

