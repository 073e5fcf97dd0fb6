"""llama.cpp's weights in plain buffers on a processor with AMX (taskfit.baselines.llama_cpp)."""

from __future__ import annotations

import pytest


def test_a_model_loaded_meanwhile_gets_plain_weight_buffers_and_the_default_comes_back():
    """On an AMX processor the embedded model's first decode crashed llama.cpp in its extra buffer
    types; load_llama loads with them off there. The bindings' defaults are wrapped only while a
    model loads."""
    bindings = pytest.importorskip("llama_cpp.llama")
    from taskfit.baselines.llama_cpp import _plain_weights

    assert bindings.llama_cpp.llama_model_default_params().use_extra_bufts  # llama.cpp's default
    with _plain_weights():
        assert not bindings.llama_cpp.llama_model_default_params().use_extra_bufts
    assert bindings.llama_cpp.llama_model_default_params().use_extra_bufts
