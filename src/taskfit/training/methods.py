"""What each ``train.method`` needs, in one place: which objective trains it, which weights it
trains (a LoRA adapter, built from ``train.lora``, or every weight), and how its artifact loads.

| method | objective | trains                          | artifact          |
|--------|-----------|---------------------------------|-------------------|
| lora   | sft.py    | a fresh LoRA adapter            | ``run/adapter``   |
| qlora  | sft.py    | a LoRA adapter on a 4-bit base  | ``run/adapter``   |
| full   | sft.py    | every weight                    | ``run/full_model``|
| dpo    | dpo.py    | a LoRA adapter, fresh or an SFT | ``run/adapter``   |
|        |           | run's (``train.dpo.start_from``)|                   |
| lora with ``train.classify_head`` | head.py | a LoRA adapter and a linear head | ``run/adapter`` |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from taskfit.config import LoraSpec, TrainSpec
from taskfit.errors import ConfigError
from taskfit.paths import RunDir


@dataclass(frozen=True)
class Method:
    objective: Literal["sft", "dpo", "head"]  # cross-entropy on answers (sft.py), preference pairs
    # (dpo.py), or cross-entropy over the labels through a classification head (head.py)
    adapter: bool  # trains a LoRA adapter; False: every weight of the model
    quantized: bool = False  # the base is 4-bit (loaded so by the caller) and prepared for k-bit training


def method_of(spec: TrainSpec) -> Method:
    """What ``spec.method`` (and ``spec.classify_head``) needs."""
    if spec.classify_head:  # config validation allows it with lora only
        return Method(objective="head", adapter=True)
    return {"lora": Method(objective="sft", adapter=True),
            "qlora": Method(objective="sft", adapter=True, quantized=True),
            "full": Method(objective="sft", adapter=False),
            "dpo": Method(objective="dpo", adapter=True)}[spec.method]


def adapted_layers(lora: LoraSpec, n_layers: int | None) -> list[int] | None:
    """The decoder layers ``train.lora.layers`` adapts (the top N of ``n_layers``), or None for all."""
    if lora.layers is None:
        return None
    if not n_layers:
        raise ConfigError("train.lora.layers: this model's config does not say how many decoder layers it has",
                          hint="leave train.lora.layers empty to adapt every layer")
    if lora.layers > n_layers:
        raise ConfigError(f"train.lora.layers: {lora.layers}, but the model has {n_layers} decoder layers",
                          hint=f"give at most {n_layers}, or leave it empty to adapt every layer")
    return list(range(n_layers - lora.layers, n_layers))


def layer_linears(model: Any) -> list[str]:
    """The names (last part) of the linear projections inside ``model``'s decoder layers: what
    ``all-linear`` means there (PEFT takes a list, not ``all-linear``, with chosen layers)."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}"})


def lora_config(lora: LoraSpec, head: bool = False, model: Any = None) -> Any:
    """PEFT's LoraConfig for ``train.lora`` (on ``model``, whose decoder layers ``lora.layers``
    counts); with ``head``, for a sequence classifier whose head (``score``) is trained whole and
    saved with the adapter."""
    from peft import LoraConfig

    from taskfit.models.head import HEAD_MODULE

    kind = {"task_type": "SEQ_CLS", "modules_to_save": [HEAD_MODULE]} if head else {"task_type": "CAUSAL_LM"}
    targets = lora.target_modules
    layers = adapted_layers(lora, getattr(getattr(model, "config", None), "num_hidden_layers", None))
    if layers is not None:
        kind["layers_to_transform"] = layers
        if targets == "all-linear":
            targets = layer_linears(model)
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                      use_dora=lora.use_dora, use_rslora=lora.use_rslora, **kind)


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
    return get_peft_model(model, lora_config(spec.lora, head=method.objective == "head", model=model))


def load_hint(spec: TrainSpec, dest: Path, base_path: Path | str) -> str:
    """The Python that loads the artifact saved at ``dest`` (for the model card)."""
    if not method_of(spec).adapter:
        return f"from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained('{dest}')"
    if method_of(spec).objective == "head":  # the input is the text alone (rendering.classifier_ids)
        from taskfit.models.head import HEAD_FILE, answer_code

        return ("import json\nfrom peft import PeftModel\n"
                "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
                f"head = json.load(open('{dest / HEAD_FILE}'))\n"
                f"tokenizer = AutoTokenizer.from_pretrained('{dest}')\n"
                f"base = AutoModelForSequenceClassification.from_pretrained('{base_path}', "
                "num_labels=len(head['labels']), pad_token_id=tokenizer.pad_token_id)\n"
                f"model = PeftModel.from_pretrained(base, '{dest}').eval()\n"
                "max_length = head['max_length']\n" + answer_code(spec.head_pooling)
                + "label = head['labels'][int(logits.argmax())]")
    return ("from peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n"
            f"base = AutoModelForCausalLM.from_pretrained('{base_path}')\n"
            f"model = PeftModel.from_pretrained(base, '{dest}')")


def artifact_dir(spec: TrainSpec, run: RunDir) -> Path:
    """Where the run's trained artifact goes: the adapter, or the whole model."""
    return run.adapter if method_of(spec).adapter else run.full_model
