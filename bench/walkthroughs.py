"""The README's walkthroughs at full size: for each shared dataset, `taskfit init --from` plus the
settings the walkthrough names (nothing else), then `taskfit run`, timed, on the embedded model.

    .venv/bin/python bench/walkthroughs.py                       # every walkthrough, one after another
    .venv/bin/python bench/walkthroughs.py bitext_support clinc150

Each project is written under bench/out/walkthroughs/<name>/ (an ordinary project: `taskfit compare`
prints its scorecard again) with its log in run.log; one line per walkthrough goes to
bench/out/walkthroughs/times.jsonl: wall and CPU seconds, peak memory (the largest child process so
far: run one walkthrough per invocation for each one's own), the seconds `taskfit compare` takes
afterwards and whether it printed the same scorecard, and the scorecard's verdict.
The README's walkthroughs are read by :func:`walkthroughs`, which the tests use too, so the commands
timed here are the commands a user copies.
"""

from __future__ import annotations

import json
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def walkthroughs(readme: Path = ROOT / "README.md") -> dict[str, tuple[list[str], dict]]:
    """dataset → (the `taskfit init` arguments, the settings), from the README's walkthroughs: each
    ```bash block with `taskfit init NAME --from ../shared/data/DATASET/...` and the ```yaml block
    that follows it."""
    text = readme.read_text(encoding="utf-8")
    found = {}
    block = r"((?:(?!```).)*?)"  # a fenced block's text
    for match in re.finditer(rf"```bash\n(taskfit init [^\n]*shared/data/[^\n]*)\n{block}```\n```yaml\n{block}```",
                             text, re.S):
        args = shlex.split(match.group(1))[2:]  # after `taskfit init`: NAME and the flags
        dataset = re.search(r"shared/data/([^/]+)/", match.group(1)).group(1)
        found[dataset] = (args, yaml.safe_load(match.group(3)) or {})
    return found


def merge(doc: dict, settings: dict) -> None:
    """Put a walkthrough's ``settings`` into a project's config ``doc``, key by key."""
    for key, value in settings.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            merge(doc[key], value)
        else:
            doc[key] = value


def main(argv: list[str]) -> None:
    found = walkthroughs()
    names = argv or list(found)
    out = ROOT / "bench" / "out" / "walkthroughs"
    out.mkdir(parents=True, exist_ok=True)
    taskfit = str(Path(sys.executable).with_name("taskfit"))
    for dataset in names:
        args, settings = found[dataset]
        project = out / args[0]
        if not (project / "taskfit.yaml").exists():
            subprocess.run([taskfit, "init", str(project), *args[1:]], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
            path = project / "taskfit.yaml"
            doc = yaml.safe_load(path.read_text())
            merge(doc, settings)
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time()
        with open(project / "run.log", "w") as log:
            done = subprocess.run([taskfit, "run", str(project)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wall = time.time() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cards = {card: card.read_text() for card in sorted(project.glob("evals/*/scorecard.md"))}
        # `taskfit compare` afterwards: the same scorecard, from the cache alone (timed: seconds, not minutes)
        start = time.time()
        compared = subprocess.run([taskfit, "compare", str(project)], cwd=ROOT, capture_output=True, text=True)
        compare_s = time.time() - start
        same = compared.returncode == 0 and all(card.read_text() == text for card, text in cards.items())
        verdict = ""  # the scorecard's first paragraph after its title and success line ("Keep ...", "Not proven: ...")
        for text in cards.values():
            verdict = next((line for line in text.splitlines()[1:]
                            if line.strip() and not line.startswith(("Success means", "#", ">", "|"))), verdict)
        row = {"dataset": dataset, "project": args[0], "exit": done.returncode, "wall_s": round(wall),
               "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime),
               "peak_rss_mb": round(after.ru_maxrss / 1024), "compare_s": round(compare_s, 1),
               "compare_same_scorecard": same, "verdict": verdict.strip(), "settings": settings}
        with open(out / "times.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
