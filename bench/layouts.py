"""Benchmark: look-alikes and layouts (templates) on the shared datasets and on generated receipts.

For each public dataset in ../shared/data it checks the project `taskfit init DIR --from FILE`
proposes (as bench/near_duplicates.py does, which prints what is kept and removed) and prints the
layouts with two rows or more at several values of data.dedup.template.

On receipts of four shops, generated as tests/unit/test_lookalikes.py generates them (one shop's
receipts share a layout; the four share a 200-character disclaimer), it prints the estimated
similarity of two receipts of one shop and of two shops, with and without a long body of item
lines, and, over 20 seeds, how often a layout mixes two shops or a shop is split in two, for
several values of data.dedup.template.

    .venv/bin/python bench/layouts.py                      # the datasets in ../shared/data
    .venv/bin/python bench/layouts.py --shared DIR         # the datasets in DIR
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = ["clinc150", "snips_slots", "squad2_dev", "bitext_support", "hh_rlhf_harmless"]
THRESHOLDS = [0.6, 0.65, 0.7]


def shared_sets(shared: Path) -> None:
    from near_duplicates import SETS, checked

    print("| dataset | kind | " + " | ".join(f"layouts 2+ at {t} (rows, largest)" for t in THRESHOLDS) + " |")
    print("|---" * (2 + len(THRESHOLDS)) + "|")
    for name in SETS:
        layouts = []
        for t in THRESHOLDS:
            with tempfile.TemporaryDirectory() as tmp:
                _, card, _ = checked(shared, name, Path(tmp), template=t)
            top = card.templates["top"]
            layouts.append(f"{card.templates['layouts']} ({card.templates['rows_in_layouts']}, "
                           f"{top[0]['rows'] if top else 0})")
        print(f"| {name} | {card.kind} | " + " | ".join(layouts) + " |")


def long_receipt(row: dict, rng: random.Random, extra: int) -> str:
    """The receipt with ``extra`` more item lines of made-up product names after its first item."""
    word = lambda a, b: "".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVW") for _ in range(rng.randint(a, b)))  # noqa: E731
    lines = row["text"].split("\n")
    items = [f"{word(5, 12)} {word(3, 8)}  {rng.randint(100, 2500) / 100:.2f}" for _ in range(extra)]
    return "\n".join(lines[:6] + items + lines[6:])


def receipts_similarity() -> None:
    from taskfit.data.lookalike import MinHashIndex, mask, normalise
    from test_lookalikes import receipts

    index = MinHashIndex(5, 128, 0.5, None)
    rng = random.Random(0)
    rows = receipts(120, seed=5)
    bodies = {"1-3 items": [r["text"] for r in rows],
              "1-3 items and 0-12 more lines": [long_receipt(r, rng, rng.randint(0, 12)) for r in rows]}
    print("\n| receipts | compared as | one shop: min, 1st percentile | two shops: 99th percentile, max |")
    print("|---|---|---|---|")
    for body, texts in bodies.items():
        for how, text_of in (("whole text, digits masked", lambda t: re.sub(r"\d+", "0", normalise(t))),
                             ("first and last 5 lines, digits masked (data.dedup.template)", mask)):
            sigs = [index.signature(text_of(t))[0] for t in texts]
            same, other = [], []
            for a, b in itertools.combinations(range(len(rows)), 2):
                (same if rows[a]["shop"] == rows[b]["shop"] else other).append(float((sigs[a] == sigs[b]).mean()))
            same.sort()
            other.sort()
            print(f"| {body} | {how} | {same[0]:.2f}, {same[len(same) // 100]:.2f} | "
                  f"{other[-len(other) // 100]:.2f}, {other[-1]:.2f} |")


def receipts_layouts() -> None:
    from taskfit.config import DedupSpec
    from taskfit.data.lookalike import Layouts
    from test_lookalikes import SHOPS, receipts

    print(f"\n20 seeds x 80 receipts of {len(SHOPS)} shops:\n")
    print("| data.dedup.template | 1-3 items: layouts mixing two shops | shops split | "
          "0-12 more lines: layouts mixing two shops | shops split |")
    print("|---|---|---|---|---|")
    for t in (0.5, 0.6, 0.65, 0.7, 0.75, 0.8):
        cells = []
        for most in (0, 12):
            mixed = split = 0
            for seed in range(20):
                rng = random.Random(seed)
                rows = receipts(80, seed=seed)
                layouts = Layouts(DedupSpec(template=t))
                ids = [layouts.assign(long_receipt(r, rng, rng.randint(0, most)), "f", i) for i, r in enumerate(rows)]
                shops_of = set(zip(ids, (r["shop"] for r in rows)))
                mixed += sum(n > 1 for n in Counter(k for k, _ in shops_of).values())
                split += sum(n > 1 for n in Counter(s for _, s in shops_of).values())
            cells += [str(mixed), f"{split} of {20 * len(SHOPS)}"]
        print(f"| {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "unit"), str(ROOT / "bench")]
    if args.shared.exists():
        shared_sets(args.shared)
    else:
        print(f"{args.shared} is absent: the shared datasets are left out")
    receipts_similarity()
    receipts_layouts()
