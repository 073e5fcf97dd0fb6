"""extract: accuracy, precision, recall, F1 and miss counts per field, as the scorecard, the
Markdown scorecard and the HTML report show them."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from html.parser import HTMLParser
from pathlib import Path

import pytest

from taskfit.config import EvalSpec, TaskSpec
from taskfit.evaluation.compare import build_scorecard
from taskfit.evaluation.report import write_scorecard_report
from taskfit.records import EvalResult, Example, Prediction
from taskfit.tasks import score
from taskfit.tasks.extract import schema_fields

RECEIPT = TaskSpec(kind="extract", success="s", system_prompt="p", schema={
    "type": "object",
    "properties": {
        "company": {"type": "string"}, "date": {"type": ["string", "null"]}, "total": {"type": "number"},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}}},
        "items": {"type": "array", "items": {"type": "string"}},
        "meta": {"type": "object"},  # free-form: its keys come from the data, not the schema
    }})

GOLD = [
    {"company": "ACME", "date": "2024-01-02", "total": 10, "address": {"city": "Paris"}, "items": ["tea", "milk"]},
    {"company": "Bolt", "date": None, "total": 5, "items": []},
    {"company": "Core", "date": "2024-03-04", "total": 7, "address": {"city": "Oslo", "zip": "0150"},
     "items": ["jam"]},
    {"company": "Dune", "date": "2024-05-06", "total": 3, "address": {"city": "Rome"}},
]
ANSWERS = [
    # company case-folded: right; date null: missing; zip: invented; items in another order: right
    '{"company": "acme", "date": null, "total": 10, "address": {"city": "Paris", "zip": "75001"}, '
    '"items": ["milk", "tea"]}',
    # date absent where the gold has null: right; total wrong; items where the gold has []: invented
    '{"company": "Bolt", "total": 6, "items": ["bread"]}',
    # not JSON: every gold field missing
    "Core, 7 euros",
    # company wrong; "note" is outside the schema and the gold: invented
    '{"company": "Dune Ltd", "date": "2024-05-06", "total": 3, "address": {"city": "Rome"}, "note": "x"}',
]


def _pred(i, out):
    return Prediction(example_id=str(i), output=out, valid=True, latency_s=0.01, prompt_tokens=10,
                      completion_tokens=2)


def _score(answers, candidate="c", gold=GOLD, task=RECEIPT):
    exs = [Example(id=str(i), input="receipt", target=json.dumps(g)) for i, g in enumerate(gold)]
    return score(task, EvalSpec(), candidate, exs, [_pred(i, a) for i, a in enumerate(answers)], n_boot=50)


def test_schema_fields_are_dotted_leaves_in_schema_order():
    assert schema_fields(RECEIPT.schema_) == ["company", "date", "total", "address.city", "address.zip", "items"]


def test_per_field_figures_on_hand_made_receipts():
    r = _score(ANSWERS)
    f = r.per_class
    # the schema's fields in its order, then the invented one; the free-form object has no row
    assert list(f) == ["company", "date", "total", "address.city", "address.zip", "items", "note"]
    expected = {  # support, accuracy, precision, recall, f1, missing, invented, wrong: counted by hand
        "company": (4, 2 / 4, 2 / 3, 2 / 4, 4 / 7, 1, 0, 1),
        "date": (3, 2 / 4, 1, 1 / 3, 1 / 2, 2, 0, 0),
        "total": (4, 2 / 4, 2 / 3, 2 / 4, 4 / 7, 1, 0, 1),
        "address.city": (3, 3 / 4, 1, 2 / 3, 4 / 5, 1, 0, 0),
        "address.zip": (1, 2 / 4, 0, 0, 0, 1, 1, 0),
        "items": (2, 2 / 4, 1 / 2, 1 / 2, 1 / 2, 1, 1, 0),
        "note": (0, 3 / 4, 0, 0, 0, 0, 1, 0),
    }
    keys = ["support", "accuracy", "precision", "recall", "f1", "missing", "invented", "wrong"]
    for name, values in expected.items():
        assert [f[name][k] for k in keys] == pytest.approx(list(values)), name
    # the per-field counts add up to the record-level ones
    m = r.metrics
    assert sum(v["missing"] for v in f.values()) == m["missing_fields"] == 7
    assert sum(v["invented"] for v in f.values()) == m["invented_fields"] == 3
    assert sum(v["wrong"] for v in f.values()) == m["wrong_values"] == 2


def test_null_and_absent_are_the_same_empty_field():
    gold = [{"company": "A", "date": None}, {"company": "B"}]
    r = _score(['{"company": "A"}', '{"company": "B", "date": null}'], gold=gold)
    assert r.per_class["date"] == {"support": 0, "accuracy": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0,
                                   "missing": 0, "invented": 0, "wrong": 0}
    assert r.per_class["company"]["accuracy"] == 1.0 and r.metrics["exact_match"] == 1.0


def test_eval_result_with_per_field_figures_survives_a_json_round_trip():
    r = _score(ANSWERS)
    back = EvalResult(**json.loads(json.dumps(asdict(r))))
    assert back == r and back.per_class["address.city"]["support"] == 3


class _Tables(HTMLParser):
    """Every <table> of a page as {"class": ..., "rows": [[cell text, ...], ...]}."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"class": dict(attrs).get("class", ""), "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1]["rows"][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _results():
    base = _score(ANSWERS, "few-shot")
    tuned = _score([json.dumps(g) for g in GOLD], "fine-tuned")  # every field right
    return [base, tuned]


def test_report_has_the_per_field_table_and_figure(tmp_path: Path):
    results = _results()
    card = build_scorecard(results, {})
    report = write_scorecard_report(tmp_path, "receipts", card, {r.candidate: [] for r in results})
    page = report.read_text()
    parser = _Tables()
    parser.feed(page)
    (table,) = [t for t in parser.tables if t["class"] == "per-field"]
    header, *rows = table["rows"]
    assert header == ["field", "support", "few-shot: accuracy / F1", "fine-tuned: accuracy / F1"]
    by_field = {row[0]: row[1:] for row in rows}
    assert by_field["company"] == ["4", "50.0% / 57.1%", "100.0% / 100.0%"]
    assert by_field["date"] == ["3", "50.0% / 50.0%", "100.0% / 100.0%"]
    assert by_field["note"] == ["0", "75.0% / 0.0%", "n/a"]  # invented by few-shot only
    assert "address.zip" in by_field and "meta" not in by_field
    details = [t for t in parser.tables if t["class"] == "per-field-detail"]
    assert len(details) == 2 and details[0]["rows"][0][-3:] == ["missing", "invented", "wrong"]
    for figure in ("per-field accuracy", "per-field F1"):
        assert f'alt="{figure}"' in page
    assert (tmp_path / "plots" / "per_field_accuracy.png").stat().st_size


def test_scorecard_shows_accuracy_and_f1_per_field_for_the_best_candidates():
    results = _results() + [_score(["{}"] * 4, "prompt-only")]  # a worse baseline: not shown
    card = build_scorecard(results, {})
    ((title, header, rows),) = card.extra_tables()
    assert title == "per field (accuracy / F1)" and header == ["field", "support", "fine-tuned", "few-shot"]
    assert rows[0] == ["company", "4", "100.0% / 100.0%", "50.0% / 57.1%"]
    md = "\n".join(card.markdown())
    assert "**per field (accuracy / F1)**" in md and "| date | 3 | 100.0% / 100.0% | 50.0% / 50.0% |" in md
    classify = build_scorecard([EvalResult(candidate="x", metrics={"accuracy": 1.0}, per_example=[1.0])], {})
    assert classify.extra_tables() == [] and len(classify.markdown()) == 3


def test_a_retrain_scorecard_shows_both_versions_per_field():
    # `taskfit retrain` names its two versions "production <id>" and "retrained <id>": neither is
    # a fine-tune by name, and the table had shown production alone
    from dataclasses import replace

    from taskfit.evaluation.compare import Scorecard

    few, tuned = [r for r in _results() if r.candidate in ("few-shot", "fine-tuned")]
    results = [replace(few, candidate="production 04f6"), replace(tuned, candidate="retrained 9ab1")]
    card = Scorecard(kind="extract", main="field_f1", results=results, thresholds={}, versus="production")
    ((title, header, rows),) = card.extra_tables()
    assert header == ["field", "support", "production 04f6", "retrained 9ab1"]
    assert rows[0] == ["company", "4", "50.0% / 57.1%", "100.0% / 100.0%"]


SNIPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "snips_slots"


@pytest.mark.skipif(not SNIPS.exists(), reason="../shared/data is absent (fresh clone)")
@pytest.mark.parametrize("name", ["test.jsonl", "bookrestaurant_test.jsonl"])
def test_snips_supports_add_up_to_the_gold_field_counts(name):
    rows = [json.loads(line) for line in (SNIPS / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    keys = sorted({k for r in rows for k in r["fields"]})
    task = TaskSpec(kind="extract", success="s", system_prompt="p", schema={
        "type": "object", "properties": {k: {"type": ["string", "null"]} for k in keys}})
    gold = [r["fields"] for r in rows]
    # an answer that drops every third row's first slot and invents a city on every fifth row
    answers = []
    for i, g in enumerate(gold):
        a = {k: v for k, v in g.items() if v is not None}
        if i % 3 == 0 and a:
            a.pop(next(iter(a)))
        if i % 5 == 0:
            a["city"] = a.get("city") or "Atlantis"
        answers.append(json.dumps(a))
    r = _score(answers, gold=gold, task=task)
    counts = Counter(k for g in gold for k, v in g.items() if v is not None)  # nulls are not gold values
    assert {k: v["support"] for k, v in r.per_class.items() if v["support"]} == dict(counts)
    assert sum(v["support"] for v in r.per_class.values()) == sum(counts.values())
    assert sum(v["missing"] for v in r.per_class.values()) == r.metrics["missing_fields"] > 0
    assert r.per_class["city"]["invented"] > 0 and r.per_class["city"]["precision"] < 1.0


def test_field_f1_interval_brackets_the_field_f1_when_records_differ_in_size():
    # one big record read right, nine one-field records read wrong: field F1 20/38, while the
    # mean of the per-record F1s is 0.1
    big = {f"k{i}": str(i) for i in range(10)}
    gold = [big] + [{"k0": "a"}] * 9
    task = TaskSpec(kind="extract", success="s", system_prompt="p", schema={"type": "object"})
    r = _score([json.dumps(big)] + ['{"k0": "b"}'] * 9, gold=gold, task=task)
    m = r.metrics
    assert m["field_f1"] == pytest.approx(20 / 38) and m["record_f1_mean"] == pytest.approx(0.1)
    assert m["field_f1_ci_low"] <= m["field_f1"] <= m["field_f1_ci_high"]
