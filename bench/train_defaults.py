"""The training defaults `taskfit init` writes for a task kind, measured: the same project (a
shared dataset's recipe from bench/scorecards.py) fine-tuned at each learning rate and epoch count
of a grid, every fine-tune scored on the same held-out rows, each against the grid's first entry
(today's default) with the scorecard's own paired test.

    .venv/bin/python bench/train_defaults.py squad2_dev --train 150 --eval 60 --grid 2e-4:1 1e-3:1 1e-3:3
    .venv/bin/python bench/train_defaults.py bitext_support --train 120 --eval 40 --grid 2e-4:1 1e-3:1 1e-3:3

Each entry is `LEARNING_RATE:EPOCHS`; early stopping, validation and the kept adapter (the best
validation's) are taskfit's defaults unless `--set` says otherwise. Each fine-tune is its own
project under bench/out/train_defaults/<dataset>/<entry>/ (`taskfit compare` reads it), trained
and evaluated by the library calls behind `taskfit train` and `taskfit eval`; a lone request's
latency is not timed (`eval.latency_rows: 0`): only quality and training time are compared.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scorecards import CPU_SIZES, DATA, ROOT, project_doc  # noqa: E402

OUT = ROOT / "bench" / "out" / "train_defaults"


def _set(doc: dict, key: str, value: object) -> None:
    *path, leaf = key.split(".")
    node = doc
    for part in path:
        node = node.setdefault(part, {})
    node[leaf] = value


def fine_tune(dataset: str, entry: str, train_n: int | None, eval_n: int | None, sets: list[str]) -> dict:
    """Train and evaluate one grid entry; its held-out result, training summary and validation log."""
    from taskfit.progress import RichReporter
    from taskfit.workflows import eval_project, train_project

    rate, _, epochs = entry.partition(":")
    project = OUT / dataset / entry.replace(":", "-ep")
    project.mkdir(parents=True, exist_ok=True)
    doc = project_doc(dataset, project, train_n, eval_n)
    doc["train"].update(learning_rate=float(rate), epochs=int(epochs or 1))
    doc["eval"]["latency_rows"] = 0
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item}: write KEY=VALUE, e.g. train.early_stopping_patience=2")
        _set(doc, key, yaml.safe_load(value))
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    reporter = RichReporter()
    start = time.perf_counter()
    summary = train_project(project, reporter=reporter)
    trained = time.perf_counter() - start
    start = time.perf_counter()
    result = eval_project(project, summary.run_dir, reporter=reporter)
    with open(summary.run_dir / "validation_log.csv", encoding="utf-8") as f:
        validations = list(csv.DictReader(f))
    return {"entry": entry, "result": result, "training": summary.training, "validations": validations,
            "train_s": trained, "eval_s": time.perf_counter() - start}


def table(kind: str, runs: list[dict]) -> list[str]:
    from taskfit.evaluation.compare import _cell, paired_test
    from taskfit.tasks import scoring

    columns = scoring(kind).columns
    lines = ["| learning rate | epochs | " + " | ".join(c.header for c in columns)
             + f" | vs {runs[0]['entry']} | steps (epochs run) | kept step | validation metric by step | "
               "training (s) | evaluation (s) |",
             "|" + "---|" * (len(columns) + 8)]
    for run in runs:
        rate, _, epochs = run["entry"].partition(":")
        m, t = run["result"].metrics, run["training"]
        test = "" if run is runs[0] else (lambda p: f"{100 * p.difference:+.1f} pts, {p.p_text}")(
            paired_test(kind, run["result"], runs[0]["result"]))
        curve = ", ".join(f"{v['step']}: {float(v['metric']):.3f}" for v in run["validations"])
        lines.append(f"| {rate} | {epochs or 1} | " + " | ".join(_cell(m, c.metric, c.share) for c in columns)
                     + f" | {test} | {t['steps']} ({t['epochs']:.2f}) | {t['best_step']} | {curve} | "
                       f"{run['train_s']:.0f} | {run['eval_s']:.0f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(CPU_SIZES))
    ap.add_argument("--train", type=int, help="training rows (default: bench/scorecards.py's CPU budget)")
    ap.add_argument("--eval", type=int, help="held-out rows (default: bench/scorecards.py's CPU budget)")
    ap.add_argument("--grid", nargs="+", required=True, metavar="LR:EPOCHS",
                    help="the settings to fine-tune with; the first is compared against")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any other taskfit.yaml setting, dotted, for every entry")
    args = ap.parse_args()
    if not (DATA / args.dataset).exists():
        raise SystemExit(f"{DATA / args.dataset}: not found (the shared datasets live in ../shared/data)")
    train_n, eval_n = CPU_SIZES[args.dataset]
    train_n, eval_n = args.train or train_n, args.eval or eval_n
    runs = []
    for entry in args.grid:
        runs.append(fine_tune(args.dataset, entry, train_n, eval_n, args.set))
        kind = runs[0]["result"].kind
        print(f"\n## {args.dataset}: {train_n} training rows, {runs[0]['result'].n} held-out rows\n")
        print("\n".join(table(kind, runs)), flush=True)


if __name__ == "__main__":
    main()
