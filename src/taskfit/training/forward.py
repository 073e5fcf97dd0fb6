"""The answer-only forward pass every method trains through.

Only the hidden states at the loss positions go through the output layer: on SmolLM2 the
vocabulary has 49,152 entries, so logits for every position of a 100-token prompt would cost more
time and memory than the whole answer. A model sharded by FSDP runs the same computation through
its root (fsdp.AnswerHead), which the :class:`~taskfit.training.parallel.Parallel` handle holds.
"""

from __future__ import annotations

from typing import Any

from taskfit.models.compat import cache_arg
from taskfit.training.batching import Batch
from taskfit.training.parallel import Parallel


def answer_logits(model: Any, batch: Batch, parallel: Parallel | None = None) -> Any:
    """Logits [N, V] at the loss positions only; the rest of the sequence never meets the
    output layer. With a sharded ``parallel``, through its FSDP root."""
    args = (batch.ids, batch.mask, batch.positions, batch.src[0], batch.src[1])
    head = parallel.head if parallel is not None else None
    return head(*args) if head is not None else answer_logits_of(model, *args)


def decoder_of(model: Any) -> tuple[Any, Any]:
    """(the causal LM, its decoder body without the output layer), through a PEFT wrapper."""
    decoder = model.get_base_model() if hasattr(model, "get_base_model") else model
    return decoder, getattr(decoder, decoder.base_model_prefix)


def answer_logits_of(model: Any, ids: Any, mask: Any | None, positions: Any | None, rows: Any, cols: Any,
                     cache: Any | None = None) -> Any:
    """The decoder's hidden states, then the output layer at (``rows``, ``cols``) only. ``cache``:
    the key/value cache of a prefix every row continues (one row per row of ``ids``; ``mask`` and
    ``positions`` then cover the prefix's columns too); it is extended in place."""
    decoder, body = decoder_of(model)
    device = decoder.get_output_embeddings().weight.device
    kwargs = {"input_ids": ids.to(device), "use_cache": cache is not None}
    if cache is not None:
        kwargs[cache_arg()] = cache
    if mask is not None:
        kwargs["attention_mask"] = mask.to(device)
    if positions is not None:
        kwargs["position_ids"] = positions.to(device)
    hidden = body(**kwargs).last_hidden_state  # [S, T, H]
    picked = hidden[rows.to(device), cols.to(device)]  # [N, H]
    return decoder.get_output_embeddings()(picked).float()


def answer_loss(model: Any, batch: Batch, parallel: Parallel | None = None) -> Any:
    """Mean cross-entropy over the answer tokens of the batch."""
    import torch.nn.functional as F

    logits = answer_logits(model, batch, parallel)
    return F.cross_entropy(logits, batch.targets.to(logits.device))


def completion_logps(model: Any, batch: Batch, n_rows: int, parallel: Parallel | None = None) -> Any:
    """Summed log-probability of each row's completion, [n_rows] (DPO and preference accuracy)."""
    import torch

    logits = answer_logits(model, batch, parallel)
    token_lp = torch.log_softmax(logits, dim=-1).gather(
        1, batch.targets.to(logits.device)[:, None])[:, 0]
    return torch.zeros(n_rows, device=logits.device).index_add(0, batch.owner.to(logits.device), token_lp)
