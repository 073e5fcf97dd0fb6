"""The data check on the labelled documents corpus (bench/documents_corpus.py): receipts of one
shop share a name, an address, registration numbers and notices, and many of them are
near-identical texts (estimated Jaccard 0.8-0.95), yet each has its own number, date, items and
total. Every true copy (the same text, re-spaced, re-printed with a stamp, re-scanned with one
character misread) is removed; no distinct document is, whether its answer differs (extract) or
is the same (classify: one label for a whole layout); and no answer is rewritten.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from taskfit.config import load_config
from taskfit.data.prepare import check_data, prepare_data

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from documents_corpus import DOC_KINDS, copies, documents, shop_receipts  # noqa: E402

SHOPS = 15
FIELDS = ("company", "date", "address", "total")
EXTRACT = {"kind": "extract", "success": "s", "system_prompt": "Read the receipt.",
           "schema": {"type": "object", "properties": {k: {"type": "string"} for k in FIELDS},
                      "required": list(FIELDS)}}
CLASSIFY = {"kind": "classify", "success": "s", "system_prompt": "What kind of document is this?",
            "labels": list(DOC_KINDS)}


@pytest.fixture(scope="module")
def corpus():
    originals = shop_receipts(300, shops=SHOPS)
    return originals, copies(originals, 20)


def _project(tmp_path: Path, task: dict, rows: list[dict], target: str, **data) -> object:
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    doc = {"task": task, "data": {"train": "train.jsonl", "columns": {"input": "text", "target": target}, **data}}
    (tmp_path / "taskfit.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_config(tmp_path)


def _removed(card) -> int:
    c = card.counts
    assert c["read"] == c["kept"] + c["quarantined"] + c["exact_duplicates"] + c["near_duplicates"]
    return c["exact_duplicates"] + c["near_duplicates"]


def test_extract_keeps_every_receipt_removes_every_copy_and_rewrites_no_answer(tmp_path, corpus):
    originals, copied = corpus
    rows = [{"id": d.id, "text": d.text, "fields": d.answer} for d in originals + copied]
    config = _project(tmp_path, EXTRACT, rows, "fields", privacy={"regions": ["MY", "US", "GB"]})
    card = check_data(config, tmp_path)
    assert card.counts["kept"] == len(originals) and _removed(card) == len(copied)
    assert card.counts["conflicting_labels"] == 0
    # The receipts kept are look-alikes of one another: the rule was put to work, not bypassed.
    assert card.counts["distinct_look_alikes"] >= 100
    assert card.templates["layouts"] == SHOPS and card.templates["rows_in_layouts"] == len(originals)

    prepared = prepare_data(config, tmp_path)
    kept = prepared.train + prepared.eval
    assert sorted(ex.id for ex in kept) == sorted(d.id for d in originals)
    answer = {d.id: d.answer for d in originals}
    assert all(json.loads(ex.target) == answer[ex.id] for ex in kept)
    assert prepared.card.privacy["answers_changed"] == {}


def test_classify_keeps_one_layouts_documents_with_one_label_and_removes_every_copy(tmp_path, corpus):
    """Every receipt has the label "receipt": one shop's receipts are look-alikes with the same
    answer, and each still has words of its own (its items, date, total), so none is a copy. The
    documents corpus adds 400 documents of 18 layouts, 14 of them true copies."""
    originals, copied = corpus
    mixed = documents(400)
    docs = originals + copied + mixed
    rows = [{"id": d.id, "text": d.text, "label": d.kind} for d in docs]
    card = check_data(_project(tmp_path, CLASSIFY, rows, "label"), tmp_path)
    true_copies = [d for d in docs if d.copy_of is not None]
    assert len(true_copies) == len(copied) + 14
    assert card.counts["kept"] == len(docs) - len(true_copies) and _removed(card) == len(true_copies)
    assert card.counts["conflicting_labels"] == 0 and card.counts["distinct_look_alikes"] >= 100
    kept_lines = {n["other_line"] for n in card.near_duplicates}
    copy_lines = {i + 1 for i, d in enumerate(docs) if d.copy_of is not None}
    assert kept_lines <= copy_lines  # whatever was removed as a near-duplicate was a copy


def test_group_by_template_holds_out_whole_shops(tmp_path, corpus):
    originals, _ = corpus
    rows = [{"id": d.id, "text": d.text, "fields": d.answer} for d in originals]
    prepared = prepare_data(_project(tmp_path, EXTRACT, rows, "fields", group_by="template"), tmp_path)
    shop = {d.id: int(d.id[1:]) % SHOPS for d in originals}
    train, held = {shop[ex.id] for ex in prepared.train}, {shop[ex.id] for ex in prepared.eval}
    assert train and held and train.isdisjoint(held) and len(train | held) == SHOPS
