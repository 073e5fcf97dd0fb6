"""``monitor.json`` and a self-contained ``monitor.html`` (figures inlined, no network), in the
run report's style and with its helpers."""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from taskfit.evaluation.report import STYLE, _finish, _img, _plt, _table
from taskfit.monitoring.drift import Signal

MONITOR_STYLE = STYLE + """
.alert { padding: .5em 1em; background: #fdecea; border-left: 4px solid #c62828; }
.drift { color: #c62828; font-weight: bold; } q { font-style: italic; }
"""


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null; paths become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def result_json(result: Any) -> dict[str, Any]:
    """The result as ``monitor.json`` holds it: every window with its signals, and the alerts."""
    from taskfit.monitoring.monitor import stamp

    data = asdict(result)
    for window, raw in zip(result.windows, data["windows"]):
        raw.update(label=window.label, start_iso=stamp(window.start), end_iso=stamp(window.end),
                   error_rate=window.error_rate)
    data["latest_window"] = result.latest.label
    data.pop("json_path"), data.pop("html_path")
    return _clean(data)


def _times(windows: Sequence[Any]) -> list[datetime]:
    return [datetime.fromtimestamp(w.end) for w in windows]


def _time_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("window end")


def plot_traffic(windows: Sequence[Any], path: Path) -> Path:
    """Requests per window (bars) and the share that failed on the server (line)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    times = _times(windows)
    width = (windows[0].end - windows[0].start) / 86400 * 0.8  # days, as matplotlib dates count
    ax.bar(times, [w.requests for w in windows], width=width, color="#9ecae1", label="requests")
    ax.set_ylabel("requests per window")
    ax2 = ax.twinx()
    ax2.plot(times, [100 * w.error_rate for w in windows], "o-", color="#d62728", label="server errors (%)")
    ax2.set_ylabel("server errors (% of requests)")
    ax2.set_ylim(bottom=0)
    ax2.legend(loc="upper right")
    _time_axis(ax)
    return _finish(fig, ax, path, grid_axis="y")


def plot_latency(windows: Sequence[Any], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    shown = [w for w in windows if w.latency_p50_ms is not None]
    for attr, name, color in (("latency_p50_ms", "p50", "#1f77b4"), ("latency_p95_ms", "p95", "#ff7f0e")):
        ax.plot(_times(shown), [getattr(w, attr) for w in shown], "o-", color=color, label=name)
    ax.set_ylabel("latency of answered requests (ms)")
    ax.set_ylim(bottom=0)
    _time_axis(ax)
    return _finish(fig, ax, path)


def plot_psi(windows: Sequence[Any], path: Path, warn: float, alert: float) -> Path:
    """PSI of every category mix per judged window, over the 0.1 / 0.2 bands."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    judged = [w for w in windows if w.judged]
    names = sorted({s.name for w in judged for s in w.signals if s.psi is not None})
    for name in names[:12]:
        points = [(datetime.fromtimestamp(w.end), s.psi) for w in judged for s in w.signals if s.name == name]
        ax.plot(*zip(*points), "o-", label=name)
    ax.axhspan(warn, alert, color="#fff3cd", alpha=0.6, lw=0)
    ax.axhline(alert, color="#c62828", ls="--", lw=1, label=f"significant ({alert:g})")
    ax.axhline(warn, color="#e69500", ls=":", lw=1, label=f"moderate ({warn:g})")
    ax.set_ylabel("population stability index")
    ax.set_ylim(bottom=0)
    _time_axis(ax)
    return _finish(fig, ax, path)


def plot_content(windows: Sequence[Any], path: Path) -> Path:
    """The domain classifier's ROC AUC per judged window, with the AUC above which it drifts."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    points = [(datetime.fromtimestamp(w.end), s) for w in windows if w.judged for s in w.signals if s.kind == "content"]
    ax.plot([t for t, _ in points], [s.statistic for _, s in points], "o-", color="#1f77b4", label="ROC AUC")
    ax.plot([t for t, _ in points], [s.threshold for _, s in points], "_", ms=18, mew=2, color="#c62828",
            label="drift above")
    ax.axhline(0.5, color="#999", lw=0.8)
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("recent vs training: ROC AUC")
    _time_axis(ax)
    return _finish(fig, ax, path)


def plot_confidence(windows: Sequence[Any], path: Path) -> Path:
    """classify: the confidence's 10th, 50th and 90th percentiles per window, and the fallback rate."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    shown = [w for w in windows if w.confidence]
    times = _times(shown)
    ax.fill_between(times, [w.confidence["p10"] for w in shown], [w.confidence["p90"] for w in shown],
                    color="#c6dbef", label="confidence p10-p90")
    ax.plot(times, [w.confidence["p50"] for w in shown], "o-", color="#08519c", label="median confidence")
    rates = [(t, w.fallback_rate) for t, w in zip(times, shown) if w.fallback_rate is not None]
    if rates:
        ax.plot(*zip(*rates), "s--", color="#d62728", label="fallback rate")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("share")
    _time_axis(ax)
    return _finish(fig, ax, path)


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _summary_cell(signal: Signal, side: dict[str, Any]) -> str:
    if signal.kind == "numeric":
        return f"mean {side['mean']:.3g}, median {side['p50']:.3g} (n={side['n']})"
    if signal.kind == "categorical":
        top = sorted(side["shares"].items(), key=lambda kv: -kv[1])[:3]
        return ", ".join(f"{k} {100 * v:.0f}%" for k, v in top) + f" (n={side['n']})"
    return f"{side['n']} rows"


def _signals_table(signals: Sequence[Signal]) -> str:
    rows = [[s.name, s.test, _number(s.statistic), s.rule,
             "-" if s.psi is None else f"{s.psi:.3f} ({s.band})", _summary_cell(s, s.reference),
             _summary_cell(s, s.current), "DRIFT" if s.drift else "ok"] for s in signals]
    return _table(["signal", "test", "statistic", "drift when", "PSI", "training", "this window", "verdict"],
                  rows, "signals")


def _mix_tables(signals: Sequence[Signal]) -> str:
    parts = []
    for s in signals:
        if s.kind != "categorical":
            continue
        rows = [[k, f"{100 * v:.1f}%", f"{100 * s.current['shares'].get(k, 0):.1f}%",
                 f"{100 * (s.current['shares'].get(k, 0) - v):+.1f} pts"] for k, v in s.reference["shares"].items()]
        parts.append(f"<details{' open' if s.drift else ''}><summary><b>{html.escape(s.name)}</b>: PSI "
                     f"{s.psi:.3f} ({s.band})</summary>"
                     + _table(["category", "training", "this window", "change"], rows, "mix") + "</details>")
    return "".join(parts)


def _content_section(signal: Signal | None) -> str:
    if signal is None:
        return "<p>The content was not compared (no window with enough answered requests).</p>"
    note = ("These words and requests are why the classifier tells this window from the training rows."
            if signal.drift else "No content drift: the words below are the strongest of chance differences.")
    words = [[w["word"], f"{w['weight']:.2f}", f"{100 * w['current_share']:.0f}%", f"{100 * w['reference_share']:.0f}%"]
             for w in signal.detail["words"]]
    requests = "".join(f"<li><q>{html.escape(r['text'][:400])}</q> (p={r['probability']:.2f})</li>"
                       for r in signal.detail["requests"])
    return (f"<p>{html.escape(note)} ROC AUC {signal.statistic:.3f}; drift above {signal.threshold:.3f}.</p>"
            + _table(["word or pair", "weight", "requests with it (window)", "training rows with it"], words,
                     "words")
            + f"<p>Requests most typical of this window (held-out-fold probability of being recent):</p>"
              f"<ol id=\"typical\">{requests}</ol>")


def _windows_table(windows: Sequence[Any], min_rows: int) -> str:
    rows = []
    for w in reversed(windows):
        conf = "-" if not w.confidence else f"{w.confidence['mean']:.2f}"
        fallback = "-" if w.fallback_rate is None else f"{100 * w.fallback_rate:.1f}%"
        rows.append([w.label, str(w.requests), str(w.answered), str(w.client_errors), str(w.server_errors),
                     f"{100 * w.error_rate:.1f}%", _number(w.latency_p50_ms, 4), _number(w.latency_p95_ms, 4),
                     conf, fallback, w.mix_text() or "-", w.verdict(min_rows)])
    return _table(["window", "requests", "answered", "4xx", "5xx", "server errors", "latency p50 (ms)",
                   "latency p95 (ms)", "mean confidence", "fallback", "answers", "drift"], rows, "windows")


def write_monitor_report(result: Any, out_dir: Path) -> Any:
    """Write ``monitor.json`` and ``monitor.html`` (figures in ``plots/``, inlined) and return the
    result with their paths."""
    from taskfit.monitoring.monitor import span_text, stamp

    out_dir.mkdir(parents=True, exist_ok=True)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    json_path = out_dir / "monitor.json"
    json_path.write_text(json.dumps(result_json(result), indent=1, ensure_ascii=False), encoding="utf-8")
    windows, settings, latest = result.windows, result.settings, result.latest
    plots = {"traffic and server errors": plot_traffic(windows, plots_dir / "traffic.png"),
             "latency": plot_latency(windows, plots_dir / "latency.png")}
    if any(s.psi is not None for w in windows for s in w.signals):
        plots["answer mixes against training (PSI)"] = plot_psi(windows, plots_dir / "psi.png",
                                                                settings["psi_warn"], settings["psi_alert"])
    if any(s.kind == "content" for w in windows for s in w.signals):
        plots["content drift (domain classifier)"] = plot_content(windows, plots_dir / "content.png")
    if any(w.confidence for w in windows):
        plots["confidence and fallbacks"] = plot_confidence(windows, plots_dir / "confidence.png")
    if result.alerts:
        head = "".join(f'<p class="alert">{html.escape(a.reason)}</p>' for a in result.alerts)
    elif not latest.judged:
        head = (f'<p class="warning">No alert; the latest window has {latest.answered} answered requests, fewer '
                f"than monitor.min_window_rows ({settings['min_window_rows']}): its drift is not judged.</p>")
    else:
        head = '<p class="verdict">No alert: the latest window looks like the training data.</p>'
    judged = [w for w in windows if w.judged]
    shown = judged[-1] if judged else latest
    content = next((s for s in shown.signals if s.kind == "content"), None)
    period = f"since {stamp(result.since)}" if result.since else "every request in the log"
    title = f"taskfit monitor: {result.model}"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{MONITOR_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Project {html.escape(str(result.project))} ({html.escape(result.kind)}); log {html.escape(str(result.log))};
{html.escape(period)}, in windows of {span_text(result.window_s)}. Reference: {result.reference_rows} training
rows ({result.held_out_rows} held-out rows for the vocabulary).</p>
<div id="alerts">{head}</div>
<h2>Latest judged window: {html.escape(shown.label)}</h2>
{_signals_table(shown.signals) if shown.signals else "<p>No window had enough answered requests to judge.</p>"}
{_mix_tables(shown.signals)}
<h3>What is most typical of these requests</h3>
{_content_section(content)}
<h2>Over time</h2>
{_windows_table(windows, settings["min_window_rows"])}
<h2>Figures</h2>
{''.join(_img(p, name) for name, p in plots.items())}
<h2>Settings (monitor: in taskfit.yaml)</h2>
{_table(["key", "value"], [[k, str(v)] for k, v in settings.items()], "settings")}
</body></html>
"""
    html_path = out_dir / "monitor.html"
    html_path.write_text(page, encoding="utf-8")
    return replace(result, json_path=json_path, html_path=html_path)
