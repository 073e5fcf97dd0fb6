"""Benchmark: what `taskfit data check` keeps and removes on the shared datasets, with any checkout.

For each public dataset in ../shared/data it proposes a project from the train file, as
`taskfit init DIR --from FILE` does, checks it as `taskfit data check DIR --no-tokens` does
(timed: CPU seconds of the check, steadier than wall time on a shared machine), and prints rows
read, kept, exact duplicates, near-duplicates
removed, conflicts and look-alikes kept as distinct examples ("-" where the checkout does not
count them); then the same on the documents corpus of bench/documents_corpus.py (receipts of 15
shops with true copies of them, as an extract and a classify task). Run it with the checkout to measure first on the path, to compare two:

    PYTHONPATH=src .venv/bin/python bench/near_duplicates.py                   # this checkout
    git archive main | tar -x -C /tmp/main
    PYTHONPATH=/tmp/main/src .venv/bin/python bench/near_duplicates.py         # main
    ... --shared DIR                                                           # the datasets in DIR
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SETS = ["clinc150", "snips_slots", "squad2_dev", "bitext_support", "hh_rlhf_harmless"]


def checked(shared: Path, name: str, tmp: Path, **dedup: Any) -> tuple[Any, Any, float]:
    """(config, data card, seconds the check took) for one shared dataset, its project proposed
    in ``tmp``; ``dedup`` overrides data.dedup settings."""
    from taskfit.config import load_config
    from taskfit.data.prepare import check_data
    from taskfit.project import init_from_file

    init_from_file(tmp, shared / name / "train.jsonl")
    config = load_config(tmp)
    if dedup:
        data = config.data.model_copy(update={"dedup": config.data.dedup.model_copy(update=dedup)})
        config = config.model_copy(update={"data": data})
    start = time.process_time()
    card = check_data(config, tmp)
    return config, card, time.process_time() - start


def corpus() -> None:
    """The same counts on the documents corpus: 300 receipts of 15 shops with 20 true copies of
    them, as an extract task (company, date, address, total) and, with the 400 documents of
    documents(400) (14 true copies), as a classify task (the document's kind)."""
    import json
    import yaml

    from documents_corpus import DOC_KINDS, copies, documents, shop_receipts
    from taskfit.config import load_config
    from taskfit.data.prepare import check_data

    receipts = shop_receipts(300, shops=15)
    receipts += copies(receipts, 20)
    fields = ["company", "date", "address", "total"]
    runs = {"receipts (extract)": ({"kind": "extract", "schema": {"type": "object", "properties": {
                k: {"type": "string"} for k in fields}}}, receipts, lambda d: d.answer),
            "receipts + documents(400) (classify)": ({"kind": "classify", "labels": list(DOC_KINDS)},
                                                     receipts + documents(400), lambda d: d.kind)}
    for name, (task, docs, answer) in runs.items():
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "train.jsonl").write_text("".join(json.dumps({"text": d.text, "answer": answer(d)}) + "\n"
                                                     for d in docs), encoding="utf-8")
            (tmp / "taskfit.yaml").write_text(yaml.safe_dump({
                "task": {**task, "success": "s", "system_prompt": "Read the document."},
                "data": {"train": "train.jsonl", "columns": {"input": "text", "target": "answer"}}}))
            start = time.process_time()
            card = check_data(load_config(tmp), tmp)
            seconds = time.process_time() - start
        c = card.counts
        print(f"| {name}: {sum(d.copy_of is not None for d in docs)} true copies | {card.kind} | {c['read']} | "
              f"{c['kept']} | {c['exact_duplicates']} | {c['near_duplicates']} | {c['conflicting_labels']} | "
              f"{c.get('distinct_look_alikes', '-')} | {seconds:.1f} |")


def main() -> None:
    import taskfit

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    if not args.shared.exists():
        raise SystemExit(f"{args.shared} is absent: name the shared datasets' folder with --shared DIR")
    sys.path.insert(0, str(ROOT / "bench"))
    print(f"taskfit from {Path(taskfit.__file__).parent}")
    print("| dataset | kind | read | kept | exact dup. | near-dup. removed | conflicts | look-alikes kept | check (CPU s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in SETS:
        with tempfile.TemporaryDirectory() as tmp:
            _, card, seconds = checked(args.shared, name, Path(tmp))
        c = card.counts
        print(f"| {name} | {card.kind} | {c['read']} | {c['kept']} | {c['exact_duplicates']} | {c['near_duplicates']} "
              f"| {c['conflicting_labels']} | {c.get('distinct_look_alikes', '-')} | {seconds:.1f} |")
    corpus()


if __name__ == "__main__":
    main()
