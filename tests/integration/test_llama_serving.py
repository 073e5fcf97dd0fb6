"""The llama.cpp engine serves requests together: concurrent requests decoded in one batched
decode per step, each answered exactly as it is alone, and a request joining a reply that is
running. The embedded model's GGUF; skipped without llama-cpp-python."""

from __future__ import annotations

import concurrent.futures

import openai
import pytest

from taskfit.serve import load_serve_config
from taskfit.serve.app import create_app

try:  # the HTTP client the openai package is built on (httpx2 from openai 3)
    import httpx2 as httpx
except ImportError:
    import httpx

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (bash scripts/setup.sh --tests)")

# Greedy replies whose first 8 tokens each lead the next likeliest by at least 0.2 nats (measured
# on the embedded model): no near tie for the rounding of prompts read together to decide.
QUESTIONS = ["What is two plus two?", "Name a fruit.", "What day comes after Monday?", "Name a planet."]


@pytest.fixture(scope="module")
def llama_server(module_loopback):
    spec = load_serve_config(None, {"engine": "llama-cpp", "log": {"path": None},
                                    "limits": {"max_batch": 4, "context": 512}})
    url = module_loopback(create_app(spec))
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    return {"client": client, "url": url, "model": client.models.list().data[0].id}


def _ask(server, question, **kw):
    reply = server["client"].chat.completions.create(
        model=server["model"], messages=[{"role": "user", "content": question}], temperature=0, **kw)
    return reply.choices[0].message.content, reply.usage.completion_tokens, reply.choices[0].finish_reason


def _batch_sizes(server) -> dict[str, float]:
    metrics = httpx.get(server["url"].removesuffix("/v1") + "/metrics").text
    return {line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines() if line.startswith("taskfit_batch_size_bucket")}


def test_concurrent_requests_are_decoded_together_and_answered_as_alone(llama_server):
    alone = [_ask(llama_server, q, max_tokens=8) for q in QUESTIONS]
    before = _batch_sizes(llama_server)
    with concurrent.futures.ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda q: _ask(llama_server, q, max_tokens=8), QUESTIONS))
    # Text, tokens counted, finish reason. A decoding step gives a sequence beside others the
    # logits it gets alone (flash attention; without it 0.5-0.8 nats apart), but prompts read
    # together round a little otherwise than one read alone (a few hundredths of a nat), so a
    # greedy reply can part where two tokens nearly tie ("Say hello in French." did, at its 8th
    # token, 0.058 nats from the next).
    assert together == alone
    assert all(text for text, _, _ in together)
    after = _batch_sizes(llama_server)
    # some requests were read into the decoder together (one at a time before: every batch of 1)
    assert after["+Inf"] - after["1.0"] > before["+Inf"] - before["1.0"]


def test_a_request_joins_a_running_reply_on_llama_cpp(llama_server):
    """A short request sent while a long reply streams is answered before the long one ends,
    with the answer it gets alone (the engine before answered one request at a time)."""
    client, model = llama_server["client"], llama_server["model"]
    alone = _ask(llama_server, QUESTIONS[0], max_tokens=4)
    events, short = [], []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stream = client.chat.completions.create(model=model, stream=True, max_tokens=80, temperature=1.0, seed=3,
                                                messages=[{"role": "user", "content": "Tell me a long story."}])
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                events.append("long")
                if not short:
                    short.append(pool.submit(_ask, llama_server, QUESTIONS[0], max_tokens=4))
                    short[0].add_done_callback(lambda _: events.append("short done"))
        events.append("long done")
        assert short[0].result() == alone
    assert events.index("short done") < events.index("long done")
    assert events[events.index("short done"):].count("long") > 1
