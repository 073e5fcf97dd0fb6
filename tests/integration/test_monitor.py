"""`taskfit monitor` end to end: the quickstart's sample project as the training data, a real
SQLite request log written by the server's own writer (redacted as served), and the command.

Traffic like the training data (sample tickets the project never saw) must raise no alert at the
default thresholds; traffic asking about a product the training data never names, in a new way,
must raise a drift alert that names it, and exit non-zero."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.data.sample import generate_tickets
from taskfit.monitoring import ALERT_EXIT_CODE
from taskfit.quickstart import make_quickstart_project
from taskfit.serve.log import RequestLog

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from monitor_drift import NEW_PRODUCT, drifted, log_rows  # noqa: E402  (the benchmark's traffic, measured there)

MODEL = "ticket-triage"  # the quickstart's task.name: what `taskfit serve DIR` serves it as
DAY = 86400.0


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    # 1,200 tickets: 480 training rows (the reference) and 150 held-out rows, as the quickstart
    return make_quickstart_project(tmp_path_factory.mktemp("monitor") / "quickstart", n_tickets=1200).parent


def _log(path: Path, batches: list[tuple[list[dict], float]], errors: int = 0) -> Path:
    """Write each batch of sample-ticket rows within the hour before its time, then ``errors``
    failed requests (status 500) in the last hour."""
    log = RequestLog(path)  # the server's writer: redacted before storage
    for seed, (rows, at) in enumerate(batches):
        log_rows(log, MODEL, rows, now=at, seed=seed)
    for i in range(errors):
        log.add(id=f"failed-{i}", created=time.time() - 60 * i, model=MODEL, status=500, latency_ms=5.0,
                request=[{"role": "user", "content": "where is my parcel"}], error="internal error")
    log.close()
    return path


def _monitor(*args: str):
    result = CliRunner().invoke(app, ["monitor", *args])
    return result, result.output


def _report(out: Path) -> dict:
    return json.loads((out / "monitor.json").read_text())


def test_traffic_like_the_training_data_raises_no_alert(project):
    now = time.time()
    fresh = generate_tickets(150, seed=7)  # sample tickets the project never saw
    # A day earlier, a window where half the tickets asked about a new product: it is history now.
    _log(project / "requests.sqlite", [(drifted(generate_tickets(150, seed=8), 0.5), now - 1.5 * DAY), (fresh, now)])
    result, output = _monitor(str(project))  # the log where `taskfit serve DIR` writes it
    assert result.exit_code == 0, output
    report = _report(project / "monitor")
    assert report["alerts"] == []
    latest, earlier = report["windows"][-1], report["windows"][-2]
    assert latest["requests"] == 150 and latest["judged"] and latest["server_errors"] == 0
    signals = {s["name"]: s for s in latest["signals"]}
    assert set(signals) == {"input length (words)", "out-of-vocabulary share", "request content", "label mix"}
    assert not any(s["drift"] for s in signals.values()), [s for s in signals.values() if s["drift"]]
    assert signals["request content"]["statistic"] < signals["request content"]["threshold"]
    assert signals["label mix"]["band"] == "stable"
    assert 0.5 <= latest["confidence"]["mean"] <= 1.0 and 0 < latest["fallback_rate"] < 0.4
    # the earlier window is judged and shown as drifted, but alerts read the latest window only
    assert earlier["requests"] == 150 and any(s["drift"] for s in earlier["signals"] if s["name"] == "request content")
    assert "ok request content" in output and "report:" in output
    # a test's p-value is said to be one (it read like the test's statistic), a distance as it is
    ks = next(line for line in output.splitlines() if line.startswith("ok input length (words)"))
    assert re.search(r"Kolmogorov-Smirnov p=[\d.e-]+ \(drift below 0\.01\)", ks), ks
    assert re.search(r"ok request content: domain classifier ROC AUC [\d.]+ \(drift above", output), output


@pytest.fixture(scope="module")
def drift_run(project, tmp_path_factory):
    out = tmp_path_factory.mktemp("drift-report")
    log = _log(out / "drift.sqlite", [(drifted(generate_tickets(150, seed=9), 0.5, seed=1), time.time())])
    result, output = _monitor(str(project), "--log", str(log), "--out", str(out))
    return result, output, out


def test_a_new_product_and_phrasing_raise_a_drift_alert_that_names_them(drift_run):
    result, output, out = drift_run
    assert result.exit_code == ALERT_EXIT_CODE, output
    assert "alert:" in output and "request content" in output and "aurora" in output.lower()
    report = _report(out)
    alerted = {a["signal"] for a in report["alerts"]}
    assert "request content" in alerted and "label mix" not in alerted  # the queues absorbed it
    (content,) = [s for s in report["windows"][-1]["signals"] if s["name"] == "request content"]
    assert content["statistic"] > content["threshold"]
    top = content["detail"]["words"][0]
    assert "aurora" in top["word"] and "x2" in top["word"] and top["reference_share"] == 0.0
    assert NEW_PRODUCT in content["detail"]["requests"][0]["text"]


def test_a_small_window_does_not_cry_wolf(project, tmp_path):
    tickets = drifted(generate_tickets(40, seed=10), 0.9)
    log = _log(tmp_path / "small.sqlite", [(tickets, time.time())])
    result, output = _monitor(str(project), "--log", str(log), "--out", str(tmp_path), "--window", "12h",
                              "--since", "2d")
    assert result.exit_code == 0, output
    report = _report(tmp_path)
    assert len(report["windows"]) == 4 and [w["requests"] for w in report["windows"]] == [0, 0, 0, 40]
    assert not report["windows"][-1]["judged"] and report["windows"][-1]["signals"] == []
    assert "fewer than monitor.min_window_rows (100)" in " ".join(output.split())
    # not judged, but the label mix is counted and shown all the same
    queues = Counter(t["messages"][1]["content"] for t in tickets)
    assert report["windows"][-1]["mix"] == {"label mix": dict(queues.most_common())}
    (top, n), = queues.most_common(1)
    assert f"answers in the latest window: label mix: {top} {n}" in " ".join(output.split())


def test_server_errors_past_the_limit_alert(project, tmp_path):
    log = _log(tmp_path / "errors.sqlite", [(generate_tickets(150, seed=7), time.time())], errors=20)
    result, output = _monitor(str(project), "--log", str(log), "--out", str(tmp_path))
    assert result.exit_code == ALERT_EXIT_CODE, output
    assert [a["signal"] for a in _report(tmp_path)["alerts"]] == ["server errors"]
    assert "20 of 170 requests (11.8%)" in " ".join(output.split())


def test_monitor_errors_say_what_to_do(project, tmp_path):
    result, output = _monitor(str(project), "--log", str(tmp_path / "none.sqlite"))
    assert result.exit_code == 3 and "no request log" in output and "taskfit serve" in output
    log = RequestLog(tmp_path / "other.sqlite")
    log.add(id="x", created=time.time(), model="invoices", status=200, request=[], response="{}")
    log.close()
    result, output = _monitor(str(project), "--log", str(tmp_path / "other.sqlite"))
    assert result.exit_code == 3 and "invoices (1)" in output and "--model" in output
    result, output = _monitor(str(project), "--log", str(tmp_path / "other.sqlite"), "--window", "daily")
    assert result.exit_code == 2 and "--window: got 'daily'" in output
    (tmp_path / "not.sqlite").write_text("hello")
    result, output = _monitor(str(project), "--log", str(tmp_path / "not.sqlite"))
    assert result.exit_code == 3 and "not a request log" in output


def test_serve_dir_logs_where_monitor_dir_reads(project, monkeypatch):
    import taskfit.serve

    run = project / "runs" / "20260101-000000-ticket-triage"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"status": "finished", "started": "2026-01-01T00:00:00"}))
    seen = {}
    monkeypatch.setattr(taskfit.serve, "serve", lambda spec, status=None: seen.setdefault("spec", spec))
    result = CliRunner().invoke(app, ["serve", str(project)])
    assert result.exit_code == 0, result.output
    assert seen["spec"].log.path == (project / "requests.sqlite").resolve()
    assert list(seen["spec"].adapters) == [MODEL]
    assert seen.pop("spec").dtype == "auto"
    # served in the precision the project evaluates in (train.dtype)
    config = project / "taskfit.yaml"
    text = config.read_text()
    doc = yaml.safe_load(text)
    doc["train"]["dtype"] = "float32"
    config.write_text(yaml.safe_dump(doc))
    try:
        assert CliRunner().invoke(app, ["serve", str(project)]).exit_code == 0
    finally:
        config.write_text(text)
    assert seen["spec"].dtype == "float32"


def _chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(not _chromium(), reason="needs a Chromium (Debian: apt-get install chromium)")
def test_monitor_html_renders_offline_with_its_figures_and_reason(drift_run, tmp_path):
    _, _, out = drift_run
    probe = tmp_path / "probe.html"  # after load, the title says whether every figure decoded
    probe.write_text((out / "monitor.html").read_text().replace("</body>", """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
  document.title = (ok ? 'FIGURES-OK ' : 'FIGURES-BROKEN ') + imgs.length;
});</script></body>"""))
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
                          "--proxy-server=127.0.0.1:9", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True).stdout
    assert "FIGURES-OK" in dom, dom[:500]
    assert int(dom.split("FIGURES-OK ")[1].split("<")[0]) >= 4  # traffic, latency, PSI, content, confidence
    alerts = dom.split('<div id="alerts">')[1].split("</div>")[0]
    assert 'class="alert"' in alerts and "aurora" in alerts.lower()
    typical = dom.split('<ol id="typical">')[1].split("</ol>")[0]
    assert NEW_PRODUCT in typical


def test_refused_requests_are_a_column_of_the_windows_table(project, tmp_path):
    """monitoring.md promises the refused requests (4xx) per window: the terminal's table shows
    them beside the failures (5xx), as monitor.json counts them."""
    log = _log(tmp_path / "refused.sqlite", [(generate_tickets(60, seed=12), time.time())], errors=2)
    writer = RequestLog(log)
    for i in range(3):
        writer.add(id=f"refused-{i}", created=time.time() - 30 * i, model=MODEL, status=400, latency_ms=1.0,
                   request=[{"role": "user", "content": "where is my parcel"}], error="tools is not supported")
    for i in range(2):  # refused before any model was read (a wrong key): counted beside the table
        writer.add(id=f"unnamed-{i}", created=time.time() - 10 * i, model=None, status=401, latency_ms=1.0,
                   error="invalid API key")
    writer.close()
    result, output = _monitor(str(project), "--log", str(log), "--out", str(tmp_path / "out"))
    latest = _report(tmp_path / "out")["windows"][-1]
    assert (latest["client_errors"], latest["server_errors"]) == (3, 2)
    header = next(line for line in output.splitlines() if "window" in line and "5xx" in line)
    row = next(line for line in output.splitlines() if line.startswith("│") and " 65 " in line)
    values = dict(zip((c.strip() for c in header.split("┃")), (c.strip() for c in row.split("│"))))
    assert (values["requests"], values["4xx"], values["5xx"]) == ("65", "3", "2"), output
    assert "2 more requests in the period named no model the log could read" in " ".join(output.split())
    assert _report(tmp_path / "out")["unnamed"] == 2
