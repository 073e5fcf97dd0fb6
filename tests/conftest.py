"""Shared fixtures: a tiny randomly initialised Llama with a real ChatML tokenizer, built here.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in the fixture on generated
tickets, the model is built from a config, and both are saved as an ordinary local model
directory so that the same ``from_pretrained`` path users take is the one tested.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    """Under pytest-xdist (the README's test command runs ``-n auto``), each worker keeps to its
    own share of the cores, so that two workers' torch threads, and the ``taskfit`` processes a
    test starts (which size their threads by the cores they may use), never contend for one core."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= count:
        share = cores[int(worker.removeprefix("gw")) % count::count]
        os.sched_setaffinity(0, share)
        os.environ["OMP_NUM_THREADS"] = str(len(share))


def pytest_collection_modifyitems(config, items):
    """The longest tests first (the real embedded model, then several processes), so that under
    pytest-xdist no long test starts last while the other worker idles."""
    def weight(item):
        return -2 * ("slow" in item.keywords) - ("multiprocess" in item.keywords)

    items.sort(key=weight)  # stable: the file order within each weight

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
          " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def build_tiny_model(directory: Path, seed: int = 0, positions: int = 512) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from taskfit.data.sample import QUEUES, generate_tickets

    corpus = [r["messages"][0]["content"] for r in generate_tickets(300, seed=1)] + list(QUEUES) * 5
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=special,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions,
                         tie_word_embeddings=True, bos_token_id=fast.bos_token_id,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    from taskfit.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def peaked(tmp_path_factory):
    """The tiny model with sharp attention: its random weights otherwise attend almost evenly, so
    that a token read at the wrong position (a prefix cache misplaced) would go unnoticed."""
    import torch

    from taskfit.models import load_model

    lm = load_model(str(build_tiny_model(tmp_path_factory.mktemp("peaked"), seed=3)))
    with torch.no_grad():
        for layer in lm.model.model.layers:
            layer.self_attn.q_proj.weight.mul_(12)
            layer.self_attn.k_proj.weight.mul_(12)
    return lm


@contextmanager
def serving():
    """``start(app)`` serves an ASGI app with uvicorn on a free loopback port, in a thread, and
    returns its ``/v1`` base URL (``start.server`` is the last server started); every server
    started is stopped when the context ends."""
    import socket
    import threading

    import uvicorn

    started: list = []

    def start(app, **config):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            threading.Event().wait(0.01)
        started.append((server, thread))
        start.server = server
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"

    try:
        yield start
    finally:
        for server, thread in started:
            server.should_exit = True
            thread.join()


@pytest.fixture()
def loopback():
    """:func:`serving` for one test."""
    with serving() as start:
        yield start


@pytest.fixture(scope="module")
def module_loopback():
    """:func:`serving` for every test of a module."""
    with serving() as start:
        yield start


@pytest.fixture(params=["C", "numpy"])
def kernels(request, monkeypatch):
    """The data check's inner loops both ways: compiled from native.c (where a C compiler is
    found, as on every machine the README's set-up runs on), and numpy's or Python's (where none is)."""
    from taskfit.data import native

    monkeypatch.setattr(native, "_loaded", {})
    if request.param == "numpy":
        monkeypatch.setenv("TASKFIT_NATIVE", "0")
    else:
        monkeypatch.delenv("TASKFIT_NATIVE", raising=False)
        if native.library() is None:
            pytest.skip("no C compiler on this machine: the numpy code is what runs")
    assert (native.library() is None) == (request.param == "numpy")
    return request.param


@pytest.fixture()
def classify_task():
    from taskfit.config import TaskSpec
    from taskfit.data.sample import QUEUES

    return TaskSpec(kind="classify", success="tickets land in the right queue",
                    system_prompt="Route the ticket. Reply with one queue name.", labels=list(QUEUES))


@pytest.fixture()
def kill_at_checkpoint():
    """``kill(command, project)``: run ``taskfit COMMAND PROJECT`` in its own process and kill -9 it
    as soon as its first complete checkpoint is on disk (a run interrupted mid-training)."""
    import signal
    import subprocess
    import sys
    import time

    def kill(command: str, project: Path) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "taskfit.cli.main", command, str(project)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while proc.poll() is None and not list(project.glob("runs/*/checkpoints/step-*[0-9]")):
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]

    return kill


@pytest.fixture(scope="session")
def tiny_triage(tiny_model_dir):
    """``build(directory, n_tickets, train_rows, eval_rows)``: a sample ticket-triage project on the
    tiny model, with one-epoch training settings; returns its directory."""
    import yaml

    from taskfit.quickstart import make_quickstart_project

    def build(directory: Path, n_tickets: int, train_rows: int, eval_rows: int) -> Path:
        path = make_quickstart_project(directory, seed=0, n_tickets=n_tickets)
        doc = yaml.safe_load(path.read_text())
        doc["model"]["name"] = str(tiny_model_dir)
        doc["data"].update(max_train_examples=train_rows, max_eval_examples=eval_rows)
        doc["train"].update(batch_size=8, max_seq_length=128, epochs=1, eval_every=0, metric_sample=0,
                            checkpoint_every=0)
        path.write_text(yaml.safe_dump(doc))
        return path.parent

    return build


def liked_less_first(model, tokenizer, task, prompt: str, answers: list[str]) -> list[str]:
    """``answers`` (two replies) ordered so that the first is the one ``model`` likes less per
    answer token after ``prompt``: as (chosen, rejected), DPO then has a preference to move
    (which reply a random tiny model likes depends on its weights and tokenizer)."""
    import torch

    from taskfit.records import PreferencePair
    from taskfit.training.dpo import answer_lengths, featurize_pairs, pair_logps, preference_accuracy

    probe = featurize_pairs(tokenizer, task, [PreferencePair(id="p", prompt=prompt, chosen=answers[0],
                                                             rejected=answers[1])], 256)
    with torch.no_grad():
        prefers_first = preference_accuracy(pair_logps(model, tokenizer, probe), answer_lengths(probe)) == 1.0
    return list(reversed(answers)) if prefers_first else list(answers)
