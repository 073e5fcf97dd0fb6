"""Deterministic stratified splits and sub-samples, and data fingerprints.

Held-out rows are real rows only: a synthetic row (``meta.synthetic``, drafted by ``taskfit data
synth``) is never held out. Both splits set such rows aside, split the real rows alone (so the
held-out rows are the same with or without them) and put the synthetic rows on the training side.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from typing import Any, Sequence

from taskfit.errors import DataError
from taskfit.records import Example


def _stratify_keys(examples: Sequence[Example]) -> list[str] | None:
    """Targets to stratify on, or None when some class is too small to appear on both sides (or
    the rows are preference pairs, which have no label)."""
    if not all(isinstance(ex, Example) for ex in examples):
        return None
    counts = Counter(ex.target for ex in examples)
    if len(counts) < 2 or min(counts.values()) < 2:
        return None
    return [ex.target for ex in examples]


def is_synthetic(rec: Any) -> bool:
    """Whether a row was drafted by a model (``meta.synthetic``), not written by a person or a
    system the task serves."""
    return bool(rec.meta.get("synthetic"))


def stratified_split(examples: Sequence[Example], fraction: float, seed: int,
                     every_class: bool = True) -> tuple[list[Example], list[Example]]:
    """Split into (train, held_out) with ``fraction`` of the real rows held out, stratified by
    target when every class has at least two rows; synthetic rows go to train (module docstring).
    The same seed always gives the same split. With ``every_class``, the held-out part takes at
    least one row of each class (more than ``fraction`` where there are more classes than that:
    :func:`widened` says how many); without, ``fraction`` is kept and, where it holds fewer rows
    than there are classes, the rows are drawn alike."""
    real = [ex for ex in examples if not is_synthetic(ex)]
    synthetic = [ex for ex in examples if is_synthetic(ex)]
    if len(real) < 4:
        more = f" (and {len(synthetic)} synthetic rows, which are never held out)" if synthetic else ""
        raise DataError(f"only {len(real)} usable real rows{more}; at least 4 are needed to split",
                        hint="run `taskfit data check` to see why rows were quarantined")
    train, test = _stratified(real, fraction, seed, every_class)
    return train + synthetic, test


def widened(examples: Sequence[Example], fraction: float) -> int:
    """How many rows a stratified held-out split of ``examples`` takes beyond ``fraction`` of them,
    to hold one row of every class (0 where the fraction holds that many already)."""
    real = [ex for ex in examples if not is_synthetic(ex)]
    keys = _stratify_keys(real)
    asked = max(1, round(len(real) * fraction))
    return max(0, len(set(keys)) - asked) if keys is not None else 0


def _stratified(examples: Sequence[Example], fraction: float, seed: int,
                every_class: bool = True) -> tuple[list[Example], list[Example]]:
    """(rest, part) with ``fraction`` of ``examples`` in part, stratified by target when every
    class has two rows or more (and, without ``every_class``, when the part can hold a row of
    each); every row alike."""
    from sklearn.model_selection import train_test_split

    ordered = sorted(examples, key=lambda ex: ex.id)  # independent of file order
    keys = _stratify_keys(ordered)
    n_test = max(1, round(len(ordered) * fraction))
    if keys is not None and n_test < len(set(keys)):
        if every_class:
            n_test = len(set(keys))
        else:
            keys = None
    train, test = train_test_split(ordered, test_size=n_test, random_state=seed, stratify=keys)
    return list(train), list(test)


def grouped_split(examples: Sequence[Example], fraction: float, seed: int,
                  groups: Sequence[str]) -> tuple[list[Example], list[Example]]:
    """Split so that rows sharing a group (customer, thread, article) never straddle train and
    held out; stratified by target as far as the groups allow, when every class has two rows or
    more (scikit-learn's StratifiedGroupKFold, one fold held out). Synthetic rows go to train, and
    their groups are not counted (module docstring)."""
    from sklearn.model_selection import StratifiedGroupKFold

    synthetic = [ex for ex in examples if is_synthetic(ex)]
    if synthetic:
        real = [k for k, ex in enumerate(examples) if not is_synthetic(ex)]
        train, test = grouped_split([examples[k] for k in real], fraction, seed, [groups[k] for k in real])
        return train + synthetic, test
    if len(set(groups)) < 2:
        raise DataError(f"data.group_by: all {len(groups)} rows are in one group ({next(iter(groups), '')!r}); "
                        "nothing can be held out without splitting it",
                        hint="group by a column with at least two values, or remove data.group_by")
    order = sorted(range(len(examples)), key=lambda i: examples[i].id)
    rows = [examples[i] for i in order]
    grp = [groups[i] for i in order]
    folds = min(max(2, round(1 / fraction)), len(set(grp)))
    # Free answers (extract, qa, generate) are nearly all different: stratifying on them is not
    # possible (scikit-learn refuses when no answer has as many rows as there are folds).
    keys = _stratify_keys(rows) or [""] * len(rows)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_idx, test_idx = next(splitter.split(rows, keys, grp))
    return [rows[i] for i in train_idx], [rows[i] for i in test_idx]


def stratified_subsample(examples: Sequence[Example], n: int | None, seed: int) -> list[Example]:
    """At most ``n`` rows, keeping the class proportions; all rows when ``n`` is None or larger."""
    if n is None or n >= len(examples):
        return list(examples)
    keys = _stratify_keys(examples)
    classes = len(set(keys)) if keys else 0
    if len(examples) < 4 or min(n, len(examples) - n) < classes:
        # Too few rows on one side to hold every class (scikit-learn would refuse): a plain
        # seeded sample, still independent of file order.
        return random.Random(seed).sample(sorted(examples, key=lambda ex: ex.id), n)
    _, sample = _stratified(examples, n / len(examples), seed)
    return sample[:n]


def fingerprint(examples: Sequence[Example]) -> str:
    """SHA-256 over the rows' ids, inputs, targets and system prompts (prompt, chosen and rejected
    for preference pairs), in id order."""
    h = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: e.id):
        fields = ([ex.id, ex.input, ex.target, ex.system] if isinstance(ex, Example)
                  else [ex.id, ex.prompt, ex.chosen, ex.rejected, ex.system])
        h.update(json.dumps(fields, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def validation_split(rows: Sequence, share: float, max_rows: int, seed: int) -> tuple[list, list]:
    """Hold back ``share`` of the training rows (at most ``max_rows``) to validate on during
    training, stratified by target for labelled rows. The eval split is never used for this: a
    checkpoint chosen on the held-out rows would make their score optimistic. Like the held-out
    rows, the validation rows are real ones (``share`` of them): synthetic rows are trained on only.
    Where ``share`` holds fewer rows than there are classes, it is kept and the rows are drawn
    alike: taking one of each class took 151 of 600 rows (clinc150's intents) to validate on, where
    0.1 asked for 60."""
    real = sum(not is_synthetic(r) for r in rows)
    n = min(max_rows, round(real * share))
    if share <= 0 or n < 1 or real < 8:
        return list(rows), []
    return stratified_split(rows, n / real, seed, every_class=False)
