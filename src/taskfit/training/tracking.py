"""Experiment tracking, optional (``train.report_to``): taskfit's runs shown in MLflow or
TensorBoard beside a team's other runs. The run directory stays the record; a tracker gets a copy.

What the training loop writes to the run directory, it also gives the tracker, once for every
method (SFT, DPO, full, the classification head):

| event                       | run directory         | tracker                                          |
|-----------------------------|-----------------------|--------------------------------------------------|
| run starts                  | manifest.json         | params (method, base model, lr, epochs, lora r,  |
|                             |                       | rows, data fingerprint), tags (task kind, version)|
| optimiser step              | train_log.csv         | ``train/loss``, ``train/learning_rate``,         |
|                             |                       | ``train/tokens_per_second``, ``train/epoch``     |
| validation                  | validation_log.csv    | ``val/loss``, ``val/<metric>``, side figures      |
| checkpoint, early stop      | checkpoints/          | tags ``taskfit.checkpoint``, ``taskfit.stopped_early`` |
| run ends                    | manifest.json         | ``taskfit.best_step``; status FINISHED or FAILED |
| ``taskfit eval`` of the run | evaluation/results/   | ``eval/<candidate>/<metric>``                    |

MLflow: one MLflow run per taskfit run, named by the run id (``runs/<id>``) and found again by
its ``taskfit.run_id`` tag (a resumed run continues it, and ``taskfit eval`` adds its figures),
in the experiment named by ``MLFLOW_EXPERIMENT_NAME`` or the task's name, in the store named by
``MLFLOW_TRACKING_URI`` or ``sqlite:///<project>/mlruns.sqlite``. TensorBoard: event files in
``<run>/tensorboard/``; a resumed run drops the events after the checkpoint it continues from.

The packages are extras (``pip install -e '.[tracking]'``); a missing one is a ConfigError when
the project is opened, before any work. A tracker that fails mid-run (a tracking server gone, a
full disk) warns once and is dropped: training never depends on it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol

from taskfit.config import TrainSpec
from taskfit.errors import ConfigError
from taskfit.paths import RunDir, mlflow_store

INSTALL = "pip install -e '.[tracking]'"
RUN_TAG = "taskfit.run_id"


Status = Literal["FINISHED", "FAILED"] | None  # how a run ended; None: as it was (taskfit eval adds to a run)


class Tracker(Protocol):
    def log_metrics(self, metrics: dict[str, float | None], step: int) -> None: ...

    def set_tag(self, key: str, value: str, step: int) -> None: ...

    def close(self, status: Status = "FINISHED") -> None: ...


def _tracking_uri(project_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or mlflow_store(project_dir)


def _needed(report_to: str, project_dir: Path) -> list[str]:
    """The modules ``report_to`` needs: mlflow, and SQLAlchemy and alembic for a database store
    (mlflow-skinny leaves them out; the full mlflow package has them)."""
    if report_to == "tensorboard":
        return ["tensorboard"]
    if report_to == "mlflow":
        scheme = _tracking_uri(project_dir).split(":", 1)[0].split("+", 1)[0]
        database = scheme in ("sqlite", "postgresql", "mysql", "mssql")
        return ["mlflow", *(["sqlalchemy", "alembic"] if database else [])]
    return []


def check_tracking(report_to: str, project_dir: Path) -> None:
    """Refuse a ``train.report_to`` whose package is not installed, before any work is done."""
    missing = [m for m in _needed(report_to, project_dir) if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"train.report_to is {report_to}, but the {', '.join(missing)} package"
                          f"{'s are' if len(missing) > 1 else ' is'} not installed",
                          hint=f"install the tracking extra: {INSTALL} (or set train.report_to: none)")


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class _Mlflow:
    def __init__(self, client: Any, run_id: str):
        self.client, self.run_id = client, run_id

    @classmethod
    def open(cls, project_dir: Path, run: RunDir, experiment: str, params: dict[str, Any],
             tags: dict[str, str], create: bool = True) -> "_Mlflow | None":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=_tracking_uri(project_dir))
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment
        found = client.get_experiment_by_name(name)
        if found is None and not create:
            return None
        experiment_id = found.experiment_id if found else client.create_experiment(name)
        runs = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{run.root.name}'",
                                  max_results=1)
        if runs:
            tracker = cls(client, runs[0].info.run_id)
            if create:  # a resumed run: running again
                client.update_run(tracker.run_id, status="RUNNING")
            return tracker
        if not create:
            return None
        created = client.create_run(experiment_id, run_name=run.root.name,
                                    tags={RUN_TAG: run.root.name, "taskfit.run_dir": str(run.root.resolve()),
                                          **tags})
        tracker = cls(client, created.info.run_id)
        from mlflow.entities import Param

        client.log_batch(tracker.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return tracker

    def log_metrics(self, metrics: dict[str, float | None], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in _finite(metrics).items()])

    def set_tag(self, key: str, value: str, step: int) -> None:
        self.client.set_tag(self.run_id, key, value)

    def close(self, status: Status = "FINISHED") -> None:
        if status is not None:
            self.client.set_terminated(self.run_id, status=status)


class _Tensorboard:
    def __init__(self, writer: Any):
        self.writer = writer

    @classmethod
    def open(cls, run: RunDir, params: dict[str, Any], tags: dict[str, str],
             resume_step: int | None = None, create: bool = True) -> "_Tensorboard | None":
        if not create and not run.tensorboard.exists():
            return None
        from torch.utils.tensorboard import SummaryWriter

        if resume_step is not None:
            # TensorBoard reads a run's event files in name order (the second each was made, then the
            # host and process id): a resumed writer made in the same second as the killed run's
            # could be read first, and the killed run's steps would then read as out of order and be
            # dropped. So it is made in a later second (a wait of at most one, on a quick restart).
            made = [int(p.name.split(".")[3]) for p in run.tensorboard.glob("events.out.tfevents.*")
                    if p.name.split(".")[3].isdigit()]
            while made and int(time.time()) <= max(made):
                time.sleep(0.05)
        # a resumed run takes again the steps after its checkpoint: their first events are dropped
        writer = SummaryWriter(str(run.tensorboard), purge_step=None if resume_step is None else resume_step + 1)
        if create and resume_step is None:
            table = "\n".join(f"| {k} | {v} |" for k, v in {**params, **tags}.items())
            writer.add_text("taskfit/params", f"| param | value |\n|---|---|\n{table}", 0)
        return cls(writer)

    def log_metrics(self, metrics: dict[str, float | None], step: int) -> None:
        for key, value in _finite(metrics).items():
            self.writer.add_scalar(key, value, step)

    def set_tag(self, key: str, value: str, step: int) -> None:
        self.writer.add_text(key, value, step)
        self.writer.flush()  # at a checkpoint the events are on disk too: a killed run keeps its curves so far

    def close(self, status: Status = "FINISHED") -> None:
        self.writer.close()


class Guarded:
    """A tracker whose failures warn once and stop tracking, never training."""

    def __init__(self, inner: Tracker | None, name: str, warn: Callable[[str], None] | None = None):
        self.inner, self.name = inner, name
        self.warn = warn or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=3))

    @property
    def active(self) -> bool:
        return self.inner is not None

    def _call(self, what: str, *args: Any, **kwargs: Any) -> None:
        if self.inner is None:
            return
        try:
            getattr(self.inner, what)(*args, **kwargs)
        except Exception as error:  # noqa: BLE001  whatever the tracker raises, training goes on
            self.inner = None
            self.warn(f"train.report_to: {self.name} failed ({type(error).__name__}: {error}); tracking stops "
                      "here, training continues and the run directory keeps the whole record")

    def log_metrics(self, metrics: dict[str, float | None], step: int) -> None:
        self._call("log_metrics", metrics, step)

    def set_tag(self, key: str, value: str, step: int) -> None:
        self._call("set_tag", key, value, step)

    def close(self, status: Status = "FINISHED") -> None:
        self._call("close", status)
        self.inner = None


def open_tracker(report_to: str, project_dir: Path, run: RunDir, *, experiment: str,
                 params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
                 resume_step: int | None = None, create: bool = True,
                 warn: Callable[[str], None] | None = None) -> Guarded:
    """The tracker ``report_to`` names for ``run``; with ``create=False``, only one the run's
    training opened (what ``taskfit eval`` adds to), else an inactive one. Opening fails like
    any other call: with a warning and an inactive tracker."""
    guarded = Guarded(None, report_to, warn)
    if report_to == "none":
        return guarded
    from taskfit import __version__

    tags = {"taskfit.version": __version__, **(tags or {})}
    params = params or {}

    def opened() -> Tracker | None:
        if report_to == "mlflow":
            return _Mlflow.open(project_dir, run, experiment, params, tags, create=create)
        return _Tensorboard.open(run, params, tags, resume_step=resume_step, create=create)

    try:
        guarded.inner = opened()
    except Exception as error:  # noqa: BLE001  as any tracker failure: warn, and train all the same
        guarded.warn(f"train.report_to: {report_to} could not be opened ({type(error).__name__}: {error}); "
                     "training continues untracked, the run directory keeps the whole record")
    return guarded


def train_params(spec: TrainSpec, base_model: str, train_rows: int, eval_rows: int,
                 data_fingerprint: str | None) -> dict[str, Any]:
    """What a tracker records as the run's parameters (the resolved config stays in the run directory)."""
    from taskfit.training.methods import method_of

    out: dict[str, Any] = {"method": spec.method, "base_model": base_model, "learning_rate": spec.lr,
                           "epochs": spec.epochs, "batch_size": spec.batch_size,
                           "max_seq_length": spec.max_seq_length, "seed": spec.seed, "train_rows": train_rows,
                           "eval_rows": eval_rows, "data_fingerprint": data_fingerprint}
    if method_of(spec).adapter:
        out.update(lora_r=spec.lora.r, lora_alpha=spec.lora.alpha)
    if spec.classify_head:
        out["classify_head"] = True
    return out


@contextmanager
def failing_with(tracker: Guarded | None) -> Iterator[None]:
    """Mark the tracked run FAILED when the block raises (or is interrupted), then raise on."""
    try:
        yield
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise


def log_evaluation(report_to: str, project_dir: Path, run: RunDir, experiment: str, candidate: str,
                   metrics: dict[str, Any], rows: int, step: int,
                   warn: Callable[[str], None] | None = None) -> bool:
    """Add ``taskfit eval``'s figures for ``run`` as ``eval/<candidate>/<metric>`` at ``step`` (the
    run's last) to the tracked run its training opened; nothing when it was trained untracked.
    Returns whether they were logged."""
    tracker = open_tracker(report_to, project_dir, run, experiment=experiment, create=False, warn=warn)
    tracker.log_metrics({**{f"eval/{candidate}/{k}": v for k, v in metrics.items()},
                         f"eval/{candidate}/rows": rows}, step)
    logged = tracker.active
    tracker.close(None)
    return logged
