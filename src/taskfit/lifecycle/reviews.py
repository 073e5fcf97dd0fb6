"""The review store: which served requests were queued for review, and every correction.

It lives beside the request log (``reviews.sqlite`` in the log's directory), in its own SQLite
file, so the server's log keeps one writer and its own schema; versioned with ``PRAGMA
user_version`` and only migrated forward, as the log is. Corrections are appended, never
changed: a request reviewed twice keeps both rows, and the newest one counts.

A correction carries what training needs without the log (the request's input and passage as
the log stored them, redacted, and the answer served), so a request that the log's retention
period has since deleted still becomes a training row. Only a verdict (``correct``, or ``wrong``
with the right answer) is a correction: a request nobody judged never reaches the store's
corrections, and so never becomes training data.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from taskfit.errors import DataError
from taskfit.migrations import migrate

STORE_NAME = "reviews.sqlite"
VERDICTS = ("correct", "wrong")

MIGRATIONS = [
    # 1: the queue and the corrections
    """
    CREATE TABLE queued (
        request_id TEXT PRIMARY KEY,
        model TEXT,
        batch TEXT NOT NULL,
        item TEXT,
        queued REAL NOT NULL,
        reason TEXT NOT NULL,
        random INTEGER NOT NULL DEFAULT 0,
        input TEXT,
        context TEXT,
        served TEXT,
        requested REAL
    );
    CREATE TABLE corrections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL,
        model TEXT,
        reviewer TEXT NOT NULL,
        reviewed REAL NOT NULL,
        verdict TEXT NOT NULL,
        correction TEXT NOT NULL,
        served TEXT,
        input TEXT,
        context TEXT,
        requested REAL,
        source TEXT NOT NULL,
        comment TEXT
    );
    CREATE INDEX corrections_request ON corrections(request_id, id);
    """,
    # 2: when a reviewer left a queued request unsure (the next queue offers it again, first)
    "ALTER TABLE queued ADD COLUMN unsure REAL",
]


_QUEUED = ("request_id", "model", "batch", "item", "queued", "reason", "random", "input", "context", "served",
           "requested", "unsure")


def store_path(log: Path) -> Path:
    """The review store of the request log at ``log``."""
    return log.parent / STORE_NAME


@dataclass(frozen=True)
class Queued:
    """A request put before a reviewer, with what they are shown (as the log stored it)."""

    request_id: str
    model: str | None
    batch: str
    item: str | None
    queued: float
    reason: str  # why it was picked: "random sample", "fallback", "low confidence 0.31", ...
    random: bool  # part of the uniform random sample that estimates production quality
    input: str | None = None
    context: str | None = None
    served: str | None = None
    requested: float | None = None
    unsure: float | None = None  # when a reviewer marked it unsure (None: not, or queued again since)


@dataclass(frozen=True)
class Correction:
    """One reviewer's verdict on one served request. ``correction`` is the right answer (the
    served one when the verdict is ``correct``): a classify label, an extract record as JSON, a qa
    or generate answer."""

    request_id: str
    model: str | None
    reviewer: str
    reviewed: float  # seconds since the epoch
    verdict: str  # correct | wrong
    correction: str
    served: str | None
    input: str | None
    context: str | None
    requested: float | None
    source: str  # "queue <batch>" or "feedback"
    comment: str | None = None


class ReviewStore:
    """One review store; safe to share between threads (the server's feedback route)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        migrate(self.db, path, MIGRATIONS, "review store", "upgrade taskfit")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ReviewStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the queue --------------------------------------------------------------------------
    def queued(self, model: str | None = None) -> dict[str, Queued]:
        """Every request ever queued (for ``model`` when given), by request id."""
        sql = f"SELECT {', '.join(_QUEUED)} FROM queued"
        rows = self.db.execute(sql + " WHERE model = ?", (model,)) if model is not None else self.db.execute(sql)
        return {r[0]: Queued(**{**dict(zip(_QUEUED, r)), "random": bool(r[6])}) for r in rows}

    def enqueue(self, items: Iterable[Queued]) -> None:
        """Record a batch; a request already queued is refused (never the same request twice)."""
        with self._transaction():
            self.db.executemany(f"INSERT INTO queued ({', '.join(_QUEUED)}) VALUES ({', '.join('?' * len(_QUEUED))})",
                                [tuple(int(getattr(q, c)) if c == "random" else getattr(q, c) for c in _QUEUED)
                                 for q in items])

    def mark_unsure(self, request_ids: Iterable[str], when: float) -> None:
        """Record that a reviewer left these queued requests unsure: the next queue offers them first."""
        with self._transaction():
            self.db.executemany("UPDATE queued SET unsure = ? WHERE request_id = ?", [(when, r) for r in request_ids])

    def requeue(self, items: Iterable[Queued]) -> None:
        """Put requests left unsure into a new batch (their reason and random-sample mark kept)."""
        with self._transaction():
            self.db.executemany("UPDATE queued SET batch = ?, item = ?, queued = ?, unsure = NULL WHERE request_id = ?",
                                [(q.batch, q.item, q.queued, q.request_id) for q in items])

    def mark_random(self, request_ids: Iterable[str]) -> None:
        """Count already-queued requests that the random sample drew again into that sample (their
        review, pending or done, serves the estimate; they are not queued twice)."""
        with self._transaction():
            self.db.executemany("UPDATE queued SET random = 1 WHERE request_id = ?", [(r,) for r in request_ids])

    # ---- corrections ------------------------------------------------------------------------
    def add(self, corrections: Iterable[Correction]) -> int:
        rows = [(c.request_id, c.model, c.reviewer, c.reviewed, c.verdict, c.correction, c.served, c.input,
                 c.context, c.requested, c.source, c.comment) for c in corrections]
        for c in rows:
            if c[4] not in VERDICTS or not c[2].strip():
                raise DataError(f"request {c[0]}: a correction needs a reviewer and a verdict "
                                f"({' or '.join(VERDICTS)}), got {c[2]!r} and {c[4]!r}")
        with self._transaction():
            self.db.executemany(
                "INSERT INTO corrections (request_id, model, reviewer, reviewed, verdict, correction, served, "
                "input, context, requested, source, comment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def corrections(self, model: str | None = None) -> list[Correction]:
        """The newest correction of each reviewed request (for ``model`` when given), oldest request first."""
        sql = ("SELECT request_id, model, reviewer, reviewed, verdict, correction, served, input, context, "
               "requested, source, comment FROM corrections c WHERE id = (SELECT MAX(id) FROM corrections "
               "WHERE request_id = c.request_id)")
        args: tuple = ()
        if model is not None:
            sql += " AND model = ?"
            args = (model,)
        return [Correction(*r) for r in self.db.execute(sql + " ORDER BY requested, request_id", args)]

    def random_sample(self, model: str | None = None) -> tuple[int, int]:
        """(reviewed requests of the random sample, how many were served correctly): the unbiased
        estimate of production quality (the targeted picks are chosen for being doubtful)."""
        picked = {q.request_id for q in self.queued(model).values() if q.random}
        verdicts = [c.verdict for c in self.corrections(model) if c.request_id in picked]
        return len(verdicts), verdicts.count("correct")

    def _transaction(self):
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def same_answer(a: str, b: str) -> bool:
    """Whether two answers say the same: the same text, or the same JSON object or array however
    it is written (an extract record with other spacing, ``12.50`` for ``12.5``). Labels are
    compared as text (``1`` and ``1.0`` are two labels)."""
    if a == b:
        return True
    try:
        x, y = json.loads(a), json.loads(b)
    except ValueError:
        return False
    return isinstance(x, (dict, list)) and x == y


def correction_of(request_id: str, model: str | None, served: str | None, input: str | None, context: str | None,
                  requested: float | None, reviewer: str | None, verdict: str | None, correction: str | None,
                  source: str, comment: str | None = None, reviewed: float | None = None) -> Correction:
    """A reviewer's judgement of a served answer as a correction. ``verdict`` None: the answer
    given decides (the served one: correct; another: wrong). A ValueError says what is missing or
    contradictory (the caller names the line or the request)."""
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise ValueError("no reviewer: every correction names who made it")
    given = (correction or "").strip() or None
    served_text = (served or "").strip()
    if verdict is None:
        if given is None:
            raise ValueError("no correction: send the right answer (label or answer)")
        verdict = "correct" if same_answer(given, served_text) else "wrong"
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r}: allowed: correct, wrong (or unsure, or empty, to skip it)")
    if verdict == "correct":
        if given is not None and not same_answer(given, served_text):
            raise ValueError(f"verdict correct, but the correction {given!r} differs from the answer served "
                             f"{served_text!r}: mark it wrong, or clear the correction")
        given = served_text
    elif given is None or same_answer(given, served_text):
        raise ValueError("verdict wrong needs the right answer in 'correction' (different from the answer served)")
    if not given:
        raise ValueError("the request was not answered: there is nothing to confirm")
    return Correction(request_id=request_id, model=model, reviewer=reviewer,
                      reviewed=time.time() if reviewed is None else reviewed, verdict=verdict, correction=given,
                      served=served, input=input, context=context, requested=requested, source=source,
                      comment=(comment or "").strip() or None)
