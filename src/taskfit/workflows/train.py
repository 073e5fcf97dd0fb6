"""``taskfit train``: check the data, train by ``train.method``, and leave a complete run directory.

A run directory holds the resolved config, the data it was trained on, the manifest (status
``started`` until the artifact is written, then ``finished``), checkpoints, curves and the artifact.
:func:`train_or_continue` is what ``taskfit run`` calls: it reuses a finished run trained from
the same config and data, continues an interrupted one from its last checkpoint, or starts anew.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.data.prepare import write_prepared
from taskfit.errors import ConfigError
from taskfit.evaluation.advice import TrainingSpeed
from taskfit.manifest import build_manifest
from taskfit.paths import RunDir
from taskfit.workflows.workspace import Workspace, comparable_config, is_curve_run, resolve_run


@dataclass
class TrainSummary:
    run_dir: Path
    artifact: Path
    training: dict[str, Any]
    how: str = "trained"  # trained | resumed | reused


def _start_run(ws: Workspace, lm: Any, run: RunDir, marks: dict[str, Any]) -> dict[str, Any]:
    run.config.write_text(ws.config.to_yaml(), encoding="utf-8")
    write_prepared(ws.prepared, run.root / "data")
    (run.root / "splits.json").write_text(json.dumps(
        {"train": [r.id for r in ws.train], "eval": [r.id for r in ws.held_out]}), encoding="utf-8")
    manifest = build_manifest(ws.config, ws.project_dir, lm.info, ws.prepared.card,
                              {"train": len(ws.train), "eval": len(ws.held_out)}, ws.hardware.describe())
    if ws.lineage:  # retrain: the snapshot its reviewed rows came from, the version it continued
        manifest["lineage"] = ws.lineage
        manifest["data"]["snapshot"] = ws.lineage["snapshot"]
    manifest.update(marks)
    run.manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def _unfinished(ws: Workspace) -> RunDir:
    unfinished = [run for run, m in ws.runs() if m.get("status") != "finished" and not is_curve_run(m)]
    if not unfinished:
        raise ConfigError(f"{ws.project_dir / 'runs'}: no unfinished training run to resume",
                          hint="start one with `taskfit train` (or `taskfit run`)")
    return unfinished[-1]


def train_project(project: Path | Workspace, reporter: Any = None, threads: int | None = None,
                  allow_secrets: bool = False, resume: Path | bool = False) -> TrainSummary:
    """``taskfit train``: train in a new run directory, or continue an interrupted one with
    ``resume`` (True: the newest unfinished run; a path: that run)."""
    ws = project if isinstance(project, Workspace) else Workspace.open(project, reporter, threads, allow_secrets)
    run = None
    if resume:
        run = resolve_run(ws.project_dir, resume) if isinstance(resume, Path) else _unfinished(ws)
        if not ws.matches(json.loads(run.manifest.read_text(encoding="utf-8"))):
            raise ConfigError(f"{run.root}: taskfit.yaml or the training data changed since this run "
                              "started, so resuming would not reproduce it",
                              hint="restore them, or start a new run with `taskfit train` (no --resume)")
    return _train(ws, run)


def train_or_continue(ws: Workspace, name: str | None = None, marks: dict[str, Any] | None = None) -> TrainSummary:
    """The newest run trained from the project as it is now: reused when finished, continued
    from its last checkpoint when interrupted; a new run when there is none, its directory named
    after ``name`` (default task.name) and its manifest holding ``marks`` besides the usual."""
    for run, manifest in reversed(ws.runs()):
        if not ws.matches(manifest):
            continue
        if manifest.get("status") == "finished":
            ws.reporter.status(f"training: {run.root.name} was trained from this config and data; reusing it")
            adapter = run.full_model if ws.config.train.method == "full" else run.adapter
            return TrainSummary(run_dir=run.root, artifact=adapter, training=manifest.get("training", {}),
                                how="reused")
        ws.reporter.status(f"training: continuing the interrupted run {run.root.name}")
        return _train(ws, run)
    return _train(ws, None, name, marks or {})


def training_speed(training: dict[str, Any], rows: int, epochs: float) -> TrainingSpeed | None:
    """What a run (its manifest's ``training`` figures, trained on ``rows`` rows) measured of this
    machine's training speed: its median step after the first (``steady_tokens_per_second``), or
    the whole run's rate where it predates that figure; None for a run that measured no speed."""
    if not training.get("tokens_per_second"):
        return None
    return TrainingSpeed(rows=rows, fit_rows=rows - int(training.get("validation_rows", 0)),
                         epochs=float(training.get("epochs") or epochs),
                         trained_tokens=int(training.get("trained_tokens", 0)),
                         tokens_per_second=float(training.get("steady_tokens_per_second")
                                                 or training["tokens_per_second"]),
                         steady="steady_tokens_per_second" in training)


# Training settings that change how many steps a run takes, or what it learns, but not how fast
# it trains a token: a run that differs from the project only in these times this one's tokens.
SPEED_FREE = ("epochs", "learning_rate", "loss_per", "seed", "warmup_ratio", "validation_share",
              "validation_max_rows", "eval_every", "metric_sample", "early_stopping_patience", "checkpoint_every",
              "keep_checkpoints")


def _trains_alike(ws: Workspace, manifest: dict[str, Any]) -> bool:
    """Whether a run trained a token as fast as one of the project would now: the same model, task
    and training settings but :data:`SPEED_FREE` (the rows may be others: a learning-curve run's
    sample), on the same device, precision and threads."""
    mine = comparable_config(ws.config.model_dump(mode="json", by_alias=True))
    theirs = comparable_config(manifest.get("config", {}))
    if any(mine.get(k) != theirs.get(k) for k in ("model", "task")):
        return False
    if ({k: v for k, v in mine.get("train", {}).items() if k not in SPEED_FREE}
            != {k: v for k, v in theirs.get("train", {}).items() if k not in SPEED_FREE}):
        return False
    here, there = ws.hardware.describe(), manifest.get("hardware", {})
    return all(there.get(k) == here.get(k) for k in ("device", "dtype", "threads", "autocast"))


def _estimate(ws: Workspace) -> None:
    """Before a new run: about how long it trains here, at the speed this project's newest finished
    run trained as it would be (:func:`_trains_alike`, a learning-curve run of ``taskfit advise``
    included) measured, and where that is over :data:`~taskfit.evaluation.advice.LONG_TRAINING_S`,
    the ``data.max_train_examples`` that trains in about an hour. Nothing where no such run exists:
    a first run's speed is known once it trains, and its progress bar then says how long is left."""
    from taskfit.data.split import validation_split
    from taskfit.evaluation.advice import LONG_TRAINING_S, duration, measured_how, rows_in_an_hour

    spec = ws.config.train
    found = next(((run, m) for run, m in reversed(ws.runs())
                  if m.get("status") == "finished" and m.get("training") and _trains_alike(ws, m)), None)
    if found is None or not ws.train:
        return
    run, manifest = found
    speed = training_speed(manifest["training"], int(manifest.get("data", {}).get("train_rows", 0)), spec.epochs)
    if speed is None or speed.fit_rows <= 0:
        return
    fit, _ = validation_split(list(ws.train), spec.validation_share, spec.validation_max_rows, spec.seed)
    seconds = speed.seconds_for(len(fit), spec.epochs)
    ws.reporter.status(f"training: about {duration(seconds)} here for {len(fit)} rows trained on, {spec.epochs:g} "
                       f"epoch{'s' if spec.epochs != 1 else ''}, at the {speed.tokens_per_second:.1f} tokens/s "
                       f"{run.root.name} trained at ({measured_how(speed)}); validation comes on top")
    if seconds > LONG_TRAINING_S:
        rows = rows_in_an_hour(speed, len(fit) / len(ws.train), spec.epochs)
        ws.reporter.status(f"training: that is long for this machine: data.max_train_examples: {rows} (of the "
                           f"{len(ws.train)} training rows, their classes kept in proportion) trains in about an "
                           "hour; `taskfit advise` shows what fewer rows score.")


def _train(ws: Workspace, run: RunDir | None, name: str | None = None,
           marks: dict[str, Any] | None = None) -> TrainSummary:
    from taskfit.training.loop import Ranks, checkpoint_step
    from taskfit.training.recipe import latest_checkpoint, train_model
    from taskfit.training.tracking import failing_with, open_tracker, train_params

    lm = ws.lm()
    ws.forget_model()  # training changes this copy in place: later stages load their own
    main = Ranks.from_env().main  # under `accelerate launch`, the first process writes the run
    resuming = run is not None
    if run is None:
        if main:
            _estimate(ws)
        run = (RunDir.create(ws.project_dir, name or ws.config.task.name) if main
               else RunDir(Path(tempfile.mkdtemp(prefix="taskfit-rank-"))))  # never written to
        manifest = _start_run(ws, lm, run, marks or {}) if main else {}
    else:
        manifest = json.loads(run.manifest.read_text(encoding="utf-8")) if main else {}
    card, config = ws.prepared.card, ws.config
    tracker = None
    if main:  # train.report_to: the run's figures also go to MLflow or TensorBoard
        checkpoint = latest_checkpoint(run) if resuming else None
        tracker = open_tracker(config.train.report_to, ws.project_dir, run, experiment=config.task.name,
                               params=train_params(config.train, lm.info.name, len(ws.train), len(ws.held_out),
                                                   ws.train_fingerprint),
                               tags={"taskfit.task_kind": config.task.kind},
                               resume_step=(checkpoint_step(checkpoint) if checkpoint else 0) if resuming else None,
                               warn=ws.reporter.status)
    with failing_with(tracker):
        outcome = train_model(config, lm, ws.train, run, ws.reporter, project_dir=ws.project_dir,
                              held_out=ws.held_out, resume=resuming, data_summary=card.rows_summary(),
                              fingerprints={"train": card.split.get("train_fingerprint"),
                                            "eval": card.split.get("eval_fingerprint")},
                              hardware=ws.hardware.describe(), tracker=tracker,
                              start_adapter=Path(ws.lineage["start_adapter"]) if ws.lineage.get("start_adapter")
                              else None)
    training = outcome.summary()
    if main:
        (run.root / "metrics.json").write_text(json.dumps({"training": training}, indent=2), encoding="utf-8")
        manifest.update(status="finished", training=training)
        run.manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        tracker.close()
    return TrainSummary(run_dir=run.root, artifact=outcome.artifact, training=training,
                        how="resumed" if resuming else "trained")
