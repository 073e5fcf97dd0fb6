"""The forgetting check: what a fine-tune cost outside its task.

Each probe item is rendered by :func:`taskfit.rendering.render` (the model's own chat template,
a fixed system prompt, the probe's three solved items as earlier turns, the passage and question
as a qa row, the gold answer as the assistant's turn) and read once by each model,
teacher-forced: no generation. The system turn and the solved items are the same for every item,
so each model reads them once into a key/value cache, and an item costs one forward pass over its
own ~80 tokens per model. For a LoRA adapter the base is the same model with its adapter disabled
(PEFT's ``disable_adapter``), so one copy of the weights serves both.

Why solved items first: without them the measure is about format, not ability. Asked cold, the
embedded model starts its answer with "The" and seldom stops after a phrase, and a fine-tune for
short answers (the quickstart's ticket router) is then *better* at the gold answer's first and last
tokens while it would answer a Wikipedia question with a queue name. Shown three solved items, the
base starts with the answer more often and the same fine-tune falls behind it (docs/evaluation.md).

Per item, for each model: whether every token of the gold answer (the end-of-turn token left out)
is its greedy choice given the tokens before, i.e. whether greedy decoding would write the answer
(answered right), and the mean log-probability of those tokens; and the mean KL(fine-tuned ‖ base)
of the two next-token distributions at those positions. The output layer runs at those few positions only. A zero
adapter (a fresh LoRA: B = 0) gives identical figures and a KL of exactly 0 (tested).
"""

from __future__ import annotations

import copy
import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Sequence

from taskfit.config import TaskSpec
from taskfit.errors import ConfigError
from taskfit.records import Example, ForgettingResult
from taskfit.models.compat import cache_of
from taskfit.rendering import Rendered, render, template_ids, user_text
from taskfit.training.batching import chunk_by_tokens, collate
from taskfit.training.forward import answer_logits_of, decoder_of

# Padded tokens per forward pass: activations stay small (the output layer runs at the answers'
# positions only, a few per item).
PASS_TOKENS = 1024


@dataclass(frozen=True)
class ProbeSet:
    """A probe set shipped in this package: its file, where it comes from, its licence, and the
    instruction its items are rendered with."""

    name: str
    file: str
    source: str
    licence: str
    system_prompt: str

    def text(self) -> str:
        return resources.files(__package__).joinpath(self.file).read_text(encoding="utf-8")

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text().encode()).hexdigest()[:16]


GENERAL = ProbeSet(
    name="general", file="general.jsonl",
    source="SQuAD 2.0 (Rajpurkar, Jia & Liang 2018): Wikipedia passages cut to the answer's sentence, "
           "questions and gold answers",
    licence="CC BY-SA 4.0",
    system_prompt="Answer the question with a short phrase taken from the context.")


@dataclass(frozen=True)
class Probe:
    """The solved items shown before each probe item (``shots``), and the items scored."""

    shots: list[Example]
    items: list[Example]


def load_probe(probe: ProbeSet, items: int) -> Probe:
    """The probe's demonstrations and its first ``items`` items, as qa examples (passage as context)."""
    rows = [json.loads(line) for line in probe.text().splitlines() if line.strip()]
    examples = [(bool(r.get("shot")), Example(id=r["id"], input=r["question"], target=r["answer"],
                                              context=r["context"])) for r in rows]
    scored = [ex for shot, ex in examples if not shot]
    if items > len(scored):
        raise ConfigError(f"eval.forgetting.items: {items} asked, and the {probe.name} probe holds {len(scored)}",
                          hint=f"set eval.forgetting.items to at most {len(scored)}")
    return Probe(shots=[ex for shot, ex in examples if shot], items=scored[:items])


def _task(probe: ProbeSet) -> TaskSpec:
    return TaskSpec(kind="qa", name=f"probe-{probe.name}", success="answers the probe's questions",
                    system_prompt=probe.system_prompt)


def _answer_tokens(tokenizer: Any, task: TaskSpec, example: Example, shots: Sequence[Example]) -> Rendered:
    """The item rendered after the demonstrations with its gold answer, less the end-of-turn token:
    whether a model stops after a short phrase is a matter of format, which any fine-tune for short
    answers changes (on the first 64 items, the end-of-turn token is the embedded base model's greedy
    choice on 12.5% of them and the quickstart's fine-tune's on 87.5%, without demonstrations; on
    29.7% and 89.1% with them), not of what it can still read and answer."""
    rendered = render(tokenizer, task, example, target=example.target, shots=shots)
    return Rendered(ids=rendered.ids[:-1], n_prompt=rendered.n_prompt)


def _shared_prefix(tokenizer: Any, task: TaskSpec, shots: Sequence[Example], rows: Sequence[Rendered]) -> list[int]:
    """The tokens every item starts with (the system turn and the demonstrations), read once per
    model into a key/value cache; empty when a template renders them differently per item."""
    shown = [{"role": "system", "content": task.system_text}]
    for shot in shots:
        shown += [{"role": "user", "content": user_text(shot)}, {"role": "assistant", "content": shot.target}]
    prefix = template_ids(tokenizer, shown, generation_prompt=False)
    fits = all(r.ids[: len(prefix)] == prefix and r.n_prompt > len(prefix) for r in rows)
    return prefix if fits else []


def measure_forgetting(candidate: str, tokenizer: Any, tuned: Any, base: Any | None, probe: Probe,
                       source: ProbeSet = GENERAL, on_item: Callable[[], None] | None = None) -> ForgettingResult:
    """The base and the fine-tuned model on ``probe`` (from :func:`load_probe`), item by item.

    ``base`` None: ``tuned`` is a PEFT model and the base is ``tuned`` with its adapter disabled;
    otherwise the base is loaded apart (a full fine-tune). Both are read without gradients; the
    caller puts them in eval mode. The system turn and the demonstrations, the same for every item,
    are read once per model and continued from their key/value cache."""
    import torch

    if base is None and not hasattr(tuned, "disable_adapter"):
        raise TypeError("measure_forgetting: base is None, so tuned must be a PEFT model (disable_adapter)")
    task = _task(source)
    rows = [_answer_tokens(tokenizer, task, ex, probe.shots) for ex in probe.items]
    prefix = _shared_prefix(tokenizer, task, probe.shots, rows)
    rest = [Rendered(ids=r.ids[len(prefix):], n_prompt=r.n_prompt - len(prefix)) for r in rows]
    sides = {"t": (tuned, nullcontext), "b": (tuned, tuned.disable_adapter) if base is None else (base, nullcontext)}
    caches = {}
    with torch.no_grad():
        for side, (model, mode) in sides.items():
            with mode():
                caches[side] = _read(model, prefix)
    order = sorted(range(len(rest)), key=lambda i: len(rest[i].ids))  # similar lengths pad little
    figures: dict[str, list[float]] = {k: [0.0] * len(rest) for k in ("ba", "ta", "bl", "tl", "kl")}
    for chunk in chunk_by_tokens(order, [len(r.ids) for r in rest], PASS_TOKENS):
        batch = collate([rest[i] for i in chunk], tokenizer.pad_token_id)
        n, width = batch.ids.shape
        mask = torch.cat([torch.ones(n, len(prefix), dtype=batch.mask.dtype), batch.mask], dim=1)
        positions = (len(prefix) + torch.arange(width)).expand(n, width)
        lp = {}
        with torch.no_grad():
            for side, (model, mode) in sides.items():
                cache = copy.deepcopy(caches[side])
                if cache is not None:
                    cache.batch_repeat_interleave(n)
                with mode():  # logits at the answer's positions only: [N, V]
                    logits = answer_logits_of(model, batch.ids, mask, positions, *batch.src, cache=cache)
                lp[side] = torch.log_softmax(logits, dim=-1).cpu()  # beside batch.targets, wherever the model is
        per_token = {"kl": (lp["t"].exp() * (lp["t"] - lp["b"])).sum(-1),  # [N] nats
                     "ba": (lp["b"].argmax(-1) == batch.targets).float(),
                     "ta": (lp["t"].argmax(-1) == batch.targets).float(),
                     "bl": lp["b"].gather(1, batch.targets[:, None])[:, 0],
                     "tl": lp["t"].gather(1, batch.targets[:, None])[:, 0]}
        for j, i in enumerate(chunk):
            mine = batch.owner == j
            for key, values in per_token.items():  # right: every answer token is the greedy choice
                figures[key][i] = float(values[mine].min() if key in ("ba", "ta") else values[mine].mean())
            if on_item:
                on_item()
    return ForgettingResult(candidate=candidate, probe=source.source, licence=source.licence, n=len(rows),
                            base_right=figures["ba"], tuned_right=figures["ta"], base_loglik=figures["bl"],
                            tuned_loglik=figures["tl"], kl=figures["kl"])


def _read(model: Any, prefix: Sequence[int]) -> Any:
    """The key/value cache of ``prefix`` read by ``model``'s decoder; None for an empty prefix."""
    import torch

    if not prefix:
        return None
    _, body = decoder_of(model)
    device = next(body.parameters()).device
    return cache_of(body(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True))
