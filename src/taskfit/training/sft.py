"""LoRA supervised fine-tuning: one linear recipe, top to bottom.

Loss is on the assistant's tokens only (the answer and its end-of-turn token), through the same
:func:`taskfit.rendering.render` that evaluation uses. Only the hidden states at those positions go
through the output layer: on SmolLM2 the vocabulary has 49,152 entries, so computing logits for
every position of a 100-token prompt would cost more time and memory than the whole answer.
Batches group rows of similar length, so little compute is spent on padding.
"""

from __future__ import annotations

import csv
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from taskfit.config import TaskSpec, TrainSpec
from taskfit.records import Example
from taskfit.rendering import Rendered, render


@dataclass(frozen=True)
class TrainResult:
    steps: int
    epochs: float
    trained_tokens: int  # tokens read by the model (prompt and answer, no padding)
    loss_tokens: int  # tokens that carried loss
    seconds: float
    losses: list[float]  # one per optimiser step
    truncated_rows: int

    @property
    def tokens_per_second(self) -> float:
        return self.trained_tokens / self.seconds if self.seconds else 0.0


def featurize(tokenizer: Any, task: TaskSpec, examples: Sequence[Example], max_length: int) -> list[Rendered]:
    """Render every training example with its target; each must carry at least one loss token."""
    rows = [render(tokenizer, task, ex, target=ex.target, max_length=max_length) for ex in examples]
    for ex, row in zip(examples, rows):
        if not row.completion:
            raise ValueError(f"{ex.source or ex.id}: the answer renders to no tokens")
    return rows


def length_grouped_batches(rows: Sequence[Rendered], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Indices in batches of similar length: shuffle, sort within windows of 50 batches, shuffle
    the batches. Deterministic for (seed, epoch)."""
    rng = random.Random(seed * 1000003 + epoch)
    order = list(range(len(rows)))
    rng.shuffle(order)
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: len(rows[i].ids))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(rows: Sequence[Rendered], pad_id: int) -> tuple[Any, Any, Any, Any]:
    """Right-padded ids [B, T], attention mask [B, T], and for every loss token: the (row, position)
    whose hidden state predicts it, and the token itself."""
    import torch

    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    src_b, src_t, targets = [], [], []
    for b, r in enumerate(rows):
        ids[b, : len(r.ids)] = torch.tensor(r.ids)
        mask[b, : len(r.ids)] = 1
        for t in range(r.n_prompt, len(r.ids)):
            src_b.append(b)
            src_t.append(t - 1)
            targets.append(r.ids[t])
    return ids, mask, (torch.tensor(src_b), torch.tensor(src_t)), torch.tensor(targets)


def answer_loss(model: Any, ids: Any, mask: Any, where: tuple[Any, Any], targets: Any) -> Any:
    """Mean cross-entropy over the answer tokens, with logits computed only where needed."""
    import torch.nn.functional as F

    decoder = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(decoder, decoder.base_model_prefix)
    hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, T, H]
    picked = hidden[where[0], where[1]]  # [N, H], N = answer tokens in the batch
    logits = decoder.get_output_embeddings()(picked).float()  # [N, V]
    return F.cross_entropy(logits, targets)


def apply_lora(model: Any, spec: TrainSpec) -> Any:
    """Wrap ``model`` in fresh LoRA adapters (seeded, so the initial adapter is reproducible)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(spec.seed)
    config = LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                        target_modules=spec.lora.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def train_lora(model: Any, tokenizer: Any, task: TaskSpec, spec: TrainSpec,
               examples: Sequence[Example], log_path: Path | None = None,
               on_step: Callable[[int, int, float], None] | None = None) -> tuple[Any, TrainResult]:
    """Train LoRA adapters on ``examples``; return the PEFT model and what happened.

    ``on_step(step, total_steps, loss)`` is called after every optimiser step (progress bars).
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    rows = featurize(tokenizer, task, examples, spec.max_seq_length)
    peft_model = apply_lora(model, spec)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.0)
    per_epoch = math.ceil(len(rows) / spec.batch_size)
    total = max(1, math.ceil(per_epoch * spec.epochs))
    schedule = get_linear_schedule_with_warmup(optimizer, int(total * spec.warmup_ratio), total)
    torch.manual_seed(spec.seed)  # LoRA dropout masks

    losses: list[float] = []
    trained = loss_tokens = step = 0
    start = time.perf_counter()
    log = log_path.open("w", newline="") if log_path else None
    writer = csv.writer(log) if log else None
    if writer:
        writer.writerow(["step", "epoch", "loss", "learning_rate", "tokens", "seconds"])
    try:
        epoch = 0
        while step < total:
            for batch in length_grouped_batches(rows, spec.batch_size, spec.seed, epoch):
                if step >= total:
                    break
                chunk = [rows[i] for i in batch]
                ids, mask, where, targets = _collate(chunk, tokenizer.pad_token_id)
                loss = answer_loss(peft_model, ids, mask, where, targets)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                trained += int(mask.sum())
                loss_tokens += len(targets)
                losses.append(loss.item())
                if writer:
                    writer.writerow([step, round(step / per_epoch, 4), round(losses[-1], 6),
                                     schedule.get_last_lr()[0], trained,
                                     round(time.perf_counter() - start, 3)])
                if on_step:
                    on_step(step, total, losses[-1])
            epoch += 1
    finally:
        if log:
            log.close()
    peft_model.eval()
    return peft_model, TrainResult(
        steps=step, epochs=step / per_epoch, trained_tokens=trained, loss_tokens=loss_tokens,
        seconds=time.perf_counter() - start, losses=losses,
        truncated_rows=sum(r.truncated for r in rows))
