"""Device, dtype and threads for a training run, chosen once from the spec and the machine."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

from taskfit.config import TrainSpec
from taskfit.errors import ConfigError
from taskfit.machine import cpu_bf16_native, cpu_cores


@dataclass(frozen=True)
class Hardware:
    device: str  # "cpu" or "cuda"
    dtype: str  # "float32", "bfloat16" or "float16": the weights'
    threads: int
    setting: str = "auto"  # train.dtype as written, which cpu_autocast reads

    @property
    def autocast(self) -> bool:
        """Whether the model's forward passes run under bfloat16 autocast (:func:`cpu_autocast`)."""
        return cpu_autocast(self.setting, self.device)

    @property
    def precision(self) -> str:
        """What a local model's products are computed in: the weights' dtype, or
        ``bfloat16-autocast`` on float32 weights (:attr:`autocast`)."""
        return "bfloat16-autocast" if self.autocast else self.dtype

    def computing(self) -> Any:
        """A context in which the model's forward passes run as :attr:`precision` says: bfloat16
        autocast where :attr:`autocast`, else as the weights are. Evaluation answers in it, and the
        server's worker serves in it (an autocast is per thread), so a served answer is the
        evaluated one; every key/value cache a predictor keeps must be made inside it too, and no
        adapter merged inside it (the merge's product would be rounded to bfloat16)."""
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast)

    def hold(self, *models: Any) -> None:
        """Where :attr:`autocast`: every linear layer's weight of ``models`` held in bfloat16, the
        values autocast would cast it to in each pass, so that a pass no longer reads and casts
        the float32 weights (a decoding step of one request: 22-24 ms against 53-66, against 41 in
        float32). The answers stay those of :meth:`computing` over float32 weights, bit for bit;
        a weight the models share stays shared (one bfloat16 copy), and a tied output layer gets
        its own copy (the embedding stays float32). For models that only answer: merge adapters
        first, and train them no more."""
        import torch

        if not self.autocast:
            return
        held: dict[int, tuple[Any, Any]] = {}  # a float32 parameter's id: it, and its bfloat16 copy
        for model in models:
            for module in model.modules():
                if not isinstance(module, torch.nn.Linear):
                    continue
                for name in ("weight", "bias"):
                    value = getattr(module, name)
                    if value is None or value.dtype != torch.float32:
                        continue
                    if id(value) not in held:
                        held[id(value)] = value, torch.nn.Parameter(value.detach().to(torch.bfloat16),
                                                                    requires_grad=False)
                    setattr(module, name, held[id(value)][1])

    def describe(self) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {"device": self.device, "dtype": self.dtype, "threads": self.threads,
                               "cpus": os.cpu_count()}
        if self.autocast:
            out["autocast"] = "bfloat16"
        if self.device == "cuda":
            out["gpu"] = torch.cuda.get_device_name(0)
            out["gpus"] = torch.cuda.device_count()
        return out


def cpu_autocast(dtype: str, device: str) -> bool:
    """Whether a model on ``device`` with ``train.dtype`` set to ``dtype`` computes under bfloat16
    autocast: on a CPU, with ``auto``, where the CPU multiplies bfloat16 natively
    (:func:`~taskfit.machine.cpu_bf16_native`). The weights, the adapter, the optimiser and the
    loss stay float32; training, validation, evaluation and the server compute under it alike
    (:meth:`Hardware.computing`)."""
    return device == "cpu" and dtype == "auto" and cpu_bf16_native()


def resolve_hardware(spec: TrainSpec) -> Hardware:
    """bfloat16 weights on a GPU that supports it; on a CPU float32 weights, with training's
    matrix products in bfloat16 where the CPU multiplies them natively (:func:`cpu_autocast`);
    every core (shared among data-parallel processes) unless ``spec.threads`` says otherwise."""
    import torch

    from taskfit.training import fsdp

    fsdp.check(spec)
    cuda = torch.cuda.is_available()
    if cuda and "LOCAL_RANK" in os.environ:  # one GPU per process under accelerate launch / torchrun
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    if spec.method == "qlora" and not cuda:
        raise ConfigError("train.method: qlora keeps the base model in 4-bit with bitsandbytes, which "
                          "needs a CUDA GPU, and this machine has none",
                          hint="use `method: lora` (the same adapter, with a float32 base) on this machine")
    if spec.method == "qlora":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("train.method: qlora needs the bitsandbytes package, which is not installed",
                              hint='pip install -e ".[qlora]"') from None
    if spec.device == "cuda" and not cuda:
        raise ConfigError("train.device: cuda, but torch sees no CUDA GPU on this machine",
                          hint="set `device: auto` or `device: cpu`")
    device = "cuda" if (spec.device == "cuda" or (spec.device == "auto" and cuda)) else "cpu"
    if spec.dtype != "auto":
        dtype = spec.dtype
    elif device == "cuda":
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    else:
        dtype = "float32"
    cores = cpu_cores()
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # data-parallel processes on this machine
    threads = spec.threads or max(1, cores // processes)
    if spec.threads and threads * processes > cores:
        warnings.warn(f"train.threads: {threads} threads in each of {processes} process(es) on {cores} core(s); "
                      "torch slows down when its threads outnumber the cores: leave train.threads empty to "
                      "share the cores out", RuntimeWarning, stacklevel=2)
    if device == "cpu":
        torch.set_num_threads(threads)
    return Hardware(device=device, dtype=dtype, threads=threads, setting=spec.dtype)
