"""One linear recipe per method, calling PEFT as a library."""

from taskfit.training.sft import TrainResult, train_lora

__all__ = ["TrainResult", "train_lora"]
