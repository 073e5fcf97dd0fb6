"""Constrained decoding with the tokens a grammar forces read together, against a pass a token.

    .venv/bin/python bench/scorecards.py snips_slots --config-only   # writes bench/out/snips_slots/taskfit.yaml
    .venv/bin/python bench/forced_tokens.py bench/out/snips_slots --rows 16 --repeat 2

Where a JSON schema leaves one token possible (a key after the opening quote, its closing quote
and colon, the end of the reply after the last brace), :class:`taskfit.decoding.Decoder` takes it
without running the model and reads it with the token picked before it
(:meth:`taskfit.decoding.Row.take_forced`). This measures what that saves on an extract project's
prompt-only candidate (the project's own model, prompts and answer grammar, as `taskfit eval`
decodes them), on its first ``--rows`` held-out rows, under two schemas: the project's own, and
the same fields all required and nullable (every key then forced, as in a schema whose fields a
record always carries). Each is decoded one row at a time (a lone served request) and
``eval.batch_size`` rows at a time, with the forced tokens taken and with a pass for every token
(the code path before: ``take_forced`` switched off), the two taking turns ``--repeat`` times;
printed per side: model passes, the fastest wall time, the ratio, and whether the answers are the
same row for row.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("project", type=Path)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    from taskfit.baselines.model import GenerativePredictor
    from taskfit.decoding import Row
    from taskfit.progress import RichReporter
    from taskfit.workflows import Workspace

    ev = Workspace.open(args.project, RichReporter(), allow_secrets=True)
    task, tok, cfg = ev.config.task, ev.tokenizer, ev.config
    if task.kind != "extract":
        raise SystemExit(f"{args.project}: an extract project is needed (this one is {task.kind})")
    rows = ev.held_out[: args.rows]
    model = ev.lm().model
    ev.hardware.hold(model)
    fields = task.schema_["properties"]
    required = {**task.schema_, "required": list(fields),
                "properties": {k: {**v, "type": [v.get("type", "string"), "null"]} for k, v in fields.items()}}
    schemas = {"the project's schema": task, "every field required, nullable": task.model_copy(
        update={"schema_": required})}
    passes = [0]
    model.register_forward_pre_hook(lambda module, a: passes.__setitem__(0, passes[0] + 1))

    @contextlib.contextmanager
    def forced(on: bool) -> Any:
        if on:
            yield
            return
        original = Row.take_forced
        Row.take_forced = lambda self, *a: ""  # a pass for every token, as before
        try:
            yield
        finally:
            Row.take_forced = original

    batch = cfg.eval.batch_size
    print(f"{args.project}: {len(rows)} held-out rows, {len(fields)} fields, max_new_tokens "
          f"{cfg.eval.max_new_tokens}, {ev.hardware.precision}")
    for schema_name, schema_task in schemas.items():
        for size in (1, batch):
            predictor = GenerativePredictor("prompt-only", model, tok, schema_task, cfg.train.max_seq_length,
                                            cfg.eval.max_new_tokens, constrained=True, batch_size=size)
            with ev.hardware.computing():
                list(predictor.predict(rows[:1]))  # untimed: the first pass's set-up
            seconds: dict[bool, list[float]] = {True: [], False: []}
            answers: dict[bool, list[Any]] = {}
            counted: dict[bool, int] = {}
            for k in range(args.repeat):
                for on in ((True, False) if k % 2 == 0 else (False, True)):
                    passes[0] = 0
                    start = time.perf_counter()
                    with forced(on), ev.hardware.computing():
                        answers[on] = [(p.output, p.completion_tokens) for p in predictor.predict(rows)]
                    seconds[on].append(time.perf_counter() - start)
                    counted[on] = passes[0]
            same = sum(a == b for a, b in zip(answers[True], answers[False]))
            tokens = sum(t for _, t in answers[True])
            fast, slow = min(seconds[True]), min(seconds[False])
            print(f"{schema_name}, {size} row{'s' if size > 1 else ''} at a time: {tokens} answer tokens; "
                  f"a pass a token {counted[False]} passes, {slow:.1f} s; forced tokens read together "
                  f"{counted[True]} passes, {fast:.1f} s: {fast / slow:.2f}x the time; the same answer on "
                  f"{same} of {len(rows)} rows")


if __name__ == "__main__":
    main()
