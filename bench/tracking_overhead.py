"""What ``train.report_to`` costs a training run: opening the tracker, and one optimiser step's
figures (train/loss, train/learning_rate, train/epoch, train/tokens_per_second) sent to it.

    .venv/bin/python bench/tracking_overhead.py [--steps 200]

Needs the tracking extra (``pip install -e '.[tracking]'``). MLflow writes to a new SQLite store
in a temporary project (MLFLOW_TRACKING_URI is ignored here), TensorBoard to a temporary run's
``tensorboard/``. The machine's load average is printed beside the figures: on a shared machine
they are upper bounds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from taskfit.paths import RunDir
from taskfit.training.tracking import open_tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    steps = parser.parse_args().steps
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    for kind in ("mlflow", "tensorboard"):
        project = Path(tempfile.mkdtemp(prefix="taskfit-tracking-"))
        run = RunDir(project / "runs" / "bench")
        run.root.mkdir(parents=True)
        started = time.perf_counter()
        tracker = open_tracker(kind, project, run, experiment="bench", params={"method": "lora"})
        opened = time.perf_counter()
        for step in range(1, steps + 1):
            tracker.log_metrics({"train/loss": 1.0 / step, "train/learning_rate": 2e-4, "train/epoch": step / steps,
                                 "train/tokens_per_second": 1000.0}, step)
        logged = time.perf_counter()
        assert tracker.active, f"{kind}: the tracker failed (see the warning above)"
        tracker.close()
        print(f"{kind}: opened in {opened - started:.2f} s, {1000 * (logged - opened) / steps:.2f} ms per step "
              f"({steps} steps), closed in {time.perf_counter() - logged:.2f} s; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
