"""llama.cpp label scoring: every label in one batched decode (today's `LlamaCppScorer`) against
one label token at a time (the scorer before it, kept below as `one_label_at_a_time`), on the same
prompts with the same GGUF, in one run.

    bash scripts/setup.sh --tests        # builds llama-cpp-python
    .venv/bin/python bench/llama_label_scoring.py                      # quickstart queues and clinc150
    .venv/bin/python bench/llama_label_scoring.py --rows 40 --repeat 3
    .venv/bin/python bench/llama_label_scoring.py --exact --repeat 1   # also against float32 scores

Two taxonomies: the quickstart's 8 queues on its generated tickets, and clinc150's 151 intents on
its test file's first rows (where ../shared/data/clinc150 exists). The model is the embedded
SmolLM2-135M's GGUF with a random LoRA exported as GGUF (as served adapters run; both sides
score every label, so their work does not depend on what the adapter learnt). The sides take turns
row by row, --repeat times through the rows, each time starting with the other side; a side's
figure is its fastest time through the rows, in examples/s of wall-clock time and of this
process's CPU time. Each side scores one row untimed first. Printed per taxonomy: both sides'
examples/s, the ratio, whether the best label is the same on every row, and the largest
difference between the two sides' log-probabilities. ``--exact`` also computes every label's
log-probability in float32 with transformers on the same weights and adapter (the evaluation's
label scorer with no tolerance, so every label is read; the embedded model's
safetensors are the GGUF's weights converted to float32, so only the arithmetic differs) and prints
how far each side is from it.

Declared before measuring (issue #19.3, "scores all label tokens of a request in one batched
decode"), on the 2-core reference machine with nothing else running, --rows 40 --repeat 3: the
batched scorer at least 2x the examples/s of one label at a time on clinc150's 151 labels and at
least 1.5x on the quickstart's 8 queues, the same best label on every row, log-probabilities
within 0.02 of each other.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

CLINC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clinc150"


def one_label_at_a_time(scorer: Any, prompt: list[int]) -> list[float]:
    """The llama.cpp label scoring before the batched decode: the prompt read afresh, then each
    label's tokens one call at a time from the prompt's cache (the scorer's own context)."""
    from taskfit.baselines.llama_cpp import _last_logits

    llm = scorer.llm
    llm.reset()
    llm.eval(prompt)
    n = len(prompt)
    first = _last_logits(llm)
    totals = []
    for completion in scorer.completions:
        total = float(first[completion[0]])
        llm.n_tokens = n
        for token, following in zip(completion, completion[1:]):
            llm.eval([token])
            total += float(_last_logits(llm)[following])
        totals.append(total)
    return totals


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _taxonomies(rows: int) -> list[tuple[str, list[str], list[str], str]]:
    """(name, labels, inputs, system prompt) for each taxonomy."""
    from taskfit.data.sample import QUEUES, generate_tickets

    tickets = generate_tickets(n=rows * 4, seed=0)[:rows]
    found = [("quickstart queues", list(QUEUES), [t["messages"][0]["content"] for t in tickets],
              "Route the support ticket to the one queue that should handle it.")]
    if (CLINC / "test.jsonl").exists():
        train = [json.loads(line) for line in (CLINC / "train.jsonl").open(encoding="utf-8")]
        test = [json.loads(line) for line in (CLINC / "test.jsonl").open(encoding="utf-8")][:rows]
        found.append(("clinc150 intents", sorted({r["label"] for r in train}), [r["text"] for r in test],
                      "Name the intent of the user's request."))
    else:
        print(f"(no {CLINC}: clinc150 left out)")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--exact", action="store_true", help="also compare each side with float32 scores (transformers)")
    args = ap.parse_args()

    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model

    from taskfit.baselines.llama_cpp import LlamaCppScorer, load_llama
    from taskfit.config import TaskSpec
    from taskfit.models import load_model
    from taskfit.records import Example
    from taskfit.training.gguf_lora import base_gguf, export_gguf_lora

    lm = load_model("smollm2-135m")
    torch.manual_seed(0)
    model = get_peft_model(lm.model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                init_lora_weights=False))
    run = Path(tempfile.mkdtemp()) / "run"
    model.save_pretrained(run / "adapter")
    (run / "manifest.json").write_text(json.dumps({"model": {"name": "smollm2-135m"}}))
    llm = load_llama(base_gguf("smollm2-135m"), export_gguf_lora(run) / "adapter.gguf", n_ctx=2048)

    for name, labels, inputs, system in _taxonomies(args.rows):
        task = TaskSpec(kind="classify", success="the right label", system_prompt=system, labels=labels)
        scorer = LlamaCppScorer(llm, lm.tokenizer, task, 512)
        prompts = [scorer.prompt_ids(Example(id=str(i), input=text, target=labels[0]))
                   for i, text in enumerate(inputs)]
        sides = {"one batched decode": scorer.scores, "one label token at a time": lambda p: one_label_at_a_time(scorer, p)}
        for side in sides.values():
            side(prompts[0])  # untimed: the first call's set-up
        best: dict[str, tuple[float, float]] = {}
        scores: dict[str, list[list[float]]] = {}
        order = list(sides)
        for turn in range(args.repeat):
            spent = {s: [0.0, 0.0] for s in sides}
            got: dict[str, list[list[float]]] = {s: [] for s in sides}
            for prompt in prompts:
                for s in order[turn % 2:] + order[:turn % 2]:
                    wall, cpu = time.perf_counter(), _cpu()
                    got[s].append(sides[s](prompt))
                    spent[s][0] += time.perf_counter() - wall
                    spent[s][1] += _cpu() - cpu
            for s in sides:
                if s not in best or spent[s][0] < best[s][0]:
                    best[s] = (spent[s][0], spent[s][1])
            scores = got
        batched, alone = (np.array(scores[s]) for s in order)
        same = int((batched.argmax(1) == alone.argmax(1)).sum())
        rate = {s: len(prompts) / best[s][0] for s in sides}
        print(f"\n{name}: {len(labels)} labels, {len(prompts)} rows, prompts of {np.mean([len(p) for p in prompts]):.0f} "
              f"tokens on average, label completions of {sum(map(len, scorer.completions))} tokens in all")
        for s in sides:
            print(f"  {s:28s} {rate[s]:6.2f} examples/s  {len(prompts) / best[s][1]:6.2f} examples/CPU s")
        print(f"  ratio {rate[order[0]] / rate[order[1]]:.2f}x; same best label on {same}/{len(prompts)} rows; "
              f"largest log-probability difference {np.abs(batched - alone).max():.4f}")
        if args.exact:
            from taskfit.baselines import LabelScoringPredictor

            full = LabelScoringPredictor("float32", model.eval(), lm.tokenizer, task, 512, tolerance=0.0)
            exact = np.array([[found.totals[j] for j in range(len(labels))]  # tolerance 0: every label read
                              for found in (full.search([p])[0] for p in prompts)])
            lead = np.sort(exact, 1)
            lead = lead[:, -1] - lead[:, -2]
            print(f"  float32 (transformers): the best label leads the second by {np.median(lead):.2f} nats "
                  f"(median), {lead.min():.2f} at least")
            for s, got in zip(order, (batched, alone)):
                gap = np.abs(got - exact)
                print(f"  {s:28s} same best label as float32 on {int((got.argmax(1) == exact.argmax(1)).sum())}"
                      f"/{len(prompts)} rows; difference from float32 {gap.mean():.2f} mean, {gap.max():.2f} largest")
        scorer.close()
    llm.close()


if __name__ == "__main__":
    main()
