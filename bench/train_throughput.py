"""Benchmark: LoRA training throughput and peak memory, taskfit's loop against TRL's SFTTrainer.

Same model (the embedded SmolLM2-135M, float32), same LoRA settings (r=16, alpha=32, dropout 0.05,
every linear projection), same batch size (8), learning rate, sequence limit (256) and number of
optimiser steps, on the quickstart's generated support tickets (their real, varied lengths).
The TRL side is the plain script most guides show: ``SFTTrainer`` with a ``peft_config`` and
TRL's defaults (prompt-completion data, so the loss is on the completion only, as in taskfit),
except ``bf16=False``: bfloat16 is ~11x slower than float32 on CPUs without native support, and
the comparison is float32 on both sides (taskfit's side with ``dtype: float32``, so not under the
bfloat16 autocast its ``auto`` uses on a CPU that has bfloat16 natively).

Each side runs in its own child process, one after the other, so neither's peak memory hides the
other's. Printed: trained (non-padding) tokens per second, the ratio, peak RSS, and the share of
this machine's measured float32 matmul throughput each achieves (useful work counted as
4 × non-embedding parameters × tokens for a frozen base: forward plus input gradients).

What each side learnt in those steps is then measured the same way on both: on ``--held-out``
tickets neither trained on (another seed of the generator), the mean cross-entropy per answer
token (the queue name and the end-of-turn token after taskfit's rendering of the prompt, which is
the chat template both sides apply) and the label accuracy by label scoring. The per-step losses
each trainer logs are not comparable (each averages over its own answer tokens: TRL's include the
newline after the end-of-turn token).

    pip install -e ".[bench]"
    .venv/bin/python bench/train_throughput.py              # 30 steps each, ~15 min on 2 cores
    .venv/bin/python bench/train_throughput.py --steps 10   # a quicker look
    .venv/bin/python bench/train_throughput.py --sides taskfit trl
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

BATCH, MAX_LEN, LR, SEED = 8, 256, 2e-4, 0
HELD_OUT_SEED = 99  # the held-out tickets: another seed of the same generator
# taskfit: its defaults (on CPU, micro_batch_tokens 128); taskfit-256: micro_batch_tokens 256
SIDES = ["taskfit", "taskfit-256", "trl"]


def tickets(n: int, seed: int = SEED):
    from taskfit.data.sample import generate_tickets
    from taskfit.records import Example

    rows = generate_tickets(n, seed=seed)
    return [Example(id=r["id"], input=r["messages"][0]["content"], target=r["messages"][1]["content"])
            for r in rows]


def task():
    import yaml

    from taskfit.config import TaskSpec
    from taskfit.project import template

    return TaskSpec.model_validate(yaml.safe_load(template("classify"))["task"])


def load():
    from taskfit.models import load_model

    return load_model("smollm2-135m")


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")


def side_taskfit(steps: int, micro_batch_tokens: int | None = None) -> dict:
    from taskfit.config import TrainSpec
    from taskfit.training import train_sft

    lm = load()
    spec = TrainSpec(learning_rate=LR, batch_size=BATCH, max_seq_length=MAX_LEN, epochs=1, seed=SEED,
                     validation_share=0.0, checkpoint_every=0, dtype="float32")  # no bf16 autocast: float32 as TRL
    if micro_batch_tokens:
        spec = spec.model_copy(update={"micro_batch_tokens": micro_batch_tokens})
    model, result = train_sft(lm.model, lm.tokenizer, task(), spec, tickets(steps * BATCH))
    s = result.state
    return {"steps": s.step, "tokens": s.trained_tokens, "seconds": s.seconds,
            "final_loss": sum(s.losses[-5:]) / len(s.losses[-5:]), "model": model, "tokenizer": lm.tokenizer}


def side_trl(steps: int) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    lm = load()
    spec = task()
    rows = [{"prompt": [{"role": "system", "content": spec.system_prompt},
                        {"role": "user", "content": ex.input}],
             "completion": [{"role": "assistant", "content": ex.target}]} for ex in tickets(steps * BATCH)]

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    args = SFTConfig(output_dir="/tmp/taskfit-bench-trl", per_device_train_batch_size=BATCH, max_steps=steps,
                     learning_rate=LR, max_length=MAX_LEN, bf16=False, logging_steps=1, save_strategy="no",
                     report_to="none", seed=SEED, use_cpu=True, disable_tqdm=True)
    trainer = SFTTrainer(model=lm.model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=lm.tokenizer, peft_config=lora_config(), callbacks=[clock])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "num_tokens" in h]
    losses = [h["loss"] for h in logs if "loss" in h]
    return {"steps": trainer.state.global_step, "tokens": int(logs[-1]["num_tokens"]),
            "seconds": clock.seconds, "final_loss": sum(losses[-5:]) / len(losses[-5:]),
            "gradient_checkpointing": args.gradient_checkpointing, "model": trainer.model,
            "tokenizer": lm.tokenizer}


def held_out(model, tokenizer, n: int) -> dict:
    """The same measure for every side: mean cross-entropy per answer token, and label accuracy
    by label scoring, on ``n`` tickets neither side trained on."""
    import torch
    import torch.nn.functional as F

    from taskfit.baselines import LabelScoringPredictor
    from taskfit.rendering import render

    model.eval()
    spec, rows = task(), tickets(n, seed=HELD_OUT_SEED)
    total, count = 0.0, 0
    with torch.inference_mode():
        for ex in rows:
            r = render(tokenizer, spec, ex, target=ex.target, max_length=MAX_LEN)
            logits = model(input_ids=torch.tensor([r.ids])).logits[0, r.n_prompt - 1:-1].float()
            total += float(F.cross_entropy(logits, torch.tensor(r.completion), reduction="sum"))
            count += len(r.completion)
    scorer = LabelScoringPredictor("held-out", model, tokenizer, spec, MAX_LEN, batch_size=8)
    right = sum(p.output == ex.target for p, ex in zip(scorer.predict(rows), rows))
    return {"held_out_loss": total / count, "held_out_accuracy": right / len(rows), "held_out_rows": len(rows)}


def matmul_flops() -> float:
    """Measured float32 matmul throughput of this machine (FLOP/s) with torch's threads."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    n, start = 20, time.perf_counter()
    for _ in range(n):
        a @ b
    return 2 * 1024 ** 3 * n / (time.perf_counter() - start)


def child(side: str, steps: int, n_held_out: int) -> None:
    import torch

    torch.manual_seed(SEED)
    out = side_trl(steps) if side == "trl" else side_taskfit(steps, 256 if side == "taskfit-256" else None)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # of training
    model, tokenizer = out.pop("model"), out.pop("tokenizer")
    out.update(held_out(model, tokenizer, n_held_out))
    out["matmul_flops"] = matmul_flops()
    out["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(out), flush=True)


def run_side(side: str, steps: int, n_held_out: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", side, "--steps", str(steps),
                           "--held-out", str(n_held_out)], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--child", choices=SIDES)
    parser.add_argument("--held-out", type=int, default=96, help="held-out tickets to score each side on")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=SIDES)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.held_out)
        return

    from taskfit.models import load_model

    lm = load_model("smollm2-135m")  # converts the embedded GGUF once, outside the timed runs
    params = sum(p.numel() for n, p in lm.model.named_parameters() if "embed" not in n)
    del lm
    results = {}
    for side in args.sides:
        print(f"running {side} ({args.steps} steps of {BATCH})...", file=sys.stderr, flush=True)
        results[side] = run_side(side, args.steps, args.held_out)
    first = next(iter(results.values()))
    print(f"\nLoRA r=16 on SmolLM2-135M, float32, batch {BATCH}, {args.steps} steps, quickstart tickets, "
          f"{first['threads']} threads; held out: {first['held_out_rows']} tickets of another seed")
    print(f"{'':14} {'tokens':>8} {'seconds':>8} {'tokens/s':>9} {'peak RSS MB':>12} {'matmul share':>13} "
          f"{'own loss':>9} {'held-out loss':>14} {'accuracy':>9}")
    for side, r in results.items():
        tps = r["tokens"] / r["seconds"]
        share = 4 * params * tps / r["matmul_flops"]
        r["tokens_per_second"] = tps
        print(f"{side:14} {r['tokens']:>8} {r['seconds']:>8.1f} {tps:>9.1f} {r['peak_rss_mb']:>12.0f} "
              f"{100 * share:>12.1f}% {r['final_loss']:>9.3f} {r['held_out_loss']:>14.3f} "
              f"{100 * r['held_out_accuracy']:>8.1f}%")
    if "trl" in results:
        b = results["trl"]
        print(f"TRL's gradient checkpointing (its default): {b['gradient_checkpointing']}")
        for side in [s for s in results if s != "trl"]:
            t = results[side]
            print(f"{side} / trl: throughput {t['tokens_per_second'] / b['tokens_per_second']:.2f}x, "
                  f"peak memory {t['peak_rss_mb'] / b['peak_rss_mb']:.2f}x, held-out loss "
                  f"{t['held_out_loss']:.3f} vs {b['held_out_loss']:.3f}, accuracy "
                  f"{100 * t['held_out_accuracy']:.1f}% vs {100 * b['held_out_accuracy']:.1f}%")


if __name__ == "__main__":
    main()
