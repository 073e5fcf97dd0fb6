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


def test_a_version_1_log_gains_the_label_and_context_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "log.sqlite"
    db = sqlite3.connect(path)
    db.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    db.execute("INSERT INTO requests (id, created, status, fallback, response) VALUES ('old', 1.0, 200, 1, 'needs_human')")
    db.commit()
    db.close()
    log = RequestLog(path)
    log.add(id="new", created=2.0, status=200, request=[{"role": "user", "content": "mail jo@example.com"}],
            response="needs_human", fallback=1, confidence=0.3, label="billing", context="call +1 415 555 2671")
    log.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 2
    rows = db.execute("SELECT id, response, label, context FROM requests ORDER BY created").fetchall()
    assert rows == [("old", "needs_human", None, None), ("new", "needs_human", "billing", "call <PHONE>")]
