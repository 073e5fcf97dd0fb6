"""Scorecards on the shared public datasets: every applicable baseline and the fine-tuned model,
per task kind, through the same library calls as `taskfit baseline`, `train`, `eval`, `compare`.

    .venv/bin/python bench/scorecards.py clinc150          # classify, oos as the fallback
    .venv/bin/python bench/scorecards.py snips_slots       # extract
    .venv/bin/python bench/scorecards.py squad2_dev        # qa, with RAG over the held-out passages
    .venv/bin/python bench/scorecards.py bitext_support    # generate, house rules and style match
    .venv/bin/python bench/scorecards.py clinc150 --full   # every row (a GPU's job)
    .venv/bin/python bench/scorecards.py clinc150 --train 2000 --eval 500 --head --batch 8

`--head` trains a second fine-tune with `train.classify_head: true` (LoRA and a linear head over
the last token) after the generative one, so the scorecard has both; `--head-only` trains the head
alone. `--set KEY=VALUE` sets any other taskfit.yaml setting (`--set train.epochs=5`). `--batch N` sets
`eval.batch_size` (rows read together: faster, and each row's latency is then its batch's time
shared among its rows).

Declared before the clinc150 run of issue #16 (2,000 training rows, all 500 test rows, 1 epoch at
lr 1e-3 for both fine-tunes, `--head --batch 8`): the goal is a fine-tuned candidate (generative or
head) that beats embeddings-logreg on accuracy with p < 0.05 (McNemar, the scorecard's paired
test); where none does, the docs say by how much it falls short.

The default subset sizes are budgeted for a 2-core CPU (SmolLM2-135M trains ~100 tokens/s and
decodes ~10 tokens/s there) so that each scorecard finishes within an hour; they are printed with
the scorecard. `--train N --eval N` choose others. Each project is written under
bench/out/<dataset>/ and is an ordinary taskfit project: `taskfit compare bench/out/<dataset>`
shows its scorecard again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

# dataset -> (train rows, eval rows) on a 2-core CPU, from the speeds above.
CPU_SIZES = {"clinc150": (1000, 150), "snips_slots": (400, 100), "squad2_dev": (300, 120),
             "bitext_support": (300, 40)}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def project_doc(dataset: str, out: Path, train_n: int | None, eval_n: int | None) -> dict:
    src = DATA / dataset
    common = {"model": {"name": "smollm2-135m"},
              "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "eval_every": 50,
                        "metric_sample": 32},
              "baselines": {"few_shot_k": 4, "retriever": "hybrid"},
              "eval": {"generation_sample": 24}}
    data = {"train": str(src / "train.jsonl"), "eval": str(src / "test.jsonl"), "max_train_examples": train_n,
            "max_eval_examples": eval_n, "dedup": {"near": False}}
    if dataset == "clinc150":
        labels = sorted({r["label"] for r in _rows(src / "train.jsonl")})
        return {**common, "task": {
            "kind": "classify", "name": "clinc150", "labels": labels,
            "success": "A request lands on its intent, and out-of-scope requests on oos.",
            "system_prompt": "Name the intent of the user's request (oos when it is out of scope)."},
            "data": {**data, "columns": {"input": "text", "target": "label"}, "min_per_class": 1},
            "eval": {**common["eval"], "confidence_threshold": 0.2, "fallback": "oos",
                     "thresholds": {"accuracy": 0.8}}}
    if dataset == "snips_slots":
        keys = sorted({k for r in _rows(src / "train.jsonl") for k in r["fields"]})
        schema = {"type": "object", "additionalProperties": False,
                  "properties": {k: {"type": "string"} for k in keys}}
        return {**common, "task": {
            "kind": "extract", "name": "snips", "schema": schema,
            "success": "Every slot of a voice request lands in its field, and nothing is made up.",
            "system_prompt": "Extract the request's slots as a JSON object. Fields: " + ", ".join(keys) + "."},
            "data": {**data, "columns": {"input": "text", "target": "fields"}},
            "train": {**common["train"], "max_seq_length": 320},
            "eval": {**common["eval"], "max_new_tokens": 64, "thresholds": {"field_f1": 0.8, "valid_rate": 1.0}}}
    if dataset == "squad2_dev":
        docs = out / "docs"
        docs.mkdir(parents=True, exist_ok=True)
        for i, ctx in enumerate(dict.fromkeys(r["context"] for r in _rows(src / "test.jsonl"))):
            (docs / f"passage{i:04d}.txt").write_text(ctx, encoding="utf-8")
        return {**common, "task": {
            "kind": "qa", "name": "squad2",
            "success": "Answers come from the passage, and 'not enough evidence' when it holds none.",
            "system_prompt": "Answer the question with a short span from the context. If the context "
                             "does not answer it, reply: not enough evidence in the provided documents"},
            "data": {**data, "columns": {"input": "question", "target": "answer", "context": "context"},
                     "group_by": None},
            "train": {**common["train"], "max_seq_length": 448},
            "baselines": {**common["baselines"], "few_shot_k": 1, "documents": "docs", "chunk_words": 120,
                          "top_k": 2},
            "eval": {**common["eval"], "max_new_tokens": 24, "thresholds": {"f1": 0.5, "unsupported_rate": 0.1}}}
    if dataset == "bitext_support":
        return {**common, "task": {
            "kind": "generate", "name": "bitext",
            "success": "Replies read like the support team's own: polite, concrete, with next steps.",
            "system_prompt": "You are a customer support agent. Reply to the customer in our house style.",
            "reply": {"min_words": 20, "max_words": 220, "must_not_include": ["as an AI", "language model"]}},
            "data": {**data, "columns": {"input": "instruction", "target": "response"}},
            "train": {**common["train"], "max_seq_length": 320},
            "eval": {**common["eval"], "max_new_tokens": 200, "style_sample": 8,
                     "thresholds": {"format_compliance": 0.9, "style_match": 0.7}}}
    raise SystemExit(f"{dataset}: no scorecard recipe (choose from {', '.join(CPU_SIZES)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(CPU_SIZES))
    ap.add_argument("--full", action="store_true", help="every train and test row")
    ap.add_argument("--train", type=int, help="training rows (default: the CPU budget)")
    ap.add_argument("--eval", type=int, help="held-out rows (default: the CPU budget)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    ap.add_argument("--skip-train", action="store_true", help="baselines only")
    ap.add_argument("--head", action="store_true", help="classify: also train and score a head fine-tune")
    ap.add_argument("--batch", type=int, help="eval.batch_size (rows read together)")
    ap.add_argument("--head-only", action="store_true",
                    help="classify: train and score only the head fine-tune (not the generative one)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any taskfit.yaml setting, dotted (train.epochs=5); the value is read as YAML")
    ap.add_argument("--config-only", action="store_true",
                    help="write the project's taskfit.yaml and stop (what bench/label_scoring.py reads)")
    args = ap.parse_args()
    if not (DATA / args.dataset).exists():
        raise SystemExit(f"{DATA / args.dataset}: not found (the shared datasets live in ../shared/data)")
    from taskfit.workflows import baseline_project, compare_project, eval_project
    from taskfit.workflows import train_project
    from taskfit.progress import RichReporter

    train_n, eval_n = (None, None) if args.full else CPU_SIZES[args.dataset]
    train_n, eval_n = args.train or train_n, args.eval or eval_n
    out = args.out / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    doc = project_doc(args.dataset, out, train_n, eval_n)
    if args.batch:
        doc["eval"]["batch_size"] = args.batch
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item}: write KEY=VALUE, e.g. train.epochs=5")
        *path, leaf = key.split(".")
        node = doc
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    if args.head_only:
        if args.dataset != "clinc150":
            raise SystemExit("--head-only: a classification head is for classify datasets (clinc150)")
        doc["train"]["classify_head"] = True
    (out / "taskfit.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    if args.config_only:
        print(f"wrote {out / 'taskfit.yaml'}")
        return
    reporter = RichReporter()
    timings = {}
    start = time.perf_counter()
    baseline_project(out, reporter=reporter)
    timings["baselines"] = time.perf_counter() - start
    def fine_tune(name: str) -> None:
        start = time.perf_counter()
        run = train_project(out, reporter=reporter).run_dir
        timings[f"{name} training"] = time.perf_counter() - start
        start = time.perf_counter()
        eval_project(out, run, reporter=reporter)
        timings[f"{name} eval"] = time.perf_counter() - start

    if not args.skip_train:
        if args.head_only:
            fine_tune("head")
        else:
            fine_tune("fine-tuned")
        if args.head and not args.head_only:
            doc["train"]["classify_head"] = True
            (out / "taskfit.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
            fine_tune("head")
    result = compare_project(out, reporter=reporter)
    print(f"\n## {args.dataset}: {train_n or 'all'} train rows, {eval_n or 'all'} held-out rows\n")
    print("\n".join(result.scorecard.markdown()))
    print(f"\n{result.scorecard.verdict}")
    for w in result.scorecard.warnings:
        print(f"warning: {w}")
    print("\ntimings: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()))
    print(f"report: {result.report_html}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
