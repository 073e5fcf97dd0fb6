"""Loading chat JSONL: bad rows quarantined with file, line and field; counts add up; splits."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from taskfit.data.load import load_jsonl
from taskfit.data.split import fingerprint, stratified_split, stratified_subsample
from taskfit.errors import DataError
from taskfit.records import Example


def _row(text, label, **extra):
    return json.dumps({"messages": [{"role": "user", "content": text},
                                    {"role": "assistant", "content": label}], **extra})


def test_bad_rows_are_quarantined_with_line_and_reason(tmp_path, classify_task):
    lines = [
        _row("I was charged twice", "billing"),                         # 1 ok
        "{not json",                                                    # 2
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}),  # 3 wrong role
        json.dumps({"messages": [{"role": "user", "content": "   "},
                                 {"role": "assistant", "content": "billing"}]}),  # 4 empty
        json.dumps({"messages": [{"role": "user", "content": "hello"}]}),         # 5 no answer
        _row("Where is my parcel", "logistics"),                        # 6 unknown label
        _row("I was charged  twice", "billing"),                        # 7 exact duplicate
        _row("Where is my parcel?", "shipping"),                        # 8 ok
    ]
    path = tmp_path / "train.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"messages": "\xff"}\n')  # 9 not UTF-8
    result = load_jsonl(path, classify_task)
    reasons = {q.source.rsplit(":", 1)[1]: q.reason for q in result.quarantined}
    assert set(reasons) == {"2", "3", "4", "5", "6", "9"}
    assert "invalid JSON" in reasons["2"]
    assert "messages[0].role" in reasons["3"] and "'robot'" in reasons["3"]
    assert "messages[0].content" in reasons["4"]
    assert "end with the assistant" in reasons["5"]
    assert "'logistics'" in reasons["6"] and "task.labels" in reasons["6"]
    assert "UTF-8" in reasons["9"]
    assert result.duplicates == 1
    assert result.read == 9 == len(result.examples) + len(result.quarantined) + result.duplicates
    assert result.examples[0].source == f"{path}:1"


def test_no_usable_rows_is_a_clear_error(tmp_path, classify_task):
    path = tmp_path / "bad.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match="no usable rows"):
        load_jsonl(path, classify_task)
    with pytest.raises(DataError, match="no such file"):
        load_jsonl(tmp_path / "missing.jsonl", classify_task)


def _examples(n=200):
    labels = ["a"] * (n // 2) + ["b"] * (n // 4) + ["c"] * (n - n // 2 - n // 4)
    return [Example(id=f"e{i}", input=f"text {i}", target=lab) for i, lab in enumerate(labels)]


def test_split_is_stratified_and_seeded():
    exs = _examples()
    train, test = stratified_split(exs, 0.2, seed=0)
    assert len(test) == 40 and len(train) == 160
    assert {ex.id for ex in train}.isdisjoint({ex.id for ex in test})
    assert Counter(ex.target for ex in test) == {"a": 20, "b": 10, "c": 10}
    again, _ = stratified_split(list(reversed(exs)), 0.2, seed=0)
    assert [e.id for e in again] == [e.id for e in train]
    other, _ = stratified_split(exs, 0.2, seed=1)
    assert [e.id for e in other] != [e.id for e in train]
    assert fingerprint(train) == fingerprint(again) != fingerprint(other)


def test_subsample_keeps_proportions():
    sample = stratified_subsample(_examples(), 40, seed=0)
    assert len(sample) == 40
    assert Counter(ex.target for ex in sample) == {"a": 20, "b": 10, "c": 10}
    assert len(stratified_subsample(_examples(), None, seed=0)) == 200
