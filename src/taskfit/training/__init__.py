"""One linear recipe per method (sft.py for lora/qlora/full, dpo.py, head.py for
``train.classify_head``), sharing one loop (loop.py).

The building blocks, each importing only those listed before it: batching.py (rows into batches,
micro-batches and padded or packed tensors), parallel.py (this process's part in a run: ranks, and
the FSDP root when sharded), forward.py (answer-only logits), fsdp.py (sharding a model),
methods.py (what each ``train.method`` trains), loop.py (steps, validation, checkpoints); then the
recipes sft.py, dpo.py and head.py, and recipe.py, the whole run. tests/unit/test_layering.py fails on any
import cycle between these modules.
"""

from taskfit.training.dpo import train_dpo
from taskfit.training.sft import train_sft

__all__ = ["train_dpo", "train_sft"]
