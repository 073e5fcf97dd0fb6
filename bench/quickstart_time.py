"""Benchmark: the README's first command from a fresh clone, timed, with the quickstart's accuracy bar.

It clones this repository's committed HEAD (or ``--rev REV``) into a temporary folder, runs
``bash scripts/setup.sh`` there (pip's cache is whatever this machine has: warm after the first
set-up) and then ``.venv/bin/taskfit quickstart`` with an empty model cache (``TASKFIT_CACHE`` a
new empty folder, so the embedded model is converted again), exactly as a newcomer would. It
prints the set-up's and the quickstart's wall time against the issue's goals (at most 2 and 5
minutes on the 2-core reference machine), where the quickstart's time went (each progress bar's
"done ... after", in the order they ran, and what was left between them), its peak memory, and
whether the accuracy bar held: the fine-tune at least 85% accuracy on the held-out rows and at
least 30 points above prompt-only, read from the run's ``scorecard.json``. ``--baseline REV``
does the same for another commit after it, in the same run, and prints the ratios.

    .venv/bin/python bench/quickstart_time.py                     # about 7 minutes on 2 cores
    .venv/bin/python bench/quickstart_time.py --baseline d2c4534  # twice that

Uncommitted changes are not in a clone: commit first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP_GOAL_S, QUICKSTART_GOAL_S = 120, 300
ACCURACY_BAR, OVER_PROMPT_ONLY = 0.85, 0.30
_DONE = re.compile(r"^(?P<what>.+?): done, \d+/\d+ after (?P<after>[^,]+?)(?: loss [\d.]+)?\s*$")


def seconds(text: str) -> float:
    """The progress line's "2 min 37 s" (or "14 s", "1 h 2 min 3 s") as seconds."""
    total, units = 0.0, {"h": 3600, "min": 60, "s": 1}
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(h|min|s)\b", text):
        total += float(number) * units[unit]
    return total


def stages(output: str) -> list[tuple[str, float]]:
    """Each progress bar's name and seconds, from its "done, N/N after ..." line, in order."""
    found = []
    for line in output.replace("\r", "\n").splitlines():
        m = _DONE.match(line.strip())
        if m:
            found.append((m["what"], seconds(m["after"])))
    return found


def accuracy_bar(scorecard: dict) -> tuple[float | None, float | None, bool]:
    """(the best fine-tune's accuracy, prompt-only's, whether the quickstart's bar holds)."""
    cands = scorecard.get("candidates", {})
    tuned = [c.get("accuracy") for name, c in cands.items() if name.startswith("fine-tuned")]
    tuned = [a for a in tuned if a is not None]
    best = max(tuned) if tuned else None
    prompt = cands.get("prompt-only", {}).get("accuracy")
    held = best is not None and prompt is not None and best >= ACCURACY_BAR and best - prompt >= OVER_PROMPT_ONLY
    return best, prompt, held


# runs a command and writes its CPU time and peak memory (its own process tree's) to a file
_WRAP = """import json, resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(json.dumps({"cpu_s": r.ru_utime + r.ru_stime, "peak_mb": r.ru_maxrss / 1024}))
sys.exit(code)"""


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, str, dict]:
    """(wall seconds, exit code, output, {cpu_s, peak_mb}) of one command and its children."""
    with tempfile.NamedTemporaryFile(suffix=".json") as usage:
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _WRAP, usage.name, *cmd], cwd=cwd, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t
        used = json.loads(Path(usage.name).read_text() or "{}")
    return wall, done.returncode, done.stdout, used


def measure(rev: str, where: Path) -> dict:
    """Clone ``rev``, set it up, run its quickstart with an empty model cache; what each took."""
    clone = where / f"clone-{rev}"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", rev], cwd=clone, check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    setup_s, rc, out, _ = _timed(["bash", "scripts/setup.sh"], clone, env)
    if rc:
        sys.exit(f"set-up failed at {rev} (exit {rc}):\n{out[-3000:]}")
    cache = where / f"cache-{rev}"
    cache.mkdir()
    quick_s, rc, out, used = _timed([".venv/bin/taskfit", "quickstart"], clone, {**env, "TASKFIT_CACHE": str(cache)})
    if rc:
        sys.exit(f"the quickstart failed at {rev} (exit {rc}):\n{out[-3000:]}")
    cards = sorted((clone / "quickstart" / "evals").glob("*/scorecard.json"), key=lambda p: p.stat().st_mtime)
    card = json.loads(cards[-1].read_text()) if cards else {}
    best, prompt, held = accuracy_bar(card)
    return {"rev": rev, "setup_s": setup_s, "quickstart_s": quick_s, "stages": stages(out),
            "cpu_s": used.get("cpu_s", 0.0), "peak_mb": used.get("peak_mb", 0.0), "tuned": best, "prompt": prompt,
            "held": held, "verdict": card.get("verdict", "(no scorecard)")}


def _mmss(s: float) -> str:
    return f"{int(s // 60)} min {s % 60:04.1f} s"


def report(m: dict) -> None:
    print(f"at {m['rev']}: set-up {_mmss(m['setup_s'])} (goal at most {SETUP_GOAL_S // 60} min: "
          f"{'met' if m['setup_s'] <= SETUP_GOAL_S else 'NOT met'}); quickstart {_mmss(m['quickstart_s'])} "
          f"(goal at most {QUICKSTART_GOAL_S // 60} min: {'met' if m['quickstart_s'] <= QUICKSTART_GOAL_S else 'NOT met'}), "
          f"{m['cpu_s']:.0f} s of CPU, peak memory {m['peak_mb']:,.0f} MB (the largest process)")
    shown = 0.0
    for what, s in m["stages"]:
        print(f"  {s:6.0f} s  {what}")
        shown += s
    print(f"  {m['quickstart_s'] - shown:6.0f} s  the rest (writing the sample, converting the model, loading it, "
          f"indexing, the classical fits, the report)")
    tuned = "n/a" if m["tuned"] is None else f"{m['tuned']:.1%}"
    prompt = "n/a" if m["prompt"] is None else f"{m['prompt']:.1%}"
    print(f"  accuracy bar (fine-tuned at least {ACCURACY_BAR:.0%} and {OVER_PROMPT_ONLY * 100:.0f} points over "
          f"prompt-only): fine-tuned {tuned}, prompt-only {prompt}: {'held' if m['held'] else 'NOT held'}")
    print(f"  verdict: {m['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rev", default="HEAD", help="the commit to clone and time (default: HEAD)")
    parser.add_argument("--baseline", metavar="REV", help="also time this commit the same way, after it")
    args = parser.parse_args()
    revs = [subprocess.run(["git", "rev-parse", "--short", r], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout.strip() for r in [args.rev] + ([args.baseline] if args.baseline else [])]
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                      text=True).stdout.strip():
        print("note: this tree has uncommitted changes; a clone has only what is committed")
    with tempfile.TemporaryDirectory(prefix="quickstart-time-") as tmp:
        results = []
        for rev in revs:
            results.append(measure(rev, Path(tmp)))
            report(results[-1])
    if len(results) == 2:
        ours, base = results
        print(f"ratio (this / {base['rev']}): quickstart {base['quickstart_s'] / ours['quickstart_s']:.2f}x faster, "
              f"set-up {base['setup_s'] / ours['setup_s']:.2f}x, peak memory {ours['peak_mb'] / base['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
