"""How taskfit's CPU work fares when another program keeps a core busy, with OpenMP's threads
spinning while they wait (libgomp's default) against sleeping (``OMP_WAIT_POLICY=PASSIVE``).

On a 2-core machine torch computes on both cores. When another process holds one of them, each
parallel region waits for the thread that is not running, and a spinning wait takes the core that
thread needs. Each workload runs through the CLI in its own process, the two policies in turns,
first with the machine otherwise idle, then beside one busy process (a Python loop, standing in
for another program):

- ``eval``: `taskfit baseline --only few-shot` on the quickstart's held-out tickets (``--rows``):
  the batched evaluation's seconds a row and a lone request's median (``eval.latency_rows``);
- ``train``: `taskfit train` of the quickstart's head on ``--train-rows`` tickets, one epoch:
  trained tokens a second (the run's ``steady_tokens_per_second``).

    .venv/bin/python bench/thread_contention.py               # about 10 minutes on 2 cores
    .venv/bin/python bench/thread_contention.py --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

POLICIES = {  # name: the OpenMP settings it adds to the environment (libgomp's)
    "spin (default)": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}
OMP = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # cleared from the environment first


def project(directory: Path, rows: int, train_rows: int) -> Path:
    from taskfit.quickstart import make_quickstart_project

    make_quickstart_project(directory, head=True, force=True)
    path = directory / "taskfit.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["data"].update(max_eval_examples=rows, max_train_examples=train_rows)
    config["train"].update(epochs=1)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return directory


def run(args: list[str], policy: dict[str, str]) -> None:
    env = {**{k: v for k, v in os.environ.items() if k not in OMP}, **policy}
    done = subprocess.run([sys.executable, "-m", "taskfit.cli.main", *args], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"taskfit {' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}")


def measure(workload: str, directory: Path, policy: dict[str, str]) -> dict[str, float]:
    for stale in ("evals", "baselines", "runs"):
        shutil.rmtree(directory / stale, ignore_errors=True)
    if workload == "eval":
        run(["baseline", str(directory), "--only", "few-shot"], policy)
        result = next(directory.glob("evals/*/results/few-shot.json"))
        metrics = json.loads(result.read_text(encoding="utf-8"))["metrics"]
        return {"s a row, batched": metrics["latency_mean_s"], "lone p50 s": metrics["latency_p50_s"]}
    run(["train", str(directory)], policy)
    metrics = json.loads(next(directory.glob("runs/*/metrics.json")).read_text(encoding="utf-8"))["training"]
    return {"tokens/s": metrics["steady_tokens_per_second"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=60, help="held-out tickets the few-shot baseline answers")
    ap.add_argument("--train-rows", type=int, default=96)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workloads", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    ap.add_argument("--policies", nargs="+", default=["spin (default)", "passive"], choices=list(POLICIES),
                    help="the settings compared; each is set against the first")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="taskfit-contention-"))
    directory = project(work / "qs", args.rows, args.train_rows)
    run(["data", "check", str(directory)], {})  # the converted model and the data card, before timing
    figures: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for condition in ("idle", "one busy process"):
        hog = (subprocess.Popen([sys.executable, "-c", "while True: pass"])
               if condition != "idle" else None)
        try:
            for _ in range(args.repeat):
                for workload in args.workloads:
                    for name in args.policies:
                        got = measure(workload, directory, POLICIES[name])
                        figures.setdefault((condition, workload, name), []).append(got)
                        print(condition, workload, name, json.dumps({k: round(v, 4) for k, v in got.items()}),
                              flush=True)
        finally:
            if hog is not None:
                hog.kill()
    first = args.policies[0]
    print(f"\n{os.cpu_count()} CPUs; {args.repeat} run(s) of each, medians; ratio = each / {first}")
    for (condition, workload, name), runs in figures.items():
        if name == first:
            continue
        base = figures[(condition, workload, first)]
        for key in runs[0]:
            a = statistics.median(r[key] for r in base)
            b = statistics.median(r[key] for r in runs)
            print(f"{condition:>17} | {workload:5} | {key:17} | {first} {a:9.4f} | {name} {b:9.4f} | ratio {b / a:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
