"""Supervised fine-tuning (lora, qlora, full): one linear recipe, top to bottom.

Loss is on the assistant's tokens only (the answer and its end-of-turn token), through the same
:func:`taskfit.rendering.render` that evaluation and serving use. Only the hidden states at those
positions go through the output layer: on SmolLM2 the vocabulary has 49,152 entries, so logits for
every position of a 100-token prompt would cost more time and memory than the whole answer.
Batches group rows of similar length, so little compute is spent on padding; with packing, the
rows of a batch share sequences instead, and attention never crosses from one row to another.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from taskfit.config import EvalSpec, TaskSpec, TrainSpec
from taskfit.errors import DataError
from taskfit.records import Example
from taskfit.rendering import Rendered, render
from taskfit.training.loop import LoopResult, StepStats, fit


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


def shuffled_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    rng = random.Random(seed * 1000003 + epoch)
    order = list(range(n))
    rng.shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def micro_batch_tokens(spec: TrainSpec) -> int:
    """``train.micro_batch_tokens``, or its default for where the model runs: 128 on CPU (measured
    in bench/train_throughput.py: 0.45x the memory of TRL's defaults at 1.8x its speed), 8192 on
    a GPU, whose memory and parallelism favour large passes."""
    if spec.micro_batch_tokens:
        return spec.micro_batch_tokens
    import torch

    return 8192 if spec.device != "cpu" and torch.cuda.is_available() else 128


def chunk_by_tokens(batch: Sequence[int], lengths: Sequence[int], cap: int, packed: bool = False) -> list[list[int]]:
    """Cut ``batch`` (in order) into runs whose padded size (rows × longest row, or the sum of
    lengths when packed) stays within ``cap`` tokens; a row longer than ``cap`` goes alone.
    Activation memory follows the tokens of one forward pass, not the batch size."""
    out: list[list[int]] = []
    current: list[int] = []
    longest = used = 0
    for i in batch:
        n = lengths[i]
        grown = used + n if packed else max(longest, n) * (len(current) + 1)
        if current and grown > cap:
            out.append(current)
            current, longest, used = [], 0, 0
        current.append(i)
        longest, used = max(longest, n), used + n
    if current:
        out.append(current)
    return out


@dataclass
class Batch:
    """Model inputs plus, for every loss token, where its prediction is read and which row owns it.

    Padded batches carry an attention mask; packed ones carry position ids that restart at each
    row, from which transformers builds a block-diagonal mask (no attention across rows).
    """

    ids: Any  # [S, T]
    mask: Any | None  # [S, T]
    positions: Any | None  # [S, T]
    src: tuple[Any, Any]  # (sequence, position) whose hidden state predicts each loss token
    targets: Any  # [N]
    owner: Any  # [N] index of the row (in the caller's list) each loss token belongs to
    read_tokens: int


def collate(rows: Sequence[Rendered], pad_id: int, pack_to: int | None = None) -> Batch:
    """One batch from ``rows``: right-padded, or packed into sequences of at most ``pack_to``."""
    import torch

    if pack_to:  # first-fit decreasing: rows in as few sequences as fit
        bins: list[list[int]] = []
        room: list[int] = []
        for i in sorted(range(len(rows)), key=lambda i: -len(rows[i].ids)):
            n = len(rows[i].ids)
            slot = next((b for b, free in enumerate(room) if free >= n), None)
            if slot is None:
                bins.append([i])
                room.append(pack_to - n)
            else:
                bins[slot].append(i)
                room[slot] -= n
    else:
        bins = [[i] for i in range(len(rows))]
    width = max(sum(len(rows[i].ids) for i in b) for b in bins)
    ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(bins), width), dtype=torch.long)
    positions = torch.zeros((len(bins), width), dtype=torch.long)
    src_s, src_t, targets, owner = [], [], [], []
    for s, members in enumerate(bins):
        offset = 0
        for i in members:
            r = rows[i]
            n = len(r.ids)
            ids[s, offset:offset + n] = torch.tensor(r.ids)
            mask[s, offset:offset + n] = 1
            positions[s, offset:offset + n] = torch.arange(n)
            for t in range(r.n_prompt, n):
                src_s.append(s)
                src_t.append(offset + t - 1)
                targets.append(r.ids[t])
                owner.append(i)
            offset += n
        # Padding gets positions of its own, so it reads as a separate (unscored) sequence.
        positions[s, offset:] = torch.arange(width - offset)
    packed = bool(pack_to)
    return Batch(ids=ids, mask=None if packed else mask, positions=positions if packed else None,
                 src=(torch.tensor(src_s), torch.tensor(src_t)), targets=torch.tensor(targets),
                 owner=torch.tensor(owner), read_tokens=int(mask.sum()))


def answer_logits(model: Any, batch: Batch) -> Any:
    """Logits [N, V] at the loss positions only; the rest of the sequence never meets the
    output layer. A model sharded by FSDP runs this through its root (training/fsdp.py)."""
    from taskfit.training.fsdp import root

    args = (batch.ids, batch.mask, batch.positions, batch.src[0], batch.src[1])
    head = root(model)
    return head(*args) if head is not None else answer_logits_of(model, *args)


def answer_logits_of(model: Any, ids: Any, mask: Any | None, positions: Any | None, rows: Any, cols: Any) -> Any:
    """The decoder's hidden states, then the output layer at (``rows``, ``cols``) only."""
    decoder = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(decoder, decoder.base_model_prefix)
    device = decoder.get_output_embeddings().weight.device
    kwargs = {"input_ids": ids.to(device), "use_cache": False}
    if mask is not None:
        kwargs["attention_mask"] = mask.to(device)
    if positions is not None:
        kwargs["position_ids"] = positions.to(device)
    hidden = body(**kwargs).last_hidden_state  # [S, T, H]
    picked = hidden[rows.to(device), cols.to(device)]  # [N, H]
    return decoder.get_output_embeddings()(picked).float()


def answer_loss(model: Any, batch: Batch) -> Any:
    """Mean cross-entropy over the answer tokens of the batch."""
    import torch.nn.functional as F

    logits = answer_logits(model, batch)
    return F.cross_entropy(logits, batch.targets.to(logits.device))


def completion_logps(model: Any, batch: Batch, n_rows: int) -> Any:
    """Summed log-probability of each row's completion, [n_rows] (DPO and preference accuracy)."""
    import torch

    logits = answer_logits(model, batch)
    token_lp = torch.log_softmax(logits, dim=-1).gather(
        1, batch.targets.to(logits.device)[:, None])[:, 0]
    return torch.zeros(n_rows, device=logits.device).index_add(0, batch.owner.to(logits.device), token_lp)


class SftObjective:
    """Cross-entropy on the answers; validation loss on held-back rows and the task's own metric
    on a sample of them (see :meth:`_task_metrics`)."""

    def __init__(self, model: Any, tokenizer: Any, task: TaskSpec, spec: TrainSpec,
                 train: Sequence[Example], validation: Sequence[Example] = (),
                 evaluation: EvalSpec | None = None):
        from taskfit.baselines.model import answer_room
        from taskfit.tasks import MAIN_METRIC

        self.model, self.tokenizer, self.task, self.spec = model, tokenizer, task, spec
        self.evaluation = evaluation or EvalSpec()  # how evaluation decodes and scores
        room = answer_room(tokenizer, task, self.evaluation.max_new_tokens)  # cut as evaluation cuts
        self.rows = featurize(tokenizer, task, train, spec.max_seq_length, room)
        self.val_rows = featurize(tokenizer, task, validation, spec.max_seq_length, room)
        self.metric_examples = list(validation)[: spec.metric_sample]
        self.metric_name = MAIN_METRIC[task.kind] if self.metric_examples else None
        self.validation_rows = len(self.val_rows)

    def batches(self, epoch: int) -> list[list[int]]:
        if self.spec.packing:
            return shuffled_batches(len(self.rows), self.spec.batch_size, self.spec.seed, epoch)
        return length_grouped_batches(self.rows, self.spec.batch_size, self.spec.seed, epoch)

    def units(self, batch: list[int]) -> int:
        return sum(len(self.rows[i].completion) for i in batch)

    def chunks(self, batch: list[int]) -> list[list[int]]:
        return chunk_by_tokens(batch, [len(r.ids) for r in self.rows], micro_batch_tokens(self.spec),
                               packed=self.spec.packing)

    def loss_sum(self, chunk: list[int]) -> StepStats:
        import torch.nn.functional as F

        batch = collate([self.rows[i] for i in chunk], self.tokenizer.pad_token_id,
                        self.spec.max_seq_length if self.spec.packing else None)
        logits = answer_logits(self.model, batch)
        loss = F.cross_entropy(logits, batch.targets.to(logits.device), reduction="sum")
        return StepStats(loss_sum=loss, read_tokens=batch.read_tokens, loss_tokens=len(batch.targets))

    def validate(self) -> dict[str, float | None]:
        import torch.nn.functional as F

        total = count = 0.0
        for start in range(0, len(self.val_rows), self.spec.batch_size):
            chunk = collate(self.val_rows[start:start + self.spec.batch_size], self.tokenizer.pad_token_id)
            logits = answer_logits(self.model, chunk)
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
        from taskfit.tasks import MAIN_METRIC, score
        from taskfit.training.fsdp import gathered

        examples, kind, ev = self.metric_examples, self.task.kind, self.evaluation
        if kind == "classify":
            predictor: Any = LabelScoringPredictor("validation", self.model, self.tokenizer, self.task,
                                                   self.spec.max_seq_length)
        else:
            predictor = GenerativePredictor("validation", self.model, self.tokenizer, self.task,
                                            self.spec.max_seq_length, ev.max_new_tokens,
                                            constrained=ev.constrained, batch_size=self.spec.batch_size)
        with gathered(self.model):
            predictions = list(predictor.predict(examples))
        if kind == "classify":
            return {"metric": sum(p.output == ex.target for p, ex in zip(predictions, examples)) / len(examples)}
        metrics = score(self.task, ev, "validation", examples, predictions, n_boot=1).metrics
        side = {"extract": "valid_rate", "qa": "refusal_recall", "generate": "format_compliance"}[kind]
        return {"metric": metrics[MAIN_METRIC[kind]], side: metrics.get(side)}


def prepare_model(model: Any, spec: TrainSpec, adapter: Path | None = None) -> Any:
    """Make the right parameters trainable for ``spec.method``: fresh LoRA adapters (seeded, so
    the initial adapter is reproducible), a given adapter to continue, or every weight (full)."""
    import torch

    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if spec.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return _sharded(model, spec)
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if spec.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing)
    if adapter is not None:
        return _sharded(PeftModel.from_pretrained(model, adapter, is_trainable=True), spec)
    torch.manual_seed(spec.seed)
    lora = spec.lora
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, use_dora=lora.use_dora,
                        use_rslora=lora.use_rslora, task_type="CAUSAL_LM")
    return _sharded(get_peft_model(model, config), spec)


def _sharded(model: Any, spec: TrainSpec) -> Any:
    """Shard the model across the processes when ``train.fsdp`` asks for it (training/fsdp.py)."""
    from taskfit.training import fsdp

    return fsdp.shard(model) if fsdp.wants_sharding(spec) else model


def train_sft(model: Any, tokenizer: Any, task: TaskSpec, spec: TrainSpec, train: Sequence[Example],
              validation: Sequence[Example] = (), *, run_dir: Path | None = None,
              resume_from: Path | None = None, adapter: Path | None = None,
              on_step: Callable[[int, int, float], None] | None = None,
              on_validate: Callable[[dict[str, Any]], None] | None = None,
              evaluation: EvalSpec | None = None) -> tuple[Any, LoopResult]:
    """Fine-tune ``model`` on ``train`` by ``spec.method``; return the trained model (a PEFT model
    for lora/qlora) and what happened. With ``run_dir``, the step log, the validation log and the
    checkpoints are written there. ``evaluation``: the project's ``eval`` settings, so that the
    validation metric decodes (answer budget, JSON constraint) as evaluation will."""
    model = prepare_model(model, spec, adapter)
    objective = SftObjective(model, tokenizer, task, spec, train, validation, evaluation)
    result = fit(model, objective, spec, len(objective.rows),
                 run_dir=run_dir, resume_from=resume_from, on_step=on_step, on_validate=on_validate)
    return model, result
