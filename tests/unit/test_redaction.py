"""Redaction is one decision per row: an answer value is kept verbatim (and then so is every
occurrence of it in the input) or redacted exactly as the input is; never rewritten on one side
only, and never silently (the scan counts every answer field it changes)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from taskfit.config import DataSpec, PrivacySpec, TaskSpec, parse_config
from taskfit.data import pii
from taskfit.data.redaction import occurrences, redact_row
from taskfit.data.scan import scan
from taskfit.errors import ConfigError
from taskfit.records import Example
from taskfit.tasks import get_task

SCHEMA = {"type": "object", "properties": {"company": {"type": "string"}, "date": {"type": "string"},
                                           "email": {"type": "string"}, "total": {"type": "number"}},
          "required": ["company"], "additionalProperties": False}
EXTRACT = TaskSpec(kind="extract", success="s", system_prompt="Extract {fields}.", schema=SCHEMA)
EMAIL = "anna.smith@gmail.com"
RECEIPT = f"ACME LTD\nDate 02-01-2019 13:45\nQueries: {EMAIL}\nTOTAL 5551234567\nThanks! Write to {EMAIL}"


def _example(**fields) -> Example:
    return Example(id="r1", input=RECEIPT, target=get_task("extract").target_text(EXTRACT, fields))


@pytest.fixture()
def stamp_detector(monkeypatch):
    """A detector that, like a generous phone matcher, takes a date with the hour after it for one
    phone number, and ten digits for another: the decision is tested apart from detection rules."""
    real = pii.Detector.detect

    def detect(self: pii.Detector, text: str) -> list[pii.Finding]:
        found = [pii.Finding("PHONE", m.start(), m.end(), "test", m.group())
                 for m in re.finditer(r"\d\d-\d\d-\d{4}(?: \d\d)?|\b\d{10}\b", text)]
        others = [f for f in real(self, text) if all(f.end <= g.start or f.start >= g.end for g in found)]
        return sorted(found + others, key=lambda f: f.start)

    monkeypatch.setattr(pii.Detector, "detect", detect)


def test_an_answer_value_not_kept_is_redacted_in_the_answer_and_the_input_alike(stamp_detector):
    ex = _example(company="ACME LTD", date="02-01-2019", email=EMAIL)
    for action, placeholder in (("redact", "<PHONE>"), ("mask", "*" * 11 + "13")):
        done = redact_row(ex, EXTRACT, PrivacySpec(action=action))
        answer = json.loads(done.record.target)
        jsonschema.validate(answer, SCHEMA)
        # the date was read from a wider finding (date and hour): the answer holds what the input now
        # holds there, so the example stays learnable, and the change is counted
        assert answer["date"] == placeholder and f"Date {placeholder}:45" in done.record.input
        assert EMAIL not in done.record.input + done.record.target
        assert answer["email"] in done.record.input and answer["email"] != EMAIL
        assert done.changed == {"date", "email"} and done.fields == {"company", "date", "email"}
        assert answer["company"] == "ACME LTD" and not done.kept


def test_a_kept_field_stays_verbatim_in_the_answer_and_every_occurrence_in_the_input(stamp_detector):
    ex = _example(company="ACME LTD", date="02-01-2019", email=EMAIL)
    done = redact_row(ex, EXTRACT, PrivacySpec(keep_fields=["date", "email"]))
    assert done.record.target == ex.target and not done.changed
    assert done.kept == {"date", "email"}
    assert done.record.input.count(EMAIL) == 2
    # the finding that held the date is dropped; what of it lay outside the date (" 13") is searched
    # again on its own and is no phone number; the ten digits elsewhere are still redacted
    assert "Date 02-01-2019 13:45" in done.record.input and "TOTAL <PHONE>" in done.record.input
    # keeping one field keeps nothing else: the e-mail, not kept, goes on both sides
    only_date = redact_row(ex, EXTRACT, PrivacySpec(keep_fields=["date"]))
    assert json.loads(only_date.record.target)["date"] == "02-01-2019" and EMAIL not in only_date.record.input
    assert only_date.changed == {"email"} and only_date.kept == {"date"}


def test_a_number_cannot_hold_a_placeholder_so_it_stays_on_both_sides_and_is_reported(stamp_detector):
    ex = _example(company="ACME LTD", total=5551234567)
    done = redact_row(ex, EXTRACT, PrivacySpec())
    assert json.loads(done.record.target)["total"] == 5551234567 and "TOTAL 5551234567" in done.record.input
    assert done.numbers_kept == {"total"} and not done.changed


def test_a_small_number_inside_a_phone_number_does_not_keep_the_phone_number_in_the_data(tmp_path):
    """Quantity 1 and the 1 of "+1 415 555 0134": the phone number is redacted whole (it was left
    in the training data for the quantity's sake), the answer keeps 1, and the card counts it; a
    1 written on its own as well changes nothing."""
    task = TaskSpec(kind="extract", success="s", system_prompt="Extract {fields}.", schema={
        "type": "object", "properties": {"item": {"type": "string"}, "quantity": {"type": "integer"}}})
    alone = Example(id="a", input="A mug please. Call me on +1 415 555 0134 or +44 1 632 960 001.",
                    target=json.dumps({"item": "mug", "quantity": 1}))
    done = redact_row(alone, task, PrivacySpec())
    assert "0134" not in done.record.input and "960" not in done.record.input, done.record.input
    assert json.loads(done.record.target)["quantity"] == 1
    assert done.numbers_inside == {"quantity"} and not done.numbers_kept and not done.changed
    written = Example(id="b", input="Send 1 mug. Call +1 415 555 0134", target=json.dumps({"item": "mug", "quantity": 1}))
    done = redact_row(written, task, PrivacySpec())
    assert "Send 1 mug" in done.record.input and "0134" not in done.record.input and not done.numbers_inside

    from typer.testing import CliRunner

    from taskfit.cli.main import app

    rows = [{"text": f"{['A', 'One', 'Two'][i % 3]} {['mug', 'plate', 'bowl', 'cup'][i % 4]} for shop {i * 37}, call "
                     f"+1 415 555 {1000 + i}", "order": {"item": ['mug', 'plate', 'bowl', 'cup'][i % 4],
                                                         "quantity": [1, 1, 2][i % 3]}} for i in range(24)]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "orders.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "taskfit.yaml").write_text(json.dumps({
        "task": {"name": "orders", "kind": "extract", "success": "s", "system_prompt": "Extract {fields}.",
                 "schema": task.schema_},
        "data": {"train": "data/orders.jsonl", "columns": {"input": "text", "target": "order"},
                 "dedup": {"near": False}}}))
    result = CliRunner().invoke(app, ["data", "check", str(tmp_path), "--no-tokens"])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "data_card.md").read_text()
    assert "Answer numbers the text writes only inside personal data" in card and "quantity 16" in card, card  # the 16 rows of quantity 1


def test_action_keep_changes_nothing():
    ex = _example(company="ACME LTD", email=EMAIL)
    done = redact_row(ex, EXTRACT, PrivacySpec(action="keep"))
    assert done.record == ex and not done.changed and any(f.kind == "EMAIL" for f in done.findings)


def test_qa_answers_and_their_passage_are_one_decision():
    qa = TaskSpec(kind="qa", success="s", system_prompt="Answer.")
    ex = Example(id="q", input="Whom do I write to?", target=EMAIL, context=f"Complaints go to {EMAIL} daily.")
    done = redact_row(ex, qa, PrivacySpec())
    assert done.record.target == "<EMAIL>" and done.record.context == "Complaints go to <EMAIL> daily."
    assert done.changed == {"answer"}
    kept = redact_row(ex, qa, PrivacySpec(keep_fields=["answer"]))
    assert kept.record == ex and kept.kept == {"answer"}


def test_a_label_is_never_redacted():
    task = TaskSpec(kind="classify", success="s", system_prompt="Route.", labels=["sales@acme.com", "other"])
    ex = Example(id="c", input="Forward this to sales@acme.com please", target="sales@acme.com")
    done = redact_row(ex, task, PrivacySpec())
    assert done.record.target == "sales@acme.com" and done.record.input == "Forward this to <EMAIL> please"
    assert not done.fields and not done.changed


def test_a_kept_field_holding_a_credential_is_left_for_the_training_gate():
    schema = {"type": "object", "properties": {"note": {"type": "string"}}}
    task = TaskSpec(kind="extract", success="s", system_prompt="p", schema=schema)
    key = "sk_live_abcdEFGH1234567890abcdEF"
    ex = Example(id="k", input=f"use {key}", target=json.dumps({"note": key}))
    assert not redact_row(ex, task, PrivacySpec()).secrets_left
    kept = redact_row(ex, task, PrivacySpec(keep_fields=["note"]))
    assert kept.secrets_left and key in kept.record.input


def test_a_value_occurs_only_as_a_whole():
    assert occurrences("call 555-0134 or 3 times", "3") == [(17, 18)]
    assert occurrences("Date 02-01-2019; 02-01-2019x", "02-01-2019") == [(5, 15)]
    assert occurrences("anything", "  ") == []


def test_the_scan_counts_the_answers_redaction_changes_and_keeps(tmp_path):
    rows = [{"text": f"Order {i} from ACME, contact {f'buyer{i}@mail.com' if i % 3 == 0 else 'the desk'}",
             "fields": {"company": "ACME", **({"email": f"buyer{i}@mail.com"} if i % 3 == 0 else {})}}
            for i in range(12)]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = {"input": "text", "target": "fields"}
    result = scan(path, EXTRACT, DataSpec(train="t.jsonl", columns=columns, dedup={"near": False}), keep=True)
    assert result.answers_changed == {"email": 4} and result.answer_fields == {"company": 12, "email": 4}
    kept = scan(path, EXTRACT, DataSpec(train="t.jsonl", columns=columns, dedup={"near": False},
                                        privacy={"keep_fields": ["email"]}), keep=True)
    assert not kept.answers_changed and kept.answers_kept == {"email": 4}
    assert [json.loads(ex.target) for ex in kept.examples] == [r["fields"] for r in rows]


def _config(task: dict, privacy: dict) -> dict:
    return {"task": {"name": "t", "success": "s", "system_prompt": "p", **task},
            "data": {"train": "x.jsonl", "privacy": privacy}}


@pytest.mark.parametrize("task, privacy, expected", [
    ({"kind": "extract", "schema": SCHEMA}, {"keep_fields": ["dates"]},
     "data.privacy.keep_fields: 'dates' is not a field of extract answers; allowed: company, date, email, total"),
    ({"kind": "classify", "labels": ["a", "b"]}, {"keep_fields": ["answer"]},
     "allowed: none, classify answers are never redacted"),
    ({"kind": "generate"}, {"keep_fields": ["reply"]}, "'reply' is not a field of generate answers; allowed: answer"),
    ({"kind": "qa"}, {"keep_fields": ["answer"], "action": "keep"}, "action is keep, so nothing is redacted"),
])
def test_keep_fields_must_name_fields_the_answers_have(task, privacy, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(_config(task, privacy))
    assert expected in str(info.value)


def test_keep_fields_accepts_nested_fields_and_fields_from_the_data():
    nested = {"type": "object", "properties": {"address": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    for keep in (["address"], ["address.city"]):
        assert parse_config(_config({"kind": "extract", "schema": nested}, {"keep_fields": keep}))
    open_schema = {"type": "object", "additionalProperties": {"type": "string"}}  # fields come from the data
    assert parse_config(_config({"kind": "extract", "schema": open_schema}, {"keep_fields": ["city"]}))


def test_a_value_still_in_the_input_as_it_is_stays_in_the_answer():
    task = TaskSpec(kind="extract", success="s", system_prompt="p",
                    schema={"type": "object", "properties": {"name": {"type": "string"}}})
    ex = Example(id="n", input=f"Ship to anna: {EMAIL}", target=json.dumps({"name": "anna"}))
    done = redact_row(ex, task, PrivacySpec())
    # "anna" is also inside the e-mail, which is redacted; its other occurrence is intact
    assert done.record.input == "Ship to anna: <EMAIL>" and done.record.target == ex.target and not done.changed
    # so keeping the field keeps nothing redaction would have changed, and the e-mail is still redacted
    kept = redact_row(ex, task, PrivacySpec(keep_fields=["name"]))
    assert kept.record == done.record and not kept.kept


def test_the_card_names_keep_fields_no_answer_fills(tmp_path):
    from taskfit.config import load_config
    from taskfit.data.prepare import check_data

    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": f"to {w} now", "fields": {"city": w}}) + "\n"
                                              for w in ("Paris", "Lyon", "Nice")))
    doc = _config({"kind": "extract", "schema": {"type": "object", "additionalProperties": {"type": "string"}}},
                  {"keep_fields": ["town"]})
    doc["data"].update(train="t.jsonl", columns={"input": "text", "target": "fields"})
    (tmp_path / "taskfit.yaml").write_text(json.dumps(doc))
    card = check_data(load_config(tmp_path), tmp_path)
    assert "data.privacy.keep_fields names town, which no answer fills." in card.warnings


def test_credentials_kept_by_keep_fields_are_counted_for_the_training_gate(tmp_path):
    from taskfit.config import load_config
    from taskfit.data.prepare import prepare_data

    key = "sk_live_abcdEFGH1234567890abcdEF"
    notes = [f"use {key}" if i < 2 else f"plain note {w}" for i, w in enumerate(["a", "b", "c", "d", "e", "f"])]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": f"row {i}: {n}", "fields": {"note": n}}) + "\n"
                                              for i, n in enumerate(notes)))
    schema = {"type": "object", "properties": {"note": {"type": "string"}}}
    for keep, left in (([], 0), (["note"], 2)):
        doc = _config({"kind": "extract", "schema": schema}, {"keep_fields": keep})
        doc["data"].update(train="t.jsonl", columns={"input": "text", "target": "fields"}, dedup={"near": False})
        (tmp_path / "taskfit.yaml").write_text(json.dumps(doc))
        prepared = prepare_data(load_config(tmp_path), tmp_path)
        assert prepared.unredacted_secret_rows == left  # Workspace.open refuses to train on these
        written = json.dumps([ex.input + ex.target for ex in prepared.train + prepared.eval])
        assert written.count(key) == 2 * left  # in the input and the answer of each such row
        (warning,) = [w for w in prepared.card.warnings if "credentials" in w]
        assert ("(2 keep one in a field of data.privacy.keep_fields)" in warning) == bool(left)


def test_a_row_searched_ahead_with_nothing_found_is_redacted_as_one_searched_here():
    """A worker searches each row's texts ahead of the scan; a row in which it found nothing skips
    redaction's work (NOTHING_FOUND): the same record, findings and answer fields as redact_row
    searching the row itself, for label, free-text and preference rows, under each action."""
    from taskfit.data.redaction import NOTHING_FOUND, detected_texts
    from taskfit.data.sample import generate_tickets
    from taskfit.records import Example, PreferencePair

    tickets = generate_tickets(400, seed=9)
    classify = TaskSpec(kind="classify", success="s", system_prompt="p",
                        labels=sorted({t["messages"][1]["content"] for t in tickets}))
    generate = TaskSpec(kind="generate", success="s", system_prompt="Reply.")
    personal = pii.detector(PrivacySpec())
    rows = [(classify, Example(id=str(i), input=t["messages"][0]["content"], target=t["messages"][1]["content"]))
            for i, t in enumerate(tickets)]
    rows += [(generate, Example(id=f"g{i}", input=t["messages"][0]["content"], target="Thanks, we are on it.",
                                system="Be brief.")) for i, t in enumerate(tickets[:100])]
    rows += [(generate, PreferencePair(id=f"p{i}", prompt=t["messages"][0]["content"], chosen="Sure.",
                                       rejected="No.")) for i, t in enumerate(tickets[:100])]
    clean = [(task, rec) for task, rec in rows if not any(personal.detect(t) for t in detected_texts(rec, task))]
    assert 100 < len(clean) < len(rows)  # (the sample plants personal data in some tickets)
    for action in ("redact", "keep"):
        privacy = PrivacySpec(action=action)
        for task, rec in clean:
            assert redact_row(rec, task, privacy, NOTHING_FOUND) == redact_row(rec, task, privacy)
