"""Benchmark: a classification head's training speed and memory by `train.micro_batch_tokens`.

On the quickstart's sample tickets (seed 0; the head's recipe: mean pooling, lr 1e-3, batch 8,
LoRA r=16 on every layer), each setting trains the same first ``--steps`` batches in a child
process of its own (so peak memory is its own), one after the other; printed: trained tokens per
second, its ratio to the first setting (128, the CPU default before the head got its own), peak
RSS, and the mean of the last five step losses (the same gradients up to summation order and
LoRA dropout's draws).

    .venv/bin/python bench/head_micro_batch.py                       # 128 and 512, ~3 minutes
    .venv/bin/python bench/head_micro_batch.py --tokens 128 256 512 1024 --steps 20
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def child(project: Path, tokens: int, steps: int) -> None:
    import torch

    from taskfit.training.head import train_head
    from taskfit.workflows.workspace import Workspace

    ws = Workspace.open(project)
    lm = ws.lm()
    spec = ws.config.train.model_copy(update={"micro_batch_tokens": tokens, "epochs": 1, "validation_share": 0.0,
                                              "checkpoint_every": 0})
    torch.manual_seed(0)
    _, _, result = train_head(lm.model, lm.tokenizer, ws.config.task, spec, ws.train[:steps * spec.batch_size])
    s = result.state
    print("RESULT " + json.dumps({"tokens": s.trained_tokens, "seconds": s.seconds,
                                  "loss": sum(s.losses[-5:]) / len(s.losses[-5:]),
                                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), int(args.child[2]))
        return
    from taskfit.quickstart import make_quickstart_project

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "quickstart"
        make_quickstart_project(project, head=True)
        print("| micro_batch_tokens | tokens/s | ratio | peak RSS | last 5 losses |")
        print("|---|---|---|---|---|")
        first = None
        for tokens in args.tokens:
            proc = subprocess.run([sys.executable, __file__, "--child", str(project), str(tokens), str(args.steps)],
                                  capture_output=True, text=True)
            found = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if not found:
                raise SystemExit(f"micro_batch_tokens {tokens} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(found[0])
            speed = r["tokens"] / r["seconds"]
            first = first or speed
            print(f"| {tokens} | {speed:.1f} | {speed / first:.2f}x | {r['rss_mb']:,.0f} MB | {r['loss']:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
