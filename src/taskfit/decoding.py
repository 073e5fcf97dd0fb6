"""Greedy decoding, optionally held to a grammar, shared by evaluation and serving.

Constrained decoding uses llguidance (guidance-ai's Rust engine, also behind llama.cpp's and
vLLM's structured outputs): it has no dependencies, runs on CPU, builds a JSON-schema grammar in
milliseconds, and computes each step's allowed-token mask in well under a millisecond. We chose it
over xgrammar (its Linux wheel pulls the 1 GB triton package even on CPU) and
lm-format-enforcer (its transformers integration does not import under transformers 5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence


@lru_cache(maxsize=4)
def _ll_tokenizer(tokenizer: Any) -> Any:
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer)  # ~0.5 s, so once per tokenizer


def json_schema_grammar(schema: dict[str, Any]) -> str:
    import llguidance

    # Compact JSON (no free whitespace): a small model otherwise pads with newlines until the
    # token budget runs out.
    return llguidance.LLMatcher.grammar_from_json_schema(
        json.dumps(schema), defaults={"whitespace_flexible": False})


def grammar_is_json(grammar: str) -> bool:
    return '"json_schema"' in grammar


def choice_grammar(options: Sequence[str]) -> str:
    import llguidance

    return llguidance.grammar_from("choice", json.dumps(list(options)))


JSON_CLOSERS = '"}]'
CLOSING_TOKENS = 16  # JSON: in the last this-many tokens of the budget, steer towards closing


@lru_cache(maxsize=4)
def _closing_ids(tokenizer: Any, chars: str) -> Any:
    """Ids of tokens whose text is only ``chars`` and spaces (e.g. ``"}`` or ``]}``)."""
    import torch

    ids = [i for i in range(len(tokenizer))
           if (text := tokenizer.decode([i])).strip() and set(text) <= set(chars + " ")]
    return torch.tensor(ids, dtype=torch.long)


class GrammarLogitsProcessor:
    """A transformers logits processor that allows only tokens the grammar can continue with
    (and end-of-sequence once the grammar is complete). One instance per generated sequence.

    With ``closers`` (JSON: quote, brace, bracket) and a token ``budget``, the last
    ``CLOSING_TOKENS`` steps prefer, among the allowed tokens, those made only of closing
    characters: an open string is ended and open objects are closed instead of being cut off
    when the budget runs out. Where no closing token is allowed (just after a colon, say), the
    step is decoded as usual.
    """

    def __init__(self, tokenizer: Any, grammar: str, budget: int | None = None, closers: str | None = None):
        import llguidance

        self.lltok = _ll_tokenizer(tokenizer)
        self.matcher = llguidance.LLMatcher(self.lltok, grammar)
        if self.matcher.is_error():
            raise ValueError(f"grammar rejected: {self.matcher.get_error()}")
        self.seen: int | None = None
        self.start: int | None = None
        self.budget = budget
        self.closing = _closing_ids(tokenizer, closers) if closers and budget else None
        self.eos = tokenizer.eos_token_id

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np
        import torch
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

        length = input_ids.shape[1]
        if self.seen is not None and length > self.seen:
            self.matcher.consume_token(int(input_ids[0, -1]))
        else:
            self.start = length
        self.seen = length
        mask = allocate_token_bitmask(1, self.lltok.vocab_size)
        fill_next_token_bitmask(self.matcher, mask)
        bits = np.unpackbits(mask.view(np.uint8), bitorder="little")[: scores.shape[-1]]
        allowed = torch.from_numpy(bits.astype(bool)).to(scores.device)
        if allowed.numel() < scores.shape[-1]:  # the model's vocabulary is padded past the tokenizer's
            allowed = torch.cat([allowed, allowed.new_zeros(scores.shape[-1] - allowed.numel())])
        if self.closing is not None and self.budget - (length - self.start) <= CLOSING_TOKENS:
            closing = torch.zeros_like(allowed)
            closing[self.closing.to(allowed.device)] = True
            if self.eos is not None and self.eos < closing.numel():
                closing[self.eos] = True  # a complete record may end
            if (allowed & closing).any():
                allowed = allowed & closing
        return scores.masked_fill(~allowed, float("-inf"))


@dataclass(frozen=True)
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int


def generate(model: Any, tokenizer: Any, prompt_ids: list[int], max_new_tokens: int,
             grammar: str | None = None) -> Generated:
    """Greedy continuation of ``prompt_ids`` up to the end-of-turn token or ``max_new_tokens``."""
    import torch

    device = model.get_output_embeddings().weight.device
    ids = torch.tensor([prompt_ids], device=device)
    closers = JSON_CLOSERS if grammar and grammar_is_json(grammar) else None
    processors = ([GrammarLogitsProcessor(tokenizer, grammar, budget=max_new_tokens, closers=closers)]
                  if grammar else None)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, logits_processor=processors)
    new = out[0, len(prompt_ids):].tolist()
    return Generated(text=tokenizer.decode(new, skip_special_tokens=True).strip(),
                     prompt_tokens=len(prompt_ids), completion_tokens=len(new))
