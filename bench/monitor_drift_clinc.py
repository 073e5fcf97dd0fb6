"""Content drift's false alarms on real traffic like the training data: clinc150's in-scope rows.

    .venv/bin/python bench/monitor_drift_clinc.py [--data ../shared/data/clinc150] [--windows 40]
        [--sizes 200,300,500] [--banking-windows 100]

Settings, declared before the run: the default `monitor:` settings (`domain_percentile` 99,
`domain_min_auc` 0.55, 30 shuffles, at most 1,000 rows a side), each window first passing the
default near-duplicate filter as `taskfit monitor` passes it. The success measure: the share of
windows whose content drifts, where nothing drifted (the rows are all crowd-written requests of the
same 150 intents). Conditions:

* train vs val+test: the 1,987 in-scope training rows against `--windows` windows of each size
  drawn from the 700 in-scope validation and test rows (the splits a walkthrough sent as week-1
  traffic);
* train vs train (the control, exchangeable by construction): half the in-scope training rows
  against windows of the other half;
* banking: the 199 training rows of clinc150's 15 banking intents against windows of 60 of their
  72 validation and test rows, and the same sizes drawn from all 271 banking rows pooled and
  reshuffled for each window (the control);
* banking with contact details (something new, to show the check still sees it): the banking
  windows where each request, with probability 0.4, ends with a customer's IBAN, phone number or
  e-mail address ("you can reach me at +44 20 7946 0958"), redacted as the request log redacts it.

Prints one JSON line per condition and size: windows, alerts, the ROC AUCs' median and range, and
the median threshold the AUC was held to.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

BANKING = {"transfer", "transactions", "balance", "freeze_account", "pay_bill", "bill_balance", "bill_due",
           "interest_rate", "routing", "min_payment", "order_checks", "pin_change", "report_fraud",
           "account_blocked", "spending_history"}

CONTACT = [" my account is DE89 3704 0044 0532 0130 00", " you can reach me at +44 20 7946 0958",
           " reply to jane.doe@example.com"]
CONTACT_SHARE, CONTACT_WINDOWS = 0.4, 40


def judge(name: str, windows: list[tuple[list[str], list[str]]], size: int) -> None:
    """Run the content-drift check on each (reference, window) pair and print the tally."""
    from taskfit.config import DataSpec, MonitorSpec
    from taskfit.monitoring.drift import content_drift
    from taskfit.monitoring.monitor import distinct

    spec, data = MonitorSpec(), DataSpec(train="unused")
    signals = [content_drift(ref, distinct(window, data), spec) for ref, window in windows]
    aucs = [s.statistic for s in signals]
    print(json.dumps({"condition": name, "reference": len(windows[0][0]), "size": size, "windows": len(windows),
                      "alerts": sum(s.drift for s in signals), "auc_median": round(statistics.median(aucs), 3),
                      "auc_min": round(min(aucs), 3), "auc_max": round(max(aucs), 3),
                      "threshold_median": round(statistics.median(s.threshold for s in signals), 3)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clinc150")
    ap.add_argument("--windows", type=int, default=40, help="windows per size (all intents)")
    ap.add_argument("--sizes", default="200,300,500", help="window sizes (all intents)")
    ap.add_argument("--banking-windows", type=int, default=100, help="windows per banking condition")
    args = ap.parse_args()
    if not (args.data / "train.jsonl").is_file():
        raise SystemExit(f"{args.data}: not found (the shared datasets live in ../shared/data)")

    def read(split: str, keep=lambda label: label != "oos") -> list[str]:
        rows = [json.loads(line) for line in (args.data / f"{split}.jsonl").read_text().splitlines() if line.strip()]
        return [r["text"] for r in rows if keep(r["label"])]

    train, valtest = read("train"), read("val") + read("test")
    halves = train[:]
    random.Random(0).shuffle(halves)
    control = (halves[:len(halves) // 2], halves[len(halves) // 2:])
    for name, (ref, pool) in (("train vs val+test", (train, valtest)), ("train vs train (control)", control)):
        for size in (int(s) for s in args.sizes.split(",")):
            judge(name, [(ref, random.Random(1000 * size + w).sample(pool, size)) for w in range(args.windows)], size)

    bank_train = read("train", BANKING.__contains__)
    bank_rest = read("val", BANKING.__contains__) + read("test", BANKING.__contains__)
    size = min(60, len(bank_rest))
    split, pooled = [], []
    for w in range(args.banking_windows):
        rng = random.Random(w)
        split.append((bank_train, rng.sample(bank_rest, size)))
        rng = random.Random(w)
        mixed = bank_train + bank_rest
        rng.shuffle(mixed)
        pooled.append((mixed[:len(bank_train)], rng.sample(mixed[len(bank_train):], size)))
    judge("banking: train vs val+test", split, size)
    judge("banking: pooled and reshuffled (control)", pooled, size)

    from taskfit.data import pii

    contact = []
    for w in range(CONTACT_WINDOWS):
        rng = random.Random(w)
        contact.append((bank_train, [pii.redact(t + rng.choice(CONTACT)) if rng.random() < CONTACT_SHARE else t
                                     for t in rng.sample(bank_rest, size)]))
    judge(f"banking: {CONTACT_SHARE:.0%} add contact details", contact, size)


if __name__ == "__main__":
    main()
