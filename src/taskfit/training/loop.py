"""The optimisation loop every method shares: steps, validation, early stopping, checkpoints, resume.

A method (SFT, DPO) supplies an :class:`Objective`: its batches for an epoch, the loss of one
batch, and a validation. This loop owns everything that must be right for every method alike:

- checkpoints are written to a temporary directory and renamed into place, so a directory named
  ``step-N`` is always complete; a run killed mid-write leaves only a ``.tmp`` directory, ignored
  and removed on resume;
- a checkpoint holds the trainable weights, the optimiser and scheduler, the random state, the
  position in the epoch and the validation history, so a resumed run takes the same steps with
  the same dropout masks as one that was never interrupted;
- the best validation's weights are kept and restored at the end, and training stops early once
  validation stops improving;
- a batch runs in micro-batches of bounded size with their gradients summed, and under
  ``accelerate launch`` (or torchrun) each process takes its share of every batch and the
  gradients are summed across processes: either way the update equals the one-pass update;
  with ``train.fsdp`` the model is sharded across the processes instead of copied (fsdp.py).
  What differs between one process, several and sharded ones is in the
  :class:`~taskfit.training.parallel.Parallel` handle the loop is given, and returns with its result.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from taskfit.config import TrainSpec
from taskfit.errors import ResumeError
from taskfit.training.hardware import cpu_autocast
from taskfit.training.parallel import Parallel, load_into, whole
from taskfit.training.tracking import Tracker
from taskfit.training.parallel import Ranks  # noqa: F401  re-exported: workflows/train.py imports it from here


@dataclass
class StepStats:
    loss_sum: Any  # a scalar tensor with a graph: the loss summed over the chunk's units
    read_tokens: int  # tokens the model read (no padding)
    loss_tokens: int  # tokens that carried loss


class Objective(Protocol):
    metric_name: str | None  # the task metric validation reports, higher is better
    validation_rows: int  # 0: nothing to validate on

    def batches(self, epoch: int) -> list[list[int]]:
        """Row indices of every batch of ``epoch``, deterministic for the seed and epoch."""
        ...

    def units(self, batch: list[int]) -> int:
        """What the batch's loss is averaged over (answer tokens for SFT, pairs for DPO)."""
        ...

    def chunks(self, batch: list[int]) -> list[list[int]]:
        """The batch cut into forward passes of at most ``train.micro_batch_tokens`` tokens."""
        ...

    def loss_sum(self, chunk: list[int]) -> StepStats: ...

    def validate(self) -> dict[str, float | None]:
        """``{"val_loss": ..., "metric": ...}``, with the model in eval mode."""
        ...


@dataclass
class LoopState:
    """Everything a resumed run needs besides the weights and the optimiser."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    trained_tokens: int = 0
    loss_tokens: int = 0
    seconds: float = 0.0
    step_rates: list[float] = field(default_factory=list)  # each step's tokens per second of its own compute
    losses: list[float] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    best_step: int | None = None
    best_score: list[float] | None = None
    stale_validations: int = 0
    stopped_early: bool = False
    resumed_from: int | None = None


@dataclass(frozen=True)
class LoopResult:
    state: LoopState
    total_steps: int
    steps_per_epoch: int
    parallel: Parallel = field(default_factory=Parallel)  # how the run was spread (and the FSDP root)

    @property
    def tokens_per_second(self) -> float:
        return self.state.trained_tokens / self.state.seconds if self.state.seconds else 0.0

    @property
    def steady_tokens_per_second(self) -> float:
        """The median step's speed, its own compute only, after the first step (which warms up the
        kernels and caches: 70 s of a 12-step run's first step made an estimate swing 15-fold); the
        whole run's rate where there are fewer than three steps."""
        rates = sorted(self.state.step_rates[1:])
        return rates[len(rates) // 2] if len(rates) >= 2 else self.tokens_per_second


def _step(objective: Objective, batch: list[int], params: list[Any],
          parallel: Parallel, autocast: bool = False) -> tuple[float, int, int]:
    """Gradients of the batch's mean loss, one micro-batch at a time; with several processes,
    each takes its share of the rows and the gradients are summed across them (what DDP does),
    so the update equals the single-process one. A model sharded by FSDP sums its gradients
    itself, and needs every process to run as many passes as the busiest: the others run
    zero-weighted repeats of a row. ``autocast``: the forward passes under CPU bfloat16
    autocast (the backward follows the forward's dtypes; weights and gradients stay float32)."""
    import torch

    ranks, sharded = parallel.ranks, parallel.sharded
    units = objective.units(batch)
    mine = batch[ranks.rank::ranks.world]
    chunks = objective.chunks(mine) if mine else []
    weights = [1.0] * len(chunks)
    if sharded:
        most = parallel.most_across(len(chunks))
        filler = chunks[0] if chunks else [batch[0]]
        chunks += [filler] * (most - len(chunks))
        weights += [0.0] * (len(chunks) - len(weights))
    total, read, scored = 0.0, 0, 0
    for i, (chunk, weight) in enumerate(zip(chunks, weights)):
        parallel.set_gradient_sync(i == len(chunks) - 1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            stats = objective.loss_sum(chunk)
        (stats.loss_sum * (weight / units)).backward()
        if weight:
            total += float(stats.loss_sum.detach())
            read += stats.read_tokens
            scored += stats.loss_tokens
    if ranks.world > 1:
        figures = torch.tensor([total, read, scored], dtype=torch.float64)
        if not sharded:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        parallel.sum_across([figures] if sharded else [p.grad for p in params] + [figures])
        total, read, scored = float(figures[0]), int(figures[1]), int(figures[2])
    return total / units, read, scored


def trainable(model: Any) -> dict[str, Any]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _snapshot(model: Any) -> dict[str, Any]:
    """Whole CPU copies of the trainable weights (under FSDP every process must call it)."""
    return {n: whole(p) for n, p in trainable(model).items()}


def _restore(model: Any, weights: dict[str, Any]) -> None:
    params = trainable(model)
    missing = set(params) - set(weights)
    if missing:
        raise ResumeError(f"the checkpoint lacks {len(missing)} trainable tensors (e.g. {sorted(missing)[0]})",
                          hint="resume with the same method and LoRA settings as the interrupted run")
    for name, p in params.items():
        load_into(p, weights[name])


def _score(validation: dict[str, Any]) -> list[float]:
    """Higher is better: the task metric when there is one, ties broken by the lower validation
    loss (a 48-row accuracy often ties)."""
    metric = validation.get("metric")
    return [metric if metric is not None else 0.0, -validation["val_loss"]]


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a ``.tmp`` directory is never one)."""
    if not directory.exists():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith("step-")
             and not p.name.endswith(".tmp") and (p / "state.json").exists()]
    return sorted(found, key=checkpoint_step)


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint directory (``step-000050``) was written at."""
    return int(path.name.split("-")[1].split(".")[0])


def save_checkpoint(directory: Path, weights: dict[str, Any], optimizer_state: dict[str, Any], schedule: Any,
                    state: LoopState, best: dict[str, Any] | None, keep: int) -> Path:
    """Write a checkpoint atomically: everything into ``step-N.tmp``, then one rename."""
    import torch
    from safetensors.torch import save_file

    final = directory / f"step-{state.step:06d}"
    tmp = directory / f"step-{state.step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(weights, tmp / "trainable.safetensors")
    if best is not None and state.best_step != state.step:
        save_file(best, tmp / "best.safetensors")
    torch.save({"optimizer": optimizer_state, "schedule": schedule.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
               tmp / "optimizer.pt")
    _fsync_write(tmp / "state.json", json.dumps(asdict(state)).encode())  # written last
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: Any, optimizer: Any, schedule: Any,
                    parallel: Parallel) -> tuple[LoopState, dict[str, Any] | None]:
    import torch
    from safetensors.torch import load_file

    state = LoopState(**json.loads((path / "state.json").read_text()))
    _restore(model, load_file(path / "trainable.safetensors"))
    extra = torch.load(path / "optimizer.pt", weights_only=False)
    parallel.load_optimizer_state(optimizer, extra["optimizer"])
    schedule.load_state_dict(extra["schedule"])
    torch.set_rng_state(extra["rng"])
    if extra.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(extra["cuda_rng"])
    best = None
    if state.best_step is not None:
        best_file = path / "best.safetensors"
        best = load_file(best_file) if best_file.exists() else _snapshot(model)
    return state, best


_LOG_FIELDS = ("step", "epoch", "loss", "learning_rate", "tokens", "seconds")
VALIDATION_FIELDS = ("step", "epoch", "val_loss", "metric")  # then any side figures, e.g. valid_rate


def _trim_log(path: Path, upto: int) -> None:
    """Keep the log rows of steps a resumed run will not repeat."""
    if not path.exists():
        return
    with path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= upto]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def validation_metrics(entry: dict[str, Any], metric_name: str | None) -> dict[str, Any]:
    """A validation as a tracker's metrics: ``val/loss``, ``val/<task metric>`` and any side figures."""
    side = {f"val/{k}": v for k, v in entry.items() if k not in VALIDATION_FIELDS}
    return {"val/loss": entry["val_loss"], f"val/{metric_name or 'metric'}": entry.get("metric"), **side}


def write_validation_log(path: Path, state: LoopState) -> None:
    extra = sorted({k for v in state.validations for k in v} - set(VALIDATION_FIELDS))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*VALIDATION_FIELDS, *extra])
        writer.writeheader()
        writer.writerows(state.validations)


def _periodic(every: int, step: int, to_next: int) -> bool:
    """Whether ``step`` takes one of the validations every ``every`` steps. Not when the one the
    epoch's end (or the run's last step) takes is fewer than ``every / 2`` steps (``to_next``)
    away: it would measure much the same weights at the cost of a whole validation (the
    quickstart's 54-step epochs validated at steps 50 and 54, 100 and 108, each about 8 s)."""
    return bool(every) and step % every == 0 and to_next >= every / 2


def fit(model: Any, objective: Objective, spec: TrainSpec, rows: int, *, parallel: Parallel,
        run_dir: Path | None = None, resume_from: Path | None = None,
        on_step: Callable[[int, int, float], None] | None = None,
        on_validate: Callable[[dict[str, Any]], None] | None = None,
        tracker: Tracker | None = None) -> LoopResult:
    """Optimise ``model``'s trainable parameters on ``objective`` for ``spec.epochs`` passes over
    ``rows`` rows, as this process's part in the run that ``parallel`` describes. Returns with the
    best validation's weights in the model (the last ones when there is no validation). With
    ``run_dir``, ``train_log.csv``, ``validation_log.csv`` and ``checkpoints/`` are written there
    (by the first process), and the same figures, checkpoints and early stop go to ``tracker``
    (``train.report_to``)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    params = list(trainable(model).values())
    if not params:
        raise ValueError("the model has no trainable parameters")
    ranks, sharded = parallel.ranks, parallel.sharded
    if not ranks.main:  # one process writes; every process computes the same validations
        run_dir = None
        on_step = on_validate = tracker = None
    checkpoint_dir = run_dir / "checkpoints" if run_dir else None
    log_path = run_dir / "train_log.csv" if run_dir else None
    validation_log = run_dir / "validation_log.csv" if run_dir else None
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    # Validation stays float32, as evaluation reads the adapter: it picks the checkpoint.
    autocast = cpu_autocast(spec.dtype, params[0].device.type)
    per_epoch = math.ceil(rows / spec.batch_size)
    total = max(1, math.ceil(per_epoch * spec.epochs))
    schedule = get_linear_schedule_with_warmup(optimizer, int(total * spec.warmup_ratio), total)
    torch.manual_seed(spec.seed)  # dropout masks

    state, best = LoopState(), None
    if resume_from is not None:
        state, best = load_checkpoint(resume_from, model, optimizer, schedule, parallel)
        state.resumed_from = state.step
        if checkpoint_dir is not None:  # what a kill mid-write left behind
            for stale in checkpoint_dir.glob("step-*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from is not None:
            _trim_log(log_path, state.step)
        else:
            log_path.write_text(",".join(_LOG_FIELDS) + "\n")

    def validate() -> None:
        nonlocal best
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            result = objective.validate()  # in the precision evaluation will answer in
        model.train()
        entry = {"step": state.step, "epoch": round(state.step / per_epoch, 4), **result}
        state.validations.append(entry)
        score = _score(entry)
        if state.best_score is None or score > state.best_score:
            state.best_score, state.best_step, state.stale_validations = score, state.step, 0
            best = _snapshot(model)
        else:
            state.stale_validations += 1
        if validation_log is not None:
            write_validation_log(validation_log, state)
        if tracker is not None:
            tracker.log_metrics(validation_metrics(entry, objective.metric_name), state.step)
        if on_validate:
            on_validate(entry)

    model.train()
    log = log_path.open("a", newline="") if log_path is not None else None
    writer = csv.writer(log) if log else None
    started = time.perf_counter() - state.seconds
    try:
        while state.step < total and not state.stopped_early:
            batches = objective.batches(state.epoch)
            for batch in batches[state.batch_in_epoch:]:
                stepped = time.perf_counter()
                loss, read, scored = _step(objective, batch, params, parallel, autocast)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                state.step_rates.append(read / max(1e-9, time.perf_counter() - stepped))
                state.step += 1
                state.batch_in_epoch += 1
                state.trained_tokens += read
                state.loss_tokens += scored
                state.losses.append(loss)
                state.seconds = time.perf_counter() - started
                epoch_end = state.batch_in_epoch >= len(batches)
                if epoch_end:  # the position a checkpoint records is the next batch to take
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                epoch, lr = round(state.step / per_epoch, 4), schedule.get_last_lr()[0]
                if writer:
                    writer.writerow([state.step, epoch, round(state.losses[-1], 6), lr, state.trained_tokens,
                                     round(state.seconds, 3)])
                    log.flush()
                if tracker is not None:
                    tracker.log_metrics({"train/loss": loss, "train/learning_rate": lr, "train/epoch": epoch,
                                         "train/tokens_per_second": state.trained_tokens / state.seconds},
                                        state.step)
                if on_step:
                    on_step(state.step, total, state.losses[-1])
                last = state.step >= total
                if objective.validation_rows and (epoch_end or last or _periodic(
                        spec.eval_every, state.step, min(len(batches) - state.batch_in_epoch, total - state.step))):
                    validate()
                    patience = spec.early_stopping_patience
                    state.stopped_early = bool(patience and state.stale_validations >= patience and not last)
                    if state.stopped_early and tracker is not None:
                        tracker.set_tag("taskfit.stopped_early", f"step {state.step}: {patience} validations "
                                        "without improvement", state.step)
                if (checkpoint_dir is not None or sharded) and spec.checkpoint_every and (
                        state.step % spec.checkpoint_every == 0 or state.stopped_early):
                    weights, optimizer_state = _snapshot(model), parallel.optimizer_state(optimizer)
                    if checkpoint_dir is not None:  # under FSDP every process gathers, the first writes
                        saved = save_checkpoint(checkpoint_dir, weights, optimizer_state, schedule, state, best,
                                                spec.keep_checkpoints)
                        if tracker is not None:
                            tracker.set_tag("taskfit.checkpoint", saved.name, state.step)
                if epoch_end or last or state.stopped_early:
                    break
    finally:
        if log:
            log.close()
    state.seconds = time.perf_counter() - started
    if tracker is not None and state.best_step is not None:
        tracker.set_tag("taskfit.best_step", str(state.best_step), state.step)
    if best is not None and state.best_step != state.step:
        _restore(model, best)
    model.eval()
    return LoopResult(state=state, total_steps=total, steps_per_epoch=per_epoch, parallel=parallel)
