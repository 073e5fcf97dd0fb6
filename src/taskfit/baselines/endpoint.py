"""Any OpenAI-compatible chat endpoint as a candidate: the hosted model a user pays for today.

It sees the same messages as the local prompt-only baseline (the task's system prompt and the
user's text, built by the shared :func:`messages_for`); its answer is parsed by the same task
parser and scored by the same scorer. Token counts come from the endpoint's ``usage``.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable, Iterator

from taskfit.config import EndpointSpec, TaskSpec
from taskfit.errors import ConfigError, TaskfitError
from taskfit.records import Example, Prediction
from taskfit.rendering import messages_for


def endpoint_messages(spec: EndpointSpec, task: TaskSpec, example: Example) -> list[dict[str, str]]:
    """The messages the endpoint is asked ``example`` with: the local prompt-only baseline's
    (:func:`messages_for`), and, with ``add_instruction``, what a hosted model needs told that a
    fine-tuned one learned (the kind's :meth:`~taskfit.tasks.base.Task.instruction`) after the
    system prompt."""
    from taskfit.tasks import get_task

    messages = messages_for(task, example)
    extra = get_task(task.kind).instruction(task) if spec.add_instruction else ""
    if extra:
        messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{extra}"}
    return messages


def endpoint_client(spec: EndpointSpec, key: str = "baselines.endpoint") -> Any:
    """An ``openai`` client of the endpoint ``spec`` describes (``key``: where the config declares
    it, for the error when its API key variable is not set)."""
    import openai

    value = os.environ.get(spec.api_key_env)
    if not value:
        raise ConfigError(f"{key}.api_key_env: the environment variable {spec.api_key_env} is not set",
                          hint=f"export {spec.api_key_env}=... (any non-empty value for a local "
                               "server that needs no key)")
    return openai.OpenAI(base_url=spec.base_url, api_key=value, timeout=spec.timeout_s, max_retries=2)


def endpoint_error(spec: EndpointSpec, exc: Any) -> TaskfitError:
    """What an ``openai`` error means for the endpoint baseline: the URL that failed, what went
    wrong (no answer at all, too slow, or the server's refusal with its status) and what to check."""
    import openai

    url = f"{spec.base_url.rstrip('/')}/chat/completions"
    resume = "; the predictions made so far are kept and the next run resumes after them"
    if isinstance(exc, openai.APITimeoutError):
        return TaskfitError(f"baselines.endpoint: {url} did not answer within timeout_s={spec.timeout_s:g} s",
                            hint="raise baselines.endpoint.timeout_s or lower its concurrency, or check that the "
                                 "server is not overloaded" + resume)
    if isinstance(exc, openai.APIConnectionError):
        cause = f" ({exc.__cause__})" if exc.__cause__ is not None and str(exc.__cause__) else ""
        return TaskfitError(f"baselines.endpoint: could not reach {url}: {exc}{cause}",
                            hint=f"check baselines.endpoint.base_url ({spec.base_url}: its scheme, host, port and "
                                 "the /v1 path), that the server is running, and that this machine can reach it "
                                 "(a proxy, firewall or VPN)" + resume)
    status = getattr(exc, "status_code", None)
    what = {401: f"the key: {spec.api_key_env} holds one this server accepts",
            403: f"the key ({spec.api_key_env}) and its access to model {spec.model}",
            404: f"base_url's path (it ends in /v1 for most servers) and model ({spec.model})",
            429: "the rate limit: lower baselines.endpoint.concurrency, or wait and run again"}.get(
        status, f"base_url, model ({spec.model}) and the key ({spec.api_key_env})")
    return TaskfitError(f"baselines.endpoint: {url} answered" + (f" HTTP {status}" if status else "") + f": {exc}",
                        hint=f"check {what}" + resume)


class EndpointPredictor:
    def __init__(self, name: str, spec: EndpointSpec, task: TaskSpec, max_new_tokens: int):
        self.name = name
        self.spec = spec
        self.task = task
        self.max_new_tokens = max_new_tokens
        self.client = endpoint_client(spec)
        # requests in flight: as a local model's eval.batch_size, what the scorecard's lone-request
        # latency sets to 1 to time the endpoint one request at a time
        self.batch_size, self.batch_setting = spec.concurrency, "baselines.endpoint.concurrency"

    def _one(self, ex: Example) -> Prediction:
        import openai

        from taskfit.tasks import parse

        messages = endpoint_messages(self.spec, self.task, ex)
        start = time.perf_counter()
        try:
            reply = self.client.chat.completions.create(
                model=self.spec.model, messages=messages, temperature=0, max_tokens=self.max_new_tokens)
        except openai.APIError as exc:
            raise endpoint_error(self.spec, exc) from None
        text = reply.choices[0].message.content or ""
        answer, valid = parse(self.task, text)
        usage = reply.usage
        return Prediction(example_id=ex.id, output=answer, valid=valid, latency_s=time.perf_counter() - start,
                          prompt_tokens=usage.prompt_tokens if usage else 0,
                          completion_tokens=usage.completion_tokens if usage else 0)

    def predict(self, examples: Iterable[Example]) -> Iterator[Prediction]:
        """Up to ``batch_size`` (``concurrency``) requests in flight; predictions come back in the
        examples' order."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, self.batch_size)) as pool:
            yield from pool.map(self._one, examples)
