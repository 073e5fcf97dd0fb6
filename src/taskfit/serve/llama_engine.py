"""``engine: llama-cpp``: the same server on llama.cpp's CPU kernels (llama-cpp-python, the
optional ``llama`` extra), for the base model's GGUF and each adapter's GGUF LoRA.

On a 2-core CPU llama.cpp decodes the embedded model several times faster than transformers, so
this is the engine for generation on CPU. Each served model (the base with one adapter: the
Python bindings take one LoRA per context) gets a llama.cpp generation context of its own, made at
its first request, with one sequence per running request: requests are decoded together, joining
the running batch between two steps, exactly as on the transformers engine (the engine's
:class:`~taskfit.serve.engine._Running` over :class:`~taskfit.baselines.llama_cpp.LlamaDecoder`),
and the start the prompts share (the task's system prompt and chat header) is read once. Its cache
holds ``limits.context`` cells times ``min(limits.max_batch, 4)``; a request that would not fit
beside the running ones waits for them. Adapters without a GGUF file are exported on load
(``taskfit export --format gguf-lora``). ``classify`` adapters score every label in one batched
decode in a context of their own (:class:`~taskfit.baselines.llama_cpp.LlamaCppScorer`); JSON
schemas are enforced by the same llguidance grammar as on the transformers engine, through the
same :class:`~taskfit.decoding.Row` that picks every sequence's tokens there.
"""

from __future__ import annotations

from typing import Any

from taskfit.baselines.llama_cpp import Lanes, LlamaCppScorer, LlamaDecoder, load_llama
from taskfit.errors import ConfigError
from taskfit.serve.config import AdapterSpec
from taskfit.tasks import get_task
from taskfit.serve.engine import Engine, Served, Trained


CONTEXTS = 4  # a model's generation cache holds limits.context cells times this (or max_batch, if fewer)


class LlamaCppEngine(Engine):

    def load(self) -> None:
        from taskfit.baselines.llama_cpp import require_llama
        from taskfit.models.registry import load_tokenizer
        from taskfit.training.gguf_lora import base_gguf

        require_llama()  # before anything is read or loaded
        base, tasks = self.base_model()
        self.base_file = base_gguf(base)
        self.tokenizer = load_tokenizer(base, status=self.status)
        self.context = self.spec.limits.context
        self.mixed = False
        self.llms: dict[str, Any] = {}
        self.lanes: dict[str, Lanes] = {}  # each model's generation context (LlamaDecoder's)
        self.name_base(base)
        self.status(f"loading {self.base_file.name} in llama.cpp")
        self.llms[self.base_name] = load_llama(self.base_file, None, self.context, self.spec.threads)
        for name, adapter in self.spec.adapters_by_path.items():
            self._add_adapter(name, adapter, tasks[name])

    def _add_adapter(self, name: str, spec: AdapterSpec, run: Trained) -> Served:
        from taskfit.training.artifacts import find_adapter
        from taskfit.training.gguf_lora import export_gguf_lora

        if name in self.models:
            raise ConfigError(f"model name {name!r} is already served")
        path = find_adapter(spec.path)
        gguf = path.parent / "gguf" / "adapter.gguf"
        if not gguf.exists():
            export_gguf_lora(path, base=self.base_file, status=self.status)
        self.status(f"loading adapter {name} ({gguf}) in llama.cpp")
        self.llms[name] = load_llama(self.base_file, gguf, self.context, self.spec.threads)
        served = self.served(name, spec, run, path)
        if served.task is not None and get_task(served.task.kind).scores_labels:
            served.scorer = LlamaCppScorer(self.llms[name], self.tokenizer, served.task, served.max_length)
        self.models[name] = served
        return served

    def _unload(self, served: Served) -> None:
        if isinstance(served.scorer, LlamaCppScorer):
            served.scorer.close()
        if (lanes := self.lanes.pop(served.name, None)) is not None:
            lanes.close()
        self.llms.pop(served.name).close()

    def decoder(self, model: Served, mixed: bool, **callbacks: Any) -> Any:
        llm, lanes = self.llms[model.name], self.lanes.get(model.name)
        if lanes is None:  # made at the model's first generation request
            limits = self.spec.limits
            lanes = self.lanes[model.name] = Lanes(llm, limits.max_batch + 1,
                                                   n_ctx=limits.context * min(limits.max_batch, CONTEXTS))
        return LlamaDecoder(lanes, self.tokenizer, {self.tokenizer.eos_token_id, llm.token_eos()}, **callbacks)
