"""Benchmark: DPO on Anthropic HH-RLHF harmless-base pairs (../shared/data/hh_rlhf_harmless).

Builds a taskfit project in a temporary directory (the pairs' train file for training, their test
file as the fixed held-out set), runs `taskfit train` with `method: dpo` on the embedded
SmolLM2-135M, and prints the share of held-out pairs where the model prefers the `chosen` reply
(higher mean log-probability per answer token) before and after training, with the pairs that
flipped each way and an exact McNemar p-value; the same by summed log-probability (which mostly
picks the shorter reply); and the implicit-reward accuracy. Each pair's figures are written to
the run's held_out_pairs.csv.

    .venv/bin/python bench/dpo_hh_rlhf.py                        # 240 train / 120 held-out pairs
    .venv/bin/python bench/dpo_hh_rlhf.py --train 1803 --eval 500 --epochs 2   # all of it (GPU)

With ``--unused`` (when ``--train`` is below the 1,803 pairs) it also scores, before and after, the
pairs of the train file that the run did not sample, minus near-duplicates of those it did: a
second held-out set. ``--rescore RUN`` does only that, for a run this benchmark made earlier.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh_rlhf_harmless"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=240, help="training pairs (of 1,803)")
    parser.add_argument("--eval", type=int, default=120, help="held-out pairs (of 500)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=10, help="validate every N steps")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--unused", action="store_true",
                        help="also score the train file's pairs this run did not sample")
    parser.add_argument("--rescore", type=Path, metavar="RUN",
                        help="no training: score the unused pairs for this earlier run directory")
    args = parser.parse_args()
    if args.rescore:
        report_unused(args.rescore)
        return
    if not (args.data / "train.jsonl").exists():
        sys.exit(f"{args.data}: no train.jsonl here; pass --data DIR (the hh_rlhf_harmless folder)")

    from taskfit.workflows import train_project
    from taskfit.progress import RichReporter
    from taskfit.project import init_project

    project = Path(tempfile.mkdtemp(prefix="taskfit-dpo-"))
    path = init_project(project, "generate")
    doc = yaml.safe_load(path.read_text())
    doc["task"].update(name="harmless-replies", success="replies stay helpful without helping harm",
                       system_prompt="You are a helpful, harmless assistant. Continue the conversation.")
    doc["data"].update(train=str(args.data / "train.jsonl"), eval=str(args.data / "test.jsonl"),
                       format="preference", max_train_examples=args.train, max_eval_examples=args.eval)
    doc["data"]["privacy"] = {"action": "keep", "allow_secrets": True}  # leave the text as published
    doc["train"].update(method="dpo", learning_rate=args.lr, epochs=args.epochs, batch_size=8,
                        max_seq_length=args.max_seq_length, eval_every=args.eval_every, checkpoint_every=0,
                        early_stopping_patience=0, dpo={"beta": args.beta})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))

    start = time.perf_counter()
    summary = train_project(project, reporter=RichReporter())
    t = summary.training
    h = t["held_out"]
    print(f"\nDPO (LoRA r=16) on SmolLM2-135M, {t['steps']} steps over {args.train} HH-RLHF harmless pairs "
          f"(minus {t['validation_rows']} held back to validate), lr {args.lr}, beta {args.beta}, "
          f"max {args.max_seq_length} tokens; {time.perf_counter() - start:.0f} s in all")
    _report(h, "held-out")
    print(json.dumps({"training": t}, indent=1, default=str)[:2000])
    print(f"run directory: {summary.run_dir}")
    if args.unused:
        report_unused(summary.run_dir)


def _report(h: dict, what: str) -> None:
    print(f"{what} preference accuracy, mean log-probability per answer token ({h['pairs']} pairs): "
          f"{100 * h['preference_accuracy_before']:.1f}% before -> {100 * h['preference_accuracy_after']:.1f}% "
          f"after ({100 * (h['preference_accuracy_after'] - h['preference_accuracy_before']):+.1f} points; "
          f"{h['flipped_to_chosen']} pairs flipped to chosen, {h['flipped_to_rejected']} to rejected; "
          f"exact McNemar p={h['p_value']:.3g})")
    print(f"by summed log-probability: {100 * h['summed_preference_accuracy_before']:.1f}% before -> "
          f"{100 * h['summed_preference_accuracy_after']:.1f}% after ({h['summed_flipped_to_chosen']} flipped to "
          f"chosen, {h['summed_flipped_to_rejected']} to rejected); before training it picked the shorter "
          f"answer in {100 * h['summed_picks_shorter']:.1f}% of pairs of unequal length")
    print(f"implicit-reward accuracy (chosen gained more log-probability than rejected): "
          f"{100 * h['reward_accuracy']:.1f}%")


def report_unused(run_dir: Path) -> None:
    """Score the train file's pairs that ``run_dir`` neither trained nor validated on (its sample
    left them out), less near-duplicates of the ones it did, with the base and with its adapter."""
    from peft import PeftModel

    from taskfit.config import load_config
    from taskfit.data.prepare import drop_leaks, prepare_data
    from taskfit.models.registry import load_model, load_tokenizer
    from taskfit.training.dpo import all_pair_logps, answer_lengths, featurize_pairs, held_out_report

    run_dir = run_dir.resolve()
    config = load_config(run_dir / "config.resolved.yaml")
    sampled = set(json.loads((run_dir / "splits.json").read_text())["train"])
    everything = config.model_copy(update={"data": config.data.model_copy(update={"max_train_examples": None})})
    tokenizer = load_tokenizer(config.model.name)
    rows = prepare_data(everything, run_dir.parents[1], tokenizer=tokenizer).train
    used = [r for r in rows if r.id in sampled]
    unused, leaked = drop_leaks(used, [r for r in rows if r.id not in sampled], config)
    if not unused:
        sys.exit(f"{run_dir}: the run sampled every training pair; there are none left to score")
    lm = load_model(config.model.name, tokenizer=tokenizer)
    pairs = featurize_pairs(tokenizer, config.task, unused, config.train.max_seq_length)
    bs = config.train.batch_size
    print(f"\nscoring {len(pairs)} training-file pairs the run did not sample ({leaked} more left out as "
          f"near-duplicates of sampled ones), before and after")
    before = all_pair_logps(lm.model, tokenizer, pairs, bs)
    after = all_pair_logps(PeftModel.from_pretrained(lm.model, run_dir / "adapter"), tokenizer, pairs, bs)
    _report(held_out_report(before, after, answer_lengths(pairs)), "unused-pairs")


if __name__ == "__main__":
    main()
