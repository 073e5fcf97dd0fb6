"""Schema-held JSON against its token budget: how many records come out whole.

On the first ``--rows`` requests of snips' restaurant bookings (``bookrestaurant_test.jsonl`` in
``../shared/data/snips_slots``: 14 fields, every one required and nullable), the embedded model
is asked, prompt-only and greedy, 8 rows a batch, for the record at each ``--budget``; printed
per budget: the shortest record's tokens (every field null), records that parse with every key,
mean tokens, finish reasons, nulls and empty strings written, and seconds a record.

    PYTHONPATH=src .venv/bin/python bench/json_budget.py --budget 96 160

The code path before the shortest-finish closing (it closed only in the budget's last 16 steps)
is measured by running this same script in a checkout of 4bf7e18
(``git worktree add /tmp/before 4bf7e18 && cp bench/json_budget.py /tmp/before/bench/``);
its shortest-record column then reads n/a.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "snips_slots" / "bookrestaurant_test.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, nargs="+", default=[96, 160])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()

    from taskfit import decoding
    from taskfit.decoding import Sampling, decode_batch, json_schema_grammar
    from taskfit.models import load_model

    rows = [json.loads(line) for line in args.data.read_text().splitlines()[: args.rows]]
    keys = list(rows[0]["fields"])
    schema = {"type": "object", "additionalProperties": False, "required": keys,
              "properties": {k: {"type": ["string", "null"]} for k in keys}}
    grammar = json_schema_grammar(schema)
    lm = load_model("smollm2-135m")
    tok = lm.tokenizer
    system = ("Extract the fields the text mentions as one JSON object; fields the text does not mention are "
              f"null. Fields: {', '.join(keys)}.")
    prompts = [tok(tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": r["text"]}],
                                           add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"]
               for r in rows]
    shortest = decoding.shortest_answer(tok, grammar) if hasattr(decoding, "shortest_answer") else "n/a"
    print(f"{'budget':>6} | {'shortest':>8} | {'whole':>6} | {'tokens':>6} | {'stop/length':>11} | {'nulls':>5} | "
          f"{'empty':>5} | s/record")
    for budget in args.budget:
        start, outs = time.perf_counter(), []
        for i in range(0, len(prompts), 8):
            part = prompts[i:i + 8]
            outs += decode_batch(lm.model, tok, part, [Sampling(max_tokens=budget, grammar=grammar)] * len(part))
        seconds = (time.perf_counter() - start) / len(outs)
        whole = nulls = empty = 0
        for out in outs:
            try:
                record = json.loads(out.text)
            except ValueError:
                continue
            whole += all(k in record for k in keys)
            nulls += sum(v is None for v in record.values())
            empty += sum(v == "" for v in record.values())
        finish = f"{sum(o.finish_reason == 'stop' for o in outs)}/{sum(o.finish_reason == 'length' for o in outs)}"
        print(f"{budget:>6} | {shortest:>8} | {whole:>3}/{len(outs):<2} | "
              f"{sum(o.completion_tokens for o in outs) / len(outs):>6.1f} | {finish:>11} | {nulls:>5} | {empty:>5} | "
              f"{seconds:.2f}")


if __name__ == "__main__":
    main()
