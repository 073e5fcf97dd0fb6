"""Token counts of many texts at the speed of a dictionary lookup a word, for byte-level BPE
tokenizers (GPT-2's family, the embedded SmolLM2's among them).

Such a tokenizer cuts a text into pieces with one regular expression (GPT-2's: a word with the
space before it, a run of digits, of punctuation, of spaces) and encodes each piece on its own,
so a text's token count is the sum of its pieces' counts. Most of the tokenizer's time goes to
that cut (about 70 microseconds for a 200-character ticket here, in Rust); Python's ``re`` makes
the same cut in a fifth of it, and a piece seen before is looked up rather than encoded again.

Where the data check's C kernels are built (:mod:`taskfit.data.native`), a text of printable
ASCII is cut and its pieces looked up in C (a table of the pieces learnt, their bytes compared),
the same counts: 11.3 against 19.8 microseconds a generated ticket's row here, a sixth of whose
texts hold a character beyond ASCII and are counted in Python.

The counts are the tokenizer's own, exactly: only texts whose every character lies in
:data:`SAFE` (ASCII's printable characters, tab and newlines, Latin letters with their accents,
punctuation, currency signs) are counted this way, since there the character classes of Python's
Unicode database and the tokenizer's regular-expression engine agree (tested against the tokenizer);
any other text, and any text holding an added token's content (``<|im_end|>``), is encoded by the
tokenizer itself.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from typing import Any

from taskfit.data import native

# The characters whose classes (letter, number, space) both engines read alike.
SAFE = "\t\n\r" + "".join(map(chr, range(0x20, 0x7F))) + "".join(map(chr, range(0xA0, 0x250))) \
    + "".join(map(chr, range(0x2000, 0x2070))) + "".join(map(chr, range(0x20A0, 0x20C1)))
CACHED = 500_000  # pieces remembered (about 60 MB at most); then the memory starts again
TABLE_BITS = 20  # the C kernels' table of pieces grows to 2^20 slots, half a million pieces (CACHED's)


def _class(test: Any) -> str:
    return "".join(re.escape(c) for c in SAFE if test(c))


def _gpt2_pattern() -> re.Pattern:
    """GPT-2's pre-tokenizing expression over :data:`SAFE`, with its \\p{L}, \\p{N} and \\s
    spelled out as the characters of SAFE they hold."""
    letter = _class(lambda c: unicodedata.category(c).startswith("L"))
    number = _class(lambda c: unicodedata.category(c).startswith("N"))
    space = _class(str.isspace)
    return re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{letter}]+| ?[{number}]+| ?[^{space}{letter}{number}]+"
                      rf"|[{space}]+(?![^{space}])|[{space}]+")


def _byte_chars() -> list[str]:
    """GPT-2's map of the 256 byte values to printable characters (``bytes_to_unicode``)."""
    kept = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in kept:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


class PieceCounter:
    """Token counts for a fast tokenizer's backend, or None from :meth:`make` when the
    tokenizer does not cut texts as GPT-2's byte-level BPE does (another pre-tokenizer, a
    normaliser, BPE dropout): then its own batch encoding counts."""

    def __init__(self, backend: Any, added: list[str]):
        self._backend = backend
        self._model = backend.model
        self._pieces = _gpt2_pattern().findall
        self._bytes = _byte_chars()
        self._known: dict[str, int] = {}
        self._table: int | None = None  # the C kernels' table of pieces (made at the first count that uses it)
        self._bits = 0
        self._outside = re.compile(f"[^{re.escape(SAFE)}]").search  # a character beyond SAFE
        self._control = re.compile("[^\t\n\r -~]").search  # (in an ASCII text: a control character)
        self._added = sorted(added)
        self._added_starts = sorted({a[:1] for a in added})

    def _holds_added(self, text: str) -> bool:
        """Whether a text holds an added token's content, looked for only where a character one
        begins with is found. (A regular expression of a character class and the added tokens
        took 4.7 microseconds on a ticket, the class alone and these string methods 0.8.)"""
        return any(c in text for c in self._added_starts) and any(a in text for a in self._added)

    def _unsafe(self, text: str) -> bool:
        """Whether a text is not for counting piece by piece: a character beyond SAFE, or an
        added token."""
        return bool(self._outside(text)) or self._holds_added(text)

    def _ascii_unsafe(self, text: str) -> bool:
        """Whether a text is not for the C kernel: a character beyond printable ASCII, tab and the
        newlines, or an added token."""
        return not text.isascii() or bool(self._control(text)) or self._holds_added(text)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_table": None}  # a table lives in one process's memory

    def __del__(self) -> None:
        table = getattr(self, "_table", None)
        if table:
            with contextlib.suppress(Exception):  # (at the interpreter's exit the library may be gone first)
                native.library().pieces_free(table)

    @classmethod
    def make(cls, backend: Any) -> PieceCounter | None:
        from tokenizers import models, pre_tokenizers

        pre, model = backend.pre_tokenizer, backend.model
        if (backend.normalizer is not None or not isinstance(pre, pre_tokenizers.ByteLevel) or not pre.use_regex
                or pre.add_prefix_space or not isinstance(model, models.BPE) or model.dropout
                or model.byte_fallback or getattr(model, "ignore_merges", False)):
            return None
        return cls(backend, [t.content for t in backend.get_added_tokens_decoder().values() if t.content])

    def count(self, texts: list[str]) -> list[int]:
        """Tokens of each text (no special tokens added), in order."""
        lib = native.library()
        if lib is not None:
            plain = [not self._ascii_unsafe(t) for t in texts]  # printable ASCII, tab, newlines; no added token
            if any(plain):
                counted = self._count_in_c(lib, [t for t, p in zip(texts, plain) if p])
                rest = iter(self._count_here([t for t, p in zip(texts, plain) if not p]))
                return [next(counted) if p else next(rest) for p in plain]
        return self._count_here(texts)

    def _count_in_c(self, lib: Any, texts: list[str]) -> Any:
        """The counts of printable-ASCII texts by native.c's pieces_count, the pieces it has not
        learnt yet learnt here (by the model) and given to it."""
        import numpy as np

        if self._table is None:
            self._new_table(lib, 12)
        data = "".join(texts).encode()
        ends = np.cumsum(np.fromiter((len(t) for t in texts), np.int64, len(texts)))
        counts = np.empty(len(texts), np.int64)
        cap = 1024
        while True:
            where = [np.empty(cap, np.int64) for _ in range(3)]
            missing = lib.pieces_count(self._table, data, native.ptr(ends), len(texts), native.ptr(counts),
                                       *(native.ptr(w) for w in where), cap)
            if missing <= cap:
                break
            cap = missing
        out = counts.tolist()
        for i, start, length in zip(*(w[:missing].tolist() for w in where)):
            piece = data[start:start + length]
            text = piece.decode()
            c = self._known.get(text)
            if c is None:
                c = self._learn(text)
            done = lib.pieces_learn(self._table, piece, length, c)
            if done == 1:  # full: a larger table with the pieces known, or (at its largest) an empty one
                self._new_table(lib, min(TABLE_BITS, max(self._bits + 1, (2 * len(self._known) + 2).bit_length())))
                done = lib.pieces_learn(self._table, piece, length, c)
                if done == 1:
                    self._new_table(lib, TABLE_BITS, known=False)
                    done = lib.pieces_learn(self._table, piece, length, c)
            if done != 0:
                raise MemoryError("the token counter's table")
            out[i] += c
        return iter(out)

    def _new_table(self, lib: Any, bits: int, known: bool = True) -> None:
        """A table of 2^bits slots (half of them usable) for pieces_count, the old one freed;
        with ``known``, holding the pieces of :attr:`_known` (as many as fit)."""
        if self._table:
            lib.pieces_free(self._table)
        self._table, self._bits = lib.pieces_new(bits), bits
        if not self._table:
            self._table = None
            raise MemoryError("the token counter's table")
        for text, c in self._known.items() if known else ():
            if text.isascii() and lib.pieces_learn(self._table, text.encode(), len(text), c) != 0:
                break

    def _count_here(self, texts: list[str]) -> list[int]:
        known, pieces, unsafe = self._known, self._pieces, self._unsafe
        out: list[int] = []
        others: list[int] = []
        for i, text in enumerate(texts):
            if unsafe(text):
                others.append(i)
                out.append(0)
                continue
            n = 0
            for piece in pieces(text):
                c = known.get(piece)
                if c is None:
                    c = self._learn(piece)
                n += c
            out.append(n)
        if others:
            for i, enc in zip(others, self._backend.encode_batch_fast([texts[i] for i in others],
                                                                      add_special_tokens=False)):
                out[i] = len(enc)
        return out

    def _learn(self, piece: str) -> int:
        if len(self._known) >= CACHED:
            self._known.clear()
        mapped = "".join(self._bytes[b] for b in piece.encode())
        n = self._known[piece] = len(self._model.tokenize(mapped))
        return n
