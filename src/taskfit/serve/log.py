"""The request log: every request and its answer in SQLite, redacted by default.

Writes go through one background thread (the request path only queues a row), in WAL mode so
readers (monitoring, the retraining loop) never block the server. The schema is versioned with
``PRAGMA user_version`` and only ever migrated forward; a log written by a newer taskfit is
refused rather than guessed at. Text is redacted by the data stage's detectors before it is
stored, so the planted PII of a request never reaches the disk.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable


if TYPE_CHECKING:
    from taskfit.config import PrivacySpec
    from taskfit.data.pii import Detector

MIGRATIONS = [
    # 1: the request log
    """
    CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        key_name TEXT,
        model TEXT,
        adapter TEXT,
        stream INTEGER NOT NULL DEFAULT 0,
        status INTEGER NOT NULL,
        latency_ms REAL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        confidence REAL,
        fallback INTEGER,
        finish_reason TEXT,
        request TEXT,
        response TEXT,
        error TEXT
    );
    CREATE INDEX requests_created ON requests(created);
    CREATE INDEX requests_model ON requests(model, created);
    """,
    # 2: what monitoring reads besides the messages: a classify answer's label (also when the
    # reply is the fallback) and a qa request's passage
    """
    ALTER TABLE requests ADD COLUMN label TEXT;
    ALTER TABLE requests ADD COLUMN context TEXT;
    """,
    # 3: the registry version that answered (taskfit.lifecycle), and for a shadow answer of the
    # candidate the id of the request it shadows (its own id is that id + "-shadow")
    """
    ALTER TABLE requests ADD COLUMN version TEXT;
    ALTER TABLE requests ADD COLUMN shadow_of TEXT;
    CREATE INDEX requests_shadow ON requests(shadow_of);
    """,
    # 4: the format the client asked for in place of the task's (response_format's type:
    # json_object, json_schema), so that its reply is not read as a task answer; NULL for none
    """
    ALTER TABLE requests ADD COLUMN response_format TEXT;
    """,
]
COLUMNS = ["id", "created", "key_name", "model", "adapter", "stream", "status", "latency_ms",
           "prompt_tokens", "completion_tokens", "confidence", "fallback", "finish_reason",
           "request", "response", "error", "label", "context", "version", "shadow_of", "response_format"]
PURGE_EVERY_S = 3600.0


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating or migrating) the log at ``path``."""
    from taskfit.migrations import open_migrated

    return open_migrated(path, MIGRATIONS, "request log", "upgrade taskfit, or log elsewhere")


class RequestLog:
    """Queue rows from any thread; one writer thread redacts and stores them."""

    def __init__(self, path: Path, redact: bool = True, retention_days: float | None = None,
                 privacy_of: Callable[[str | None], PrivacySpec | None] = lambda model: None):
        self.path = path
        self.redact = redact
        self.privacy_of = privacy_of  # a row's model name -> its data.privacy settings (None: defaults)
        self.retention_s = retention_days * 86400 if retention_days else None
        self.db = connect(path)
        self.rows: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.purge()
        self._last_purge = time.time()
        self._thread = threading.Thread(target=self._write, name="taskfit-request-log", daemon=True)
        self._thread.start()

    def add(self, **row: Any) -> None:
        self.rows.put(row)

    def _clean(self, value: Any, personal: Detector, known: dict[str, str]) -> Any:
        """``value`` redacted; each finding (of four characters or more) joins ``known``, and what is
        known from the texts cleaned before is replaced wherever it recurs."""
        if value is None or not self.redact:
            return value
        if isinstance(value, str):
            findings = personal.detect(value)
            known.update((value[f.start:f.end], f.kind) for f in findings if f.end - f.start >= 4)
            text = personal.redact(value, findings)
            for found in sorted(known, key=len, reverse=True):  # a number inside a longer one goes with it
                text = text.replace(found, f"<{known[found]}>")
            return text
        if isinstance(value, list):
            return [self._clean(v, personal, known) for v in value]
        if isinstance(value, dict):
            return {k: self._clean(v, personal, known) for k, v in value.items()}
        return value

    def _record(self, row: dict[str, Any]) -> tuple[Any, ...]:
        from taskfit.data.pii import detector

        row = dict(row)
        personal = detector(self.privacy_of(row.get("model")))
        # The request first: what it showed to be personal data is redacted wherever the reply repeats
        # it (a phone number without the word "call" before it gives no evidence of its own).
        known: dict[str, str] = {}
        for key in ("request", "context", "response", "error"):
            if row.get(key) is not None:
                cleaned = self._clean(row[key], personal, known)
                row[key] = cleaned if isinstance(cleaned, str) else json.dumps(cleaned, ensure_ascii=False)
        return tuple(row.get(c) for c in COLUMNS)

    def _write(self) -> None:
        sql = f"INSERT OR REPLACE INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        while True:
            row = self.rows.get()
            batch = [row]
            while not self.rows.empty() and len(batch) < 256:
                batch.append(self.rows.get())
            done = None in batch
            records = [self._record(r) for r in batch if r is not None]
            if records:
                with self.db:
                    self.db.executemany(sql, records)
            if time.time() - self._last_purge > PURGE_EVERY_S:
                self.purge()
            for _ in batch:
                self.rows.task_done()
            if done:
                return

    def purge(self) -> int:
        """Delete rows older than the retention period; return how many."""
        if self.retention_s is None:
            return 0
        self._last_purge = time.time()
        with self.db:
            return self.db.execute("DELETE FROM requests WHERE created < ?",
                                   (time.time() - self.retention_s,)).rowcount

    def flush(self) -> None:
        self.rows.join()

    def close(self) -> None:
        self.rows.put(None)
        self._thread.join()
        self.db.close()
