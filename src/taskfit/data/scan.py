"""One streaming pass over a data file: validate, deduplicate, audit, find personal data, and
decide each row's redaction (counting the answers it would change).

The pass keeps compact state per row (hashes, MinHash signatures in the LSH index, labels, token
counts), never the rows themselves unless asked (``keep=True``, for ``prepare``), so ``data check``
runs on files much larger than memory. Counts always add up:

    read = kept + quarantined + exact duplicates + near-duplicates
"""

from __future__ import annotations

import hashlib
import heapq
from array import array
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from taskfit.config import DataSpec, TaskSpec
from taskfit.data import pii
from taskfit.data.formats import convert
from taskfit.data.redaction import redact_row
from taskfit.data.read import read_rows
from taskfit.records import Example, PreferencePair
from taskfit.rendering import user_text
from taskfit.tasks import get_task

_WS = re.compile(r"\s+")


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
    near_duplicates: list[PairNote] = field(default_factory=list)
    conflicts: list[PairNote] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
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
    lengths: Any = field(default_factory=lambda: array("i"))  # rendered tokens per kept row
    # The longest rows by what no cut of the input can shorten (template, system prompt, answer):
    # (tokens, source), at most UNFITTABLE_KEPT of them, and the tokens for every example row.
    fixed_longest: list[tuple[int, str]] = field(default_factory=list)
    fixed_lengths: Any = field(default_factory=lambda: array("i"))
    answer_tokens: int = 0
    examples: list[Example | PreferencePair] = field(default_factory=list)  # with keep=True, redacted

    @property
    def kept(self) -> int:
        return self.read - len(self.quarantined) - self.exact_duplicates - len(self.near_duplicates)

    def counts_add_up(self) -> bool:
        return self.read == self.kept + len(self.quarantined) + self.exact_duplicates + len(self.near_duplicates)


def normalise(text: str) -> str:
    return _WS.sub(" ", text).strip().casefold()


def _texts(rec: Example | PreferencePair) -> list[str]:
    if isinstance(rec, PreferencePair):
        return [rec.prompt, rec.chosen, rec.rejected]
    return [t for t in (rec.input, rec.context, rec.target, rec.system) if t]


def _dedup_text(rec: Example | PreferencePair) -> str:
    """The text compared for near-duplicates. For qa it is the question, tagged with a digest of
    its context: many questions share one passage, and only the same question about the same
    passage is a duplicate."""
    if isinstance(rec, PreferencePair):
        return rec.prompt
    if rec.context is None:
        return rec.input
    tag = hashlib.blake2b(normalise(rec.context).encode(), digest_size=8).hexdigest()
    return f"[{tag}] {rec.input}"


def _label(rec: Example | PreferencePair, task: TaskSpec) -> str:
    if isinstance(rec, PreferencePair):
        return rec.chosen[:60]
    return rec.target if get_task(task.kind).scores_labels else rec.target[:60]


class _NearDuplicates:
    """MinHash LSH over character shingles of the normalised input, in compact arrays.

    Two inputs are near-duplicates when their estimated Jaccard similarity reaches ``threshold``,
    or when the smaller one is almost contained in the other (``containment``): a re-sent ticket
    with "Any update?" in front, or a reply quoting the original. The index uses the bands of
    datasketch's optimal LSH parameters for a lower threshold, so that contained pairs come up as
    candidates; every candidate is verified on its signature.

    Memory per indexed row: the signature (4 bytes per permutation) and one 8-byte hash plus a
    4-byte row number per band, in numpy arrays: about 0.5 KB per distinct row with the defaults
    (datasketch's dict-based index takes about 4-8 KB).
    """

    _FLUSH = 50_000

    def __init__(self, shingle: int, num_perm: int, threshold: float, containment: float):
        import numpy as np
        from datasketch import MinHash
        from datasketch.lsh import _optimal_param

        # Permutations are drawn once (datasketch would redraw them for every MinHash), and
        # shingles are hashed with CRC-32: deterministic across runs and ~10x faster than SHA-1.
        template = MinHash(num_perm=num_perm, seed=1)
        self._permutations, self._scheme = template.permutations, template.scheme
        self.k = shingle
        self.num_perm = num_perm
        self.threshold = threshold
        self.containment = containment
        self.b, self.r = _optimal_param(min(threshold, 0.5), num_perm, 0.5, 0.5)
        rng = np.random.default_rng(7)
        self._mix = rng.integers(1, 2**63, size=self.r, dtype=np.uint64) | np.uint64(1)
        self._sigs: list[Any] = []  # chunks of [_FLUSH, num_perm] uint32
        self._sizes: list[Any] = []  # chunks of [_FLUSH] int32
        self.n = 0
        self._sorted_h = [np.empty(0, np.uint64) for _ in range(self.b)]
        self._sorted_i = [np.empty(0, np.int64) for _ in range(self.b)]
        self._pending: list[dict[int, int]] = [{} for _ in range(self.b)]

    def signature(self, text: str) -> tuple[Any, int]:
        """(uint32 MinHash signature, number of distinct shingles)."""
        import numpy as np
        from datasketch import MinHash

        t = normalise(text)
        shingles = {t[i:i + self.k].encode() for i in range(max(1, len(t) - self.k + 1))}
        m = MinHash(num_perm=self.num_perm, hashfunc=zlib.crc32, permutations=self._permutations,
                    scheme=self._scheme)
        m.update_batch(list(shingles))
        return m.hashvalues.astype(np.uint32), len(shingles)

    def _bands(self, sig: Any) -> list[int]:
        import numpy as np

        rows = sig[: self.b * self.r].reshape(self.b, self.r).astype(np.uint64)
        with np.errstate(over="ignore"):
            return [int(h) for h in (rows * self._mix).sum(axis=1)]

    def _row(self, i: int) -> tuple[Any, int]:
        chunk, at = divmod(i, self._FLUSH)
        return self._sigs[chunk][at], int(self._sizes[chunk][at])

    def similar(self, sig: Any, size: int, other: int) -> float:
        """Jaccard, or containment of the smaller set when that passes its own bar; 0 if neither."""
        other_sig, other_size = self._row(other)
        j = float((sig == other_sig).mean())
        if j >= self.threshold:
            return round(j, 3)
        shared = j / (1 + j) * (size + other_size)  # |A ∩ B| from J and the set sizes
        c = shared / max(1, min(size, other_size))
        return round(c, 3) if c >= self.containment else 0.0

    def candidates(self, sig: Any) -> set[int]:
        import numpy as np

        found: set[int] = set()
        for band, h in enumerate(self._bands(sig)):
            hit = self._pending[band].get(h)
            if hit is not None:
                found.add(hit)
            hs = self._sorted_h[band]
            lo = int(np.searchsorted(hs, np.uint64(h), side="left"))
            hi = int(np.searchsorted(hs, np.uint64(h), side="right"))
            found.update(int(x) for x in self._sorted_i[band][lo:hi])
        return found

    def insert(self, sig: Any, size: int) -> int:
        """Index a row; return its number (0, 1, 2...)."""
        import numpy as np

        i = self.n
        chunk, at = divmod(i, self._FLUSH)
        if at == 0:
            self._sigs.append(np.zeros((self._FLUSH, self.num_perm), np.uint32))
            self._sizes.append(np.zeros(self._FLUSH, np.int32))
        self._sigs[chunk][at] = sig
        self._sizes[chunk][at] = size
        for band, h in enumerate(self._bands(sig)):
            self._pending[band].setdefault(h, i)
        self.n += 1
        if len(self._pending[0]) >= self._FLUSH:
            self._flush()
        return i

    def _flush(self) -> None:
        import numpy as np

        for band in range(self.b):
            pend = self._pending[band]
            hs = np.concatenate([self._sorted_h[band], np.fromiter(pend.keys(), np.uint64, len(pend))])
            ix = np.concatenate([self._sorted_i[band], np.fromiter(pend.values(), np.int64, len(pend))])
            order = np.argsort(hs, kind="stable")
            self._sorted_h[band], self._sorted_i[band] = hs[order], ix[order]
            self._pending[band] = {}

    def match(self, text: str) -> tuple[list[tuple[int, float]], int | None]:
        """(earlier near-duplicates as (row number, similarity), most similar first; this row's
        number when it had none and was indexed, else None)."""
        sig, size = self.signature(text)
        found = sorted(((other, self.similar(sig, size, other)) for other in self.candidates(sig)),
                       key=lambda kv: -kv[1])
        found = [(k, sim) for k, sim in found if sim > 0]
        return found, (None if found else self.insert(sig, size))


def _near_index(spec: DataSpec) -> _NearDuplicates:
    d = spec.dedup
    return _NearDuplicates(d.shingle, d.num_perm, d.threshold, d.containment)


class TokenCounter:
    """Rendered length of each row, batched through the model's fast tokenizer.

    The chat template's own tokens (system prompt, role markers, end-of-turn) are measured once
    with :func:`taskfit.rendering.render`; each row adds its own text's tokens.
    """

    def __init__(self, tokenizer: Any, task: TaskSpec, room: int = 0):
        from taskfit.rendering import render

        probe = Example(id="p", input="x", target="y")
        r = render(tokenizer, task, probe, target="y")
        one = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
        self.overhead = len(r.ids) - one("x") - one("y")
        self.tokenizer = tokenizer
        self.system_len = one(task.system_text)
        # A prompt that must be cut leaves this many tokens for the answer (rendering.answer_room),
        # in training as in evaluation, so a short answer still takes that room.
        self.room = room
        self.pending: list[tuple[str, str, str | None, str | None, str]] = []

    def add(self, rec: Example | PreferencePair) -> None:
        if isinstance(rec, PreferencePair):  # DPO cuts a long answer, so a pair always fits
            self.pending.append((rec.prompt, max(rec.chosen, rec.rejected, key=len), rec.system, None, ""))
        else:  # for qa the context is cut, never the question
            uncut = user_text(replace(rec, context="")) if rec.context is not None else ""
            self.pending.append((user_text(rec), rec.target, rec.system, rec.source, uncut))

    def flush(self) -> Iterator[tuple[int, int, int | None, str | None]]:
        """(rendered tokens, answer tokens, tokens no cut of the input can remove or None, source)
        for every pending row, in order."""
        if not self.pending:
            return
        enc = self.tokenizer([p[0] for p in self.pending] + [p[1] for p in self.pending]
                             + [p[4] for p in self.pending], add_special_tokens=False)["input_ids"]
        n = len(self.pending)
        for i, (_, _, system, source, _) in enumerate(self.pending):
            extra = 0 if system is None else len(self.tokenizer(system, add_special_tokens=False)["input_ids"]) - self.system_len
            answer = len(enc[n + i]) + 1  # + end-of-turn
            kept = max(answer, self.room) - 1  # the answer's tokens, or the room kept for it
            fixed = self.overhead + kept + extra + len(enc[2 * n + i]) if source is not None else None
            yield self.overhead + len(enc[i]) + len(enc[n + i]) + extra, answer, fixed, source
        self.pending = []


def scan(path: Path, task: TaskSpec, spec: DataSpec, tokenizer: Any = None, keep: bool = False,
         on_row: Callable[[], None] | None = None, id_prefix: str = "", room: int = 0) -> ScanResult:
    """Stream ``path`` once. With ``keep``, the kept records are returned too, redacted as
    ``spec.privacy`` says (:func:`taskfit.data.redaction.redact_row`), as ``prepare`` writes them."""
    fmt = spec.format
    result = ScanResult(path=str(path), kind="preferences" if fmt == "preference" else "examples")
    exact: set[int] = set()  # 64-bit digests of the normalised row
    ids: set[int] = set()  # 64-bit digests of the row ids
    near = _near_index(spec) if spec.dedup.near else None
    # Per indexed row, only its line and label code are kept (compact arrays, not row text).
    index_lines, index_labels = array("q"), array("i")
    label_codes: dict[str, int] = {}
    label_names: list[str] = []
    counter = TokenCounter(tokenizer, task, room) if tokenizer is not None else None
    check_answer = get_task(task.kind).answer_check(task)  # the answer must fit the task (built once)
    for raw in read_rows(path, spec.max_line_bytes):
        result.read += 1
        if on_row:
            on_row()
        if raw.error:
            result.quarantined.append(Quarantined(raw.source, raw.error, raw.raw))
            continue
        try:
            rec = convert(raw.obj, task, fmt, spec.columns, raw.source, f"{id_prefix}{Path(path).stem}-{raw.line}")
            if isinstance(rec, PreferencePair):
                result.kind = "preferences"
            else:
                check_answer(rec)
        except ValueError as exc:
            result.quarantined.append(Quarantined(raw.source, str(exc), raw.raw))
            continue
        id_digest = int.from_bytes(hashlib.blake2b(rec.id.encode(), digest_size=8).digest(), "little")
        if id_digest in ids:
            result.quarantined.append(Quarantined(raw.source, f"field 'id': {rec.id!r} is used by an earlier row", raw.raw))
            continue
        texts = _texts(rec)
        digest = int.from_bytes(hashlib.blake2b("\x1f".join(normalise(t) for t in texts).encode(),
                                                digest_size=8).digest(), "little")
        if digest in exact:
            result.exact_duplicates += 1
            continue
        label = _label(rec, task)
        if near is not None:
            matches, number = near.match(_dedup_text(rec))
            if matches:
                notes = [PairNote(f"{path}:{index_lines[k]}", raw.source, sim, label_names[index_labels[k]],
                                  label, index_lines[k], raw.line) for k, sim in matches]
                result.near_duplicates.append(notes[0])
                if not isinstance(rec, PreferencePair):
                    # A conflict with any look-alike counts, not only with the most similar one.
                    clash = next((n for n in notes if n.kept_label != label), None)
                    if clash is not None:
                        result.conflicts.append(clash)
                continue
            if label not in label_codes:
                label_codes[label] = len(label_names)
                label_names.append(label)
            index_lines.append(raw.line)
            index_labels.append(label_codes[label])
        exact.add(digest)
        ids.add(id_digest)
        redaction = redact_row(rec, task, spec.privacy)
        found = redaction.findings
        if found:
            result.pii_rows += 1
            result.pii_counts.update(f.kind for f in found)
            if any(f.is_secret for f in found):
                result.secret_rows.append(raw.source)
        result.unredacted_secret_rows += redaction.secrets_left
        result.answer_fields.update(redaction.fields)
        result.answers_changed.update(redaction.changed)
        result.answers_kept.update(redaction.kept)
        result.answer_numbers_kept.update(redaction.numbers_kept)
        if isinstance(rec, Example):
            if task.labels:
                result.labels[rec.target] += 1
            result.system_prompts[rec.system if rec.system is not None else task.system_text] += 1
        if counter is not None:
            counter.add(rec)
            if len(counter.pending) >= 512:
                _take_lengths(result, counter)
        if keep:
            result.examples.append(redaction.record)
    if counter is not None:
        _take_lengths(result, counter)
    _fill_previews(result, path, task, spec)
    return result


def _fill_previews(result: ScanResult, path: Path, task: TaskSpec, spec: DataSpec, limit: int = 50) -> None:
    """Redacted previews for the pairs a card shows: one more read of the file, keeping only the
    lines it needs, so the scan itself holds no row text."""
    notes = result.conflicts[:limit] + result.near_duplicates[:limit]
    wanted = {n.kept_line for n in notes} | {n.other_line for n in notes}
    if not wanted:
        return
    previews: dict[int, str] = {}
    personal = pii.detector(spec.privacy)
    for raw in read_rows(path, spec.max_line_bytes):
        if raw.line in wanted and raw.error is None:
            try:
                rec = convert(raw.obj, task, spec.format, spec.columns, raw.source, "x")
            except ValueError:
                continue
            previews[raw.line] = personal.redact(_dedup_text(rec)[:160])
    for n in notes:
        n.kept_preview = previews.get(n.kept_line, "")
        n.other_preview = previews.get(n.other_line, "")


UNFITTABLE_KEPT = 20


def _take_lengths(result: ScanResult, counter: TokenCounter) -> None:
    for total, answer, fixed, source in counter.flush():
        result.lengths.append(total)
        result.answer_tokens += answer
        if fixed is not None:
            result.fixed_lengths.append(fixed)
            heapq.heappush(result.fixed_longest, (fixed, source or ""))
            if len(result.fixed_longest) > UNFITTABLE_KEPT:
                heapq.heappop(result.fixed_longest)
