"""``engine: llama-cpp``: the same server on llama.cpp's CPU kernels (llama-cpp-python, the
optional ``llama`` extra), for the base model's GGUF and each adapter's GGUF LoRA.

On a 2-core CPU llama.cpp decodes the embedded model several times faster than transformers, so
this is the engine for generation on CPU. Each served model gets its own llama.cpp context (the
base with one adapter: the Python bindings take one LoRA per context), and requests are answered
one at a time, each context reusing the key/value cache of the prompt prefix it saw last (the
task's system prompt, typically). Adapters without a GGUF file are exported on load
(``taskfit export --format gguf-lora``). ``classify`` adapters score every label in one batched
decode in a context of their own (:class:`~taskfit.baselines.llama_cpp.LlamaCppScorer`); JSON
schemas are enforced by the same llguidance grammar as on the transformers engine, through a
logits processor (:func:`~taskfit.baselines.llama_cpp.grammar_processor`).
"""

from __future__ import annotations

from typing import Any

from taskfit.baselines.llama_cpp import LlamaCppScorer, grammar_processor, load_llama
from taskfit.errors import ConfigError
from taskfit.serve.config import AdapterSpec
from taskfit.tasks import get_task
from taskfit.serve.engine import Engine, Job, Result, Served, Trained


class LlamaCppEngine(Engine):
    continuous = False  # llama.cpp contexts answer one request at a time (_generate below)

    def load(self) -> None:
        from taskfit.models.registry import load_tokenizer
        from taskfit.training.gguf_lora import base_gguf

        base, tasks = self.base_model()
        self.base_file = base_gguf(base)
        self.tokenizer = load_tokenizer(base, status=self.status)
        self.context = self.spec.limits.context
        self.mixed = False
        self.llms: dict[str, Any] = {}
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
        self.llms.pop(served.name).close()

    def _generate(self, batch: list[Job]) -> list[Result]:
        results = []
        for job in batch:  # llama.cpp contexts answer one request at a time
            self.on_batch(1)
            llm = self.llms[job.model.name]
            s = job.sampling
            hold = grammar_processor(self.tokenizer, s.grammar, len(job.prompt), s.max_tokens) if s.grammar else None
            pieces, finish, produced = [], "length", 0
            for chunk in llm.create_completion(prompt=job.prompt, max_tokens=s.max_tokens, temperature=s.temperature,
                                               top_p=s.top_p, seed=s.seed, stop=list(s.stop) or None,
                                               logits_processor=hold, stream=True):
                choice = chunk["choices"][0]
                text = choice["text"]
                produced += bool(text) or not choice.get("finish_reason")  # the closing chunk carries no token
                if text:
                    if not pieces:
                        text = text.lstrip()
                    pieces.append(text)
                    if text and job.on_text is not None:
                        job.on_text(text)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if job.cancelled:
                    finish = "cancelled"
                    break
            results.append(Result(text="".join(pieces).strip(), prompt_tokens=len(job.prompt),
                                  completion_tokens=produced, finish_reason=finish))
        return results

