"""One linear recipe per method (sft.py for lora/qlora/full, dpo.py), sharing one loop (loop.py)."""

from taskfit.training.dpo import train_dpo
from taskfit.training.sft import train_sft

__all__ = ["train_dpo", "train_sft"]
