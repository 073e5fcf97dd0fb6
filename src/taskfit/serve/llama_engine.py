"""``engine: llama-cpp``: the same server on llama.cpp's CPU kernels (llama-cpp-python, the
optional ``llama`` extra), for the base model's GGUF and each adapter's GGUF LoRA.

On a 2-core CPU llama.cpp decodes the embedded model several times faster than transformers, so
this is the engine for generation on CPU. Each served model (the base, or the base with one
adapter: the Python bindings take one LoRA per context) has a llama.cpp context whose sequences
are the requests decoded together (:class:`~taskfit.baselines.llama_cpp.LlamaDecoder`, the running batch of this engine: up to
``limits.max_batch`` requests, joining between two steps while the context has room for their
prompt and reply, each step one batched decode for all), and classify adapters a second one for
label scoring (:class:`~taskfit.baselines.llama_cpp.LlamaCppScorer`: every label read in one
batched decode). Adapters without a GGUF file are exported on load (``taskfit export --format
gguf-lora``). Tokens are picked as the transformers engine picks them (greedy, or sampled with
the request's seed), and JSON schemas are enforced by the same llguidance grammar.
"""

from __future__ import annotations

from typing import Any

from taskfit.baselines.llama_cpp import Lanes, LlamaCppScorer, LlamaDecoder, load_llama
from taskfit.errors import ConfigError
from taskfit.serve.config import AdapterSpec
from taskfit.tasks import get_task
from taskfit.serve.engine import Engine, Served, Trained

HOLDER_CONTEXT = 64  # the cells of each llama.cpp model's own context, which only holds the weights here


class LlamaCppEngine(Engine):
    def load(self) -> None:
        from taskfit.models.registry import load_tokenizer
        from taskfit.training.gguf_lora import base_gguf

        base, tasks = self.base_model()
        self.base_file = base_gguf(base)
        self.tokenizer = load_tokenizer(base, status=self.status)
        self.context = self.spec.limits.context
        self.mixed = False
        self.llms: dict[str, Any] = {}
        self.lanes: dict[str, Lanes] = {}  # each served model's running batch's context
        self.name_base(base)
        self.status(f"loading {self.base_file.name} in llama.cpp")
        self._load(self.base_name, None)
        for name, adapter in self.spec.adapters_by_path.items():
            self._add_adapter(name, adapter, tasks[name])

    def _load(self, name: str, lora: Any) -> None:
        self.llms[name] = llm = load_llama(self.base_file, lora, HOLDER_CONTEXT, self.spec.threads)
        self.lanes[name] = Lanes(llm, self.spec.limits.max_batch, self.context)

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
        self._load(name, gguf)
        served = self.served(name, spec, run, path)
        if served.task is not None and get_task(served.task.kind).scores_labels:
            served.scorer = LlamaCppScorer(self.llms[name], self.tokenizer, served.task, served.max_length,
                                           n_ctx=self.context)
        self.models[name] = served
        return served

    def _unload(self, served: Served) -> None:
        if isinstance(served.scorer, LlamaCppScorer):
            served.scorer.close()
        self.lanes.pop(served.name).close()
        self.llms.pop(served.name).close()

    def decoder(self, model: Served, **callbacks: Any) -> LlamaDecoder:
        eos = {self.tokenizer.eos_token_id, self.llms[model.name].token_eos()}
        return LlamaDecoder(self.lanes[model.name], self.tokenizer, eos, **callbacks)
