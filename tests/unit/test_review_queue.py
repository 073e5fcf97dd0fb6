"""`taskfit review queue` and `taskfit review import` on a synthetic request log: the targeted picks'
order, their spread over kinds of request, a random share that stays uniform, no request queued
twice, and corrections stored with their reviewer (or the line that is wrong named)."""

from __future__ import annotations

import csv
import re
import sqlite3
import time

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.config import TaskSpec
from taskfit.data.sample import generate_tickets
from taskfit.lifecycle.queue import RANDOM, pick, queue_project
from taskfit.lifecycle.reviews import ReviewStore, store_path
from taskfit.monitoring.requests import LoggedRequest
from taskfit.quickstart import make_quickstart_project
from taskfit.serve.log import RequestLog

LABELS = ["billing", "shipping", "needs_human"]
TASK = TaskSpec(name="t", kind="classify", success="right queue", system_prompt="Route it.", labels=LABELS)


def _req(i: int, text: str, confidence: float | None = 0.9, answer: str = "billing", fallback: bool = False,
         shadow: bool | None = None) -> LoggedRequest:
    return LoggedRequest(id=f"r{i}", created=1000.0 + i, status=200, latency_ms=10.0, text=text, context=None,
                         answer=answer, confidence=confidence, fallback=fallback, model="t", shadow_agreed=shadow)


def test_targeted_picks_come_most_doubtful_first():
    requests = [_req(0, "refund my order", 0.95), _req(1, "refund please", 0.40),
                _req(2, "refund now", 0.30, fallback=True), _req(3, "refund it", 0.99, shadow=False),
                _req(4, "refund again", 0.97, answer="not a queue"), _req(5, "refund twice", 0.70),
                _req(6, "an error", 0.5)]
    requests[6] = LoggedRequest(**{**requests[6].__dict__, "status": 500})  # failed: nothing to review
    picks, *_ = pick(requests, TASK, n=6, random_share=0.0, k=1, seed=0, queued={})
    assert [p.request.id for p in picks] == ["r3", "r4", "r2", "r1", "r5", "r0"]
    assert [p.reason for p in picks] == ["shadow disagreement", "invalid output", "fallback", "low confidence",
                                         "low confidence", "low confidence"]
    assert not any(p.random for p in picks)


def test_one_kind_of_request_cannot_fill_the_queue():
    # 40 doubtful requests about refunds, 10 confident ones about parcels: least confident first
    # alone would queue refunds only.
    refunds = [_req(i, f"please refund my duplicate card charge number {i}", 0.1 + i / 1000) for i in range(40)]
    parcels = [_req(100 + i, f"where is my parcel delivery tracking {i}", 0.8 + i / 100) for i in range(10)]
    picks, *_ = pick(refunds + parcels, TASK, n=10, random_share=0.0, k=2, seed=0, queued={})
    ids = [p.request.id for p in picks]
    assert sum(i in {r.id for r in parcels} for i in ids) == 5
    # within each group, the least confident first
    assert [i for i in ids if i in {r.id for r in refunds}] == ["r0", "r1", "r2", "r3", "r4"]
    one_group, *_ = pick(refunds + parcels, TASK, n=10, random_share=0.0, k=1, seed=0, queued={})
    assert all(p.request.id in {r.id for r in refunds} for p in one_group)


def test_the_random_share_is_drawn_from_all_traffic_and_marked():
    doubtful = [_req(i, f"refund charge {i}", 0.1) for i in range(100)]
    sure = [_req(100 + i, f"parcel tracking {i}", 0.99) for i in range(100)]
    picks, *_ = pick(doubtful + sure, TASK, n=20, random_share=0.5, k=1, seed=0, queued={})
    drawn = [p for p in picks if p.random]
    assert len(drawn) == 10 and all(p.reason == RANDOM for p in drawn)
    # the targeted half takes only doubtful requests; the random half reaches the confident ones too
    assert all(p.request.confidence == 0.1 for p in picks if not p.random)
    assert any(p.request.confidence == 0.99 for p in drawn)


def test_a_repeated_input_and_answer_is_put_before_a_reviewer_once():
    """A client's retries, or one common question answered alike, are one judgement: the most
    doubtful of them is targeted, the rest are counted as repeats; the same input with another
    answer, or another context, is another judgement."""
    retries = [_req(i, "Where is my refund?", 0.5 + i / 10) for i in range(3)]
    other_answer = _req(3, "Where is my refund?", 0.2, answer="shipping")
    distinct = _req(4, "My parcel is late", 0.9)
    picks, _, repeats = pick([*retries, other_answer, distinct], TASK, n=5, random_share=0.0, k=1, seed=0, queued={})
    assert [p.request.id for p in picks] == ["r3", "r0", "r4"] and repeats == 2
    with_context = LoggedRequest(**{**retries[1].__dict__, "id": "r7", "context": "Refunds take 5 days."})
    picks, _, repeats = pick([*retries, with_context], TASK, n=5, random_share=0.0, k=1, seed=0, queued={})
    assert [p.request.id for p in picks] == ["r0", "r7"] and repeats == 2
    # queued in an earlier batch: a new retry of it is not put before a reviewer again
    from taskfit.lifecycle.reviews import Queued

    before = {"r9": Queued(request_id="r9", model="t", batch="b1", item="Q001", queued=0.0, reason="spread",
                           random=False, input="Where is my refund?", served="billing")}
    picks, _, repeats = pick([*retries, distinct], TASK, n=5, random_share=0.0, k=1, seed=0, queued=before)
    assert [p.request.id for p in picks] == ["r4"] and repeats == 3
    # queued for another model: another task's judgement, so not a repeat here
    other = {"r9": Queued(**{**before["r9"].__dict__, "model": "other-task"})}
    picks, _, repeats = pick([*retries, distinct], TASK, n=5, random_share=0.0, k=1, seed=0, queued=other)
    assert [p.request.id for p in picks] == ["r0", "r4"] and repeats == 2


@pytest.fixture()
def served(tmp_path):
    """A quickstart project and its request log: 60 answered tickets, 2 failed requests."""
    project = make_quickstart_project(tmp_path / "p", n_tickets=200).parent
    model = yaml.safe_load((project / "taskfit.yaml").read_text())["task"]["name"]
    log = RequestLog(project / "requests.sqlite")
    now = time.time()
    for i, row in enumerate(generate_tickets(60, seed=11)):
        label = row["messages"][1]["content"]
        confidence = 0.3 + (i % 10) / 15
        log.add(id=f"chatcmpl-{i:03d}", created=now - 3600 + i, model=model, status=200, latency_ms=20.0,
                request=row["messages"][:1], response=label, label=label, confidence=confidence,
                fallback=int(confidence < 0.4))
    for i in range(2):
        log.add(id=f"failed-{i}", created=now - 60, model=model, status=500, latency_ms=5.0,
                request=[{"role": "user", "content": "where is my parcel"}], error="internal error")
    log.close()
    return project


def _queued(project):
    with ReviewStore(store_path(project / "requests.sqlite")) as store:
        return store.queued()


def test_queue_never_repeats_a_request_and_exports_the_review_sheet(served):
    from taskfit.lifecycle.reviews import correction_of

    with ReviewStore(store_path(served / "requests.sqlite")) as store:  # an application's feedback
        store.add([correction_of("chatcmpl-005", None, "billing", "x", None, None, "app", None, "refund", "feedback")])
    first = queue_project(served, n=25)
    rows = list(csv.DictReader(first.paths["csv"].open(encoding="utf-8-sig")))
    assert len(rows) == 25 and {r["request_id"] for r in rows} == {p.request.id for p in first.picks}
    assert not any(r["request_id"].startswith("failed") for r in rows)
    assert sum(p.random for p in first.picks) == 5  # review.random_share 0.2
    page = first.paths["html"].read_text()
    assert "csvText" in page and 'list="labels"' in page and "random" not in page  # why stays hidden
    # the sheet the page saves starts with a byte-order mark too, as review.csv does (Excel in Europe)
    assert 'new Blob(["\\ufeff" + csvText()]' in page
    second = queue_project(served, n=25)
    assert not {p.request.id for p in first.picks} & {p.request.id for p in second.picks}
    assert len(_queued(served)) == len(first.picks) + len(second.picks)
    third = queue_project(served, n=25)  # 9 left unqueued; the random draw may take queued ones again
    assert len(third.picks) <= 9 and len(_queued(served)) <= 59
    with pytest.raises(Exception, match="queued already"):
        queue_project(served, n=25)
    assert "chatcmpl-005" not in _queued(served)  # reviewed already, through feedback
    # a request queued before that the random draw takes again joins the sample, not the queue
    assert sum(q.random for q in _queued(served).values()) == \
        sum(sum(p.random for p in r.picks) + r.random_again for r in (first, second, third))


def test_review_queue_says_how_many_repeats_it_left_out(served):
    model = yaml.safe_load((served / "taskfit.yaml").read_text())["task"]["name"]
    log = RequestLog(served / "requests.sqlite")
    for i in range(3):  # a client retrying one request
        log.add(id=f"retry-{i}", created=time.time() - 30 + i, model=model, status=200, latency_ms=20.0,
                request=[{"role": "user", "content": "Charged twice for order 7741, please fix"}], response="billing",
                label="billing", confidence=0.2, fallback=1)
    log.close()
    result = CliRunner().invoke(app, ["review", "queue", str(served), "--n", "70"])
    assert result.exit_code == 0, result.output
    assert "2 more repeat the input, context and answer of a request queued now or before" in " ".join(result.output.split())
    queued = [q for q in _queued(served).values() if q.request_id.startswith("retry-")]
    assert len(queued) == 1


def _fill(path, rows, out):
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def test_import_stores_corrections_with_the_reviewer_and_names_bad_lines(served, tmp_path):
    result = queue_project(served, n=10)
    rows = list(csv.DictReader(result.paths["csv"].open(encoding="utf-8-sig")))
    rows[0].update(verdict="correct", correction=rows[0]["answer"].upper())  # the served label, in capitals
    rows[1].update(verdict="wrong", correction="technical_issue" if rows[1]["answer"] != "technical_issue" else "billing")
    rows[2].update(verdict="unsure")
    rows[3].update(verdict="wrong", correction="loyalty_program")  # a new label: imported, warned about
    rows[4].update(verdict="wrong", correction="shiping")  # a slip for shipping: imported, the label suggested
    filled = _fill(result.paths["csv"], rows, tmp_path / "filled.csv")
    cli = CliRunner().invoke(app, ["review", "import", str(served), str(filled), "--reviewer", "ana"])
    assert cli.exit_code == 0, cli.output
    assert "stored 4 corrections (1 correct, 3 wrong) by ana" in cli.output
    said = " ".join(cli.output.split())
    assert "loyalty_program (1)" in said and "shiping (1; did you mean 'shipping'?)" in said and "from-log" in said
    db = sqlite3.connect(store_path(served / "requests.sqlite"))
    stored = {r[0]: r[1:] for r in db.execute("SELECT request_id, reviewer, verdict, correction, served FROM corrections")}
    assert stored[rows[0]["request_id"]] == ("ana", "correct", rows[0]["answer"], rows[0]["answer"])
    assert stored[rows[1]["request_id"]][:3] == ("ana", "wrong", rows[1]["correction"])
    assert rows[2]["request_id"] not in stored  # unsure: still unreviewed

    for change, message in [({"request_id": "chatcmpl-999"}, "filled.csv:2: request_id 'chatcmpl-999' was never queued"),
                            ({"verdict": "wrong", "correction": ""}, "filled.csv:2: verdict wrong needs the right answer"),
                            ({"verdict": "maybe"}, "filled.csv:2: verdict 'maybe'")]:
        bad = [dict(rows[0], **change)] + rows[1:]
        _fill(result.paths["csv"], bad, filled)
        cli = CliRunner().invoke(app, ["review", "import", str(served), str(filled), "--reviewer", "ana"])
        assert cli.exit_code == 3 and message in cli.output and "Traceback" not in cli.output, cli.output
    # a comment over two lines in the first row: the bad third row is named by its line in the file
    bad = ([dict(rows[0], comment="checked with\nthe customer")] + rows[1:2] + [dict(rows[2], verdict="maybe")]
           + rows[3:])
    _fill(result.paths["csv"], bad, filled)
    cli = CliRunner().invoke(app, ["review", "import", str(served), str(filled), "--reviewer", "ana"])
    first = list(bad[2].values())[0]  # the third row's first cell: where its line begins
    line = next(n for n, text in enumerate(filled.read_text().splitlines(), 1) if text.startswith(first + ","))
    assert line > 4 and len(filled.read_text().splitlines()) > 11  # cells over several lines before it
    assert cli.exit_code == 3 and f"filled.csv:{line}: verdict 'maybe'" in cli.output, cli.output
    # without a reviewer name anywhere, nothing is stored
    _fill(result.paths["csv"], rows, filled)
    cli = CliRunner().invoke(app, ["review", "import", str(served), str(filled)])
    assert cli.exit_code == 3 and "no reviewer" in cli.output and "--reviewer" in cli.output
    assert db.execute("SELECT COUNT(*) FROM corrections").fetchone()[0] == 4


def test_an_extract_answer_written_otherwise_is_the_same_answer():
    # a reviewer's sheet (or an application's feedback) writes the record compactly, or 12.5 for
    # the 12.50 served: the same record, not a contradiction nor a correction
    from taskfit.lifecycle.reviews import correction_of

    served = '{"vendor": "Tesco", "total": 12.50}'
    same = '{"vendor":"Tesco","total":12.5}'
    ok = correction_of("r1", None, served, "x", None, None, "ann", "correct", same, "sheet")
    assert ok.verdict == "correct" and ok.correction == served
    assert correction_of("r1", None, served, "x", None, None, "app", None, same, "feedback").verdict == "correct"
    with pytest.raises(ValueError, match="different from the answer served"):
        correction_of("r1", None, served, "x", None, None, "ann", "wrong", same, "sheet")
    wrong = correction_of("r1", None, served, "x", None, None, "ann", None, '{"vendor": "Aldi", "total": 12.5}', "x")
    assert wrong.verdict == "wrong"
    # labels stay text: "1.0" is another label than "1"
    assert correction_of("r2", None, "1", "x", None, None, "ann", None, "1.0", "sheet").verdict == "wrong"


def test_an_extract_correction_training_could_not_take_is_named_by_its_line(served, tmp_path):
    """A reviewer's record that is not JSON, or breaks the schema, would be quarantined by data
    from-log much later: the import names its line now and stores nothing."""
    doc = yaml.safe_load((served / "taskfit.yaml").read_text())
    doc["task"] = {"kind": "extract", "name": doc["task"]["name"], "success": "s", "system_prompt": "p",
                   "schema": {"type": "object", "required": ["queue"], "additionalProperties": False,
                              "properties": {"queue": {"type": "string"}}}}
    doc["eval"]["thresholds"] = {"field_f1": 0.8}
    (served / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    result = queue_project(served, n=4)
    rows = list(csv.DictReader(result.paths["csv"].open(encoding="utf-8-sig")))
    for correction, message in [("queue: refund", "filled.csv:2: answer: not valid JSON"),
                                ('{"queue": 3}', "filled.csv:2: answer: does not match task.schema at queue")]:
        _fill(result.paths["csv"], [dict(rows[0], verdict="wrong", correction=correction)] + rows[1:],
              tmp_path / "filled.csv")
        cli = CliRunner().invoke(app, ["review", "import", str(served), str(tmp_path / "filled.csv"),
                                       "--reviewer", "ana"])
        assert cli.exit_code == 3 and message in cli.output and "Traceback" not in cli.output, cli.output
    # two bad rows are named together, so one round of mending takes both (a walkthrough mended
    # line 13, imported again, and only then learnt of line 16); nothing is stored
    _fill(result.paths["csv"], [dict(rows[0], verdict="wrong", correction="queue: refund"),
                                dict(rows[1], verdict="wrong", correction='{"queue": 3}')] + rows[2:],
          tmp_path / "filled.csv")
    cli = CliRunner().invoke(app, ["review", "import", str(served), str(tmp_path / "filled.csv"), "--reviewer", "ana"])
    said = " ".join(cli.output.split())
    assert cli.exit_code == 3 and "2 rows cannot be imported (nothing was stored)" in said, said
    assert "filled.csv:2: answer: not valid JSON" in said
    assert re.search(r"filled\.csv:\d+: answer: does not match task\.schema at queue", said), said
    _fill(result.paths["csv"], [dict(rows[0], verdict="wrong", correction='{"queue": "refund"}')] + rows[1:],
          tmp_path / "filled.csv")
    cli = CliRunner().invoke(app, ["review", "import", str(served), str(tmp_path / "filled.csv"), "--reviewer", "ana"])
    assert cli.exit_code == 0 and "stored 1 correction" in cli.output, cli.output


def test_a_sheet_as_excel_in_europe_opens_and_saves_it_imports(served, tmp_path):
    """Excel reads a CSV without a byte-order mark in the machine's code page ("€" as "â‚¬"), and in
    much of Europe saves "CSV UTF-8" with semicolons between the columns: the sheet is written with
    the mark, and a sheet saved back that way imports as it was meant."""
    result = queue_project(served, n=4)
    assert result.paths["csv"].read_bytes().startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(result.paths["csv"].open(encoding="utf-8-sig")))
    rows[0].update(verdict="correct", reviewer="jörg", comment="Kunde; 12,50 € erstattet")
    filled = tmp_path / "filled.csv"
    with filled.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=";")
        w.writeheader()
        w.writerows(rows)
    cli = CliRunner().invoke(app, ["review", "import", str(served), str(filled)])
    assert cli.exit_code == 0, cli.output
    assert "stored 1 corrections (1 correct, 0 wrong) by jörg" in cli.output


def test_a_sheet_saved_from_excel_as_a_workbook_imports_row_by_row(served, tmp_path):
    """Opened in Excel and saved as an Excel Workbook (.xlsx) rather than back as CSV, the sheet
    imports as the CSV would; a row with a cell right of the named columns is named by its row."""
    import openpyxl

    result = queue_project(served, n=4)
    rows = list(csv.DictReader(result.paths["csv"].open(encoding="utf-8-sig")))
    rows[0].update(verdict="correct", reviewer="jörg", comment="Kunde: 12,50 € erstattet")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(rows[0]))
    for row in rows:
        sheet.append(list(row.values()))
    filled = tmp_path / "filled.xlsx"
    book.save(filled)
    cli = CliRunner().invoke(app, ["review", "import", str(served), str(filled)])
    assert cli.exit_code == 0, cli.output
    assert "stored 1 corrections (1 correct, 0 wrong) by jörg" in cli.output
    sheet.cell(row=3, column=len(rows[0]) + 2, value="a note beside the sheet")
    book.save(filled)
    cli = CliRunner().invoke(app, ["review", "import", str(served), str(filled)])
    assert cli.exit_code != 0 and f"{filled}:3: a cell beyond the {len(rows[0])} named columns" in " ".join(cli.output.split())


def test_a_reply_that_fell_back_is_reviewed_as_the_fallback_the_customer_got(served, tmp_path):
    """An after-deploy walkthrough: the page said "Answer served: pin_change" where the customer got
    the fallback, so a reviewer judged an answer nobody saw and the random sample's quality ran high."""
    model = yaml.safe_load((served / "taskfit.yaml").read_text())["task"]["name"]
    log = RequestLog(served / "requests.sqlite")
    log.add(id="fell-back", created=time.time() - 10, model=model, status=200, latency_ms=20.0,
            request=[{"role": "user", "content": "Is there a branch near the station?"}], response="needs_human",
            label="billing", confidence=0.31, fallback=1)
    log.close()
    result = queue_project(served, n=60)
    rows = {r["request_id"]: r for r in csv.DictReader(result.paths["csv"].open(encoding="utf-8-sig"))}
    row = rows["fell-back"]
    assert row["answer"] == "needs_human"
    assert "the fallback" in row["note"] and "billing" in row["note"] and "0.31" in row["note"]
    page = result.paths["html"].read_text()
    assert "the model&#x27;s own label was billing" in page or "the model's own label was billing" in page
    assert '<option value="needs_human">' in page  # offered as a right answer, where one should have fallen back
    assert _queued(served)["fell-back"].served == "needs_human"
    filled = _fill(result.paths["csv"], [dict(row, verdict="correct", comment="mailed jane.doe@example.com")],
                   tmp_path / "filled.csv")
    doc = yaml.safe_load((served / "taskfit.yaml").read_text())  # the project's fallback, as the server's
    doc["eval"].update({"confidence_threshold": 0.4, "fallback": "needs_human"})
    (served / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    cli = CliRunner().invoke(app, ["review", "import", str(served), str(filled), "--reviewer", "ana"])
    assert cli.exit_code == 0, cli.output
    assert "not in task.labels" not in cli.output  # the fallback is no label, but data from-log takes it
    db = sqlite3.connect(store_path(served / "requests.sqlite"))
    assert db.execute("SELECT verdict, correction, served FROM corrections WHERE request_id = 'fell-back'").fetchone() \
        == ("correct", "needs_human", "needs_human")
    (comment,) = db.execute("SELECT comment FROM corrections WHERE request_id = 'fell-back'").fetchone()
    assert comment.startswith("mailed ") and "jane.doe" not in comment  # redacted as the request log is


def test_a_request_left_unsure_is_offered_first_in_the_next_queue(served, tmp_path):
    """The page says "Mark it unsure to leave it for someone else", but such a request stayed queued
    and unreviewed, and no later queue offered it again."""
    first = queue_project(served, n=10)
    rows = list(csv.DictReader(first.paths["csv"].open(encoding="utf-8-sig")))
    rows[0].update(verdict="unsure")
    rows[1].update(verdict="correct", correction="")
    filled = _fill(first.paths["csv"], rows[:2], tmp_path / "filled.csv")
    cli = CliRunner().invoke(app, ["review", "import", str(served), str(filled), "--reviewer", "ana"])
    assert cli.exit_code == 0, cli.output
    assert _queued(served)[rows[0]["request_id"]].unsure is not None
    second = queue_project(served, n=5)
    assert rows[0]["request_id"] in {p.request.id for p in second.picks}
    again = _queued(served)[rows[0]["request_id"]]
    assert again.batch == second.batch and again.unsure is None  # in the new batch, no longer pending
    assert rows[1]["request_id"] not in {p.request.id for p in second.picks}  # reviewed: never again
    assert len(second.picks) == 5 and len(_queued(served)) == 10 + 4
    # only unsure rows in a sheet: recorded, not an error
    third_rows = list(csv.DictReader(second.paths["csv"].open(encoding="utf-8-sig")))
    only = _fill(second.paths["csv"], [dict(third_rows[0], verdict="unsure")], tmp_path / "only.csv")
    cli = CliRunner().invoke(app, ["review", "import", str(served), str(only), "--reviewer", "bo"])
    assert cli.exit_code == 0 and "come first in the next" in " ".join(cli.output.split()), cli.output
    assert _queued(served)[third_rows[0]["request_id"]].unsure is not None
    # judged after all (the sheet imported again with a verdict): not offered again
    judged = _fill(second.paths["csv"], [dict(third_rows[0], verdict="correct", correction="")], tmp_path / "j.csv")
    assert CliRunner().invoke(app, ["review", "import", str(served), str(judged), "--reviewer", "bo"]).exit_code == 0
    assert third_rows[0]["request_id"] not in {p.request.id for p in queue_project(served, n=3).picks}
