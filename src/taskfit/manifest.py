"""The run manifest: everything needed to say what a run was and to reproduce it."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from taskfit.config import ProjectConfig

_PACKAGES = ["taskfit", "torch", "transformers", "peft", "accelerate", "trl", "scikit-learn", "gguf",
             "numpy", "bitsandbytes"]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(directory: Path) -> str | None:
    """The commit of the project directory's git repository, if it is in one."""
    try:
        out = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def build_manifest(config: ProjectConfig, project_dir: Path, model_info: Any, card: Any,
                   rows: dict[str, int], hardware: dict[str, Any]) -> dict[str, Any]:
    """``rows``: counts by role (train, validation, eval); ``card``: the data card."""
    from datetime import datetime, timezone

    return {
        "task": config.task.name, "kind": config.task.kind, "status": "started",
        "started": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "config": config.model_dump(mode="json", by_alias=True),
        "model": asdict(model_info),
        "data": {"train_file": config.data.train, "eval_file": config.data.eval,
                 "rows": card.rows_summary(), **{f"{k}_rows": v for k, v in rows.items()},
                 # training rows drafted by a model (data.synthetic: include): the run's candidate is
                 # fine-tuned-synthetic, beside the real-only fine-tuned
                 "synthetic_train_rows": card.split.get("synthetic_train", 0),
                 "train_fingerprint": card.split.get("train_fingerprint"),
                 "eval_fingerprint": card.split.get("eval_fingerprint")},
        "seeds": {"split": config.data.seed, "train": config.train.seed},
        "versions": package_versions(),
        "hardware": {"machine": platform.machine(), "platform": platform.platform(), **hardware},
        "project_git_commit": git_commit(project_dir),
    }
