"""This process's part in a training run, as one handle that travels with the model through the loop.

A run is one process, several processes that each hold a whole copy of the model and sum their
gradients (data parallel, under ``accelerate launch`` or torchrun), or several processes that each
hold a shard of it (``train.fsdp``, see fsdp.py). :class:`Parallel` says which, and does what
differs between them: summing figures across processes, gathering weights whole to snapshot or
save them, and running code that calls the model directly. A single process gets
``Parallel()``, for which every operation is the plain one.

No state lives at module level: the FSDP root a sharded model runs through is held by the handle
that :func:`taskfit.training.fsdp.join` returns, not looked up by model.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run (``accelerate launch``); rank 0 of 1 alone."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> "Ranks":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch
        from accelerate import PartialState

        # Joins the process group that `accelerate launch` (or torchrun) set up: NCCL on GPUs,
        # gloo on CPUs (accelerate needs to be told it is CPU, or it runs each process alone).
        state = PartialState(cpu=not torch.cuda.is_available())
        if state.num_processes != world:
            raise RuntimeError(f"WORLD_SIZE is {world} but accelerate joined {state.num_processes} processes")
        return cls(rank=state.process_index, world=state.num_processes)

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Parallel:
    """How this process trains a model: its ranks, and the FSDP root (fsdp.AnswerHead) when the
    model is sharded across the processes (None when every process holds it whole)."""

    ranks: Ranks = field(default_factory=Ranks)
    head: Any = None

    @property
    def sharded(self) -> bool:
        return self.head is not None

    def describe(self, model: Any) -> dict[str, Any]:
        """How the run was spread: processes, whether sharded, and the weights this process holds
        (under FSDP about 1/N of them)."""
        from torch.distributed.tensor import DTensor

        held = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in model.parameters())
        total = sum(p.numel() for p in model.parameters())
        return {"processes": self.ranks.world, "fsdp": self.sharded,
                "parameters": total, "parameters_per_process": held}

    def sum_across(self, tensors: list[Any]) -> None:
        """Sum each tensor, in place, over the processes."""
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def most_across(self, n: int) -> int:
        """The largest ``n`` any process has."""
        import torch
        import torch.distributed as dist

        most = torch.tensor([n])
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        return int(most)

    @contextmanager
    def gathered(self) -> Iterator[None]:
        """Hold the root's weights whole while code calls the model directly (each decoder layer
        gathers its own); nothing to do for a model that is not sharded."""
        if self.head is None:
            yield
            return
        self.head.unshard()
        try:
            yield
        finally:
            self.head.reshard()

    def set_gradient_sync(self, on: bool) -> None:
        """Sum gradients across processes after this backward pass (the last micro-batch of a
        step) or keep accumulating them locally; a model that is not sharded leaves it to the loop."""
        if self.head is not None:
            self.head.set_requires_gradient_sync(on)

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        """The optimiser state to checkpoint: whole tensors keyed by parameter name when sharded
        (every process must call it; the first gets the state), as ``state_dict()`` otherwise."""
        if self.head is None:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self.head, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optimizer_state(self, optimizer: Any, state: dict[str, Any]) -> None:
        if self.head is None:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.head, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def state_to_save(self, model: Any, trainable_only: bool) -> dict[str, Any] | None:
        """Whole tensors for ``save_pretrained(state_dict=...)`` of a sharded model (every process
        must call it); None for a model that is not sharded, which saves itself as usual. An
        adapter needs only its trainable tensors."""
        if self.head is None:
            return None
        names = {n for n, p in model.named_parameters() if p.requires_grad} if trainable_only else None
        return {k: whole(v) for k, v in model.state_dict().items() if names is None or k in names}


def whole(tensor: Any) -> Any:
    """A detached, whole CPU copy (gathers a shard from every process: all must call it)."""
    from torch.distributed.tensor import DTensor

    t = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
    return t.detach().to("cpu", copy=True).contiguous()


def load_into(param: Any, value: Any) -> None:
    """Copy a whole tensor into ``param``, or into this process's shard of it."""
    import torch
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        if isinstance(param, DTensor):
            value = distribute_tensor(value.to(param.device, param.dtype), param.device_mesh, param.placements,
                                      src_data_rank=None)  # every process slices its own shard
            param.copy_(value)
        else:
            param.copy_(value.to(param.device, param.dtype))
