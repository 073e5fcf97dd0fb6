"""The request log as monitoring reads it: one served model's rows, as records.

The log is the server's (``taskfit.serve.log``): SQLite in WAL mode, so reading it here never
blocks a running server, and nothing here writes to it or migrates it. Text is read as it was
stored, redacted by the server unless ``log.redact`` was turned off.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.errors import DataError


@dataclass(frozen=True)
class LoggedRequest:
    """One logged request. ``text`` is the user's input (the last user message); ``answer`` is
    what is compared with the training answers: a classify reply's label (also when the reply
    was the fallback), otherwise the reply's text; ``reply`` is the reply's text as the client got
    it (the fallback answer, when the model fell back)."""

    id: str
    created: float  # seconds since the epoch
    status: int
    latency_ms: float | None
    text: str | None
    context: str | None
    answer: str | None  # None where the client asked for its own response_format (schema 4)
    confidence: float | None
    fallback: bool | None
    model: str | None = None
    version: str | None = None  # the registry version that answered (schema 3 and later)
    shadow_agreed: bool | None = None  # the shadow candidate gave the same answer (None: no shadow answer)
    reply: str | None = None

    @property
    def served(self) -> str | None:
        """The answer the client got: the reply's text (the fallback where the model fell back),
        else (a log row without it) ``answer``."""
        return self.reply if self.reply is not None else self.answer

    @property
    def answered(self) -> bool:
        return self.status == 200 and self.text is not None


def _text(content: Any) -> str | None:
    """A message's content: a string, or OpenAI's list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(parts) if parts else None
    return None


def request_input(stored: str | None) -> tuple[str | None, str | None]:
    """The stored request JSON → (the last user message's text, a qa passage sent inside it).

    The server stores the messages as a list; a mapping with ``messages`` (and ``context``) is
    read too, so a log written by another tool in OpenAI's request shape can be monitored."""
    if not stored:
        return None, None
    try:
        value = json.loads(stored)
    except (json.JSONDecodeError, TypeError):
        return None, None
    context = None
    if isinstance(value, dict):
        context = value.get("context") if isinstance(value.get("context"), str) else None
        value = value.get("messages")
    if not isinstance(value, list):
        return None, context
    users = [m for m in value if isinstance(m, dict) and m.get("role") == "user"]
    return (_text(users[-1].get("content")) if users else None), context


def open_log(path: Path) -> sqlite3.Connection:
    """Open an existing request log for reading; a clear error when there is none or it is not one."""
    from taskfit.serve.log import MIGRATIONS

    if not path.is_file():
        raise DataError(f"{path}: no request log there",
                        hint="serve the project with `taskfit serve DIR` (it logs every request to "
                             "DIR/requests.sqlite), or name the log with --log (serve.yaml's log.path)")
    try:
        db = sqlite3.connect(path)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: not a request log ({exc})",
                        hint="--log names the SQLite file `taskfit serve` writes (serve.yaml's log.path)") from None
    if "requests" not in tables:
        raise DataError(f"{path}: an SQLite file without the requests table, so not a taskfit request log",
                        hint="--log names the SQLite file `taskfit serve` writes (serve.yaml's log.path)")
    if version > len(MIGRATIONS):
        raise DataError(f"{path}: this request log has schema version {version}, written by a newer "
                        f"taskfit (this one reads up to {len(MIGRATIONS)})", hint="upgrade taskfit")
    return db


def _columns(db: sqlite3.Connection) -> set[str]:
    return {r[1] for r in db.execute("PRAGMA table_info(requests)")}


def _answered_only(db: sqlite3.Connection) -> str:
    """The SQL condition that leaves out shadow answers (schema 3 and later): they answered no one."""
    return " AND shadow_of IS NULL" if "shadow_of" in _columns(db) else ""


def models_in_log(db: sqlite3.Connection) -> Counter:
    """Requests per model name in the whole log."""
    sql = f"SELECT model, COUNT(*) FROM requests WHERE 1{_answered_only(db)} GROUP BY model"
    return Counter({m or "(none)": n for m, n in db.execute(sql)})


def unnamed_requests(db: sqlite3.Connection, since: float | None = None) -> int:
    """Requests since ``since`` logged with no model: refused before a model was read (a missing or
    wrong key, a body that is not a JSON object, one over the size limit)."""
    sql = f"SELECT COUNT(*) FROM requests WHERE model IS NULL AND created >= ?{_answered_only(db)}"
    return int(db.execute(sql, [since or 0.0]).fetchone()[0])


def read_requests(db: sqlite3.Connection, model: str, since: float | None = None) -> list[LoggedRequest]:
    """The requests to ``model`` since ``since`` (epoch seconds; None: all), oldest first; shadow
    answers are not requests (:func:`shadow_summary` reads them)."""
    if since is None:
        return select_requests(db, "model = ?", [model])
    return select_requests(db, "model = ? AND created >= ?", [model, since])


def read_request(db: sqlite3.Connection, request_id: str) -> LoggedRequest | None:
    """One request by its id (a chat completion's ``id``), or None when the log has no such row."""
    found = select_requests(db, "id = ?", [request_id])
    return found[0] if found else None


# Whether the shadow candidate answered a request as production did: its row (schema 3 and later)
# names the production row in shadow_of; None where no shadow answered.
_SHADOW_AGREED = ("(SELECT COALESCE(s.label, s.response) = COALESCE(requests.label, requests.response) "
                  "FROM requests s WHERE s.shadow_of = requests.id AND s.status = 200 LIMIT 1)")


def select_requests(db: sqlite3.Connection, where: str, args: list[Any]) -> list[LoggedRequest]:
    """The answered requests (never shadow answers) matching the SQL condition ``where``, oldest first."""
    columns = _columns(db)
    optional = [c for c in ("label", "context", "version", "response_format") if c in columns]  # schema 2 to 4
    select = ["id", "created", "status", "latency_ms", "confidence", "fallback", "request", "response", "model",
              *optional]
    exprs = list(select)
    if "shadow_of" in columns:
        select.append("shadow_agreed")
        exprs.append(_SHADOW_AGREED)
    sql = f"SELECT {', '.join(exprs)} FROM requests WHERE ({where}){_answered_only(db)} ORDER BY created"
    rows = []
    for values in db.execute(sql, args):
        row = dict(zip(select, values))
        text, inline_context = request_input(row["request"])
        label = row.get("label")
        fallback = None if row["fallback"] is None else bool(row["fallback"])
        # Without a stored label (a log from before schema 2), a fallback reply says nothing of the label.
        answer = label if label is not None else (None if fallback else row["response"])
        if row.get("response_format"):  # the client's own format, not the task's: no task answer
            answer = None
        shadow = row.get("shadow_agreed")
        rows.append(LoggedRequest(id=row["id"], created=float(row["created"]), status=int(row["status"]),
                                  latency_ms=row["latency_ms"], text=text,
                                  context=row.get("context") or inline_context, answer=answer,
                                  confidence=row["confidence"], fallback=fallback, model=row["model"],
                                  version=row.get("version"),
                                  shadow_agreed=None if shadow is None else bool(shadow), reply=row["response"]))
    return rows


@dataclass(frozen=True)
class ShadowSummary:
    """The candidate's shadow answers beside production's, for one served model."""

    candidate: str  # the candidate's version (the latest one, when it changed)
    answers: int  # shadow answers with a production answer to compare
    agree: int  # the same answer (classify: the same label)
    failed: int  # shadow requests that got no answer
    latency_p50_ms: float | None
    production_p50_ms: float | None

    @property
    def agreement(self) -> float | None:
        return self.agree / self.answers if self.answers else None


def shadow_summary(db: sqlite3.Connection, model: str, since: float | None = None) -> ShadowSummary | None:
    """How the candidate running in shadow beside ``model`` answered the same requests (None when
    the log holds no shadow answer)."""
    from taskfit.stats import percentile

    if "shadow_of" not in _columns(db):
        return None
    sql = ("SELECT s.status, s.version, s.latency_ms, p.latency_ms, COALESCE(s.label, s.response), "
           "COALESCE(p.label, p.response) FROM requests s JOIN requests p ON p.id = s.shadow_of "
           "WHERE s.model = ?" + (" AND s.created >= ?" if since is not None else "") + " ORDER BY s.created")
    rows = db.execute(sql, [model] + ([since] if since is not None else [])).fetchall()
    if not rows:
        return None
    answered = [r for r in rows if r[0] == 200]
    return ShadowSummary(candidate=rows[-1][1] or "?", answers=len(answered),
                         agree=sum(r[4] == r[5] for r in answered), failed=len(rows) - len(answered),
                         latency_p50_ms=percentile([r[2] for r in answered], 50) if answered else None,
                         production_p50_ms=percentile([r[3] for r in answered], 50) if answered else None)
