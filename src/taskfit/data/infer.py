"""Propose a task from a bare data file: its kind, column mapping, labels or schema, and why.

``taskfit init DIR --from FILE`` writes the proposal as a ``taskfit.yaml``; ``taskfit data check
FILE`` checks it in memory. Both call :func:`propose`, so what one proposes the other checks.

One streaming pass keeps a few counters per column (never the rows): how many values are null,
text, JSON objects or something else, their lengths, up to ``LABEL_CAP`` distinct short values,
and for objects their keys and value types. From those, each column gets a role:

============  =================================================================================
``object``    every value a JSON object (a dict, or a CSV cell holding one): an extract target
``label``     few distinct short one-line texts that repeat: a classify target (or metadata)
``text``      free text: an input, a context, a qa answer or a generate reply
``id``        named like an id (id, uuid, ``*_id``): never a target
``other``     numbers, lists, mixed values: never chosen, named in errors
============  =================================================================================

The choice then reads like a person's: a column of objects is extracted; a passage-named text
column makes qa; two free-text columns are an input and its reply; one free-text column beside a
label column is classified. Names break ties (``label``, ``answer``, ``response`` are targets;
``text``, ``question``, ``instruction`` inputs); when they cannot, the proposal is refused with a
:class:`DataError` that lists every column with its role and the flags that settle it.
"""

from __future__ import annotations

import heapq
import json
import shlex
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

from taskfit.config import PrivacySpec, TaskKind, TaskSpec, literal_prompt
from taskfit.data import pii
from taskfit.data.formats import convert, detect_format
from taskfit.data.read import read_rows
from taskfit.errors import ConfigError, DataError
from taskfit.records import Example, PreferencePair
from taskfit.rendering import user_text

INFERRED = ("classify", "extract", "qa", "generate")  # the kinds a data file can be recognised as
# More distinct values than this and a column is not a label set anyone would list in taskfit.yaml.
LABEL_CAP = 1000
# A label is a short name: the longest in the shared sets is 25 characters (clinc150), while the
# shortest free text that repeats, qa passages, runs to hundreds.
LABEL_MAX_CHARS = 64

TARGET_NAMES = ("target", "label", "labels", "class", "category", "intent", "output", "answer",
                "answers", "response", "reply", "completion", "fields", "entities", "slots", "y")
INPUT_NAMES = ("input", "text", "question", "query", "prompt", "instruction", "message", "utterance",
               "sentence", "ticket", "request", "body", "content", "x")
CONTEXT_NAMES = ("context", "passage", "document", "article", "paragraph", "evidence")
ID_NAMES = ("id", "uuid", "guid")
Role = Literal["object", "label", "text", "id", "other"]


def _prose(text: str) -> bool:
    """Whether a text value reads as words: at least 3 letters, and letters at least half of its
    other characters (TCK-10000 and 2025-03-01 09:00 do not; a sentence in any script does)."""
    letters = sum(c.isalpha() for c in text)
    return letters >= 3 and 2 * letters >= len(text) - text.count(" ")


def _index_column(name: str) -> bool:
    """A column with no name, or pandas' name for one (``Unnamed: 0``): the row numbers
    ``DataFrame.to_csv`` writes unless told ``index=False``."""
    return not name.strip() or name.lower().startswith("unnamed:")


def _json_object(text: str) -> dict | None:
    """The dict a text cell holds (``{"city": "Oslo"}`` in a CSV), or None."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _compact(text: str, value: Any) -> bool:
    """Whether ``text``, which holds the JSON ``value``, writes it compactly (no space after ','
    or ':', as ``json.dumps(..., separators=(",", ":"))`` does)."""
    stripped = text.strip()
    return stripped in (json.dumps(value, ensure_ascii=False, separators=(",", ":")),
                        json.dumps(value, separators=(",", ":")))


_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
               (list, "array"), (dict, "object"), (type(None), "null"))


def _json_type(value: Any) -> str:
    return next(name for t, name in _JSON_TYPES if isinstance(value, t))  # bool before int


SHARED_WORDS = 8  # the longest opening or closing a column's texts are checked for sharing
# The longest values (by characters) a column keeps: `init --from` counts their tokens to size
# eval.max_new_tokens (data check then counts every answer's, and warns of any over it).
LONGEST_KEPT = 32
# The answer budget (eval.max_new_tokens) that holds an answer of so many tokens: a quarter more,
# rounded up to a multiple of 16. `init --from` writes it where the default would cut the longest
# answer, and data check proposes it where the project's does.
BUDGET_HEADROOM = 1.25


def budget_for(tokens: int) -> int:
    """eval.max_new_tokens with room to spare for an answer of ``tokens`` (end of turn included)."""
    from taskfit.config import EvalSpec

    most = next(m.le for m in EvalSpec.model_fields["max_new_tokens"].metadata if hasattr(m, "le"))
    return min(-(-int(tokens * BUDGET_HEADROOM) // 16) * 16, most)


ABSENT_NOTED = 3  # rows named where an answer lacks a key the others write


def _common(prefix: list[str], words: list[str]) -> list[str]:
    """The words ``prefix`` and ``words`` start with alike."""
    n = 0
    while n < len(prefix) and n < len(words) and prefix[n] == words[n]:
        n += 1
    return prefix[:n]


@dataclass
class ColumnStats:
    """Counters for one column over every row, in constant memory (``LABEL_CAP`` values at most)."""

    name: str
    rows: int = 0  # rows holding the key
    nulls: int = 0  # null, or blank text (a CSV cell cannot hold a null)
    texts: int = 0
    objects: int = 0
    other: Counter = field(default_factory=Counter)  # type name -> values
    max_chars: int = 0
    multiline: int = 0
    words: tuple[int, int] | None = None  # (fewest, most) words in a text value
    prose: int = 0  # text values mostly letters (not codes, ids or timestamps: see _prose)
    counts: int = 0  # values that are whole numbers written with digits alone (row numbers, if all are)
    values: Counter | None = field(default_factory=Counter)  # None once past LABEL_CAP distinct
    keys: dict[str, Counter] = field(default_factory=dict)  # objects: key -> JSON type -> rows
    # objects: key -> JSON type -> its first value (as JSON) and where it was read (file:line)
    first_of: dict[str, dict[str, tuple[str, str | None]]] = field(default_factory=dict)
    phrases: Counter = field(default_factory=Counter)  # watched phrase -> text values holding it
    # text cells that open like a JSON object and do not parse (a record cut short): a column of
    # objects and these alone holds objects, and data check quarantines these cells' rows
    broken: int = 0
    first_broken: str | None = None  # file:line of the first
    # the words every text value so far opens and ends with (a house style's greeting, sign-off)
    opening: list[str] | None = None
    closing: list[str] | None = None
    # objects: key -> the first rows (file:line) whose object lacks it, ABSENT_NOTED at most
    absent: dict[str, list[str]] = field(default_factory=dict)
    first_objects: list[str] = field(default_factory=list)  # the first ABSENT_NOTED objects' rows (file:line)
    written: int = 0  # objects written as JSON text (a chat answer, a CSV cell), not as a JSONL object
    compact: int = 0  # of those, written compactly: no space after ',' or ':' (task.json_style compact)
    # the LONGEST_KEPT longest values as (characters, row, file:line, value): the answers init
    # measures in tokens to size eval.max_new_tokens
    longest: list[tuple[int, int, str, Any]] = field(default_factory=list)

    def add(self, value: Any, watch: Sequence[str] = (), where: str | None = None) -> None:
        self.rows += 1
        if value is None or isinstance(value, str) and not value.strip():
            self.nulls += 1
            return
        self.counts += (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.strip().isdigit())
        obj = value if isinstance(value, dict) else _json_object(value) if isinstance(value, str) else None
        if isinstance(value, (str, dict)):
            chars = len(value) if isinstance(value, str) else len(json.dumps(value, ensure_ascii=False))
            heapq.heappush(self.longest, (chars, self.rows, where or "", value))
            if len(self.longest) > LONGEST_KEPT:
                heapq.heappop(self.longest)
        if obj is not None:
            for key, noted in self.absent.items():
                if key not in obj and len(noted) < ABSENT_NOTED:
                    noted.append(where or "a row")
            for key in obj:
                if key not in self.absent:  # every object before it lacks it
                    self.absent[key] = list(self.first_objects)
            if len(self.first_objects) < ABSENT_NOTED:
                self.first_objects.append(where or "a row")
            self.objects += 1
            if isinstance(value, str):
                self.written += 1
                self.compact += _compact(value, obj)
            for key, item in obj.items():
                kind = _json_type(item)
                self.keys.setdefault(key, Counter())[kind] += 1
                if kind not in self.first_of.setdefault(key, {}):  # shown in init's output: redacted
                    self.first_of[key][kind] = (pii.redact(json.dumps(item, ensure_ascii=False)[:40]), where)
            return
        if isinstance(value, str) and value.lstrip().startswith("{"):  # counted as text too, below
            self.broken += 1
            self.first_broken = self.first_broken or where
        if not isinstance(value, str):
            self.other[type(value).__name__] += 1
            return
        text = value.strip()  # targets are stripped when rows are read (formats.convert)
        self.texts += 1
        self.prose += _prose(text)
        self.max_chars = max(self.max_chars, len(text))
        self.multiline += "\n" in text
        n = len(text.split())
        self.words = (min(self.words[0], n), max(self.words[1], n)) if self.words else (n, n)
        lower = text.lower()
        self.phrases.update(p for p in watch if p.lower() in lower)
        words = text.split()
        self.opening = words[:SHARED_WORDS] if self.opening is None else _common(self.opening, words)
        self.closing = (words[-SHARED_WORDS:][::-1] if self.closing is None
                        else _common(self.closing, words[::-1]))
        if self.values is not None:
            self.values[text] += 1
            if len(self.values) > LABEL_CAP:
                self.values = None

    def shared_phrases(self) -> list[str]:
        """The opening and the closing every text value shares, of two words or more ([] when
        none): what a house style writes in every reply."""
        out = []
        if self.opening and len(self.opening) >= 2:
            out.append(" ".join(self.opening))
        if self.closing and len(self.closing) >= 2:
            out.append(" ".join(self.closing[::-1]))
        return out

    @property
    def filled(self) -> int:
        return self.rows - self.nulls

    @property
    def role(self) -> Role:
        name = self.name.lower()
        if name in ID_NAMES or name.endswith(("_id", "-id", " id", ".id")) or self.row_numbers:
            return "id"
        if self.other or not self.filled or self.objects and self.texts > self.broken:
            return "other"
        if self.objects:
            return "object"
        if (self.values is not None and len(self.values) < self.texts and len(self.values) <= max(2, self.texts // 2)
                and self.max_chars <= LABEL_MAX_CHARS and not self.multiline):
            return "label"
        return "text"

    @property
    def row_numbers(self) -> bool:
        """A column with no name (or pandas' ``Unnamed: 0``) holding whole numbers alone: the row
        numbers ``DataFrame.to_csv`` writes unless told ``index=False``."""
        return _index_column(self.name) and self.filled > 0 and self.counts == self.filled

    @property
    def codes(self) -> bool:
        """Text that is mostly not words (TCK-10000, 2025-03-01 09:00): metadata beside the text
        to learn from, rather than a candidate for it."""
        return self.prose * 5 < self.texts

    def describe(self) -> str:
        """The column as an error message lists it: its name and what it holds."""
        role = self.role
        what = {"object": "JSON objects", "text": "codes, numbers or times" if self.codes else "free text", "id": "ids",
                "label": f"{len(self.values or ())} distinct short values"}.get(role)
        if what is None:
            names = {"int": "numbers", "float": "numbers", "bool": "true/false", "list": "lists"}
            kinds = list(dict.fromkeys(names.get(t, t) for t in self.other))
            kinds += (["JSON objects"] if self.objects else []) + (["text"] if self.texts else [])
            what = "mixed " + " and ".join(kinds) if len(kinds) > 1 else f"{', '.join(kinds) or 'nothing but nulls'}"
        return f"{self.name if self.name.strip() else 'the column with no name'} ({what})"


@dataclass(frozen=True)
class Proposal:
    """What :func:`propose` found: every ``taskfit.yaml`` value it sets, and the reasons in words."""

    path: Path
    rows: int  # rows read as objects (unreadable lines are left for data check to quarantine)
    kind: TaskKind
    method: Literal["lora", "dpo"]
    format: str  # data.format
    columns: dict[str, str] | None  # data.columns
    labels: dict[str, int] = field(default_factory=dict)  # classify: label -> rows, most first
    schema: dict[str, Any] | None = None  # extract
    reply_words: tuple[int, int] | None = None  # generate: fewest and most words in a reference reply
    reply_phrases: list[str] = field(default_factory=list)  # generate: the opening / closing every reply shares
    phrases: dict[str, int] = field(default_factory=dict)  # watched phrase -> references holding it
    reasons: list[str] = field(default_factory=list)
    unreadable: int = 0  # lines that are not a row (data check quarantines them)
    first_unreadable: str | None = None  # the first of them, as file:line
    # chat rows: the system prompt most of them carry, as task.system_prompt writes it
    system_prompt: str | None = None
    regions: list[str] | None = None  # data.privacy.regions, where the data's phone numbers say (see _regions)
    json_style: Literal["spaced", "compact"] = "spaced"  # extract: task.json_style, as most answers are written
    # the longest answers by characters, as (file:line, value), longest first: init counts their
    # tokens to size eval.max_new_tokens (fitted_budget in taskfit.project)
    longest: list[tuple[str, Any]] = field(default_factory=list)
    # the longest user turns (a qa table's: its longest passage with its longest question), as
    # (file:line, text): init holds them with the answer budget in train.max_seq_length
    prompts: list[tuple[str, str]] = field(default_factory=list)
    max_new_tokens: int | None = None  # eval.max_new_tokens, where the template's would cut the longest answer
    max_seq_length: int | None = None  # train.max_seq_length, where the template's would cut the longest prompt

    def summary(self) -> list[str]:
        """What was proposed and why, as lines for a terminal."""
        method = " (train.method dpo: preference pairs)" if self.method == "dpo" else ""
        lines = [f"proposed task kind: {self.kind}{method}, from {self.path} ({self.rows} rows)"]
        if self.unreadable:
            n = self.unreadable
            lines.append(f"  - {n} {'line is' if n == 1 else 'lines are'} not a readable row ({self.first_unreadable}"
                         f"{', ...' if n > 1 else ''}): data check quarantines {'it' if n == 1 else 'them'} and "
                         "says why")
        if self.columns:
            lines.append("data.columns: " + ", ".join(f"{k}={v}" for k, v in self.columns.items()))
        elif self.format != "auto":
            lines.append(f"data.format: {self.format}")
        lines += [f"  - {reason}" for reason in self.reasons]
        if self.labels:
            lines.append(f"labels ({len(self.labels)}, rows each): "
                         + ", ".join(f"{lab} {n}" for lab, n in self.labels.items()))
        if self.schema:
            props = self.schema["properties"]
            lines.append(f"schema ({len(props)} properties): " + ", ".join(
                f"{k} {'|'.join(v['type']) if isinstance(v['type'], list) else v['type']}" for k, v in props.items()))
        return lines


def infer_schema(stats: ColumnStats) -> tuple[dict[str, Any], str]:
    """A JSON schema for the objects of ``stats``, and a sentence saying how ``required`` was set.

    Properties follow the order keys were first seen; each gets the JSON types its values had
    (``integer`` widened to ``number`` when both occur; ``null`` kept as a type of its own).

    ``required`` lists the keys present in every row, not none at all: a key the data always
    fills is one the answer must have, and naming it lets constrained decoding always write it
    and data check flag a later row that lacks it; a key some rows leave out stays optional, so
    the schema never forces the model to invent a value. ``additionalProperties`` is false:
    every key the data uses is listed, and a key outside them is an invented field.
    """
    properties: dict[str, Any] = {}
    strays = []
    for key, types in stats.keys.items():
        types = Counter(types)
        if "integer" in types and "number" in types:
            types["number"] += types.pop("integer")
        stray = _stray_strings(types)
        if stray:
            value, where = stats.first_of[key]["string"]
            strays.append(f"{key}: {stray} of {sum(types.values()) - types['null']} values "
                          f"{'is a string' if stray == 1 else 'are strings'} (first {value}"
                          f"{', ' + where if where else ''}) where the rest are {_PLURAL[_dominant(types)]}: "
                          f"the schema keeps {_dominant(types)}, so data check quarantines "
                          f"{'that row' if stray == 1 else 'those rows'}; add string to its type if text is meant")
            del types["string"]
        names = sorted(types, key=lambda t: [n for _, n in _JSON_TYPES].index(t))
        properties[key] = {"type": names[0] if len(names) == 1 else names}
    required = [k for k, types in stats.keys.items() if sum(types.values()) == stats.objects]
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    if required and len(required) == len(properties):
        why = f"required: {', '.join(required)} (every key is in every row)"
    elif required:
        rest = len(properties) - len(required)
        why = f"required: {', '.join(required)} (in every row; the other {rest} key{'s are' if rest > 1 else ' is'} optional)"
    else:
        why = "no key is required (none is in every row)"
    # a key most answers write and a few lack: it is made optional, and those rows are named
    for key, types in stats.keys.items():
        lacking = stats.objects - sum(types.values())
        if key not in required and 2 * lacking < stats.objects:
            rows = stats.absent.get(key, [])
            shown = ", ".join(rows) + (", ..." if lacking > len(rows) else "")
            strays.append(f"field '{key}' missing in {lacking} {'row' if lacking == 1 else 'rows'} ({shown}): made "
                          f"optional; add it to {'that row' if lacking == 1 else 'those rows'} (null where the "
                          "text does not give it), or keep it optional")
    # a key a row or two use where every other key is in every row: likely a slip in those rows
    rare = [(k, sum(types.values())) for k, types in stats.keys.items()
            if required and k not in required and sum(types.values()) * 50 <= stats.objects]
    for key, n in rare:
        where = next(iter(stats.first_of[key].values()))[1]
        strays.append(f"{key}: in {n} of {stats.objects} answers (first {where or 'a row'}), an optional key; "
                      "if it is a slip, take it out of those answers (the schema then leaves it out)")
    return schema, "; ".join([why, *strays])


_PLURAL = {"integer": "integers", "number": "numbers", "boolean": "true or false"}
# At most this share of a field's values written as strings where the rest are numbers (or true /
# false) reads as a slip ("lots" for a quantity), not as a field that holds text.
STRAY_SHARE = 0.05


def _dominant(types: Counter) -> str:
    return max((t for t in types if t != "null"), key=lambda t: types[t])


def _stray_strings(types: Counter) -> int:
    """The string values of a field that are otherwise numbers or true/false, when they are few
    enough to be slips (:data:`STRAY_SHARE`); 0 otherwise."""
    strings = types.get("string", 0)
    rest = {t: n for t, n in types.items() if t not in ("string", "null")}
    if not strings or len(rest) != 1 or next(iter(rest)) not in _PLURAL:
        return 0
    return strings if strings <= STRAY_SHARE * (strings + sum(rest.values())) else 0


def _pick(candidates: list[ColumnStats], names: Sequence[str]) -> ColumnStats | None:
    """The one candidate, or the one named like ``names``; None when that does not settle it."""
    if len(candidates) == 1:
        return candidates[0]
    named = [c for c in candidates if c.name.lower() in names]
    return named[0] if len(named) == 1 else None


def _ambiguous(path: Path, what: str, found: list[ColumnStats], columns: dict[str, ColumnStats],
               flag: str) -> DataError:
    options = " or ".join(f"{flag} {shlex.quote(c.name)}" for c in found) if found else f"{flag} COLUMN"
    return DataError(f"{path}: cannot tell {what}" + (f": {', '.join(c.describe() for c in found)}" if found else "")
                     + f". Columns found: {', '.join(c.describe() for c in columns.values())}",
                     hint=f"pass {options}; " + ", ".join(f for f in ("--input", "--target", "--context", "--task")
                                                          if f != flag) + " settle the rest")


def _check_flag(path: Path, flag: str, name: str | None, columns: dict[str, ColumnStats]) -> ColumnStats | None:
    if name is None:
        return None
    if name not in columns:
        raise ConfigError(f"{flag} {name}: {path} has no such column",
                          hint=f"columns found: {', '.join(c.describe() for c in columns.values())}")
    return columns[name]


def _kind_of_target(target: ColumnStats, task: str | None, has_context: bool, path: Path) -> TaskKind:
    """The kind a chosen target column makes, or the one asked for if the column can serve it."""
    role = target.role
    if role in ("id", "other"):
        hint = ("write every cell of it as a JSON object (or leave it empty), or pass --target with another column"
                if target.objects else "pass --target with a column of labels, replies or JSON objects"
                if role == "id" else
                "write numbers and true/false as text (\"1\", not 1), or pass --target with another column")
        raise DataError(f"{path}: column {target.describe()} cannot be the target: taskfit reads an answer as "
                        "text (a label, a reply), or as a JSON object for extract", hint=hint)
    # a passage to answer from makes qa, even where the answers are short and repeat (yes, no)
    natural: TaskKind = ("extract" if role == "object" else "qa" if has_context else
                         "classify" if role == "label" else "generate")
    kind = task or natural
    fits = {"classify": role in ("label", "text") and target.values is not None,
            "extract": role == "object", "qa": role in ("text", "label"), "generate": role in ("text", "label")}
    if not fits[kind]:
        need = {"classify": f"at most {LABEL_CAP} distinct text values", "extract": "JSON objects",
                "qa": "text answers (null where unanswerable)", "generate": "text replies"}[kind]
        raise DataError(f"{path}: column {target.describe()} cannot be the target of a {kind} task, "
                        f"which needs {need}",
                        hint="pass --target with another column, or --task with the kind this column fits")
    return kind


def propose(path: Path, input: str | None = None, target: str | None = None, context: str | None = None,
            task: str | None = None, watch: Sequence[str] = (), max_line_bytes: int = 1_000_000) -> Proposal:
    """Read ``path`` once and propose the task it holds. ``input``, ``target``, ``context`` name
    columns and ``task`` the kind, overriding what would be guessed; ``watch`` lists phrases whose
    occurrences in the reference replies are counted (generate's house rules).

    Raises :class:`DataError` when the file has no readable row or the columns cannot be told
    apart, and :class:`ConfigError` when a flag names a column or kind that does not exist."""
    if task is not None and task not in INFERRED:
        raise ConfigError(f"--task: got {task!r}; --from proposes {', '.join(INFERRED)}",
                          hint="for another kind, write its taskfit.yaml with `taskfit init DIR --task KIND`")
    columns: dict[str, ColumnStats] = {}
    answers = ColumnStats("answer")  # the assistant's answers, for rows in a chat format
    prompts = ColumnStats("prompt")  # their user turns (a qa row's with its passage)
    systems: Counter = Counter()  # chat rows' own system prompts (None: the row has none)
    rows = with_context = 0
    phones: Counter = Counter()  # region of a +prefixed phone number (None: labelled, no prefix) -> numbers
    unreadable, first_unreadable, first_reason = 0, None, ""
    fmt: str | None = None
    generic = TaskSpec(kind="generate", success="-", system_prompt="-")
    chat = input is None and target is None and context is None
    for raw in read_rows(path, max_line_bytes):
        if raw.empty:
            continue
        if raw.error or not isinstance(raw.obj, dict):
            unreadable += 1  # data check quarantines these rows and says why
            if first_unreadable is None:
                first_unreadable = raw.source
                first_reason = raw.error or (f"a JSON {_json_type(raw.obj)}, not an object: JSONL holds one "
                                             "JSON object per line")
            continue
        if fmt is None and chat:
            try:
                fmt = detect_format(raw.obj)
            except ValueError:
                fmt, chat = "table", False
        rows += 1
        for text in _strings(raw.obj):
            phones.update(pii.phone_regions(text))
        if chat:
            try:
                rec = convert(raw.obj, generic, fmt, None, raw.source, "x")
            except ValueError:
                continue  # data check quarantines it
            answers.add(rec.chosen if isinstance(rec, PreferencePair) else rec.target, watch, raw.source)
            prompts.add(rec.prompt if isinstance(rec, PreferencePair) else user_text(rec), (), raw.source)
            systems[rec.system] += 1
            with_context += isinstance(rec, Example) and rec.context is not None
            continue
        for key, value in raw.obj.items():
            if key not in columns:  # absent from the rows before: nulls there
                columns[key] = ColumnStats(key, rows=rows - 1, nulls=rows - 1)
            columns[key].add(value, watch, raw.source)
        for stats in columns.values():
            if stats.name not in raw.obj:
                stats.rows += 1
                stats.nulls += 1
    if not rows and not unreadable:
        raise DataError(f"{path}: no rows to propose a task from (the file is empty, or holds a header only)",
                        hint="add the examples: one JSON object per line (JSONL), one row each under the header "
                             "(CSV, TSV, Parquet, an Excel sheet)")
    if not rows:
        none = "its one row cannot" if unreadable == 1 else f"none of its {unreadable} rows can"
        raise DataError(f"{path}: {none} be read; the first, {first_unreadable}: {first_reason}",
                        hint="mend the rows as the reason says, and run the command again")
    if unreadable > rows:  # a Windows-1252 export whose rows with an accent or a euro sign are unreadable:
        # a proposal from the few others (a footer, two rows) would not describe the file
        raise DataError(f"{path}: {unreadable} of its {rows + unreadable} rows cannot be read; the first, "
                        f"{first_unreadable}: {first_reason}",
                        hint=("it was probably saved as Windows-1252 or Latin-1: re-save it as UTF-8 (in Excel: "
                              "Save As, CSV UTF-8; or iconv -f cp1252 -t utf-8)" if first_reason.startswith("not UTF-8")
                              else "mend the rows as the reason says")
                        + f", and run the command again (a task proposed from the {rows} readable "
                          f"{'row' if rows == 1 else 'rows'} would not describe the file)")
    if chat:
        proposal = _with_system(_propose_chat(path, rows, fmt or "auto", answers, with_context, task), systems)
        longest = [(where, text) for _, _, where, text in sorted(prompts.longest, reverse=True)]
    else:
        proposal = _propose_table(path, rows, columns, input, target, context, task)
        mapping = proposal.columns or {}
        longest = [(where, str(text)) for _, _, where, text in sorted(columns[mapping["input"]].longest, reverse=True)]
        if mapping.get("context") and longest and columns[mapping["context"]].longest:
            _, _, where, passage = max(columns[mapping["context"]].longest)
            # the longest passage with the longest question: no row's user turn is longer
            longest = [(where, user_text(Example(id="-", input=longest[0][1], target="", context=str(passage))))]
    regions, why = _regions(phones)
    return replace(proposal, unreadable=unreadable, first_unreadable=first_unreadable, regions=regions,
                   prompts=longest, reasons=proposal.reasons + ([why] if why else []))


def _strings(value: Any) -> list[str]:
    """Every string in a row, however deep in its objects and lists."""
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [s for item in items for s in _strings(item)]


def _regions(phones: Counter) -> tuple[list[str] | None, str | None]:
    """``data.privacy.regions`` and why, from the regions of the data's +prefixed phone numbers
    (``phones``; None counts the labelled ones without a prefix). A number with neither a phone
    word before it nor a +prefix is a phone number only when it is valid in one of the regions,
    and the defaults (US, GB) leave a German "Rückruf 030 1234567" in clear: so each region of at
    least one in 20 of the prefixed numbers comes first (the first region's matcher reads the
    labelled numbers), then the defaults, kept since a few prefixed numbers do not show where the
    others are from. (None, None) when no number says anything."""
    default = PrivacySpec.model_fields["regions"].default
    unprefixed = phones.pop(None, 0)
    total = sum(phones.values())
    found = [region for region, n in phones.most_common(4) if n * 20 >= total]
    if not found:
        if not unprefixed:
            return None, None
        return None, (f"{unprefixed} phone number(s) after a phone word and none with a +country prefix: "
                      f"data.privacy.regions stays {', '.join(default)}; name the regions your data comes from "
                      "there (DE, FR...) so that its numbers are found without a phone word too")
    kept = [r for r in default if r not in found]
    regions = found + kept
    counts = ", ".join(f"{r} ({phones[r]})" for r in found)
    return regions, (f"data.privacy.regions {', '.join(regions)}: the data's phone numbers with a +country prefix "
                     f"are {counts} of {total}; those regions' numbers written without it are then found with "
                     "no phone word before them"
                     + (f"; {', '.join(kept)} kept from the default: drop them if none of the data's numbers is "
                        "from there" if kept else ""))


def _propose_chat(path: Path, rows: int, fmt: str, answers: ColumnStats, with_context: int,
                  task: str | None) -> Proposal:
    if fmt == "preference":
        if task not in (None, "generate"):
            raise ConfigError(f"--task {task}: {path} holds preference pairs, which train a generate task "
                              "with DPO", hint="drop --task, or map a table's columns with --input and --target")
        # the chosen replies are the references: the house rules come from them as from a table's replies
        return _finish(path, rows, "generate", "preference", None, answers,
                       ["rows have prompt, chosen and rejected → preference pairs: train.method dpo (task kind generate)"],
                       method="dpo")
    has_context = with_context == answers.rows
    kind = _kind_of_target(answers, task, has_context, path)
    if kind == "qa" and not has_context:
        raise DataError(f"{path}: a qa task needs a context in every row; {answers.rows - with_context} of "
                        f"{answers.rows} {fmt} rows have none", hint="add a \"context\" key to each row, or drop --task qa")
    reasons = [f"rows are in the {fmt} format: the user turn is the input and the assistant's answer the target",
               {"classify": f"the answers have {len(answers.values or ())} distinct short values → classify",
                "extract": "the answers are JSON objects → extract, with a schema from their keys",
                "qa": "every row has a context → qa", "generate": "the answers are free text → generate"}[kind]]
    return _finish(path, rows, kind, fmt, None, answers, reasons)


def _with_system(proposal: Proposal, systems: Counter) -> Proposal:
    """``proposal`` with the system prompt more than half of the chat rows carry as
    task.system_prompt: a served request without a system message is rendered with
    task.system_prompt, so it is then asked as most rows were trained. Its ``{name}`` braces are
    written doubled (taskfit.yaml fills ``{labels}`` and the like), and a prompt that would not
    read back as itself is not proposed."""
    counted = sum(systems.values())
    own = Counter({prompt: n for prompt, n in systems.items() if prompt is not None and prompt.strip()})
    if not own:
        return proposal
    prompt, n = own.most_common(1)[0]
    others = counted - n
    if 2 * n <= counted:
        reason = (f"{len(own)} different system prompts in {sum(own.values())} of {counted} rows, none in most: "
                  "task.system_prompt, which a served request without a system message is answered under, "
                  "is the kind's own; write one your clients will send, or send the rows' own")
        return replace(proposal, reasons=[*proposal.reasons, reason])
    escaped = literal_prompt(prompt)
    if escaped is None:
        reason = (f"{n} of {counted} rows carry one system prompt, which writes {{{{name}}}} braces that "
                  "taskfit.yaml cannot hold as they are: task.system_prompt is the kind's own; write theirs there "
                  "by hand so that a served request without a system message is asked as they were trained")
        return replace(proposal, reasons=[*proposal.reasons, reason])
    rest = f"; {others} rows carry another or none" if others else ""
    reason = (f"{n} of {counted} rows carry one system prompt: task.system_prompt is it, so a served request "
              f"without a system message is asked as they were trained{rest}")
    return replace(proposal, reasons=[*proposal.reasons, reason], system_prompt=escaped)


def _propose_table(path: Path, rows: int, columns: dict[str, ColumnStats], input: str | None,
                   target: str | None, context: str | None, task: str | None) -> Proposal:
    inp = _check_flag(path, "--input", input, columns)
    tgt = _check_flag(path, "--target", target, columns)
    ctx = _check_flag(path, "--context", context, columns)
    if ctx is not None and task not in (None, "qa"):
        raise ConfigError(f"--context {context}: a context column is for qa tasks, not {task}")
    chosen = {c.name for c in (inp, tgt, ctx) if c is not None}
    def texts() -> list[ColumnStats]:
        return [c for c in columns.values() if c.role == "text" and c.name not in chosen]

    def free() -> list[ColumnStats]:
        """The text columns not chosen yet that read as words, when any does: an export's ticket
        number and timestamp are metadata, not the text to learn from (a reply may still be a
        number: the target falls back to them)."""
        return [c for c in texts() if not c.codes] or texts()

    reasons: list[str] = []
    if ctx is None and task in (None, "qa"):
        found = [c for c in free() if c.name.lower() in CONTEXT_NAMES]
        if len(found) > 1:
            raise _ambiguous(path, "which column is the passage to answer from", found, columns, "--context")
        ctx = found[0] if found else None
        if ctx is None and task == "qa":
            raise _ambiguous(path, "which column is the passage to answer from", free(), columns, "--context")
        if ctx is not None:
            chosen.add(ctx.name)
            reasons.append(f"column `{ctx.name}` is named like a passage → qa, answered from it")
    if tgt is None:
        if ctx is not None:  # qa: the answer is the text that is not the question
            # short answers that repeat (yes, no, empty for the refusal) read as a label column
            found = [c for c in columns.values() if c.role in ("text", "label") and c.name not in chosen]
            tgt = _pick(found, TARGET_NAMES)
            what = "which column answers the question"
        elif task == "extract" or task is None and any(c.role == "object" for c in columns.values()):
            found = [c for c in columns.values() if c.role == "object" and c.name not in chosen
                     and c.name.lower() != "meta"]
            tgt = _pick(found, TARGET_NAMES)
            what = "which column of JSON objects holds the fields to extract"
        elif task == "classify" or task is None and len(free()) <= 1 and (
                len(texts()) == len(free()) or any(c.role == "label" and c.name not in chosen for c in columns.values())):
            found = [c for c in columns.values() if c.role == "label" and c.name not in chosen]
            tgt = _pick(found, TARGET_NAMES)
            what = "which column holds the labels to predict"
        else:  # generate: of the text columns (a reply may be a number or a code), one is the reply
            found = texts()
            tgt = _pick(found, TARGET_NAMES)
            what = "which free-text column is the reply to learn"
            found = free()  # offered as the reply: not a column of codes, numbers or times, unless all are
        if tgt is None:
            raise _ambiguous(path, what, found, columns, "--target")
        chosen.add(tgt.name)
    kind = _kind_of_target(tgt, task, ctx is not None, path)
    if inp is None:
        found = free() or [c for c in columns.values() if c.role == "label" and c.name not in chosen]
        inp = _pick(found, INPUT_NAMES)
        if inp is None:
            raise _ambiguous(path, "which column is the input", found, columns, "--input")
        chosen.add(inp.name)
    if inp.role not in ("text", "label"):
        raise DataError(f"{path}: column {inp.describe()} cannot be the input, which must be text",
                        hint="pass --input with a text column")
    if kind == "classify":
        reasons.append(f"target column `{tgt.name}` has {len(tgt.values or ())} distinct short values → classify")
    elif kind == "extract":
        reasons.append(f"target column `{tgt.name}` holds JSON objects → extract, with a schema from their keys")
        if tgt.broken:
            cells = "1 of its cells opens" if tgt.broken == 1 else f"{tgt.broken} of its cells open"
            reasons.append(f"{cells} like a JSON object but cannot be read as one (the first at "
                           f"{tgt.first_broken}): `taskfit data check` quarantines such rows")
    elif kind == "qa":
        refusals = tgt.nulls
        reasons.append(f"`{inp.name}` is the question and `{tgt.name}` the answer; {refusals} of {rows} answers "
                       "are empty or null → the task's refusal (task.refusal)")
    elif task is None:
        reasons.append(f"`{inp.name}` and `{tgt.name}` are free text, `{tgt.name}` named like a reply → generate")
    else:
        reasons.append(f"target column `{tgt.name}` → {kind} (--task)")
    reasons.append(f"input column `{inp.name}`" + (" (the free text left)" if input is None else ""))
    rest = [c for c in columns.values() if c.name not in chosen]
    index = [c for c in rest if c.row_numbers]
    if index:
        rest = [c for c in rest if c not in index]
        named = ", ".join(f"`{c.name}`" if c.name.strip() else "the column with no name" for c in index)
        reasons.append(f"not the text to learn from: {named}, the row numbers pandas writes (DataFrame.to_csv "
                       "without index=False), kept in each row's meta")
    if rest:
        # a column to classify by tells rows apart: the one of most values, never one of a single value
        labels = sorted((c for c in rest if c.role == "label" and len(c.values or ()) > 1),
                        key=lambda c: -len(c.values or ()))
        reasons.append(f"kept as metadata (usable as data.group_by): {', '.join(c.describe() for c in rest)}"
                       + (f"; pass --target {shlex.quote(labels[0].name)} to classify by it instead"
                          if labels and kind != "classify" else ""))
    mapping = {"input": inp.name, "target": tgt.name, **({"context": ctx.name} if ctx is not None else {})}
    return _finish(path, rows, kind, "auto", mapping, tgt, reasons)


def _one_spelling(values: Counter) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Labels with their rows, most first, one per spelling group (case, spacing and invisible
    characters aside: "Billing", "BILLING", "billing\u200b" and "billing" are one label, written as
    most rows write it, never with an invisible character); and, per label written more than one
    way, its other spellings."""
    from taskfit.tasks.base import INVISIBLE, label_key

    groups: dict[str, Counter] = {}
    for value, n in values.items():
        groups.setdefault(label_key(value), Counter())[value] += n
    labels: dict[str, int] = {}
    spellings: dict[str, list[str]] = {}
    for group in groups.values():  # a spelling with invisible characters is never the label
        ranked = sorted(group.items(), key=lambda kv: (bool(INVISIBLE.search(kv[0])), -kv[1], kv[0]))
        labels[ranked[0][0]] = sum(group.values())
        if len(ranked) > 1:
            spellings[ranked[0][0]] = [w for w, _ in ranked[1:]]
    return dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))), spellings


def _finish(path: Path, rows: int, kind: TaskKind, fmt: str, mapping: dict[str, str] | None,
            target: ColumnStats, reasons: list[str], method: Literal["lora", "dpo"] = "lora") -> Proposal:
    labels: dict[str, int] = {}
    schema = None
    if kind == "classify":
        labels, spellings = _one_spelling(target.values or Counter())
        if spellings:
            reasons.append("labels written in several cases or spacings are one label each, in their commonest "
                           "spelling (data check reads the others as it and counts them): "
                           + "; ".join(f"{lab} ({', '.join(repr(w) for w in written)})"
                                       for lab, written in spellings.items()))
        if target.nulls:
            unlabelled = "1 row has" if target.nulls == 1 else f"{target.nulls} rows have"
            reasons.append(f"{unlabelled} no label: data check will quarantine {'it' if target.nulls == 1 else 'them'}")
    json_style: Literal["spaced", "compact"] = "spaced"
    if kind == "extract":
        schema, why = infer_schema(target)
        reasons.append(f"schema: {len(schema['properties'])} properties in first-seen order; {why}")
        if 2 * target.compact > target.written:
            json_style = "compact"
            reasons.append(f"{target.compact} of {target.written} answers are compact JSON (no space after ',' or "
                           "':'): task.json_style compact, so the model is trained on and held to that form")
    return Proposal(path, rows, kind, method, fmt, mapping, labels=labels, schema=schema, json_style=json_style,
                    longest=[(where, value) for _, _, where, value in sorted(target.longest, reverse=True)],
                    reply_words=target.words if kind == "generate" else None,
                    reply_phrases=target.shared_phrases() if kind == "generate" else [],
                    phrases=dict(target.phrases), reasons=reasons)
