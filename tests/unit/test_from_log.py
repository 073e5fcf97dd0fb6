"""`taskfit data from-log`: reviewed requests, and only those, become training and recent held-out
rows; invalid corrections are quarantined with the reason, duplicates of the project's data are
dropped, personal data is redacted, each row carries its lineage, and the counts add up."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.config import load_config
from taskfit.data.prepare import prepare_data
from taskfit.data.sample import generate_tickets
from taskfit.data.lookalike import normalise
from taskfit.lifecycle.from_log import from_log_project, latest_snapshot, recent_side
from taskfit.lifecycle.reviews import ReviewStore, correction_of, store_path
from taskfit.quickstart import make_quickstart_project
from taskfit.serve.log import RequestLog


@pytest.fixture()
def project(tmp_path):
    path = make_quickstart_project(tmp_path / "p", n_tickets=200)
    doc = yaml.safe_load(path.read_text())
    doc["review"] = {"recent_share": 0.3}
    path.write_text(yaml.safe_dump(doc))
    return path.parent


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _review(project, items, reviewer="ana"):
    """Store corrections: items are (request id, input, served label, verdict, correction)."""
    model = load_config(project / "taskfit.yaml").task.name
    with ReviewStore(store_path(project / "requests.sqlite")) as store:
        store.add(correction_of(rid, model, served, text, None, time.time() - 600, reviewer, verdict, correction,
                                "queue test") for rid, text, served, verdict, correction in items)
    return model


def test_each_rule_and_the_counts(project):
    config = load_config(project / "taskfit.yaml")
    labels = config.task.labels
    existing = _jsonl(project / config.data.train)
    # Tickets the project never saw (not the generator's planted re-sends of each other).
    fresh = [r for r in generate_tickets(60, seed=99)
             if r["meta"].get("planted") not in ("near_duplicate", "conflicting_label")][:40]
    other = lambda label: labels[1] if label == labels[0] else labels[0]  # noqa: E731  (a wrong answer)
    items = [(f"chatcmpl-{i}", row["messages"][0]["content"], other(row["messages"][1]["content"]), "wrong",
              row["messages"][1]["content"]) for i, row in enumerate(fresh[:30])]
    items.append(("chatcmpl-new-label", "Do you sell the Orbit watch strap in teal?", labels[0], "wrong",
                  "loyalty_program"))
    items.append(("chatcmpl-copy", existing[3]["messages"][0]["content"], labels[0], "wrong",
                  existing[3]["messages"][1]["content"]))
    items.append(("chatcmpl-near", "Any update? " + existing[5]["messages"][0]["content"], labels[1], "correct",
                  labels[1]))
    items.append(("chatcmpl-pii", "Please call me back on +44 20 7946 0958 or mail jane.doe@example.com about "
                  "the invoice for my Acme subscription renewal", labels[2], "correct", labels[2]))
    model = _review(project, items)
    # A request answered and logged but never reviewed must not become data.
    log = RequestLog(project / "requests.sqlite")
    log.add(id="chatcmpl-unreviewed", created=time.time(), model=model, status=200,
            request=[{"role": "user", "content": fresh[35]["messages"][0]["content"]}], response=labels[0],
            label=labels[0], confidence=0.4, fallback=0)
    log.close()
    held_before = prepare_data(config, project).card.split["eval_fingerprint"]

    result = from_log_project(project)
    assert result.reviewed == len(items) == 34
    assert result.reviewed == result.added + result.quarantined + result.exact_duplicates + result.near_duplicates
    assert (result.quarantined, result.exact_duplicates, result.near_duplicates) == (1, 1, 1)
    snap = result.snapshot
    train, recent = _jsonl(snap.train), _jsonl(snap.recent_held_out)
    assert len(train) + len(recent) == result.added == 31 and train and recent
    ids = {r["meta"]["request_id"] for r in train + recent}
    assert "chatcmpl-unreviewed" not in ids and ids <= {i[0] for i in items}
    assert {"chatcmpl-copy", "chatcmpl-near", "chatcmpl-new-label"}.isdisjoint(ids)
    # the recent side is decided by the request's text (so by the traffic, not the ids), with review.recent_share
    assert all(recent_side(normalise(r["messages"][0]["content"]), 0.3) for r in recent)
    assert not any(recent_side(normalise(r["messages"][0]["content"]), 0.3) for r in train)
    # lineage
    row = next(r for r in train + recent if r["meta"]["request_id"] == "chatcmpl-0")
    assert row["meta"]["reviewer"] == "ana" and row["meta"]["verdict"] == "wrong"
    assert row["meta"]["served"] == other(fresh[0]["messages"][1]["content"])
    assert row["meta"]["reviewed"] and row["meta"]["model"] == model
    assert row["messages"][-1] == {"role": "assistant", "content": fresh[0]["messages"][1]["content"]}
    # redaction
    pii = next(r for r in train + recent if r["meta"]["request_id"] == "chatcmpl-pii")
    text = pii["messages"][0]["content"]
    assert "jane.doe@example.com" not in text and "7946" not in text and "<EMAIL>" in text
    # the quarantine names the label and what to do
    (q,) = _jsonl(snap.root / "quarantine.jsonl")
    assert "loyalty_program" in q["reason"] and "add it to task.labels deliberately" in q["reason"]
    card = json.loads((snap.root / "data_card.json").read_text())
    assert card["counts"]["read"] == 34 and card["counts"]["kept"] == 31 and card["split"]["eval"] == len(recent)
    card_md = (snap.root / "data_card.md").read_text()
    assert "jane.doe" not in card_md
    # 31 reviewed rows join the project's own: no warning that they are too few to train on alone
    assert not any("usable rows is below" in w or "classes have fewer" in w for w in card["warnings"]), card["warnings"]
    split = next(line for line in card_md.splitlines() if "recent held-out (by a hash of each request's text" in line)
    assert "seed None" not in card_md and "). Fingerprints: train `" in split, split
    # the fixed held-out split is untouched
    assert prepare_data(config, project).card.split["eval_fingerprint"] == held_before
    assert latest_snapshot(project).root == snap.root

    # The same reviews make the same snapshot; one more review makes a new one.
    assert from_log_project(project).unchanged
    _review(project, [("chatcmpl-late", fresh[36]["messages"][0]["content"], labels[0], "correct", labels[0])], "bo")
    again = from_log_project(project)
    assert not again.unchanged and again.snapshot.root != snap.root and again.reviewed == 35
    assert latest_snapshot(project).root == again.snapshot.root
    # a request reviewed twice counts once, by its newest correction
    _review(project, [("chatcmpl-0", fresh[0]["messages"][0]["content"], labels[2], "correct", labels[2])], "cy")
    latest = from_log_project(project)
    assert latest.reviewed == 35
    row = next(r for r in _jsonl(latest.snapshot.train) + _jsonl(latest.snapshot.recent_held_out)
               if r["meta"]["request_id"] == "chatcmpl-0")
    assert row["meta"]["reviewer"] == "cy" and row["messages"][-1]["content"] == labels[2]


def test_the_command_prints_the_counts_and_refuses_without_reviews(project):
    cli = CliRunner().invoke(app, ["data", "from-log", str(project)])
    assert cli.exit_code == 3 and "no review store" in cli.output and "review queue" in cli.output
    labels = load_config(project / "taskfit.yaml").task.labels
    _review(project, [("chatcmpl-x", "My parcel never arrived and tracking is stuck", labels[0], "wrong", "nope")])
    cli = CliRunner().invoke(app, ["data", "from-log", str(project)])
    assert cli.exit_code == 0, cli.output
    assert "1 reviewed requests = 0 added (0 training, 0 recent held-out) + 1 quarantined" in cli.output
    assert "(each a copy of one of the project's rows or of another reviewed request)" in " ".join(cli.output.split())
    assert "'nope' is not in task.labels" in cli.output and "more quarantined" not in cli.output
    # more than the ten it lists: the rest are counted, and where they are said (a walkthrough: 10 of 23 shown)
    _review(project, [(f"chatcmpl-q{i}", f"Parcel {i} never arrived, tracking stuck at depot {i}", labels[0], "wrong",
                       f"nope{i}") for i in range(12)])
    cli = CliRunner().invoke(app, ["data", "from-log", str(project)])
    said = " ".join(cli.output.split())
    assert cli.exit_code == 0 and said.count("quarantined review:") == 10, said
    assert "and 3 more quarantined:" in said and "quarantine.jsonl holds every one" in said


def test_reviews_held_back_for_one_reason_are_said_once(project):
    """A helpdesk's reviewer answered six requests with TECH_SUPPORT, a label the project does not
    have: from-log printed the same two-line reason six times. It is said once, with the count and
    the first rows it holds back."""
    _review(project, [(f"chatcmpl-t{i}", f"my smart plug {i} drops off the wifi every night", "ACCOUNT", "wrong",
                       "TECH_SUPPORT") for i in range(6)])
    cli = CliRunner().invoke(app, ["data", "from-log", str(project)])
    said = " ".join(cli.output.split())
    assert cli.exit_code == 0 and "+ 6 quarantined" in said, said
    assert said.count("'TECH_SUPPORT' is not in task.labels") == 1, said
    rows = ", ".join(f"review:chatcmpl-t{i}" for i in range(6))
    assert f"quarantined 6 rows ({rows}): answer: label 'TECH_SUPPORT'" in said, said


def test_a_correction_that_contradicts_a_project_row_is_a_conflict_not_a_duplicate(project):
    """A reviewer's answer to a request that repeats a project row word for word, but with another
    answer, is the pair the data check lists as conflicting: not counted away as a duplicate."""
    config = load_config(project / "taskfit.yaml")
    labels = config.task.labels
    row = _jsonl(project / config.data.train)[7]
    text, label = row["messages"][0]["content"], row["messages"][1]["content"]
    other = labels[1] if label == labels[0] else labels[0]
    _review(project, [("chatcmpl-same", text, label, "correct", label),
                      ("chatcmpl-contra", text, label, "wrong", other)])
    result = from_log_project(project)
    assert (result.exact_duplicates, result.near_duplicates, result.conflicts) == (1, 1, 1)
    (conflict,) = result.card.conflicts
    assert {conflict["kept_label"], conflict["other_label"]} == {label, other}


def test_a_conflict_names_the_project_row_as_the_data_check_names_it(project):
    """A project made by `init --from` reads its data beside it (``../tickets.jsonl``): a
    correction that contradicts one of those rows names it ``.../tickets.jsonl:8``, the name the
    data check and the data card give it, not ``.../p/../tickets.jsonl:8``."""
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    beside = project.parent / "tickets.jsonl"
    beside.write_text((project / doc["data"]["train"]).read_text())
    doc["data"]["train"] = "../tickets.jsonl"
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    labels = load_config(project / "taskfit.yaml").task.labels
    row = _jsonl(beside)[7]
    text, label = row["messages"][0]["content"], row["messages"][1]["content"]
    _review(project, [("chatcmpl-contra", text, label, "wrong", labels[1] if label == labels[0] else labels[0])])
    (conflict,) = from_log_project(project).card.conflicts
    assert conflict["kept"] == f"{beside}:8"


def test_a_request_that_should_have_fallen_back_is_held_out_not_quarantined(project):
    """A walkthrough's reviewer marked 17 out-of-scope requests wrong with the fallback (the page
    offers it): from-log quarantined every one as a label outside task.labels, so the only wrong
    answers in the traffic never reached the next comparison. They are recent held-out rows now
    (never training rows: a classifier learns no fallback label), where a version is right only
    if it falls back too; `review import` no longer warns that they will be quarantined."""
    from taskfit.records import Prediction
    from taskfit.tasks.classify import score_classify

    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["eval"].update({"confidence_threshold": 0.3, "fallback": "needs_human"})
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    config = load_config(project / "taskfit.yaml")
    labels = config.task.labels
    away = ["Can you recommend a pizza place near your office?", "What is the capital of Australia?",
            "Write me a poem about the sea and the moon", "Is it going to rain in Lisbon tomorrow afternoon?"]
    items = [(f"chatcmpl-away{i}", text, labels[i % 2], "wrong", "needs_human") for i, text in enumerate(away)]
    items.append(("chatcmpl-in", "My parcel never arrived and the tracking has been stuck for nine days",
                  labels[0], "wrong", labels[1]))
    _review(project, items)
    cli = CliRunner().invoke(app, ["data", "from-log", str(project)])
    said = " ".join(cli.output.split())
    assert cli.exit_code == 0, said
    assert "5 reviewed requests = 5 added (" in said and "+ 0 quarantined" in said
    assert "of which 4 should have fallen back: held out only" in said
    snap = latest_snapshot(project)
    train, recent = _jsonl(snap.train), _jsonl(snap.recent_held_out)
    assert not any(r["messages"][1]["content"] == "needs_human" for r in train)
    held = [r for r in recent if r["messages"][1]["content"] == "needs_human"]
    assert sorted(r["meta"]["request_id"] for r in held) == [f"chatcmpl-away{i}" for i in range(4)]
    assert "| needs_human | 4 |" in (snap.root / "data_card.md").read_text()  # counted among the labels
    # scored as the next comparison scores them: right where the version falls back, wrong where it answers
    rows = [r for r in snap.recent_rows(config.task) if r.target == "needs_human"]
    preds = [Prediction(example_id=r.id, output=labels[0], valid=True, latency_s=0.01, prompt_tokens=0,
                        completion_tokens=0, confidence=c) for r, c in zip(rows, (0.1, 0.2, 0.9, 0.95))]
    result = score_classify("v", labels, rows, preds, threshold=0.3, fallback="needs_human")
    assert result.per_example == [1.0, 1.0, 0.0, 0.0]
