"""The loop after the first deploy, end to end on the real embedded SmolLM2-135M, driven through the
command line as a user would (issue 17's "done when"):

sample tickets → a LoRA run promoted to ``triage@production`` → a real uvicorn server following
it, asked through the official ``openai`` client → traffic in which customers of a new product
(the Aurora X2 headset) ask product questions in a new way, which the product_question queue must
absorb and production misroutes → ``taskfit monitor`` exits non-zero with a drift alert naming it
→ ``taskfit review queue`` → the corrections imported (a scripted CSV: the right queues) →
``taskfit data from-log`` → ``taskfit retrain --promote production`` (LoRA and a classification
head on the project's rows plus the reviewed ones, from scratch) → the new version beats
production on the recent held-out set and is promoted → the same request gets the new answer
without a restart → ``taskfit rollback`` restores the old answer; no log row and no registry row
is lost.

Two trainings of the real model, so the sizes are small: 48 training rows, 16 held-out rows, 64
tokens a row, three epochs at learning rate 2e-3. A generative fine-tune at that size stayed near
chance and the gate rightly refused it (docs/lifecycle.md); a head reading the mean of the hidden
states (``train.classify_head``) learns from as few rows, and reads each row once. ``pytest -n 0 -s tests/integration/test_lifecycle_loop.py`` prints its figures."""

from __future__ import annotations

import csv
import json
import random
import sqlite3
import sys
import time
from pathlib import Path

import openai
import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app as cli
from taskfit.data.sample import generate_tickets
from taskfit.lifecycle import Registry
from taskfit.lifecycle.from_log import latest_snapshot
from taskfit.monitoring import ALERT_EXIT_CODE
from taskfit.quickstart import make_quickstart_project
from taskfit.serve import load_serve_config
from taskfit.serve.app import create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from monitor_drift import new_way_of_asking  # noqa: E402  (the new product, asked about in new ways)

# The real embedded model: the longest test (about 6.5 minutes on 2 cores), run first (conftest).
# At learning rate 1e-3 the retrained head was not significantly better on the recent rows (62.5%
# vs 31.2%, p=0.18) and the gate refused it; at 2e-3 it is (70.6% vs 11.8%, p=0.0063, 17 rows),
# measured 2026-12-01 with the reviewed rows split by their text (deterministic).
pytestmark = pytest.mark.slow

# The business decides that questions about the new headset go to the hardware team's queue,
# technical_issue; production, never told, files most of them under product_question (measured:
# with product_question as the target it already got most of them right, so nothing was learnt).
NEW_QUEUE = "technical_issue"


def _cli(*args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    path = make_quickstart_project(tmp_path_factory.mktemp("loop") / "triage", seed=0, n_tickets=300)
    doc = yaml.safe_load(path.read_text())
    doc["task"]["name"] = "triage"
    doc["data"].update(max_train_examples=48, max_eval_examples=16)
    # validation_share: 8 of the 48 rows, one a queue (the share alone gives 5, drawn alike; the figures
    # above were measured with these 8)
    doc["train"].update(classify_head=True, head_pooling="mean", batch_size=8, max_seq_length=64, epochs=3,
                        learning_rate=2e-3, eval_every=0, metric_sample=0, checkpoint_every=0, validation_share=0.17)
    doc["monitor"] = {"min_window_rows": 40}  # a small window still judged: this test sends 48 requests
    doc["review"] = {"recent_share": 0.4}
    path.write_text(yaml.safe_dump(doc))
    return path.parent


def _until(condition):
    for _ in range(2400):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("the server never caught up")


def test_the_loop_after_the_first_deploy(project, loopback, capsys):
    figures = {}
    started = time.perf_counter()
    _cli("train", project)
    first = _cli("promote", project, "--as", "triage", "--by", "ana")
    # a server started before the registry existed does not follow it: the first promote says so
    assert "restart it" in " ".join(first.split())
    registry = Registry(project / "registry.sqlite")
    v1 = registry.resolve("triage", "production")

    spec = load_serve_config(None, {"adapters": {"triage": {"registry": "triage@production"}},
                                    "registry": {"path": str(project / "registry.sqlite"), "poll_s": 0.2},
                                    "log": {"path": str(project / "requests.sqlite")}})
    server = create_app(spec)
    client = openai.OpenAI(base_url=loopback(server), api_key="none", max_retries=0)

    def ask(text):
        reply = client.chat.completions.create(model="triage", messages=[{"role": "user", "content": text}])
        return reply.id, reply.choices[0].taskfit

    # Traffic: sample tickets the project never saw, and the new product asked about in a new way.
    ordinary = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in generate_tickets(24, seed=41)]
    traffic = ordinary + [(text, NEW_QUEUE) for text in new_way_of_asking()]
    random.Random(0).shuffle(traffic)
    right, answered, new_way = {}, {}, set(new_way_of_asking())
    aurora = []
    for text, queue in traffic:
        rid, answer = ask(text)
        right[rid], answered[rid] = queue, answer
        assert answer["version"] == v1.id
        if text in new_way:
            aurora.append(rid)
    figures["production_right_on_new_way"] = sum(answered[r]["label"] == NEW_QUEUE for r in aurora)
    ordinary_ids = [rid for rid in right if rid not in aurora]
    figures["production_right_on_ordinary"] = sum(answered[r]["label"] == right[r] for r in ordinary_ids)
    figures["requests"] = {"ordinary": len(ordinary_ids), "new_way": len(aurora)}
    # Production misroutes the new way of asking (most of it; the probe is one it gets wrong).
    misrouted = [r for r in aurora if answered[r]["label"] != NEW_QUEUE]
    assert len(misrouted) > len(aurora) / 2

    def ask_headset(text):  # a request the reviewer will see too: its right queue is known
        rid, answer = ask(text)
        right[rid] = NEW_QUEUE
        return answer

    probe = next(text for text in new_way_of_asking() if ask_headset(text)["label"] != NEW_QUEUE)
    before = ask_headset(probe)
    server.state.request_log.flush()

    # The monitor sees it: a drift alert that names the new product, and a non-zero exit.
    output = _cli("monitor", project, code=ALERT_EXIT_CODE)
    assert "alert:" in output and "aurora" in output.lower()
    report = json.loads((project / "monitor" / "monitor.json").read_text())
    (content,) = [s for s in report["windows"][-1]["signals"] if s["name"] == "request content"]
    figures["drift_auc"], figures["drift_threshold"] = content["statistic"], content["threshold"]

    # A person reviews the queue (scripted: the right queue for every request) and it is imported.
    _cli("review", "queue", project, "--n", len(traffic))
    (sheet,) = project.glob("review/queue-*/review.csv")
    rows = list(csv.DictReader(sheet.open(encoding="utf-8-sig")))
    assert {r["request_id"] for r in rows} <= set(right) and len(rows) >= len(traffic) - 1
    for r in rows:
        correct = right[r["request_id"]]
        r.update(verdict="correct" if r["answer"] == correct else "wrong",
                 correction="" if r["answer"] == correct else correct)
    filled = sheet.with_name("filled.csv")
    with filled.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _cli("review", "import", project, filled, "--reviewer", "ana")
    output = _cli("data", "from-log", project)
    snapshot = latest_snapshot(project)
    figures["snapshot"] = {k: snapshot.info[k] for k in ("reviewed", "train", "recent_held_out", "quarantined",
                                                         "exact_duplicates", "near_duplicates")}

    # Retrain on the project's rows plus the reviewed ones; the gate compares with production.
    output = _cli("retrain", project, "--promote", "production", "--by", "ana")
    figures["retrain_output"] = output
    v2 = registry.resolve("triage", "production")
    assert v2.id != v1.id and v2.data["snapshot"] == snapshot.digest
    (promotion,) = [m for m in registry.history("triage") if m.to_version == v2.id]
    recent = next(s for s in promotion.gate["held_out"] if s["held_out"] == "recent")
    assert recent["better"] and promotion.gate["passed"] and not promotion.forced
    figures["gate"] = promotion.gate["held_out"]

    # The server follows: the same request now gets the new answer, without a restart ...
    _until(lambda: ask(probe)[1]["version"] == v2.id)
    after = ask(probe)[1]
    assert after["label"] == NEW_QUEUE and after["label"] != before["label"]
    # ... and a rollback restores the old one.
    _cli("rollback", project, "triage", "--by", "ana")
    _until(lambda: ask(probe)[1]["version"] == v1.id)
    assert ask(probe)[1]["label"] == before["label"]

    # Nothing lost: every request in the log, every version and alias move in the registry.
    server.state.request_log.flush()
    logged = sqlite3.connect(project / "requests.sqlite").execute(
        "SELECT id, version FROM requests WHERE status = 200 AND shadow_of IS NULL").fetchall()
    assert set(right) <= {r[0] for r in logged}
    assert {r[1] for r in logged} == {v1.id, v2.id}
    assert [v.id for v in registry.versions("triage")] == [v1.id, v2.id]
    assert [(m.action, m.from_version, m.to_version) for m in registry.history("triage")] == [
        ("promote", None, v1.id), ("promote", v1.id, v2.id), ("rollback", v2.id, v1.id)]
    figures["requests_logged"] = len(logged)
    figures["seconds"] = round(time.perf_counter() - started)
    with capsys.disabled():
        print("\nlifecycle loop figures:", json.dumps(figures, indent=1))
