"""What each ``train.method`` needs, in one place: which objective trains it, which weights it
trains (a LoRA adapter, built from ``train.lora``, or every weight), and how its artifact loads.

| method | objective | trains                          | artifact          |
|--------|-----------|---------------------------------|-------------------|
| lora   | sft.py    | a fresh LoRA adapter            | ``run/adapter``   |
| qlora  | sft.py    | a LoRA adapter on a 4-bit base  | ``run/adapter``   |
| full   | sft.py    | every weight                    | ``run/full_model``|
| dpo    | dpo.py    | a LoRA adapter, fresh or an SFT | ``run/adapter``   |
|        |           | run's (``train.dpo.start_from``)|                   |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from taskfit.config import LoraSpec, TrainSpec
from taskfit.paths import RunDir


@dataclass(frozen=True)
class Method:
    objective: Literal["sft", "dpo"]  # cross-entropy on answers (sft.py) or preference pairs (dpo.py)
    adapter: bool  # trains a LoRA adapter; False: every weight of the model
    quantized: bool = False  # the base is 4-bit (loaded so by the caller) and prepared for k-bit training


def method_of(spec: TrainSpec) -> Method:
    """What ``spec.method`` needs."""
    return {"lora": Method(objective="sft", adapter=True),
            "qlora": Method(objective="sft", adapter=True, quantized=True),
            "full": Method(objective="sft", adapter=False),
            "dpo": Method(objective="dpo", adapter=True)}[spec.method]


def lora_config(lora: LoraSpec) -> Any:
    """PEFT's LoraConfig for ``train.lora``."""
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, use_dora=lora.use_dora,
                      use_rslora=lora.use_rslora, task_type="CAUSAL_LM")


def make_trainable(model: Any, spec: TrainSpec, adapter: Path | None = None) -> Any:
    """Make the right parameters trainable for ``spec.method``: fresh LoRA adapters (seeded, so
    the initial adapter is reproducible), a given adapter to continue, or every weight (full).
    Returns the model to train (a PEFT model for the adapter methods)."""
    import torch

    method = method_of(spec)
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if not method.adapter:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    if method.quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing)
    if adapter is not None:
        return PeftModel.from_pretrained(model, adapter, is_trainable=True)
    torch.manual_seed(spec.seed)
    return get_peft_model(model, lora_config(spec.lora))


def load_hint(spec: TrainSpec, dest: Path, base_path: Path | str) -> str:
    """The Python that loads the artifact saved at ``dest`` (for the model card)."""
    if not method_of(spec).adapter:
        return f"from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained('{dest}')"
    return ("from peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n"
            f"base = AutoModelForCausalLM.from_pretrained('{base_path}')\n"
            f"model = PeftModel.from_pretrained(base, '{dest}')")


def artifact_dir(spec: TrainSpec, run: RunDir) -> Path:
    """Where the run's trained artifact goes: the adapter, or the whole model."""
    return run.adapter if method_of(spec).adapter else run.full_model
