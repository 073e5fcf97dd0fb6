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
