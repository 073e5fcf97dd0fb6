"""``taskfit monitor``: the request log against the training data, window by window.

Reads one served model's requests from the log, cuts them into windows (``monitor.window``,
counted back from the newest request), and for each window reports traffic, errors, latency and,
for classify, confidence and fallbacks; then, in windows with at least ``monitor.min_window_rows``
answered requests, tests whether the inputs and the answers still look like the training data
(see :mod:`taskfit.monitoring.drift`). Alerts judge the latest window only: a cron job running
the command once a window acts on the traffic since its last run, and a drift that has passed
stops alerting. Nothing here loads a model: the training rows come from the data checks alone.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from taskfit.config import MonitorSpec
from taskfit.errors import ConfigError, DataError
from taskfit.monitoring.drift import Signal, compare_categorical, compare_numeric, content_drift, summary
from taskfit.monitoring.requests import (LoggedRequest, ShadowSummary, models_in_log, open_log, read_requests,
                                         shadow_summary, unnamed_requests)
from taskfit.progress import Reporter, Silent

ALERT_EXIT_CODE = 6  # `taskfit monitor` found something to act on (not an error: errors exit 1-5)
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_WORD = re.compile(r"[^\W\d_]{2,}")  # letters only: order numbers and amounts are new in every request


def parse_span(text: str, key: str) -> float:
    """``30m``, ``12h``, ``1d``, ``2w`` → seconds; a ConfigError naming ``key`` otherwise."""
    match = _SPAN.match(text or "")
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{key}: got {text!r}; expected a number and m, h, d or w (30m, 12h, 1d, 2w)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_since(text: str, key: str, now: float) -> float:
    """A span back from ``now`` (``2d``) or an ISO date or time (local time unless it has an
    offset) → epoch seconds."""
    if _SPAN.match(text):
        return now - parse_span(text, key)
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ConfigError(f"{key}: got {text!r}; expected an ISO date or time (2026-01-31, "
                          "2026-01-31T08:00) or a span back from now (2d, 12h)") from None


def distinct(texts: Sequence[str], data: Any) -> list[str]:
    """The texts without those that repeat an earlier one, exactly or nearly, by the data checks'
    own test and settings (``data.dedup``): the window passes the filter the training rows passed.
    Without it, a customer's re-sent ticket lands in one fold and its twin in another, and the
    domain classifier recognises the twin: traffic like the training data then looks drifted."""
    from taskfit.data.lookalike import MinHashIndex, normalise

    d = data.dedup
    index = MinHashIndex(d.shingle, d.num_perm, d.threshold, d.containment) if d.near else None
    seen: set[str] = set()
    kept = []
    sigs = index.signatures(texts) if index is not None else [None] * len(texts)
    probes = index.probe([sig for sig, _ in sigs]) if index is not None else sigs
    for text, made, probe in zip(texts, sigs, probes):
        key = normalise(text)
        if key in seen:
            continue
        seen.add(key)
        if index is not None:
            sig, size = made
            if index.matches(sig, size, probe):
                continue
            index.insert(sig, size, probe)
        kept.append(text)
    return kept


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def oov_share(text: str, vocabulary: set[str]) -> float:
    """Share of a text's words (letters only, two or more) that no training input contains."""
    found = words(text)
    return sum(w not in vocabulary for w in found) / len(found) if found else 0.0


def stamp(ts: float, seconds: bool = False) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds" if seconds else "minutes")


def span_text(seconds: float) -> str:
    """A window's length as a person says it: "30 s", "1 min", "6 h", "1 day", "7 days"."""
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0 or seconds >= size * 10:
            n = seconds / size
            text = f"{n:g}" if n == int(n) else f"{n:.1f}"
            return f"{text} {unit}{'s' if unit == 'day' and n != 1 else ''}"
    return f"{seconds:g} s"


@dataclass(frozen=True)
class Reference:
    """What a window is compared with: the training rows' inputs and answers' facets, the training
    vocabulary, and the held-out rows' out-of-vocabulary shares against it (the training rows'
    own share is zero by construction, so held-out rows stand for unseen traffic like training)."""

    inputs: list[str]
    lengths: list[float]
    facets: dict[str, list[str]]
    vocabulary: set[str]
    held_out_oov: list[float]

    @classmethod
    def of(cls, train: Sequence[Any], held_out: Sequence[Any], facets_of: Any) -> "Reference":
        inputs = [_input(r) for r in train]
        vocabulary = {w for text in inputs for w in words(text)}
        facets: dict[str, list[str]] = {}
        for r in train:
            for name, value in facets_of(_answer(r)).items():
                facets.setdefault(name, []).append(value)
        return cls(inputs=inputs, lengths=[len(t.split()) for t in inputs], facets=facets,
                   vocabulary=vocabulary, held_out_oov=[oov_share(_input(r), vocabulary) for r in held_out])


def _input(record: Any) -> str:
    return record.prompt if hasattr(record, "prompt") else record.input


def _answer(record: Any) -> str:
    return record.chosen if hasattr(record, "chosen") else record.target


@dataclass(frozen=True)
class Window:
    """One window of traffic ``[start, end)``: operations for every request, drift signals for the
    answered ones when there are at least ``min_window_rows`` of them."""

    start: float
    end: float
    requests: int
    answered: int
    client_errors: int  # 4xx: refused requests (keys, limits, bad input)
    server_errors: int  # 5xx: failures and timeouts
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    confidence: dict[str, Any] | None
    fallback_rate: float | None
    judged: bool
    signals: list[Signal] = field(default_factory=list)
    # the answers' categories (classify: "label mix"), counted in every window, judged or not
    mix: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        short = self.end - self.start < 3600  # minutes alone would give windows of a minute one label
        return f"{stamp(self.start, short)} to {stamp(self.end, short)}"

    @property
    def error_rate(self) -> float:
        return self.server_errors / self.requests if self.requests else 0.0

    def mix_text(self, top: int = 5) -> str:
        """Each answer category's most frequent values with their counts, in words ("" if none).
        Categories that took one value in every answer are named together after that value
        ("empty 35: field sort, field poi"): an extract schema of 39 fields, most never filled,
        made one line of 40 categories."""
        parts, alike = [], {}
        for name, counts in self.mix.items():
            if len(counts) == 1:
                alike.setdefault(next(iter(counts.items())), []).append(name)
                continue
            shown = ", ".join(f"{value} {n}" for value, n in list(counts.items())[:top])
            more = f", {len(counts) - top} more" if len(counts) > top else ""
            parts.append(f"{name}: {shown}{more}")
        for (value, n), names in alike.items():
            parts.append(f"{names[0]}: {value} {n}" if len(names) == 1 else f"{value} {n}: {', '.join(names)}")
        return "; ".join(parts)

    def verdict(self, min_rows: int) -> str:
        """The drifted signals' names, "no drift", or why the window was not judged."""
        if not self.judged:
            return f"not judged ({self.answered} answered < {min_rows})"
        return ", ".join(s.name for s in self.signals if s.drift) or "no drift"


@dataclass(frozen=True)
class Alert:
    signal: str
    reason: str


@dataclass(frozen=True)
class MonitorResult:
    project: Path
    model: str
    log: Path
    kind: str
    since: float | None
    window_s: float
    reference_rows: int
    held_out_rows: int
    windows: list[Window]
    alerts: list[Alert]
    settings: dict[str, Any]
    shadow: ShadowSummary | None = None  # NAME@candidate's shadow answers beside production's
    unnamed: int = 0  # requests in the period refused before a model was read (no model to count them under)
    json_path: Path | None = None
    html_path: Path | None = None

    @property
    def latest(self) -> Window:
        return self.windows[-1]


def cut_windows(requests: Sequence[LoggedRequest], window_s: float, since: float | None) -> list[tuple[float, float, list[LoggedRequest]]]:
    """Windows of ``window_s`` seconds, the last one ending just after the newest request, back to
    ``since`` (or the oldest request); oldest first, empty ones included (no traffic is news too)."""
    end = requests[-1].created + 1e-3
    first = since if since is not None else requests[0].created
    bounds = []
    while end > first:
        bounds.append((end - window_s, end))
        end -= window_s
    bounds.reverse()
    out, i = [], 0
    for start, stop in bounds:
        chunk = []
        while i < len(requests) and requests[i].created < stop:
            if requests[i].created >= start:
                chunk.append(requests[i])
            i += 1
        out.append((start, stop, chunk))
    return out


def judge_window(start: float, end: float, rows: Sequence[LoggedRequest], reference: Reference, spec: MonitorSpec,
                 facets_of: Any, data: Any) -> Window:
    """Operations for every request of the window; the drift signals when enough were answered
    (``data``: the project's data section, whose near-duplicate test the content signal applies)."""
    from taskfit.stats import percentile

    answered = [r for r in rows if r.answered]
    latencies = [r.latency_ms for r in rows if r.status == 200 and r.latency_ms is not None]
    confidences = [r.confidence for r in answered if r.confidence is not None]
    fallbacks = [r.fallback for r in answered if r.fallback is not None]
    judged = len(answered) >= spec.min_window_rows
    signals: list[Signal] = []
    current: dict[str, list[str]] = {}
    for r in answered:
        if r.answer is not None:
            for name, value in facets_of(r.answer).items():
                current.setdefault(name, []).append(value)
    mix = {name: dict(Counter(values).most_common()) for name, values in current.items()}
    if judged:
        texts = [r.text or "" for r in answered]
        signals.append(compare_numeric("input length (words)", reference.lengths,
                                       [len(t.split()) for t in texts], spec))
        if reference.held_out_oov:
            signals.append(compare_numeric("out-of-vocabulary share", reference.held_out_oov,
                                           [oov_share(t, reference.vocabulary) for t in texts], spec,
                                           against="the held-out rows"))
        content = content_drift(reference.inputs, distinct(texts, data), spec)
        if content is not None:
            signals.append(content)
        for name, values in reference.facets.items():
            if len(current.get(name, [])) >= spec.min_window_rows:
                signals.append(compare_categorical(name, values, current[name], spec))
    return Window(start=start, end=end, requests=len(rows), answered=len(answered),
                  client_errors=sum(400 <= r.status < 500 for r in rows),
                  server_errors=sum(r.status >= 500 for r in rows),
                  latency_p50_ms=percentile(latencies, 50) if latencies else None,
                  latency_p95_ms=percentile(latencies, 95) if latencies else None,
                  confidence=summary(confidences) if confidences else None,
                  fallback_rate=sum(fallbacks) / len(fallbacks) if fallbacks else None,
                  judged=judged, signals=signals, mix=mix)


def alerts_for(window: Window, spec: MonitorSpec) -> list[Alert]:
    """What the latest window raises: drifted signals, and operations past their limits (only
    with at least ``min_window_rows`` requests: two failures in three requests are no trend)."""
    alerts = [Alert(s.name, s.reason()) for s in window.signals if s.drift]
    if window.requests < spec.min_window_rows:
        return alerts
    if window.error_rate > spec.max_error_rate:
        alerts.append(Alert("server errors", f"server errors: {window.server_errors} of {window.requests} "
                                             f"requests ({100 * window.error_rate:.1f}%) failed with status 500 or "
                                             f"above (limit monitor.max_error_rate {100 * spec.max_error_rate:g}%)"))
    if spec.max_latency_p95_ms is not None and (window.latency_p95_ms or 0) > spec.max_latency_p95_ms:
        alerts.append(Alert("latency", f"latency: p95 {window.latency_p95_ms:.0f} ms (limit "
                                       f"monitor.max_latency_p95_ms {spec.max_latency_p95_ms:g} ms)"))
    if spec.max_fallback_rate is not None and (window.fallback_rate or 0) > spec.max_fallback_rate:
        alerts.append(Alert("fallback rate", f"fallback rate: {100 * window.fallback_rate:.1f}% of answers fell "
                                             f"below the confidence threshold (limit monitor.max_fallback_rate "
                                             f"{100 * spec.max_fallback_rate:g}%)"))
    return alerts


def monitor_project(project: Path, since: str | None = None, window: str | None = None, log: Path | None = None,
                    model: str | None = None, out_dir: Path | None = None, reporter: Reporter | None = None,
                    now: float | None = None) -> MonitorResult:
    """Monitor the requests a project's model served: windows, signals, alerts; writes
    ``monitor.json`` and ``monitor.html`` to ``out_dir`` (default ``<project>/monitor``).

    ``since`` and ``window`` override ``monitor.since`` and ``monitor.window``; ``log`` defaults to
    ``<project>/requests.sqlite`` (where ``taskfit serve DIR`` logs), ``model`` to task.name (the
    name ``taskfit serve DIR`` serves it under)."""
    from taskfit.config import load_config
    from taskfit.data.prepare import prepare_data
    from taskfit.monitoring.report import write_monitor_report
    from taskfit.tasks import get_task
    from taskfit.tasks.base import AnswerFacets
    from taskfit.workflows.workspace import config_path

    reporter = reporter or Silent()
    now = time.time() if now is None else now
    path = config_path(project)
    config = load_config(path)
    spec = config.monitor.model_copy(update={k: v for k, v in (("since", since), ("window", window)) if v})
    window_s = parse_span(spec.window, "--window" if window else "monitor.window")
    since_ts = parse_since(spec.since, "--since" if since else "monitor.since", now) if spec.since else None
    project_dir = path.parent
    log = log or project_dir / "requests.sqlite"
    model = model or config.task.name
    db = open_log(log)
    try:
        rows = read_requests(db, model, since_ts)
        shadow = shadow_summary(db, model, since_ts)
        unnamed = unnamed_requests(db, since_ts)
        if not rows:
            served = models_in_log(db)
            if model not in served:
                listed = ", ".join(f"{m} ({n})" for m, n in served.most_common(10)) or "none"
                raise DataError(f"{log}: no request to model {model!r}; the log holds requests to: {listed}",
                                hint="name the served model with --model")
            raise DataError(f"{log}: no request to {model!r} since {stamp(since_ts or 0)} "
                            f"({served[model]} before then)", hint="widen --since")
    finally:
        db.close()
    task = get_task(config.task.kind)
    facets_of = ((lambda text: task.answer_facets(config.task, text)) if isinstance(task, AnswerFacets)
                 else (lambda text: {}))
    reporter.status(f"reading the training data of {path}")
    prepared = prepare_data(config, project_dir)
    reference = Reference.of(prepared.train, prepared.eval, facets_of)
    windows = []
    cuts = cut_windows(rows, window_s, since_ts)
    with reporter.bar("windows", len(cuts)) as advance:
        for start, end, chunk in cuts:
            windows.append(judge_window(start, end, chunk, reference, spec, facets_of, config.data))
            advance()
    result = MonitorResult(project=project_dir, model=model, log=log, kind=config.task.kind, since=since_ts,
                           window_s=window_s, reference_rows=len(reference.inputs),
                           held_out_rows=len(reference.held_out_oov), windows=windows,
                           alerts=alerts_for(windows[-1], spec), settings=spec.model_dump(mode="json"),
                           shadow=shadow, unnamed=unnamed)
    return write_monitor_report(result, out_dir or project_dir / "monitor")
