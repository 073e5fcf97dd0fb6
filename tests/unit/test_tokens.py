"""Token counts piece by piece (taskfit.data.tokens) against the tokenizer's own encoding."""

from __future__ import annotations

import random


def _texts(seed: int, n: int) -> list[str]:
    """Generated tickets, and random strings drawn mostly from the characters counted piece by
    piece (accents, currency signs, Unicode spaces, apostrophes before suffixes, runs of digits
    and of whitespace), some with characters that are not (an emoji, CJK, control characters,
    the added tokens' text)."""
    from taskfit.data.sample import generate_tickets
    from taskfit.data.tokens import SAFE

    rng = random.Random(seed)
    common = "ab cd ef's 're 've 'll 'd 'm 't\n\n  \t 12 345.,!? -- é£€ü\u00a0\u2003\u2028"
    others = "😀中\x0b\x0c\x1c\x85\u0301 <|im_end|> <|im_start|>"
    texts = [m["content"] for row in generate_tickets(200, seed=seed) for m in row["messages"]]
    for _ in range(n):
        alphabet = [SAFE, common, others if rng.random() < 0.2 else common]
        texts.append("".join(rng.choice(rng.choice(alphabet)) for _ in range(rng.randint(0, 80))))
    # an added token's text whole, in a text otherwise of printable ASCII, or of SAFE beyond it
    added = ["Thanks<|im_end|>", "<|im_start|>user hi", "a <|im_end|> b <|im_start|>", "café <|im_end|> €5"]
    return texts + added + ["", " ", "\n", "  \n ", "hello  world", "x 's", "I'M", "don't", "’tis", "£12.50", "10,000"]


def test_counts_piece_by_piece_are_the_tokenizers_own(tiny, kernels):
    """In Python, and in C for texts of printable ASCII (the same counts, texts of both kinds in
    one call, in order), the first time and again from the pieces learnt."""
    from taskfit.data.tokens import PieceCounter

    backend = tiny.tokenizer.backend_tokenizer
    counter = PieceCounter.make(backend)
    assert counter is not None  # a byte-level BPE: counted piece by piece
    texts = _texts(0, 6000)
    texts += ["".join(random.Random(k).choice("ab Z9'\n\t\r -_.srvemdlt") for _ in range(60)) for k in range(500)]
    texts += [" ".join(f"x{k}y" for k in range(at, at + 1000)) for at in range(0, 6000, 1000)]  # 6,000 numbers
    expected = [len(e) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    assert counter.count(texts) == expected
    assert counter.count(texts) == expected  # again, from the pieces it has learnt
    assert counter.count(texts[::-1][:300]) == expected[::-1][:300]
    assert len(counter._known) > 1000
    assert (counter._table is not None) == (kernels == "C")
    if kernels == "C":  # its table grew from 4,096 slots (2,048 pieces), the counts the same all along
        assert counter._bits > 12 and native_held(counter) > 2048


def native_held(counter) -> int:
    from taskfit.data import native

    return native.library().pieces_held(counter._table)


def test_a_tokenizer_that_cuts_texts_otherwise_is_counted_by_itself():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    from taskfit.data.tokens import PieceCounter

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    assert PieceCounter.make(tok) is None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    assert PieceCounter.make(tok) is not None
    tok.normalizer = normalizers.Lowercase()
    assert PieceCounter.make(tok) is None
