"""The served model is the evaluated model: for every task kind, an adapter trained here answers
held-out rows through `taskfit serve` (the official `openai` client, greedy) exactly as evaluation
answered them, and one qa example with a context too long to fit is asked with the same prompt
token ids by training, evaluation, the server and the exported Ollama Modelfile."""

from __future__ import annotations

import dataclasses
import json
import re

import openai
import pytest
import yaml

from taskfit.baselines.model import GenerativePredictor, LabelScoringPredictor
from taskfit.config import TrainSpec, load_config
from taskfit.models import load_model
from taskfit.workflows import train_project
from taskfit.records import Example
from taskfit.rendering import render
from taskfit.serve import load_serve_config
from taskfit.serve.app import create_app, task_example
from taskfit.tasks import parse
from taskfit.training.gguf_lora import export_gguf_lora
from taskfit.training.hardware import resolve_hardware
from taskfit.training.sft import featurize

KINDS = ("classify", "extract", "qa", "generate")
LABELS = ["billing", "shipping", "account"]
# Keys listed out of alphabetical order, and the training rows list them the other way round.
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["size", "city"],
          "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 20},
                         "city": {"type": "string", "maxLength": 12}}}
CITIES = ["Oslo", "Lima", "Rome", "Kyiv"]
FILLER = "The warehouse also stocks umbrellas, lamps and paper in many colours. "


def _row(kind, i):
    if kind == "classify":
        label = LABELS[i % 3]
        text = {"billing": f"I was charged twice for order {i}", "shipping": f"parcel {i} has not arrived",
                "account": f"cannot log in to account {i}"}[label]
        return {"text": text, "answer": label}
    if kind == "extract":
        city, size = CITIES[i % 4], i % 20 + 1
        return {"text": f"table for {size} in {city}, ref {i}", "answer": {"city": city, "size": size}}
    if kind == "qa":
        day = ["Monday", "Tuesday", "Friday"][i % 3]
        return {"text": f"When did order A{i} ship?", "answer": f"on {day}",
                "passage": f"Order A{i} shipped on {day} from Oslo."}
    return {"text": f"Thank the customer for order {i}.", "answer": f"Thank you for your order {i}!"}


def _example(kind, i, **more):
    row = _row(kind, i)
    answer = row["answer"] if isinstance(row["answer"], str) else json.dumps(row["answer"])
    return Example(id=f"{kind}-{i}", input=row["text"], target=answer, context=row.get("passage"), **more)


def _task(kind):
    task = {"kind": kind, "success": "right answers", "system_prompt": f"Answer the {kind} request."}
    return {**task, **{"classify": {"labels": LABELS}, "extract": {"schema": SCHEMA}}.get(kind, {})}


def _held_out():
    rows = {kind: [_example(kind, i) for i in range(100, 104)] for kind in KINDS}
    # and one passage too long to fit, which evaluation and the server must cut alike
    rows["qa"].append(dataclasses.replace(_example("qa", 105), context=FILLER * 12 + "Order A105 shipped."))
    return rows


def _project(root, model_dir, kind):
    folder = root / kind
    (folder / "data").mkdir(parents=True)
    with (folder / "data" / "rows.jsonl").open("w") as f:
        for i in range(40):
            f.write(json.dumps(_row(kind, i)) + "\n")
    task = _task(kind)
    columns = {"input": "text", "target": "answer", **({"context": "passage"} if kind == "qa" else {})}
    doc = {"task": task, "model": {"name": str(model_dir)},
           "data": {"train": "data/rows.jsonl", "columns": columns},
           "train": {"batch_size": 8, "max_seq_length": 96, "epochs": 1, "learning_rate": 5e-3, "eval_every": 0,
                     "metric_sample": 0, "checkpoint_every": 0},
           "eval": {"max_new_tokens": 28}}
    (folder / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    return folder / "taskfit.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("parity")
    return {kind: train_project(_project(root, tiny_model_dir, kind)).run_dir for kind in KINDS}


def _evaluation(run, model_dir):
    """The adapter as evaluation builds its candidate: label scoring for classify, else greedy
    generation with the project's answer budget and constraint."""
    from peft import PeftModel

    cfg = load_config(run / "config.resolved.yaml")
    lm = load_model(str(model_dir))
    model = PeftModel.from_pretrained(lm.model, str(run / "adapter")).eval()
    task, length = cfg.task, cfg.train.max_seq_length
    if task.kind == "classify":
        return cfg, LabelScoringPredictor("adapter", model, lm.tokenizer, task, length)
    return cfg, GenerativePredictor("adapter", model, lm.tokenizer, task, length, cfg.eval.max_new_tokens,
                                    constrained=cfg.eval.constrained, batch_size=cfg.eval.batch_size)


def _ask(client, model, ex, **kw):
    extra = {"extra_body": {"context": ex.context}} if ex.context is not None else {}
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": ex.input}],
                                          temperature=0, **extra, **kw)


def _assert_served_as_evaluated(client, held_out, evaluated, threshold=None, rel=1e-4):
    for kind, (cfg, predictions) in evaluated.items():
        for ex, pred in zip(held_out[kind], predictions):
            reply = _ask(client, kind, ex)  # no max_tokens: the run's answer budget, as evaluated
            choice, usage = reply.choices[0], reply.usage
            assert usage.prompt_tokens == pred.prompt_tokens, (kind, ex.id)
            if kind == "classify":
                low = threshold is not None and pred.confidence < threshold
                assert choice.message.content == ("needs_human" if low else pred.output), ex.id
                assert choice.taskfit["label"] == pred.output
                assert choice.taskfit["confidence"] == pytest.approx(pred.confidence, rel=rel)
            else:
                assert parse(cfg.task, choice.message.content)[0] == pred.output, (kind, ex.id)
                assert usage.completion_tokens == pred.completion_tokens, (kind, ex.id)


def _predict(predictor, rows, hardware):
    with hardware.computing():  # the precision evaluation answers in on this machine
        return list(predictor.predict(rows))


def test_served_answers_are_the_evaluated_answers_for_every_kind(runs, tiny_model_dir, loopback):
    held_out, hardware = _held_out(), resolve_hardware(TrainSpec())
    evaluated = {}
    for kind in KINDS:
        cfg, predictor = _evaluation(runs[kind], tiny_model_dir)
        evaluated[kind] = (cfg, _predict(predictor, held_out[kind], hardware))
    confidences = sorted(p.confidence for p in evaluated["classify"][1])
    threshold = (confidences[0] + confidences[-1]) / 2
    assert {c < threshold for c in confidences} == {True, False}  # some rows fall back, some do not

    adapters = {kind: {"path": str(runs[kind])} for kind in KINDS}
    adapters["classify"].update(confidence_threshold=threshold, fallback="needs_human")
    spec = load_serve_config(None, {"base": str(tiny_model_dir), "base_name": "tiny", "log": {"path": None},
                                    "adapters": adapters})
    client = openai.OpenAI(base_url=loopback(create_app(spec)), api_key="none", max_retries=0)
    _assert_served_as_evaluated(client, held_out, evaluated, threshold, rel=1e-15)

    # A qa adapter needs its passage; a task adapter answers one input, not a conversation.
    with pytest.raises(openai.BadRequestError) as missing:
        client.chat.completions.create(model="qa", messages=[{"role": "user", "content": "When did A1 ship?"}])
    assert missing.value.code == "missing_context" and missing.value.param == "context"
    assert "extra_body" in missing.value.message
    with pytest.raises(openai.BadRequestError) as stray:
        _ask(client, "generate", _example("qa", 1))
    assert stray.value.code == "unsupported" and stray.value.param == "context"
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model="extract", messages=[
            {"role": "user", "content": "table for 2"}, {"role": "assistant", "content": "{}"},
            {"role": "user", "content": "table for 3"}])
    assert chat.value.code == "unsupported_messages" and chat.value.param == "messages"


def test_a_server_computes_in_the_precision_its_evaluation_computed_in(runs, tiny_model_dir, loopback):
    """``dtype: float32`` in serve.yaml serves the answers of an evaluation with ``train.dtype:
    float32``, to the last bit of the confidence; where this CPU multiplies bfloat16 natively, the
    two precisions' confidences differ (the tiny model's by about 1e-6), so a server computing in
    the other precision would fail the comparison."""
    held_out = {"classify": _held_out()["classify"]}
    cfg, predictor = _evaluation(runs["classify"], tiny_model_dir)
    float32 = list(predictor.predict(held_out["classify"]))
    spec = load_serve_config(None, {"base": str(tiny_model_dir), "log": {"path": None}, "dtype": "float32",
                                    "adapters": {"classify": {"path": str(runs["classify"])}}})
    client = openai.OpenAI(base_url=loopback(create_app(spec)), api_key="none", max_retries=0)
    _assert_served_as_evaluated(client, held_out, {"classify": (cfg, float32)}, rel=1e-15)
    hardware = resolve_hardware(TrainSpec())
    if hardware.autocast:
        _, fresh = _evaluation(runs["classify"], tiny_model_dir)  # its caches made under the autocast
        autocast = _predict(fresh, held_out["classify"], hardware)
        assert any(a.confidence != pytest.approx(b.confidence, rel=1e-15) for a, b in zip(autocast, float32))


def _tiny_gguf(model_dir, path):
    """The tiny model's weights as a GGUF file (the metadata the GGUF-LoRA export reads, and every
    tensor under llama.cpp's name); no tokenizer, so llama.cpp itself could not run it."""
    import gguf
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for key, value in model.state_dict().items():
        name = names.get_name(key.removesuffix(".weight"))
        if name is not None:
            writer.add_tensor(f"{name}.weight", value.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _modelfile(text):
    """TEMPLATE and SYSTEM of a Modelfile (Ollama's triple-quoted values)."""
    found = dict(re.findall(r'^(TEMPLATE|SYSTEM) """(.*?)"""$', text, flags=re.S | re.M))
    return found["TEMPLATE"], found["SYSTEM"]


def _ollama_render(template, messages):
    """Ollama's rendering of a chat request with a ``.Messages`` template: exactly the Go
    text/template actions the exported ChatML template uses (a range over .Messages, .Role,
    .Content); any other action fails the test instead of being guessed."""
    head, body, tail = re.fullmatch(r"(.*?)\{\{ range \.Messages \}\}(.*?)\{\{ end \}\}(.*)", template, re.S).groups()
    assert "{{" not in head + tail, template

    def fill(part, message):
        out = re.sub(r"\{\{ \.(Role|Content) \}\}", lambda m: message[m.group(1).lower()], part)
        assert "{{" not in out.replace(message["content"], ""), part
        return out

    return head + "".join(fill(body, m) for m in messages) + tail


def test_one_cut_qa_example_gets_the_same_prompt_ids_on_every_path(runs, tiny_model_dir, loopback, tmp_path):
    run = runs["qa"]
    cfg = load_config(run / "config.resolved.yaml")
    task, length = cfg.task, cfg.train.max_seq_length
    lm = load_model(str(tiny_model_dir))
    tok = lm.tokenizer
    ex = Example(id="long", input="When did order A7 ship?", target="on Friday",
                 context=FILLER * 12 + "Order A7 shipped on Friday from Oslo.")
    assert len(render(tok, task, ex).ids) > length  # uncut, it would not fit

    # Training: the prompt part of the row training reads (featurized as the training run did).
    from taskfit.baselines.model import answer_room

    [row] = featurize(tok, task, [ex], length, answer_room(tok, task, cfg.eval.max_new_tokens))
    training = row.ids[: row.n_prompt]
    assert row.truncated and len(row.ids) <= length
    # Evaluation: the predictor's prompt.
    evaluation = GenerativePredictor("qa", lm.model, tok, task, length, cfg.eval.max_new_tokens).prompt_ids(ex)
    # Serving: the engine's prompt for the chat request (question as the message, passage as context).
    app = create_app(load_serve_config(None, {"base": str(tiny_model_dir), "log": {"path": None},
                                              "adapters": {"qa": str(run)}}))
    engine, served = app.state.engine, app.state.engine.models["qa"]
    messages = [{"role": "user", "content": ex.input}]
    serving = engine.task_prompt(served, task_example(served, messages, ex.context, "r"), False)
    client = openai.OpenAI(base_url=loopback(app), api_key="none", max_retries=0)
    assert _ask(client, "qa", ex, max_tokens=1).usage.prompt_tokens == len(serving)
    # Export: the Modelfile's TEMPLATE with its SYSTEM (Ollama puts it first), applied to the
    # messages a client of the export sends: the prompt's user turn as rendered, cut included.
    folder = export_gguf_lora(run, base=_tiny_gguf(tiny_model_dir, tmp_path / "tiny.gguf"))
    template, system = _modelfile((folder / "Modelfile").read_text())
    assert system == task.system_prompt
    user = render(tok, task, ex, max_length=length, answer_room=answer_room(tok, task, cfg.eval.max_new_tokens))
    asked = [{"role": "system", "content": system}, user.messages[-1]]
    export = tok(_ollama_render(template, asked), add_special_tokens=False)["input_ids"]

    assert training == evaluation == serving == export
    assert "Question: When did order A7 ship?" in tok.decode(serving)  # the cut took the context only


def test_llama_cpp_serves_what_the_exported_artifacts_evaluation_answered(tmp_path, loopback):
    """The same parity on the llama.cpp engine: the exported GGUF LoRA evaluated as evaluation
    evaluates it (LlamaCppPredictor) and served by ``engine: llama-cpp``. Random adapters on the
    embedded model (llama.cpp needs a real GGUF); skipped without llama-cpp-python."""
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (bash scripts/setup.sh --tests)")
    import torch
    from peft import LoraConfig, get_peft_model

    from taskfit.baselines.llama_cpp import LlamaCppPredictor, load_llama
    from taskfit.models.registry import load_tokenizer
    from taskfit.training.gguf_lora import base_gguf

    base, tok, held_out, evaluated = base_gguf("smollm2-135m"), load_tokenizer("smollm2-135m"), _held_out(), {}
    for kind in KINDS:
        run = tmp_path / kind
        torch.manual_seed(0)
        model = get_peft_model(load_model("smollm2-135m").model, LoraConfig(
            r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
        model.save_pretrained(run / "adapter")
        (run / "manifest.json").write_text(json.dumps({"model": {"name": "smollm2-135m"}}))
        (run / "config.resolved.yaml").write_text(yaml.safe_dump(
            {"task": _task(kind), "data": {"train": "x.jsonl"}, "train": {"max_seq_length": 96},
             "eval": {"max_new_tokens": 28}}))
        cfg = load_config(run / "config.resolved.yaml")
        llm = load_llama(base, export_gguf_lora(run) / "adapter.gguf", n_ctx=256, threads=2)
        predictor = LlamaCppPredictor(kind, llm, tok, cfg.task, cfg.train.max_seq_length, cfg.eval.max_new_tokens,
                                      constrained=cfg.eval.constrained)
        evaluated[kind] = (cfg, list(predictor.predict(held_out[kind])))
        llm.close()
    spec = load_serve_config(None, {"engine": "llama-cpp", "log": {"path": None},
                                    "adapters": {kind: str(tmp_path / kind) for kind in KINDS}})
    client = openai.OpenAI(base_url=loopback(create_app(spec)), api_key="none", max_retries=0)
    _assert_served_as_evaluated(client, held_out, evaluated)


def test_feedback_on_a_qa_answer_is_checked_as_training_would_read_it(runs, tiny_model_dir, loopback, tmp_path):
    """A qa model has no labels (a `label` is refused), an empty correction is refused, and the
    refusal written in other case and punctuation is stored as task.refusal, as data check reads it."""
    try:  # the HTTP client the openai package is built on (httpx2 from openai 3)
        import httpx2 as httpx
    except ImportError:  # pragma: no cover
        import httpx

    spec = load_serve_config(None, {"base": str(tiny_model_dir), "log": {"path": str(tmp_path / "requests.sqlite")},
                                    "adapters": {"qa": {"path": str(runs["qa"])}}})
    url = loopback(create_app(spec))
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    reply = _ask(client, "qa", _held_out()["qa"][0], max_tokens=4)
    refusal = load_config(runs["qa"] / "config.resolved.yaml").task.refusal

    def post(**body):
        return httpx.post(f"{url}/feedback", json={"id": reply.id, "reviewer": "desk", **body})

    label = post(label="refund")
    assert label.status_code == 400 and "no labels" in label.json()["error"]["message"], label.text
    empty = post(answer="  ")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]["message"], empty.text
    shouted = post(answer=refusal.upper() + ".")
    assert shouted.status_code == 201 and shouted.json()["correction"] == refusal, shouted.text
