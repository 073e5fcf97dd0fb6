"""Supervised fine-tuning (lora, qlora, full): one linear recipe, top to bottom.

Loss is on the assistant's tokens only (the answer and its end-of-turn token), through the same
:func:`taskfit.rendering.render` that evaluation and serving use, and only those positions meet
the output layer (forward.py). Batches group rows of similar length, so little compute is spent on
padding; with packing, the rows of a batch share sequences instead, and attention never crosses
from one row to another (batching.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from taskfit.config import EvalSpec, TaskSpec, TrainSpec
from taskfit.errors import DataError
from taskfit.records import Example
from taskfit.rendering import Rendered, render
from taskfit.training.batching import (chunk_by_tokens, collate, length_grouped_batches, micro_batch_tokens,
                                       shuffled_batches)
from taskfit.training.forward import answer_logits
from taskfit.training.loop import LoopResult, StepStats, fit
from taskfit.training.tracking import Tracker
from taskfit.training.methods import make_trainable
from taskfit.training.parallel import Parallel


def featurize(tokenizer: Any, task: TaskSpec, examples: Sequence[Example], max_length: int,
              answer_room: int = 0) -> list[Rendered]:
    """Render every training example with its target; each must keep at least one loss token.
    A prompt that must be cut leaves ``answer_room`` tokens for the answer (at least), as
    evaluation and serving do (:func:`taskfit.baselines.model.answer_room`)."""
    rows = []
    for ex in examples:
        where = ex.source or f"row id {ex.id}"
        try:
            row = render(tokenizer, task, ex, target=ex.target, max_length=max_length, answer_room=answer_room)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}", hint="raise train.max_seq_length or shorten the answer") from None
        if not row.completion:
            raise DataError(f"{where}: the answer renders to no tokens, so nothing would be trained",
                            hint="give the row a non-empty answer")
        rows.append(row)
    return rows


class SftObjective:
    """Cross-entropy on the answers; validation loss on held-back rows and the task's own metric
    on a sample of them (see :meth:`_task_metrics`)."""

    def __init__(self, model: Any, tokenizer: Any, task: TaskSpec, spec: TrainSpec, parallel: Parallel,
                 train: Sequence[Example], validation: Sequence[Example] = (),
                 evaluation: EvalSpec | None = None):
        from taskfit.baselines.model import answer_room
        from taskfit.tasks import main_metric

        self.model, self.tokenizer, self.task, self.spec = model, tokenizer, task, spec
        self.evaluation = evaluation or EvalSpec()  # how evaluation decodes and scores
        room = answer_room(tokenizer, task, self.evaluation.max_new_tokens)  # cut as evaluation cuts
        self.rows = featurize(tokenizer, task, train, spec.max_seq_length, room)
        self.val_rows = featurize(tokenizer, task, validation, spec.max_seq_length, room)
        self.metric_examples = list(validation)[: spec.metric_sample]
        self.metric_name = main_metric(task.kind) if self.metric_examples else None
        self.validation_rows = len(self.val_rows)
        self.parallel = parallel  # under FSDP, the root the model runs through

    def batches(self, epoch: int) -> list[list[int]]:
        if self.spec.packing:
            return shuffled_batches(len(self.rows), self.spec.batch_size, self.spec.seed, epoch)
        return length_grouped_batches(self.rows, self.spec.batch_size, self.spec.seed, epoch)

    def units(self, batch: list[int]) -> int:
        """What the batch's loss is averaged over: its answer tokens, or its rows (train.loss_per)."""
        if self.spec.loss_per == "row":
            return len(batch)
        return sum(len(self.rows[i].completion) for i in batch)

    def chunks(self, batch: list[int]) -> list[list[int]]:
        return chunk_by_tokens(batch, [len(r.ids) for r in self.rows], micro_batch_tokens(self.spec),
                               packed=self.spec.packing)

    def loss_sum(self, chunk: list[int]) -> StepStats:
        import torch.nn.functional as F

        batch = collate([self.rows[i] for i in chunk], self.tokenizer.pad_token_id,
                        self.spec.max_seq_length if self.spec.packing else None)
        logits = answer_logits(self.model, batch, self.parallel)
        if self.spec.loss_per == "row":  # each token's loss over its row's answer tokens: a row sums to its mean
            import torch

            each = F.cross_entropy(logits, batch.targets.to(logits.device), reduction="none")
            tokens = torch.tensor([len(self.rows[i].completion) for i in chunk], dtype=each.dtype)
            loss = (each / tokens[batch.owner].to(each.device)).sum()
        else:
            loss = F.cross_entropy(logits, batch.targets.to(logits.device), reduction="sum")
        return StepStats(loss_sum=loss, read_tokens=batch.read_tokens, loss_tokens=len(batch.targets))

    def validate(self) -> dict[str, float | None]:
        import torch.nn.functional as F

        total = count = 0.0
        rows = sorted(self.val_rows, key=lambda r: len(r.ids))  # batches of similar length: less padding
        for start in range(0, len(rows), self.spec.batch_size):
            chunk = collate(rows[start:start + self.spec.batch_size], self.tokenizer.pad_token_id)
            logits = answer_logits(self.model, chunk, self.parallel)
            total += float(F.cross_entropy(logits, chunk.targets.to(logits.device), reduction="sum"))
            count += len(chunk.targets)
        out: dict[str, float | None] = {"val_loss": total / count, "metric": None}
        if self.metric_examples:
            out.update(self._task_metrics())
        return out

    def _task_metrics(self) -> dict[str, float]:
        """The task's own figure on the metric sample, as evaluation computes it: label accuracy
        by label scoring (classify); otherwise greedy answers, JSON-constrained for extract, scored
        by the task kind (field F1 and schema compliance, answer F1 and refusals, ROUGE-L and the
        house rules)."""
        from taskfit.baselines import GenerativePredictor, LabelScoringPredictor
        from taskfit.tasks import get_task, score

        examples, kind, ev = self.metric_examples, get_task(self.task.kind), self.evaluation
        if kind.scores_labels:
            predictor: Any = LabelScoringPredictor("validation", self.model, self.tokenizer, self.task,
                                                   self.spec.max_seq_length, batch_size=self.spec.batch_size)
        else:
            predictor = GenerativePredictor("validation", self.model, self.tokenizer, self.task,
                                            self.spec.max_seq_length,
                                            kind.answer_budget(self.task, ev, self.tokenizer),
                                            constrained=ev.constrained, batch_size=self.spec.batch_size)
        with self.parallel.gathered():
            predictions = list(predictor.predict(examples))
        if kind.scores_labels:  # the label itself, before any confidence fallback
            return {"metric": sum(p.output == ex.target for p, ex in zip(predictions, examples)) / len(examples)}
        metrics = score(self.task, ev, "validation", examples, predictions, n_boot=1).metrics
        out = {"metric": metrics[kind.scoring.main_metric]}
        if kind.validation_side:
            out[kind.validation_side] = metrics.get(kind.validation_side)
        return out


def train_sft(model: Any, tokenizer: Any, task: TaskSpec, spec: TrainSpec, train: Sequence[Example],
              validation: Sequence[Example] = (), *, run_dir: Path | None = None,
              resume_from: Path | None = None, adapter: Path | None = None,
              on_step: Callable[[int, int, float], None] | None = None,
              on_validate: Callable[[dict[str, Any]], None] | None = None,
              evaluation: EvalSpec | None = None, tracker: Tracker | None = None) -> tuple[Any, LoopResult]:
    """Fine-tune ``model`` on ``train`` by ``spec.method``; return the trained model (a PEFT model
    for lora/qlora) and what happened. With ``run_dir``, the step log, the validation log and the
    checkpoints are written there. ``evaluation``: the project's ``eval`` settings, so that the
    validation metric decodes (answer budget, JSON constraint) as evaluation will."""
    from taskfit.training.fsdp import join  # imports torch: not at import time

    model = make_trainable(model, spec, adapter)
    parallel = join(model, spec)
    objective = SftObjective(model, tokenizer, task, spec, parallel, train, validation, evaluation)
    result = fit(model, objective, spec, len(objective.rows), parallel=parallel,
                 run_dir=run_dir, resume_from=resume_from, on_step=on_step, on_validate=on_validate, tracker=tracker)
    return model, result
