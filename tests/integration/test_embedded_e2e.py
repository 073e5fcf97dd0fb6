"""End to end on the real embedded SmolLM2-135M: GGUF → cached safetensors → a few LoRA steps →
held-out evaluation of both candidates → report. Minutes on 2 cores, so the sizes are tiny."""

from __future__ import annotations

import json

import yaml

from taskfit.models import load_model, resolve
from taskfit.pipeline import run_project
from taskfit.quickstart import make_quickstart_project


def test_embedded_model_loads_and_is_cached():
    first = load_model("smollm2-135m")
    assert first.info.kind == "embedded" and first.tokenizer.eos_token == "<|im_end|>"
    assert sum(p.numel() for p in first.model.parameters()) > 100_000_000
    assert resolve("smollm2-135m").licence.lower().startswith("apache")


def test_quickstart_loop_runs_on_the_embedded_model(tmp_path):
    path = make_quickstart_project(tmp_path / "qs", seed=0, n_tickets=400)
    doc = yaml.safe_load(path.read_text())
    doc["data"].update(max_train_examples=16, max_eval_examples=16)
    doc["eval"]["generation_sample"] = 2
    path.write_text(yaml.safe_dump(doc))
    summary = run_project(path.parent)
    metrics = json.loads((summary.run_dir / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 2 and metrics["training"]["trained_tokens"] > 500
    assert all(b > 0 for b in metrics["training"]["losses"])
    for cand in ("prompt-only", "fine-tuned"):
        assert metrics[cand]["n"] == 16
    assert (summary.run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert "Keep" in summary.verdict or "Not proven" in summary.verdict or "not worth" in summary.verdict
