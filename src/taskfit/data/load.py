"""Load JSONL chat ``messages`` rows into :class:`Example` records, with line-numbered errors.

A row that cannot be used is never dropped silently: it goes to the quarantine with the file, the
line and the reason. Exact duplicates (same input and answer after whitespace and case folding)
are removed and counted. The counts always add up: read = kept + quarantined + duplicates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from taskfit.config import TaskSpec
from taskfit.errors import DataError
from taskfit.records import Example

_ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True)
class Quarantined:
    source: str  # "file:line"
    reason: str
    raw: str


@dataclass
class LoadResult:
    examples: list[Example]
    quarantined: list[Quarantined] = field(default_factory=list)
    duplicates: int = 0
    read: int = 0

    def summary(self) -> str:
        return (f"{self.read} rows read = {len(self.examples)} kept + {len(self.quarantined)} "
                f"quarantined + {self.duplicates} exact duplicates removed")


def _row_to_example(obj: object, task: TaskSpec, source: str, line: int) -> Example:
    """Turn one parsed JSON row into an Example or raise ValueError naming the field."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("field 'messages': missing or not a non-empty list")
    system = None
    users: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}]: expected an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in _ROLES:
            raise ValueError(f"messages[{i}].role: got {role!r}; allowed: system, user, assistant")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"messages[{i}].content: missing or empty")
        if role == "system":
            if i != 0:
                raise ValueError(f"messages[{i}]: a system message must come first")
            system = content
        elif role == "user":
            users.append(content)
    if messages[-1].get("role") != "assistant":
        raise ValueError("messages: the conversation must end with the assistant's answer")
    if len(users) != 1 or len(messages) - (system is not None) != 2:
        raise ValueError("messages: expected one user turn followed by one assistant turn "
                         "(multi-turn rows are not supported for this task kind)")
    target = messages[-1]["content"].strip()
    if task.kind == "classify" and target not in (task.labels or []):
        raise ValueError(f"messages[-1].content: label {target!r} is not in task.labels "
                         f"({', '.join(task.labels or [])})")
    row_id = obj.get("id")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    return Example(id=str(row_id) if row_id is not None else f"{Path(source).name}:{line}",
                   input=users[0], target=target, system=system, source=f"{source}:{line}",
                   meta=meta)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def load_jsonl(path: Path, task: TaskSpec) -> LoadResult:
    """Read ``path`` (JSONL chat rows) for ``task``. Raises :class:`DataError` only when the file
    itself cannot be read or holds no usable row; bad rows are quarantined with their reasons."""
    if not path.exists():
        raise DataError(f"{path}: no such file", hint="check data.train in taskfit.yaml")
    result = LoadResult(examples=[])
    seen: set[tuple[str, str]] = set()
    ids: set[str] = set()
    with path.open("rb") as f:
        for line_no, raw_bytes in enumerate(f, start=1):
            if not raw_bytes.strip():
                continue
            result.read += 1
            where = f"{path}:{line_no}"
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                result.quarantined.append(Quarantined(where, f"not UTF-8 (byte {exc.start})",
                                                      raw_bytes.decode("utf-8", "replace")))
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                result.quarantined.append(Quarantined(where, f"invalid JSON: {exc.msg} at column {exc.colno}", raw))
                continue
            try:
                ex = _row_to_example(obj, task, str(path), line_no)
            except ValueError as exc:
                result.quarantined.append(Quarantined(where, str(exc), raw))
                continue
            key = (_norm(ex.input), _norm(ex.target))
            if key in seen:
                result.duplicates += 1
                continue
            if ex.id in ids:
                result.quarantined.append(Quarantined(where, f"field 'id': {ex.id!r} already used", raw))
                continue
            seen.add(key)
            ids.add(ex.id)
            result.examples.append(ex)
    if not result.examples:
        reasons = "; ".join(f"{q.source}: {q.reason}" for q in result.quarantined[:3])
        raise DataError(f"{path}: no usable rows ({result.summary()})" + (f"; first problems: {reasons}" if reasons else ""),
                        hint='each line must be {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}')
    return result


def write_quarantine(items: list[Quarantined], path: Path) -> None:
    """Write quarantined rows as JSONL: source, reason and the raw line."""
    with path.open("w", encoding="utf-8") as f:
        for q in items:
            f.write(json.dumps({"source": q.source, "reason": q.reason, "raw": q.raw.rstrip("\n")},
                               ensure_ascii=False) + "\n")
