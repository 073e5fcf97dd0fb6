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
    was the fallback), otherwise the reply's text."""

    id: str
    created: float  # seconds since the epoch
    status: int
    latency_ms: float | None
    text: str | None
    context: str | None
    answer: str | None
    confidence: float | None
    fallback: bool | None
    model: str | None = None
    shadow_agreed: bool | None = None  # a shadow version's answer agreed (None: no shadow, or not logged)

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


def models_in_log(db: sqlite3.Connection) -> Counter:
    """Requests per model name in the whole log."""
    return Counter({m or "(none)": n for m, n in db.execute("SELECT model, COUNT(*) FROM requests GROUP BY model")})


def read_requests(db: sqlite3.Connection, model: str, since: float | None = None) -> list[LoggedRequest]:
    """The requests to ``model`` since ``since`` (epoch seconds; None: all), oldest first."""
    if since is None:
        return select_requests(db, "model = ?", [model])
    return select_requests(db, "model = ? AND created >= ?", [model, since])


def read_request(db: sqlite3.Connection, request_id: str) -> LoggedRequest | None:
    """One request by its id (a chat completion's ``id``), or None when the log has no such row."""
    found = select_requests(db, "id = ?", [request_id])
    return found[0] if found else None


def select_requests(db: sqlite3.Connection, where: str, args: list[Any]) -> list[LoggedRequest]:
    """The rows matching the SQL condition ``where``, oldest first."""
    columns = {r[1] for r in db.execute("PRAGMA table_info(requests)")}
    # schema 2 and later; shadow_agreed where a log marks shadow disagreements
    optional = [c for c in ("label", "context", "shadow_agreed") if c in columns]
    select = ["id", "created", "status", "latency_ms", "confidence", "fallback", "request", "response", "model",
              *optional]
    rows = []
    for values in db.execute(f"SELECT {', '.join(select)} FROM requests WHERE {where} ORDER BY created", args):
        row = dict(zip(select, values))
        text, inline_context = request_input(row["request"])
        label = row.get("label")
        fallback = None if row["fallback"] is None else bool(row["fallback"])
        # Without a stored label (a log from before schema 2), a fallback reply says nothing of the label.
        answer = label if label is not None else (None if fallback else row["response"])
        shadow = row.get("shadow_agreed")
        rows.append(LoggedRequest(id=row["id"], created=float(row["created"]), status=int(row["status"]),
                                  latency_ms=row["latency_ms"], text=text,
                                  context=row.get("context") or inline_context, answer=answer,
                                  confidence=row["confidence"], fallback=fallback, model=row["model"],
                                  shadow_agreed=None if shadow is None else bool(shadow)))
    return rows
