"""The run report: ``report.md`` and a self-contained ``report.html`` (images inlined)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Sequence

from taskfit.records import EvalResult


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


def plot_scores(results: Sequence[EvalResult], path: Path) -> Path:
    """Accuracy and macro-F1 per candidate, with 95% bootstrap intervals."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.38
    for j, metric in enumerate(("accuracy", "macro_f1")):
        xs = [i + (j - 0.5) * width for i in range(len(results))]
        vals = [r.metrics[metric] for r in results]
        err = [[v - r.metrics[f"{metric}_ci_low"] for v, r in zip(vals, results)],
               [r.metrics[f"{metric}_ci_high"] - v for v, r in zip(vals, results)]]
        ax.bar(xs, vals, width, yerr=err, capsize=4, label=metric.replace("_", "-"))
    ax.set_xticks(range(len(results)), [r.candidate for r in results])
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out score")
    return _finish(fig, ax, path, grid_axis="y")


def plot_per_class(results: Sequence[EvalResult], path: Path) -> Path:
    plt = _plt()
    labels = results[0].labels
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / len(results)
    for j, r in enumerate(results):
        xs = [i + (j - (len(results) - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, [r.per_class[lab]["f1"] for lab in labels], width, label=r.candidate)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    return _finish(fig, ax, path, grid_axis="y")


def plot_confusion(result: EvalResult, path: Path) -> Path:
    plt = _plt()
    n = len(result.labels)
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


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def scorecard_rows(results: Sequence[EvalResult], thresholds: dict[str, float]) -> list[list[str]]:
    """The comparison table as strings: one row per candidate."""
    rows = []
    for r in results:
        m = r.metrics
        checks = [f"{k} {'pass' if m.get(k, m.get(k + '_constrained', 0)) >= v else 'FAIL'}"
                  for k, v in thresholds.items()]
        rows.append([
            r.candidate,
            f"{_pct(m['accuracy'])} [{_pct(m['accuracy_ci_low'])}, {_pct(m['accuracy_ci_high'])}]",
            f"{_pct(m['macro_f1'])} [{_pct(m['macro_f1_ci_low'])}, {_pct(m['macro_f1_ci_high'])}]",
            _pct(m["valid_rate"]) if "valid_rate" in m else "n/a",
            f"{1000 * m['latency_p50_s']:.0f} / {1000 * m['latency_p95_s']:.0f}",
            f"{m['prompt_tokens_mean']:.0f}",
            ", ".join(checks) or "-",
        ])
    return rows


HEADER = ["candidate", "accuracy [95% CI]", "macro-F1 [95% CI]", "valid labels (free decoding)",
          "latency p50 / p95 (ms)", "prompt tokens", "thresholds"]


def scorecard_markdown(results: Sequence[EvalResult], thresholds: dict[str, float]) -> list[str]:
    """The scorecard as Markdown table lines (the report and the model card show the same one)."""
    return (["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
            + ["| " + " | ".join(r) + " |" for r in scorecard_rows(results, thresholds)])


def write_report(run_root: Path, title: str, facts: dict[str, Any], results: Sequence[EvalResult],
                 thresholds: dict[str, float], plots: dict[str, Path], verdict: str) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``run_root``; return both paths."""
    rows = scorecard_rows(results, thresholds)
    md = [f"# {title}", "", verdict, "", "## Scorecard (held-out split)", ""]
    md += scorecard_markdown(results, thresholds)
    md += ["", "Accuracy and macro-F1 come from ranking the taxonomy's labels by the model's "
           "likelihood (always a valid label). 'Valid labels' is the share of a sample of freely "
           "decoded answers that were exactly a label.", "", "## Run", ""]
    md += [f"- **{k}**: {v}" for k, v in facts.items()]
    md += ["", "## Figures", ""]
    md += [f"![{name}]({path.relative_to(run_root)})" for name, path in plots.items()]
    md_path = run_root / "report.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")

    def img(path: Path, alt: str) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'

    table = "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in HEADER) + "</tr></thead><tbody>"
    table += "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    table += "</tbody></table>"
    facts_html = "<ul>" + "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                                  for k, v in facts.items()) + "</ul>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
th {{ background: #f3f3f3; }} .verdict {{ font-size: 1.15em; padding: .6em 1em; background: #eef6ee; border-left: 4px solid #3a3; }}
figure {{ display: inline-block; margin: .5em; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="verdict" id="verdict">{html.escape(verdict)}</p>
<h2>Scorecard (held-out split)</h2>
{table}
<p>Accuracy and macro-F1 come from ranking the taxonomy's labels by the model's likelihood (always a valid
label). "Valid labels" is the share of a sample of freely decoded answers that were exactly a label.</p>
<h2>Run</h2>
{facts_html}
<h2>Figures</h2>
{''.join(img(p, name) for name, p in plots.items())}
</body></html>
"""
    html_path = run_root / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return md_path, html_path
