"""Rows from outside the data files (reviewed requests, synthetic drafts) admitted by the rules
the files' own rows are held to.

A :class:`NewRows` holds the project's rows (training and held-out, each tagged with where it
comes from) and every row admitted so far. A candidate row is first made a record and checked as a
row of the project would be (:meth:`NewRows.record`: the ``messages`` shape, the task's answer
check), then :meth:`NewRows.admit` decides whether it repeats one of them: the same input and the
same answer after whitespace and case folding (an exact duplicate), or a look-alike that copies a
row or contradicts it (:mod:`taskfit.data.lookalike`, ``data.dedup``; the same input with another
answer is a conflict, as the data check says). A row that repeats nothing is indexed, so the
next one is compared with it too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from taskfit.config import ProjectConfig
from taskfit.data.lookalike import COPY, CONFLICT, LookAlikes, decisive, input_text, normalise
from taskfit.data.scan import PairNote, _label
from taskfit.records import Example

EXACT, NEAR = "exact", "near"


@dataclass(frozen=True)
class Repeat:
    """What an admitted row repeats: ``kind`` exact or near, the row it repeats (its index among
    the rows held, and where that row comes from), and for a look-alike the pair as the data card
    shows it (``conflict``: the pair with a row whose answer contradicts it, when there is one)."""

    kind: str
    owner: int
    where: str
    note: PairNote | None = None
    conflict: PairNote | None = None


def _exact_key(rec: Example) -> str:
    """What an exact duplicate shares: the input and the answer, normalised. A correction of a
    project row's answer (the same input, another answer) is no duplicate: the look-alike judgement
    finds it a conflict, listed for a person to decide, as the data check lists such pairs."""
    return f"{normalise(input_text(rec))}\x1f{normalise(rec.target)}"


class NewRows:
    def __init__(self, config: ProjectConfig, existing: Sequence[Example], where: Sequence[str]):
        from taskfit.tasks import get_task
        from taskfit.tasks.base import answer_spelling

        self.task, self.data = config.task, config.data
        self.check_answer = get_task(self.task.kind).answer_check(self.task)
        self.spelling = answer_spelling(get_task(self.task.kind), self.task)
        self.rows: list[Example] = []
        self.where: list[str] = []
        self.sources: list[str] = []
        self.exact: dict[str, int] = {}
        self.looks = LookAlikes(self.data.dedup, self.task) if self.data.dedup.near else None
        self.indexed: list[int] = []  # per look-alike index entry: the row's number in self.rows
        for rec, tag in zip(existing, where, strict=True):
            self._hold(rec, tag, rec.source or rec.id, None)

    def record(self, raw: dict[str, Any], source: str, checked: bool = True) -> Example:
        """A row in the ``messages`` shape (``id``, ``messages``, optional ``context`` and
        ``meta``) as a record, with the task's answer check passed (``checked``: False for an
        answer the check does not take as it is, a classify fallback); a ValueError names the
        field."""
        from taskfit.data.formats import convert

        rec = convert(raw, self.task, "messages", None, source, raw["id"])
        if not checked:
            return rec
        if isinstance(rec, Example) and (spelled := self.spelling(rec.target)) != rec.target:
            rec = dataclasses.replace(rec, target=spelled)  # "Billing": the label billing
        self.check_answer(rec)
        return rec

    def admit(self, rec: Example, where: str, source: str) -> Repeat | None:
        """The row it repeats (nothing is indexed), or None: ``rec`` is held from now on."""
        key = _exact_key(rec)
        if key in self.exact:
            k = self.exact[key]
            return Repeat(EXACT, k, self.where[k])
        row = None
        if self.looks is not None:
            row = self.looks.row(rec)
            verdicts = self.looks.judge(row)
            verdict = decisive(verdicts)
            if verdict is not None and verdict.kind in (COPY, CONFLICT):
                label = _label(rec, self.task)

                def note(v: Any) -> PairNote:
                    k = self.indexed[v.other]
                    other = self.rows[k]
                    return PairNote(self.sources[k], source, v.similarity, _label(other, self.task), label, 0, 0,
                                    kept_preview=input_text(other)[:160], other_preview=input_text(rec)[:160])

                clash = next((v for v in verdicts if v.kind == CONFLICT), None)
                k = self.indexed[verdict.other]
                return Repeat(NEAR, k, self.where[k], note(verdict), note(clash) if clash is not None else None)
        self._hold(rec, where, source, row)
        return None

    def _hold(self, rec: Example, where: str, source: str, row: Any) -> None:
        k = len(self.rows)
        self.rows.append(rec)
        self.where.append(where)
        self.sources.append(source)
        self.exact.setdefault(_exact_key(rec), k)
        if self.looks is not None:
            self.looks.add(row if row is not None else self.looks.row(rec))
            self.indexed.append(k)
