"""The GGUF-LoRA export against the training-time model, on a classify project's held-out rows.

    bash scripts/setup.sh --tests        # adds llama-cpp-python: compiles llama.cpp once (~6 min on 2 cores)
    .venv/bin/taskfit quickstart         # or any classify project with a finished LoRA run
    .venv/bin/python bench/gguf_export.py quickstart --run quickstart/runs/<run>

Evaluates the run twice on the same held-out rows (both cached like any evaluation): with
transformers (the adapter merged into the float32 base: the model as trained) and with llama.cpp
(the embedded base GGUF plus the exported GGUF LoRA, via `taskfit export --format gguf-lora`).
Prints the share of rows where the two give the same label (the export must agree on at least
98%), each one's accuracy and latency, and both engines' greedy generation speed on the base model.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


STORIES = ["Write a long story about a cat and a dog who become friends.",
           "Explain in detail how a refund is processed in an online shop.",
           "Describe a busy day at a support desk, hour by hour.",
           "Write a long letter to a customer whose parcel was lost."]


def _decode_speed(base: str, tokens: int) -> None:
    """Greedy generation speed of the two engines on the base model, on open-ended prompts that
    make long answers (a fine-tuned classifier stops after three tokens, which says nothing about
    decoding): tokens per second, reading the short prompt included."""
    from taskfit.baselines.llama_cpp import load_llama
    from taskfit.decoding import Sampling, decode_batch
    from taskfit.models import load_model
    from taskfit.training.gguf_lora import base_gguf

    lm = load_model(base)
    tok = lm.tokenizer
    prompts = [tok(tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True),
                   add_special_tokens=False)["input_ids"] for p in STORIES]
    speeds = {}
    start, made = time.perf_counter(), 0
    for p in prompts:
        made += decode_batch(lm.model, tok, [p], [Sampling(max_tokens=tokens)])[0].completion_tokens
    speeds["transformers"] = made / (time.perf_counter() - start)
    llm = load_llama(base_gguf(base), None, n_ctx=1024)
    start, made = time.perf_counter(), 0
    for p in prompts:
        llm.reset()
        made += llm.create_completion(prompt=p, max_tokens=tokens, temperature=0.0)["usage"]["completion_tokens"]
    speeds["llama.cpp"] = made / (time.perf_counter() - start)
    print(f"greedy generation on the base model ({len(prompts)} open-ended prompts, up to {tokens} tokens): "
          f"transformers {speeds['transformers']:.1f} tokens/s, llama.cpp {speeds['llama.cpp']:.1f} tokens/s "
          f"({speeds['llama.cpp'] / speeds['transformers']:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("project", type=Path)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--decode-tokens", type=int, default=96)
    args = ap.parse_args()

    from taskfit.workflows import Workspace, eval_project
    from taskfit.evaluation.runner import read_predictions
    from taskfit.progress import RichReporter, Silent

    reporter = RichReporter()
    trained = eval_project(args.project, args.run, reporter)
    exported = eval_project(args.project, args.run, reporter, engine="llama-cpp")
    ev = Workspace.open(args.project, Silent(), allow_secrets=True)
    a = {p.example_id: p for p in read_predictions(ev.predictions(trained.candidate))}
    b = {p.example_id: p for p in read_predictions(ev.predictions(exported.candidate))}
    ids = [ex.id for ex in ev.eval_rows if ex.id in a and ex.id in b]
    same = sum(a[i].output == b[i].output for i in ids)
    gap = [abs(a[i].confidence - b[i].confidence) for i in ids if a[i].confidence is not None]
    for r, preds in ((trained, a), (exported, b)):
        lat = sorted(p.latency_s for p in preds.values())
        print(f"{r.candidate:16s} accuracy {100 * r.metrics['accuracy']:5.1f}%  latency p50 "
              f"{1000 * statistics.median(lat):.0f} ms, p95 {1000 * lat[int(0.95 * (len(lat) - 1))]:.0f} ms")
    print(f"same label on {same} of {len(ids)} held-out rows ({100 * same / len(ids):.1f}%; the goal is 98%); "
          f"confidence differs by {statistics.mean(gap):.3f} on average (max {max(gap):.3f})")
    _decode_speed(ev.config.model.name, args.decode_tokens)


if __name__ == "__main__":
    main()
