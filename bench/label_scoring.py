"""Label scoring against free generation, on the same classification rows with the same model.

    .venv/bin/python bench/label_scoring.py bench/out/clinc150 --run bench/out/clinc150/runs/<run> --rows 60

Both read the same rendered prompt. Label scoring ranks every label by likelihood (best-first,
exact argmax) and always answers a label; free generation decodes greedily up to the longest
label plus 3 tokens and is right only when its text is exactly the gold label; the choice grammar
decodes greedily held to the label list by llguidance (always a label, no confidence). Prints
examples per second and accuracy for each, and the ratio of the first two. Without --run the base
model is used.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("project", type=Path)
    ap.add_argument("--run", type=Path, help="a trained run (default: the base model)")
    ap.add_argument("--rows", type=int, default=60)
    args = ap.parse_args()

    from taskfit.baselines.model import GenerativePredictor, LabelScoringPredictor
    from taskfit.workflows import Workspace
    from taskfit.workflows.evaluate import trained_candidate
    from taskfit.progress import RichReporter
    from taskfit.tasks.classify import label_budget

    reporter = RichReporter()
    ev = Workspace.open(args.project, reporter, allow_secrets=True)
    rows = ev.held_out[: args.rows]
    model = trained_candidate(ev, args.run).build().model if args.run else ev.lm().model
    tok, task, max_len = ev.tokenizer, ev.config.task, ev.config.train.max_seq_length
    budget = label_budget(tok, task)
    sides = {"label scoring": LabelScoringPredictor("scoring", model, tok, task, max_len),
             "free generation": GenerativePredictor("free", model, tok, task, max_len, budget),
             "choice grammar": GenerativePredictor("choice", model, tok, task, max_len, budget,
                                                   constrained=True)}
    found = {}
    for name, predictor in sides.items():
        start = time.perf_counter()
        preds = list(predictor.predict(rows))
        seconds = time.perf_counter() - start
        right = sum(p.output == ex.target for p, ex in zip(preds, rows))
        valid = sum(p.valid for p in preds)
        found[name] = (len(rows) / seconds, right / len(rows))
        print(f"{name:16s} {len(rows) / seconds:6.2f} examples/s  accuracy {100 * right / len(rows):5.1f}%  "
              f"valid labels {100 * valid / len(rows):5.1f}%  ({len(rows)} rows, {seconds:.0f} s)")
    (ls, la), (fs, fa) = found["label scoring"], found["free generation"]
    print(f"label scoring / free generation: {ls / fs:.2f}x examples per second, "
          f"{100 * (la - fa):+.1f} points accuracy ({len(task.labels or [])} labels, "
          f"{'run ' + args.run.name if args.run else 'base model'})")


if __name__ == "__main__":
    main()
