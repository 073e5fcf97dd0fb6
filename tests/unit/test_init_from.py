"""`taskfit init DIR --from FILE` and `taskfit data check FILE`: a project proposed from the data.

Every proposal is written, read back with load_config, and checked with `taskfit data check`,
on the shared public datasets (skipped in a fresh clone) and on small files written here.
"""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.config import load_config
from taskfit.data import pii
from taskfit.data.formats import convert
from taskfit.project import inferred_config

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent (fresh clone)")


def _invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    output = result.output + (result.stderr if hasattr(result, "stderr") else "")
    assert "Traceback" not in output
    return result, output


def _init(tmp_path: Path, file: Path, *flags: str):
    """init --from, then the written file must load and pass `data check` with no row quarantined."""
    project = tmp_path / "project"
    result, output = _invoke("init", project, "--from", file, *flags)
    assert result.exit_code == 0, output
    config = load_config(project / "taskfit.yaml")
    assert (project / config.data.train).resolve() == file.resolve()
    checked, report = _invoke("data", "check", project, "--no-tokens")
    assert checked.exit_code == 0, report
    read, kept, quarantined = map(int, re.search(r"(\d+) rows read = (\d+) kept \+ (\d+) quarantined", report).groups())
    assert quarantined == 0 and kept > 0.9 * read
    return config, output


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@shared
def test_clinc150_is_classify_with_its_151_labels(tmp_path):
    file = SHARED / "clinc150" / "train.jsonl"
    config, output = _init(tmp_path, file)
    counts = {}
    for row in _rows(file):
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    assert config.task.kind == "classify" and config.train.method == "lora"
    assert config.data.columns.input == "text" and config.data.columns.target == "label"
    assert sorted(config.task.labels) == sorted(counts) and len(counts) == 151
    assert "151 distinct short values → classify" in output and f"oos {counts['oos']}" in output
    # 151 labels would take every row ~600 tokens: the prompt does not list them, and says why.
    written = (tmp_path / "project" / "taskfit.yaml").read_text()
    assert "credit_limit_change" not in config.task.system_text and "# - 151 labels: the system prompt" in written
    assert (tmp_path / "project" / "taskfit.yaml").read_text().count("credit_limit_change") == 1
    # About 11 training rows an intent: the fine-tune writes the label (measured: 83.8% against a head's 48.0%).
    assert not config.train.classify_head and "# - about 11 training rows a label" in written


@shared
def test_snips_slots_is_extract_with_a_schema_from_fields(tmp_path):
    file = SHARED / "snips_slots" / "train.jsonl"
    config, output = _init(tmp_path, file)
    first_seen: dict[str, None] = {}
    for row in _rows(file):
        first_seen.update(dict.fromkeys(row["fields"]))
    schema = config.task.schema_
    assert config.task.kind == "extract" and config.data.columns.target == "fields"
    assert config.data.columns.input == "text"
    assert list(schema["properties"]) == list(first_seen) and schema["additionalProperties"] is False
    assert "required" not in schema  # no slot is in every row
    assert "intent" in output and "--target intent" in output  # the label column is named, not used


@shared
def test_squad2_is_qa_and_a_null_answer_is_the_refusal(tmp_path):
    file = SHARED / "squad2_dev" / "train.jsonl"
    config, output = _init(tmp_path, file)
    cols = config.data.columns
    assert config.task.kind == "qa"
    assert (cols.input, cols.context, cols.target) == ("question", "context", "answer")
    rows = _rows(file)
    unanswerable = next(r for r in rows if r["answer"] is None)
    ex = convert(unanswerable, config.task, config.data.format, cols, "row", "1")
    assert ex.target == config.task.refusal and ex.context == unanswerable["context"]
    assert f"{sum(r['answer'] is None for r in rows)} of {len(rows)} answers" in output
    assert config.task.refusal in config.task.system_text


@shared
def test_bitext_support_is_generate_from_instruction_to_response(tmp_path):
    file = SHARED / "bitext_support" / "train.jsonl"
    config, _ = _init(tmp_path, file)
    assert config.task.kind == "generate" and config.train.method == "lora"
    assert (config.data.columns.input, config.data.columns.target) == ("instruction", "response")
    words = [len(r["response"].split()) for r in _rows(file)]
    assert (config.task.reply.min_words, config.task.reply.max_words) == (min(words), max(words))
    assert config.train.lr == 1e-3  # measured on bitext_support, not the method's 2e-4


@shared
def test_hh_rlhf_is_preference_pairs_for_dpo(tmp_path):
    config, output = _init(tmp_path, SHARED / "hh_rlhf_harmless" / "train.jsonl")
    assert config.task.kind == "generate" and config.train.method == "dpo"
    assert config.data.format == "preference" and config.data.columns is None
    assert "dpo" in output
    # the learning rate measured to move a 135M model's preferences in one epoch, with its reason
    assert config.train.learning_rate == 1e-3 and "learning rate 0.001" in (tmp_path / "project" / "taskfit.yaml").read_text()
    assert config.train.epochs == 1  # as measured for DPO; the generate kind's three epochs are for replies


@shared
def test_data_check_on_a_bare_file_checks_what_init_would_write(tmp_path):
    file = SHARED / "clinc150" / "train.jsonl"
    written, _ = _init(tmp_path, file)
    inferred, _ = inferred_config(file)
    # the same task (its name aside: a bare file has no project folder to be named after)
    assert inferred.task.model_copy(update={"name": written.task.name}) == written.task
    assert inferred.data.columns == written.data.columns
    before = set(file.parent.iterdir())
    result, output = _invoke("data", "check", file, "--no-tokens")
    assert result.exit_code == 0, output
    assert "inferred the mapping" in output and "2000 rows read" in output
    assert set(file.parent.iterdir()) == before  # no project, no card written beside the data


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


QUEUES = ["billing", "shipping", "refund"]


def _sentence(rng: random.Random) -> str:
    """Words drawn at random, so that no two rows are near-duplicates."""
    return " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))
                    for _ in range(8))


def test_a_csv_with_a_label_column_is_classify(tmp_path):
    rng = random.Random(0)
    rows = [[f"T{i}", _sentence(rng), QUEUES[i % 3], "web" if i % 2 else "mail"] for i in range(150)]
    file = _write_csv(tmp_path / "tickets.csv", ["ticket_id", "text", "label", "channel"], rows)
    config, output = _init(tmp_path, file)
    assert config.task.kind == "classify" and sorted(config.task.labels) == sorted(QUEUES)
    assert (config.data.columns.input, config.data.columns.target) == ("text", "label")
    assert "billing 50" in output and "channel" in output
    assert config.task.name == "tickets" and config.data.train == "../tickets.csv"
    # a file named for nothing (data/train.jsonl): the served model takes the project's name, not "data"
    (tmp_path / "data").mkdir()
    generic = _write_csv(tmp_path / "data" / "train.csv", ["ticket_id", "text", "label", "channel"], rows)
    assert _init(tmp_path, generic, "--force")[0].task.name == "project"
    result, bare = _invoke("data", "check", file, "--no-tokens")
    assert result.exit_code == 0 and "inferred the mapping" in bare and "150 rows read = 150 kept" in bare
    # About 42 training rows a label: the fine-tune measured best there, a head, two epochs at 1e-3.
    train = config.train
    assert (train.classify_head, train.head_pooling, train.epochs, train.lr) == (True, "mean", 2, 1e-3)
    # Half the rows, about 21 a label (where a newcomer's head scored 27.8% and the written label
    # 72.2%): the fine-tune that writes the label.
    (tmp_path / "project").rename(tmp_path / "first")
    config, output = _init(tmp_path, _write_csv(tmp_path / "few.csv", ["ticket_id", "text", "label", "channel"],
                                                rows[:75]))
    written = (tmp_path / "project" / "taskfit.yaml").read_text()
    assert not config.train.classify_head and "# - about 21 training rows a label" in written


def test_a_json_file_holding_an_array_of_rows_is_read_as_its_rows(tmp_path):
    """`Export as JSON` writes one document, an array of objects (pretty-printed, or on one line),
    or an object holding one: each object is a row, named by its place and the line it starts
    on, and the project proposed is the one its JSONL would give. A JSON error stops the command
    where it is; a JSONL file named .json with a broken first line stays JSONL."""
    rng = random.Random(5)
    rows = [{"id": f"T{i}", "text": _sentence(rng), "label": QUEUES[i % 3]} for i in range(90)]
    rows[10]["text"] = rows[4]["text"]  # a copy of an earlier row under another label: a conflict
    rows[10]["label"] = "refund" if rows[4]["label"] != "refund" else "billing"
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    array = tmp_path / "rows.json"
    array.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    expected, _ = _init(tmp_path, jsonl)
    (tmp_path / "project").rename(tmp_path / "from_jsonl")
    config, output = _init(tmp_path, array)
    assert config.task.labels == expected.task.labels and config.data.columns == expected.data.columns
    result, report = _invoke("data", "check", tmp_path / "project", "--no-tokens")
    card = (tmp_path / "project" / "data_card.md").read_text()
    assert f"`{array}:item 5`" in card and f"`{array}:item 11 (line 52)`" in card  # five lines an item
    assert "90 rows read" in report
    held = tmp_path / "held.json"
    held.write_text(json.dumps({"exported": "2025-03-01", "rows": rows[:3] + ["a note", [1, 2]]}, indent=1),
                    encoding="utf-8")
    result, report = _invoke("data", "check", held, "--no-tokens")
    flat = " ".join(report.split())
    assert "5 rows read = 3 kept + 2 quarantined" in flat
    assert f"quarantined {held}:item 4 (line 19): a JSON string, not an object" in flat
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"train": rows[:3], "test": rows[3:6]}, indent=1), encoding="utf-8")
    result, report = _invoke("init", tmp_path / "two", "--from", two)
    assert result.exit_code != 0 and "holding 2 arrays of rows ('train', 'test')" in " ".join(report.split())
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(rows[:5], indent=2).replace('"label": ', '"label" ', 1), encoding="utf-8")
    result, report = _invoke("data", "check", broken, "--no-tokens")
    assert result.exit_code != 0 and f"{broken}:5:" in report and "invalid JSON" in report
    lines = tmp_path / "lines.json"
    lines.write_text('{"text": "cut short\n' + "".join(json.dumps(r) + "\n" for r in rows[20:80]), encoding="utf-8")
    result, report = _invoke("data", "check", lines, "--no-tokens")
    assert result.exit_code == 0 and "61 rows read" in report and f"quarantined {lines}:1: invalid JSON" in report


def _write_xlsx(path: Path, sheets: dict[str, list[list]]) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def test_an_excel_workbook_is_proposed_and_checked_as_its_csv_export_would_be(tmp_path):
    """A ticket export kept in Excel: `init --from tickets.xlsx` proposes what the same sheet saved
    as CSV proposes, and `data check` reads the same rows; a number, a date and TRUE read as the
    text Excel shows; a stray cell and a header pasted again are quarantined by their sheet row."""
    import datetime

    rng = random.Random(4)
    rows = [[1000 + i, _sentence(rng), QUEUES[i % 3], datetime.datetime(2025, 3, 1 + i % 28), i % 2 == 0]
            for i in range(120)]
    header = ["ticket", "text", "label", "opened", "vip"]
    book = _write_xlsx(tmp_path / "tickets.xlsx", {"Tickets": [header] + rows})
    as_csv = _write_csv(tmp_path / "tickets.csv", header,
                        [[str(t), text, label, opened.date().isoformat(), "TRUE" if vip else "FALSE"]
                         for t, text, label, opened, vip in rows])
    config, output = _init(tmp_path, book)
    (tmp_path / "project").rename(tmp_path / "from_xlsx")
    expected, _ = _init(tmp_path, as_csv)
    assert config.task.kind == "classify" and config.task.labels == expected.task.labels
    assert config.data.columns == expected.data.columns and config.data.train == "../tickets.xlsx"
    assert "billing 40" in output
    from taskfit.data.read import read_rows

    first = next(read_rows(book))
    assert (first.source, first.line) == (f"{book}:2", 2)
    assert first.obj == {"ticket": "1000", "text": rows[0][1], "label": "billing", "opened": "2025-03-01", "vip": "TRUE"}
    # rows a person adds by hand below: a cell right of the header's columns, the header pasted again
    messy = _write_xlsx(tmp_path / "messy.xlsx", {"Tickets": [header] + rows + [
        [None] * 5, ["   "], header, [2000, _sentence(rng), "refund", None, False, None, "see me"]]})
    result, report = _invoke("data", "check", messy, "--no-tokens")
    assert result.exit_code == 0 and "122 rows read = 120 kept + 2 quarantined" in report, report
    assert f"quarantined {messy}:124: the header row again" in report
    assert f"quarantined {messy}:125: a cell beyond the 5 named columns (column G)" in " ".join(report.split())


def test_a_reports_title_above_the_header_is_named_with_the_line_that_holds_the_column_names(tmp_path):
    """A helpdesk's report starts with its title, a blank line, then the column names: read as the
    header, the title gave "the header names '' more than once" (CSV) or quarantined every row
    (a workbook). The error now names both lines and what to delete."""
    rng = random.Random(6)
    rows = [[_sentence(rng), QUEUES[i % 3], "ann"] for i in range(60)]
    report = tmp_path / "report.csv"
    report.write_text("Helpdesk export 2025-03-01,,\n,,\ntext,label,agent\n" + "".join(",".join(r) + "\n" for r in rows),
                      encoding="utf-8")
    book = _write_xlsx(tmp_path / "report.xlsx", {"Report": [["Helpdesk export 2025-03-01"], [], ["text", "label", "agent"]]
                                                  + rows})
    for file, what in ((report, "line"), (book, "row")):
        result, output = _invoke("data", "check", file, "--no-tokens")
        flat = " ".join(output.split())
        assert result.exit_code != 0 and f"{file}:1: {what} 1 names one column, 'Helpdesk export 2025-03-01', " \
            f"where {what} 3 holds 3 cells ('text', 'label', 'agent')" in flat, flat
        assert f"delete the {what}s above {what} 3" in flat
    # a sheet of one column is read whole: the rows looked at below its header are rows all the same
    from taskfit.data.read import read_rows

    one = _write_xlsx(tmp_path / "one.xlsx", {"Notes": [["text"]] + [[r[0]] for r in rows]})
    assert [r.obj["text"] for r in read_rows(one)] == [r[0] for r in rows]


def test_a_utf16_export_is_read_as_its_text(tmp_path):
    """Excel's "Unicode Text" (a .txt renamed .tsv) and Notepad's "Unicode" save UTF-16 with a
    byte-order mark: the csv module stopped on its first line with a traceback ("new-line character
    seen in unquoted field"). It is read as the same text in UTF-8 would be; a file whose mark says
    UTF-16 and whose bytes are not stops with what to do."""
    rng = random.Random(7)
    rows = [[_sentence(rng), QUEUES[i % 3]] for i in range(60)]
    text = "text\tlabel\r\n" + "".join(f"{a}\t{b}\r\n" for a, b in rows)
    wide = tmp_path / "unicode.tsv"
    wide.write_bytes(text.encode("utf-16"))
    plain = tmp_path / "plain.tsv"
    plain.write_text(text, encoding="utf-8")
    config, _ = _init(tmp_path, wide)
    (tmp_path / "project").rename(tmp_path / "wide")
    expected = _init(tmp_path, plain)[0]
    assert (config.task.kind, config.task.labels, config.data.columns) == \
        (expected.task.kind, expected.task.labels, expected.data.columns)
    result, report = _invoke("data", "check", wide, "--no-tokens")
    assert result.exit_code == 0 and "60 rows read = 60 kept" in report
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"\xff\xfet\x00e\x00x\x00t\x00\n\x00\x00")
    result, report = _invoke("data", "check", broken, "--no-tokens")
    assert result.exit_code != 0 and "starts as UTF-16 (its byte-order mark) but byte 13 is not UTF-16" in report


def test_an_excel_workbook_that_cannot_be_read_whole_stops_with_what_to_do(tmp_path):
    """A second sheet holding cells would be left out unsaid: refused, naming the sheets. A legacy
    .xls, and a file that is no workbook, stop with the advice to save it again."""
    rows = [["text", "label"], ["my parcel is late", "shipping"], ["charged twice", "billing"]]
    two = _write_xlsx(tmp_path / "two.xlsx", {"Tickets": rows, "Legend": [["billing", "money matters"]], "Empty": []})
    result, output = _invoke("init", tmp_path / "p", "--from", two)
    flat = " ".join(output.split())
    assert result.exit_code != 0 and "2 sheets hold cells ('Tickets', 'Legend')" in flat and "'Legend'" in flat
    old = tmp_path / "tickets.xls"
    old.write_bytes(b"\xd0\xcf\x11\xe0 an old binary workbook")
    result, output = _invoke("init", tmp_path / "q", "--from", old)
    assert result.exit_code != 0 and "save it from Excel as an Excel Workbook (.xlsx)" in " ".join(output.split())
    fake = tmp_path / "fake.xlsx"
    fake.write_text("text,label\nhello,billing\n")
    result, output = _invoke("data", "check", fake, "--no-tokens")
    assert result.exit_code != 0 and "not a readable Excel workbook" in " ".join(output.split())
    unnamed = _write_xlsx(tmp_path / "unnamed.xlsx", {"Tickets": [["text", None, "label"], ["a", "b", "billing"]]})
    result, output = _invoke("data", "check", unnamed, "--no-tokens")
    assert result.exit_code != 0 and "leaves column B without a name" in " ".join(output.split())


def test_a_quarantined_row_of_an_init_project_is_named_as_the_user_finds_the_file(tmp_path):
    rng = random.Random(1)
    rows = [[_sentence(rng), QUEUES[i % 3]] for i in range(60)] + [[_sentence(rng), ""]]
    file = _write_csv(tmp_path / "tickets.csv", ["text", "label"], rows)
    # a line that is no JSON row is counted by init as data check counts it, and named
    jsonl = tmp_path / "tickets.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows[:60])
                     + '{"text": "cut short\n', encoding="utf-8")
    result, output = _invoke("init", tmp_path / "other", "--from", jsonl)
    assert result.exit_code == 0 and "(60 rows)" in output, output
    assert f"1 line is not a readable row ({jsonl}:61): data check quarantines it" in " ".join(output.split())
    assert f"more line(s) not readable, first {jsonl}:61" in (tmp_path / "other" / "taskfit.yaml").read_text()
    project = tmp_path / "project"
    result, output = _invoke("init", project, "--from", file)
    assert result.exit_code == 0 and "1 row has no label: data check will quarantine it" in output, output
    result, output = _invoke("data", "check", project, "--no-tokens")
    assert result.exit_code == 0 and "61 rows read = 60 kept + 1 quarantined" in output, output
    # data.train is ../tickets.csv, relative to the project; the row is line 62 of tickets.csv
    assert f"quarantined {tmp_path / 'tickets.csv'}:62" in output and "/../" not in output


def test_jsonl_with_json_object_targets_is_extract_with_an_inferred_schema(tmp_path):
    rows = [{"message": "Table for 2 in Oslo", "booking": {"city": "Oslo", "party_size": 2}},
            {"message": "Bergen on Friday please", "booking": {"date": "Friday", "city": "Bergen"}},
            {"message": "Somewhere in Tromsø for 2.5 people", "booking": {"city": "Tromsø", "party_size": 2.5}},
            {"message": "Stavanger, no rush", "booking": {"city": "Stavanger", "date": None}}]
    file = tmp_path / "bookings.jsonl"
    file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    config, output = _init(tmp_path, file)
    assert config.task.kind == "extract"
    assert (config.data.columns.input, config.data.columns.target) == ("message", "booking")
    assert config.task.schema_ == {
        "type": "object",
        "properties": {"city": {"type": "string"}, "party_size": {"type": "number"},
                       "date": {"type": ["string", "null"]}},
        "required": ["city"], "additionalProperties": False}
    assert "required: city" in output
    # the instruction says what the schema requires: city always, the others when the text gives them
    assert "Fields: city, party_size, date. Always write city; leave out the others" in config.task.system_text
    assert config.train.lr == 1e-3 and config.train.epochs == 3 and not config.train.classify_head  # measured


def test_an_extract_schema_keeps_a_numeric_field_numeric_past_a_stray_string_and_prompts_for_every_key(tmp_path):
    """One quantity written "lots" among 59 integers is a slip, not a text field: the schema keeps
    integer and init says that data check quarantines that row (it does, naming the line); every
    key is in every row, so the instruction asks for every key, with null where the text is silent."""
    rows = [{"email": f"Please send {n % 9 + 1} mugs to order {1000 + n}", "order": {
        "item": "mugs", "quantity": "lots" if n == 17 else n % 9 + 1, "gift": None if n % 3 else True,
        **({"notes": "rush"} if n == 30 else {})}} for n in range(60)]
    file = tmp_path / "orders.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result, output = _invoke("init", tmp_path / "project", "--from", file)
    assert result.exit_code == 0, output
    config = load_config(tmp_path / "project" / "taskfit.yaml")
    assert config.task.schema_["properties"]["quantity"] == {"type": "integer"}
    assert config.task.schema_["properties"]["gift"] == {"type": ["boolean", "null"]}
    assert (f'quantity: 1 of 60 values is a string (first "lots", {file}:18) where the rest are integers'
            in " ".join(output.split())), output
    # one answer's extra key is named with its line
    assert f"notes: in 1 of 60 answers (first {file}:31), an optional key" in " ".join(output.split())
    assert "the other 1 key is optional" in " ".join(output.split())
    assert config.task.system_text.startswith("Extract the fields the text mentions as one JSON object. Fields: "
                                              "item, quantity, gift, notes. Always write item, quantity, gift;")
    result, output = _invoke("data", "check", tmp_path / "project", "--no-tokens")
    assert result.exit_code == 0 and "orders.jsonl:18: answer: does not match task.schema at quantity" in output


def test_a_ticket_export_with_an_id_and_a_timestamp_is_classify_on_its_queue(tmp_path):
    """A helpdesk export: the ticket's text, its queue, a ticket number and when it was created.
    The number and the time are metadata, not texts to choose between (init failed on them, and
    offered the timestamp as the reply to learn)."""
    words = ["March", "April", "kettle", "sofa", "lamp", "Leeds", "Oslo", "Monday", "bank", "card"]
    rows = [[f"I was charged twice for the {w} order", "Billing", f"TCK-{10000 + i}", f"2025-03-{i + 1:02d} 09:{i:02d}"]
            for i, w in enumerate(words)] + \
           [[f"The parcel with my {w} delivery never came", "Shipping", f"TCK-{10100 + i}", f"2025-04-{i + 1:02d} 10:{i:02d}"]
            for i, w in enumerate(words)]
    file = _write_csv(tmp_path / "export.csv", ["Ticket Text", "Queue", "Ticket ID", "Created"], rows)
    config, output = _init(tmp_path, file)
    assert config.task.kind == "classify"
    assert (config.data.columns.input, config.data.columns.target) == ("Ticket Text", "Queue")
    assert "Ticket ID (ids), Created (codes, numbers or times)" in output
    result, output = _invoke("init", tmp_path / "q", "--from", file, "--target", "Queue")
    assert result.exit_code == 0 and "input=Ticket Text" in output, output


def test_when_the_reply_is_unclear_only_columns_of_words_are_offered_as_it(tmp_path):
    """A shop's export (created_at, customer_message, staff_reply): init could not tell the reply,
    and its hint offered the column it had just described as times. Columns of codes, numbers or
    times are offered only when no column of words is left."""
    rng = random.Random(5)
    rows = [[f"2025-03-{i % 28 + 1:02d} 09:{i:02d}", _sentence(rng), f"{_sentence(rng)} — The Fernhill team"]
            for i in range(30)]
    file = _write_csv(tmp_path / "export.csv", ["created_at", "customer_message", "staff_reply"], rows)
    result, output = _invoke("init", tmp_path / "p", "--from", file)
    output = " ".join(output.split())
    assert result.exit_code == 3 and "cannot tell which free-text column is the reply to learn: customer_message " \
        "(free text), staff_reply (free text). Columns found: created_at (codes, numbers or times)" in output, output
    assert "hint: pass --target customer_message or --target staff_reply;" in output
    result, output = _invoke("init", tmp_path / "p", "--from", file, "--target", "staff_reply")
    assert result.exit_code == 0 and "input=customer_message" in output, output
    # two columns of codes and no words: both are offered (a reply may be a code)
    codes = _write_csv(tmp_path / "codes.csv", ["sent", "code"], [[f"2025-03-{i + 1:02d}", f"#{10000 + i}"] for i in range(20)])
    result, output = _invoke("init", tmp_path / "q", "--from", codes, "--task", "generate")
    assert result.exit_code == 3 and "--target sent or --target code" in " ".join(output.split()), output


def test_a_hint_naming_columns_with_spaces_quotes_them_so_it_can_be_typed_as_written(tmp_path):
    """A helpdesk export's "Customer message" and "Agent reply": the hint said `pass --target
    Customer message or ...`, which a shell splits into two arguments. The names are quoted as a
    shell reads them, and the quoted command works."""
    import shlex

    rng = random.Random(6)
    rows = [[f"T-{i}", _sentence(rng), f"{_sentence(rng)} Best, the team", ["billing", "access"][i % 2]]
            for i in range(30)]
    file = _write_csv(tmp_path / "export.csv", ["Ticket ID", "Customer message", "Agent reply", "Queue"], rows)
    result, output = _invoke("init", tmp_path / "p", "--from", file, "--target", "Queue")
    output = " ".join(output.split())
    assert result.exit_code == 3, output
    assert "hint: pass --input 'Customer message' or --input 'Agent reply';" in output, output
    typed = shlex.split(output.split("hint: pass ")[1].split(" or ")[0])
    assert typed == ["--input", "Customer message"]
    result, output = _invoke("init", tmp_path / "p", "--from", file, "--target", "Queue", *typed)
    assert result.exit_code == 0 and "input=Customer message" in output, output


def test_a_reply_that_is_a_number_is_still_the_reply_and_a_text_column_with_no_name_still_text(tmp_path):
    """Metadata-like columns are set aside only where words are there to learn from: answers
    that are numbers are the target (with or without --task generate, never swapped with the
    question), and a column with no name that holds sentences is the input, not row numbers."""
    nouns = ["apples", "pears", "plums", "figs", "limes", "kiwis", "dates", "cherries", "grapes", "melons"]
    rows = [[f"Tom has {i} {n} and buys {i + 3} more {n} at the market. How many {n} has he now?", str(2 * i + 3)]
            for i, n in enumerate(nouns)]
    file = _write_csv(tmp_path / "sums.csv", ["question", "answer"], rows)
    for flags in ((), ("--task", "generate")):
        result, output = _invoke("init", tmp_path / "p", "--from", file, "--force", *flags)
        assert result.exit_code == 0, output
        config = load_config(tmp_path / "p" / "taskfit.yaml")
        assert (config.data.columns.input, config.data.columns.target) == ("question", "answer"), flags
    words = ["March", "April", "kettle", "sofa", "lamp", "Leeds", "Oslo", "Monday"]
    texts = _write_csv(tmp_path / "blank.csv", ["", "label"],
                       [[f"I was charged twice for the {w} order", "billing"] for w in words] +
                       [[f"The parcel with my {w} delivery never came", "shipping"] for w in words])
    result, output = _invoke("init", tmp_path / "q", "--from", texts)
    assert result.exit_code == 0, output
    assert load_config(tmp_path / "q" / "taskfit.yaml").data.columns.input == ""


@pytest.mark.parametrize("index", ["", "Unnamed: 0"])
def test_the_row_numbers_pandas_writes_are_left_out_not_taken_for_text(tmp_path, index):
    """DataFrame.to_csv writes the row numbers first, under no name (or read back and written
    again, under "Unnamed: 0"): they are not a text column to choose between."""
    words = ["March", "April", "kettle", "sofa", "lamp", "Leeds", "Oslo", "Monday"]
    tickets = [(f"I was charged twice for the {w} order", "billing") for w in words] + \
              [(f"The parcel with my {w} delivery never came", "shipping") for w in words]
    file = _write_csv(tmp_path / "export.csv", [index, "text", "label"],
                      [[str(i), text, label] for i, (text, label) in enumerate(tickets)])
    config, output = _init(tmp_path, file)
    assert config.task.kind == "classify" and config.data.columns.input == "text"
    assert "the row numbers pandas writes" in " ".join(output.split())


def test_a_csv_qa_file_reads_an_empty_answer_cell_as_the_refusal(tmp_path):
    rows = [[f"The shop at {street} Street opens at {h}am.", f"When does the {street} shop open?", f"{h}am" if h % 2 else ""]
            for h, street in zip(range(5, 12), ["Elm", "Oak", "Birch", "Pine", "Ash", "Yew", "Fir"])]
    file = _write_csv(tmp_path / "faq.csv", ["passage", "question", "answer"], rows)
    config, output = _init(tmp_path, file)
    assert config.task.kind == "qa" and config.data.columns.context == "passage"
    assert "3 of 7 answers are empty or null" in output
    ex = convert(dict(zip(["passage", "question", "answer"], rows[1])), config.task, "auto", config.data.columns, "r", "1")
    assert ex.target == config.task.refusal
    assert config.train.lr == 1e-3  # measured on squad2_dev, not the method's 2e-4


def test_qa_with_short_answers_that_repeat_keeps_the_question_as_input(tmp_path):
    """Answers of yes, no and empty (the refusal) read as a label column: the answer is still the
    target and the question the input (they were swapped: the model would have learnt to write
    the question, and every empty answer was quarantined), and the passage makes the task qa."""
    rows = [[f"The store at {i} Main Street opens at nine on weekdays and ten on Sundays.",
             f"Is store {i} open on Sunday morning?", ["yes", "no", ""][i % 3]] for i in range(30)]
    file = _write_csv(tmp_path / "stores.csv", ["context", "question", "answer"], rows)
    config, output = _init(tmp_path, file)
    columns = config.data.columns
    assert config.task.kind == "qa" and (columns.input, columns.target, columns.context) == ("question", "answer",
                                                                                          "context")
    assert "10 of 30 answers are empty or null" in output


def test_one_record_cut_short_leaves_an_extract_file_extract_and_its_row_is_quarantined(tmp_path):
    """One fields cell missing its closing brace made the column "mixed JSON objects and text" and
    init refused the whole file, speaking of labels; it proposes extract, names where the cell is,
    and data check quarantines that row alone."""
    rows = [[f"m{i:03d}", f"Hi, order ORD-{1000 + i}: I ordered {i % 5 + 1} mugs, where are they?",
             json.dumps({"order_id": f"ORD-{1000 + i}", "quantity": i % 5 + 1})] for i in range(30)]
    rows[7][2] = rows[7][2][:-1]
    file = _write_csv(tmp_path / "orders.csv", ["id", "message", "fields"], rows)
    result, output = _invoke("init", tmp_path / "p", "--from", file)
    assert result.exit_code == 0, output
    config = load_config(tmp_path / "p" / "taskfit.yaml")
    assert config.task.kind == "extract" and config.data.columns.target == "fields"
    assert f"1 of its cells opens like a JSON object but cannot be read as one (the first at {file}:9)" \
        in output.replace("\n", " ")
    checked, report = _invoke("data", "check", tmp_path / "p", "--no-tokens")
    assert checked.exit_code == 0 and "30 rows read = 29 kept + 1 quarantined" in report
    assert f"quarantined {file}:9: answer: not valid JSON" in report.replace("\n", " ")


def test_an_ambiguous_file_is_refused_naming_the_columns_and_the_flags(tmp_path):
    rows = [[f"Review number {i} of the blue kettle", ["price", "design", "delivery"][i % 3], ["good", "bad"][i % 2]]
            for i in range(12)]
    file = _write_csv(tmp_path / "reviews.csv", ["text", "topic", "sentiment"], rows)
    result, output = _invoke("init", tmp_path / "p", "--from", file)
    assert result.exit_code == 3
    assert "topic (3 distinct short values)" in output and "sentiment (2 distinct short values)" in output
    assert "--target topic or --target sentiment" in output
    assert not (tmp_path / "p" / "taskfit.yaml").exists()
    bare, bare_output = _invoke("data", "check", file, "--no-tokens")
    assert bare.exit_code == 3 and "--target topic" in bare_output
    config, output = _init(tmp_path, file, "--target", "sentiment")
    assert config.task.kind == "classify" and sorted(config.task.labels) == ["bad", "good"]
    assert "topic" in output  # left as metadata, and said so


def test_chat_rows_keep_their_format_and_the_answers_decide_the_kind(tmp_path):
    from taskfit.data.sample import QUEUES as SAMPLE_QUEUES
    from taskfit.data.sample import write_tickets

    file = tmp_path / "support" / "tickets.jsonl"
    write_tickets(file, n=200, seed=0)
    config, output = _init(tmp_path, file)
    assert config.task.kind == "classify" and config.data.format == "messages" and config.data.columns is None
    assert sorted(config.task.labels) == sorted(SAMPLE_QUEUES) and "distinct short values → classify" in output
    result, output = _invoke("init", tmp_path / "qa", "--from", file, "--task", "qa")
    assert result.exit_code == 3 and "needs a context in every row" in output


def test_a_flag_naming_a_missing_column_lists_the_columns(tmp_path):
    file = _write_csv(tmp_path / "t.csv", ["text", "label"], [["a b c", "x"], ["d e f", "x"], ["g h", "y"]])
    result, output = _invoke("init", tmp_path / "p", "--from", file, "--target", "labels")
    assert result.exit_code == 2 and "--target labels" in output and "text (free text)" in output


def test_a_file_with_no_row_to_read_says_what_it_holds_rather_than_where_to_look(tmp_path):
    """A header-only CSV and a JSON array saved as JSONL: init and the bare file's check say what
    is wrong (the hint sent the user from one command to the other, which said the same). (The
    same array saved as .json is a JSON document: its object is the row.)"""
    header = tmp_path / "h.csv"
    header.write_text("text,label\n", encoding="utf-8")
    array = tmp_path / "a.jsonl"
    array.write_text(json.dumps([{"text": "I was charged twice", "label": "billing"}]) + "\n", encoding="utf-8")
    for command in (("init", tmp_path / "p", "--from"), ("data", "check")):
        result, output = _invoke(*command, header)
        assert result.exit_code == 3 and "no rows to propose a task from (the file is empty, or holds a header only)" \
            in output and "see why" not in output
        result, output = _invoke(*command, array)
        assert result.exit_code == 3 and f"its one row cannot be read; the first, {array}:1: a JSON array, not an " \
            "object: JSONL holds one JSON object per line" in output.replace("\n", " ")


def test_a_windows_1252_export_is_refused_rather_than_proposed_from_its_few_readable_rows(tmp_path):
    """Excel's default CSV on Windows is Windows-1252: every row with an accent or a euro sign is
    unreadable as UTF-8, and a task proposed from the rest (a footer and two rows) would be wrong."""
    path = tmp_path / "claims.csv"
    rows = ["Beschreibung,Schadenart"] + [f"Wasserschaden in der K\u00fcche {i} \u20ac,Hausrat" for i in range(20)]
    rows += ["Parked car scratched,Kfz", "Summe,"]
    path.write_bytes("\r\n".join(rows).encode("cp1252") + b"\r\n")
    result, output = _invoke("init", tmp_path / "p", "--from", path)
    said = " ".join(output.split())
    assert result.exit_code == 3 and not (tmp_path / "p" / "taskfit.yaml").exists()
    assert f"20 of its 22 rows cannot be read; the first, {path}:2: not UTF-8" in said, said
    assert "CSV UTF-8" in said


def test_a_greeting_and_sign_off_every_reply_shares_become_house_rules(tmp_path):
    rng = random.Random(3)
    rows = [[f"message {i}: {_sentence(rng)}", f"Hi there, {_sentence(rng)}. — The Support Team"] for i in range(30)]
    file = _write_csv(tmp_path / "replies.csv", ["message", "reply"], rows)
    config, output = _init(tmp_path, file)
    assert config.task.kind == "generate"
    assert config.task.reply.must_include == ["Hi there,", "— The Support Team"]
    written = (tmp_path / "project" / "taskfit.yaml").read_text()
    assert "every one writes 'Hi there,', '— The Support Team'" in written
    # one reply without the sign-off, and it is no rule of the house
    rows[7][1] = rows[7][1].replace(" — The Support Team", "")
    (tmp_path / "project").rename(tmp_path / "first")
    config, _ = _init(tmp_path, _write_csv(tmp_path / "other.csv", ["message", "reply"], rows))
    assert config.task.reply.must_include == ["Hi there,"]


def test_the_sign_off_every_chosen_reply_shares_is_a_house_rule_of_preference_pairs(tmp_path):
    """A walkthrough's preference file, every chosen reply signed "— The Fernhill team", was
    proposed with must_include: [] where the same replies in a table proposed the sign-off."""
    rng = random.Random(4)
    pairs = [{"prompt": f"message {i}: {_sentence(rng)}",
              "chosen": f"{_sentence(rng).capitalize()}. — The Fernhill team",
              "rejected": f"{_sentence(rng)}, sorry"} for i in range(30)]
    file = tmp_path / "pairs.jsonl"
    file.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    config, _ = _init(tmp_path, file)
    assert config.train.method == "dpo" and config.data.format == "preference"
    assert config.task.reply.must_include == ["— The Fernhill team"]
    assert "every one writes '— The Fernhill team'" in (tmp_path / "project" / "taskfit.yaml").read_text()


def test_labels_written_in_several_cases_are_proposed_once_and_read_as_one(tmp_path):
    """A hand-labelled export writes one queue as billing, Billing and BILLING, and another mostly
    with a zero-width space: init proposes the commonest visible spelling once and says which
    others it stands for, and data check keeps every row
    (none quarantined), its card counting the rows read as the label."""
    rng = random.Random(1)
    spellings = {"billing": ["billing"] * 6 + ["Billing", "BILLING"], "shipping": ["shipping"] * 7 + ["Shipping"],
                 "refund": ["refund\u200b"] * 5 + ["refund"] * 3}  # most rows with a zero-width space
    rows = [[f"T{i}", _sentence(rng), spellings[QUEUES[i % 3]][(i // 3) % 8]] for i in range(150)]
    file = _write_csv(tmp_path / "tickets.csv", ["ticket_id", "text", "label"], rows)
    config, output = _init(tmp_path, file)  # no row quarantined
    assert sorted(config.task.labels) == sorted(QUEUES)
    assert "billing ('BILLING', 'Billing')" in output and "shipping ('Shipping')" in output
    card = json.loads((tmp_path / "project" / "data_card.json").read_text())
    assert card["labels"] == {"billing": 50, "shipping": 50, "refund": 50}
    assert {r["written"]: r["rows"] for r in card["respelled"]} == {"Billing": 6, "BILLING": 6, "Shipping": 6,
                                                                     "refund\u200b": sum(
        QUEUES[i % 3] == "refund" and (i // 3) % 8 < 5 for i in range(150))}


def test_init_proposes_privacy_regions_from_the_datas_prefixed_phone_numbers(tmp_path):
    """A German and French claims export got privacy.regions [US, GB], under which a number
    written without its +49 and no phone word before it ("Rückruf unter 030 1234567") stays in
    clear: its +49 and +33 numbers say where the data is from, and the defaults are kept after them."""
    rng = random.Random(0)
    phones = ["+49 30 1234567", "+49 171 9244447", "+33 6 12 34 56 78", "Telefon 030 7654321"]
    rows = [[f"Schaden {i}: erreichbar unter {phones[i % 4]}. {_sentence(rng)}", QUEUES[i % 3]] for i in range(60)]
    config, output = _init(tmp_path, _write_csv(tmp_path / "claims.csv", ["text", "label"], rows))
    assert config.data.privacy.regions == ["DE", "FR", "US", "GB"]
    assert "data.privacy.regions DE, FR, US, GB: the data's phone numbers with a +country prefix are DE (30), FR (15) of 45" in output
    assert pii.redact("Rückruf unter 030 1234567", privacy=config.data.privacy) == "Rückruf unter <PHONE>"
    # labelled numbers alone say nothing of the region: the default stays, and init says so
    rows = [[f"Schaden {i}: Telefon 030 765432{i % 10}. {_sentence(rng)}", QUEUES[i % 3]] for i in range(60)]
    config, output = _init(tmp_path, _write_csv(tmp_path / "bare.csv", ["text", "label"], rows), "--force")
    assert config.data.privacy.regions == ["US", "GB"]
    assert "60 phone number(s) after a phone word and none with a +country prefix: data.privacy.regions stays US, GB" in output


def test_init_offers_to_classify_by_a_column_that_tells_rows_apart(tmp_path):
    """An extract export with a `channel` column of one value and an `intent` column of three:
    init offered "pass --target channel to classify by it instead" (a walkthrough), a task of
    one label. It names the column of most values, and never one of a single value."""
    from taskfit.project import propose_from

    rows = [{"utterance": f"book a table for {2 + i % 5} in Oslo at {7 + i % 4} pm, order {i}",
             "slots": {"party_size": str(2 + i % 5), "city": "Oslo"}, "channel": "email",
             "intent": ["book", "cancel", "change"][i % 3]} for i in range(60)]
    export = tmp_path / "export.jsonl"
    export.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    said = " ".join(propose_from(export).reasons)
    assert "holds JSON objects → extract" in said
    assert "pass --target intent to classify by it instead" in said and "--target channel" not in said
    for r in rows:
        r["intent"] = "book"  # no column of several values left: nothing offered
    export.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert "to classify by it instead" not in " ".join(propose_from(export).reasons)
