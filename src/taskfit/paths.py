"""Where taskfit keeps things: the user cache and the layout of a run directory, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


def cache_dir() -> Path:
    """The user cache (converted models live here). ``TASKFIT_CACHE`` overrides it."""
    override = os.environ.get("TASKFIT_CACHE")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("taskfit"))


def mlflow_store(project_dir: Path) -> str:
    """The MLflow tracking URI when ``MLFLOW_TRACKING_URI`` names none: a SQLite file in the project."""
    return f"sqlite:///{(project_dir / 'mlruns.sqlite').resolve()}"


def classical_dir(project_dir: Path, name: str) -> Path:
    """Where a project's fitted classical candidate (``tfidf-logreg``, ``embeddings-logreg``) is
    saved: its model and ``model.json``, replaced when it is fitted again."""
    return project_dir / "baselines" / name


@dataclass(frozen=True)
class RunDir:
    """The files of one run. Every run gets its own directory under ``<project>/runs/``."""

    root: Path

    @classmethod
    def create(cls, project_dir: Path, name: str) -> "RunDir":
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        root = project_dir / "runs" / f"{stamp}-{name}"
        n = 1
        while root.exists():
            n += 1
            root = project_dir / "runs" / f"{stamp}-{name}-{n}"
        (root / "plots").mkdir(parents=True)
        (root / "predictions").mkdir()
        return cls(root)

    @property
    def config(self) -> Path:
        return self.root / "config.resolved.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def train_log(self) -> Path:
        return self.root / "train_log.csv"

    @property
    def validation_log(self) -> Path:
        return self.root / "validation_log.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard's event files (``train.report_to: tensorboard``)."""
        return self.root / "tensorboard"

    @property
    def full_model(self) -> Path:
        """Where ``method: full`` puts the whole trained model (the adapter's counterpart)."""
        return self.root / "model"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    def predictions(self, candidate: str) -> Path:
        return self.root / "predictions" / f"{candidate}.jsonl"
