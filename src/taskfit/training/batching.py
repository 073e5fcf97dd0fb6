"""How training rows become forward passes: batches of rows of similar length, cut into
micro-batches of bounded size, and collated (right-padded, or packed into shared sequences).

Every function here is pure: the same rows, seed and epoch give the same batches, which is what
lets a resumed run take the same steps as one that was never interrupted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from taskfit.config import TrainSpec
from taskfit.rendering import Rendered


def length_grouped_batches(rows: Sequence[Rendered], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Indices in batches of similar length: shuffle, sort within windows of 50 batches, shuffle
    the batches. Deterministic for (seed, epoch)."""
    rng = random.Random(seed * 1000003 + epoch)
    order = list(range(len(rows)))
    rng.shuffle(order)
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: len(rows[i].ids))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def shuffled_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    rng = random.Random(seed * 1000003 + epoch)
    order = list(range(n))
    rng.shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def micro_batch_tokens(spec: TrainSpec) -> int:
    """``train.micro_batch_tokens``, or its default for where the model runs: 128 on CPU (measured
    in bench/train_throughput.py: 0.45x the memory of TRL's defaults at 1.8x its speed); 512 on
    CPU for a classification head, which has no vocabulary-sized output (measured on the
    quickstart's tickets, docs/training.md: 1.4x the tokens/s of 128 at 2.5 GB against 1.6 GB;
    768 and 1,024 were slower); 8192 on a GPU, whose memory and parallelism favour large passes."""
    if spec.micro_batch_tokens:
        return spec.micro_batch_tokens
    import torch

    if spec.device != "cpu" and torch.cuda.is_available():
        return 8192
    return 512 if spec.classify_head else 128


def chunk_by_tokens(batch: Sequence[int], lengths: Sequence[int], cap: int, packed: bool = False) -> list[list[int]]:
    """Cut ``batch`` (in order) into runs whose padded size (rows × longest row, or the sum of
    lengths when packed) stays within ``cap`` tokens; a row longer than ``cap`` goes alone.
    Activation memory follows the tokens of one forward pass, not the batch size."""
    out: list[list[int]] = []
    current: list[int] = []
    longest = used = 0
    for i in batch:
        n = lengths[i]
        grown = used + n if packed else max(longest, n) * (len(current) + 1)
        if current and grown > cap:
            out.append(current)
            current, longest, used = [], 0, 0
        current.append(i)
        longest, used = max(longest, n), used + n
    if current:
        out.append(current)
    return out


@dataclass
class Batch:
    """Model inputs plus, for every loss token, where its prediction is read and which row owns it.

    Padded batches carry an attention mask; packed ones carry position ids that restart at each
    row, from which transformers builds a block-diagonal mask (no attention across rows).
    """

    ids: Any  # [S, T]
    mask: Any | None  # [S, T]
    positions: Any | None  # [S, T]
    src: tuple[Any, Any]  # (sequence, position) whose hidden state predicts each loss token
    targets: Any  # [N]
    owner: Any  # [N] index of the row (in the caller's list) each loss token belongs to
    read_tokens: int


def collate(rows: Sequence[Rendered], pad_id: int, pack_to: int | None = None) -> Batch:
    """One batch from ``rows``: right-padded, or packed into sequences of at most ``pack_to``."""
    import torch

    if pack_to:  # first-fit decreasing: rows in as few sequences as fit
        bins: list[list[int]] = []
        room: list[int] = []
        for i in sorted(range(len(rows)), key=lambda i: -len(rows[i].ids)):
            n = len(rows[i].ids)
            slot = next((b for b, free in enumerate(room) if free >= n), None)
            if slot is None:
                bins.append([i])
                room.append(pack_to - n)
            else:
                bins[slot].append(i)
                room[slot] -= n
    else:
        bins = [[i] for i in range(len(rows))]
    width = max(sum(len(rows[i].ids) for i in b) for b in bins)
    ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(bins), width), dtype=torch.long)
    positions = torch.zeros((len(bins), width), dtype=torch.long)
    src_s, src_t, targets, owner = [], [], [], []
    for s, members in enumerate(bins):
        offset = 0
        for i in members:
            r = rows[i]
            n = len(r.ids)
            ids[s, offset:offset + n] = torch.tensor(r.ids)
            mask[s, offset:offset + n] = 1
            positions[s, offset:offset + n] = torch.arange(n)
            for t in range(r.n_prompt, n):
                src_s.append(s)
                src_t.append(offset + t - 1)
                targets.append(r.ids[t])
                owner.append(i)
            offset += n
        # Padding gets positions of its own, so it reads as a separate (unscored) sequence.
        positions[s, offset:] = torch.arange(width - offset)
    packed = bool(pack_to)
    return Batch(ids=ids, mask=None if packed else mask, positions=positions if packed else None,
                 src=(torch.tensor(src_s), torch.tensor(src_t)), targets=torch.tensor(targets),
                 owner=torch.tensor(owner), read_tokens=int(mask.sum()))
