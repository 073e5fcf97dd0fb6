"""Benchmark: `taskfit data check` on a generated JSONL of many rows (default one million).

It prints rows per second, peak memory (the check's process's, and all its processes' together
as proportional set size, sampled twice a second) and the CPU time of the check's process and of
its workers (which of them bounds the wall time) for taskfit's streaming check, and, in the same run,
the peak memory of the standard first step of most fine-tuning scripts: reading the whole file
into a Python list with json.loads. Each is measured in its own child process so that one's peak
does not hide the other's. Token counting with the model's tokenizer is included (--no-tokens
leaves it out). ``--baseline REV`` also runs the check of an earlier commit's code (its ``src/``,
taken with ``git archive``) on the same file in the same run, and prints the ratios and whether
both counted the same.

    .venv/bin/python bench/data_check.py                 # 1,000,000 rows (about 3 min on 2 cores, 2026-12-05)
    .venv/bin/python bench/data_check.py --rows 100000   # a quicker look
    .venv/bin/python bench/data_check.py --rows 100000 --baseline e616b96
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_rows(path: Path, rows: int) -> None:
    """Sample tickets in blocks of 2,400 with a new seed each block, with unique ids."""
    from taskfit.data.sample import generate_tickets

    written = 0
    with path.open("w", encoding="utf-8") as f:
        block = 0
        while written < rows:
            for r in generate_tickets(2400, seed=block):
                if written >= rows:
                    break
                r["id"] = f"B{block}-{r['id']}"
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
                written += 1
            block += 1


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tree_pss_mb(pid: int) -> float:
    """The proportional set size of a process and all its descendants (Linux): memory a page
    shared by forked processes counts once in all, split between them."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            pass  # it ended meanwhile
    return total / 1024


def _sample_pss(peak: list[float], stop: threading.Event) -> None:
    while not stop.wait(0.5):
        peak[0] = max(peak[0], _tree_pss_mb(os.getpid()))


def run_taskfit(project: str, tokens: bool, out: "mp.Queue") -> None:
    from taskfit.config import load_config
    from taskfit.data.prepare import check_data
    from taskfit.models.registry import load_tokenizer

    config = load_config(Path(project))
    tokenizer = load_tokenizer(config.model.name) if tokens else None
    base = _peak_mb()
    before = _cpu(resource.RUSAGE_SELF)
    # the check's processes together (its own, the workers'), sampled twice a second
    pss, stop = [_tree_pss_mb(os.getpid())], threading.Event()
    sampler = threading.Thread(target=_sample_pss, args=(pss, stop), daemon=True)
    sampler.start()
    start = time.perf_counter()
    card = check_data(config, Path(project), tokenizer=tokenizer)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers = children.ru_maxrss / 1024  # the largest worker's peak, if any
    # CPU of the check's process and of its workers: which of them bounds the wall time
    out.put({"rows": card.counts["read"], "seconds": seconds, "peak_mb": _peak_mb(), "start_mb": base,
             "counts": card.counts, "worker_peak_mb": workers, "main_cpu": _cpu(resource.RUSAGE_SELF) - before,
             "worker_cpu": _cpu(resource.RUSAGE_CHILDREN), "all_pss_mb": pss[0]})


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_other(src: Path, project: str, tokens: bool) -> dict:
    """run_taskfit with the code under ``src`` (another commit's), in a fresh interpreter."""
    code = ("import json, multiprocessing as mp, sys; sys.path.insert(0, sys.argv[1]); import data_check; "
            "q = mp.Queue(); data_check.run_taskfit(sys.argv[2], sys.argv[3] == '1', q); print(json.dumps(q.get()))")
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "bench"), project, "1" if tokens else "0"],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def run_naive(path: str, out: "mp.Queue") -> None:
    base = _peak_mb()
    start = time.perf_counter()
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    out.put({"rows": len(rows), "seconds": time.perf_counter() - start, "peak_mb": _peak_mb(), "start_mb": base})


def _child(target, *args) -> dict:
    queue: mp.Queue = mp.Queue()
    proc = mp.get_context("fork").Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-tokens", action="store_true")
    parser.add_argument("--baseline", metavar="REV", help="also run this commit's data check on the same file")
    args = parser.parse_args()

    from taskfit.quickstart import make_quickstart_project

    with tempfile.TemporaryDirectory() as tmp:
        project = make_quickstart_project(Path(tmp) / "bench", n_tickets=10).parent
        data = project / "data" / "tickets.jsonl"
        t = time.perf_counter()
        write_rows(data, args.rows)
        print(f"wrote {args.rows:,} rows ({data.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")
        ours = _child(run_taskfit, str(project), not args.no_tokens)
        base = None
        if args.baseline:
            src = Path(tmp) / "baseline"
            src.mkdir()
            archive = subprocess.run(["git", "archive", args.baseline, "src"], cwd=ROOT, check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
            base = run_other(src / "src", str(project), not args.no_tokens)
        naive = _child(run_naive, str(data))
    for name, got in [("taskfit data check", ours)] + ([(f"  at {args.baseline}", base)] if base else []):
        workers = f"; the largest worker process's peak {got['worker_peak_mb']:,.0f} MB" if got.get("worker_peak_mb") else ""
        workers += f"; all its processes together {got['all_pss_mb']:,.0f} MB at most (PSS)" if "all_pss_mb" in got else ""
        print(f"{name:18s}: {got['rows']:,} rows in {got['seconds']:.0f} s = {got['rows'] / got['seconds']:,.0f} rows/s; "
              f"peak RSS {got['peak_mb']:,.0f} MB (of which {got['start_mb']:,.0f} MB before the scan){workers}")
        if "main_cpu" in got:  # (a run of this script from before it measured them has not)
            print(f"  CPU: the check's process {got['main_cpu']:.1f} s, its workers {got['worker_cpu']:.1f} s, in "
                  f"{got['seconds']:.1f} s: {1e6 * (got['main_cpu'] + got['worker_cpu']) / got['rows']:.0f} "
                  f"microseconds a row in all")
        print(f"  counts: {got['counts']}")
    if base:
        print(f"speed ratio (this tree / {args.baseline}): {base['seconds'] / ours['seconds']:.2f}x; peak memory "
              f"ratio {ours['peak_mb'] / base['peak_mb']:.2f} (all processes {ours['all_pss_mb'] / base['all_pss_mb']:.2f}); "
              f"same counts: {ours['counts'] == base['counts']}")
    print(f"json.loads into a list: {naive['rows']:,} rows in {naive['seconds']:.0f} s; peak RSS "
          f"{naive['peak_mb']:,.0f} MB")
    print(f"memory ratio (taskfit check / whole file in a list): {ours['peak_mb'] / naive['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
