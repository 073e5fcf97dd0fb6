"""Probe sets that ship with taskfit, and the forgetting check that reads them.

``general.jsonl`` holds 3 solved demonstrations and 128 reading-comprehension items (a Wikipedia
passage cut to the sentence holding the answer, a question, a short gold answer) from SQuAD 2.0,
under CC BY-SA 4.0; where it comes from, what was changed and how to rebuild it are in
``SOURCE.md`` beside it.
"""

from taskfit.probes.forgetting import GENERAL, Probe, ProbeSet, load_probe, measure_forgetting

__all__ = ["GENERAL", "Probe", "ProbeSet", "load_probe", "measure_forgetting"]
