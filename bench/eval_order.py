"""Benchmark: evaluation's batches in the rows' own order against batches by prompt length.

A local model reads a batch's prompts as one padded pass, so a batch of prompts of unlike length
reads padding. Evaluation answers its rows in the order `Prompts.order` gives (by prompt length);
this measures what that saves. On a fresh quickstart project (seed 0; its 150 held-out tickets,
`eval.batch_size` 8), the prompt-only and few-shot candidates (label scoring) answer every
held-out row in the rows' own order and in `order`'s, the two taking turns `--repeat` times;
printed per candidate: the padded prompt tokens each order's batches hold, the fastest wall time
of each (`order`'s includes rendering the prompts once more to measure them), their ratio, and
whether the labels agree row for row.

    .venv/bin/python bench/eval_order.py              # about 10 minutes on 2 cores
    .venv/bin/python bench/eval_order.py --rows 48 --repeat 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def padded_tokens(predictor, rows) -> int:
    """Tokens the batches of ``rows`` (in this order) hold, padding included."""
    size = predictor.batch_size
    lengths = [len(predictor.prompt_ids(ex)) for ex in rows]
    return sum(max(lengths[i:i + size]) * len(lengths[i:i + size]) for i in range(0, len(lengths), size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150, help="held-out rows answered (the first N)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    from taskfit.quickstart import make_quickstart_project
    from taskfit.workflows.evaluate import _baseline
    from taskfit.workflows.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "quickstart"
        make_quickstart_project(project, head=True)
        ws = Workspace.open(project)
        rows = ws.eval_rows[:args.rows]
        print(f"{len(rows)} held-out rows, eval.batch_size {ws.config.eval.batch_size}")
        print("| candidate | padded prompt tokens, own order | by length | seconds, own order | by length | "
              "ratio | same labels |")
        print("|---|---|---|---|---|---|---|")
        for name in ("prompt-only", "few-shot"):
            predictor = _baseline(ws, name).build()
            next(iter(predictor.predict(rows[:1])))  # the first pass's set-up, untimed
            best = {"own": float("inf"), "length": float("inf")}
            labels = {}
            for turn in range(args.repeat):
                for side in (("own", "length") if turn % 2 == 0 else ("length", "own")):
                    start = time.perf_counter()
                    order = rows if side == "own" else predictor.order(rows)
                    labels[side] = {p.example_id: p.output for p in predictor.predict(order)}
                    best[side] = min(best[side], time.perf_counter() - start)
            tokens = (padded_tokens(predictor, rows), padded_tokens(predictor, predictor.order(rows)))
            print(f"| {name} | {tokens[0]:,} | {tokens[1]:,} | {best['own']:.1f} | {best['length']:.1f} | "
                  f"{best['length'] / best['own']:.2f} | {labels['own'] == labels['length']} |", flush=True)


if __name__ == "__main__":
    main()
