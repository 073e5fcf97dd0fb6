"""The training recipe shared by ``taskfit train`` and ``taskfit run``, top to bottom:
hold back validation rows → train by the configured method → save the artifact and its card →
plot the curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from taskfit.config import ProjectConfig
from taskfit.errors import ConfigError
from taskfit.data.split import validation_split
from taskfit.paths import RunDir
from taskfit.progress import Reporter
from taskfit.records import Example, PreferencePair
from taskfit.training.loop import VALIDATION_FIELDS, LoopResult, checkpoints
from taskfit.training.methods import artifact_dir, load_hint, method_of
from taskfit.training.tracking import Tracker


@dataclass
class TrainOutcome:
    model: Any  # the trained model (a PEFT model for adapters), best validation's weights, eval mode
    result: LoopResult
    artifact: Path  # the adapter directory, or the full model's
    validation_rows: int
    held_out: dict[str, float] | None = None  # dpo: preference accuracy before and after
    parallel: dict[str, Any] | None = None  # several processes: how many, and how the model was spread

    def summary(self) -> dict[str, Any]:
        s = self.result.state
        out = {"steps": s.step, "epochs": round(s.step / self.result.steps_per_epoch, 3),
               "trained_tokens": s.trained_tokens, "loss_tokens": s.loss_tokens,
               "seconds": round(s.seconds, 1), "tokens_per_second": round(self.result.tokens_per_second, 1),
               "steady_tokens_per_second": round(self.result.steady_tokens_per_second, 1),
               "validation_rows": self.validation_rows, "best_step": s.best_step,
               "stopped_early": s.stopped_early, "resumed_from_step": s.resumed_from}
        if s.validations:
            out["best_validation"] = next(v for v in s.validations if v["step"] == s.best_step)
        if self.held_out:
            out["held_out"] = self.held_out
        if self.parallel:
            out["parallel"] = self.parallel
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():  # what training held on the GPU at most
            out["gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        return out


def resolve_start_adapter(start_from: str | None, project_dir: Path) -> Path | None:
    if not start_from:
        return None
    from taskfit.training.artifacts import find_adapter

    path = Path(start_from).expanduser()
    return find_adapter(path if path.is_absolute() else project_dir / path)


def latest_checkpoint(run: RunDir) -> Path | None:
    found = checkpoints(run.checkpoints)
    return found[-1] if found else None


def train_model(config: ProjectConfig, lm: Any, train: Sequence[Example | PreferencePair],
                run: RunDir, reporter: Reporter, *, project_dir: Path,
                held_out: Sequence[Example | PreferencePair] = (), resume: bool = False,
                data_summary: str = "", fingerprints: dict[str, str] | None = None,
                hardware: dict[str, Any] | None = None, tracker: Tracker | None = None,
                start_adapter: Path | None = None) -> TrainOutcome:
    """Train ``lm.model`` on ``train`` by ``config.train.method`` in ``run``; with ``resume``,
    continue from the run's newest complete checkpoint; with ``start_adapter`` (lora and qlora:
    ``taskfit retrain --continue``), train that adapter further instead of a fresh one.
    ``tracker`` (``train.report_to``) gets the figures the loop logs."""
    from taskfit.evaluation.report import plot_loss
    from taskfit.tasks import main_metric
    from taskfit.training.artifacts import model_card, save_trained

    spec, method = config.train, method_of(config.train)
    fit_rows, val_rows = validation_split(list(train), spec.validation_share, spec.validation_max_rows,
                                          spec.seed)
    adapter = resolve_start_adapter(spec.dpo.start_from if method.objective == "dpo" else None, project_dir)
    if start_adapter is not None:
        if method.objective != "sft" or not method.adapter:
            raise ConfigError(f"continuing an adapter: train.method {spec.method}"
                              f"{' with classify_head' if spec.classify_head else ''} trains a new one",
                              hint="retrain from scratch (leave out --continue)")
        adapter = start_adapter
    resume_from = latest_checkpoint(run) if resume else None
    if resume:
        reporter.status(f"resuming from {resume_from.name}" if resume_from
                        else "no complete checkpoint yet: starting from step 0")
    steps = int(-(-len(fit_rows) // spec.batch_size) * spec.epochs + 0.999)

    metric_name = ("preference accuracy" if method.objective == "dpo"
                   else main_metric(config.task.kind).replace("_", " ") if spec.metric_sample else None)

    def on_validate(entry: dict[str, Any]) -> None:
        metric = f", {metric_name} {entry['metric']:.3f}" if entry.get("metric") is not None else ""
        metric += "".join(f", {k.replace('_', ' ')} {v:.3f}" for k, v in entry.items()
                          if k not in VALIDATION_FIELDS and v is not None)
        reporter.status(f"step {entry['step']}: validation loss {entry['val_loss']:.4f}{metric}")

    held, head = None, None
    with reporter.bar(f"training ({spec.method})", max(1, steps)) as advance:
        shown = [0]

        def on_step(step: int, total: int, loss: float) -> None:
            advance(step - shown[0], info=f"loss {loss:.3f}")  # a resumed run starts past 0
            shown[0] = step

        if method.objective == "dpo":
            from taskfit.training.dpo import train_dpo

            model, result, held = train_dpo(lm.model, lm.tokenizer, config.task, spec, fit_rows, val_rows,
                                            held_out=held_out, run_dir=run.root, resume_from=resume_from,
                                            adapter=adapter, on_step=on_step, on_validate=on_validate,
                                            status=reporter.status, tracker=tracker,
                                            on_read=lambda text: advance(0, info=text))
        elif method.objective == "head":
            from taskfit.training.head import train_head

            model, head, result = train_head(lm.model, lm.tokenizer, config.task, spec, fit_rows, val_rows,
                                             run_dir=run.root, resume_from=resume_from, on_step=on_step,
                                             on_validate=on_validate, tracker=tracker)
        else:
            from taskfit.training.sft import train_sft

            model, result = train_sft(lm.model, lm.tokenizer, config.task, spec, fit_rows, val_rows,
                                      run_dir=run.root, resume_from=resume_from, adapter=adapter,
                                      on_step=on_step, on_validate=on_validate, evaluation=config.eval,
                                      tracker=tracker)
    state, parallel = result.state, result.parallel
    outcome = TrainOutcome(model=model, result=result, validation_rows=len(val_rows), held_out=held,
                           artifact=artifact_dir(spec, run))
    if parallel.ranks.world > 1:
        outcome.parallel = parallel.describe(model)
    whole = parallel.state_to_save(model, trainable_only=method.adapter)  # FSDP: every process gathers
    if not parallel.ranks.main:  # in a data-parallel run, the first process writes
        return outcome
    plot_loss(state.losses, run.plots / "loss.png", state.validations, metric_name)
    dest = outcome.artifact
    card = model_card(title=f"{config.task.name} ({config.task.kind})",
                      base={"name": lm.info.name, "description": lm.info.description,
                            "path": str(lm.info.path), "licence": lm.info.licence},
                      method=spec.method, train_spec=spec.model_dump(mode="json"),
                      data_summary=data_summary, fingerprints=fingerprints or {},
                      training={**outcome.summary(), **(hardware or {})},
                      load_hint=load_hint(spec, dest, lm.info.path))
    extra = {}
    if head is not None:
        from taskfit.models.head import HEAD_FILE

        extra[HEAD_FILE] = head.to_json()
    save_trained(model, lm.tokenizer, dest, card, state_dict=whole, extra=extra)
    return outcome
