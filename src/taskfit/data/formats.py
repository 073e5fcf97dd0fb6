"""Every row shape a user brings → :class:`Example` or :class:`PreferencePair`.

Shapes (``data.format``; ``auto`` recognises each row by its keys):

===================  =========================================================================
messages             ``{"messages": [{"role", "content"}, ...]}`` (OpenAI/ChatML); ends with the assistant
prompt_completion    ``{"prompt", "completion"}``
alpaca               ``{"instruction", "input"?, "output"}``
sharegpt             ``{"conversations": [{"from": "human"|"gpt"|"system", "value"}, ...]}``
preference           ``{"prompt", "chosen", "rejected"}`` or OpenAI's
                     ``{"input": {"messages"}, "preferred_output": [...], "non_preferred_output": [...]}``
table                any row (CSV, TSV, JSONL, Parquet) read through ``data.columns``
===================  =========================================================================

Each task kind turns an answer value into the answer text (``Task.target_text``): for qa, a null
answer (or an empty answer cell in a table) becomes ``task.refusal``: the context does not hold it.

Every converter raises ``ValueError`` whose text names the field, for the quarantine.
"""

from __future__ import annotations

from typing import Any

from taskfit.config import ColumnMap, TaskSpec
from taskfit.records import Example, PreferencePair

_ROLES = {"system", "user", "assistant"}
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "chatgpt": "assistant", "bard": "assistant"}


def detect_format(obj: dict) -> str:
    if "messages" in obj and "preferred_output" not in obj:
        return "messages"
    if "conversations" in obj:
        return "sharegpt"
    if "chosen" in obj and "rejected" in obj or "preferred_output" in obj:
        return "preference"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
    keys = ", ".join(sorted(map(str, obj))[:8])
    raise ValueError(f"unrecognised row shape (keys: {keys}); expected messages, prompt/completion, "
                     "instruction/output, conversations, prompt/chosen/rejected, or set data.columns")


def _text(obj: dict, key: str, where: str | None = None, required: bool = True) -> str | None:
    value = obj.get(key)
    name = where or f"field '{key}'"
    if value is None:
        if required:
            raise ValueError(f"{name}: missing")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected text, got {type(value).__name__}")
    if required and not value.strip():
        raise ValueError(f"{name}: empty")
    return value


def _chat(messages: Any, field: str, roles: dict[str, str] | None = None,
          role_key: str = "role", content_key: str = "content") -> tuple[str | None, str, str]:
    """(system, user, assistant) from a single-exchange conversation."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"field '{field}': missing or not a non-empty list")
    system = None
    turns: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"{field}[{i}]: expected an object with {role_key} and {content_key}")
        raw_role = m.get(role_key)
        role = roles.get(raw_role) if roles is not None else (raw_role if raw_role in _ROLES else None)
        if role is None:
            allowed = ", ".join(sorted(roles or _ROLES))
            raise ValueError(f"{field}[{i}].{role_key}: got {raw_role!r}; allowed: {allowed}")
        content = _text(m, content_key, f"{field}[{i}].{content_key}")
        if role == "system":
            if i != 0:
                raise ValueError(f"{field}[{i}]: a system message must come first")
            system = content
        else:
            turns.append((role, content))
    if not turns or turns[-1][0] != "assistant":
        raise ValueError(f"field '{field}': the conversation must end with the assistant's answer")
    if len(turns) != 2 or turns[0][0] != "user":
        raise ValueError(f"field '{field}': expected one user turn followed by one assistant turn "
                         f"(got {len(turns)} turns; multi-turn rows are not supported yet)")
    return system, turns[0][1], turns[1][1]


def _target_text(value: Any, task: TaskSpec, field: str) -> str:
    """The assistant's answer as the task kind writes it (for ``extract`` a fields object
    serialised as JSON, for ``qa`` a null answer is the refusal)."""
    from taskfit.tasks import get_task

    try:
        return get_task(task.kind).target_text(task, value)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None


def _table(obj: dict, task: TaskSpec, cols: ColumnMap) -> dict[str, Any]:
    missing = [c for c in (cols.input, cols.target) if c and c not in obj]
    if cols.context and cols.context not in obj:
        missing.append(cols.context)
    if missing:
        raise ValueError(f"column(s) {', '.join(map(repr, missing))} named in data.columns are missing "
                         f"(row has: {', '.join(sorted(map(str, obj)))})")
    text = obj.get(cols.input)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"column '{cols.input}': missing or empty")
    context = None
    if cols.context:
        context = _text(obj, cols.context, f"column '{cols.context}'")
    return {"input": text, "target": _target_text(obj.get(cols.target), task, f"column '{cols.target}'"),
            "context": context, "system": _text(obj, cols.system, required=False) if cols.system else None}


def convert(obj: Any, task: TaskSpec, fmt: str, cols: ColumnMap | None, source: str,
            default_id: str) -> Example | PreferencePair:
    """One parsed row → a record. ``fmt`` is a ``data.format`` value (``auto`` allowed)."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if cols is not None:
        fmt = "table"
    elif fmt == "auto":
        fmt = detect_format(obj)
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    row_id = obj.get(cols.id) if cols is not None and cols.id else obj.get("id")
    row_id = str(row_id) if row_id not in (None, "") else default_id
    if cols is not None:
        meta = {**meta, **{k: v for k, v in obj.items() if k not in
                           {cols.input, cols.target, cols.context, cols.system, cols.id}
                           and isinstance(v, (str, int, float, bool))}}
    if fmt == "preference":
        return _preference(obj, row_id, source, meta)
    if fmt == "messages":
        system, user, answer = _chat(obj.get("messages"), "messages")
        context = obj.get("context") if isinstance(obj.get("context"), str) else None
        fields = {"input": user, "target": answer, "system": system, "context": context}
    elif fmt == "sharegpt":
        system, user, answer = _chat(obj.get("conversations"), "conversations", _SHAREGPT_ROLES,
                                     role_key="from", content_key="value")
        fields = {"input": user, "target": answer, "system": system, "context": None}
    elif fmt == "alpaca":
        instruction = _text(obj, "instruction")
        extra = _text(obj, "input", required=False) or ""
        fields = {"input": instruction + ("\n\n" + extra if extra.strip() else ""),
                  "target": _target_text(obj.get("output"), task, "field 'output'"),
                  "system": _text(obj, "system", required=False), "context": None}
    elif fmt == "prompt_completion":
        fields = {"input": _text(obj, "prompt"),
                  "target": _target_text(obj.get("completion"), task, "field 'completion'"),
                  "system": None, "context": None}
    elif fmt == "table" and cols is not None:
        fields = _table(obj, task, cols)
    else:
        raise ValueError(f"data.format {fmt!r} is not a known format")
    # Every format's answer as the task kind writes it (extract: the JSON record in its grammar's
    # form, so the model learns the answer constrained decoding allows).
    from taskfit.tasks import get_task

    fields["target"] = get_task(task.kind).target_text(task, fields["target"].strip())
    return Example(id=row_id, source=source, meta=meta, **fields)


def _preference(obj: dict, row_id: str, source: str, meta: dict) -> PreferencePair:
    if "preferred_output" in obj:  # OpenAI's preference fine-tuning shape
        inp = obj.get("input")
        if not isinstance(inp, dict):
            raise ValueError("field 'input': expected an object with messages")
        msgs = inp.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("field 'input.messages': missing or empty")
        system = msgs[0].get("content") if isinstance(msgs[0], dict) and msgs[0].get("role") == "system" else None
        users = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise ValueError("field 'input.messages': no user turn")
        prompt = _text(users[-1], "content", "input.messages[user].content")
        chosen = _first_assistant(obj.get("preferred_output"), "preferred_output")
        rejected = _first_assistant(obj.get("non_preferred_output"), "non_preferred_output")
    else:
        system = None
        prompt = _text(obj, "prompt")
        chosen = _text(obj, "chosen")
        rejected = _text(obj, "rejected")
    if chosen.strip() == rejected.strip():
        raise ValueError("fields 'chosen' and 'rejected' are identical: the pair teaches nothing")
    return PreferencePair(id=row_id, prompt=prompt, chosen=chosen, rejected=rejected, system=system,
                          source=source, meta=meta)


def _first_assistant(value: Any, field: str) -> str:
    if not isinstance(value, list) or not value or not isinstance(value[0], dict):
        raise ValueError(f"field '{field}': expected a list with one assistant message")
    return _text(value[0], "content", f"{field}[0].content")
