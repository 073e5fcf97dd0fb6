"""Benchmark check: `taskfit data check` of this tree against an earlier commit's, on one generated
file: the same decisions, and the CPU each spends a row.

Each side runs ``check_data`` in a fresh interpreter (its ``src/`` taken with ``git archive`` for
the baseline) and reports the CPU of its main process and of its worker (``getrusage``: CPU, not
wall time, so another load on the cores disturbs the figures less), its peak memory, and what it
decided: the card (counts, listed look-alike pairs with their similarities and previews, layouts,
tallies), the id of every kept row in order, the quarantined rows and each kept row's layout and
token length. The sides run alternately ``--runs`` times; the decisions must be equal in every run.

    .venv/bin/python bench/data_check_same.py --rows 100000 --baseline d9d4a09
    .venv/bin/python bench/data_check_same.py --rows 300000 --baseline d9d4a09 --runs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SIDE = r"""
import hashlib, json, resource, sys
from dataclasses import asdict
from pathlib import Path
from taskfit.config import load_config
from taskfit.data import prepare, scan as scanmod
from taskfit.models.registry import load_tokenizer

project = Path(sys.argv[1])
config = load_config(project)
tokenizer = load_tokenizer(config.model.name)
scans, kept = [], []
count_kept, scan = scanmod.count_kept, prepare.scan
scanmod.count_kept = lambda result, rec, *a: (kept.append(rec.id), count_kept(result, rec, *a))[1]
prepare.scan = lambda *a, **k: scans.append(scan(*a, **k)) or scans[-1]
cpu = lambda who: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(who))
main, workers = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
card = prepare.check_data(config, project, tokenizer=tokenizer)
main, workers = cpu(resource.RUSAGE_SELF) - main, cpu(resource.RUSAGE_CHILDREN) - workers
decided = {"card": asdict(card), "kept": kept,
           "scans": [{"quarantined": [(q.source, q.reason) for q in s.quarantined], "layouts": list(s.layouts),
                      "lengths": list(s.lengths), "near": [asdict(n) for n in s.near_duplicates],
                      "conflicts": [asdict(n) for n in s.conflicts]} for s in scans]}
rows = card.counts["read"]
print(json.dumps({"rows": rows, "main_us": main / rows * 1e6, "worker_us": workers / rows * 1e6,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "counts": card.counts, "kept": len(kept),
                  "decisions": hashlib.sha256(json.dumps(decided, default=str).encode()).hexdigest()}))
"""


def run_side(src: Path, project: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", SIDE, str(project)], env=env, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline", metavar="REV", required=True)
    parser.add_argument("--runs", type=int, default=1, help="runs of each side, alternated")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "bench"))
    from data_check import write_rows

    from taskfit.quickstart import make_quickstart_project

    with tempfile.TemporaryDirectory() as tmp:
        project = make_quickstart_project(Path(tmp) / "bench", n_tickets=10).parent
        write_rows(project / "data" / "tickets.jsonl", args.rows)
        base = Path(tmp) / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline, "src"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        sides = {args.baseline: base / "src", "this tree": ROOT / "src"}
        got: dict[str, list[dict]] = {name: [] for name in sides}
        for _ in range(args.runs):
            for name, src in sides.items():
                r = run_side(src, project)
                got[name].append(r)
                print(f"{name:>10}: main {r['main_us']:.1f} + worker {r['worker_us']:.1f} = "
                      f"{r['main_us'] + r['worker_us']:.1f} microseconds of CPU a row; peak {r['peak_mb']:,.0f} MB; "
                      f"{r['kept']:,} kept; decisions {r['decisions'][:12]}", flush=True)
    decisions = {r["decisions"] for runs in got.values() for r in runs}
    print(f"counts: {got['this tree'][0]['counts']}")
    print(f"the same decisions in every run: {len(decisions) == 1}")


if __name__ == "__main__":
    main()
