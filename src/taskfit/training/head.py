"""A classification head (``train.classify_head``): one linear recipe, top to bottom.

LoRA on the decoder and a linear head over the text's final hidden states (their mean, or the
last token's: ``train.head_pooling``; PEFT's
sequence-classification task, the head saved with the adapter) are trained by cross-entropy over
the task's labels, through the same loop as supervised fine-tuning (loop.py): validation loss on
held-back rows, accuracy on the first ``train.metric_sample`` of them (the head's argmax, as
evaluation reads it), early stopping, checkpoints and resume. Each row is read once, as every
other path reads it (:func:`taskfit.rendering.classifier_ids`: the input text alone), in batches
of rows of similar length cut into micro-batches (batching.py). With adapters on the top layers
only (``train.lora.layers``), the frozen layers below them are read once per row
(:class:`FrozenLayers`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

from taskfit.config import TaskSpec, TrainSpec
from taskfit.errors import DataError
from taskfit.models.head import Head, classifier_over, head_logits, pool_and_score
from taskfit.records import Example
from taskfit.rendering import Rendered, classifier_ids
from taskfit.training.batching import chunk_by_tokens, length_grouped_batches, micro_batch_tokens
from taskfit.training.loop import LoopResult, StepStats, fit
from taskfit.training.tracking import Tracker
from taskfit.training.methods import adapted_layers, make_trainable
from taskfit.training.parallel import Parallel


def label_rows(tokenizer: Any, head: Head, examples: Sequence[Example]) -> tuple[list[Rendered], list[int]]:
    """Each example's input ids (as a prompt without an answer) and its label's index."""
    index = {lab: i for i, lab in enumerate(head.labels)}
    rows, targets = [], []
    for ex in examples:
        where = ex.source or f"row id {ex.id}"
        try:
            ids = classifier_ids(tokenizer, ex, head.max_length)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}", hint="give the row some input text") from None
        if ex.target not in index:  # data checks refuse these; this guards other callers
            raise DataError(f"{where}: label {ex.target!r} is not in task.labels")
        rows.append(Rendered(ids=ids, n_prompt=len(ids)))
        targets.append(index[ex.target])
    return rows, targets


# Memory for the frozen layers' output, at most: 480 quickstart tickets of ~58 tokens at
# SmolLM2-135M's width (576, float32) take 64 MB; rows past the budget are read whole each time.
FROZEN_STATES_BYTES = 2 << 30


def _stand_ins(n: int) -> list[Any]:
    """``n`` modules to stand in for frozen decoder layers whose output is already known: each
    returns its input."""
    import torch

    class StandIn(torch.nn.Module):
        def forward(self, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
            return hidden_states

    return [StandIn() for _ in range(n)]


class FrozenLayers:
    """The output of the decoder layers below the first adapted one (``train.lora.layers``), kept
    per row. Those layers are frozen and carry no adapter, so a row's states there never change
    while training: the first pass over a row runs the whole body and keeps what reaches the first
    adapted layer; later passes (the next epochs, each validation) start there, with the layers
    below standing aside. Before the first such pass the two ways are compared on the same rows
    (eval mode, no dropout): a body that cannot be started in the middle like this (its layers
    return tuples, it rescales its input embeddings...) is read whole from then on, with a
    warning; so is a body with dropout of its own, whose states would differ from pass to pass."""

    def __init__(self, model: Any, first: int, pad_token_id: int, pooling: str, budget_bytes: int | None = None):
        classifier = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.model, self.body, self.first = model, classifier.base_model, first
        self.pad, self.pooling = pad_token_id, pooling
        self.budget = FROZEN_STATES_BYTES if budget_bytes is None else budget_bytes
        config = getattr(classifier, "config", None)
        dropout = max(float(getattr(config, name, 0.0) or 0.0)
                      for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop"))
        self.enabled = 0 < first < len(getattr(self.body, "layers", ())) and dropout == 0.0
        self.stand_ins = _stand_ins(first) if self.enabled else []
        self.states: dict[Hashable, Any] = {}
        self.used = 0
        self.checked = False

    def logits(self, keys: Sequence[Hashable], rows: Sequence[Sequence[int]]) -> Any:
        """The head's logits for ``rows`` (token ids), ``keys`` naming each row across calls."""
        if self.enabled and all(k in self.states for k in keys):
            if not self.checked:
                self._check(keys, rows)
            if self.enabled:
                return self._from_states(keys)
        return self._whole(keys, rows)

    def _whole(self, keys: Sequence[Hashable], rows: Sequence[Sequence[int]]) -> Any:
        if not self.enabled:
            return head_logits(self.model, rows, self.pad, self.pooling)
        seen: list[Any] = []

        def keep(module: Any, args: tuple, kwargs: dict) -> None:
            seen.append((args[0] if args else kwargs["hidden_states"]).detach())

        handle = self.body.layers[self.first].register_forward_pre_hook(keep, with_kwargs=True)
        try:
            logits = head_logits(self.model, rows, self.pad, self.pooling)
        finally:
            handle.remove()
        if len(seen) == 1:
            for i, (key, row) in enumerate(zip(keys, rows)):
                state = seen[0][i, :len(row)]
                size = state.numel() * state.element_size()
                if key not in self.states and self.used + size <= self.budget:
                    self.states[key] = state.clone()
                    self.used += size
        return logits

    def _from_states(self, keys: Sequence[Hashable]) -> Any:
        import torch

        states = [self.states[k] for k in keys]
        width = max(len(s) for s in states)
        first = states[0]
        hidden = torch.zeros((len(states), width, first.shape[-1]), dtype=first.dtype, device=first.device)
        mask = torch.zeros((len(states), width), dtype=torch.long, device=first.device)
        for i, state in enumerate(states):
            hidden[i, :len(state)] = state
            mask[i, :len(state)] = 1
        layers = self.body.layers
        self.body.layers = torch.nn.ModuleList(self.stand_ins + list(layers[self.first:]))
        try:
            out = self.body(inputs_embeds=hidden, attention_mask=mask).last_hidden_state
        finally:
            self.body.layers = layers
        return pool_and_score(self.model, out, mask, self.pooling)

    def _check(self, keys: Sequence[Hashable], rows: Sequence[Sequence[int]]) -> None:
        import torch

        self.checked = True
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                whole = head_logits(self.model, rows, self.pad, self.pooling)
                started = self._from_states(keys)
            same = whole.shape == started.shape and bool(torch.allclose(whole, started, rtol=1e-3, atol=1e-4))
        except (RuntimeError, TypeError, ValueError, IndexError, AttributeError, KeyError):
            same = False
        finally:
            self.model.train(training)
        if not same:
            self.enabled = False
            self.states.clear()
            warnings.warn(f"train.lora.layers: {type(self.body).__name__} cannot be started at its first adapted "
                          "layer, so its frozen layers are read again every pass (slower, the same training)",
                          RuntimeWarning, stacklevel=2)


class HeadObjective:
    """Cross-entropy over the labels, one prediction per row (so a batch's loss is averaged over
    its rows); validation loss on held-back rows, and accuracy on the first ``metric_sample``."""

    def __init__(self, model: Any, tokenizer: Any, head: Head, spec: TrainSpec,
                 train: Sequence[Example], validation: Sequence[Example] = ()):
        self.model, self.pad, self.spec, self.pooling = model, tokenizer.pad_token_id, spec, head.pooling
        self.rows, self.targets = label_rows(tokenizer, head, train)
        self.val_rows, self.val_targets = label_rows(tokenizer, head, validation)
        self.metric_rows = min(spec.metric_sample, len(self.val_rows))
        self.metric_name = "accuracy" if self.metric_rows else None
        self.validation_rows = len(self.val_rows)
        adapted = adapted_layers(spec.lora, getattr(model.config, "num_hidden_layers", None))
        self.frozen = FrozenLayers(model, adapted[0] if adapted else 0, self.pad, self.pooling)

    def batches(self, epoch: int) -> list[list[int]]:
        return length_grouped_batches(self.rows, self.spec.batch_size, self.spec.seed, epoch)

    def units(self, batch: list[int]) -> int:
        return len(batch)

    def chunks(self, batch: list[int]) -> list[list[int]]:
        return chunk_by_tokens(batch, [len(r.ids) for r in self.rows], micro_batch_tokens(self.spec))

    def loss_sum(self, chunk: list[int]) -> StepStats:
        import torch
        import torch.nn.functional as F

        ids = [self.rows[i].ids for i in chunk]
        logits = self.frozen.logits([("train", i) for i in chunk], ids)
        targets = torch.tensor([self.targets[i] for i in chunk], device=logits.device)
        return StepStats(loss_sum=F.cross_entropy(logits, targets, reduction="sum"),
                         read_tokens=sum(map(len, ids)), loss_tokens=len(chunk))

    def validate(self) -> dict[str, float | None]:
        import torch
        import torch.nn.functional as F

        # Read in batches of rows of similar length (less padding), scored in the rows' own order.
        order = sorted(range(len(self.val_rows)), key=lambda i: len(self.val_rows[i].ids))
        step, parts = self.spec.batch_size, []
        for start in range(0, len(order), step):
            keys = [("validation", i) for i in order[start:start + step]]
            parts.append(self.frozen.logits(keys, [self.val_rows[i].ids for _, i in keys]))
        read = torch.cat(parts)
        logits = torch.empty_like(read)
        logits[torch.tensor(order, device=read.device)] = read
        targets = torch.tensor(self.val_targets, device=logits.device)
        right = int((logits[:self.metric_rows].argmax(-1) == targets[:self.metric_rows]).sum())
        return {"val_loss": float(F.cross_entropy(logits, targets, reduction="sum")) / len(self.val_rows),
                "metric": right / self.metric_rows if self.metric_rows else None}


def train_head(model: Any, tokenizer: Any, task: TaskSpec, spec: TrainSpec, train: Sequence[Example],
               validation: Sequence[Example] = (), *, run_dir: Path | None = None,
               resume_from: Path | None = None, on_step: Callable[[int, int, float], None] | None = None,
               on_validate: Callable[[dict[str, Any]], None] | None = None,
               tracker: Tracker | None = None) -> tuple[Any, Head, LoopResult]:
    """Train LoRA and a classification head for ``task.labels`` over ``model``'s body (the causal
    model is not used afterwards: the classifier shares its weights); return the trained PEFT
    model, its :class:`Head` (saved beside the adapter) and what happened. With ``run_dir``, the
    step log, the validation log and the checkpoints are written there."""
    from taskfit.training.fsdp import join  # imports torch: not at import time

    head = Head(labels=tuple(task.labels or ()), max_length=spec.max_seq_length, pooling=spec.head_pooling)
    model = make_trainable(classifier_over(model, head.labels, tokenizer.pad_token_id, seed=spec.seed), spec)
    parallel: Parallel = join(model, spec)  # data parallel at most: config refuses fsdp with a head
    objective = HeadObjective(model, tokenizer, head, spec, train, validation)
    result = fit(model, objective, spec, len(objective.rows), parallel=parallel, run_dir=run_dir,
                 resume_from=resume_from, on_step=on_step, on_validate=on_validate, tracker=tracker)
    return model, head, result
