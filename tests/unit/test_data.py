"""The data stage: every bad row quarantined with file, line and field; counts add up; imports."""

from __future__ import annotations

import json
import os
import re
from collections import Counter

import pytest

from taskfit.config import DataSpec, TaskSpec
from taskfit.data.read import lines_in
from taskfit.data.scan import scan
from taskfit.data.split import fingerprint, grouped_split, stratified_split, stratified_subsample, validation_split, widened
from taskfit.errors import DataError
from taskfit.records import Example, PreferencePair

SPEC = DataSpec(train="x.jsonl")


def _row(text, label, **extra):
    return json.dumps({"messages": [{"role": "user", "content": text},
                                    {"role": "assistant", "content": label}], **extra})


def _scan(tmp_path, lines: list[bytes | str], task, spec=SPEC, name="train.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    result = scan(path, task, spec, keep=True)
    assert result.counts_add_up()
    assert result.read == result.kept + len(result.quarantined) + result.exact_duplicates + len(result.near_duplicates)
    assert result.kept == len(result.examples)
    return path, result


def _reason(result, line: int) -> str:
    [q] = [q for q in result.quarantined if q.source.endswith(f":{line}")]
    return q.reason


@pytest.mark.parametrize("bad, expected", [
    ("{not json", "invalid JSON: Expecting property name enclosed in double quotes at column 2"),
    # a row cut short fails where its line ends, not at "column 1" of the line after
    ('{"messages": [{"role": "user", "content": "x"}', "invalid JSON: Expecting ',' delimiter at the end of the line"),
    # json's message that ends in "at" is completed by the position, not followed by another "at"
    ('{"messages": [{"role": "user", "content": "Book a table', "invalid JSON: Invalid control character at the end of the line"),
    (json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "billing"}]}),
     "messages[0].role: got 'robot'"),
    (json.dumps({"messages": [{"content": "x"}, {"role": "assistant", "content": "billing"}]}),
     "messages[0].role: got None"),
    (json.dumps({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "billing"}]}),
     "messages[0].content: empty"),
    (json.dumps({"messages": [{"role": "user", "content": "\u200b\x00 "}, {"role": "assistant", "content": "billing"}]}),
     "messages[0].content: no character one can see"),
    ('{"messages": [{"role": "user", "content": "hi", "x\\udc00": 1}, {"role": "assistant", "content": "billing"}]}',
     "lone surrogate: field 'messages[0].x\\udc00 (its name)' holds \\udc00"),
    (json.dumps({"messages": [{"role": "user", "content": "hello"}]}), "must end with the assistant"),
    (_row("Where is my parcel", "logistics"), "label 'logistics' is not in task.labels"),
    (b'{"messages": "\xff\xfe"}', "not UTF-8: byte 0xff ('\xff' in Windows-1252) at byte 15 of the line"),
    (_row("x" * 3000, "billing"), "over the limit"),
    ("[1, 2]", "expected a JSON object"),
    # half of a character: no encoding can write it, and a tokenizer refuses it
    (_row("I was charged twice", "billing").replace("I was", "\\ud800I was"),
     "lone surrogate: field 'messages[0].content' holds \\ud800 at character 1, half of a character"),
])
def test_each_bad_row_is_quarantined_with_its_line_and_field(tmp_path, classify_task, bad, expected):
    spec = DataSpec(train="x.jsonl", max_line_bytes=2000)
    good = [_row("I was charged twice", "billing"), _row("Where is my parcel?", "shipping")]
    path, result = _scan(tmp_path, [good[0], bad, good[1]], classify_task, spec)
    assert len(result.quarantined) == 1 and result.kept == 2
    assert result.quarantined[0].source == f"{path}:2"
    assert expected in _reason(result, 2)


def test_a_character_as_two_escapes_is_read_and_a_lone_surrogate_is_quarantined(tmp_path, classify_task, tiny):
    """JSON writes a character beyond the Basic Multilingual Plane as two escapes (an emoji as
    \\ud83d\\ude00): such a row is read and its tokens counted; a lone half, which no encoding can
    write, is quarantined with its field, where the tokenizer stopped the whole check before."""
    rows = [_row("charged twice \U0001f600", "billing"), _row("parcel lost \udc00 again", "shipping"),
            _row("refund my order", "refund")]  # json.dumps writes both as escapes
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(rows) + "\n")
    result = scan(path, classify_task, SPEC, keep=True, tokenizer=tiny.tokenizer)
    assert result.counts_add_up() and result.read == 3 and result.kept == 2 and len(result.lengths) == 2
    assert result.examples[0].input == "charged twice \U0001f600"
    assert _reason(result, 2).startswith("lone surrogate: field 'messages[0].content' holds \\udc00 at character 13")


def test_quarantined_rows_are_listed_in_line_order(tmp_path, classify_task):
    """Rows are read and validated a batch at a time, then deduplicated: a repeated id found in the
    second pass is still listed before an invalid row that follows it in the file."""
    first = json.dumps({"id": "A", "messages": [{"role": "user", "content": "I was charged twice"},
                                               {"role": "assistant", "content": "billing"}]})
    again = json.dumps({"id": "A", "messages": [{"role": "user", "content": "Where is my parcel?"},
                                               {"role": "assistant", "content": "shipping"}]})
    path, result = _scan(tmp_path, [first, again, "{not json", _row("refund my order", "refund")], classify_task)
    assert [q.source for q in result.quarantined] == [f"{path}:2", f"{path}:3"]
    assert "is used by an earlier row" in _reason(result, 2) and result.kept == 2


def test_exact_duplicates_are_removed_and_counted(tmp_path, classify_task):
    _, result = _scan(tmp_path, [_row("I was charged twice", "billing"),
                                 _row("i was   charged TWICE", "billing"),
                                 _row("Where is my parcel?", "shipping")], classify_task)
    assert result.exact_duplicates == 1 and result.kept == 2


def test_near_duplicates_and_conflicting_labels(tmp_path, classify_task):
    text = "Hello, I was charged twice for my Pro plan this month, please check the invoice. Thanks, Anna"
    _, result = _scan(tmp_path, [_row(text, "billing"), _row("Re: " + text, "billing"),
                                 _row("Any update? " + text, "refund"),
                                 _row("My parcel never arrived and the tracking is stuck", "shipping")],
                      classify_task)
    assert len(result.near_duplicates) == 2 and result.kept == 2
    assert len(result.conflicts) == 1
    c = result.conflicts[0]
    assert (c.kept_label, c.other_label) == ("billing", "refund") and c.other_preview.startswith("Any update?")


def test_extract_answers_are_validated_against_the_schema(tmp_path):
    task = TaskSpec(kind="extract", success="s", system_prompt="p",
                    schema={"type": "object", "properties": {"order_id": {"type": "string"},
                                                             "amount": {"type": "number"}},
                            "required": ["order_id"], "additionalProperties": False})
    rows = [json.dumps({"prompt": "order 12 for $5", "completion": '{"order_id": "12", "amount": 5}'}),
            json.dumps({"prompt": "order 13", "completion": '{"amount": "five"}'}),
            json.dumps({"prompt": "order 14", "completion": "order 14"}),
            json.dumps({"prompt": "order 15", "completion": '{"order_id": "15", "colour": "red"}'}),
            json.dumps({"prompt": "order 16", "completion": '{"amount": 5, "order_id": "16}'})]
    _, result = _scan(tmp_path, rows, task)
    assert result.kept == 1
    assert "does not match task.schema" in _reason(result, 2)
    assert "not valid JSON" in _reason(result, 3)
    assert "colour" in _reason(result, 4)
    # json's whole message: where in the answer it stopped reading
    assert ("answer: not valid JSON (Unterminated string starting at: line 1 column 27 (char 26)); extract "
            "answers must be JSON") in _reason(result, 5)


def test_every_import_shape(tmp_path, classify_task):
    rows = [
        json.dumps({"prompt": "I was charged twice", "completion": "billing"}),
        json.dumps({"instruction": "Route this ticket", "input": "My parcel is late", "output": "shipping"}),
        json.dumps({"conversations": [{"from": "system", "value": "Route."}, {"from": "human", "value": "I can't log in"},
                                      {"from": "gpt", "value": "account_access"}]}),
        _row("Please cancel my plan", "cancellation", id="c1"),
    ]
    _, result = _scan(tmp_path, rows, classify_task)
    assert result.kept == 4
    by_target = {ex.target: ex for ex in result.examples}
    assert by_target["shipping"].input == "Route this ticket\n\nMy parcel is late"
    assert by_target["account_access"].system == "Route."
    assert by_target["cancellation"].id == "c1"
    assert result.system_prompts[classify_task.system_prompt] == 3  # one row brings its own


def test_preference_pairs_both_shapes(tmp_path, classify_task):
    rows = [json.dumps({"prompt": "Say hi", "chosen": "Hello!", "rejected": "Go away."}),
            json.dumps({"input": {"messages": [{"role": "user", "content": "Say bye"}]},
                        "preferred_output": [{"role": "assistant", "content": "Goodbye!"}],
                        "non_preferred_output": [{"role": "assistant", "content": "Whatever."}]}),
            json.dumps({"prompt": "Same", "chosen": "x", "rejected": "x"})]
    _, result = _scan(tmp_path, rows, classify_task, DataSpec(train="x", format="preference"))
    assert result.kind == "preferences" and result.kept == 2
    assert all(isinstance(r, PreferencePair) for r in result.examples)
    assert result.examples[1].chosen == "Goodbye!"
    assert "identical" in _reason(result, 3)


def test_csv_with_column_mapping(tmp_path, classify_task):
    path = tmp_path / "tickets.csv"
    path.write_text("ticket,queue,customer\n\"I was charged twice, help\",billing,C1\n"
                    "Where is my parcel,shipping,C2\nMy login fails,teleport,C3\n", encoding="utf-8")
    spec = DataSpec(train="tickets.csv", columns={"input": "ticket", "target": "queue"})
    result = scan(path, classify_task, spec, keep=True)
    assert result.kept == 2 and result.examples[0].input == "I was charged twice, help"
    assert result.examples[0].meta["customer"] == "C1"
    assert result.quarantined[0].source == f"{path}:4" and "teleport" in result.quarantined[0].reason
    missing = DataSpec(train="tickets.csv", columns={"input": "text", "target": "queue"})
    bad = scan(path, classify_task, missing)
    assert bad.kept == 0 and "'text'" in bad.quarantined[0].reason


def test_parquet_and_tsv(tmp_path, classify_task):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["I was charged twice", "Parcel late"], "label": ["billing", "shipping"]}),
                   tmp_path / "t.parquet")
    (tmp_path / "t.tsv").write_text("text\tlabel\nI was charged twice\tbilling\n", encoding="utf-8")
    for name in ("t.parquet", "t.tsv"):
        spec = DataSpec(train=name, columns={"input": "text", "target": "label"})
        assert scan(tmp_path / name, classify_task, spec).kept >= 1


def test_missing_file_is_a_clear_error(tmp_path, classify_task):
    with pytest.raises(DataError, match="no such file"):
        scan(tmp_path / "missing.jsonl", classify_task, SPEC)
    with pytest.raises(DataError, match="unknown file type '.docx'"):
        (tmp_path / "x.docx").write_text("")
        scan(tmp_path / "x.docx", classify_task, SPEC)
    with pytest.raises(DataError, match="unknown file type '.xls'") as raised:  # Excel's old binary format
        (tmp_path / "x.xls").write_text("")
        scan(tmp_path / "x.xls", classify_task, SPEC)
    assert "save it from Excel as an Excel Workbook (.xlsx) or as CSV UTF-8" in raised.value.hint
    with pytest.raises(DataError, match="unknown file type '.txt'") as raised:  # Excel's "Unicode Text"
        (tmp_path / "x.txt").write_text("")
        scan(tmp_path / "x.txt", classify_task, SPEC)
    assert "name a tab-separated .txt" in raised.value.hint and ".tsv" in raised.value.hint


def _examples(n=200):
    labels = ["a"] * (n // 2) + ["b"] * (n // 4) + ["c"] * (n - n // 2 - n // 4)
    return [Example(id=f"e{i}", input=f"text {i}", target=lab, meta={"customer": f"C{i % 37}"})
            for i, lab in enumerate(labels)]


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


def test_validation_keeps_its_share_with_more_classes_than_that_and_the_held_out_split_says_when_it_widens():
    """151 intents of about 4 training rows each (a walkthrough's 600 clinc150 rows): validation took one
    row of each class, 151 rows, where train.validation_share 0.1 asked for 60, and trained on 449."""
    rows = [Example(id=f"r{i:04d}", input=f"text {i}", target=f"intent{i % 151}") for i in range(600)]
    fit, validation = validation_split(rows, 0.1, 200, seed=0)
    assert len(validation) == 60 and len(fit) == 540
    assert validation == validation_split(rows, 0.1, 200, seed=0)[1]  # seeded
    assert len(validation_split(rows, 0.5, 200, seed=0)[1]) == 200  # validation_max_rows
    assert len(set(ex.target for ex in validation_split(rows, 0.3, 200, seed=0)[1])) == 151  # room: stratified
    # the held-out split still takes a row of each class, and says how many more that is
    train, held = stratified_split(rows, 0.15, seed=0)
    assert len(held) == 151 and widened(rows, 0.15) == 151 - 90 and widened(rows, 0.3) == 0


def test_grouped_split_never_straddles():
    exs = _examples()
    groups = [ex.meta["customer"] for ex in exs]
    train, test = grouped_split(exs, 0.15, 0, groups)
    assert len(train) + len(test) == len(exs) and test
    assert {ex.meta["customer"] for ex in train}.isdisjoint({ex.meta["customer"] for ex in test})


def test_subsample_keeps_proportions():
    sample = stratified_subsample(_examples(), 40, seed=0)
    assert len(sample) == 40
    assert Counter(ex.target for ex in sample) == {"a": 20, "b": 10, "c": 10}
    assert len(stratified_subsample(_examples(), None, seed=0)) == 200


def test_a_csv_row_that_is_not_utf8_is_quarantined_with_its_line_and_byte(tmp_path, classify_task):
    path = tmp_path / "t.csv"
    good = "".join(f"ticket {i} was charged twice,billing\r\n" for i in range(3000))  # past the decoder's blocks
    path.write_bytes(b"text,label\r\n" + good.encode() + b"caf\xe9 closed,billing\r\n"
                     + b'"two\r\nlines, caf\xe9",billing\r\nWhere is my parcel,shipping\r\n')
    spec = DataSpec(train="t.csv", columns={"input": "text", "target": "label"}, dedup={"near": False})
    result = scan(path, classify_task, spec)
    assert result.counts_add_up() and result.read == 3003 and result.kept == 3001
    assert [(q.source, q.reason) for q in result.quarantined] == [
        (f"{path}:3002", "not UTF-8: byte 0xe9 ('é' in Windows-1252) at byte 4 of the line; re-save the file as UTF-8"),
        (f"{path}:3004", "not UTF-8: byte 0xe9 ('é' in Windows-1252) at byte 11 of the line; re-save the file as UTF-8")]
    header = tmp_path / "h.csv"
    header.write_bytes(b"caf\xe9,label\nI was charged twice,billing\n")
    with pytest.raises(DataError, match=r"h.csv:1: the header row is not UTF-8: byte 0xe9"):
        scan(header, classify_task, DataSpec(train="h.csv", columns={"input": "text", "target": "label"}))
    bom = tmp_path / "b.csv"
    bom.write_bytes(b"\xef\xbb\xbftext,label\nI was charged twice,billing\n")
    assert scan(bom, classify_task, DataSpec(train="b.csv", columns={"input": "text", "target": "label"})).kept == 1


def test_a_byte_order_mark_and_crlf_line_endings_simply_work(tmp_path, classify_task):
    rows = [_row("I was charged twice", "billing"), _row("Where is my parcel?", "shipping"),
            _row("I cannot log in", "account_access")]
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    result = scan(path, classify_task, SPEC, keep=True)
    assert result.kept == 3 and not result.quarantined
    assert [ex.target for ex in result.examples] == ["billing", "shipping", "account_access"]
    assert result.examples[0].id == "bom-1" and result.examples[0].input == "I was charged twice"


def test_a_tiny_subsample_is_a_seeded_sample_not_an_error():
    few = [Example(id=str(i), input=f"row {i}", target="ab"[i % 2]) for i in range(3)]
    assert stratified_subsample(few, 2, seed=0) == stratified_subsample(list(reversed(few)), 2, seed=0)
    assert len(stratified_subsample(few, 2, seed=0)) == 2
    five_pairs = [Example(id=str(i), input=f"row {i}", target="abcde"[i % 5]) for i in range(10)]
    assert len(stratified_subsample(five_pairs, 9, seed=0)) == 9  # 1 row left out cannot hold 5 classes


def test_a_worker_working_ahead_gives_the_same_check_and_rows(tmp_path, classify_task, monkeypatch, tiny):
    """In a file of POOL_FROM_BYTES or more, a worker process finds the personal data and secrets,
    makes the rows' signatures and counts their tokens a chunk ahead: the counts, the quarantined,
    removed and kept rows, every redaction, layout and token length are those of the check done in
    one process, on generated tickets with planted duplicates, personal data and keys."""
    from taskfit.data import scan as scan_module
    from taskfit.data.sample import generate_tickets

    rows = generate_tickets(1200, seed=4)
    respelled = {**rows[7], "id": "respelled", "messages": [rows[7]["messages"][0],
                                                           {"role": "assistant", "content": " BILLING"}]}
    # an invalid row, an exact copy, a label written otherwise, a row without its answer
    lines = [json.dumps(r) for r in rows] + ["{broken", json.dumps(rows[5]), json.dumps(respelled),
                                             json.dumps({"messages": [rows[9]["messages"][0]]})]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines[:600]) + "\n\n" + "\n".join(lines[600:]) + "\n")  # and a blank line
    task = classify_task.model_copy(update={"labels": sorted({r["messages"][1]["content"] for r in rows})})

    def check(workers, layouts=None, at=None):
        monkeypatch.setattr(scan_module, "WORKERS", workers)
        monkeypatch.setattr(scan_module, "POOL_FROM_BYTES", 0)
        seen = []
        result = scan(at or path, task, SPEC, keep=True, tokenizer=tiny.tokenizer, on_row=seen.append,
                      layouts=layouts)
        if (at or path).suffix == ".jsonl" and at is None:
            assert sum(seen) == lines_in(path) == result.read + 1  # the bar ends at the file's lines (a blank one)
        return result

    alone, pooled = check(0), check(1)
    assert pooled.counts_add_up() and pooled.read == len(lines)
    assert (pooled.exact_duplicates, len(pooled.near_duplicates), len(pooled.conflicts)) == \
        (alone.exact_duplicates, len(alone.near_duplicates), len(alone.conflicts))
    # each quarantined row with its reason and text, and the labels respelled, as the check in one process
    assert pooled.quarantined == alone.quarantined and len(alone.quarantined) == 2
    assert pooled.respelled == alone.respelled and sum(alone.respelled.values()) == 1
    assert pooled.examples == alone.examples  # the same rows kept, redacted alike
    assert pooled.pii_rows == alone.pii_rows > 0 and pooled.pii_counts == alone.pii_counts
    assert pooled.secret_rows == alone.secret_rows
    assert list(pooled.layouts) == list(alone.layouts) and pooled.distinct == alone.distinct
    assert len(pooled.lengths) == pooled.kept and list(pooled.lengths) == list(alone.lengths)
    assert list(pooled.fixed_lengths) == list(alone.fixed_lengths) and pooled.answer_tokens == alone.answer_tokens
    # the layouts come back from their process as they stand: a second file (a fixed eval file)
    # checked with them goes on numbering as in one process, its rows joining the first file's layouts
    more = tmp_path / "more.jsonl"
    more.write_text("\n".join(json.dumps({**r, "id": f"m{i}"}) for i, r in enumerate(generate_tickets(300, seed=5))))
    later = {workers: check(workers, made.layout_index, more) for workers, made in ((0, alone), (1, pooled))}
    assert list(later[1].layouts) == list(later[0].layouts) and max(later[0].layouts) >= max(alone.layouts)
    assert set(later[0].layouts) & set(alone.layouts)  # some rows of the second file join the first's layouts
    assert list(pooled.layout_index.rows) == list(alone.layout_index.rows)
    assert [pooled.layout_index.first_rows(k) for k in range(len(pooled.layout_index.rows))] == \
        [alone.layout_index.first_rows(k) for k in range(len(alone.layout_index.rows))]

    # a JSON document is read by this process and only searched ahead by the worker: the same again
    document = tmp_path / "t.json"
    document.write_text(json.dumps(rows + [rows[5], respelled]))
    path = document
    alone, pooled = check(0), check(1)
    assert pooled.read == len(rows) + 2 and pooled.exact_duplicates == alone.exact_duplicates == 1
    assert pooled.examples == alone.examples and pooled.respelled == alone.respelled
    assert list(pooled.layouts) == list(alone.layouts) and list(pooled.lengths) == list(alone.lengths)


def test_data_check_of_a_large_file_prints_the_card_the_check_in_one_process_prints(tmp_path, monkeypatch):
    """`taskfit data check` on a file past POOL_FROM_BYTES (a worker working ahead, the layouts'
    own process) prints the card the check done in one process prints: counts, look-alikes,
    layouts, labels, personal data and every warning."""
    from typer.testing import CliRunner

    from taskfit.cli.main import app
    from taskfit.data import scan as scan_module
    from taskfit.quickstart import make_quickstart_project

    project = make_quickstart_project(tmp_path / "p", n_tickets=3000).parent
    assert sum(f.stat().st_size for f in (project / "data").iterdir()) >= scan_module.POOL_FROM_BYTES

    def check(workers: int) -> list[str]:
        monkeypatch.setattr(scan_module, "WORKERS", workers)
        result = CliRunner().invoke(app, ["data", "check", str(project), "--no-tokens"])
        assert result.exit_code == 0, result.output
        return [line for line in result.output.splitlines() if not line.startswith("checking data:")]

    alone, pooled = check(0), check(1)
    assert pooled == alone
    assert any(re.match(r"\d+ layouts \(templates\)", line) for line in pooled)
    assert any(re.match(r"3000 rows read = \d+ kept", line) for line in pooled)


def _pooled_tickets(tmp_path, classify_task, monkeypatch):
    """2,000 generated tickets in a file checked as a large one (a worker ahead, the layouts' own
    process), and their task."""
    from taskfit.data import scan as scan_module
    from taskfit.data.sample import generate_tickets

    rows = generate_tickets(2000, seed=6)
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = classify_task.model_copy(update={"labels": sorted({r["messages"][1]["content"] for r in rows})})
    monkeypatch.setattr(scan_module, "WORKERS", 1)
    monkeypatch.setattr(scan_module, "POOL_FROM_BYTES", 0)
    return path, task


@pytest.mark.parametrize("how", ["raises", "dies"])
def test_an_error_in_the_layouts_process_is_raised_by_the_check_not_waited_on(tmp_path, classify_task, monkeypatch,
                                                                             how):
    """The kept rows' layouts are found by a process of their own in a large file: an error there
    stops the check with that error (its processes ended), rather than leaving it waiting; its
    death without a word (out of memory) stops it with an error saying so."""
    from taskfit.data.lookalike import Layouts

    path, task = _pooled_tickets(tmp_path, classify_task, monkeypatch)

    def broken(self, texts, path, lines, sigs=None, sizes=None):
        if how == "dies":
            os._exit(9)
        raise RuntimeError(f"no layouts for {len(texts)} rows")

    monkeypatch.setattr(Layouts, "assign_all", broken)  # (the process is forked with it)
    with pytest.raises(RuntimeError, match="no layouts for" if how == "raises" else "layouts' process .* stopped"):
        scan(path, task, SPEC)


@pytest.mark.parametrize("how", ["raises", "dies"])
def test_a_worker_that_fails_stops_the_check_with_why_not_waited_on(tmp_path, classify_task, monkeypatch, how):
    """A worker working ahead that raises an error stops the check with that error; one that dies
    without a word (out of memory) stops it with an error saying so: the check never waits on it."""
    from taskfit.data import scan as scan_module

    path, task = _pooled_tickets(tmp_path, classify_task, monkeypatch)

    def broken(*args, **kwargs):
        if how == "dies":
            os._exit(9)
        raise RuntimeError(f"nothing made of {len(args[-2])} rows")

    monkeypatch.setattr(scan_module, "_ahead", broken)  # (the worker is forked with it)
    with pytest.raises(RuntimeError, match="nothing made of 256 rows" if how == "raises" else "stopped without a word"):
        scan(path, task, SPEC)


def test_a_label_written_in_another_case_or_spacing_is_read_as_the_label_and_counted(tmp_path):
    """Hand-labelled files write one queue as billing, Billing and 'BILLING ': each row is kept as
    the label it stands for and counted as read that way, not quarantined. Labels that differ only
    in case and are both listed stay apart, and a spelling that could be either is quarantined."""
    from taskfit.data.prepare import build_card
    from taskfit.config import ProjectConfig

    task = TaskSpec(kind="classify", success="s", system_prompt="p", labels=["billing", "shipping", "US", "us"])
    lines = [_row("I was charged twice for my plan", "billing"),
             _row("Refund the double charge on my card please", "Billing"),
             _row("Where is the parcel I ordered last month", "SHIPPING"),
             _row("My invoice shows the wrong company address", "BILLING "),
             _row("Ship it to the United States branch", "US"),
             _row("ship it to our office over there", "us"),
             _row("which one of the two is this", "Us"),
             _row("The card was charged again this morning", "bi\u00adlling\u200b"),  # invisible characters
             _row("Send it to the US office in Boston", "US ")]  # a space after a label beside us: US
    path, result = _scan(tmp_path, lines, task, spec=DataSpec(train="x.jsonl", dedup={"near": False}))
    assert [ex.target for ex in result.examples] == ["billing", "billing", "shipping", "billing", "US", "us", "billing",
                                                     "US"]
    assert _reason(result, 7).startswith("answer: label 'Us' is not in task.labels")
    assert "did you mean" not in _reason(result, 7)  # US or us: no one label to suggest
    card = build_card(ProjectConfig(task=task, data=DataSpec(train="x.jsonl")), [result])
    assert card.labels == {"billing": 4, "shipping": 1, "US": 2, "us": 1}
    assert {(r["written"], r["label"], r["rows"]) for r in card.respelled} == \
        {("Billing", "billing", 1), ("BILLING ", "billing", 1), ("SHIPPING", "shipping", 1),
         ("bi\u00adlling\u200b", "billing", 1), ("US ", "US", 1)}  # a trailing space is a spelling too, counted
    (warning,) = [w for w in card.warnings if "another case or spacing" in w]
    assert warning.startswith("5 rows write their label") and "'SHIPPING' → 'shipping' (1)" in warning


def test_a_csv_row_with_too_few_or_too_many_fields_is_quarantined_as_the_file_holds_it(tmp_path):
    """A qa row missing its last cell would read as an empty answer, the refusal, and be trained as
    one: it is quarantined with its line, the column it lacks, and its text as written; a quote
    left open names the lines it swallowed."""
    task = TaskSpec(kind="qa", success="s", system_prompt="p")
    path = tmp_path / "questions.csv"
    path.write_text("question,passage,answer\n"
                    "What is X?,X is a letter.\n"
                    "What is Y?,Y is a letter.,a letter\n"
                    "What is Z?,Z is a letter.,a letter,extra\n"
                    "\"What is W?,W is a letter.,a letter\n"
                    "Next question,its passage,its answer\n", encoding="utf-8")
    spec = DataSpec(train="questions.csv", columns={"input": "question", "target": "answer", "context": "passage"})
    result = scan(path, task, spec, keep=True)
    assert result.counts_add_up() and [ex.input for ex in result.examples] == ["What is Y?"]
    # a quote left open that the next row's quote closes: the field count comes out right, and the
    # two rows read as one (a question with the next row's answer) unless the quote is caught
    path.with_name("closed.csv").write_text(
        "question,passage,answer\n"
        "Unclosed quote?,\"Leave is asked 10 days ahead.,10 days\n"
        "How long is leave?,\"Leave is 25 days.\",25 days\n"
        "Last question,its passage,its answer\n", encoding="utf-8")
    closed = scan(path.with_name("closed.csv"), task, spec, keep=True)
    assert closed.counts_add_up() and [ex.input for ex in closed.examples] == ["Last question"]
    ((source, reason, raw),) = [(q.source, q.reason, q.raw) for q in closed.quarantined]
    assert source.endswith("closed.csv:2") and "lines 2-3: a quote opened and not closed" in reason
    assert "double a quote inside a quoted cell" in reason and raw.endswith('"Leave is 25 days.",25 days')
    # a quote out of place within one line is read as the csv module always read it
    path.with_name("one.csv").write_text('question,passage,answer\n"What is V?" ,V is a letter.,a letter\n',
                                         encoding="utf-8")
    one = scan(path.with_name("one.csv"), task, spec, keep=True)
    assert [(ex.input, ex.target) for ex in one.examples] == [("What is V? ", "a letter")]
    reasons = {q.source: (q.reason, q.raw) for q in result.quarantined}
    assert reasons[f"{path}:2"] == ("2 fields where the header has 3 (no 'answer'): add the missing separators, "
                                    "or quote a cell that holds one", "What is X?,X is a letter.")
    assert reasons[f"{path}:4"][0].startswith("more fields than the 3 columns")
    assert reasons[f"{path}:4"][1] == "What is Z?,Z is a letter.,a letter,extra"
    assert "lines 5-6: a quote opened and not closed" in reasons[f"{path}:5"][0]
    # the card counts rows by the reason's kind, cut at its first colon outside brackets
    from taskfit.data.prepare import reason_kind

    assert reason_kind(reasons[f"{path}:5"][0]).endswith("lines 5-6: a quote opened and not closed, taking the "
                                                         "lines after it?)")
    assert reason_kind(reasons[f"{path}:2"][0]) == "2 fields where the header has 3 (no 'answer')"


def test_a_long_cell_an_extra_cell_and_a_role_that_is_no_name_are_rows_not_crashes(tmp_path, classify_task):
    """A CSV cell over the csv module's 131,072 characters is read (or quarantined over
    data.max_line_bytes, as a JSONL line is) rather than stopping the file; a row whose only text
    is in a cell beyond the header is quarantined, not skipped as blank; a chat role written as a
    list is quarantined with its field."""
    path = tmp_path / "t.csv"
    long = "charged twice " * 12_000  # 168,000 characters
    path.write_text(f"text,label\n{long},billing\n,,real text here\nparcel late,shipping\n"
                    f"{long * 8},billing\n", encoding="utf-8")
    spec = DataSpec(train="t.csv", columns={"input": "text", "target": "label"})
    result = scan(path, classify_task, spec)
    assert result.counts_add_up() and result.read == 4 and result.kept == 2
    assert _reason(result, 3).startswith("more fields than the 2 columns")
    assert _reason(result, 5).startswith("row is 1,344,009 bytes, over the limit of 1,000,000")
    chat = json.dumps({"messages": [{"role": ["user"], "content": "hi"}, {"role": "assistant", "content": "billing"}]})
    _, listed = _scan(tmp_path, [chat, _row("Where is my parcel?", "shipping")], classify_task)
    assert listed.kept == 1 and _reason(listed, 1).startswith("messages[0].role: got ['user']; allowed:")


def test_a_header_naming_a_column_twice_or_holding_another_separator_is_named_and_a_repeated_header_is_no_row(
        tmp_path, classify_task):
    """A column named twice would leave a row the last of them, silently: the file is refused,
    naming the columns (CSV and Parquet alike); a .csv separated by semicolons (Excel in many
    locales) is read so, and one of one column holding tabs is named; the header repeated mid-file (files
    joined with cat) is quarantined, not learnt as an example; spaces around a name are no part of it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = lambda name: DataSpec(train=name, columns={"input": "text", "target": "label"})  # noqa: E731
    (tmp_path / "twice.csv").write_text("text,label,label\nI was charged twice,billing,zzz\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"twice.csv:1: the header names 'label' more than once \(columns 2, 3\)"):
        scan(tmp_path / "twice.csv", classify_task, spec("twice.csv"))
    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["billing"]), pa.array(["x"])],
                                        names=["text", "label", "label"]), tmp_path / "twice.parquet")
    with pytest.raises(DataError, match="the columns 'label' are named more than once"):
        scan(tmp_path / "twice.parquet", classify_task, spec("twice.parquet"))
    # Excel in much of Europe saves "CSV" (even "CSV UTF-8") with semicolons: read as meant, a
    # cell holding a semicolon or a comma (a decimal comma) too
    (tmp_path / "semi.csv").write_text('\ufefftext;label\r\nI was charged twice;billing\r\n'
                                       '"Charged 12,50 €; twice";billing\r\n', encoding="utf-8")
    result = scan(tmp_path / "semi.csv", classify_task, spec("semi.csv"), keep=True)
    assert result.kept == 2 and [r.input for r in result.examples] == ["I was charged twice", "Charged 12,50 €; twice"]
    # a column name holding a comma: as many columns by either, the first row says which
    (tmp_path / "semi2.csv").write_text("text;Antwort, kurz;label\nI was charged twice;So, genau;billing\n",
                                        encoding="utf-8")
    spec2 = DataSpec(train="semi2.csv", columns={"input": "text", "target": "label"})
    assert [r.input for r in scan(tmp_path / "semi2.csv", classify_task, spec2, keep=True).examples] == \
        ["I was charged twice"]
    (tmp_path / "semi3.csv").write_text("text;Antwort, kurz\nI was charged twice;billing\n", encoding="utf-8")
    spec3 = DataSpec(train="semi3.csv", columns={"input": "text", "target": "Antwort, kurz"})
    assert [r.target for r in scan(tmp_path / "semi3.csv", classify_task, spec3, keep=True).examples] == ["billing"]
    (tmp_path / "comma.csv").write_text("text,label\nCharged twice; please refund,billing\n", encoding="utf-8")
    assert scan(tmp_path / "comma.csv", classify_task, spec("comma.csv")).kept == 1  # a semicolon in a cell
    (tmp_path / "tabs.csv").write_text("text\tlabel\nI was charged twice\tbilling\n", encoding="utf-8")
    with pytest.raises(DataError, match="the header is one column, .*: are the columns separated by tabs") as info:
        scan(tmp_path / "tabs.csv", classify_task, spec("tabs.csv"))
    assert "name a tab-separated file .tsv" in info.value.hint
    path = tmp_path / "joined.csv"  # spaces around the header's names are a spreadsheet's, not the names'
    path.write_text(" text , label\nI was charged twice,billing\ntext,label\nParcel late,shipping\n", encoding="utf-8")
    result = scan(path, classify_task, spec("joined.csv"))
    assert result.counts_add_up() and result.kept == 2 and _reason(result, 3).startswith("the header row again")


def test_parquet_decimals_dates_and_binary_and_a_file_that_is_no_parquet(tmp_path):
    """A Parquet decimal is read as a number and a date as its ISO text (an extract record as
    JSON holds them), a binary cell quarantines its row, and a file that is not Parquet is a
    clear error, not pyarrow's traceback; NaN, which Python's JSON reads and JSON has not, is no
    extract answer."""
    import datetime
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = {"type": "object", "properties": {"total": {"type": "number"}, "day": {"type": "string"}}}
    task = TaskSpec(kind="extract", success="s", system_prompt="p", schema=schema)
    rows = [{"text": f"invoice {i}", "fields": {"total": Decimal("1.50") + i, "day": datetime.date(2026, 1, 1 + i)},
             "scan": None} for i in range(3)]
    rows[2]["scan"] = b"\x89PNG"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "r.parquet")
    spec = DataSpec(train="r.parquet", columns={"input": "text", "target": "fields"})
    result = scan(tmp_path / "r.parquet", task, spec, keep=True)
    assert result.counts_add_up() and result.kept == 2
    assert json.loads(result.examples[1].target) == {"total": 2.5, "day": "2026-01-02"}
    assert [(q.source, q.reason) for q in result.quarantined] == [
        (f"{tmp_path / 'r.parquet'}:row 3", "column 'scan': binary data (4 bytes), not text")]
    (tmp_path / "csv.parquet").write_text("text,label\nhello,billing\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"csv.parquet: not a readable Parquet file"):
        scan(tmp_path / "csv.parquet", task, DataSpec(train="csv.parquet"))
    nan = json.dumps({"messages": [{"role": "user", "content": "invoice 9"},
                                   {"role": "assistant", "content": '{"total": NaN}'}]})
    _, read = _scan(tmp_path, [nan], task)
    assert read.kept == 0 and "NaN is no JSON number" in _reason(read, 1)


def test_the_refusal_written_in_another_case_or_punctuation_is_read_as_task_refusal(tmp_path):
    """Agents typed the refusal three ways: the model would learn three refusals, and a client
    matching task.refusal would miss two. Each is read as task.refusal, counted and warned about."""
    from taskfit.config import ProjectConfig
    from taskfit.data.prepare import build_card

    task = TaskSpec(kind="qa", success="s", system_prompt="p")
    refusal = task.refusal
    rows = [json.dumps({"messages": [{"role": "user", "content": f"question {i} about the plan"},
                                     {"role": "assistant", "content": answer}], "context": f"passage {i}"})
            for i, answer in enumerate([refusal, refusal.upper(), refusal.capitalize() + ".", "the annual plan",
                                        f"{refusal}, but ask support"])]
    _, result = _scan(tmp_path, rows, task, spec=DataSpec(train="x.jsonl", dedup={"near": False}))
    assert [ex.target for ex in result.examples] == [refusal] * 3 + ["the annual plan", f"{refusal}, but ask support"]
    card = build_card(ProjectConfig(task=task, data=DataSpec(train="x.jsonl")), [result])
    assert sum(r["rows"] for r in card.respelled) == 2 and all(r["label"] == refusal for r in card.respelled)
    assert any(w.startswith("2 rows write the refusal in another case or punctuation") for w in card.warnings)


def test_the_card_names_the_rows_removed_as_exact_duplicates(tmp_path):
    """Near-duplicates were listed with their lines, exact duplicates only counted: a user could
    not find which rows went."""
    from taskfit.config import ProjectConfig
    from taskfit.data.card import render_markdown
    from taskfit.data.prepare import build_card

    task = TaskSpec(kind="classify", success="s", system_prompt="p", labels=["billing", "shipping"])
    lines = [_row("I was charged twice for my plan", "billing"), _row("Where is the parcel I ordered", "shipping"),
             _row("i was charged  TWICE for my plan", "billing"), _row("The courier lost my box", "shipping"),
             _row("Where is the parcel I ordered", "shipping")]
    lines += [_row("My invoice is addressed to the old office", "billing", id="T-9"),
              _row("My invoice is addressed to the old office", "billing", id="T-9"),
              _row("A different ticket under that id", "billing", id="T-9")]
    path, result = _scan(tmp_path, lines, task, spec=DataSpec(train="x.jsonl", dedup={"near": False}))
    card = build_card(ProjectConfig(task=task, data=DataSpec(train="x.jsonl")), [result])
    # a row repeated whole, id and all, is a duplicate; another row under a used id is an id clash
    assert card.counts["exact_duplicates"] == 3 and card.exact_duplicates == [f"{path}:3", f"{path}:5", f"{path}:7"]
    assert _reason(result, 8).startswith("field 'id': 'T-9' is used by an earlier row")
    text = render_markdown(card)
    assert "## Exact duplicates (first 3)" in text and f"- `{path}:3`" in text and f"- `{path}:5`" in text


def test_a_label_that_is_a_slip_for_one_is_quarantined_with_that_label_suggested(tmp_path):
    task = TaskSpec(kind="classify", success="s", system_prompt="p", labels=["billing", "shipping", "refund"])
    lines = [_row("I was charged twice for my plan", "biling"), _row("Where is the parcel I ordered", "weather")]
    _, result = _scan(tmp_path, lines, task, spec=DataSpec(train="x.jsonl", dedup={"near": False}))
    assert _reason(result, 1).endswith("did you mean 'billing'?") and "did you mean" not in _reason(result, 2)


def test_a_row_of_another_shape_in_a_chat_file_is_named_by_its_keys(tmp_path):
    task = TaskSpec(kind="classify", success="s", system_prompt="p", labels=["billing", "shipping"])
    lines = [_row("Where is the parcel I ordered", "shipping"), json.dumps({"text": "charged twice", "label": "billing"})]
    _, result = _scan(tmp_path, lines, task, spec=DataSpec(train="x.jsonl", format="messages", dedup={"near": False}))
    assert "this row has the keys text, label, where the file's rows are chat rows" in _reason(result, 2)


def test_the_card_lists_extract_values_their_text_does_not_write_and_warns_of_rare_ones(tmp_path):
    """An extract answer whose value is not in its text teaches the model to invent: per field,
    the card counts such rows with the first of them, and warns of a field the text nearly always
    writes but for a few rows (a walkthrough's invented customer name went unmentioned)."""
    from taskfit.config import ProjectConfig
    from taskfit.data.card import render_markdown
    from taskfit.data.prepare import build_card

    schema = {"type": "object", "properties": {"name": {"type": "string"}, "city": {"type": "string"}}}
    task = TaskSpec(kind="extract", success="s", system_prompt="Extract {fields}.", schema=schema)
    people = ["Anna Berg", "Karl Olsen", "Mia Lund", "Ole Dahl", "Eva Holm", "Jon Vik", "Siri Aas", "Per Moe",
              "Liv Ek", "Tor Bakke", "Ida Sand", "Nils Strand", "Ane Foss", "Lars Hauge", "Kari Li", "Emil Ness",
              "Nora Ruud", "Sven Lie", "Tina Berg", "Odd Wang", "Rut Haug"]
    cities = ["Oslo", "Bergen", "Trondheim", "Tromsø", "Bodø", "Molde", "Ålesund"]
    lines = []
    for i, person in enumerate(people):
        city = cities[i % len(cities)]
        text = f"Order number {i} from {person if i != 7 else 'our regular customer'}, please ship it to {city} soon."
        lines.append(json.dumps({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content":
                                 json.dumps({"name": person, "city": "Norway" if i % 2 else city})}]}))
    path, result = _scan(tmp_path, lines, task, spec=DataSpec(train="x.jsonl"))
    card = build_card(ProjectConfig(task=task, data=DataSpec(train="x.jsonl")), [result])
    assert card.unwritten["name"] == {"rows": 1, "of": 21, "first": [f"{path}:8"]}
    assert card.unwritten["city"]["rows"] == 10  # half the rows name the country, never written: no warning
    (warning,) = [w for w in card.warnings if "does not write" in w]
    assert f"name 1 of 21 (first {path}:8)" in warning and "city" not in warning
    assert "## Answer values the text does not write" in render_markdown(card)


def test_the_progress_of_a_check_ends_at_the_lines_counted_before_it(tmp_path, classify_task):
    """A check's progress bar is given its end before any row is read (lines_in: the lines of a
    JSONL, CSV or TSV file, the rows of a Parquet file) and scan's progress reaches it exactly: a
    CSV row whose cell spans three lines moves it three, blank lines and a last line without its
    newline count. A JSON document, a workbook or a UTF-16 file has no end known before reading."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = tmp_path / "t.csv"
    table.write_text('text,label\nI was charged twice,billing\n"Line one\nline two\nline three",shipping\n\n'
                     "Where is my parcel,shipping")
    assert lines_in(table) == 7
    spec = DataSpec(train="t.csv", columns={"input": "text", "target": "label"})
    seen: list[int] = []
    result = scan(table, classify_task, spec, on_row=seen.append)
    assert result.read == 3 and sum(seen) == 7
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join([_row("I was charged twice", "billing"), "", _row("Where is it", "shipping")]) + "\n\n")
    seen = []
    assert lines_in(jsonl) == 4 and scan(jsonl, classify_task, SPEC, on_row=seen.append).read == 2 and sum(seen) == 4
    with jsonl.open("a") as f:  # a file grown since it was counted is counted again
        f.write(_row("Refund me", "billing") + "\n")
    seen = []
    assert lines_in(jsonl) == 5 and scan(jsonl, classify_task, SPEC, on_row=seen.append).read == 3 and sum(seen) == 5
    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["a b c", "d e f"], "label": ["billing", "shipping"]}), parquet)
    assert lines_in(parquet) == 2
    (tmp_path / "doc.json").write_text('[{"text": "a", "label": "billing"},\n {"text": "b", "label": "shipping"}]')
    wide = tmp_path / "wide.tsv"
    wide.write_bytes("text\tlabel\nI was charged\tbilling\n".encode("utf-16"))
    assert lines_in(tmp_path / "doc.json") is None and lines_in(wide) is None
    assert lines_in(tmp_path / "missing.jsonl") is None  # its error comes when it is read


def test_a_row_repeated_in_another_case_or_spacing_is_one_exact_duplicate():
    """Two rows are exact duplicates when their texts are the same once whitespace runs are one
    space and case is folded (normalise): a row's digest is that of its normalised texts joined,
    for texts in any script, with the separators str.split takes for whitespace."""
    import random

    from taskfit.data.lookalike import digest
    from taskfit.data.scan import _row_digests
    from taskfit.tasks.base import normalise

    rng = random.Random(3)
    alphabet = "aBcΣσςİıßẞﬁΩ \t\n\x1c\x1f é€Ǆǅ"
    rows = [[''.join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(rng.randint(1, 4))]
            for _ in range(3000)]
    assert _row_digests(rows) == [digest("\x1f".join(normalise(t) for t in texts)) for texts in rows]
    assert len(set(_row_digests([["Refund  my ORDER"], ["refund my order\n"], ["refund my orders"]]))) == 2


def test_an_object_shaped_json_document_is_parsed_whole_once_to_tell_its_kind(tmp_path, classify_task, monkeypatch):
    """A .json file that is one object holding the rows (``{"rows": [...]}``) can only be told
    from JSON Lines by parsing it whole: a check does that once to tell its kind (naming its rows
    and counting its lines ask it again), then once to find the array each time it reads the rows,
    not for each question. A file rewritten since is asked again: the same path as JSON Lines is
    then read as lines."""
    from taskfit.data import read as read_module
    from taskfit.data.read import read_rows, row_namer

    words = ["refund", "parcel", "invoice", "login"]
    rows = [json.loads(_row(f"ticket {i}: " + " ".join(words[j % 4] for j in range(i, i + 9)), "billing"))
            for i in range(40)]
    held = tmp_path / "held.json"
    held.write_text(json.dumps({"exported": "2025-03-01", "rows": rows}, indent=1), encoding="utf-8")
    size = held.stat().st_size
    whole, loads = [], json.loads

    def counted(text, *args, **kwargs):
        if len(text) >= size - 4:
            whole.append(len(text))
        return loads(text, *args, **kwargs)

    monkeypatch.setattr(read_module.json, "loads", counted)
    task = classify_task.model_copy(update={"labels": ["billing"]})
    result = scan(held, task, SPEC)
    assert result.read == 40 and result.kept >= 4 and not result.quarantined
    assert result.near_duplicates  # so the rows are read twice: the scan, and its look-alikes' previews
    assert len(whole) == 3  # its kind once (lines_in, row_namer and read_rows ask), its array once a read
    assert row_namer(held)(3) == f"{held}:item 3" and lines_in(held) is None and len(whole) == 3
    held.write_text("".join(json.dumps(r) + "\n" for r in rows[:7]), encoding="utf-8")  # now JSON Lines
    assert [r.source for r in read_rows(held)][-1] == f"{held}:7" and lines_in(held) == 7
