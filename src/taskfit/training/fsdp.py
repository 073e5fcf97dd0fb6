"""Fully sharded data parallel (FSDP) training, for models too large to replicate on every GPU.

With ``train.fsdp: true`` under ``accelerate launch`` (or torchrun), every decoder layer is
sharded across the processes with PyTorch's ``fully_shard`` (FSDP2): each process keeps 1/N of
every weight (and of its gradients and optimiser state) and gathers a layer's weights only while
it runs. The loop stays the same as for data parallel: each process takes its share of every
batch, and the gradients are summed across processes (reduce-scattered to their shards).

What FSDP asks of our own loop, and where it is handled:

- the answer-only forward (hidden states → output layer at the answer positions) runs inside
  :class:`AnswerHead`, the FSDP root, so the weights it owns (embeddings, final norm, output
  layer) are gathered for it and their gradients reduced like every other shard's; the root
  travels with the model in the :class:`~taskfit.training.parallel.Parallel` handle that
  :func:`join` returns;
- every process must run the same number of forward and backward passes, since each pass
  gathers weights from all of them: a process with fewer micro-batches runs zero-weighted ones
  (see ``loop._step``);
- code that calls the model directly (label scoring during validation) runs inside
  ``Parallel.gathered()``, which holds the root's weights whole for its duration;
- checkpoints, the best-validation snapshot and the saved artifact hold whole tensors (every
  process takes part in gathering them; the first writes); the optimiser state is gathered
  whole too, and every process takes its shard of it back on resume.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from taskfit.config import TrainSpec
from taskfit.errors import ConfigError
from taskfit.training.forward import answer_logits_of
from taskfit.training.parallel import Parallel, Ranks


class AnswerHead(torch.nn.Module):
    """The FSDP root: owns the model, and computes the logits at the answer positions only."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, ids: Any, mask: Any, positions: Any, rows: Any, cols: Any) -> Any:
        return answer_logits_of(self.model, ids, mask, positions, rows, cols)


def launched_with_accelerate_fsdp() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def check(spec: TrainSpec) -> None:
    """Settings FSDP cannot combine with, refused before the model loads."""
    if launched_with_accelerate_fsdp() and not spec.fsdp:
        raise ConfigError("launched with `accelerate launch --use_fsdp`, but train.fsdp is false, so the "
                          "model would be replicated on every process, not sharded",
                          hint="set `train.fsdp: true` in taskfit.yaml (taskfit shards the model itself, "
                               "one decoder layer at a time) and launch with `accelerate launch --multi_gpu`")
    if spec.fsdp and spec.method == "qlora":
        raise ConfigError("train.fsdp cannot shard a 4-bit (qlora) base model",
                          hint="use `method: lora` with `fsdp: true`, or qlora without fsdp")


def wants_sharding(spec: TrainSpec) -> bool:
    """FSDP is asked for and there is more than one process to shard across."""
    return spec.fsdp and int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(model: Any, spec: TrainSpec) -> Parallel:
    """This process's handle for training ``model``: it joins the process group when there are
    several processes, and shards the model across them when ``train.fsdp`` asks for it."""
    ranks = Ranks.from_env()
    return Parallel(ranks, head=shard(model)) if wants_sharding(spec) else Parallel(ranks)


def shard(model: Any) -> AnswerHead:
    """Shard ``model`` across the processes (already joined in a process group) and return the
    FSDP root that the model now runs through: each decoder layer (the classes the model names as
    not to be split, as accelerate's transformer wrap policy reads them) is its own FSDP unit, and
    an :class:`AnswerHead` over the whole is the root. Gradients are summed across processes, not
    averaged (the loop divides by the whole batch's size itself). The weights move to this
    process's device as they are sharded."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    decoder = model.get_base_model() if hasattr(model, "get_base_model") else model
    layer_classes = set(getattr(decoder, "_no_split_modules", None) or [])
    layers = [m for m in decoder.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise ConfigError(f"train.fsdp: cannot find the decoder layers of {type(decoder).__name__} "
                          "(it names no `_no_split_modules`)",
                          hint="train it without `fsdp` (data parallel), or with a transformers model that names them")
    for layer in layers:
        fully_shard(layer)
    root = AnswerHead(model)
    fully_shard(root)
    for unit in root.modules():
        if isinstance(unit, FSDPModule):
            unit.set_gradient_divide_factor(1.0)
            unit.set_force_sum_reduction_for_comms(True)  # gloo (CPU) has no pre-scaled sum
    return root
