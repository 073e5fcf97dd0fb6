"""Synthetic drafts without a model: how a batch's requests are planned (quotas, rewrites, seeds,
rows shown), why each reply is rejected or passed (one reason each), and the split and prepare
rules that keep synthetic rows out of every held-out set and out of training unless accepted."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.config import EndpointSpec, TaskSpec, load_config
from taskfit.data.admit import NewRows
from taskfit.data.prepare import ACCEPTED, SYNTHETIC, prepare_data
from taskfit.data.split import grouped_split, is_synthetic, stratified_split, validation_split
from taskfit.errors import DataError
from taskfit.lifecycle.synth import (DUP_DRAFT, DUP_HELD, DUP_REAL, HELD, HOUSE_RULES, INVALID_LABEL, NEW, PARAPHRASE,
                                     PRIVACY, REAL, SCHEMA, Reply, Request, draft_schema, judge, limits_of, messages,
                                     plan, quotas)
from taskfit.quickstart import make_quickstart_project
from taskfit.records import Example

SPEC = EndpointSpec(base_url="http://127.0.0.1:9/v1", model="drafter")


@pytest.fixture()
def project(tmp_path):
    path = make_quickstart_project(tmp_path / "p", n_tickets=200)
    doc = yaml.safe_load(path.read_text())
    doc["synth"] = {"shots": 2, "paraphrase": 0.25, "seed": 7}
    path.write_text(yaml.safe_dump(doc))
    return path.parent


def _rows(n, label=lambda k: "a" if k % 2 else "b", synthetic=()):
    return [Example(id=f"r{k:02d}", input=f"row {k} text", target=label(k), meta={"synthetic": True} if k in synthetic else {})
            for k in range(n)]


def test_quotas_share_the_drafts_among_the_labels():
    counts = Counter({"a": 10, "b": 2, "c": 5})
    even = quotas(["a", "b", "c"], counts, 7, "even")
    assert even == {"a": 2, "b": 3, "c": 2}  # the remainder to the label with the fewest rows
    balance = quotas(["a", "b", "c"], counts, 7, "balance")
    assert balance == {"a": 0, "b": 5, "c": 2}  # b reaches 7 rows and c 7: as even as 7 drafts allow
    assert sum(quotas(["a", "b", "c"], counts, 100, "balance").values()) == 100


def test_the_plan_asks_per_label_rewrites_training_rows_and_seeds_each_request(project):
    config = load_config(project / "taskfit.yaml")
    prepared = prepare_data(config, project)
    train, held = prepared.train, {r.id for r in prepared.eval}
    requests = plan(config, train, 20, first_seed=107)
    assert [r.seed for r in requests] == list(range(107, 127))
    asked = Counter(r.label for r in requests)
    assert asked == quotas(config.task.labels, Counter(r.target for r in train), 20, "even")
    rewrites = [r for r in requests if r.kind == PARAPHRASE]
    assert len(rewrites) == 5  # round(20 * synth.paraphrase)
    for r in requests:
        assert len(r.shown) == 2 and all(s.target == r.label for s in r.shown)  # rows of the label asked for
        assert not {s.id for s in r.shown} & held  # held-out rows are never shown
        if r.source is not None:
            assert r.source.target == r.label and r.source.id not in held and r.source not in r.shown
    assert len({r.source.id for r in rewrites}) == 5  # a row is rewritten once
    assert plan(config, train, 20, first_seed=107) == requests  # the seed decides it all

    schema = draft_schema(config, requests[0], limits_of(train))
    if requests[0].kind == NEW:
        assert schema["properties"]["answer"] == {"type": "string", "enum": [requests[0].label]}
    rewrite = rewrites[0]
    text = messages(config, rewrite, draft_schema(config, rewrite, limits_of(train)))[1]["content"]
    assert rewrite.source.input in text and all(s.input in text for s in rewrite.shown)
    assert set(draft_schema(config, rewrite, limits_of(train))["properties"]) == {"input"}


def _judge(config, rows, request, value):
    text = value if isinstance(value, str) else json.dumps(value)
    return judge(config, rows, "b1", SPEC, request, Reply(text, "stop", 10, 5))


def test_every_reply_gets_one_reason_or_passes(project):
    config = load_config(project / "taskfit.yaml")
    prepared = prepare_data(config, project)
    train, held = prepared.train, prepared.eval
    rows = NewRows(config, [*train, *held], [REAL] * len(train) + [HELD] * len(held))
    label = config.task.labels[0]
    other = config.task.labels[1]
    ask = lambda k, source=None: Request(k, 100 + k, PARAPHRASE if source else NEW,  # noqa: E731
                                         source.target if source else label, (), source)
    near = next(r for r in held[1:] if r.target == label)
    fresh = "My invoice from March lists a Team plan seat twice; please correct the total before I pay it."
    cases = [
        ("not json {", SCHEMA),
        ({"input": "where is my parcel"}, SCHEMA),  # no answer
        ({"input": "  ", "answer": label}, SCHEMA),
        ({"input": "where is my parcel", "answer": "not_a_queue"}, INVALID_LABEL),
        ({"input": "where is my parcel", "answer": other}, INVALID_LABEL),  # not the label asked for
        ({"input": train[0].input, "answer": label}, DUP_REAL),
        ({"input": held[0].input, "answer": label}, DUP_HELD),
        ({"input": "Any update? " + near.input, "answer": label}, DUP_HELD),  # a look-alike copy
        ({"input": f"{fresh} Reach me at jane.doe@example.com", "answer": label}, PRIVACY),
        ({"input": f"{fresh} my api_key=sk_live_4eC39HqLyjWDarjtT1zdp7dc", "answer": label}, PRIVACY),
        ({"input": fresh, "answer": label}, None),
        ({"input": fresh.upper(), "answer": label}, DUP_DRAFT),  # the same input as the draft before
    ]
    drafts = [_judge(config, rows, ask(k), value) for k, (value, _) in enumerate(cases, 1)]
    assert [d.reason for d in drafts] == [want for _, want in cases]
    assert all(d.detail for d in drafts if d.reason)
    assert "asked for" in drafts[4].detail and held[0].id in drafts[6].detail
    passed = drafts[10].record
    assert passed.meta["synthetic"] is True and passed.meta["seed"] == 111 and passed.meta["label"] == label
    assert passed.meta["drafted_by"] == "drafter" and passed.id == "synth-b1-0011"
    # a rewrite keeps the source's answer: the reply holds the input only
    source = train[3]
    rewrite = _judge(config, rows, ask(20, source), {"input": "Totally reworded: " + fresh[::-1]})
    assert rewrite.reason is None and rewrite.record.target == source.target
    assert rewrite.record.meta["paraphrase_of"] == source.id


def test_extract_drafts_are_held_to_the_schema(tmp_path):
    schema = {"type": "object", "required": ["city", "size"], "additionalProperties": False,
              "properties": {"city": {"type": "string"}, "size": {"type": "integer", "minimum": 1}}}
    (tmp_path / "data").mkdir()
    with (tmp_path / "data" / "b.jsonl").open("w") as f:
        for i in range(12):
            f.write(json.dumps({"text": f"table for {i + 1} in Oslo ref {i}", "fields": {"city": "Oslo", "size": i + 1}}) + "\n")
    (tmp_path / "taskfit.yaml").write_text(yaml.safe_dump({
        "task": {"kind": "extract", "success": "parsed", "system_prompt": "Extract the booking.", "schema": schema},
        "data": {"train": "data/b.jsonl", "columns": {"input": "text", "target": "fields"}}}))
    config = load_config(tmp_path / "taskfit.yaml")
    rows = NewRows(config, [], [])
    request = Request(1, 0, NEW, None, ())
    assert draft_schema(config, request, {"input": 200, "context": 200})["properties"]["answer"] == schema
    bad = _judge(config, rows, request, {"input": "a table in Bergen for two", "answer": {"city": "Bergen", "size": 0}})
    good = _judge(config, rows, replace(request, number=2),
                  {"input": "a table in Bergen for two", "answer": {"size": 2, "city": "Bergen"}})
    assert bad.reason == SCHEMA and "size" in bad.detail
    assert good.reason is None and good.record.target == '{"city": "Bergen", "size": 2}'  # the schema's key order


def test_generate_drafts_are_held_to_the_house_rules(tmp_path):
    (tmp_path / "data").mkdir()
    with (tmp_path / "data" / "r.jsonl").open("w") as f:
        for i in range(12):
            f.write(json.dumps({"message": f"where is order {i}", "reply": f"Hi there, order {i} ships today, "
                                "tracking follows by mail. — The Support Team"}) + "\n")
    (tmp_path / "taskfit.yaml").write_text(yaml.safe_dump({
        "task": {"kind": "generate", "success": "in style", "system_prompt": "Reply.",
                 "reply": {"min_words": 8, "max_words": 40, "must_include": ["— The Support Team"]}},
        "data": {"train": "data/r.jsonl", "columns": {"input": "message", "target": "reply"}}}))
    config = load_config(tmp_path / "taskfit.yaml")
    rows = NewRows(config, [], [])
    request = Request(1, 0, NEW, None, ())
    # a drafting model's placeholder, and a reply without the sign-off: neither reaches review
    placeholder = _judge(config, rows, request, {"input": "<input>", "answer": "<answer>"})
    unsigned = _judge(config, rows, replace(request, number=2),
                      {"input": "my parcel is late", "answer": "Hi there, it left the depot this morning and "
                       "arrives tomorrow."})
    kept = _judge(config, rows, replace(request, number=3),
                  {"input": "my parcel is late", "answer": "Hi there, it left the depot this morning and "
                   "arrives tomorrow. — The Support Team"})
    assert placeholder.reason == HOUSE_RULES and "too short" in placeholder.detail
    assert unsigned.reason == HOUSE_RULES and "missing required phrase" in unsigned.detail
    assert kept.reason is None


def test_splits_never_hold_out_a_synthetic_row():
    real = _rows(40)
    mixed = real + [replace(r, id=f"s{r.id}", meta={"synthetic": True}) for r in _rows(30)]
    train, test = stratified_split(mixed, 0.25, seed=3)
    assert not any(is_synthetic(r) for r in test)
    assert sum(is_synthetic(r) for r in train) == 30
    # the held-out rows are the ones the real rows alone give
    assert [r.id for r in test] == [r.id for r in stratified_split(real, 0.25, seed=3)[1]]
    groups = [r.id[-1] for r in mixed]
    train, test = grouped_split(mixed, 0.25, 3, groups)
    assert not any(is_synthetic(r) for r in test) and sum(is_synthetic(r) for r in train) == 30
    assert [r.id for r in test] == [r.id for r in grouped_split(real, 0.25, 3, [r.id[-1] for r in real])[1]]
    rest, validation = validation_split(mixed, 0.25, 100, seed=0)
    assert validation and not any(is_synthetic(r) for r in validation) and len(validation) == 10
    with pytest.raises(DataError, match="real rows"):
        stratified_split(_rows(3) + _rows(10, synthetic=range(10)), 0.2, 0)


def _mark(path, every=5):
    """Mark every fifth row of a JSONL data file synthetic; return their ids as prepare names them."""
    lines = path.read_text().splitlines()
    marked = []
    for k, line in enumerate(lines):
        if k % every == 0:
            row = json.loads(line)
            row["meta"] = {**row.get("meta", {}), "synthetic": True}
            lines[k] = json.dumps(row)
            marked.append(k + 1)
    path.write_text("\n".join(lines) + "\n")
    return marked


def test_prepare_trains_on_synthetic_rows_only_when_included_and_never_holds_them_out(project):
    path = project / "taskfit.yaml"
    config = load_config(path)
    real_only = prepare_data(config, project)
    _mark(project / config.data.train)
    doc = yaml.safe_load(path.read_text())
    excluded = prepare_data(config, project)
    assert not any(is_synthetic(r) for r in excluded.train + excluded.eval)
    assert excluded.card.counts["synthetic_excluded"] > 0
    doc["data"]["synthetic"] = "include"
    path.write_text(yaml.safe_dump(doc))
    included = prepare_data(load_config(path), project)
    assert not any(is_synthetic(r) for r in included.eval)
    synthetic = [r for r in included.train if is_synthetic(r)]
    assert synthetic and included.card.counts["synthetic_train"] == len(synthetic)
    assert included.card.split["eval_fingerprint"] == excluded.card.split["eval_fingerprint"]
    # the real rows trained on are the same either way: synthetic rows come on top
    assert [r.id for r in included.train if not is_synthetic(r)] == [r.id for r in excluded.train]
    assert real_only.card.split["eval_fingerprint"] != excluded.card.split["eval_fingerprint"]  # fewer real rows

    # an accepted drafts file that no longer fits the task stops training with the line named
    (project / SYNTHETIC).mkdir(parents=True)
    (project / SYNTHETIC / ACCEPTED).write_text(json.dumps(
        {"id": "synth-x-0001", "meta": {"synthetic": True},
         "messages": [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "no_queue"}]}) + "\n")
    with pytest.raises(DataError, match=r"accepted.jsonl:1: .*not in task.labels"):
        prepare_data(load_config(path), project)


def test_a_fixed_eval_file_with_synthetic_rows_is_refused(project):
    path = project / "taskfit.yaml"
    config = load_config(path)
    lines = (project / config.data.train).read_text().splitlines()
    (project / "data" / "eval.jsonl").write_text("\n".join(lines[:40]) + "\n")
    (project / config.data.train).write_text("\n".join(lines[40:]) + "\n")
    _mark(project / "data" / "eval.jsonl", every=7)
    doc = yaml.safe_load(path.read_text())
    doc["data"]["eval"] = "data/eval.jsonl"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(DataError, match="held-out rows must be real"):
        prepare_data(load_config(path), project)


def test_synth_without_an_endpoint_is_a_clear_error(project):
    result = CliRunner().invoke(app, ["data", "synth", str(project), "--n", "3"])
    assert result.exit_code == 2 and "synth.endpoint" in result.output and "Traceback" not in result.output


def test_a_kind_without_labels_or_schema_drafts_text_answers():
    from taskfit.tasks import get_task
    from taskfit.tasks.base import answer_schema

    qa = TaskSpec(kind="qa", success="s", system_prompt="Answer from the context.")
    assert answer_schema(get_task("qa"), qa) == {"type": "string", "minLength": 1}
