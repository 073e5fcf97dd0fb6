"""`taskfit monitor` on simulated traffic: how often it cries wolf, and what drift it catches.

    .venv/bin/python bench/monitor_drift.py [--windows 40] [--rows 150] [--shares 0.1,0.25,0.5]

Builds the quickstart's sample project (2,400 generated tickets; its 480 training rows are the
reference, its 150 held-out rows the vocabulary's), then judges windows of `--rows` answered
requests at the default `monitor:` settings, as the command judges its latest window:

* traffic like the training data: fresh sample tickets from seeds the project never used;
* drifted traffic: the same tickets, where a share of them ask about a product the training
  data never names, in a new way ("Hey, about my Aurora X2 headset: ..."), routed to the queues
  they came from (the existing queues must absorb it).

Requests are redacted as the server's log redacts them. Prints, per condition, the share of
windows that raised an alert, which signals raised it, the domain classifier's ROC AUCs, and in how
many windows the content would drift at Evidently's 95th percentile instead of the default 99th.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from statistics import NormalDist

NEW_PRODUCT = "Aurora X2 headset"
NEW_OPENINGS = ["Hey, about my {p}: ", "Question regarding the {p} I got last week. ", "My {p} again! "]
# Questions about the new product that the product_question queue must absorb (issue 17's loop,
# tests/integration/test_retrain.py): one request each, distinct enough
# that `taskfit data from-log` keeps them all.
NEW_QUESTIONS = [
    "Can it pair with two laptops at the same time?", "Does the microphone work on Zoom calls from a Mac?",
    "Is there a way to turn the noise cancelling down a little?", "How long should one charge last?",
    "Can I buy spare ear pads in another colour?", "Will it work with the SmartHub dock on my desk?",
    "Can it play music over the cable while it charges?", "Which phone app controls the equaliser?",
    "Is there a travel case for it, and does it fold flat?", "Does it support aptX or only AAC?",
    "Can my kids use it, is there a volume limit setting?", "Is it sweat resistant enough for running?",
    "Does it have a sidetone so I hear my own voice on calls?", "Can I connect it to a PlayStation?",
    "Is the headband size adjustable for small heads?", "Does it announce the battery level by voice?",
    "Can the touch controls be switched off?", "Does it come with an airplane adapter?",
    "Can two of them share one audio stream?", "Is there a firmware update for better range?",
    "Does it work as a wired headset with the battery flat?", "What does the blinking blue light mean?",
    "Can I rename it in the Bluetooth list?", "Is there a version with a boom microphone?",
]


def new_way_of_asking() -> list[str]:
    """One request per question about the new product, each opened in one of the new ways."""
    return [NEW_OPENINGS[i % len(NEW_OPENINGS)].format(p=NEW_PRODUCT) + q for i, q in enumerate(NEW_QUESTIONS)]


_PRODUCT = re.compile(r"\b(the mobile app|the desktop app|SmartHub|Sync Plus|the Pro plan|the Team plan|"
                      r"the starter kit|the wireless scanner|the analytics add-on|the Basic plan)")


def drifted(rows: list[dict], share: float, seed: int = 0) -> list[dict]:
    """Sample-ticket rows where ``share`` of them name the new product (in place of the product
    they named, if any) and open with a phrasing the training data never uses."""
    rng = random.Random(seed)
    out = []
    for row in rows:
        if rng.random() < share:
            text = _PRODUCT.sub("the " + NEW_PRODUCT, row["messages"][0]["content"])
            text = rng.choice(NEW_OPENINGS).format(p=NEW_PRODUCT) + text
            row = {**row, "messages": [{"role": "user", "content": text}, *row["messages"][1:]]}
        out.append(row)
    return out


def log_rows(log, model: str, rows: list[dict], now: float, seed: int = 0, span_s: float = 3600.0) -> None:
    """Write ``rows`` (chat-format sample tickets) to a RequestLog as answered classify requests
    within the ``span_s`` seconds before ``now``: the label is the ticket's queue, the confidence
    drawn between 0.5 and 1, a fallback below 0.6."""
    rng = random.Random(seed)
    for i, row in enumerate(rows):
        confidence = rng.uniform(0.5, 1.0)
        label = row["messages"][1]["content"]
        log.add(id=f"{seed}-{i}", created=now - rng.uniform(0, span_s), model=model, status=200,
                latency_ms=rng.uniform(20, 80), request=row["messages"][:1], response=label, label=label,
                confidence=confidence, fallback=int(confidence < 0.6))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=40, help="windows per condition")
    ap.add_argument("--rows", type=int, default=150, help="answered requests per window")
    ap.add_argument("--shares", default="0.1,0.25,0.5", help="shares of drifted requests to try")
    args = ap.parse_args()

    from taskfit.config import load_config
    from taskfit.data.pii import redact
    from taskfit.data.prepare import prepare_data
    from taskfit.data.sample import generate_tickets
    from taskfit.monitoring.monitor import Reference, alerts_for, judge_window
    from taskfit.monitoring.requests import LoggedRequest
    from taskfit.quickstart import make_quickstart_project
    from taskfit.tasks import get_task

    project = make_quickstart_project(Path(tempfile.mkdtemp()) / "quickstart").parent
    config = load_config(project)
    prepared = prepare_data(config, project)
    task = get_task("classify")

    def facets_of(text: str) -> dict[str, str]:
        return task.answer_facets(config.task, text)

    reference = Reference.of(prepared.train, prepared.eval, facets_of)
    print(f"reference: {len(prepared.train)} training rows, {len(prepared.eval)} held-out rows; "
          f"windows of {args.rows} requests, {args.windows} per condition")
    for share in [0.0] + [float(s) for s in args.shares.split(",")]:
        alerts, signals, aucs, at_95 = 0, Counter(), [], 0
        started = time.perf_counter()
        for k in range(args.windows):
            rows = drifted(generate_tickets(args.rows, seed=1000 + k), share, seed=k)
            logged = [LoggedRequest(id=str(i), created=float(i), status=200, latency_ms=30.0,
                                    text=redact(r["messages"][0]["content"]), context=None,
                                    answer=r["messages"][1]["content"], confidence=0.9, fallback=False)
                      for i, r in enumerate(rows)]
            window = judge_window(0.0, float(len(rows)), logged, reference, config.monitor, facets_of, config.data)
            raised = alerts_for(window, config.monitor)
            alerts += bool(raised)
            signals.update(a.signal for a in raised)
            for s in window.signals:
                if s.kind == "content":
                    aucs.append(s.statistic)
                    null = s.detail["null_aucs"]  # the same shuffles, judged at Evidently's 95th percentile
                    at_95 += s.statistic > max(statistics.mean(null) + NormalDist().inv_cdf(0.95) * statistics.stdev(null),
                                               config.monitor.domain_min_auc)
        seconds = (time.perf_counter() - started) / args.windows
        print(f"drifted share {share:4.2f}: alert in {alerts}/{args.windows} windows "
              f"({100 * alerts / args.windows:.0f}%); by signal: {dict(signals.most_common()) or 'none'}; "
              f"domain classifier ROC AUC median {statistics.median(aucs):.3f} "
              f"(range {min(aucs):.3f}-{max(aucs):.3f}), content drift in {at_95} windows at the 95th "
              f"percentile; {seconds:.1f} s per window")


if __name__ == "__main__":
    main()
