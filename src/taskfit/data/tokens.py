"""Token counts of many texts at the speed of a dictionary lookup a word, for byte-level BPE
tokenizers (GPT-2's family, the embedded SmolLM2's among them).

Such a tokenizer cuts a text into pieces with one regular expression (GPT-2's: a word with the
space before it, a run of digits, of punctuation, of spaces) and encodes each piece on its own,
so a text's token count is the sum of its pieces' counts. Most of the tokenizer's time goes to
that cut (about 70 microseconds for a 200-character ticket here, in Rust); Python's ``re`` makes
the same cut in a fifth of it, and a piece seen before is looked up rather than encoded again.

The counts are the tokenizer's own, exactly: only texts whose every character lies in
:data:`SAFE` (ASCII's printable characters, tab and newlines, Latin letters with their accents,
punctuation, currency signs) are counted this way, since there the character classes of Python's
Unicode database and the tokenizer's regular-expression engine agree (tested against the tokenizer);
any other text, and any text holding an added token's content (``<|im_end|>``), is encoded by the
tokenizer itself.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

# The characters whose classes (letter, number, space) both engines read alike.
SAFE = "\t\n\r" + "".join(map(chr, range(0x20, 0x7F))) + "".join(map(chr, range(0xA0, 0x250))) \
    + "".join(map(chr, range(0x2000, 0x2070))) + "".join(map(chr, range(0x20A0, 0x20C1)))
CACHED = 500_000  # pieces remembered (about 60 MB at most); then the memory starts again


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
        unsafe = f"[^{re.escape(SAFE)}]"
        self._unsafe = re.compile("|".join([unsafe] + [re.escape(a) for a in sorted(added, key=len, reverse=True)])).search
        self._bytes = _byte_chars()
        self._known: dict[str, int] = {}

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
