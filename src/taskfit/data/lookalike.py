"""Look-alike rows: near-identical inputs told apart by their answers, and rows grouped by layout.

Two rows whose inputs are near-identical (MinHash LSH over character shingles, see
:class:`MinHashIndex`) are *look-alikes*. What the later one is depends on the two answers, as
the task kind describes them (:meth:`taskfit.tasks.base.Task.answer_parts`):

- a **copy** when the answers are the same (a free reply: near-identical too) and the inputs
  differ trivially: one of the two has at most ``data.dedup.copy_words`` words the other lacks (a
  re-print header, a greeting in front, a changed spelling). It is removed as a near-duplicate;
- a **distinct example** when both inputs have more words of their own than that (a template
  filled in twice: another receipt of the same shop, with its own items, whatever its answer), or
  when every part of the answer that differs is written in its own row's input (the date and
  total on one shop's receipts, an answer found in the qa passage, the refusal), or is a free
  reply: both rows are kept;
- a **conflict** otherwise: the inputs differ trivially and an answer that differs is not
  written in its text (a label), or the two inputs have the same words. It is removed and
  listed, for a person to decide.

Preference pairs are copies when both answers are near-identical, and a conflict when one pair's
chosen answer is the other's rejected one and the other way round.

*Layouts* (templates) group rows whose inputs, digits masked, are alike at a lower bar
(``data.dedup.template``): one shop's receipts, one sender's invoices, tickets sharing a long
signature. The data card counts rows per layout on each side of the split, and ``data.group_by:
template`` keeps each layout on one side.

Per indexed row only compact arrays are kept (signatures, 64-bit digests, codes), never its text.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import zlib
from array import array
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any, Sequence

from taskfit.config import DedupSpec, TaskSpec
from taskfit.data import native
from taskfit.records import AnswerParts, Example, PreferencePair
from taskfit.tasks import get_task
from taskfit.tasks.base import normalise, words

_DIGITS = re.compile(r"\d+")

COPY, DISTINCT, CONFLICT = "copy", "distinct", "conflict"


def digest(text: str) -> int:
    """A signed 64-bit digest (what an ``array("q")`` holds)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def input_text(rec: Example | PreferencePair) -> str:
    """The text compared for look-alikes. For qa it is the question, tagged with a digest of
    its context: many questions share one passage, and only questions about the same passage
    are compared."""
    if isinstance(rec, PreferencePair):
        return rec.prompt
    if rec.context is None:
        return rec.input
    tag = hashlib.blake2b(normalise(rec.context).encode(), digest_size=8).hexdigest()
    return f"[{tag}] {rec.input}"


class _Table:
    """Rows of one shape in numpy chunks of 50,000 (one allocation per chunk)."""

    CHUNK = 50_000

    def __init__(self, shape: tuple[int, ...], dtype: Any):
        self.shape, self.dtype, self.chunks, self.n = shape, dtype, [], 0

    def append(self, value: Any) -> None:
        import numpy as np

        chunk, at = divmod(self.n, self.CHUNK)
        if at == 0:
            self.chunks.append(np.zeros((self.CHUNK, *self.shape), self.dtype))
        self.chunks[chunk][at] = value
        self.n += 1

    def __getitem__(self, i: int) -> Any:
        chunk, at = divmod(i, self.CHUNK)
        return self.chunks[chunk][at]

    def gather(self, rows: Any) -> Any:
        """The rows numbered ``rows`` (an int64 array, any order), as one array."""
        import numpy as np

        chunk, at = np.divmod(rows, self.CHUNK)
        first = int(chunk[0]) if len(chunk) else 0
        if not len(chunk) or (chunk == first).all():  # all in one chunk, as most often
            return self.chunks[first][at] if len(chunk) else np.empty((0, *self.shape), self.dtype)
        out = np.empty((len(rows), *self.shape), self.dtype)
        for c in np.unique(chunk).tolist():
            where = chunk == c
            out[where] = self.chunks[c][at[where]]
        return out


def similarity(j: float, size: int, other_size: int, threshold: float, containment: float | None) -> float:
    """From two texts' estimated Jaccard ``j`` (their signatures' share of equal values) and their
    distinct shingles: ``j``, or the containment of the smaller set when that passes its own bar;
    0 if neither passes."""
    if j >= threshold:
        return round(j, 3)
    if containment is None:
        return 0.0
    c = float(contained(j, size, other_size))
    return round(c, 3) if c >= containment else 0.0


def contained(j: Any, size: Any, other_size: Any) -> Any:
    """The share of the smaller of two shingle sets found in the other, from their estimated
    Jaccard ``j`` and their sizes (|A ∩ B| = j / (1 + j) · (|A| + |B|)), at most 1: for numbers or
    numpy arrays alike (one row's candidates at once), with the same float arithmetic."""
    import numpy as np

    return np.minimum(1.0, j / (1 + j) * (size + other_size) / np.maximum(1, np.minimum(size, other_size)))


_FMIX = (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)  # MurmurHash3's 32-bit finalizer


class Shingles:
    """MinHash signatures over the character shingles of normalised texts, a batch at a time.

    The values are datasketch's ``MinHash(num_perm, seed=1)`` (its default "affine32" scheme)
    fed with the CRC-32 of each distinct shingle's UTF-8 bytes, exactly (tested against it); made
    here with numpy over a batch of texts instead of one Python call a shingle. CRC-32 of a
    fixed-length input is affine over GF(2), so the CRC of a shingle of ``k`` ASCII characters is
    the XOR of ``k`` table entries (one table per position) and a constant; each shingle is packed
    in 7 bits a character into a 64-bit integer with its text's number above, so one sort finds
    every text's distinct shingles. Shingles with a character beyond ASCII (``€``, ``ü``), texts
    shorter than ``k``, and shingles of more than 8 characters are hashed one by one in Python.
    Where the C kernels are built (:mod:`taskfit.data.native`), a whole chunk's signatures are made
    by ``signatures()`` in ``native.c`` instead: the same values (tested), about a third of the time.
    """

    BATCH = 32  # texts a pass
    PERMS = 32  # permutations a pass: their values for a batch's shingles stay within the processor's cache

    def __init__(self, k: int, num_perm: int):
        import numpy as np

        self.k, self.num_perm = k, num_perm
        # datasketch's draw of the affine permutations h -> a * h + b mod 2^32 (a odd), seed 1
        gen = np.random.RandomState(1)
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        self._a, self._b = a, b
        self.packed = k <= 8  # 7 bits a character: k characters and a batch's text number fit 64 bits
        zero = zlib.crc32(bytes(k))
        self._tables = np.array([[zlib.crc32(bytes(i) + bytes([v]) + bytes(k - i - 1)) ^ zero for v in range(128)]
                                 for i in range(k)], np.uint32) if self.packed else None
        self._zero = np.uint32(zero)

    def signatures(self, texts: Sequence[str], normalised: bool = False) -> tuple[Any, Any]:
        """(uint32 signatures, one row a text; distinct shingles per text). ``normalised``: the
        texts are already :func:`normalise`'s (which leaves its own output as it is)."""
        import numpy as np

        texts = list(texts) if normalised else [normalise(t) for t in texts]
        lib = native.library()
        if lib is not None and texts:  # all at once in C: the same values as the batches below
            lens = np.fromiter((len(t) for t in texts), np.int64, len(texts))
            points = np.frombuffer("".join(texts).encode("utf-32-le"), np.uint32)
            sigs_ = np.empty((len(texts), self.num_perm), np.uint32)
            sizes_ = np.empty(len(texts), np.int64)
            if lib.signatures(native.ptr(points) if len(points) else None, native.ptr(lens), len(texts), self.k,
                              native.ptr(self._a), native.ptr(self._b), self.num_perm, native.ptr(sigs_),
                              native.ptr(sizes_)) == 0:
                return sigs_, sizes_
        sigs, sizes = [], []
        for at in range(0, len(texts), self.BATCH):
            batch = texts[at:at + self.BATCH]
            sig, size = self._batch(batch)
            sigs.append(sig)
            sizes.append(size)
        if not sigs:
            return np.empty((0, self.num_perm), np.uint32), np.empty(0, np.int64)
        return np.concatenate(sigs), np.concatenate(sizes)

    def _slow(self, t: str, ascii_too: bool) -> list[int]:
        """CRC-32s of the distinct shingles of ``t`` hashed one by one (all of them, or only
        those with a character beyond ASCII)."""
        k = self.k
        found = {t[i:i + k] for i in range(max(1, len(t) - k + 1))}
        return [zlib.crc32(s.encode()) for s in found if ascii_too or len(t) < k or not s.isascii()]

    def _batch(self, texts: list[str]) -> tuple[Any, Any]:
        import numpy as np

        k, n = self.k, len(texts)
        rows = np.empty(0, np.int64)
        crcs = np.empty(0, np.uint32)
        slow_rows: list[int] = []
        slow: list[int] = []
        if self.packed:
            lens = np.fromiter((len(t) for t in texts), np.int64, n)
            points = np.frombuffer("".join(texts).encode("utf-32-le"), np.uint32)
            count = np.maximum(lens - k + 1, 0)  # shingles a text
            # the start of every shingle that lies within one text, and its text's number
            text_of = np.repeat(np.arange(n, dtype=np.int64), count)
            first = np.cumsum(count) - count
            start = np.arange(int(count.sum())) - first[text_of] + (np.cumsum(lens) - lens)[text_of]
            key = np.zeros(len(start), np.uint64)
            wide = np.zeros(len(start), bool)
            for i in range(k):
                point = points[start + i]
                key |= point.astype(np.uint64) << np.uint64(7 * i)
                wide |= point > 127
            key = np.sort(key[~wide] | (text_of[~wide].astype(np.uint64) << np.uint64(7 * k)))
            key = key[np.concatenate((key[:1] == key[:1], key[1:] != key[:-1]))]  # distinct (np.unique: 10x the time)
            rows = (key >> np.uint64(7 * k)).astype(np.int64)
            crcs = np.full(len(key), self._zero, np.uint32)
            for i in range(k):
                crcs ^= self._tables[i][((key >> np.uint64(7 * i)) & np.uint64(127)).astype(np.intp)]
            # a shingle with a character beyond ASCII: each distinct one of a text hashed in Python
            joined = "".join(texts)
            beyond = {(r, joined[at:at + k]) for r, at in zip(text_of[wide].tolist(), start[wide].tolist())}
            for r, shingle in beyond:
                slow_rows.append(r)
                slow.append(zlib.crc32(shingle.encode()))
            for r in np.flatnonzero(lens < k).tolist():  # a text shorter than a shingle: itself
                found = self._slow(texts[r], ascii_too=False)
                slow_rows += [r] * len(found)
                slow += found
        else:
            for r, t in enumerate(texts):
                found = self._slow(t, ascii_too=True)
                slow_rows += [r] * len(found)
                slow += found
        if slow:
            rows = np.concatenate([rows, np.array(slow_rows, np.int64)])
            crcs = np.concatenate([crcs, np.array(slow, np.uint32)])
            order = np.argsort(rows, kind="stable")
            rows, crcs = rows[order], crcs[order]
        h = crcs
        s1, m1, s2, m2, s3 = (np.uint32(c) for c in _FMIX)
        h ^= h >> s1
        h *= m1
        h ^= h >> s2
        h *= m2
        h ^= h >> s3
        sizes = np.bincount(rows, minlength=n)
        starts = np.cumsum(sizes) - sizes
        # permutations x shingles, PERMS permutations at a time in one buffer that stays in the
        # processor's cache (all 128 at once: 1.8x the time)
        out = np.empty((self.num_perm, n), np.uint32)
        buf = np.empty((min(self.PERMS, self.num_perm), len(h)), np.uint32)
        for p in range(0, self.num_perm, self.PERMS):
            values = buf[:min(self.PERMS, self.num_perm - p)]
            np.multiply(self._a[p:p + self.PERMS, None], h, out=values)
            values += self._b[p:p + self.PERMS, None]
            out[p:p + self.PERMS] = np.minimum.reduceat(values, starts, axis=1)
        return out.T, sizes


class _Pending:
    """The first row under each band hash since the last flush: an open-addressing hash table
    (linear probing) in two numpy arrays, looked up and filled a batch of hashes at a time. A dict
    per band took a Python loop a hash and about 100 bytes an entry; this takes 12 bytes a slot,
    at most 60% of the slots used (it doubles past that)."""

    MIX = 0x9E3779B97F4A7C15  # Fibonacci hashing: the slot is the product's top bits

    def __init__(self, expected: int):
        import numpy as np

        self._empty(max(10, int(np.ceil(np.log2(expected / 0.6)))))

    def _empty(self, bits: int) -> None:
        import numpy as np

        self.bits = bits
        self.keys = np.zeros(1 << bits, np.uint64)
        self.rows = np.full(1 << bits, -1, np.int32)  # -1: an empty slot
        self.n = 0

    def _slots(self, keys: Any) -> Any:
        import numpy as np

        with np.errstate(over="ignore"):
            return ((keys * np.uint64(self.MIX)) >> np.uint64(64 - self.bits)).astype(np.int64)

    def get(self, keys: Any) -> Any:
        """The row under each hash of ``keys`` (uint64), -1 where there is none."""
        import numpy as np

        lib = native.library()
        if lib is not None:
            keys = np.ascontiguousarray(keys, np.uint64)
            out = np.empty(len(keys), np.int64)
            if len(keys):
                lib.pending_get(native.ptr(keys), len(keys), native.ptr(self.keys), native.ptr(self.rows), self.bits,
                                native.ptr(out))
            return out
        out = np.full(len(keys), -1, np.int64)
        todo, slot, mask = np.arange(len(keys)), self._slots(keys), (1 << self.bits) - 1
        while len(todo):
            row = self.rows[slot]
            hit = (row >= 0) & (self.keys[slot] == keys[todo])
            out[todo[hit]] = row[hit]
            go_on = (row >= 0) & ~hit  # a slot taken by another hash: the next one
            todo, slot = todo[go_on], (slot[go_on] + 1) & mask
        return out

    def add(self, keys: Any, rows: Any) -> None:
        """Put each hash under its row, unless the table has it already: the first row under a
        hash stays, an earlier one of ``keys`` included. In C where
        :func:`~taskfit.data.native.library` is built, else numpy: the same table."""
        import numpy as np

        if (self.n + len(keys)) / len(self.rows) > 0.6:
            old_keys, old_rows = self.items()
            self._empty(self.bits + 1)
            self.add(old_keys, old_rows)
            return self.add(keys, rows)
        lib = native.library()
        if lib is not None:
            keys, rows = np.ascontiguousarray(keys, np.uint64), np.ascontiguousarray(rows, np.int32)
            if len(keys):
                self.n += lib.pending_add(native.ptr(keys), native.ptr(rows), len(keys), native.ptr(self.keys),
                                          native.ptr(self.rows), self.bits)
            return
        keys, first = np.unique(keys, return_index=True)  # the first row under each
        absent = self.get(keys) < 0
        keys, rows = keys[absent], np.asarray(rows)[first][absent]
        todo, slot, mask = np.arange(len(keys)), self._slots(keys), (1 << self.bits) - 1
        while len(todo):
            free = self.rows[slot] < 0
            taken, first = np.unique(slot[free], return_index=True)  # one hash a free slot
            winners = todo[free][first]
            self.keys[taken], self.rows[taken] = keys[winners], rows[winners]
            placed = np.zeros(len(keys), bool)
            placed[winners] = True
            left = ~placed[todo]
            todo, slot = todo[left], (slot[left] + 1) & mask
        self.n += len(keys)

    def items(self) -> tuple[Any, Any]:
        used = self.rows >= 0
        return self.keys[used], self.rows[used]

    def sorted(self) -> tuple[Any, Any]:
        """:meth:`items` sorted by hash (in C where :func:`~taskfit.data.native.library` is
        built: a radix sort, about a tenth of numpy's argsort and gathers on a flush's million)."""
        import numpy as np

        lib = native.library()
        if lib is not None:
            keys, rows = np.empty(self.n, np.uint64), np.empty(self.n, np.int32)
            if lib.pending_sorted(native.ptr(self.keys), native.ptr(self.rows), self.bits, native.ptr(keys),
                                  native.ptr(rows), self.n) != self.n:
                raise MemoryError("the look-alike index's flush")
            return keys, rows
        keys, rows = self.items()
        order = np.argsort(keys)
        return keys[order], rows[order]

    def clear(self) -> None:
        self.rows.fill(-1)
        self.n = 0


@dataclass(slots=True)  # (not frozen: a frozen dataclass takes 4x the time to make, one or more a row)
class Probe:
    """A signature looked up in a :class:`MinHashIndex` (:meth:`MinHashIndex.probe`)."""

    bands: Any  # its band hashes
    merged: list[int]  # rows under them in the index's merged (sorted) part
    flushes: int  # the index's merges when it was made
    batch: _Batch | None = None  # the batch it was looked up in with others (MinHashIndex.lookup)
    at: int = 0  # its place there


class _Batch:
    """Signatures looked up together, in order (:meth:`MinHashIndex.lookup`): each row's
    candidates in the index as it stood are verified for the whole batch in a few numpy passes;
    those a row gains from the rows of the batch indexed before it (the first under one of its
    band hashes since the last flush, as :meth:`MinHashIndex.candidates` finds them) are
    verified when it asks. The matches are those :meth:`MinHashIndex.matches` finds, row by row,
    with the same arithmetic. The rows it indexes wait until the index's
    :meth:`~MinHashIndex._commit` puts them in the pending table, all at once."""

    def __init__(self, index: MinHashIndex, sigs: Any, sizes: Any, bands: Any):
        import numpy as np

        self.index, self.sigs, self.sizes, self.bands = index, sigs, sizes, bands
        self.flushes = index._flushes
        n, b = bands.shape
        self.numbers = [-1] * n  # each row's number in the index once inserted
        self.waiting: list[int] = []  # rows inserted, not yet in the pending table
        self.found: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        flat = bands.ravel()
        pended = index._pending.get(flat)
        self.known = pended >= 0  # hashes with a bucket before the batch
        # Hashes without one that several rows of the batch share: the first of them indexed
        # makes the bucket; later[row] lists, per such hash, its band and the rows before it
        # that hold it.
        self.later: dict[int, list[tuple[int, list[int]]]] = {}
        new = np.flatnonzero(~self.known)
        order = new[np.argsort(flat[new], kind="stable")]  # equal hashes together, by row
        shared = np.flatnonzero(flat[order][1:] == flat[order][:-1])
        if len(shared):
            starts = shared[np.concatenate(([True], shared[1:] != shared[:-1] + 1))]
            for first in starts.tolist():
                end = first + 1
                while end + 1 < len(order) and flat[order[end + 1]] == flat[order[first]]:
                    end += 1
                rows = (order[first:end + 1] // b).tolist()
                band = int(order[first]) % b
                for k in range(1, len(rows)):
                    self.later.setdefault(rows[k], []).append((band, rows[:k]))
        whose, rows, same = index._pairs(bands, pended, sigs)
        if not len(whose):
            return
        for i, k, sim in index._scored(same, sizes[whose], rows):
            self.found[int(whose[i])].append((k, sim))

    @property
    def live(self) -> bool:
        """False once the index has merged its pending hashes since the batch was looked up."""
        return self.index._flushes == self.flushes

    def _owners(self, at: int) -> set[int]:
        """The rows of the batch indexed before row ``at`` that made a bucket it falls in."""
        owners = set()
        for _, before in self.later.get(at, ()):
            owner = next((self.numbers[j] for j in before if self.numbers[j] >= 0), -1)
            if owner >= 0:
                owners.add(owner)
        return owners

    def matches(self, at: int) -> list[tuple[int, float]]:
        index = self.index
        if not self.live:  # merged since: looked up alone, again
            return index.matches(self.sigs[at], int(self.sizes[at]))
        fresh = self._owners(at) if at in self.later else None
        found = self.found[at] + (index._verified(self.sigs[at], int(self.sizes[at]), fresh) if fresh else [])
        return sorted(found, key=lambda kv: (-kv[1], kv[0])) if len(found) > 1 else found

    def insert(self, i: int, at: int) -> None:
        """Row ``at`` of the batch is indexed as row ``i``."""
        b = self.index.b
        if not self.known[at * b]:  # a first-band hash new to the table, unless a row before made it
            before = next((rows for band, rows in self.later.get(at, ()) if band == 0), ())
            if not any(self.numbers[j] >= 0 for j in before):
                self.index._first += 1
        self.numbers[at] = i
        self.waiting.append(at)

    def commit(self) -> tuple[Any, Any]:
        """(hashes, rows) the waiting rows add to the pending table, in their order: each hash
        that had no bucket before the batch (the table keeps the first row under one); the
        waiting list emptied."""
        import numpy as np

        b = self.index.b
        at = np.asarray(self.waiting, np.int64)
        self.waiting = []
        keys = self.bands[at].ravel()
        rows = np.repeat(np.asarray(self.numbers, np.int32)[at], b)
        new = ~self.known.reshape(-1, b)[at].ravel()
        return keys[new], rows[new]


class MinHashIndex:
    """MinHash LSH over character shingles of the normalised text, in compact arrays.

    Two texts match when their estimated Jaccard similarity reaches ``threshold``, or when the
    smaller one is almost contained in the other (``containment``, None for no such bar): a
    re-sent ticket with "Any update?" in front, or a reply quoting the original. The index uses
    the bands of datasketch's optimal LSH parameters for a threshold of at most 0.5, so that
    contained pairs come up as candidates, and pairs just above a higher threshold are rarely
    missed (bands tuned for 0.65 would miss a third of the pairs at 0.72); every candidate is
    verified on its signature.

    A band bucket keeps the first row that fell in it between two flushes (one per
    ``flush_rows`` new hashes in the first band), so a text that many rows resemble
    (one layout's common part) is compared with a bounded number of them, while a copy of any
    one row still meets it in the buckets of the bands only they share. The hashes wait in a hash
    table (:class:`_Pending`) until a flush merges them into one sorted array (each salted with
    its band, so all bands share the table and the array).

    Memory per indexed row: the signature (4 bytes per permutation, or 2 with ``bits=16``: the
    low 16 bits of each value, b-bit minwise hashing, whose chance equalities shift a Jaccard
    estimate by about 1/65,536) and an 8-byte hash and a 4-byte row number per band, in numpy
    arrays: about 0.8 KB per row with the defaults (128 permutations, 25 bands; datasketch's
    dict-based index takes about 4-8 KB).
    """

    def __init__(self, shingle: int, num_perm: int, threshold: float, containment: float | None,
                 bits: int = 32, flush_rows: int = 50_000):
        import numpy as np
        from datasketch.lsh import _optimal_param

        self.shingles = Shingles(shingle, num_perm)
        self.k = shingle
        self.num_perm = num_perm
        self.threshold = threshold
        self.containment = containment
        self.b, self.r = _optimal_param(min(threshold, 0.5), num_perm, 0.5, 0.5)
        rng = np.random.default_rng(7)
        self._mix = rng.integers(1, 2**63, size=self.r, dtype=np.uint64) | np.uint64(1)
        # Each band's hash is salted with the band, so that all bands share one sorted array.
        self._salt = rng.integers(1, 2**63, size=self.b, dtype=np.uint64)
        self._stored = np.uint16 if bits == 16 else np.uint32
        self._sigs = _Table((num_perm,), self._stored)
        self._sizes = array("i")
        self._sorted_h = np.empty(0, np.uint64)
        self._sorted_i = np.empty(0, np.int32)
        # the C flush's arrays, with room to grow: _sorted_h and _sorted_i are their start
        self._room_h, self._room_i = np.empty(0, np.uint64), np.empty(0, np.int32)
        self._top_bits, self._starts = 1, np.zeros(3, np.int32)  # set at each flush (_search)
        self._pending = _Pending(self.b * flush_rows)
        self._first = 0  # hashes of the first band in the pending table (and waiting in a batch)
        self._open: _Batch | None = None  # the last batch looked up, whose new rows may wait
        self.flush_rows = flush_rows
        self._flushes = 0  # merges so far: a probe made before the last one is stale

    @property
    def n(self) -> int:
        return self._sigs.n

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the flush's room to grow, which the next flush makes again (the
        sorted arrays, views of it, are pickled as their own data)."""
        import numpy as np

        return {**self.__dict__, "_room_h": np.empty(0, np.uint64), "_room_i": np.empty(0, np.int32)}

    def signature(self, text: str) -> tuple[Any, int]:
        """(uint32 MinHash signature, number of distinct shingles) of one text."""
        sigs, sizes = self.shingles.signatures([text])
        return sigs[0], int(sizes[0])

    def signatures(self, texts: Sequence[str]) -> list[tuple[Any, int]]:
        """:meth:`signature` of each text, made together (several times faster than one by one)."""
        sigs, sizes = self.shingles.signatures(texts)
        return list(zip(sigs, sizes.tolist()))

    def probe(self, sigs: Sequence[Any]) -> list[Probe]:
        """Look signatures up together: each one's bands, and the rows the merged part of the
        index holds under them (one sorted search for the batch, rather than one a row). Pass each
        to :meth:`matches` and :meth:`insert`; rows indexed meanwhile are found all the same."""
        if not len(sigs):
            return []
        bands = self._bands(sigs)
        merged: list[list[int]] = [[] for _ in sigs]
        for i, row in zip(*(a.tolist() for a in self._merged(bands))):
            merged[i].append(row)
        return [Probe(b, m, self._flushes) for b, m in zip(bands, merged)]

    def _bands(self, sigs: Sequence[Any]) -> Any:
        """The band hashes of each signature, one row a signature."""
        import numpy as np

        stacked = sigs if isinstance(sigs, np.ndarray) else np.stack(sigs)  # (np.stack splits an array into rows)
        rows = stacked[:, : self.b * self.r].reshape(len(sigs), self.b, self.r).astype(np.uint64)
        with np.errstate(over="ignore"):
            return (rows * self._mix).sum(axis=2) ^ self._salt

    def _merged(self, bands: Any) -> tuple[Any, Any]:
        """(whose, row): each row the merged part of the index holds under one of ``bands``' hashes,
        and the number of the signature whose hash it is, as two arrays."""
        import numpy as np

        whose, rows = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        if len(self._sorted_h):
            stored, keys = self._sorted_h, bands.ravel()
            order = np.argsort(keys)  # searched in order: neighbouring keys, neighbouring memory
            at = self._search(keys[order])
            owner, key = order // self.b, keys[order]
            while len(at):  # a key's entries follow one another, one a flush at most
                hit = at < len(stored)
                hit[hit] = stored[at[hit]] == key[hit]
                at, owner, key = at[hit], owner[hit], key[hit]
                whose.append(owner)
                rows.append(self._sorted_i[at].astype(np.int64))
                at = at + 1
        return np.concatenate(whose), np.concatenate(rows)

    def _pairs(self, bands: Any, pended: Any, sigs: Any) -> tuple[Any, Any, Any]:
        """Every (row of a batch, candidate) pair once, ordered by row then candidate, as
        (whose, row, same): the rows the index holds under the batch's ``bands`` (one row of
        hashes a signature), those of its merged part and ``pended`` (the pending table's row
        under each hash, -1 for none), and the share of equal values between the two signatures
        (:meth:`_same`). In C where :func:`~taskfit.data.native.library` is built, else numpy:
        the same pairs and shares."""
        import numpy as np

        lib = native.library()
        if lib is not None:
            keys = np.ascontiguousarray(bands, np.uint64)
            own = np.ascontiguousarray(sigs, np.uint32)
            pended = np.ascontiguousarray(pended, np.int64)
            chunks = self._sigs.chunks
            table = (ctypes.c_void_p * max(1, len(chunks)))(*[native.ptr(c) for c in chunks])
            sorted_h, sorted_i, starts = self._sorted_h, self._sorted_i, self._starts
            m = len(sorted_h)
            cap = 4 * keys.size
            while True:
                whose, rows, same = (np.empty(cap, np.int64) for _ in range(3))
                total = lib.candidates(native.ptr(keys), len(keys), self.b, native.ptr(sorted_h) if m else None,
                                       native.ptr(sorted_i) if m else None, m, native.ptr(starts), self._top_bits,
                                       native.ptr(pended), native.ptr(own), self.num_perm, table,
                                       self._sigs.CHUNK, np.dtype(self._stored).itemsize, native.ptr(whose),
                                       native.ptr(rows), native.ptr(same), cap)
                if total < 0:
                    raise MemoryError("the look-alike index's candidates")
                if total <= cap:
                    return whose[:total], rows[:total], same[:total] / self.num_perm
                cap = total
        whose, rows = self._merged(bands)
        known = pended >= 0
        whose = np.concatenate([whose, np.flatnonzero(known) // self.b])
        rows = np.concatenate([rows, pended[known]])
        pairs = np.sort((whose << 32) | rows)
        pairs = pairs[np.concatenate((pairs[:1] == pairs[:1], pairs[1:] != pairs[:-1]))]  # distinct, as np.unique
        whose, rows = pairs >> 32, pairs & 0xFFFFFFFF
        return whose, rows, self._same(sigs[whose].astype(self._stored), rows)

    def _search(self, keys: Any) -> Any:
        """Where each of ``keys`` is, or would go, in the sorted array (``np.searchsorted``'s
        left side): a binary search within the keys' bucket of :attr:`_starts` (the array's
        hashes by their top bits), a few steps in memory close together rather than about 24
        across an array of millions."""
        import numpy as np

        stored, starts, bits = self._sorted_h, self._starts, self._top_bits
        top = (keys >> np.uint64(64 - bits)).astype(np.int64)
        lo, hi = starts[top].astype(np.int64), starts[top + 1].astype(np.int64)
        last = len(stored) - 1
        while True:
            open_ = lo < hi
            if not open_.any():
                return lo
            mid = (lo + hi) >> 1
            right = open_ & (stored[np.minimum(mid, last)] < keys)
            lo = np.where(right, mid + 1, lo)
            hi = np.where(open_ & ~right, mid, hi)

    def candidates(self, sig: Any, probe: Probe | None = None) -> set[int]:
        if probe is None or probe.flushes != self._flushes:  # made before the last merge: again
            probe = self.probe([sig])[0]
        self._commit()
        pended = self._pending.get(probe.bands)
        return set(pended[pended >= 0].tolist()).union(probe.merged)

    def _commit(self) -> None:
        """Put the rows the open batch indexed in the pending table."""
        if self._open is not None and self._open.waiting:
            self._pending.add(*self._open.commit())

    def lookup(self, sigs: Any, sizes: Any) -> list[Probe]:
        """:meth:`probe` for a batch of rows that will be matched and inserted in order (a scan's
        chunk): their candidates in the index as it stands are verified together
        (:class:`_Batch`), so :meth:`matches` on each is mostly a lookup."""
        if not len(sigs):
            return []
        self._commit()
        bands = self._bands(sigs)
        batch = self._open = _Batch(self, sigs, sizes, bands)
        return [Probe(b, [], self._flushes, batch, at) for at, b in enumerate(bands)]

    def matches(self, sig: Any, size: int, probe: Probe | None = None) -> list[tuple[int, float]]:
        """The indexed rows this text matches, as (row number, similarity), most similar first."""
        if probe is not None and probe.batch is not None:
            return probe.batch.matches(probe.at)
        return sorted(self._verified(sig, size, self.candidates(sig, probe)), key=lambda kv: (-kv[1], kv[0]))

    def _verified(self, sig: Any, size: int, rows: set[int]) -> list[tuple[int, float]]:
        """(row, similarity) of each of the indexed ``rows`` that one signature matches."""
        import numpy as np

        if not rows:
            return []
        ks = np.asarray(sorted(rows), np.int64)
        same = self._same(sig.astype(self._stored)[None, :], ks)
        return [(k, sim) for _, k, sim in self._scored(same, np.full(len(ks), size), ks)]

    def _same(self, sigs: Any, rows: Any) -> Any:
        """The share of equal values between each of ``sigs`` (one, or one a row) and the
        signature of each indexed row of ``rows``: their estimated Jaccard similarity."""
        import numpy as np

        # the count over the permutations: the float64 np.mean of the equalities gives
        equal = self._sigs.gather(rows) == sigs
        if self.num_perm % 8 or self.num_perm > 2040:
            return np.count_nonzero(equal, axis=1) / self.num_perm
        # 8 equalities a uint64, summed: each of its bytes counts up to num_perm / 8 (< 256) of
        # them, without carrying into the next; then its 8 bytes summed (a third of the time)
        lanes = equal.view(np.uint64).sum(axis=1, dtype=np.uint64)
        return lanes.view(np.uint8).reshape(-1, 8).sum(axis=1) / self.num_perm

    def _scored(self, same: Any, sizes: Any, rows: Any) -> list[tuple[int, int, float]]:
        """(place, indexed row, :func:`similarity`) of each pair that matches: similarity()'s
        arithmetic for all pairs at once, each result rounded by Python's round as it rounds."""
        import numpy as np

        alike = same >= self.threshold
        passing = alike
        if self.containment is not None:
            part = contained(same, sizes, np.frombuffer(self._sizes, np.int32)[rows])
            passing = alike | (part >= self.containment)
        at = np.flatnonzero(passing)
        # similarity(): j where it passes its bar, else the containment, rounded as Python rounds
        sims = np.where(alike[at], same[at], part[at] if self.containment is not None else 0.0).tolist()
        scored = [(i, k, round(sim, 3)) for i, k, sim in zip(at.tolist(), rows[at].tolist(), sims)]
        return [ik for ik in scored if ik[2] > 0]

    def insert(self, sig: Any, size: int, probe: Probe | None = None) -> int:
        """Index a row; return its number (0, 1, 2...)."""
        import numpy as np

        i = self.n
        self._sigs.append(sig)
        self._sizes.append(size)
        if probe is not None and probe.batch is not None and probe.batch.live:
            probe.batch.insert(i, probe.at)
        else:
            self._commit()
            bands = (probe if probe is not None else self.probe([sig])[0]).bands
            new = self._pending.get(bands) < 0
            self._pending.add(bands[new], np.full(int(new.sum()), i, np.int32))
            self._first += int(new[0])
        if self._first >= self.flush_rows:
            self._flush()
        return i

    def _flush(self) -> None:
        """Merge the pending band hashes (the first row of each bucket since the last flush) into
        the sorted array."""
        import numpy as np

        self._commit()
        keys, rows = self._pending.sorted()
        # where each bucket of hashes by their top bits starts: about 8 hashes a bucket
        top_bits = max(1, min(24, int(np.log2(max(1, len(self._sorted_h) + len(keys)))) - 3))
        lib = native.library()
        if lib is not None:  # in C, in place: the same arrays
            m, n = len(self._sorted_h), len(self._sorted_h) + len(keys)
            if len(self._room_h) < n or self._sorted_h.base is not self._room_h:
                # half as much room again as needed, so the arrays grow seldom rather than being
                # made anew at each flush (memory touched the first time costs the kernel's time:
                # np.insert took 2.1 s on 14 million hashes, this merge 0.06 s in arrays it had
                # touched before); one array at a time, the old one let go before the next grows
                def grown(old: Any) -> Any:
                    room = np.empty(n * 3 // 2, old.dtype)
                    room[:m] = old
                    return room

                self._room_h = grown(self._sorted_h)
                self._sorted_h = self._room_h[:m]
                self._room_i = grown(self._sorted_i)
                self._sorted_i = self._room_i[:m]
            room_h, room_i = self._room_h, self._room_i
            same = m > 0 and top_bits == self._top_bits
            starts = self._starts if same else np.empty((1 << top_bits) + 1, np.int32)
            rows = np.ascontiguousarray(rows, np.int32)
            if lib.merge(native.ptr(room_h), native.ptr(room_i), m, native.ptr(keys), native.ptr(rows), len(keys),
                         top_bits, native.ptr(starts), same) != 0:
                raise MemoryError("the look-alike index's flush")
            self._sorted_h, self._sorted_i, self._starts = room_h[:n], room_i[:n], starts
        else:
            at = np.searchsorted(self._sorted_h, keys, side="right")
            self._sorted_h = np.insert(self._sorted_h, at, keys)
            self._sorted_i = np.insert(self._sorted_i, at, rows)
            # (each bucket's first hash searched for: a pass over the array's top bits would hold a
            # copy of it in int64)
            firsts = np.arange(1 << top_bits, dtype=np.uint64) << np.uint64(64 - top_bits)
            self._starts = np.append(np.searchsorted(self._sorted_h, firsts), len(self._sorted_h)).astype(np.int32)
        self._top_bits = top_bits
        self._pending.clear()
        self._first = 0
        self._flushes += 1


@dataclass(slots=True)
class Row:
    """One row as :class:`LookAlikes` compares it, computed once."""

    sig: Any
    size: int
    words: int  # digest of the input's words
    vocab: Any  # its distinct words (:func:`vocabulary`)
    fixed: dict[str, tuple[int, bool]]  # part name -> (digest of the value, written in the input)
    free: tuple[Any, ...]  # the vocabulary of each free text
    pair: bool
    probe: Probe  # its signature looked up in the index


@dataclass(slots=True)
class Verdict:
    """What a row is to one earlier row it looks like."""

    kind: str  # COPY | DISTINCT | CONFLICT
    other: int  # the earlier row's number in the index
    similarity: float


def decisive(verdicts: list[Verdict]) -> Verdict | None:
    """The verdict that decides a row's fate: a copy of some earlier row, else a conflict with
    one, else the most similar distinct look-alike (None: it looks like no earlier row)."""
    if not verdicts:  # (most rows)
        return None
    for kind in (COPY, CONFLICT):
        hit = next((v for v in verdicts if v.kind == kind), None)
        if hit is not None:
            return hit
    return verdicts[0] if verdicts else None


WORDS_KEPT = 512


def vocabulary(text: str) -> Any:
    """The distinct words of a text (:func:`~taskfit.tasks.base.words`) as sorted CRC-32s, the
    WORDS_KEPT smallest when it has more (a bottom-k sample, see :func:`overlap`)."""
    import numpy as np

    return np.array(_hashes(words(text)), np.uint32)


def _hashes(text_words: str) -> list[int]:
    # sorted in Python: numpy's unique costs more than the whole sort on a text's few dozen words
    return sorted({zlib.crc32(w.encode()) for w in set(text_words.split())})[:WORDS_KEPT]


# An ASCII text's words (:func:`words`: runs of \w, case folded) are its bytes with each one
# that is no letter, digit or _ made a space and the letters lower-cased, split: bytes.translate
# and split in C, about 6x faster than the regular expression on a ticket (and so for a text whose
# words are all ASCII, as :func:`_ascii_words` gives it).
_ASCII_WORDS = bytes(c if chr(c).isalnum() or c == ord("_") else ord(" ") for c in range(128)).lower() + b" " * 128


_WIDE_WORD = re.compile(r"(?![\x00-\x7f])\w")  # a letter or digit beyond ASCII


def _ascii_words(text: str) -> bytes | None:
    """The text as ASCII bytes with the same words (:func:`words`; each character beyond ASCII
    made "?", which no word holds), where its words are all ASCII ("€40", "£12"), else None."""
    if text.isascii():
        return text.encode()
    folded = text.casefold()
    return folded.encode("ascii", "replace") if _WIDE_WORD.search(folded) is None else None


def _word_digest(text: str) -> tuple[int, list[int]]:
    """The digest of a text's words and its :func:`vocabulary`'s hashes."""
    data = _ascii_words(text)
    if data is None:
        text_words = words(text)
        return digest(text_words), _hashes(text_words)
    found = data.translate(_ASCII_WORDS).split()
    made = int.from_bytes(hashlib.blake2b(b" ".join(found), digest_size=8).digest(), "little", signed=True)
    return made, sorted({zlib.crc32(w) for w in set(found)})[:WORDS_KEPT]


def word_digests(texts: Sequence[str]) -> tuple[Any, Any, Any]:
    """For :meth:`LookAlikes.row`, made apart (by a worker process, a chunk at a time): the
    digest of each text's words and its :func:`vocabulary`, as three arrays that travel between
    processes as they are (digests; every vocabulary end to end; where each one ends). In C for
    the texts whose words are all ASCII where :func:`~taskfit.data.native.library` is built, the
    others with :func:`_word_digest`: the same values."""
    import numpy as np

    lib = native.library()
    if lib is not None and texts:  # in C (native.c) where the words are ASCII, the others here: the same values
        as_bytes = [_ascii_words(t) for t in texts]
        plain = np.fromiter((b is not None for b in as_bytes), bool, len(texts))
        ascii_texts = [b for b in as_bytes if b is not None]
        made = np.empty(len(texts), np.int64)
        hashes_ = np.empty(0, np.uint32)
        lens_ = np.zeros(len(texts), np.int64)  # each text's hashes
        if ascii_texts:
            data = b"".join(ascii_texts)
            lens = np.fromiter((len(t) for t in ascii_texts), np.int64, len(ascii_texts))
            made_, ends_ = np.empty(len(ascii_texts), np.int64), np.empty(len(ascii_texts), np.int64)
            # at most a word a byte, and one more a text
            hashes_ = np.empty(len(data) // 2 + len(ascii_texts) + 1, np.uint32)
            cut, joined = np.cumsum(lens), np.empty(int(lens.max()) + 1, np.uint8)  # (held while C reads them)
            lib.word_digests(data, native.ptr(cut), len(ascii_texts), _ASCII_WORDS, WORDS_KEPT, native.ptr(made_),
                             native.ptr(hashes_), native.ptr(ends_), native.ptr(joined))
            hashes_ = hashes_[:int(ends_[-1])]
            made[plain], lens_[plain] = made_, np.diff(ends_, prepend=0)
        if not plain.all():
            others = [_word_digest(t) for t, p in zip(texts, plain) if not p]
            made[~plain] = [m for m, _ in others]
            lens_[~plain] = [len(v) for _, v in others]
            # the ASCII texts' hashes, then the others', put in the texts' order
            owner = np.repeat(np.concatenate([np.flatnonzero(plain), np.flatnonzero(~plain)]),
                              np.concatenate([lens_[plain], lens_[~plain]]))
            hashes_ = np.concatenate([hashes_, np.fromiter((h for _, v in others for h in v), np.uint32)])
            hashes_ = hashes_[np.argsort(owner, kind="stable")]
        return made, hashes_.copy(), np.cumsum(lens_)
    digests, hashes, ends = array("q"), array("I"), array("q")
    for text in texts:
        made, vocab = _word_digest(text)
        digests.append(made)
        hashes.extend(vocab)
        ends.append(len(hashes))
    return np.frombuffer(digests, np.int64), np.frombuffer(hashes, np.uint32), np.frombuffer(ends, np.int64)


def overlap(a: Any, b: Any, a_words: set[int] | None = None) -> tuple[float, float, float]:
    """(words only ``a`` has, words only ``b`` has, words both have), from two texts'
    :func:`vocabulary` (numpy arrays, or an ``array("I")`` as :class:`_Vocabularies` gives):
    exact when both have at most WORDS_KEPT distinct words, else estimated on the words whose
    hashes are at most both samples' largest, scaled up (bottom-k sampling). ``a_words``: ``a``
    as a set, when the caller compares it with several."""
    import numpy as np

    if len(a) < WORDS_KEPT and len(b) < WORDS_KEPT:  # both whole: a set's intersection in C, about 2.5x
        mine = a_words if a_words is not None else set(_ints(a))  # faster on a text's few dozen words
        both = len(mine.intersection(_ints(b)))
        return float(len(a) - both), float(len(b) - both), float(both)
    a, b = np.asarray(a, np.uint32), np.asarray(b, np.uint32)
    limit = min(int(v[-1]) if len(v) == WORDS_KEPT else 2**32 for v in (a, b))
    scale = 1.0
    if limit < 2**32:
        a, b, scale = a[a <= limit], b[b <= limit], 2**32 / (limit + 1)
    # the words both have, found by a search of each of a's in b (both sorted, distinct)
    both = int(np.count_nonzero(b[np.minimum(np.searchsorted(b, a), len(b) - 1)] == a)) if len(b) else 0
    return (len(a) - both) * scale, (len(b) - both) * scale, both * scale


def _ints(vocab: Any) -> Any:
    """A vocabulary as Python ints to iterate: an ``array("I")`` is already, a numpy array's
    own scalars hash slowly."""
    return vocab if isinstance(vocab, array) else vocab.tolist()


class _Vocabularies:
    """One vocabulary per row, end to end in one array (4 bytes a word)."""

    def __init__(self) -> None:
        self._hashes, self._starts = array("I"), array("q", [0])

    def append(self, vocab: Any) -> None:
        import numpy as np

        self._hashes.frombytes(np.ascontiguousarray(vocab, np.uint32).tobytes())  # as extend(tolist()), in C
        self._starts.append(len(self._hashes))

    def __getitem__(self, k: int) -> Any:
        """Row k's vocabulary, an ``array("I")`` (:func:`overlap` takes it as it is)."""
        return self._hashes[self._starts[k]:self._starts[k + 1]]


class LookAlikes:
    """Near-identical inputs judged by their answers (see the module docstring).

    Per indexed row: the index's signature and bands, the digest of its input's words, per part
    of its answer a part-name code, a value digest and whether it is written in the input (13
    bytes a part), and the vocabularies of its input and of each free text (4 bytes a distinct
    word, at most WORDS_KEPT each).
    """

    def __init__(self, dedup: DedupSpec, task: TaskSpec):
        self.index = MinHashIndex(dedup.shingle, dedup.num_perm, dedup.threshold, dedup.containment)
        self.copy_words = dedup.copy_words
        self._parts_of = get_task(task.kind).answer_parts(task)
        self._words = array("q")
        self._vocab = _Vocabularies()
        self._starts = array("q", [0])  # row k's parts are [starts[k], starts[k + 1]) below
        self._names, self._values, self._written = array("i"), array("q"), array("b")
        self._codes: dict[str, int] = {}
        self._free: list[_Vocabularies] = []
        self._short: dict[str, int] = {}  # short answer values' digests (_digest)

    def row(self, rec: Example | PreferencePair, signature: tuple[Any, int] | None = None,
            probe: Probe | None = None, text_words: tuple[int, Any] | None = None,
            parts: tuple[dict[str, tuple[int, bool]], tuple[Any, ...]] | None = None) -> Row:
        """``signature``, ``probe``, ``text_words``, ``parts``: the index's signature of
        :func:`input_text`, its :meth:`~MinHashIndex.probe`, its words' digest and vocabulary
        (:func:`word_digests`), and the answer's :meth:`parts`, when already made (a scan makes
        a batch of rows' at once, by a worker)."""
        text = input_text(rec) if signature is None or text_words is None else None
        sig, size = signature if signature is not None else self.index.signature(text)
        probe = probe if probe is not None else self.index.probe([sig])[0]
        if text_words is None:
            import numpy as np

            made, vocab = _word_digest(text)
            text_words = made, np.array(vocab, np.uint32)
        return Row(sig, size, *text_words, *(parts if parts is not None else self.parts(rec)),
                   isinstance(rec, PreferencePair), probe)

    def parts(self, rec: Example | PreferencePair) -> tuple[dict[str, tuple[int, bool]], tuple[Any, ...]]:
        """What a :class:`Row` holds of a row's answer: per fixed part (the task's
        ``answer_parts``; none for a preference pair), the digest of its value and whether the
        input writes it; the :func:`vocabulary` of each free text (a pair's two replies)."""
        parts = AnswerParts(free=(rec.chosen, rec.rejected)) if isinstance(rec, PreferencePair) else self._parts_of(rec)
        return ({name: (self._digest(value), written) for name, value, written in parts.fixed},
                tuple(vocabulary(t) for t in parts.free) if parts.free else ())

    def _digest(self, value: str) -> int:
        """:func:`digest` of an answer's value, remembered for short ones (a label, a date), which
        many rows share."""
        if len(value) > 64:
            return digest(value)
        made = self._short.get(value)
        if made is None:
            if len(self._short) >= 100_000:
                self._short.clear()
            made = self._short[value] = digest(value)
        return made

    def judge(self, row: Row) -> list[Verdict]:
        """What this row is to each indexed row it looks like, the most similar first."""
        found = self.index.matches(row.sig, row.size, row.probe)
        if not found:
            return []
        mine = set(_ints(row.vocab)) if len(row.vocab) < WORDS_KEPT else None  # (made once for them all)
        return [Verdict(self._compare(row, k, mine), k, sim) for k, sim in found]

    def add(self, row: Row) -> int:
        """Index a kept row; return its number (0, 1, 2...)."""
        for name, (value, written) in row.fixed.items():
            self._names.append(self._codes.setdefault(name, len(self._codes)))
            self._values.append(value)
            self._written.append(written)
        self._starts.append(len(self._names))
        self._words.append(row.words)
        self._vocab.append(row.vocab)
        if row.free:
            self._free += [_Vocabularies() for _ in row.free[len(self._free):]]
            for store, vocab in zip(self._free, row.free):
                store.append(vocab)
        return self.index.insert(row.sig, row.size, row.probe)

    def _fixed(self, k: int) -> dict[int, tuple[int, bool]]:
        at, end = self._starts[k], self._starts[k + 1]
        return {self._names[i]: (self._values[i], bool(self._written[i])) for i in range(at, end)}

    def trivial(self, a: Any, b: Any, a_words: set[int] | None = None) -> bool:
        """Whether two texts (their vocabularies) differ trivially: one of them has at most
        data.dedup.copy_words words the other lacks."""
        only_a, only_b, _ = overlap(a, b, a_words)
        return min(only_a, only_b) <= self.copy_words

    def near(self, a: Any, b: Any) -> bool:
        """Whether two free texts are near-identical: their words alike at data.dedup.threshold
        (Jaccard), or the fewer words almost all among the others' (data.dedup.containment)."""
        only_a, only_b, both = overlap(a, b)
        if not both:
            return not (only_a or only_b)
        return (both / (only_a + only_b + both) >= self.index.threshold
                or both / (min(only_a, only_b) + both) >= self.index.containment)

    def _compare(self, row: Row, k: int, words: set[int] | None = None) -> str:
        if not self.trivial(row.vocab, self._vocab[k], words):
            return DISTINCT  # a template filled in twice: each has words of its own
        old = self._fixed(k)
        new = {self._codes.get(name, -1 - n): part for n, (name, part) in enumerate(row.fixed.items())}
        free = [store[k] for store in self._free[:len(row.free)]]
        if ({c: v for c, (v, _) in old.items()} == {c: v for c, (v, _) in new.items()}
                and all(self.near(a, b) for a, b in zip(row.free, free))):
            return COPY
        if row.pair and len(free) == 2 and self.near(row.free[0], free[1]) and self.near(row.free[1], free[0]):
            return CONFLICT  # the same choice made the other way round
        differing = [c for c in old.keys() | new.keys() if old.get(c, (None,))[0] != new.get(c, (None,))[0]]
        if not differing:
            return DISTINCT  # only a free text differs: another reply
        if row.words == self._words[k]:
            return CONFLICT  # the same words, two answers: nothing in the text tells them apart
        explained = all(side[c][1] for side in (old, new) for c in differing if c in side)
        return DISTINCT if explained else CONFLICT


HEAD_LINES, TAIL_LINES = 5, 5


def mask(text: str) -> str:
    """A text as its layout: its first and last lines (all of them when there are at most
    HEAD_LINES + TAIL_LINES), where a document's letterhead, footer and signature are, and not
    the body whose length varies from one document to the next; normalised, each run of digits
    one 0 (dates, totals, numbers)."""
    return _masked(text)[0]


def _masked(text: str) -> tuple[str, str | None]:
    """(:func:`mask` of the text, its :func:`normalise` when no line was cut, else None)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > HEAD_LINES + TAIL_LINES:
        return _DIGITS.sub("0", normalise("\n".join(lines[:HEAD_LINES] + lines[-TAIL_LINES:]))), None
    whole = normalise(text)
    return _DIGITS.sub("0", whole), whole


def layout_signatures(shingles: Shingles, texts: Sequence[str],
                      known: Sequence[tuple[Any, int] | None]) -> list[tuple[Any, int]]:
    """The signature of each text's layout (:func:`mask`), made together. ``known``: each text's
    own signature, when the look-alike index has made it (used as is when there are no digits to
    mask, which saves making another), else None."""
    masked, todo = [], []
    for i, (t, sig) in enumerate(zip(texts, known)):
        m, whole = _masked(t)
        masked.append(m)
        if sig is None or m != (whole if whole is not None else normalise(t)):
            todo.append(i)
    sigs, sizes = shingles.signatures([masked[i] for i in todo], normalised=True)
    made = dict(zip(todo, zip(sigs, sizes.tolist())))
    return [made[i] if i in made else sig for i, sig in enumerate(known)]


class Layouts:
    """Rows grouped by layout: each row joins the most alike layout whose first row its input,
    masked (:func:`mask`), resembles at ``data.dedup.template`` or above, else starts one.

    Kept per layout: its first row's signature in 16 bits a value and its bands (about 0.55 KB
    with the defaults: 128 permutations, 25 bands), its row count and where its first two
    rows are (for the card's preview of what they share); per file, the layout of each kept row
    (ScanResult.layouts, 4 bytes a row).
    """

    def __init__(self, dedup: DedupSpec):
        # A layout is looked for among few rows (the first of each); its dict of pending hashes
        # is kept small (a flush every 10,000 layouts), as the look-alike index's already takes
        # up to 50,000 rows' worth.
        self.index = MinHashIndex(dedup.shingle, dedup.num_perm, dedup.template, None, bits=16, flush_rows=10_000)
        self.threshold = dedup.template
        self.files: list[str] = []
        self.rows = array("i")
        self._where = [array("i"), array("q"), array("i"), array("q")]  # file, line of rows 1 and 2

    def signatures(self, texts: Sequence[str], known: Sequence[tuple[Any, int] | None]) -> list[tuple[Any, int]]:
        """The signature of each text's layout (:func:`layout_signatures`)."""
        return layout_signatures(self.index.shingles, texts, known)

    def assign(self, text: str, path: str, line: int, known: tuple[Any, int] | None = None,
               signature: tuple[Any, int] | None = None, probe: Probe | None = None) -> int:
        """The layout of one kept row (its number: 0, 1, 2...). ``known``: as in
        :meth:`signatures`; ``signature``: the layout's signature if :meth:`signatures` made it,
        ``probe``: its :meth:`~MinHashIndex.probe` if made."""
        if path not in self.files:
            self.files.append(path)
        file = self.files.index(path)
        sig, size = signature if signature is not None else self.signatures([text], [known])[0]
        probe = probe if probe is not None else self.index.probe([sig])[0]
        found = self.index.matches(sig, size, probe)
        if found:
            k = found[0][0]
        else:
            k = self.index.insert(sig, size, probe)
            self.rows.append(0)
            for a, v in zip(self._where, (file, line, -1, -1)):
                a.append(v)
        self.rows[k] += 1
        if self.rows[k] == 2:
            self._where[2][k], self._where[3][k] = file, line
        return k

    def assign_all(self, texts: Sequence[str], path: str, lines: Sequence[int], sigs: Any = None,
                   sizes: Any = None) -> list[int]:
        """:meth:`assign` for rows in order (a chunk's kept rows): their layouts' signatures made
        together, unless given (``sigs``, ``sizes``: :meth:`signatures`' for these texts), and
        looked up together."""
        if sigs is None:
            sigs, sizes = self.index.shingles.signatures([mask(t) for t in texts], normalised=True)
        probes = self.index.lookup(sigs, sizes)
        return [self.assign(text, path, line, signature=(sigs[k], int(sizes[k])), probe=probes[k])
                for k, (text, line) in enumerate(zip(texts, lines))]

    def first_rows(self, k: int) -> list[tuple[str, int]]:
        """(file, line) of the layout's first two rows."""
        w = self._where
        return [(self.files[w[f][k]], w[ln][k]) for f, ln in ((0, 1), (2, 3)) if w[f][k] >= 0]


def _shared_words(a: str, b: str) -> str:
    """The words two texts share, in ``a``'s order, with … where either has other words."""
    x, y = a.split(), b.split()
    out: list[str] = []
    end_a = end_b = 0
    for m in SequenceMatcher(None, x, y, autojunk=False).get_matching_blocks():
        if m.size == 0:
            continue
        if m.a > end_a or m.b > end_b:
            out.append("…")
        out.extend(x[m.a:m.a + m.size])
        end_a, end_b = m.a + m.size, m.b + m.size
    if end_a < len(x) or end_b < len(y):
        out.append("…")
    return " ".join(out)


def shared_text(a: str, b: str, width: int = 40) -> str:
    """What two rows of one layout share, for a person to recognise the layout: for one-line
    texts their common words (… where they differ); for documents, line by line, the common
    words of lines that match once digits are masked, each cut to ``width`` characters, and …
    for lines that differ, joined by " / ". Where the two differ by a different number of lines
    (a greeting and a signature on one side only), each line there is paired with the most alike
    line of the other side (:func:`_most_alike`), in order."""
    la, lb = ([line for line in t.splitlines() if line.strip()] for t in (a, b))
    if len(la) <= 1 or len(lb) <= 1:
        return _shared_words(a, b)
    out: list[str] = []

    def gap() -> None:
        if out[-1:] != ["…"]:
            out.append("…")

    def common(x: str, y: str) -> None:
        words = _shared_words(x, y)
        if words.strip("… "):
            out.append(words if len(words) <= width else words[:width - 1].rstrip() + "…")
        else:
            gap()

    opcodes = SequenceMatcher(None, [mask(x) for x in la], [mask(y) for y in lb], autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in opcodes:
        if tag == "equal" or i2 - i1 == j2 - j1:
            for x, y in zip(la[i1:i2], lb[j1:j2]):
                common(x, y)
            continue
        others, start = lb[j1:j2], 0
        for x in la[i1:i2]:
            j = _most_alike(x, others, start)
            if j is None:
                gap()
                continue
            if j > start:
                gap()
            common(x, others[j])
            start = j + 1
        if start < len(others):
            gap()
    return " / ".join(out)


def _most_alike(line: str, others: list[str], start: int, bar: float = 0.5) -> int | None:
    """The place in ``others`` (from ``start``) of the line most alike ``line`` once digits are
    masked, by the Jaccard similarity of their words, if it reaches ``bar``; the first on a tie."""
    mine = set(mask(line).split())
    best, at = bar, None
    for j in range(start, len(others)):
        theirs = set(mask(others[j]).split())
        alike = len(mine & theirs) / max(1, len(mine | theirs))
        if alike > best or (alike == best and at is None):
            best, at = alike, j
    return at
