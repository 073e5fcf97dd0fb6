"""What a training run leaves behind: the adapter (or full model) in the plain PEFT/transformers
layout, a model card beside it, and an optional merged model. Every artifact is written to a
``.tmp`` directory and renamed into place, so a directory with the final name is always whole."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import yaml

from taskfit.errors import ConfigError


def write_atomically(dest: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)``, then rename ``tmp_dir`` to ``dest`` (replacing an older one)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if dest.exists():
        old = dest.with_name(dest.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    return dest


def model_card(*, title: str, base: dict[str, Any], method: str, train_spec: dict[str, Any],
               data_summary: str, fingerprints: dict[str, str], training: dict[str, Any],
               load_hint: str = "") -> str:
    """A model card in Markdown: what the model is, what it was trained on and how, and how to
    load it. ``taskfit run`` appends the held-out scorecard once it is known."""
    lines = [f"# {title}", "",
             f"Fine-tuned with [taskfit](https://github.com/) by `{method}`.", "",
             "## Base model", "",
             f"- name: `{base.get('name')}`",
             f"- source: {base.get('description') or base.get('path')}",
             f"- licence: {base.get('licence') or 'unknown: check the base model before you ship'}", "",
             "## Data", "", f"- {data_summary}"]
    lines += [f"- {k} fingerprint: `{v}`" for k, v in fingerprints.items() if v]
    lines += ["", "## Method and hyperparameters", "", "```yaml",
              yaml.safe_dump(train_spec, sort_keys=False).rstrip(), "```", "",
              "## Training", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in training.items()]
    if load_hint:
        lines += ["", "## Load it", "", "```python", load_hint, "```"]
    return "\n".join(lines) + "\n"


def save_trained(model: Any, tokenizer: Any, dest: Path, card: str, state_dict: dict[str, Any] | None = None,
                 extra: dict[str, str] | None = None) -> Path:
    """Save the adapter (PEFT model) or the whole model (full fine-tune) with its tokenizer and
    model card, atomically; ``state_dict``: the weights gathered from an FSDP-sharded model;
    ``extra``: more text files to write beside them (a head's labels), by name."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, **({"state_dict": state_dict} if state_dict is not None else {}))
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")

    return write_atomically(dest, write)


def find_adapter(path: Path) -> Path:
    """An adapter directory, given it or the run directory that holds one."""
    for candidate in (path, path / "adapter"):
        if (candidate / "adapter_config.json").exists():
            return candidate
    raise ConfigError(f"{path}: no adapter here (no adapter_config.json in it or in {path / 'adapter'})",
                      hint="name a finished run directory, or the adapter directory inside one")


def export_merged(run_dir: Path, dest: Path | None = None, status: Callable[[str], None] | None = None) -> Path:
    """Fold the run's LoRA adapter into its base model and save an ordinary transformers model
    (no PEFT needed to load it), with the tokenizer and the model card: a causal LM, or for a
    classification-head adapter a sequence classifier whose config maps its ids to the labels."""
    from peft import PeftModel

    from taskfit.models import load_model
    from taskfit.models.head import HEAD_FILE, answer_code, load_classifier, read_head

    adapter = find_adapter(run_dir)
    config = json.loads((adapter / "adapter_config.json").read_text())
    manifest_path = adapter.parent / "manifest.json"
    base_name = (json.loads(manifest_path.read_text())["model"]["name"] if manifest_path.exists()
                 else config["base_model_name_or_path"])
    lm = load_model(base_name, status=status)
    dest = dest or adapter.parent / "merged"
    card_path = adapter / "README.md"
    card = card_path.read_text(encoding="utf-8") if card_path.exists() else ""
    if read_head(adapter) is not None:  # a classification head: a sequence classifier, labels in its config
        merged, head = load_classifier(lm.model, lm.tokenizer, adapter, merged=True)
        card += ("\nThis is the adapter and its classification head merged into the base model; load it with "
                 "`AutoModelForSequenceClassification.from_pretrained` (its config maps ids to labels) and give "
                 "it the input text alone")
        if head.pooling == "last":  # transformers' own form: its pipeline reads it as trained
            card += (", e.g. `pipeline('text-classification', model=PATH, truncation=True, "
                     f"max_length={head.max_length})`.\n")
        else:  # the head reads the mean of the hidden states, which transformers' forward does not take
            card += (". Its head reads the mean of the text's final hidden states (not the last token, which "
                     "the text-classification pipeline would give it):\n\n```python\nimport torch\n"
                     "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
                     "model = AutoModelForSequenceClassification.from_pretrained(PATH).eval()\n"
                     f"tokenizer = AutoTokenizer.from_pretrained(PATH)\nmax_length = {head.max_length}\n"
                     "with torch.no_grad():\n" + "".join(f"    {line}\n" for line in answer_code("mean").splitlines())
                     + "label = model.config.id2label[int(logits.argmax())]\n```\n")
        return save_trained(merged, lm.tokenizer, dest, card, extra={HEAD_FILE: head.to_json()})
    merged = PeftModel.from_pretrained(lm.model, adapter).merge_and_unload()
    card += "\nThis is the adapter merged into its base model; load it with `AutoModelForCausalLM.from_pretrained`.\n"
    return save_trained(merged, lm.tokenizer, dest, card)
