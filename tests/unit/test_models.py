"""Model names resolve, or fail with a message that says what to do."""

from __future__ import annotations

import pytest

from taskfit.errors import ModelError
from taskfit.models import EMBEDDED, load_model, resolve


def test_local_directory_loads_through_from_pretrained(tiny_model_dir):
    lm = load_model(str(tiny_model_dir))
    assert lm.info.kind == "local"
    assert lm.tokenizer.chat_template and lm.tokenizer.pad_token_id is not None


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve(str(tmp_path))


def test_unknown_name_lists_the_choices():
    with pytest.raises(ModelError) as info:
        resolve("not-a-model")
    assert "smollm2-135m" in str(info.value)


def test_unreachable_hub_id_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError) as info:
        load_model("some-org/some-model-that-is-not-cached")
    assert "could not be loaded" in info.value.message and "--local-dir" in info.value.hint


def test_embedded_model_resolves_with_its_licence():
    info = resolve("smollm2-135m")
    assert info.kind == "embedded" and info.gguf_file == EMBEDDED["smollm2-135m"].gguf_name
    assert "apache" in info.licence.lower()


def test_a_batch_of_prompts_gets_its_next_token_logits_from_one_matrix_product(tiny_model_dir):
    """Reading a batch of prompts keeps only the last position's logits; the output layer gets
    those positions as one contiguous matrix, not a strided view that PyTorch multiplies (when the
    weight needs no gradient) with the weight repeated for every row (three times the time on
    SmolLM2-135M's output layer), and the logits are those of the whole forward pass."""
    import torch
    from torch.profiler import profile, record_function

    lm = load_model(str(tiny_model_dir))
    lm.model.requires_grad_(False)  # as under an adapter (PEFT freezes the base) or a head sharing its weights
    ids = torch.arange(30).reshape(3, 10) + 5  # three prompts of ten tokens
    with torch.inference_mode():
        whole = lm.model(input_ids=ids).logits[:, -1]
        with profile(record_shapes=True) as prof, record_function("last"):
            last = lm.model(input_ids=ids, logits_to_keep=1).logits[:, -1]
    assert torch.allclose(last, whole, atol=1e-5)
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    products = [e for e in prof.key_averages(group_by_input_shape=True) if e.key in ("aten::mm", "aten::bmm")
                and e.input_shapes and e.input_shapes[-1][-1] == vocab]
    assert [e.key for e in products] == ["aten::mm"]


def test_the_converted_copy_is_named_by_the_gguf_content_not_its_install_time(tmp_path, monkeypatch):
    import os

    from taskfit.models.registry import _converted_dir_of

    monkeypatch.setenv("TASKFIT_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    first = _converted_dir_of("m", gguf)
    os.utime(gguf, (1_000_000_000, 1_000_000_000))  # a fresh install of the same file: a new time
    assert _converted_dir_of("m", gguf) == first
    gguf.write_bytes(b"GGUF" + bytes(range(255, -1, -1)) * 64)  # the same size, other content
    assert _converted_dir_of("m", gguf) != first
