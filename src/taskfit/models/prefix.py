"""The tokens every prompt of a task begins with, read once.

Every prompt of a task starts with the same tokens: the chat template's header, the task's
system prompt (for classify, with every label named), the user turn's header: 44 tokens of the
quickstart's prompts (108 on average), and for a taxonomy of many labels or a long extract
schema most of every prompt. :class:`PrefixCache` reads them once per model state (the base model or one
adapter, whose LoRA changes the keys and values) and gives each batch a copy of their key/value
cache, so that only what follows is read. Both decoding (:func:`taskfit.decoding.decode_batch`)
and label scoring (:mod:`taskfit.baselines.label_tree`) take one; a prompt that does not begin
with the prefix (a template that tokenizes the join differently) is read whole, as before.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Sequence

from taskfit.models.compat import cache_of

PROBES = ("A probe", "Zz?")  # two inputs that begin differently


class PrefixCache:
    """The key/value cache of ``ids``, made on first use by the model it is used with; the owner
    (a predictor, or the server's entry for one adapter) keeps it for one model state only."""

    def __init__(self, ids: Sequence[int]):
        self.ids = list(ids)
        self._cache: Any = None
        self.uses = 0  # batches that began from it

    @classmethod
    def for_task(cls, tokenizer: Any, task: Any | None) -> PrefixCache | None:
        """The prefix of ``task``'s prompts (None: of chat requests without a system prompt,
        which a template may give its default one): what two prompts with different inputs
        share, or None when that is under two tokens."""
        from taskfit.records import Example
        from taskfit.rendering import render, template_ids

        probes = [render(tokenizer, task, Example(id=f"p{i}", input=text, target="")).ids if task is not None
                  else template_ids(tokenizer, [{"role": "user", "content": text}], generation_prompt=True)
                  for i, text in enumerate(PROBES)]
        shared = os.path.commonprefix(probes)
        return cls(shared) if len(shared) >= 2 else None

    def length_for(self, prompts: Sequence[Sequence[int]]) -> int:
        """How many tokens of every prompt the cache holds: its length when each prompt begins
        with the prefix and has a token after it (the one whose logits are needed), else 0."""
        n = len(self.ids)
        return n if prompts and all(len(p) > n and list(p[:n]) == self.ids for p in prompts) else 0

    def cache(self, model: Any, batch: int, **forward: Any) -> Any:
        """A fresh copy of the prefix's cache for ``batch`` rows (``forward``: extra arguments of
        the model's forward pass, such as PEFT's ``adapter_names``, for the first reading)."""
        import torch

        if self._cache is None:
            device = model.get_output_embeddings().weight.device
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([self.ids], device=device), use_cache=True, logits_to_keep=1,
                            **{k: v[:1] for k, v in forward.items()})
            self._cache = cache_of(out)
        self.uses += 1
        fresh = copy.deepcopy(self._cache)
        if batch > 1:
            fresh.batch_repeat_interleave(batch)
        return fresh
