"""One streaming pass over a data file: validate, deduplicate, audit, find personal data, and
decide each row's redaction (counting the answers it would change).

The pass keeps compact state per row (hashes, MinHash signatures in the LSH indexes, answer
digests, layout numbers, token counts), never the rows themselves unless asked (``keep=True``,
for ``prepare``), so ``data check`` runs on files much larger than memory. Look-alike rows are
judged by their answers (copies removed, distinct examples kept, conflicts listed) and kept rows
are grouped by layout: see :mod:`taskfit.data.lookalike`. Counts always add up:

    read = kept + quarantined + exact duplicates + near-duplicates
"""

from __future__ import annotations

import gc
import heapq
import json
import os
import sys
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from taskfit.config import DataSpec, TaskSpec
from taskfit.data import pii
from taskfit.data.formats import convert
from taskfit.data.lookalike import (CONFLICT, DISTINCT, Layouts, LookAlikes, decisive, digest, input_text,
                                     layout_signatures, shared_text, word_digests)
from taskfit.data.redaction import NOTHING_FOUND, RowRedaction, detected_texts, redact_row
from taskfit.data.read import lines_in, read_rows, row_namer
from taskfit.data.tokens import PieceCounter
from taskfit.records import Example, PreferencePair, in_batches
from taskfit.rendering import user_text
from taskfit.tasks import get_task
from taskfit.tasks.base import answer_spelling
from taskfit.tasks.generate import rule_violations

TEMPLATE = "template"  # the value of data.group_by that groups rows by layout


@dataclass(frozen=True)
class Quarantined:
    source: str
    reason: str
    raw: str


@dataclass
class PairNote:
    """Two rows that look alike. Previews are redacted: a card never shows personal data."""

    kept: str  # source of the row kept
    other: str  # source of the row removed
    similarity: float
    kept_label: str
    other_label: str
    kept_line: int
    other_line: int
    kept_preview: str = ""
    other_preview: str = ""


@dataclass
class ScanResult:
    path: str
    kind: str  # "examples" | "preferences"
    read: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)
    exact_duplicates: int = 0
    # extract: per answer field, the kept rows that fill it, and those whose value their text does
    # not write (taskfit.tasks.extract.value_written), with the first few of them (file:line)
    field_rows: Counter = field(default_factory=Counter)
    unwritten: Counter = field(default_factory=Counter)
    unwritten_noted: dict[str, list[str]] = field(default_factory=dict)
    # generate: per house rule (taskfit.tasks.generate.rule_violations), the kept rows whose reply (a
    # pair's chosen one) breaks task.reply, with the first few of them (file:line), and those breaking any
    broken_rules: Counter = field(default_factory=Counter)
    broken_noted: dict[str, list[str]] = field(default_factory=dict)
    broken_rows: int = 0
    exact_noted: list[str] = field(default_factory=list)  # the first DISTINCT_NOTED of them, as file:line
    near_duplicates: list[PairNote] = field(default_factory=list)  # copies and conflicts, removed
    conflicts: list[PairNote] = field(default_factory=list)
    # Look-alikes kept as distinct examples: how many, and the first DISTINCT_NOTED of them.
    distinct: int = 0
    distinct_notes: list[PairNote] = field(default_factory=list)
    layouts: Any = field(default_factory=lambda: array("i"))  # the layout of each kept row, in order
    layout_index: Layouts | None = None
    labels: Counter = field(default_factory=Counter)
    respelled: Counter = field(default_factory=Counter)  # (answer as written, the label it is) -> rows
    empty_rows: int = 0  # table rows with every cell empty (",,,,"), skipped
    empty_answers: int = 0  # qa table rows whose answer cell is empty, read as task.refusal
    empty_noted: list[str] = field(default_factory=list)  # the first DISTINCT_NOTED of them, as file:line
    system_prompts: Counter = field(default_factory=Counter)
    pii_counts: Counter = field(default_factory=Counter)  # kind -> occurrences
    pii_rows: int = 0
    secret_rows: list[str] = field(default_factory=list)  # sources only, never values
    unredacted_secret_rows: int = 0  # rows still holding a credential as prepare writes them
    # Per answer field (extract: the schema's; qa, generate: "answer"), in rows: how many fill it,
    # whose value redaction changes, and whose value it would change but keeps (keep_fields; numbers).
    answer_fields: Counter = field(default_factory=Counter)
    answers_changed: Counter = field(default_factory=Counter)
    answers_kept: Counter = field(default_factory=Counter)
    answer_numbers_kept: Counter = field(default_factory=Counter)
    answer_numbers_inside: Counter = field(default_factory=Counter)  # written only inside redacted personal data
    # tokens each kept row needs (TokenCounter.lengths: what decides a cut, or a drop)
    lengths: Any = field(default_factory=lambda: array("i"))
    rendered_tokens: int = 0  # the kept rows' rendered tokens, answers as written (the loss share's total)
    # The longest rows by what no cut of the input can shorten (template, system prompt, answer):
    # (tokens, source), at most UNFITTABLE_KEPT of them, and the tokens for every example row.
    fixed_longest: list[tuple[int, str]] = field(default_factory=list)
    fixed_lengths: Any = field(default_factory=lambda: array("i"))
    answer_tokens: int = 0
    # each kept row's answer tokens with the end of turn (the longer reply of a pair), and the
    # longest as (tokens, file:line): data check holds them to eval.max_new_tokens
    answer_lengths: Any = field(default_factory=lambda: array("i"))
    longest_answer: tuple[int, str] = (0, "")
    examples: list[Example | PreferencePair] = field(default_factory=list)  # with keep=True, redacted

    @property
    def kept(self) -> int:
        return self.read - len(self.quarantined) - self.exact_duplicates - len(self.near_duplicates)

    def counts_add_up(self) -> bool:
        return self.read == self.kept + len(self.quarantined) + self.exact_duplicates + len(self.near_duplicates)


def _texts(rec: Example | PreferencePair) -> list[str]:
    if isinstance(rec, PreferencePair):
        return [rec.prompt, rec.chosen, rec.rejected]
    return [t for t in (rec.input, rec.context, rec.target, rec.system) if t]


def _row_digests(rows: list[list[str]]) -> list[int]:
    """The 64-bit digest of each row's texts (:func:`_texts`), normalised: equal for a row
    repeated whole (an exact duplicate)."""
    # (:func:`~taskfit.tasks.base.normalise` of each text, joined: case folding goes character by
    # character, so the joined texts are folded once)
    return [digest("\x1f".join([" ".join(t.split()) for t in texts]).casefold()) for texts in rows]


def _label(rec: Example | PreferencePair, task: TaskSpec) -> str:
    """A row's answer as the card names it beside its input: the label; an extract record's filled
    fields ("city=Oslo; date=2025-03-01", the nulls its schema fills every record with say
    nothing); else the answer's first 60 characters."""
    if isinstance(rec, PreferencePair):
        return rec.chosen[:60]
    if get_task(task.kind).scores_labels:
        return rec.target
    if task.kind == "extract":
        from taskfit.tasks.extract import leaves

        try:
            filled = "; ".join(f"{name}={value}" for name, value in leaves(json.loads(rec.target)))
        except ValueError:
            filled = rec.target
        return filled[:60] if filled else "(no field filled)"
    return rec.target[:60]


class TokenCounter:
    """Rendered length of each row, batched through the model's fast tokenizer.

    The chat template's own tokens (system prompt, role markers, end-of-turn) are measured once
    with :func:`taskfit.rendering.render`; each row adds its own text's tokens.
    """

    def __init__(self, tokenizer: Any, task: TaskSpec, room: int = 0):
        from taskfit.rendering import render

        probe = Example(id="p", input="x", target="y")
        r = render(tokenizer, task, probe, target="y")
        self.tokenizer = tokenizer
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._pieces = PieceCounter.make(self._backend) if self._backend is not None else None
        one = lambda s: self.count([s])[0]  # noqa: E731
        self.overhead = len(r.ids) - one("x") - one("y")
        self.system_len = one(task.system_text)
        self._systems: dict[str, int] = {}  # a row's own system prompt -> its tokens beyond the task's
        # A prompt that must be cut leaves this many tokens for the answer (rendering.answer_room),
        # in training as in evaluation, so a short answer still takes that room.
        self.room = room

    @staticmethod
    def item(rec: Example | PreferencePair) -> tuple[str, str, str | None, bool, str]:
        """What :meth:`lengths` needs of a row: its prompt's and answer's texts, its own system
        prompt, whether no cut of its input can shorten it, the prompt without the qa context."""
        if isinstance(rec, PreferencePair):  # DPO cuts a long answer, so a pair always fits
            return rec.prompt, max(rec.chosen, rec.rejected, key=len), rec.system, False, ""
        # for qa the context is cut, never the question
        uncut = user_text(replace(rec, context="")) if rec.context is not None else ""
        return user_text(rec), rec.target, rec.system, rec.source is not None, uncut

    def lengths(self, items: list[tuple[str, str, str | None, bool, str]]) -> list[tuple[int, int, int | None, int]]:
        """(tokens the row needs: its prompt with its answer or the room a cut prompt keeps for
        one, whichever is longer, as :func:`taskfit.rendering.render` decides a cut; answer
        tokens; tokens no cut of the input can remove, or None; rendered tokens) of each row's
        :meth:`item`, in order."""
        enc = self.count([p[0] for p in items] + [p[1] for p in items] + [p[4] for p in items])
        n = len(items)
        out = []
        for i, (_, _, system, fixed_known, _) in enumerate(items):
            extra = 0 if system is None else self._system_extra(system)
            answer = enc[n + i] + 1  # + end-of-turn
            kept = max(answer, self.room) - 1  # the answer's tokens, or the room kept for it
            fixed = self.overhead + kept + extra + enc[2 * n + i] if fixed_known else None
            out.append((self.overhead + enc[i] + kept + extra, answer, fixed, self.overhead + enc[i] + enc[n + i] + extra))
        return out

    def count(self, texts: list[str]) -> list[int]:
        """Tokens of each text, no special tokens added: piece by piece for a byte-level BPE
        tokenizer (:class:`~taskfit.data.tokens.PieceCounter`, 3-4x faster, the same counts), else
        by the fast tokenizer's own batch encoding (without offsets, nor the wrapper's conversion
        to Python lists: 2.5x the wrapper's speed here, the same counts), unless a truncation or
        padding the wrapper last set would make it differ from the wrapper's."""
        backend = self._backend
        if backend is not None and backend.truncation is None and backend.padding is None:
            if self._pieces is not None:
                return self._pieces.count(texts)
            return [len(e) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _system_extra(self, system: str) -> int:
        if system not in self._systems:
            if len(self._systems) >= 1024:  # rows with a system prompt each: keep the memory bounded
                self._systems.clear()
            self._systems[system] = self.count([system])[0] - self.system_len
        return self._systems[system]


DISTINCT_NOTED = 50
BATCH_ROWS = 256  # rows read, validated and given their MinHash signatures together
DEPTH = 6  # chunks sent to the worker before the first of them is finished here
# What a row needs that depends on no other row (its personal data and secrets, its signatures)
# is made by worker processes, up to DEPTH chunks ahead of the deduplication, and the kept rows'
# layouts by a process of their own, in a file of at least this many bytes (a smaller one is not
# worth starting a process for).
POOL_FROM_BYTES = 1_000_000
WORKERS = max(0, min(4, (os.cpu_count() or 1) - 1)) if sys.platform == "linux" else 0


@dataclass(frozen=True)
class _Fixed:
    """What :func:`_ahead` needs besides a chunk's records, the same for a whole scan (a worker
    holds it from its fork): the task and its privacy settings, the look-alikes (their
    signatures' shingles and answer parts; None when data.dedup.near is off), the layouts whose
    signatures are made ahead (None when a process of their own finds them, or none are), the
    token counter (None for no lengths)."""

    task: TaskSpec
    privacy: Any
    looks: LookAlikes | None
    layouts: Layouts | None
    counter: TokenCounter | None


def _ahead(records: list[Example | PreferencePair], fixed: _Fixed) -> tuple[Any, ...]:
    """What a chunk's rows need that depends on no other row (run by a worker, or here for a
    small file): the personal data and secrets in each row's :func:`detected_texts`, as a list a
    text in their order (None for a row with none); the look-alike signatures of their
    :func:`input_text` and its words (:func:`~taskfit.data.lookalike.word_digests`), as
    (signatures, distinct shingles) and three arrays; their answers' parts
    (:meth:`~taskfit.data.lookalike.LookAlikes.parts`), these three None without look-alikes;
    the layout signatures of their inputs (a row's own look-alike signature reused where it is
    its input's), None unless made here; their :meth:`TokenCounter.lengths` (None when not
    asked); and their :func:`_row_digests`."""
    import numpy as np

    task, looks, layouts = fixed.task, fixed.looks, fixed.layouts
    personal = pii.detector(fixed.privacy)
    found = []
    for rec in records:
        findings = [personal.detect(t) for t in detected_texts(rec, task)]
        found.append(findings if any(findings) else None)
    own = own_words = answers = None
    if looks is not None:
        look_texts = [input_text(rec) for rec in records]
        own = looks.index.shingles.signatures(look_texts)
        own_words = word_digests(look_texts)
        answers = [looks.parts(rec) for rec in records]
    laid = None
    if layouts is not None:
        # the look-alike text is the input itself for pairs and rows without a context
        known = [(own[0][i], int(own[1][i])) if own is not None and (isinstance(rec, PreferencePair) or
                                                                      rec.context is None) else None
                 for i, rec in enumerate(records)]
        made = layout_signatures(layouts.index.shingles,
                                 [rec.prompt if isinstance(rec, PreferencePair) else rec.input for rec in records],
                                 known)
        laid = (np.stack([sig for sig, _ in made]) if made else np.empty((0, layouts.index.num_perm), np.uint32),
                np.array([size for _, size in made], np.int64))
    counter = fixed.counter
    lengths = counter.lengths([TokenCounter.item(rec) for rec in records]) if counter is not None else None
    return found, own, own_words, answers, laid, lengths, _row_digests([_texts(rec) for rec in records])


class _Workers:
    """Worker processes for :func:`_ahead`, forked now (so they need not import anything, nor read
    the main script again), each holding the scan's :class:`_Fixed` (the task, the look-alikes,
    the token counter and its tokenizer); chunks of records go to them in turn (:meth:`submit`)
    and what they make of them is read back in the order sent (:meth:`result`).

    Each chunk is pickled by the scan's thread and written to its worker by a thread that holds
    the interpreter's lock only between writes, so the scan never waits on a busy worker; a
    result is read and unpickled by the scan's thread when it finishes that chunk. (A
    ``concurrent.futures`` pool pickles the chunks and unpickles the results in threads of its own,
    whose turns with the lock held the scan up: a million rows took 111.9 s that way, 109.3 s this
    way, in one development run each.) The tokenizers library warns in a process forked after it
    has run in parallel, so the fork happens with its parallelism set for the children alone."""

    def __init__(self, workers: int, fixed: _Fixed):
        import multiprocessing
        import queue
        import threading

        context = multiprocessing.get_context("fork")
        self._conns: list[Any] = []
        self._processes: list[Any] = []
        before = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        try:
            for _ in range(workers):
                mine, theirs = context.Pipe()
                process = context.Process(target=_work_ahead, args=(theirs, fixed), daemon=True)
                process.start()
                theirs.close()
                self._conns.append(mine)
                self._processes.append(process)
        finally:
            if before is None:
                del os.environ["TOKENIZERS_PARALLELISM"]
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = before
        self._outbox: Any = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send, daemon=True)
        self._sender.start()
        self._sent = self._read = 0

    def _send(self) -> None:
        while (item := self._outbox.get()) is not None:
            conn, data = item
            try:
                conn.send_bytes(data)
            except OSError:  # the worker stopped: the scan reads why from it
                return

    def submit(self, records: list[Example | PreferencePair]) -> None:
        import pickle

        self._outbox.put((self._conns[self._sent % len(self._conns)], pickle.dumps(records, pickle.HIGHEST_PROTOCOL)))
        self._sent += 1

    def result(self) -> Any:
        """What :func:`_ahead` made of the oldest chunk not yet read; its error, raised here."""
        conn = self._conns[self._read % len(self._conns)]
        self._read += 1
        return _from_helper(conn, "a worker process")

    def close(self) -> None:
        for process in self._processes:  # (a write it was waiting on ends with an error)
            if process.is_alive():
                process.kill()
            process.join()
        self._processes.clear()  # (each holds its arguments)
        self._outbox.put(None)
        self._sender.join()
        for conn in self._conns:
            conn.close()


def _from_helper(conn: Any, name: str) -> Any:
    """What a helper process of the check sent next: the error it sent, raised here; a clear
    error where it died without a word (out of memory), rather than the pipe's."""
    import pickle

    try:
        got = pickle.loads(conn.recv_bytes())
    except (EOFError, ConnectionResetError):  # (reset: it died with something sent to it unread)
        raise RuntimeError(f"{name} of the data check stopped without a word (out of memory?)") from None
    if isinstance(got, BaseException):
        raise got
    return got


def _work_ahead(conn: Any, fixed: _Fixed) -> None:
    """A :class:`_Workers` process: each chunk's records in, what :func:`_ahead` makes of them
    out; an error, sent instead, ends it."""
    import pickle

    while True:
        try:
            records = pickle.loads(conn.recv_bytes())
        except EOFError:
            return
        try:
            made = _ahead(records, fixed)
        except Exception as exc:  # raised in the scan's process when it reads this chunk
            conn.send(exc)
            return
        conn.send_bytes(pickle.dumps(made, pickle.HIGHEST_PROTOCOL))


class _LayoutProcess:
    """The kept rows' layouts found by a process of their own while this one goes on
    deduplicating: it is sent each chunk's kept inputs (:meth:`send`), finds their layouts in
    order in its copy of the :class:`~taskfit.data.lookalike.Layouts` (forked from this process's)
    and sends back their numbers; :meth:`finish` collects them and the layouts as they stand. At
    most AHEAD chunks wait for their numbers, so neither the memory nor the pipe fills up: a
    chunk's numbers take about a kilobyte of the pipe's 64 (BATCH_ROWS of them at most)."""

    AHEAD = 32

    def __init__(self, layouts: Layouts):
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self._conn, theirs = context.Pipe()
        self._process = context.Process(target=_find_layouts, args=(theirs, layouts), daemon=True)
        self._process.start()
        theirs.close()
        self._waiting = 0
        self.numbers = array("i")  # each kept row's layout, in order, as they come back

    def send(self, texts: list[str], path: str, lines: list[int]) -> None:
        if self._waiting >= self.AHEAD:
            self._take()
        try:
            self._conn.send((texts, path, lines))
        except OSError:  # it stopped: the error it sent before it did, after the numbers it sent
            while True:
                self._take()
        self._waiting += 1

    def _take(self) -> None:
        self.numbers.extend(_from_helper(self._conn, "the layouts' process"))
        self._waiting -= 1

    def finish(self) -> Layouts:
        """The layouts as they stand, read as they are written (pickled, the pipe a stream): a
        Connection's message would be read whole before it is unpickled, twice the memory."""
        import pickle

        while self._waiting:
            self._take()
        self._conn.send(None)
        with os.fdopen(os.dup(self._conn.fileno()), "rb") as stream:
            layouts = pickle.load(stream)
        self._process.join()
        return layouts

    def close(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._conn.close()


def _find_layouts(conn: Any, layouts: Layouts) -> None:
    """:class:`_LayoutProcess`'s process: (texts, path, lines) in, their layouts' numbers out, in
    order; None in, the layouts out."""
    import pickle

    gc.disable()  # as in scan: no reference cycles are made, and the collector's passes cost time
    os.nice(5)  # the scan's process, which bounds the check, goes first
    try:
        while (chunk := conn.recv()) is not None:
            conn.send(array("i", layouts.assign_all(*chunk)))
    except Exception as exc:  # raised in the scan's process when it next reads
        conn.send(exc)
        return
    with os.fdopen(os.dup(conn.fileno()), "wb") as stream:
        pickle.dump(layouts, stream, protocol=pickle.HIGHEST_PROTOCOL)


def scan(path: Path, task: TaskSpec, spec: DataSpec, tokenizer: Any = None, keep: bool = False,
         on_row: Callable[[int], None] | None = None, id_prefix: str = "", room: int = 0,
         layouts: Layouts | None = None) -> ScanResult:
    """Stream ``path`` once. With ``keep``, the kept records are returned too, redacted as
    ``spec.privacy`` says (:func:`taskfit.data.redaction.redact_row`), as ``prepare`` writes them.
    ``on_row(n)`` is called as each row is read, with how far it took the reading on in the file's
    row numbers (its :attr:`~taskfit.data.read.RawRow.line` less the last row's: 1 a row where a
    row is a line; at the end, what is left of :func:`~taskfit.data.read.lines_in`'s count, such
    as blank lines), so that a bar whose end is that count ends at it.
    ``layouts`` is shared by the scans of one project (train and a fixed eval file), so that a
    layout has one number in both; without it, the scan makes its own (when data.dedup.near is
    on, or data.group_by is template)."""
    fmt = spec.format
    result = ScanResult(path=str(path), kind="preferences" if fmt == "preference" else "examples")
    exact: set[int] = set()  # 64-bit digests of the normalised row
    ids: set[int] = set()  # 64-bit digests of the row ids
    looks = LookAlikes(spec.dedup, task) if spec.dedup.near else None
    if layouts is None and (spec.dedup.near or spec.group_by == TEMPLATE):
        layouts = Layouts(spec.dedup)
    result.layout_index = layouts
    # Per indexed row, only its line and label code are kept (compact arrays, not row text).
    index_lines, index_labels = array("q"), array("i")
    label_codes: dict[str, int] = {}
    label_names: list[str] = []
    counter = TokenCounter(tokenizer, task, room) if tokenizer is not None else None
    check_answer = get_task(task.kind).answer_check(task)  # the answer must fit the task (built once)
    spelling = answer_spelling(get_task(task.kind), task)  # "Billing" is the label billing
    stem = Path(path).stem  # of each row's default id
    named = row_namer(Path(path))  # an earlier row's name from its line (a look-alike's)
    # qa in a table: an empty answer cell is the refusal (taskfit.data.formats), counted for the card
    empty_cell_is_refusal = task.kind == "qa" and spec.columns is not None and bool(spec.columns.target)
    empty_lines: set[int] = set()  # lines of such rows (few), counted when kept
    try:  # the system prompt a row without its own is counted under, read once
        system_text: str | None = task.system_text
    except ValueError:  # (a placeholder it cannot fill: count_kept raises it, at the first kept row)
        system_text = None
    reached = 0  # the last row number read (on_row's progress)

    def read(chunk: list[Any]) -> tuple[list[tuple[Any, Example | PreferencePair]], list[tuple[int, Quarantined]]]:
        """Validate a chunk of rows: the valid ones as (raw row, record), and the quarantined ones."""
        batch: list[tuple[Any, Example | PreferencePair]] = []  # (raw row, record) of the valid rows
        held: list[tuple[int, Quarantined]] = []  # the chunk's quarantined rows, listed in line order below
        nonlocal reached
        for raw in chunk:
            if on_row and raw.line > reached:
                on_row(raw.line - reached)
                reached = raw.line
            if raw.empty:  # a spreadsheet's row of empty cells: not read as a row, counted for the card
                result.empty_rows += 1
                continue
            result.read += 1
            if raw.error:
                held.append((raw.line, Quarantined(raw.source, raw.error, raw.raw)))
                continue
            try:
                rec = convert(raw.obj, task, fmt, spec.columns, raw.source, f"{id_prefix}{stem}-{raw.line}")
                if isinstance(rec, PreferencePair):
                    result.kind = "preferences"
                else:
                    if (spelled := spelling(rec.target)) != rec.target:
                        result.respelled[(rec.target, spelled)] += 1
                        rec = replace(rec, target=spelled)
                    check_answer(rec)
                    if empty_cell_is_refusal and not str(raw.obj.get(spec.columns.target) or "").strip():
                        empty_lines.add(raw.line)  # counted if kept (finish)
            except ValueError as exc:
                held.append((raw.line, Quarantined(raw.source, str(exc), raw.raw)))
                continue
            batch.append((raw, rec))
        return batch, held

    def finish(batch: list[tuple[Any, Example | PreferencePair]], held: list[tuple[int, Quarantined]],
               made: Any) -> None:
        """Deduplicate, audit and redact a validated chunk (``made``: what :func:`_ahead` made of
        it, or None where a worker made it)."""
        findings, look_sigs, look_words, answers, layout_made, lengths, digests = \
            pool.result() if pool is not None else made

        def pair_note(v: Any, raw: Any, label: str) -> PairNote:
            """The listed pair of a row and the earlier look-alike of verdict ``v``."""
            return PairNote(named(index_lines[v.other]), raw.source, v.similarity,
                            label_names[index_labels[v.other]], label, index_lines[v.other], raw.line)

        sigs = list(zip(look_sigs[0], look_sigs[1].tolist())) if look_sigs is not None else None
        words, word_ends = (look_words[0].tolist(), look_words[2].tolist()) if look_words is not None else ((), ())
        probes = looks.index.lookup(*look_sigs) if looks is not None else None
        kept = []  # (its place in the chunk, raw row, record) of each row kept
        for at, (raw, rec) in enumerate(batch):
            row_digest = digests[at]
            if row_digest in exact:  # a row repeated whole, its id too, is a duplicate, not an id clash
                result.exact_duplicates += 1
                if len(result.exact_noted) < DISTINCT_NOTED:
                    result.exact_noted.append(raw.source)
                continue
            id_digest = digest(rec.id)
            if id_digest in ids:
                held.append((raw.line, Quarantined(raw.source, f"field 'id': {rec.id!r} is used by an earlier row",
                                                   raw.raw)))
                continue
            label = _label(rec, task)
            if looks is not None:
                row = looks.row(rec, sigs[at], probes[at],
                                (words[at], look_words[1][word_ends[at - 1] if at else 0:word_ends[at]]), answers[at])
                verdicts = looks.judge(row)
                verdict = decisive(verdicts)
                # A conflict with any look-alike counts, not only with the one that decides.
                clash = next((v for v in verdicts if v.kind == CONFLICT), None) if verdicts else None
                if clash is not None:
                    result.conflicts.append(pair_note(clash, raw, label))
                if verdict is not None and verdict.kind != DISTINCT:  # one note when the clash decides
                    result.near_duplicates.append(result.conflicts[-1] if verdict is clash else
                                                  pair_note(verdict, raw, label))
                    continue
                if verdict is not None:
                    result.distinct += 1
                    if len(result.distinct_notes) < DISTINCT_NOTED:
                        result.distinct_notes.append(pair_note(verdict, raw, label))
                if label not in label_codes:
                    label_codes[label] = len(label_names)
                    label_names.append(label)
                if task.kind == "extract":
                    _count_written(result, row, raw.source)
                looks.add(row)
                index_lines.append(raw.line)
                index_labels.append(label_codes[label])
            exact.add(row_digest)
            ids.add(id_digest)
            kept.append((at, raw, rec))
        # the kept rows' layouts, found together (a removed row has none), by their own process
        # in a large file
        if layouts is not None:
            texts = [rec.prompt if isinstance(rec, PreferencePair) else rec.input for _, _, rec in kept]
            lines = [raw.line for _, raw, _ in kept]
            if laying is not None:
                laying.send(texts, str(path), lines)
            else:
                places = [at for at, _, _ in kept]
                result.layouts.extend(layouts.assign_all(texts, str(path), lines, layout_made[0][places],
                                                         layout_made[1][places]))
        for at, raw, rec in kept:
            if raw.line in empty_lines:
                result.empty_answers += 1
                if len(result.empty_noted) < DISTINCT_NOTED:
                    result.empty_noted.append(raw.source)
            found = findings[at]
            redaction = redact_row(rec, task, spec.privacy,
                                   NOTHING_FOUND if found is None else dict(zip(detected_texts(rec, task), found)))
            count_kept(result, rec, redaction, task, raw.source, system_text)
            if lengths is not None:
                _add_length(result, *lengths[at], rec.source)
            if keep:
                result.examples.append(redaction.record)
        result.quarantined += [q for _, q in sorted(held, key=lambda lq: lq[0])]

    pending: deque = deque()  # chunks read and sent to the worker, not yet finished
    try:  # a file that cannot be read gets its clear error from read_rows below
        large = Path(path).stat().st_size >= POOL_FROM_BYTES
    except OSError:
        large = False
    laying = pool = None
    fixed = _Fixed(task, spec.privacy, looks, layouts, counter)
    collecting = gc.isenabled()
    # The pass makes a few small objects a row and no reference cycles; the cyclic collector's
    # passes over its growing state took about 9% of the check's time (100,000 rows), so it waits.
    gc.disable()
    try:  # each chunk is finished once DEPTH more are read and sent to the worker
        if WORKERS and large:  # (the layouts' process forked first: a fork copies no thread of the workers')
            laying = _LayoutProcess(layouts) if layouts is not None else None
            fixed = replace(fixed, layouts=None)  # (found by their own process)
            pool = _Workers(WORKERS, fixed)
        for chunk in in_batches(read_rows(path, spec.max_line_bytes), BATCH_ROWS):
            batch, held = read(chunk)
            records = [rec for _, rec in batch]
            made = pool.submit(records) if pool is not None else _ahead(records, fixed)  # (None: the worker's)
            pending.append((batch, held, made))
            if len(pending) > DEPTH:
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
        if pool is not None:
            pool.close()
            pool = None
        if laying is not None:
            # the look-alike index (the workers' arguments held it too) and the sets let go before
            # the layouts come back
            looks = pending = fixed = None
            exact.clear()
            ids.clear()
            laid = laying.finish()
            layouts.__dict__.update(laid.__dict__)
            result.layouts = laying.numbers
    finally:
        if collecting:
            gc.enable()
        if pool is not None:
            pool.close()
        if laying is not None:
            laying.close()
    if on_row and (end := lines_in(Path(path))) is not None and end > reached:
        on_row(end - reached)  # lines after the last row (blank ones)
    _fill_previews(result, path, task, spec)
    return result


def count_kept(result: ScanResult, rec: Example | PreferencePair, redaction: RowRedaction, task: TaskSpec,
               source: str, system_text: str | None = None) -> None:
    """Count a kept row in the card's figures: its personal data and secrets, what redaction did to
    its answer, its label and system prompt, and (generate) the house rules its reply breaks.
    ``system_text``: task.system_text, when the caller has it (a scan reads it once)."""
    found = redaction.findings
    if found:
        result.pii_rows += 1
        result.pii_counts.update(f.kind for f in found)
        if any(f.is_secret for f in found):
            result.secret_rows.append(source)
    result.unredacted_secret_rows += redaction.secrets_left
    for counts, these in ((result.answer_fields, redaction.fields), (result.answers_changed, redaction.changed),
                          (result.answers_kept, redaction.kept), (result.answer_numbers_kept, redaction.numbers_kept),
                          (result.answer_numbers_inside, redaction.numbers_inside)):
        if these:
            counts.update(these)
    if isinstance(rec, Example):
        if task.labels:
            result.labels[rec.target] += 1
        own = rec.system if rec.system is not None else system_text if system_text is not None else task.system_text
        result.system_prompts[own] += 1
    if task.kind == "generate":
        _count_broken(result, rec.chosen if isinstance(rec, PreferencePair) else rec.target, task, source)


def _records_at(path: Path, task: TaskSpec, spec: DataSpec, lines: set[int]) -> dict[int, Example | PreferencePair]:
    """The records on ``lines`` of ``path`` (one more read of the file, keeping only those)."""
    found: dict[int, Example | PreferencePair] = {}
    if not lines:
        return found
    last = max(lines)
    for raw in read_rows(path, spec.max_line_bytes, lines):
        if raw.line in lines and raw.error is None and not raw.empty:
            try:
                found[raw.line] = convert(raw.obj, task, spec.format, spec.columns, raw.source, "x")
            except ValueError:
                pass
        if raw.line >= last:
            break
    return found


def _fill_previews(result: ScanResult, path: Path, task: TaskSpec, spec: DataSpec, limit: int = 50) -> None:
    """Redacted previews for the pairs a card shows, read again from the file, so that the scan
    itself holds no row text."""
    notes = result.conflicts[:limit] + result.near_duplicates[:limit] + result.distinct_notes
    records = _records_at(path, task, spec, {n.kept_line for n in notes} | {n.other_line for n in notes})
    personal = pii.detector(spec.privacy)
    previews = {line: personal.redact(input_text(rec))[:160] for line, rec in records.items()}  # cut after redacting
    for n in notes:
        n.kept_preview = previews.get(n.kept_line, "")
        n.other_preview = previews.get(n.other_line, "")


def layout_previews(layouts: Layouts, numbers: list[int], task: TaskSpec, spec: DataSpec,
                    limit: int = 240) -> dict[int, str]:
    """For each layout in ``numbers``: what its first two rows' inputs share (redacted), read
    again from their files."""
    wanted = {k: layouts.first_rows(k) for k in numbers}
    texts: dict[tuple[str, int], str] = {}
    personal = pii.detector(spec.privacy)
    for file in {f for rows in wanted.values() for f, _ in rows}:
        lines = {line for rows in wanted.values() for f, line in rows if f == file}
        for line, rec in _records_at(Path(file), task, spec, lines).items():
            texts[(file, line)] = personal.redact(rec.prompt if isinstance(rec, PreferencePair) else rec.input)
    out = {}
    for k, rows in wanted.items():
        found = [texts[r] for r in rows if r in texts]
        out[k] = (shared_text(found[0], found[1]) if len(found) == 2 else (found[0] if found else ""))[:limit]
    return out


UNFITTABLE_KEPT = 20


def _count_written(result: ScanResult, row: Any, source: str) -> None:
    """Count a kept extract row's fields and those its text does not write (from its look-alike
    row: :meth:`~taskfit.data.lookalike.LookAlikes.row`)."""
    for name, (_, written) in row.fixed.items():
        result.field_rows[name] += 1
        if not written:
            result.unwritten[name] += 1
            noted = result.unwritten_noted.setdefault(name, [])
            if len(noted) < 3:
                noted.append(source)


def _count_broken(result: ScanResult, reply: str, task: TaskSpec, source: str) -> None:
    """Count the house rules (task.reply) a kept reference reply breaks, by the check a served
    reply and a synthetic draft are held to."""
    broken = rule_violations(task.reply, reply)
    result.broken_rows += bool(broken)
    for rule in broken:
        result.broken_rules[rule] += 1
        noted = result.broken_noted.setdefault(rule, [])
        if len(noted) < 3:
            noted.append(source)


def _add_length(result: ScanResult, needed: int, answer: int, fixed: int | None, rendered: int,
                source: str | None) -> None:
    """Count a kept row's tokens (:meth:`TokenCounter.lengths`)."""
    result.lengths.append(needed)
    result.rendered_tokens += rendered
    result.answer_tokens += answer
    result.answer_lengths.append(answer)
    if answer > result.longest_answer[0]:
        result.longest_answer = (answer, source or "")
    if fixed is not None:
        result.fixed_lengths.append(fixed)
        heapq.heappush(result.fixed_longest, (fixed, source or ""))
        if len(result.fixed_longest) > UNFITTABLE_KEPT:
            heapq.heappop(result.fixed_longest)
