"""Every row shape a user brings → :class:`Example` or :class:`PreferencePair`.

Shapes (``data.format``; ``auto`` recognises each row by its keys):

===================  =========================================================================
messages             ``{"messages": [{"role", "content", "weight"?}, ...]}`` (OpenAI's fine-tuning file,
                     ChatML): one learnt answer to the first user message (see :func:`_chat`)
chat_log             a logged chat completion: ``{"request": {"messages"}, "response": {"choices"}}``
                     (the stored-completion objects of OpenAI's API) or ``{"input": ..., "output": ...}``
                     (OpenPipe's request-log export); the first choice's message is the answer
prompt_completion    ``{"prompt", "completion"}``
alpaca               ``{"instruction", "input"?, "output"}``
sharegpt             ``{"conversations": [{"from": "human"|"gpt"|"system", "value"}, ...]}``
preference           ``{"prompt", "chosen", "rejected"}`` or OpenAI's
                     ``{"input": {"messages"}, "preferred_output": [...], "non_preferred_output": [...]}``
table                any row (CSV, TSV, JSONL, Parquet, Excel) read through ``data.columns``
===================  =========================================================================

Each task kind turns an answer value into the answer text (``Task.target_text``): for qa, a null
answer (or an empty answer cell in a table) becomes ``task.refusal``: the context does not hold it.

Every converter raises ``ValueError`` whose text names the field, for the quarantine: function
calling (``tools``, ``functions``, tool messages), image parts, a refusal or a cut answer included.
"""

from __future__ import annotations

from typing import Any

from taskfit.config import ColumnMap, TaskSpec
from taskfit.records import Example, PreferencePair

# OpenAI's chat roles; "developer" is what newer OpenAI models call the system message.
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "chatgpt": "assistant", "bard": "assistant"}
_TOOL_ROLES = {"tool", "function"}  # the answer of a tool, in a conversation that calls one
_TOOLS = ("tools", "functions")  # the keys under which OpenAI rows and requests declare tools
_LOGGED = (("request", "response"), ("input", "output"))  # a logged completion's keys (OpenAI's objects, OpenPipe's)
# A served request is one user message: what an answer replies to must be in it.
_ONE_MESSAGE = "a served request is one user message: write what the answer needs into it"


def detect_format(obj: dict) -> str:
    if "preferred_output" in obj:
        return "preference"
    if "messages" in obj:
        return "messages"
    if "conversations" in obj:
        return "sharegpt"
    if "chosen" in obj and "rejected" in obj:
        return "preference"
    if any(isinstance(obj.get(a), dict) and isinstance(obj.get(b), dict) for a, b in _LOGGED):
        return "chat_log"  # objects, not text: a table may name its text columns request and response
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
    keys = ", ".join(sorted(map(str, obj))[:8])
    raise ValueError(f"unrecognised row shape (keys: {keys}); expected messages, prompt/completion, "
                     "instruction/output, conversations, prompt/chosen/rejected, request/response, "
                     "or set data.columns")


def _text(obj: dict, key: str, where: str | None = None, required: bool = True) -> str | None:
    value = obj.get(key)
    name = where or f"field '{key}'"
    if value is None:
        if required:
            raise ValueError(f"{name}: missing")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected text, got {type(value).__name__}")
    if required and not _visible(value):
        raise ValueError(f"{name}: empty" if not value.strip() else
                         f"{name}: no character one can see ({value[:20]!r}: control or zero-width characters only)")
    return value


def _visible(text: str) -> bool:
    """Whether a text holds a character a person sees (not spaces, NULs or zero-width marks alone)."""
    stripped = text.strip()
    return bool(stripped) and (stripped.isprintable() or any(c.isprintable() and not c.isspace() for c in stripped))


def _no_tools(obj: dict, prefix: str = "") -> None:
    """Refuse function calling: a row or request that declares tools (OpenAI's ``tools``, or the
    older ``functions``). An empty list declares none (OpenAI's own preference example carries
    ``"tools": []`` and ``parallel_tool_calls``, which means nothing without tools)."""
    for key in _TOOLS:
        if obj.get(key):
            n = len(obj[key]) if isinstance(obj[key], list) else 1
            raise ValueError(f"field '{prefix}{key}': function calling ({n} tool definition{'s' * (n != 1)}): "
                             "a taskfit task answers in text, and a model trained with tools in its prompt learnt to "
                             "call them; keep such rows out of this task's data")


def _content(m: dict, key: str, where: str) -> str:
    """A message's text: a string, or OpenAI's list of content parts when every part is text
    (joined as the API joins them); an image, audio or file part cannot be learnt from text."""
    value = m.get(key)
    if isinstance(value, list):
        kinds = [p.get("type") if isinstance(p, dict) else type(p).__name__ for p in value]
        other = [k for k in kinds if k != "text"]
        if other:
            raise ValueError(f"{where}: a content part of type {other[0]!r}: taskfit tasks read and write text")
        value = "".join(p["text"] if isinstance(p.get("text"), str) else "" for p in value)
        m = {key: value}
    if value is None and m.get("refusal"):
        raise ValueError(f"{where}: null, with a refusal ({str(m['refusal'])[:80]!r}): the model refused, "
                         "there is no answer to learn")
    return _text(m, key, where)  # type: ignore[return-value]


def _turns(messages: Any, field: str, roles: dict[str, str], role_key: str,
           content_key: str) -> tuple[str | None, list[tuple[str, str, int]]]:
    """(system, [(role, content, weight), ...]) of a conversation, checked message by message.
    ``weight`` is OpenAI's per-message training switch: 0 or 1 on assistant messages, 1 when absent."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"field '{field}': missing or not a non-empty list")
    system = None
    turns: list[tuple[str, str, int]] = []
    for i, m in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise ValueError(f"{where}: expected an object with {role_key} and {content_key}")
        raw_role = m.get(role_key)
        if not isinstance(raw_role, (str, type(None))):  # a list or object: no role to look up
            raise ValueError(f"{where}.{role_key}: got {raw_role!r}; allowed: {', '.join(sorted(roles))}")
        if raw_role in _TOOL_ROLES or m.get("tool_calls") or m.get("function_call"):
            raise ValueError(f"{where}: function calling (a {'tool answer' if raw_role in _TOOL_ROLES else 'tool call'}"
                             "): a taskfit task answers in text; keep conversations that call tools out of "
                             "this task's data")
        role = roles.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise ValueError(f"{where}.{role_key}: got {raw_role!r}; allowed: {', '.join(sorted(roles))}")
        content = _content(m, content_key, f"{where}.{content_key}")
        weight = m.get("weight", 1)
        if "weight" in m and (role != "assistant" or weight not in (0, 1) or isinstance(weight, bool)):
            raise ValueError(f"{where}.weight: got {weight!r}; OpenAI's weight is 0 or 1, on assistant messages only")
        if role == "system":
            if i != 0:
                raise ValueError(f"{where}: a system message must come first")
            system = content
        else:
            turns.append((role, content, weight))
    return system, turns


def _chat(messages: Any, field: str, roles: dict[str, str] = _ROLES,
          role_key: str = "role", content_key: str = "content") -> tuple[str | None, str, str]:
    """(system, user, assistant) of a conversation that teaches one answer to one input.

    As OpenAI trains, the answers learnt are the assistant messages whose weight is not 0. A row
    imports when exactly one answer is learnt and it answers the first user message: the turns
    after it do not change it (each token sees only what comes before) and teach nothing. Any other
    conversation is quarantined, never cut: an answer learnt after earlier turns replies to them,
    and a served request is one user message, so dropping them would teach what serving never asks.
    """
    system, turns = _turns(messages, field, roles, role_key, content_key)
    answers = [k for k, (role, _, weight) in enumerate(turns) if role == "assistant" and weight]
    if not answers:
        if any(role == "assistant" for role, _, _ in turns):
            raise ValueError(f"field '{field}': every assistant message has weight 0: nothing is learnt from this row")
        raise ValueError(f"field '{field}': the conversation must end with the assistant's answer")
    if len(answers) > 1:
        raise ValueError(f"field '{field}': {len(answers)} assistant answers are learnt (weight absent or 1): a "
                         "taskfit task learns one answer to one input; split the conversation into rows of one "
                         "exchange (system, user, assistant), or set weight 0 on the answers not to learn")
    k = answers[0]
    if k != 1 or turns[0][0] != "user":
        raise ValueError(f"field '{field}': the learnt answer follows {k} earlier turns, which it replies to; "
                         f"{_ONE_MESSAGE}")
    return system, turns[0][1], turns[1][1]


def _prompt(messages: Any, field: str) -> tuple[str | None, str]:
    """(system, user) of a conversation that is only a question (a preference pair's input)."""
    system, turns = _turns(messages, field, _ROLES, "role", "content")
    if not turns or turns[-1][0] != "user":
        raise ValueError(f"field '{field}': must end with the user message the answers reply to")
    if len(turns) > 1:
        raise ValueError(f"field '{field}': the answers follow {len(turns) - 1} earlier turns, which they reply "
                         f"to; {_ONE_MESSAGE}")
    return system, turns[0][1]


def _chat_log(obj: dict) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """A logged chat completion: the request (its messages) and the response (its first choice).
    Returns the example's fields, the completion's id, and what goes to the row's meta."""
    req_key, res_key = next((a, b) for a, b in _LOGGED if isinstance(obj.get(a), dict))
    request, response = obj.get(req_key), obj.get(res_key)
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        raise ValueError(f"field '{req_key}': expected the request, an object with messages")
    if not isinstance(response, dict):
        raise ValueError(f"field '{res_key}': expected the response, an object with choices")
    if response.get("error"):
        error = response["error"]
        raise ValueError(f"field '{res_key}.error': the logged request failed "
                         f"({error.get('message') if isinstance(error, dict) else error!s:.120})")
    _no_tools(request, f"{req_key}.")
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError(f"field '{res_key}.choices': missing or empty")
    choice = choices[0]
    finish = choice.get("finish_reason")
    if finish == "length":
        raise ValueError(f"field '{res_key}.choices[0]': the answer was cut at the token limit (finish_reason "
                         "length): an incomplete answer")
    if finish == "content_filter":
        raise ValueError(f"field '{res_key}.choices[0]': the answer was withheld by the content filter")
    message = choice.get("message")
    if not isinstance(message, dict):
        raise ValueError(f"field '{res_key}.choices[0].message': missing")
    system, user, answer = _chat([*request["messages"], {**message, "role": message.get("role", "assistant")}],
                                 f"{req_key}.messages + {res_key}.choices[0].message")
    model = response.get("model") or request.get("model")
    context = obj.get("context") if isinstance(obj.get("context"), str) else None
    log_id = response.get("id") if isinstance(response.get("id"), str) else None
    return ({"input": user, "target": answer, "system": system, "context": context}, log_id,
            {"model": model} if isinstance(model, str) else {})


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
        _no_tools(obj)
        if "messages" not in obj:  # a row of another shape in a file of chat rows
            keys = ", ".join(map(str, list(obj)[:8])) or "none"
            raise ValueError(f"field 'messages': missing: this row has the keys {keys}, where the file's rows "
                             "are chat rows (messages); write it as one, or give the file one shape")
        system, user, answer = _chat(obj.get("messages"), "messages")
        context = obj.get("context") if isinstance(obj.get("context"), str) else None
        fields = {"input": user, "target": answer, "system": system, "context": context}
    elif fmt == "sharegpt":
        system, user, answer = _chat(obj.get("conversations"), "conversations", _SHAREGPT_ROLES,
                                     role_key="from", content_key="value")
        fields = {"input": user, "target": answer, "system": system, "context": None}
    elif fmt == "chat_log":
        fields, log_id, logged = _chat_log(obj)
        row_id = str(obj["id"]) if obj.get("id") not in (None, "") else log_id or default_id
        meta = {**logged, **meta}
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

    target = fields["target"]
    # A label keeps its spaces ("Travel "): the scan reads it as the label and counts the spelling.
    kept = target if task.kind == "classify" and target.strip() else target.strip()
    fields["target"] = get_task(task.kind).target_text(task, kept)
    return Example(id=row_id, source=source, meta=meta, **fields)


def _preference(obj: dict, row_id: str, source: str, meta: dict) -> PreferencePair:
    if "preferred_output" in obj:  # OpenAI's preference (DPO) fine-tuning shape
        inp = obj.get("input")
        if not isinstance(inp, dict):
            raise ValueError("field 'input': expected an object with messages")
        _no_tools(inp, "input.")
        system, prompt = _prompt(inp.get("messages"), "input.messages")
        chosen = _answer(obj.get("preferred_output"), "preferred_output")
        rejected = _answer(obj.get("non_preferred_output"), "non_preferred_output")
        names = "'preferred_output' and 'non_preferred_output'"
    else:
        system = None
        prompt = _text(obj, "prompt")
        chosen = _text(obj, "chosen")
        rejected = _text(obj, "rejected")
        names = "'chosen' and 'rejected'"
    if chosen.strip() == rejected.strip():
        raise ValueError(f"fields {names} are identical: the pair teaches nothing")
    return PreferencePair(id=row_id, prompt=prompt, chosen=chosen, rejected=rejected, system=system,
                          source=source, meta=meta)


def _answer(value: Any, field: str) -> str:
    """The text of a list holding one assistant message (a preference pair's output)."""
    system, turns = _turns(value, field, _ROLES, "role", "content")
    if system is not None or len(turns) != 1 or turns[0][0] != "assistant":
        raise ValueError(f"field '{field}': expected a list with one assistant message")
    return turns[0][1]
