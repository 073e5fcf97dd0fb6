"""`taskfit retrain` with a classical production version (refitted on the project's rows plus the
reviewed ones), and the promotion gate over the fixed and the recent held-out sets: reviewed
ordinary tickets change nothing worth promoting (the new version goes to candidate, and promoting
it to production is refused: not significantly better on either set); reviewed questions about a
new product, which production misroutes, make a version that beats production on the recent
held-out set and is promoted, recording the snapshot it was trained on."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.data.sample import generate_tickets
from taskfit.lifecycle import Registry
from taskfit.lifecycle.reviews import ReviewStore, correction_of, store_path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from monitor_drift import new_way_of_asking  # noqa: E402  (the new product's questions)

NAME = "ticket-triage"  # the quickstart's task.name: what retrain promotes under by default


def _header(out: str) -> list[str]:
    """The first table's column headers as printed, each put back together from its wrapped (or
    folded) lines, without spaces."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("┃"))
    block = []
    for line in lines[start:]:
        if not line.startswith("┃"):
            break
        block.append([cell.strip() for cell in line.strip().strip("┃").split("┃")])
    return ["".join("".join(column).split()) for column in zip(*block)]


def _cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_triage):
    project = tiny_triage(tmp_path_factory.mktemp("retrain") / "triage", n_tickets=400, train_rows=160, eval_rows=40)
    doc = (project / "taskfit.yaml").read_text()
    (project / "taskfit.yaml").write_text(doc + "review:\n  recent_share: 0.4\n")
    return project


def _review(project, items, prefix):
    """Corrections as `taskfit review import` stores them: (input, right queue) per request."""
    with ReviewStore(store_path(project / "requests.sqlite")) as store:
        store.add(correction_of(f"{prefix}-{i}", NAME, "billing", text, None, time.time() - 600, "ana", None, queue,
                                "scripted") for i, (text, queue) in enumerate(items))


def test_retrain_refits_compares_on_both_sets_and_promotes_through_the_gate(project, capsys):
    code, out = _cli("retrain", project)
    assert code == 3 and "no data snapshot" in out and "data from-log" in out, out
    assert _cli("baseline", project, "--only", "tfidf-logreg")[0] == 0
    assert _cli("promote", project, "tfidf-logreg", "--as", NAME)[0] == 0
    registry = Registry(project / "registry.sqlite")
    v1 = registry.resolve(NAME, "production")

    # Reviewed ordinary tickets: the refit is no better than production on either held-out set.
    ordinary = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in generate_tickets(30, seed=51)]
    _review(project, ordinary, "ordinary")
    assert _cli("data", "from-log", project)[0] == 0
    code, out = _cli("retrain", project)  # retrain.promote defaults to candidate: no gate to pass
    assert code == 0, out
    assert "fixed held-out set" in out and "recent held-out set" in out and "Keep production" in out
    assert "vsproduction(accuracy)" in _header(out)  # its tests are against production, and say so
    candidate = registry.resolve(NAME, "candidate")
    assert candidate.id != v1.id and candidate.kind == "classical" and registry.alias(NAME, "production") == v1.id
    code, out = _cli("promote", project, candidate.path, "--as", NAME)
    assert code == 7 and "not significantly better than production on the fixed or recent held-out set" in out, out
    assert registry.alias(NAME, "production") == v1.id

    # Reviewed questions about a new product, which production misroutes: the refit beats it.
    _review(project, [(text, "product_question") for text in new_way_of_asking()], "aurora")
    code, out = _cli("data", "from-log", project)
    assert code == 0, out
    snapshot = json.loads((project / "data" / "snapshots" / (project / "data" / "snapshots" / "LATEST")
                           .read_text().strip() / "snapshot.json").read_text())
    code, out = _cli("retrain", project, "--promote", "production", "--by", "ana")
    assert code == 0, out
    assert "refitted" in out and "Promote:" in out and f"{NAME}@production ->" in out
    v2 = registry.resolve(NAME, "production")
    assert v2.id not in (v1.id, candidate.id) and v2.kind == "classical"
    # promoted through the gate, and warned of the task's own bar where it falls short of it
    below = v2.figures["metrics"]["accuracy"] < 0.85  # classify's default eval.thresholds
    assert (f"warning: {NAME} {v2.short} misses the task's acceptance thresholds" in " ".join(out.split())) == below
    assert v2.data["snapshot"] == snapshot["digest"]
    assert (project / "retrain" / snapshot["digest"][:16] / "tfidf-logreg" / "model.json").is_file()
    move = registry.history(NAME)[-1]
    assert move.reason.startswith("retrained on snapshot") and move.gate["passed"] and not move.forced
    recent = next(s for s in move.gate["held_out"] if s["held_out"] == "recent")
    assert recent["better"] and recent["new"] > recent["production"] and recent["p_value"] < 0.05
    fixed = next(s for s in move.gate["held_out"] if s["held_out"] == "fixed")
    assert not fixed["worse"] and fixed["n"] == 40
    # the project's own baseline is untouched: it is still the model production was fitted as
    assert json.loads((project / "baselines" / "tfidf-logreg" / "model.json").read_text())["train_fingerprint"] \
        == v1.data["train_fingerprint"]
    with capsys.disabled():  # `pytest -s` shows the figures docs/lifecycle.md quotes
        print("\nretrain gate:", json.dumps({s["held_out"]: {k: s[k] for k in ("n", "new", "production", "p_value")}
                                            for s in move.gate["held_out"]}))


def test_a_production_registered_under_another_name_is_the_one_retrain_gates_and_serve_serves(tmp_path,
                                                                                              tiny_triage):
    """A helpdesk promoted its classical model with `--as triage` (task.name: helpdesk-export);
    `taskfit retrain --promote production` then registered helpdesk-export, found no production
    to compare with there, and promoted it past the gate, while `taskfit serve DIR` looked for
    helpdesk-export@production. With one name registered, both now mean it."""
    from taskfit.cli.main import _production

    project = tiny_triage(tmp_path / "triage", n_tickets=300, train_rows=120, eval_rows=30)
    assert _cli("baseline", project, "--only", "tfidf-logreg")[0] == 0
    assert _cli("promote", project, "tfidf-logreg", "--as", "triage")[0] == 0
    registry = Registry(project / "registry.sqlite")
    v1 = registry.resolve("triage", "production")
    assert _production(project, NAME)[1:] == ("triage", v1.id)  # what `taskfit serve DIR` serves

    ordinary = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in generate_tickets(20, seed=52)]
    _review(project, ordinary, "ordinary")
    assert _cli("data", "from-log", project)[0] == 0
    code, out = _cli("retrain", project, "--promote", "production")
    assert code in (0, 7), out
    assert registry.names() == ["triage"], registry.names()  # no second lineage under task.name
    assert "vsproduction(accuracy)" in _header(out), out  # compared with triage@production: gated
    move = registry.history("triage")[-1]
    assert code == 7 or move.gate["passed"]

    # a second name registered: which one is meant must be said
    assert _cli("promote", project, "tfidf-logreg", "--as", "other")[0] == 0
    code, out = _cli("retrain", project)
    assert code == 2 and "registers other, triage, and not ticket-triage" in " ".join(out.split()), out
    assert "retrain.name" in out
