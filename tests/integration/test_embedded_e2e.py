"""End to end on the real embedded SmolLM2-135M: GGUF → cached safetensors → a few LoRA steps →
held-out evaluation of both candidates → report. Minutes on 2 cores, so the sizes are tiny."""

from __future__ import annotations

import json

import pytest
import yaml

from taskfit.models import load_model, resolve
from taskfit.workflows import run_project
from taskfit.quickstart import make_quickstart_project
from taskfit.training.artifacts import export_merged

pytestmark = pytest.mark.slow  # the real embedded model


def test_embedded_model_loads_and_is_cached(monkeypatch):
    from taskfit.models import registry

    first = load_model("smollm2-135m")
    assert first.info.kind == "embedded" and first.tokenizer.eos_token == "<|im_end|>"
    assert sum(p.numel() for p in first.model.parameters()) > 100_000_000
    assert resolve("smollm2-135m").licence.lower().startswith("apache")
    # The cached copy is a plain float32 model: trainable and savable (a GGUF flag would block both).
    assert not getattr(first.model, "is_quantized", False)
    assert getattr(first.model.config, "quantization_config", None) is None
    # Once converted, naming the model reads no GGUF (parsing its metadata took seconds a load).
    registry.gguf_reader.cache_clear()
    monkeypatch.setattr("gguf.GGUFReader", lambda path, *a, **k: pytest.fail(f"read {path} again"))
    assert resolve("smollm2-135m").licence == first.info.licence


def test_the_conversion_reads_the_gguf_once_and_writes_the_same_weights(tmp_path, monkeypatch):
    """A first run converts the embedded GGUF: the file is parsed once (not once for the tokenizer,
    once for the config and once for the weights), and the copy holds the weights every other
    load of the model reads, tied as the model ties them."""
    import gguf.gguf_reader
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from taskfit.models import registry

    cached = load_model("smollm2-135m").model.state_dict()
    registry.gguf_reader.cache_clear()
    parses = []
    real_init = gguf.gguf_reader.GGUFReader.__init__

    def counted(self, path, *rest, **kw):
        parses.append(path)
        real_init(self, path, *rest, **kw)

    monkeypatch.setattr(gguf.gguf_reader.GGUFReader, "__init__", counted)
    registry._convert_gguf(resolve("smollm2-135m"), tmp_path / "copy")
    assert len(parses) == 1
    assert registry.gguf_reader.cache_info().currsize == 0  # the parsed file is not kept once the copy exists
    written = load_file(next((tmp_path / "copy").glob("*.safetensors")))
    assert written.keys() <= cached.keys() and all(torch.equal(written[k], cached[k]) for k in written)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "copy")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert not any(p.is_meta for p in model.parameters())


def test_quickstart_loop_runs_on_the_embedded_model(tmp_path):
    path = make_quickstart_project(tmp_path / "qs", seed=0, n_tickets=400)
    doc = yaml.safe_load(path.read_text())
    doc["data"].update(max_train_examples=16, max_eval_examples=16)
    doc["eval"].update(generation_sample=2, latency_rows=4, forgetting={"enabled": True, "items": 16})
    path.write_text(yaml.safe_dump(doc))
    summary = run_project(path.parent)
    metrics = json.loads((summary.run_dir / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 2 and metrics["training"]["trained_tokens"] > 500
    log = (summary.run_dir / "train_log.csv").read_text().splitlines()
    assert len(log) == 3 and all(float(row.split(",")[2]) > 0 for row in log[1:])
    results = {r.candidate: r for r in summary.results}
    assert {"prompt-only", "few-shot", "tfidf-logreg", "fine-tuned"} <= set(results)
    assert all(r.n == 16 for r in results.values())
    # Evaluated 8 rows at a time; a lone request's latency timed on 4 rows answered alone, alike.
    assert results["prompt-only"].metrics["latency_rows"] == 4
    assert results["prompt-only"].metrics["alone_same_answer"] == 1.0
    (forgetting,) = summary.scorecard.forgetting  # the general probe, on the embedded base and its adapter
    assert forgetting.candidate == "fine-tuned" and forgetting.n == len(forgetting.kl) == 16 and not forgetting.skipped
    assert (summary.run_dir / "adapter" / "adapter_model.safetensors").exists()
    merged = export_merged(summary.run_dir)  # the adapter folded into the embedded base
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())
    assert "Keep" in summary.verdict or "Not proven" in summary.verdict or "not worth" in summary.verdict


def test_embedded_model_extracts_schema_valid_records_under_the_constraint(tmp_path):
    from taskfit.baselines import GenerativePredictor
    from taskfit.config import EvalSpec, TaskSpec
    from taskfit.records import Example
    from taskfit.tasks import score

    task = TaskSpec(kind="extract", success="s", system_prompt="Extract the booking as JSON with city and party_size.",
                    schema={"type": "object", "additionalProperties": False, "required": ["city"],
                            "properties": {"city": {"type": "string"}, "party_size": {"type": "integer"}}})
    lm = load_model("smollm2-135m")
    rows = [Example(id=str(i), input=text, target=json.dumps(gold)) for i, (text, gold) in enumerate([
        ("Book a table for 4 in Paris tomorrow", {"city": "Paris", "party_size": 4}),
        ("We are 2 people, need a place in Rome tonight", {"city": "Rome", "party_size": 2}),
        ("table for six in Oslo please", {"city": "Oslo", "party_size": 6})])]
    held = GenerativePredictor("c", lm.model, lm.tokenizer, task, 256, max_new_tokens=48, constrained=True)
    result = score(task, EvalSpec(), "c", rows, list(held.predict(rows)))
    assert result.metrics["valid_rate"] == 1.0 and result.metrics["json_valid_rate"] == 1.0


def test_the_embedded_model_closes_fourteen_required_fields_with_nulls_at_a_budget_one_over_the_shortest():
    """snips' restaurant bookings (14 required nullable fields): closing in the budget's last 16 steps
    cut every record at 96 tokens (its shortest record takes 95); then, with the token to spare, the
    steer let the model open a string it could only close at once, one "" a record."""
    from taskfit.decoding import Sampling, decode_batch, json_schema_grammar, shortest_answer

    keys = ["city", "country", "cuisine", "facility", "party_size_description", "party_size_number", "poi",
            "restaurant_name", "restaurant_type", "served_dish", "sort", "spatial_relation", "state", "timeRange"]
    schema = {"type": "object", "additionalProperties": False, "required": keys,
              "properties": {k: {"type": ["string", "null"]} for k in keys}}
    grammar = json_schema_grammar(schema)
    lm = load_model("smollm2-135m")
    tok = lm.tokenizer
    system = f"Extract the fields the text mentions as one JSON object; the others are null. Fields: {', '.join(keys)}."
    prompts = [tok(tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": text}],
                                           add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"]
               for text in ["Book a reservation for my babies and I", "I need a table for 4 at a bakery in Boston"]]
    budget = shortest_answer(tok, grammar) + 1
    for out in decode_batch(lm.model, tok, prompts, [Sampling(max_tokens=budget, grammar=grammar)] * 2):
        record = json.loads(out.text)
        assert list(record) == keys and out.finish_reason == "stop"
        assert "" not in record.values(), out.text
