"""Fully sharded data parallel (FSDP) training, for models too large to replicate on every GPU.

With ``train.fsdp: true`` under ``accelerate launch`` (or torchrun), every decoder layer is
sharded across the processes with PyTorch's ``fully_shard`` (FSDP2): each process keeps 1/N of
every weight (and of its gradients and optimiser state) and gathers a layer's weights only while
it runs. The loop stays the same as for data parallel: each process takes its share of every
batch, and the gradients are summed across processes (reduce-scattered to their shards).

What FSDP asks of our own loop, and where it is handled:

- the answer-only forward (hidden states → output layer at the answer positions) runs inside
  :class:`AnswerHead`, the FSDP root, so the weights it owns (embeddings, final norm, output
  layer) are gathered for it and their gradients reduced like every other shard's;
- every process must run the same number of forward and backward passes, since each pass
  gathers weights from all of them: a process with fewer micro-batches runs zero-weighted ones
  (see ``loop._step``);
- code that calls the model directly (label scoring during validation) runs inside
  :func:`gathered`, which holds the root's weights whole for its duration;
- checkpoints, the best-validation snapshot and the saved artifact hold whole tensors (every
  process takes part in gathering them; the first writes); the optimiser state is gathered
  whole too, and every process takes its shard of it back on resume.
"""

from __future__ import annotations

import os
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from taskfit.config import TrainSpec
from taskfit.errors import ConfigError

# model → its FSDP root, for the models this process has sharded
_ROOTS: "weakref.WeakKeyDictionary[Any, AnswerHead]" = weakref.WeakKeyDictionary()


class AnswerHead(torch.nn.Module):
    """The FSDP root: owns the model, and computes the logits at the answer positions only."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, ids: Any, mask: Any, positions: Any, rows: Any, cols: Any) -> Any:
        from taskfit.training.sft import answer_logits_of

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


def shard(model: Any) -> Any:
    """Shard ``model`` across the processes: each decoder layer (the classes the model names as
    not to be split, as accelerate's transformer wrap policy reads them) is its own FSDP unit, and
    an :class:`AnswerHead` over the whole is the root. Gradients are summed across processes, not
    averaged (the loop divides by the whole batch's size itself). The weights move to this
    process's device as they are sharded."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    from taskfit.training.loop import Ranks

    Ranks.from_env()  # joins the process group
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
    _ROOTS[model] = root
    return model


def describe(model: Any, processes: int) -> dict[str, Any]:
    """How the run was spread: processes, whether sharded, and the weights this process holds
    (under FSDP about 1/N of them)."""
    held = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"processes": processes, "fsdp": root(model) is not None,
            "parameters": total, "parameters_per_process": held}


def root(model: Any) -> AnswerHead | None:
    """The FSDP root of ``model``, when this process sharded it."""
    return _ROOTS.get(model)


@contextmanager
def gathered(model: Any) -> Iterator[None]:
    """Hold the root's weights whole while code calls ``model`` directly (each decoder layer
    gathers its own); nothing to do for a model that is not sharded."""
    head = root(model)
    if head is None:
        yield
        return
    head.unshard()
    try:
        yield
    finally:
        head.reshard()


def set_gradient_sync(model: Any, on: bool) -> None:
    """Sum gradients across processes after this backward pass (the last micro-batch of a step)
    or keep accumulating them locally."""
    head = root(model)
    if head is not None:
        head.set_requires_gradient_sync(on)


def whole(tensor: Any) -> Any:
    """A detached, whole CPU copy (gathers a shard from every process: all must call it)."""
    t = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
    return t.detach().to("cpu", copy=True).contiguous()


def load_into(param: Any, value: Any) -> None:
    """Copy a whole tensor into ``param``, or into this process's shard of it."""
    with torch.no_grad():
        if isinstance(param, DTensor):
            value = distribute_tensor(value.to(param.device, param.dtype), param.device_mesh, param.placements,
                                      src_data_rank=None)  # every process slices its own shard
            param.copy_(value)
        else:
            param.copy_(value.to(param.device, param.dtype))


def optimizer_state(model: Any, optimizer: Any) -> dict[str, Any]:
    """The optimiser state to checkpoint: whole tensors keyed by parameter name when sharded
    (every process must call it; the first gets the state), as ``state_dict()`` otherwise."""
    head = root(model)
    if head is None:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(head, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    head = root(model)
    if head is None:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(head, optimizer, state, options=StateDictOptions(full_state_dict=True))


def state_to_save(model: Any, trainable_only: bool) -> dict[str, Any] | None:
    """Whole tensors for ``save_pretrained(state_dict=...)`` of a sharded model (every process
    must call it); None for a model that is not sharded, which saves itself as usual. An adapter
    needs only its trainable tensors."""
    if root(model) is None:
        return None
    names = {n for n, p in model.named_parameters() if p.requires_grad} if trainable_only else None
    return {k: whole(v) for k, v in model.state_dict().items() if names is None or k in names}
