"""Benchmark: personal-data detection's precision and recall, taskfit against Presidio.

On the labelled corpus of ``bench/documents_corpus.py`` (receipts, invoices, e-mail signatures,
support tickets and chat logs with planted phone numbers, e-mails, cards, IBANs and API keys among
dates, amounts, barcodes, invoice, order and tax numbers), it prints per kind of personal data
the findings, the planted spans, precision and recall of:

* ``taskfit``: this checkout's detector (``taskfit.data.pii``) with the default
  ``data.privacy`` settings (``regions: [US, GB]``, no ``phone_context``);
* ``taskfit a940a9f``: the detector before phone numbers needed evidence, read from that commit
  with ``git show`` (skipped outside a git checkout);
* ``presidio``: Presidio's pattern recognizers for the same kinds (``PhoneRecognizer``,
  ``EmailRecognizer``, ``CreditCardRecognizer``, ``IbanRecognizer``), each called directly with
  its default settings and ``nlp_artifacts=None`` (no spaCy model: the context words that would
  raise a score need one), every result counted whatever its score (``AnalyzerEngine``'s
  default ``score_threshold`` is 0). Presidio has no recognizer for API keys: SECRET is n/a.
  Presidio runs in its own virtual environment, never in taskfit's:

      python3 -m venv /work/presidio-venv && /work/presidio-venv/bin/pip install presidio-analyzer

A finding that overlaps a planted span of its kind is a hit (precision = hits / findings); a
planted span that a finding of its kind overlaps is caught (recall = caught / planted). It also
prints how many look-alikes of each kind any finding touched (a redaction would rewrite them),
and documents per second (best of three passes over the corpus, one process, this machine).

Declared before the comparison was run: the corpus is ``documents(400, seed=0)``; taskfit
succeeds when its PHONE precision is at least Presidio's on this corpus and its PHONE recall is at
least that of the detector at a940a9f.

    PYTHONPATH=src .venv/bin/python bench/pii_precision.py --presidio /work/presidio-venv/bin/python
    PYTHONPATH=src .venv/bin/python bench/pii_precision.py --n 1000 --seed 1   # another corpus
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from documents_corpus import LOOKALIKE_KINDS, PII_KINDS, Doc, documents, lookalikes_hit, score  # noqa: E402

BEFORE = "a940a9f"  # the last commit whose detector took any possible phone number

_PRESIDIO = r"""
import json, logging, sys
logging.disable(logging.CRITICAL)  # tldextract warns that it cannot fetch the suffix list offline
from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, EmailRecognizer, IbanRecognizer,
                                                      PhoneRecognizer)
kinds = {"PHONE_NUMBER": "PHONE", "EMAIL_ADDRESS": "EMAIL", "CREDIT_CARD": "CARD", "IBAN_CODE": "IBAN"}
recognizers = [R() for R in (PhoneRecognizer, EmailRecognizer, CreditCardRecognizer, IbanRecognizer)]
texts = json.load(open(sys.argv[1]))
def run():
    return {i: [(kinds[r.entity_type], r.start, r.end) for rec in recognizers
                for r in rec.analyze(t, entities=rec.supported_entities, nlp_artifacts=None)]
            for i, t in texts.items()}
run()  # warm up
import time
best = float("inf")
for _ in range(3):
    start = time.perf_counter(); out = run(); best = min(best, time.perf_counter() - start)
from importlib.metadata import version
print(json.dumps({"findings": out, "seconds": best, "version": version("presidio-analyzer")}))
"""


def _timed(detect, docs: list[Doc]) -> tuple[dict[str, list[tuple[str, int, int]]], float]:
    detect("warm up: call +44 20 7946 0958 on 10-03-2018")
    best, out = float("inf"), {}
    for _ in range(3):
        start = time.perf_counter()
        out = {d.id: [(f.kind, f.start, f.end) for f in detect(d.text)] for d in docs}
        best = min(best, time.perf_counter() - start)
    return out, best


def taskfit_before() -> object | None:
    """The detector at ``BEFORE``, loaded as a module of its own (None outside a git checkout)."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:src/taskfit/data/pii.py"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "pii_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("pii_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pii_before"] = module
    spec.loader.exec_module(module)
    return module


def presidio(python: str, docs: list[Doc]) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory() as tmp:
        texts = Path(tmp) / "texts.json"
        texts.write_text(json.dumps({d.id: d.text for d in docs}))
        done = subprocess.run([python, "-c", _PRESIDIO, str(texts)], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"presidio-analyzer {result['version']}")
    return {k: [tuple(f) for f in v] for k, v in result["findings"].items()}, result["seconds"]


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="documents in the corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presidio", help="the python of a virtual environment with presidio-analyzer")
    args = parser.parse_args()

    from taskfit.data import pii

    docs = documents(args.n, args.seed)
    runs: dict[str, tuple[dict, float]] = {"taskfit": _timed(pii.detect, docs)}
    before = taskfit_before()
    if before is not None:
        runs[f"taskfit {BEFORE}"] = _timed(before.detect, docs)
    if args.presidio:
        runs["presidio"] = presidio(args.presidio, docs)
    print(f"corpus: documents({args.n}, seed={args.seed}): {len(docs)} documents, "
          + ", ".join(f"{sum(s.kind == k for d in docs for s in d.spans)} {k}" for k in PII_KINDS))
    print()
    print("| kind | detector | findings | hits | planted | caught | precision | recall |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    others = sorted({k for findings, _ in runs.values() for found in findings.values() for k, _, _ in found}
                    - set(PII_KINDS))  # kinds nothing was planted of: every finding is a false one
    for kind in [*PII_KINDS, *others]:
        for name, (findings, _) in runs.items():
            if name == "presidio" and kind == "SECRET":
                print(f"| {kind} | {name} | n/a | | | | n/a | n/a |")
                continue
            s = score(docs, findings).get(kind)
            if s is None:
                continue
            print(f"| {kind} | {name} | {s.found} | {s.hits} | {s.planted} | {s.caught} | "
                  f"{_fmt(s.precision)} | {_fmt(s.recall)} |")
    print()
    print("| look-alikes touched | " + " | ".join(runs) + " | of |")
    print("|---|" + "---:|" * (len(runs) + 1))
    hit = {name: lookalikes_hit(docs, findings) for name, (findings, _) in runs.items()}
    for kind in LOOKALIKE_KINDS:
        total = sum(s.kind == kind for d in docs for s in d.lookalikes)
        print(f"| {kind} | " + " | ".join(str(hit[name][kind]) for name in runs) + f" | {total} |")
    print()
    for name, (_, seconds) in runs.items():
        print(f"{name}: {len(docs) / seconds:,.0f} documents/s")


if __name__ == "__main__":
    main()
