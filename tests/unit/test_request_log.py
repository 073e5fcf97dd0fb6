"""The SQLite request log: redaction before storage, retention, and forward-only migrations."""

from __future__ import annotations

import sqlite3
import time

import pytest

from taskfit.errors import ConfigError
from taskfit.serve.log import MIGRATIONS, RequestLog


def test_rows_are_redacted_and_old_rows_purged(tmp_path):
    path = tmp_path / "log.sqlite"
    log = RequestLog(path, redact=True, retention_days=1)
    log.add(id="new", created=time.time(), status=200, request=[{"role": "user", "content": "mail jo@example.com"}],
            response="call +1 415 555 2671")
    log.add(id="old", created=time.time() - 3 * 86400, status=200, request=[], response="x")
    log.flush()
    assert log.purge() == 1
    log.close()
    db = sqlite3.connect(path)
    ((request, response),) = db.execute("SELECT request, response FROM requests").fetchall()
    assert "jo@example.com" not in request and "<EMAIL>" in request and response == "call <PHONE>"


def test_a_log_from_a_newer_taskfit_is_refused_and_an_old_one_migrated(tmp_path):
    path = tmp_path / "log.sqlite"
    RequestLog(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="newer taskfit"):
        RequestLog(path)


def _old_log(tmp_path, version, insert):
    """A log written by a taskfit of schema ``version``, holding the row ``insert`` adds."""
    path = tmp_path / "log.sqlite"
    db = sqlite3.connect(path)
    db.executescript(f"BEGIN; {'; '.join(MIGRATIONS[:version])}; PRAGMA user_version = {version}; COMMIT;")
    db.execute(insert)
    db.commit()
    db.close()
    return path


def test_a_version_1_log_gains_the_label_and_context_columns_and_keeps_its_rows(tmp_path):
    path = _old_log(tmp_path, 1, "INSERT INTO requests (id, created, status, fallback, response) "
                                 "VALUES ('old', 1.0, 200, 1, 'needs_human')")
    log = RequestLog(path)
    log.add(id="new", created=2.0, status=200, request=[{"role": "user", "content": "mail jo@example.com"}],
            response="needs_human", fallback=1, confidence=0.3, label="billing", context="call +1 415 555 2671")
    log.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 4
    rows = db.execute("SELECT id, response, label, context FROM requests ORDER BY created").fetchall()
    assert rows == [("old", "needs_human", None, None), ("new", "needs_human", "billing", "call <PHONE>")]


def test_version_and_shadow_columns_and_monitoring_leaves_shadow_answers_out_of_the_traffic(tmp_path):
    from taskfit.monitoring.requests import models_in_log, read_requests, shadow_summary

    path = _old_log(tmp_path, 2, "INSERT INTO requests (id, created, model, status, label) "
                                 "VALUES ('old', 1.0, 'triage', 200, 'billing')")
    log = RequestLog(path)
    for i, (prod, cand) in enumerate([("billing", "billing"), ("refund", "billing"), ("login", "login")]):
        common = dict(created=2.0 + i, model="triage", status=200, confidence=0.9, fallback=0,
                      request=[{"role": "user", "content": f"ticket {i}"}])
        log.add(id=f"r{i}", version="v1", label=prod, response=prod, latency_ms=10.0, **common)
        log.add(id=f"r{i}-shadow", version="v2", label=cand, response=cand, latency_ms=30.0, shadow_of=f"r{i}",
                **common)
    log.close()
    db = sqlite3.connect(path)
    rows = read_requests(db, "triage")
    assert [(r.id, r.version, r.answer) for r in rows] == [("old", None, "billing"), ("r0", "v1", "billing"),
                                                            ("r1", "v1", "refund"), ("r2", "v1", "login")]
    # The review queue's "shadow disagreement": each request knows whether its shadow answer agreed.
    assert [r.shadow_agreed for r in rows] == [None, True, False, True]
    assert models_in_log(db) == {"triage": 4}
    shadow = shadow_summary(db, "triage")
    assert (shadow.candidate, shadow.answers, shadow.agree, shadow.failed) == ("v2", 3, 2, 0)
    assert shadow.latency_p50_ms == 30.0 and shadow.production_p50_ms == 10.0
    assert shadow_summary(db, "other") is None


def test_personal_data_of_the_request_is_redacted_where_the_reply_repeats_it(tmp_path):
    # an extract reply put a phone number from the request into a field: alone, with no phone
    # word before it, it gives no evidence of being one, and was stored as it was
    path = tmp_path / "log.sqlite"
    log = RequestLog(path)
    log.add(id="r", created=time.time(), status=200,
            request=[{"role": "user", "content": "Invoice 88, questions? call 415-555-0134"}],
            response='{"invoice_number": "415-555-0134", "total": 12.5}')
    log.close()
    ((request, response),) = sqlite3.connect(path).execute("SELECT request, response FROM requests").fetchall()
    assert "415-555-0134" not in request + response
    assert response == '{"invoice_number": "<PHONE>", "total": 12.5}'
