"""Label scoring against the label scoring before issue #16 and against free generation, on the
same classification rows with the same model, in one run.

    .venv/bin/python bench/label_scoring.py bench/out/clinc150 --run bench/out/clinc150/runs/<run> --rows 60
    .venv/bin/python bench/label_scoring.py bench/out/clinc150 --rows 16 --batch 16 --repeat 3   # base model

bench/out/clinc150 is the clinc150 scorecard's project: `bench/scorecards.py clinc150 --train 2000
--eval 500 --config-only` writes its taskfit.yaml (all this script reads), without running anything.

Every side reads the same rendered prompts (the first --rows held-out rows); the sides take turns,
--batch rows each, so that a load drifting during the run weighs on all alike, and --repeat N goes
through the rows N times, each time starting with the next side; a side's figure is its fastest
time through the rows (the one least slowed by other jobs on a shared machine), in wall-clock
seconds (the declared measure) and in this process's CPU seconds (steadier when other jobs take
turns on the cores, but it counts the threads' waiting too). Each side first answers one row
untimed, so that no side pays for the first forward pass's set-up. Without --run the base model
is used. The forward passes and tokens the
batched label scoring and full scoring fed are counted in one more, untimed, run of each; and from
full scoring's log-probabilities of every node, the nodes a search that reads one node a step,
always the likeliest it needs (no read-ahead, no batching), reads before it may stop: what reading
ahead in batched steps is to be compared with.

Every side computes as taskfit evaluates on this machine (`train.dtype`: bfloat16 autocast where the
CPU multiplies bfloat16 natively), except the scoring before #16, which ran in float32 then; where
the two differ, the scoring before #16 in taskfit's precision is one more side, so the search's own
gain is seen apart from the precision's.

- label scoring: the prefix-tree search of :mod:`taskfit.baselines.label_tree` (exact argmax,
  confidence at most 0.01 below the exact one), --batch rows at a time, and one row at a time;
- label scoring before #16: best-first by first token, a deep copy of the prompt's cache per
  label-length group, one row at a time (the algorithm as it was, kept below as `BeforeScoring`);
- full scoring: every label's exact log-probability (the tree read whole), --batch rows at a
  time: the reference the predictions are compared with;
- free generation: greedy, up to the longest label plus 3 tokens, right only when its text is
  exactly the gold label; one row at a time (the default `eval.batch_size: 1`, as the table
  before #16 measured it), and --batch rows at a time;
- choice grammar: greedy under llguidance held to the label list, --batch rows at a time.

Declared before measuring (issue #16), on clinc150 with --rows 60 --batch 16: label scoring at
--batch rows reaches at least 5x the examples/s of label scoring before #16 and at least 2x the
examples/s of free generation one row at a time, and its predictions are identical to full
scoring's. Free generation at the same --batch is printed beside it, without a target, so that
the ratio at equal batching is seen too. Measured with a fine-tuned clinc150 run (the model the
issue's figures came from) and with the base model, each in its own run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from pathlib import Path
from typing import Any, Sequence

FIRST_WAVE = 8  # before #16: labels in the first best-first scoring wave


def before_scoring(base: type) -> type:
    """Label scoring as it was before #16 (a subclass of ``LabelPrompts``, given as ``base`` so
    that nothing is imported before the command line is read)."""
    from taskfit.baselines.label_tree import label_choice
    from taskfit.models.compat import cache_arg, cache_of

    class BeforeScoring(base):
        def __init__(self, model: Any, tokenizer: Any, task: Any, max_length: int):
            super().__init__(tokenizer, task, max_length)
            self.name, self.model = "before", model

        def choose(self, prompts: Sequence[list[int]]) -> list[Any]:
            return [label_choice(self.scores(p)) for p in prompts]

        def scores(self, prompt: list[int]) -> list[float]:
            import torch

            with torch.inference_mode():
                device = self.model.get_output_embeddings().weight.device
                out = self.model(torch.tensor([prompt], device=device), use_cache=True)
                first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
                totals = [float(first[c[0]]) for c in self.completions]
                groups: dict[int, list[int]] = {}
                for i, c in enumerate(self.completions):
                    groups.setdefault(c[0], []).append(i)
                order = sorted(groups, key=lambda t: -float(first[t]))
                end = 0
                while end < len(order) and sum(len(groups[t]) for t in order[:end]) < FIRST_WAVE:
                    end += 1
                best = float("-inf")
                for wave in (order[:end], order[end:]):
                    members = [i for t in wave if float(first[t]) >= best for i in groups[t]]
                    if not members:
                        break
                    for i, extra in zip(members, self._continue(cache_of(out), members, device)):
                        totals[i] += extra
                    best = max(best, *(totals[i] for i in members))
            return totals

        def _continue(self, cache: Any, members: list[int], device: Any) -> list[float]:
            import torch

            sums = {i: 0.0 for i in members}
            by_length: dict[int, list[int]] = {}
            for i in members:
                if len(self.completions[i]) > 1:
                    by_length.setdefault(len(self.completions[i]), []).append(i)
            for length, rows in sorted(by_length.items()):
                batch = torch.tensor([self.completions[i][:-1] for i in rows], device=device)
                repeated = copy.deepcopy(cache)
                repeated.batch_repeat_interleave(len(rows))
                logp = torch.log_softmax(self.model(batch, **{cache_arg(): repeated}).logits.float(), dim=-1)
                targets = torch.tensor([self.completions[i][1:] for i in rows], device=device)
                picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(dim=-1)
                for row, i in enumerate(rows):
                    sums[i] = float(picked[row])
            return [sums[i] for i in members]

    return BeforeScoring


def one_node_a_step(scorer: Any, prompts: Sequence[list[int]]) -> int:
    """The nodes a search reading one node a step reads after ``prompts`` with ``scorer``'s
    tolerance, replayed from every node's log-probabilities (full scoring's)."""
    from unittest import mock

    from taskfit.baselines import label_tree

    tree, tok = scorer.tree, scorer.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batch = label_tree._Batch(scorer.model, tree, prompts, pad, {})
    given: list[dict[int, list[float]]] = [{} for _ in prompts]

    def record(live: list[int], reads: list[list[int]]) -> list[list[list[float]]]:
        values = batch(live, reads)
        for i, nodes, row in zip(live, reads, values):
            given[i].update(zip(nodes, row))
        return values

    label_tree.run(tree, batch.first, record, 0.0)
    read = 0
    with mock.patch.multiple(label_tree, STEP_TOKENS=1, NEED_TOKENS=1, READ_AHEAD_TOKENS=1):
        for i in range(len(prompts)):
            def replay(live: list[int], reads: list[list[int]]) -> list[list[list[float]]]:
                nonlocal read
                read += len(reads[0])
                return [[given[i][v] for v in reads[0]]]
            label_tree.run(tree, [batch.first[i]], replay, scorer.tolerance)
    return read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("project", type=Path)
    ap.add_argument("--run", type=Path, help="a trained run (default: the base model)")
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16, help="rows read together by the batched sides")
    ap.add_argument("--repeat", type=int, default=1, help="times through the rows, the sides taking turns")
    args = ap.parse_args()

    from taskfit.baselines.model import GenerativePredictor, LabelPrompts, LabelScoringPredictor
    from taskfit.progress import RichReporter
    from taskfit.tasks.classify import label_budget
    from taskfit.workflows import Workspace
    from taskfit.workflows.evaluate import trained_candidate

    ev = Workspace.open(args.project, RichReporter(), allow_secrets=True)
    rows = ev.held_out[: args.rows]
    model = trained_candidate(ev, args.run).build().model if args.run else ev.lm().model
    tok, task, max_len, b = ev.tokenizer, ev.config.task, ev.config.train.max_seq_length, args.batch
    budget = label_budget(tok, task)
    precision = ev.hardware.precision  # what taskfit evaluates in on this machine (train.dtype)
    before = "label scoring before #16, batch 1"
    sides = {
        f"label scoring, prefix tree, batch {b}": LabelScoringPredictor("tree", model, tok, task, max_len, batch_size=b),
        "label scoring, prefix tree, batch 1": LabelScoringPredictor("tree1", model, tok, task, max_len),
        before: before_scoring(LabelPrompts)(model, tok, task, max_len),
        f"full scoring (every label), batch {b}": LabelScoringPredictor("full", model, tok, task, max_len,
                                                                       batch_size=b, tolerance=0.0),
        "free generation, batch 1": GenerativePredictor("free", model, tok, task, max_len, budget),
        f"free generation, batch {b}": GenerativePredictor("free", model, tok, task, max_len, budget, batch_size=b),
        f"choice grammar, batch {b}": GenerativePredictor("choice", model, tok, task, max_len, budget,
                                                           constrained=True, batch_size=b),
    }
    # Every side computes as taskfit evaluates on this machine, except the scoring before #16,
    # which ran in float32 then; where that differs, the scoring before #16 in taskfit's
    # precision is a side too, so that the search's own gain is seen apart from the precision's.
    in_float32 = {before} if precision != "float32" else set()
    if in_float32:
        sides[f"{before}, {precision}"] = before_scoring(LabelPrompts)(model, tok, task, max_len)

    def computing(name: str) -> Any:
        return contextlib.nullcontext() if name in in_float32 else ev.hardware.computing()

    for name, predictor in sides.items():  # untimed: the first pass's set-up is no side's cost
        with computing(name):
            list(predictor.predict(rows[:1]))
    # The sides take turns, --batch rows each, so that a load that drifts during the run (a
    # shared machine) weighs on every side alike and the ratios stay fair; each time through the
    # rows starts with the next side, and a side's figure is its fastest time through them.
    wall = {name: [0.0] * args.repeat for name in sides}
    cpu = {name: [0.0] * args.repeat for name in sides}
    preds: dict[str, list] = {name: [] for name in sides}
    names = list(sides)
    for rep in range(args.repeat):
        for at in range(0, len(rows), b):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                start, used = time.perf_counter(), time.process_time()
                with computing(name):
                    answers = list(sides[name].predict(rows[at:at + b]))
                wall[name][rep] += time.perf_counter() - start
                cpu[name][rep] += time.process_time() - used
                if rep == 0:
                    preds[name] += answers
            print(f"  {rep + 1}/{args.repeat}, {min(at + b, len(rows))}/{len(rows)} rows: "
                  + ", ".join(f"{name} {w[rep]:.0f} s" for name, w in wall.items()), flush=True)
    speed = {name: len(rows) / min(w) for name, w in wall.items()}
    cpu_speed = {name: len(rows) / min(c) for name, c in cpu.items()}
    lines = [(name, sum(p.output == ex.target for p, ex in zip(preds[name], rows)), sum(p.valid for p in preds[name]))
             for name in sides]
    full = preds[f"full scoring (every label), batch {b}"]
    print("\n| decoding | examples / s | examples / CPU s | accuracy | valid labels | same label as full scoring |")
    print("|---|---|---|---|---|---|")
    for name, right, valid in lines:
        same = sum(p.output == f.output for p, f in zip(preds[name], full))
        print(f"| {name} | {speed[name]:.2f} | {cpu_speed[name]:.3f} | {100 * right / len(rows):.1f}% | {100 * valid / len(rows):.0f}% "
              f"| {same}/{len(rows)} |")
    tree, old = preds[f"label scoring, prefix tree, batch {b}"], preds[before]
    gap = {k: max(f.confidence - p.confidence for p, f in zip(v, full)) for k, v in (("now", tree), ("before", old))}
    print(f"\nmodel: {'run ' + args.run.name if args.run else 'base model'}; {len(task.labels or [])} labels; "
          f"{len(rows)} rows; fastest of {args.repeat} times through them; every side in {precision}"
          + (f" except {before} (float32, as it ran then)" if in_float32 else ""))
    for unit, per in (("examples/s", speed), ("examples/CPU s", cpu_speed)):
        new = per[f"label scoring, prefix tree, batch {b}"]
        print(f"in {unit}: label scoring (batch {b}) / before #16: {new / per['label scoring before #16, batch 1']:.2f}x "
              f"(target 5x); / free generation, batch 1: {new / per['free generation, batch 1']:.2f}x (target 2x); "
              f"/ free generation, batch {b}: {new / per[f'free generation, batch {b}']:.2f}x; "
              f"/ full scoring: {new / per[f'full scoring (every label), batch {b}']:.2f}x"
              + (f"; / before #16 in {precision}: {new / per[f'{before}, {precision}']:.2f}x" if in_float32 else ""))
    for name in (f"label scoring, prefix tree, batch {b}", f"full scoring (every label), batch {b}"):
        stats: dict[str, int] = {}
        scorer = sides[name]
        with computing(name):
            for at in range(0, len(rows), b):
                scorer.search([scorer.prompt_ids(ex) for ex in rows[at:at + b]], stats)
        print(f"{name}: {stats['passes']} forward passes, {stats['tokens']} tokens fed (prompts and padding included)")
    scorer = sides[f"label scoring, prefix tree, batch {b}"]
    with computing(f"label scoring, prefix tree, batch {b}"):
        fewest = sum(one_node_a_step(scorer, [scorer.prompt_ids(ex) for ex in rows[at:at + b]])
                     for at in range(0, len(rows), b))
    print(f"nodes an exact search reading one node a step reads for these rows: {fewest} "
          f"({fewest / len(rows):.0f} a row, of {sum(1 for c in scorer.tree.children[1:] if c)} in the tree)")
    print(f"predictions identical to full scoring: {all(p.output == f.output for p, f in zip(tree, full))} "
          f"(before #16: {all(p.output == f.output for p, f in zip(old, full))}); largest confidence "
          f"below the exact one: {gap['now']:.4f} (before #16: {gap['before']:.4f})")


if __name__ == "__main__":
    main()
