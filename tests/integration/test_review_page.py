"""The review queue's page in headless Chromium: the reviewer's name, verdicts and corrections
typed into the page come back in the CSV its download button saves, and that CSV imports."""

from __future__ import annotations

import html
import shutil
import sqlite3
import subprocess
import time

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.data.sample import generate_tickets
from taskfit.lifecycle.queue import queue_project
from taskfit.lifecycle.reviews import store_path
from taskfit.quickstart import make_quickstart_project
from taskfit.serve.log import RequestLog

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(not CHROMIUM, reason="needs a Chromium (Debian: apt-get install chromium)")
def test_queue_page_round_trip_in_headless_chromium(tmp_path):
    project = make_quickstart_project(tmp_path / "p", n_tickets=200).parent
    model = yaml.safe_load((project / "taskfit.yaml").read_text())["task"]["name"]
    log = RequestLog(project / "requests.sqlite")
    for i, row in enumerate(generate_tickets(20, seed=5)):
        label = row["messages"][1]["content"]
        log.add(id=f"chatcmpl-{i}", created=time.time() - 100 + i, model=model, status=200, request=row["messages"][:1],
                response=label, label=label, confidence=0.5 + i / 50, fallback=0)
    log.close()
    result = queue_project(project, n=6)
    probe = tmp_path / "probe.html"
    # Play the reviewer: name, every answer wrong with "refund" (or "billing" where refund was served).
    probe.write_text(result.paths["html"].read_text().replace("</body>", """<script>
window.addEventListener('load', () => {
  document.getElementById('reviewer').value = 'ana';
  document.querySelectorAll('input[type=radio][value="wrong"]').forEach(r => { r.checked = true; });
  ITEMS.forEach(it => { document.querySelector(`input[data-field="correction"][data-item="${it.item}"]`).value =
    it.answer === 'refund' ? 'billing' : 'refund'; });
  document.dispatchEvent(new Event('change'));
  const pre = document.createElement('pre'); pre.id = 'probe-out'; pre.textContent = csvText();
  document.body.appendChild(pre);
});</script></body>"""))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True).stdout
    assert "6 of 6 judged" in dom
    (tmp_path / "verdicts.csv").write_text(html.unescape(dom.split('<pre id="probe-out">')[1].split("</pre>")[0]))
    cli = CliRunner().invoke(app, ["review", "import", str(project), str(tmp_path / "verdicts.csv")])
    assert cli.exit_code == 0, cli.output
    assert "stored 6 corrections (0 correct, 6 wrong) by ana" in cli.output
    db = sqlite3.connect(store_path(project / "requests.sqlite"))
    stored = db.execute("SELECT served, correction FROM corrections").fetchall()
    assert len(stored) == 6 and all(c == ("billing" if s == "refund" else "refund") for s, c in stored)
