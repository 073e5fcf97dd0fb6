"""A classification head (``train.classify_head``): one linear recipe, top to bottom.

LoRA on the decoder and a linear head over the text's final hidden states (their mean, or the
last token's: ``train.head_pooling``; PEFT's
sequence-classification task, the head saved with the adapter) are trained by cross-entropy over
the task's labels, through the same loop as supervised fine-tuning (loop.py): validation loss on
held-back rows, accuracy on the first ``train.metric_sample`` of them (the head's argmax, as
evaluation reads it), early stopping, checkpoints and resume. Each row is read once, as every
other path reads it (:func:`taskfit.rendering.classifier_ids`: the input text alone), in batches
of rows of similar length cut into micro-batches (batching.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from taskfit.config import TaskSpec, TrainSpec
from taskfit.errors import DataError
from taskfit.models.head import Head, classifier_over, head_logits
from taskfit.records import Example
from taskfit.rendering import Rendered, classifier_ids
from taskfit.training.batching import chunk_by_tokens, length_grouped_batches, micro_batch_tokens
from taskfit.training.loop import LoopResult, StepStats, fit
from taskfit.training.tracking import Tracker
from taskfit.training.methods import make_trainable
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
        logits = head_logits(self.model, ids, self.pad, self.pooling)
        targets = torch.tensor([self.targets[i] for i in chunk], device=logits.device)
        return StepStats(loss_sum=F.cross_entropy(logits, targets, reduction="sum"),
                         read_tokens=sum(map(len, ids)), loss_tokens=len(chunk))

    def validate(self) -> dict[str, float | None]:
        import torch
        import torch.nn.functional as F

        total, right = 0.0, 0
        step = self.spec.batch_size
        for start in range(0, len(self.val_rows), step):
            logits = head_logits(self.model, [r.ids for r in self.val_rows[start:start + step]], self.pad,
                                 self.pooling)
            targets = torch.tensor(self.val_targets[start:start + step], device=logits.device)
            total += float(F.cross_entropy(logits, targets, reduction="sum"))
            scored = max(0, min(len(targets), self.metric_rows - start))
            right += int((logits[:scored].argmax(-1) == targets[:scored]).sum())
        return {"val_loss": total / len(self.val_rows),
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
