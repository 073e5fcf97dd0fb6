"""``taskfit export RUN --format gguf-lora``: the adapter as a GGUF LoRA file that llama.cpp and
Ollama load beside the base model's GGUF, with an Ollama Modelfile.

The file follows llama.cpp's own ``convert_lora_to_gguf.py``: ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, and for each adapted weight its GGUF name with
``.lora_a`` (PEFT's ``lora_A``, shape r x in) and ``.lora_b`` (``lora_B``, out x r). Two details
decide whether the adapter does what it did in training: llama.cpp stores the query and key
projections of Llama-family models with their rows permuted for its rotary layout, so the same
permutation is applied to ``lora_b`` of ``q_proj`` and ``k_proj``; and llama.cpp scales by
``alpha / r``, so an rsLoRA adapter (``alpha / sqrt(r)``) is written with the equivalent alpha.

The Modelfile asks the model as training did: the task's system prompt (``SYSTEM``) and the base
model's chat template in Ollama's Go-template form (``TEMPLATE``). Only ChatML (SmolLM2, Qwen and
the test model) is translated, and only after checking that the tokenizer's own template renders
probe conversations exactly as ChatML does; any other template is left out with a comment that
says so, rather than written wrong.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from taskfit.errors import ConfigError
from taskfit.training.artifacts import find_adapter, write_atomically

# ChatML in Ollama's Go-template form. Ollama puts the Modelfile's SYSTEM first in .Messages
# when a request has no system message of its own.
CHATML_OLLAMA = ('{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
                 '{{ end }}<|im_start|>assistant\n')
CHATML_STOP = "<|im_end|>"
# Architectures whose llama.cpp conversion is Llama's (with the q/k row permutation).
PERMUTED = frozenset({"llama", "mistral"})
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _permute(weights: Any, n_head: int, n_head_kv: int | None) -> Any:
    """llama.cpp's ``LlamaModel.permute`` (rows regrouped for its rotary layout)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def base_gguf(base_name: str) -> Path:
    """The GGUF file of the base model: the embedded model's own, or a ``.gguf`` given directly."""
    from taskfit.models.registry import EMBEDDED, _embedded_gguf

    if base_name in EMBEDDED:
        return _embedded_gguf(EMBEDDED[base_name])[0]
    path = Path(base_name)
    if path.suffix == ".gguf" and path.exists():
        return path
    raise ConfigError(f"the base model {base_name} has no GGUF file that taskfit knows of",
                      hint="convert it with llama.cpp's convert_hf_to_gguf.py and pass --base-gguf FILE")


def _chatml(messages: list[dict[str, str]], generation_prompt: bool) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if generation_prompt else "")


def is_chatml(tokenizer: Any) -> bool:
    """Whether ``tokenizer``'s chat template renders conversations exactly as ChatML (probed
    with a system and a user turn, with and without the assistant's answer)."""
    probe = [{"role": "system", "content": "S p"}, {"role": "user", "content": "U\nq"}]
    answered = [*probe, {"role": "assistant", "content": "A a"}]
    try:
        return all(tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=g) == _chatml(m, g)
                   for m, g in ((probe, True), (answered, False)))
    except (ValueError, TypeError):  # no chat template, or one that refuses the probe
        return False


def _quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise ConfigError(f'the {what} contains """, which an Ollama Modelfile cannot hold',
                          hint='remove the triple quotes from it and export again')
    return f'"""{text}"""'


def modelfile(name: str, base: Path, tokenizer: Any, system_prompt: str | None) -> str:
    """The Ollama Modelfile of an exported adapter: the base GGUF, the adapter, the chat
    template (ChatML only, see the module's docstring) and the task's system prompt."""
    lines = [f"# ollama create {name} -f Modelfile", f"FROM {base}", "ADAPTER ./adapter.gguf"]
    if is_chatml(tokenizer):
        lines += [f"TEMPLATE {_quoted(CHATML_OLLAMA, 'chat template')}", f'PARAMETER stop "{CHATML_STOP}"']
    else:
        lines += ["# No TEMPLATE: taskfit translates only ChatML chat templates into Ollama's form, and this",
                  "# model's template is not ChatML. Write its TEMPLATE by hand (Ollama's docs/template.md),",
                  "# or Ollama uses the template it guesses from the base GGUF, which may differ from training."]
    if system_prompt is not None:
        lines.append(f"SYSTEM {_quoted(system_prompt, 'system prompt')}")
    else:
        lines.append("# No SYSTEM: the run directory has no config.resolved.yaml naming the task's system prompt.")
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


def _system_prompt(run_dir: Path) -> str | None:
    from taskfit.config import load_config

    resolved = run_dir / "config.resolved.yaml"
    return load_config(resolved).task.system_prompt if resolved.exists() else None


def export_gguf_lora(run_dir: Path, dest: Path | None = None, base: Path | None = None,
                     status: Callable[[str], None] | None = None) -> Path:
    """Write ``adapter.gguf`` and an Ollama ``Modelfile`` to ``dest`` (default ``RUN/gguf``)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    adapter = find_adapter(run_dir)
    config = json.loads((adapter / "adapter_config.json").read_text())
    if config.get("task_type") == "SEQ_CLS":
        raise ConfigError(f"{adapter}: a classification-head adapter (train.classify_head) has no GGUF form: "
                          "llama.cpp runs the model as a language model, with no slot for the head",
                          hint="export it with `taskfit export --merged` (a transformers sequence classifier), "
                               "and serve it with the transformers engine")
    if config.get("peft_type") != "LORA":
        raise ConfigError(f"{adapter}: a {config.get('peft_type')} adapter; only LoRA exports to GGUF")
    if config.get("use_dora"):
        raise ConfigError(f"{adapter}: llama.cpp cannot apply DoRA adapters", hint="train with use_dora: false")
    manifest = adapter.parent / "manifest.json"
    base_name = (json.loads(manifest.read_text())["model"]["name"] if manifest.exists()
                 else config["base_model_name_or_path"])
    base = base or base_gguf(base_name)
    from taskfit.models.registry import gguf_reader, load_tokenizer

    tokenizer = load_tokenizer(base_name)
    text = modelfile(adapter.parent.name, base, tokenizer, _system_prompt(adapter.parent))
    if status and not is_chatml(tokenizer):
        status("the Modelfile has no TEMPLATE: this model's chat template is not ChatML (see its comment)")
    reader = gguf_reader(str(base))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    field = lambda key: int(reader.fields[f"{arch}.{key}"].parts[-1][0])  # noqa: E731
    n_head, n_kv, n_layers = field("attention.head_count"), field("attention.head_count_kv"), field("block_count")
    if arch not in PERMUTED:
        raise ConfigError(f"{base}: architecture {arch}; the GGUF-LoRA export supports {sorted(PERMUTED)}")
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, n_layers)
    in_base = {t.name for t in reader.tensors}

    r = int(config["r"])
    alpha = float(config.get("lora_alpha", r))
    if config.get("use_rslora"):
        alpha *= math.sqrt(r)  # llama.cpp scales by alpha / r
    if config.get("alpha_pattern") or config.get("rank_pattern"):
        raise ConfigError(f"{adapter}: per-module rank or alpha patterns are not supported by the GGUF export")
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
        module, _, part = key.rpartition(".lora_")
        if part not in ("A.weight", "B.weight"):
            raise ConfigError(f"{adapter}: tensor {key} is not a LoRA A/B weight; cannot export it")
        hf_name = module.removeprefix("base_model.model.")
        pairs.setdefault(hf_name, {})[part[0]] = value.astype(np.float32)

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp / "adapter.gguf"), arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(f"{adapter.parent.name} (taskfit LoRA)")
        for hf_name, ab in sorted(pairs.items()):
            target = names.get_name(hf_name)
            if target is None or f"{target}.weight" not in in_base:
                raise ConfigError(f"{adapter}: {hf_name} has no counterpart in {base.name}")
            lora_b = ab["B"]
            if hf_name.endswith("q_proj"):
                lora_b = _permute(lora_b, n_head, n_head)
            elif hf_name.endswith("k_proj"):
                lora_b = _permute(lora_b, n_head, n_kv)
            writer.add_tensor(f"{target}.weight.lora_a", np.ascontiguousarray(ab["A"]))
            writer.add_tensor(f"{target}.weight.lora_b", np.ascontiguousarray(lora_b))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        (tmp / "Modelfile").write_text(text, encoding="utf-8")
        (tmp / "base.txt").write_text(f"{base}\n", encoding="utf-8")

    if status:
        status(f"writing the GGUF LoRA of {adapter} ({len(pairs)} adapted weights, base {base.name})")
    return write_atomically(dest or adapter.parent / "gguf", write)
