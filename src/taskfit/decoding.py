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


def choice_grammar(options: Sequence[str]) -> str:
    import llguidance

    return llguidance.grammar_from("choice", json.dumps(list(options)))


class GrammarLogitsProcessor:
    """A transformers logits processor that allows only tokens the grammar can continue with
    (and end-of-sequence once the grammar is complete). One instance per generated sequence."""

    def __init__(self, tokenizer: Any, grammar: str):
        import llguidance

        self.lltok = _ll_tokenizer(tokenizer)
        self.matcher = llguidance.LLMatcher(self.lltok, grammar)
        if self.matcher.is_error():
            raise ValueError(f"grammar rejected: {self.matcher.get_error()}")
        self.seen: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np
        import torch
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

        length = input_ids.shape[1]
        if self.seen is not None and length > self.seen:
            self.matcher.consume_token(int(input_ids[0, -1]))
        self.seen = length
        mask = allocate_token_bitmask(1, self.lltok.vocab_size)
        fill_next_token_bitmask(self.matcher, mask)
        bits = np.unpackbits(mask.view(np.uint8), bitorder="little")[: scores.shape[-1]]
        allowed = torch.from_numpy(bits.astype(bool)).to(scores.device)
        if allowed.numel() < scores.shape[-1]:  # the model's vocabulary is padded past the tokenizer's
            allowed = torch.cat([allowed, allowed.new_zeros(scores.shape[-1] - allowed.numel())])
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
    processors = [GrammarLogitsProcessor(tokenizer, grammar)] if grammar else None
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, logits_processor=processors)
    new = out[0, len(prompt_ids):].tolist()
    return Generated(text=tokenizer.decode(new, skip_special_tokens=True).strip(),
                     prompt_tokens=len(prompt_ids), completion_tokens=len(new))
