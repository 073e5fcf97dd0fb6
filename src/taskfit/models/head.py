"""A classification head over a decoder model, for ``train.classify_head``.

The model is transformers' ``AutoModelForSequenceClassification`` for the base's architecture: the
decoder's body and one linear layer, ``score``, over the hidden state of the last token that is not
padding, giving one logit per label; their softmax is the confidence. It is built over a causal
model already loaded (:func:`classifier_over`), sharing its weight tensors rather than copying them
or loading the base again; the module tree is its own, so the LoRA layers PEFT injects for a head
never touch the causal model or the generative adapters the server runs beside it.

A head adapter is a PEFT adapter with ``task_type: SEQ_CLS`` whose ``score`` weights are saved with
it (``modules_to_save``), and ``classify_head.json`` beside it: the labels in the head's order and
the input length, so that the adapter directory alone says how to ask it. Its input is
:func:`taskfit.rendering.classifier_ids`: the example's text alone, in every path.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from taskfit.errors import ConfigError, ModelError

HEAD_FILE = "classify_head.json"
HEAD_MODULE = "score"  # the head's name in transformers' *ForSequenceClassification decoders


@dataclass(frozen=True)
class Head:
    """What a head adapter answers: ``labels`` in the order of its logits, the tokens of input it
    reads at most (the run's ``train.max_seq_length``), and what the head reads of the body's final
    hidden states (``train.head_pooling``): their mean over the text, or the last token's (an
    adapter written before pooling was a setting is ``last``)."""

    labels: tuple[str, ...]
    max_length: int
    pooling: Literal["mean", "last"] = "last"

    def to_json(self) -> str:
        return json.dumps({"labels": list(self.labels), "max_length": self.max_length, "pooling": self.pooling},
                          indent=1)


def read_head(adapter: Path) -> Head | None:
    """The head an adapter directory carries, or None for an ordinary (generative) adapter."""
    path = adapter / HEAD_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        pooling = data.get("pooling", "last")
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling {pooling!r} is neither mean nor last")
        return Head(labels=tuple(str(lab) for lab in data["labels"]), max_length=int(data["max_length"]),
                    pooling=pooling)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a classification head's description ({exc})",
                          hint='it holds {"labels": [...], "max_length": N, "pooling": "mean"}, as `taskfit '
                               'train` writes it') from None


def _share_body(source: Any, target: Any) -> None:
    """Point every weight and buffer of ``target`` (a body built on the meta device) at the
    same-named tensor of ``source``, whose LoRA layers, if a PEFT model injected any, are looked
    through to the base weights they wrap."""
    found = {}
    for name, tensor in itertools.chain(source.named_parameters(), source.named_buffers()):
        if ".lora_" not in name:
            found[name.replace(".base_layer.", ".")] = tensor
    for name, _ in list(itertools.chain(target.named_parameters(), target.named_buffers())):
        if name not in found:
            raise ModelError(f"cannot build the classifier over this model: its body has no {name}",
                             hint="train.classify_head needs a decoder whose sequence-classification form "
                                  "has the same body (Llama, Qwen, Mistral, Gemma, SmolLM...)")
        owner, _, leaf = name.rpartition(".")
        module = target.get_submodule(owner) if owner else target
        if leaf in module._parameters:
            module._parameters[leaf] = found[name]
        else:
            module._buffers[leaf] = found[name]


def classifier_over(model: Any, labels: Sequence[str], pad_token_id: int, seed: int = 0) -> Any:
    """A sequence-classification model over ``model``'s body (its tensors shared, not copied)
    with a fresh head for ``labels``: normal(0, ``initializer_range``) from ``seed``, on the
    body's device and dtype. ``pad_token_id`` tells the head which tokens are padding."""
    import torch
    from transformers import AutoModelForSequenceClassification

    decoder = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = copy.deepcopy(decoder.config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {lab: i for i, lab in enumerate(labels)}
    config.pad_token_id = pad_token_id
    config.problem_type = "single_label_classification"
    try:
        with torch.device("meta"):  # the structure only: the weights are the body's own
            classifier = AutoModelForSequenceClassification.from_config(config)
    except ValueError as exc:
        raise ModelError(f"{type(decoder).__name__} has no sequence-classification form in transformers "
                         f"({str(exc).splitlines()[0]})",
                         hint="train.classify_head needs a decoder transformers can classify with (Llama, "
                              "Qwen, Mistral, Gemma, SmolLM...); or set train.classify_head: false") from None
    head = getattr(classifier, HEAD_MODULE, None)
    if not isinstance(head, torch.nn.Linear):
        raise ModelError(f"{type(classifier).__name__} has no linear head named {HEAD_MODULE!r}",
                         hint="train.classify_head supports the decoders whose head is `score` (Llama, "
                              "Qwen, Mistral, Gemma, SmolLM...)")
    _share_body(getattr(decoder, decoder.base_model_prefix), getattr(classifier, classifier.base_model_prefix))
    weight = decoder.get_input_embeddings().weight
    torch.manual_seed(seed)
    fresh = torch.nn.Linear(head.in_features, len(labels), bias=head.bias is not None, device=weight.device,
                            dtype=weight.dtype)
    torch.nn.init.normal_(fresh.weight, std=getattr(config, "initializer_range", 0.02))
    if fresh.bias is not None:
        torch.nn.init.zeros_(fresh.bias)
    setattr(classifier, HEAD_MODULE, fresh)
    return classifier.eval()


def load_classifier(model: Any, tokenizer: Any, adapter: Path, merged: bool = False) -> tuple[Any, Head]:
    """The head adapter at ``adapter`` over ``model``'s body, in eval mode, with its :class:`Head`.
    ``merged`` folds the LoRA update into the body's weights, which ``model`` shares: it is
    changed too, so only a caller that is done with ``model`` may merge."""
    from peft import PeftModel

    head = read_head(adapter)
    if head is None:
        raise ConfigError(f"{adapter}: no {HEAD_FILE}, so not a classification-head adapter")
    try:
        loaded = PeftModel.from_pretrained(classifier_over(model, head.labels, tokenizer.pad_token_id), str(adapter))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{adapter}: cannot load this head adapter onto the base model "
                          f"({str(exc).splitlines()[0]})",
                          hint="serve and evaluate it on the base model it was trained on") from None
    return (loaded.merge_and_unload() if merged else loaded).eval(), head


def answer_code(pooling: str) -> str:
    """The Python that answers ``text`` as taskfit does, given ``model`` (a sequence classifier,
    with its PEFT adapter or merged), ``tokenizer`` and ``max_length``: it sets ``logits``."""
    inputs = "inputs = tokenizer(text, truncation=True, max_length=max_length, return_tensors='pt')\n"
    if pooling == "last":
        return inputs + "logits = model(**inputs).logits[0]\n"
    return (inputs + "classifier = model.get_base_model() if hasattr(model, 'get_base_model') else model\n"
            "hidden = classifier.base_model(**inputs).last_hidden_state  # the mean over the text's tokens\n"
            "logits = classifier.score(hidden.mean(dim=1))[0]\n")


def pool_and_score(model: Any, hidden: Any, mask: Any, pooling: str) -> Any:
    """The head's logits, float, from the body's final hidden states [B, T, H] of right-padded
    rows (``mask`` [B, T] marks their tokens): the mean over each row's tokens, or its last token."""
    import torch

    classifier = model.get_base_model() if hasattr(model, "get_base_model") else model
    if pooling == "last":
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), mask.sum(dim=1) - 1]
    else:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
    return getattr(classifier, HEAD_MODULE)(pooled).float()


def head_logits(model: Any, rows: Sequence[Sequence[int]], pad_token_id: int, pooling: str = "last") -> Any:
    """The head's logits, float [len(rows), labels], for rows of token ids right-padded into one pass.
    ``last``: the head reads each row's last token that is not padding (transformers' own forward);
    ``mean``: the mean of each row's final hidden states over its tokens, padding left out, so a
    row gets the same logits alone or in a batch. ``model`` is a classifier from
    :func:`classifier_over` or :func:`load_classifier`, with its adapter or merged."""
    import torch

    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    device = model.get_input_embeddings().weight.device
    ids, mask = ids.to(device), mask.to(device)
    if pooling == "last":
        return model(input_ids=ids, attention_mask=mask).logits.float()
    classifier = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = classifier.base_model(input_ids=ids, attention_mask=mask).last_hidden_state  # LoRA applies
    return pool_and_score(model, hidden, mask, pooling)
