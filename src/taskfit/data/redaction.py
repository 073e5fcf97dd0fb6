"""One redaction decision per row: the input, the context and the answer are redacted together.

Redacting each text on its own rewrites answers silently: a date the phone matcher takes for a
number becomes ``<PHONE>`` in the receipt and in the answer alike, and the model is then trained
and scored on a placeholder that is in no document, where a scorecard cannot see it (both sides
changed the same way). So, per row (:func:`redact_row`):

1. the answer's values are found (:func:`taskfit.tasks.base.answer_values`: each string and number
   of an extract record, the text of a qa or generate answer; a label has none, it is never
   personal data);
2. a value whose field is in ``data.privacy.keep_fields`` stays verbatim in the answer, and so
   does every occurrence of it in the input and context when redacting them would leave none as it
   is: a finding there that overlaps one is dropped, and what of that finding lies outside the
   value is searched again on its own. A number is kept the same way, since no placeholder can
   stand in a typed answer, except where the text writes it only as a small part of a wider
   finding (the 1 of a phone number): that finding is redacted whole, and the answer keeps it;
3. any other value that is personal data by itself is redacted by its own findings, in the answer
   and at each of its occurrences in the input; one that is not changes only when redacting the
   input rewrites every occurrence of it (a wider finding around it), and then it becomes what its
   first occurrence became (the same placeholder over the same span): answer and input stay
   consistent, and the answer stays in the text.

Every answer field redaction changes, and every one ``keep_fields`` kept that it would have
changed, is reported per row (:class:`RowRedaction`), for the scan to count and the card to show.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from taskfit.config import PrivacySpec, TaskSpec
from taskfit.data import pii
from taskfit.records import Example, PreferencePair
from taskfit.tasks import get_task  # (imported once: a row's texts are found a million times in a large file)
from taskfit.tasks.base import answer_values, with_answer_values

Span = tuple[int, int]


@dataclass(slots=True)  # (not frozen: a frozen dataclass takes 4x the time to make, one a row)
class RowRedaction:
    """One row as ``prepare`` writes it, and what redaction did to its answer."""

    record: Example | PreferencePair
    findings: tuple[pii.Finding, ...]  # every finding in the row's texts, as detected (the card counts them)
    fields: frozenset[str] = frozenset()  # the answer fields the row fills
    changed: frozenset[str] = frozenset()  # answer fields whose value redaction rewrote
    kept: frozenset[str] = frozenset()  # fields in keep_fields redaction would have changed, kept verbatim
    numbers_kept: frozenset[str] = frozenset()  # fields holding a number redaction would have changed
    # fields holding a number written in the text only inside wider personal data (the 1 of
    # "+1 415 555 0134"), redacted there: the answer keeps the number, the text no longer shows it
    numbers_inside: frozenset[str] = frozenset()
    secrets_left: bool = False  # the record as written still holds a credential


def keeps(name: str, keep_fields: Sequence[str]) -> bool:
    """Whether ``keep_fields`` names the field ``name`` or an object holding it (``address``
    keeps ``address.city``)."""
    return any(name == k or name.startswith(k + ".") for k in keep_fields)


def occurrences(text: str, value: str) -> list[Span]:
    """Where ``value`` stands in ``text`` as a whole: not inside a longer word or number (the
    total ``3`` does not occur in ``555-0134``)."""
    out: list[Span] = []
    if not value.strip():
        return out
    start = text.find(value)
    while start >= 0:
        end = start + len(value)
        inside = ((start and text[start - 1].isalnum() and value[0].isalnum())
                  or (end < len(text) and text[end].isalnum() and value[-1].isalnum()))
        if not inside:
            out.append((start, end))
        start = text.find(value, end if not inside else start + 1)
    return out


def _touches(f: pii.Finding, span: Span) -> bool:
    return f.start < span[1] and span[0] < f.end


def _dwarfs(f: pii.Finding, span: Span) -> bool:
    """Whether the finding ``f`` holds ``span`` as less than half of itself."""
    overlap = min(f.end, span[1]) - max(f.start, span[0])
    return overlap > 0 and 2 * overlap < f.end - f.start


def _shift(findings: Sequence[pii.Finding], offset: int) -> list[pii.Finding]:
    return [replace(f, start=f.start + offset, end=f.end + offset) for f in findings]


def _spare(text: str, findings: list[pii.Finding], spans: list[Span],
           personal: pii.Detector) -> tuple[list[pii.Finding], bool]:
    """``findings`` with every span left unredacted: a finding that overlaps one is dropped, and
    the parts of it outside the spans are searched again on their own. Also whether a credential
    was dropped."""
    out: list[pii.Finding] = []
    dropped_secret = False
    for f in findings:
        hits = sorted(s for s in spans if _touches(f, s))
        if not hits:
            out.append(f)
            continue
        dropped_secret |= f.is_secret
        pos = f.start
        for a, b in hits + [(f.end, f.end)]:
            if a > pos:
                out += _shift(personal.detect(text[pos:a]), pos)
            pos = max(pos, b)
    return sorted(out, key=lambda f: f.start), dropped_secret


def detected_texts(rec: Example | PreferencePair, task: TaskSpec) -> list[str]:
    """The texts :func:`redact_row` looks for personal data in: what a worker can search ahead
    of it."""
    if isinstance(rec, PreferencePair):
        texts = [rec.prompt, rec.chosen, rec.rejected]
    else:
        values = answer_values(get_task(task.kind), task, rec.target) if rec.target else []
        texts = [t for t in (rec.input, rec.context) if t] + [v.text for v in values]
    return texts + ([rec.system] if rec.system else [])


class _NothingFound(dict):
    """:func:`redact_row`'s ``found_in`` for a row whose every text was searched and holds no
    personal data: each text's findings, none."""

    def get(self, text: str, default: object = None) -> list[pii.Finding]:  # type: ignore[override]
        return []


NOTHING_FOUND = _NothingFound()


def redact_row(rec: Example | PreferencePair, task: TaskSpec, privacy: PrivacySpec,
               found_in: dict[str, list[pii.Finding]] | None = None) -> RowRedaction:
    """The row redacted as ``privacy`` says, with its answer and input decided together (see the
    module docstring); ``action: keep`` changes nothing. ``found_in``: texts whose findings are
    already known (:func:`detected_texts`, searched by a worker), by text; NOTHING_FOUND when
    every one was searched and holds none."""
    if found_in is NOTHING_FOUND:  # every text searched, nothing found: the row as it is
        if isinstance(rec, PreferencePair):
            return RowRedaction(rec, ())
        values = answer_values(get_task(task.kind), task, rec.target) if rec.target else []
        return RowRedaction(rec, (), fields=frozenset(v.field for v in values))
    action, personal = privacy.action, pii.detector(privacy)

    def detect(text: str) -> list[pii.Finding]:
        known = found_in.get(text) if found_in is not None else None
        return known if known is not None else personal.detect(text)

    system = detect(rec.system) if rec.system else []
    if isinstance(rec, PreferencePair):
        texts = {"prompt": rec.prompt, "chosen": rec.chosen, "rejected": rec.rejected}
        found = {k: detect(t) for k, t in texts.items()}
        everything = tuple(f for fs in found.values() for f in fs) + tuple(system)
        if action == "keep":
            return RowRedaction(rec, everything, secrets_left=any(f.is_secret for f in everything))
        record = replace(rec, system=personal.redact(rec.system, system, action) if rec.system else rec.system,
                         **{k: personal.redact(t, found[k], action) for k, t in texts.items()})
        return RowRedaction(record, everything)

    kind = get_task(task.kind)
    values = answer_values(kind, task, rec.target) if rec.target else []
    parts = [rec.input, rec.context or ""]
    found = [detect(p) if p else [] for p in parts]
    own = [detect(v.text) for v in values]
    everything = tuple(f for fs in found + own for f in fs) + tuple(system)
    fields = frozenset(v.field for v in values)
    if action == "keep" or not everything:  # (nothing found: nothing to redact, the answer as it is)
        return RowRedaction(rec, everything, fields=fields, secrets_left=any(f.is_secret for f in everything))

    at = [[occurrences(p, v.text) for p in parts] for v in values]
    # A number the text writes only as a small part of a wider finding (quantity 1 in the phone
    # number "+1 415 555 0134") is not what was found: sparing the finding for it would leave the
    # phone number in the training data. Such occurrences are left to redaction.
    inside = [False] * len(values)
    for k, v in enumerate(values):
        if not v.editable and not keeps(v.field, privacy.keep_fields):
            small = [[sp for sp in at[k][i] if any(_dwarfs(f, sp) for f in found[i])] for i in (0, 1)]
            if any(small):
                at[k] = [[sp for sp in at[k][i] if sp not in small[i]] for i in (0, 1)]
                inside[k] = not any(at[k])
    # whether redacting the input rewrites every occurrence of the value (none is left as it is)
    hidden = [any(at[k]) and all(any(_touches(f, s) for f in found[i]) for i in (0, 1) for s in at[k][i])
              for k in range(len(values))]
    kept_here = [keeps(v.field, privacy.keep_fields) or not v.editable for v in values]
    # a kept value is spared wherever it occurs, unless it is already left as it is somewhere
    protected = [[s for k in range(len(values)) if kept_here[k] and hidden[k] for s in at[k][i]] for i in (0, 1)]
    secrets_left = False
    for i in (0, 1):
        if protected[i]:
            found[i], dropped = _spare(parts[i], found[i], protected[i], personal)
            secrets_left |= dropped

    texts: list[str] = []
    changed: set[str] = set()
    kept: set[str] = set()
    numbers: set[str] = set()
    for k, v in enumerate(values):
        if kept_here[k]:
            texts.append(v.text)
            if own[k] or hidden[k]:  # what redaction would have changed
                (kept if v.editable else numbers).add(v.field)
                secrets_left |= any(f.is_secret for f in own[k])
            continue
        new, intact = None, False
        for i in (0, 1):
            for span in at[k][i]:
                hits = [f for f in found[i] if _touches(f, span)]
                if not hits and own[k] and not any(a < span[1] and span[0] < b for a, b in protected[i]):
                    hits = _shift(own[k], span[0])  # the input reads as the answer will
                    found[i] = sorted(found[i] + hits, key=lambda f: f.start)
                intact |= not hits
                if hits and new is None:
                    lo, hi = min(span[0], hits[0].start), max(span[1], hits[-1].end)
                    new = personal.redact(parts[i][lo:hi], _shift(hits, -lo), action)
        if new is None or (intact and not own[k]):  # not in the input, or still there as it is
            new = personal.redact(v.text, own[k], action)
        texts.append(new)
        if new != v.text:
            changed.add(v.field)

    target = rec.target
    if changed:
        target = with_answer_values(kind, task, rec.target, texts)
    record = replace(rec, input=personal.redact(parts[0], found[0], action),
                     context=personal.redact(rec.context, found[1], action) if rec.context else rec.context,
                     system=personal.redact(rec.system, system, action) if rec.system else rec.system, target=target)
    return RowRedaction(record, everything, fields=fields, changed=frozenset(changed), kept=frozenset(kept),
                        numbers_kept=frozenset(numbers), secrets_left=secrets_left,
                        numbers_inside=frozenset(v.field for k, v in enumerate(values) if inside[k]))
