"""Training on the tiny model: loss only on answers, one rendering for every path, packing without
cross-row attention, validation and early stopping, checkpoints, full fine-tuning, DPO; and a
classification head (``train.classify_head``), which learns a separable set through the same loop
while the base stays untouched, validates and stops early on accuracy, resumes as if never
interrupted, saves in the plain PEFT layout with its head, answers with a softmax over the labels
(and the fallback below the threshold), reads the same tokens in every path, and merges into a
sequence classifier that transformers loads and that answers the same."""

from __future__ import annotations

import csv
import json
import math
import random

import pytest
import torch

from conftest import liked_less_first
from taskfit.baselines import LabelScoringPredictor
from taskfit.baselines.head import HeadClassifier
from taskfit.config import TrainSpec, parse_config
from taskfit.errors import ConfigError, DataError
from taskfit.models import load_model
from taskfit.models.head import HEAD_FILE, Head, head_logits, load_classifier, read_head
from taskfit.records import Example, PreferencePair
from taskfit.rendering import classifier_ids, render
from taskfit.tasks.classify import score_classify
from taskfit.training import train_dpo, train_sft
from taskfit.training.artifacts import export_merged, save_trained
from taskfit.training.batching import collate
from taskfit.training.forward import answer_loss
from taskfit.training.head import label_rows, train_head
from taskfit.training.loop import checkpoints
from taskfit.training.methods import load_hint
from taskfit.training.sft import featurize

PAIRS = [("I was charged twice on my invoice", "billing"), ("My parcel has not arrived", "shipping"),
         ("I cannot log in to my account", "account_access")]


def _data(n=48, seed=0):
    rng = random.Random(seed)
    return [Example(id=str(i), input=t + "!" * rng.randint(0, 3), target=lab, source=f"train.jsonl:{i + 1}")
            for i, (t, lab) in enumerate(rng.choice(PAIRS) for _ in range(n))]


def _spec(**kw):
    base = dict(learning_rate=5e-3, epochs=1, batch_size=8, max_seq_length=128, validation_share=0.0,
                checkpoint_every=0)
    return TrainSpec(**{**base, **kw})


def test_only_answer_tokens_carry_loss_and_the_end_of_turn_is_trained(tiny, classify_task):
    rows = featurize(tiny.tokenizer, classify_task, _data(4), max_length=128)
    batch = collate(rows, tiny.tokenizer.pad_token_id)
    assert len(batch.targets) == sum(len(r.completion) for r in rows) > 0
    for s, pos, tok in zip(batch.src[0].tolist(), batch.src[1].tolist(), batch.targets.tolist()):
        r = rows[s]
        assert pos + 1 >= r.n_prompt  # predicted from the answer or the header's last token
        assert batch.ids[s, pos + 1] == tok
    for r in rows:  # every answer ends with the end-of-turn token, and it carries loss
        assert r.completion[-1] == tiny.tokenizer.eos_token_id


def test_a_row_whose_answer_cannot_fit_is_named(tiny, classify_task):
    long = Example(id="x", input="word " * 400, target="billing " * 200, source="train.jsonl:7")
    with pytest.raises(DataError, match="train.jsonl:7"):
        featurize(tiny.tokenizer, classify_task, [long], max_length=64)
    empty = Example(id="y", input="hello", target="", source="train.jsonl:9")
    rows = featurize(tiny.tokenizer, classify_task, [empty], max_length=64)
    assert rows[0].completion == [tiny.tokenizer.eos_token_id]  # even an empty answer trains the stop


def test_training_evaluation_and_export_see_identical_tokens(tiny_model_dir, classify_task, tmp_path):
    """The token ids training reads for an example are the ones evaluation asks with, and the ones
    the saved tokenizer (what export and serving load) renders."""
    from transformers import AutoTokenizer

    lm = load_model(str(tiny_model_dir))
    ex = _data(1)[0]
    trained = featurize(lm.tokenizer, classify_task, [ex], 128)[0]
    scorer = LabelScoringPredictor("t", lm.model, lm.tokenizer, classify_task, 128)
    assert scorer.prompt_ids(ex) == trained.ids[: trained.n_prompt]
    label = classify_task.labels.index(ex.target)
    assert scorer.completions[label] == trained.completion
    model, _ = train_sft(lm.model, lm.tokenizer, classify_task, _spec(), _data(16), run_dir=tmp_path)
    lm.tokenizer.save_pretrained(tmp_path / "exported")
    exported = AutoTokenizer.from_pretrained(tmp_path / "exported")
    assert render(exported, classify_task, ex, target=ex.target, max_length=128).ids == trained.ids


def test_packing_gives_the_same_loss_as_padding(tiny, classify_task):
    """Attention never crosses rows in a packed sequence: the loss equals the padded batch's, and
    differs when the rows are let to see each other (so the comparison can tell)."""
    import dataclasses

    from transformers import LlamaForCausalLM

    config = tiny.model.config
    config.initializer_range = 0.3  # weights large enough for attention to matter
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    rows = featurize(tiny.tokenizer, classify_task, _data(8), max_length=128)
    padded = collate(rows, tiny.tokenizer.pad_token_id)
    packed = collate(rows, tiny.tokenizer.pad_token_id, pack_to=4 * max(len(r.ids) for r in rows))
    crossing = dataclasses.replace(packed, positions=None, mask=torch.ones_like(packed.ids))
    assert packed.ids.shape[0] < padded.ids.shape[0] and packed.read_tokens == padded.read_tokens
    with torch.no_grad():
        assert torch.allclose(answer_loss(model, packed), answer_loss(model, padded), atol=1e-5)
        assert not torch.allclose(answer_loss(model, crossing), answer_loss(model, padded), atol=1e-3)


def test_lora_trains_only_adapters_and_saves_plain_peft(tiny_model_dir, classify_task, tmp_path):
    lm = load_model(str(tiny_model_dir))
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    model, result = train_sft(lm.model, lm.tokenizer, classify_task, _spec(epochs=4), _data(),
                              run_dir=tmp_path)
    s = result.state
    assert s.step == 24 and s.trained_tokens > 0 and s.loss_tokens > 0
    assert sum(s.losses[-4:]) / 4 < sum(s.losses[:4]) / 4
    assert len((tmp_path / "train_log.csv").read_text().splitlines()) == 25
    for name, value in model.get_base_model().state_dict().items():
        if "lora_" not in name:
            assert torch.equal(value, before[name.replace("base_layer.", "")]), name

    model.save_pretrained(tmp_path / "adapter")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                         tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-5)


def test_micro_batches_give_the_same_update_as_one_pass(tiny_model_dir, classify_task):
    """A batch run in pieces (to bound memory) trains exactly as the whole batch at once (in
    float32: bfloat16 products round a row alone and in a batch differently)."""
    adapters, losses = [], []
    for cap in (16, 4096):  # 16 tokens: every row alone; 4096: the whole batch in one pass
        lm = load_model(str(tiny_model_dir))
        model, result = train_sft(lm.model, lm.tokenizer, classify_task,
                                  _spec(micro_batch_tokens=cap, epochs=2, dtype="float32", **{"lora": {"dropout": 0.0}}),
                                  _data(24))
        adapters.append({k: v for k, v in model.state_dict().items() if "lora_" in k})
        losses.append(result.state.losses)
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert all(torch.allclose(adapters[0][k], adapters[1][k], atol=1e-5) for k in adapters[0])


def test_a_cpu_that_multiplies_bfloat16_natively_trains_with_it_and_learns_as_float32(tiny_model_dir,
                                                                                    classify_task):
    """train.dtype auto: on a CPU that multiplies bfloat16 natively (torch's own CPU check),
    training's forward passes run under bfloat16 autocast (the manifest's hardware says so) while
    the weights, adapter and optimiser stay float32, and the losses follow float32's; float32, a
    GPU, or a CPU without native bfloat16 train in float32 throughout."""
    from taskfit.machine import cpu_bf16_native
    from taskfit.training.hardware import cpu_autocast, resolve_hardware

    native = cpu_bf16_native()
    assert native is (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert cpu_autocast("auto", "cpu") is native
    assert not cpu_autocast("float32", "cpu") and not cpu_autocast("auto", "cuda")
    assert resolve_hardware(TrainSpec()).describe().get("autocast") == ("bfloat16" if native else None)
    runs = {}
    for dtype in ("auto", "float32"):
        lm = load_model(str(tiny_model_dir))
        model, result = train_sft(lm.model, lm.tokenizer, classify_task, _spec(epochs=2, dtype=dtype), _data(24))
        assert all(p.dtype == torch.float32 for p in model.parameters())
        runs[dtype] = result.state.losses
    if native:  # other arithmetic, the same learning
        assert runs["auto"] != runs["float32"]
        assert runs["auto"] == pytest.approx(runs["float32"], rel=0.05)
    else:
        assert runs["auto"] == runs["float32"]


def test_weights_held_in_bfloat16_answer_as_autocast_over_float32_does(tiny_model_dir):
    """A model that only answers (the server's) holds its linear weights in bfloat16 where the
    hardware computes under autocast: the logits are autocast's over float32 weights bit for bit,
    a weight shared with another model (a head's classifier) stays shared, the tied output layer
    gets its own copy (the embedding stays float32); where the hardware computes in float32,
    nothing changes."""
    from peft import LoraConfig, get_peft_model

    from taskfit.training.hardware import Hardware

    ids = torch.tensor([[5, 9, 14, 3, 27, 11], [8, 2, 19, 30, 4, 6]])
    for setting in ("auto", "float32"):
        hardware = Hardware(device="cpu", dtype="float32", threads=2, setting=setting)
        torch.manual_seed(0)
        model = get_peft_model(load_model(str(tiny_model_dir)).model, LoraConfig(
            r=4, target_modules="all-linear", init_lora_weights=False)).eval()
        layer = model.get_base_model().model.layers[0].mlp.down_proj.base_layer
        twin = torch.nn.Linear(layer.in_features, layer.out_features, bias=False)
        twin.weight = layer.weight  # another model over the same weights
        with torch.no_grad(), hardware.computing():
            before = model(input_ids=ids).logits
            hardware.hold(model, twin)
            after = model(input_ids=ids).logits
        assert torch.equal(before, after) and twin.weight is layer.weight
        embedding, output = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        held = [m.weight.dtype for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert embedding.dtype == torch.float32
        if hardware.autocast:
            assert set(held) == {torch.bfloat16} and output.dtype == torch.bfloat16
        else:
            assert set(held) == {torch.float32} and output is embedding  # still tied


def test_same_seed_same_adapter(tiny_model_dir, classify_task):
    runs = []
    for _ in range(2):
        lm = load_model(str(tiny_model_dir))
        _, result = train_sft(lm.model, lm.tokenizer, classify_task, _spec(seed=3), _data())
        runs.append(result.state.losses)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("head", [False, True], ids=["label-scoring", "classify-head"])
def test_validation_keeps_the_best_step_and_stops_early(tiny_model_dir, classify_task, tmp_path, head):
    """Generative or with a classification head, training validates on accuracy (by label scoring,
    or the head's argmax), keeps the best step and stops early."""
    lm = load_model(str(tiny_model_dir))
    data = _data(80)
    train, val = data[:64], data[64:]
    # A learning rate this high overshoots: validation stops improving and training stops early.
    spec = _spec(learning_rate=0.3, epochs=20, eval_every=2, early_stopping_patience=2, metric_sample=8,
                 validation_share=0.1, classify_head=head)
    if head:
        model, trained, result = train_head(lm.model, lm.tokenizer, classify_task, spec, train, val,
                                            run_dir=tmp_path)
        scorer = HeadClassifier("v", model, lm.tokenizer, trained)
    else:
        model, result = train_sft(lm.model, lm.tokenizer, classify_task, spec, train, val, run_dir=tmp_path)
        scorer = LabelScoringPredictor("v", model, lm.tokenizer, classify_task, 128)
    s = result.state
    assert s.stopped_early and s.step < result.total_steps
    scores = [v["metric"] for v in s.validations]
    assert all(v["metric"] is not None and 0 <= v["metric"] <= 1 for v in s.validations)
    best = max(range(len(scores)), key=lambda i: (scores[i], -s.validations[i]["val_loss"]))  # ties: lower loss
    assert s.best_step == s.validations[best]["step"]
    assert s.stale_validations == 2
    log = (tmp_path / "validation_log.csv").read_text().splitlines()
    assert log[0] == "step,epoch,val_loss,metric" and len(log) == len(s.validations) + 1
    # The model returned holds the best step's weights: its validation accuracy is the best one.
    hits = [p.output == ex.target for p, ex in zip(scorer.predict(val[:8]), val[:8])]
    assert sum(hits) / 8 == pytest.approx(s.validations[best]["metric"])


def test_checkpoints_are_atomic_and_resume_matches_an_uninterrupted_run(tiny_model_dir, classify_task, tmp_path):
    spec = _spec(epochs=3, checkpoint_every=4, keep_checkpoints=2, validation_share=0.1, eval_every=5,
                 metric_sample=4, early_stopping_patience=0)
    data = _data(40)
    train, val = data[:32], data[32:]
    lm = load_model(str(tiny_model_dir))
    whole, whole_result = train_sft(lm.model, lm.tokenizer, classify_task, spec, train, val,
                                    run_dir=tmp_path / "whole")
    found = checkpoints(tmp_path / "whole" / "checkpoints")
    assert [p.name for p in found] == ["step-000008", "step-000012"]  # the newest two of 12 steps
    # A half-written checkpoint (killed mid-write) is ignored.
    (tmp_path / "whole" / "checkpoints" / "step-000016.tmp").mkdir()
    (tmp_path / "whole" / "checkpoints" / "step-000020").mkdir()  # no state.json: not complete
    assert checkpoints(tmp_path / "whole" / "checkpoints") == found

    lm2 = load_model(str(tiny_model_dir))
    resumed, result = train_sft(lm2.model, lm2.tokenizer, classify_task, spec, train, val,
                                run_dir=tmp_path / "whole", resume_from=found[0])
    assert result.state.resumed_from == 8 and result.state.step == 12
    assert not (tmp_path / "whole" / "checkpoints" / "step-000016.tmp").exists()  # cleaned on resume
    assert result.state.losses == pytest.approx(whole_result.state.losses, abs=1e-6)
    assert result.state.validations == whole_result.state.validations
    a = {k: v for k, v in whole.state_dict().items() if "lora_" in k}
    b = {k: v for k, v in resumed.state_dict().items() if "lora_" in k}
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    log = (tmp_path / "whole" / "train_log.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in log[1:]] == list(range(1, 13))


def test_full_fine_tuning_changes_every_weight(tiny_model_dir, classify_task, tmp_path):
    lm = load_model(str(tiny_model_dir))
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    model, result = train_sft(lm.model, lm.tokenizer, classify_task, _spec(method="full", learning_rate=1e-3),
                              _data(16))
    assert result.state.step == 2
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "model.layers.0.mlp.up_proj.weight" in changed and "model.embed_tokens.weight" in changed


def test_fsdp_settings_that_cannot_work_are_refused_with_what_to_do(monkeypatch):
    from taskfit.training.hardware import resolve_hardware

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --use_fsdp` sets
    with pytest.raises(ConfigError, match="--use_fsdp") as info:
        resolve_hardware(TrainSpec())
    assert "fsdp: true" in info.value.hint
    assert resolve_hardware(TrainSpec(fsdp=True)).device in ("cpu", "cuda")
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    with pytest.raises(ConfigError, match="4-bit"):
        resolve_hardware(TrainSpec(method="qlora", fsdp=True))


def test_more_threads_than_cores_warn_and_the_default_shares_them_out(monkeypatch):
    """train.threads above the cores (or the cores shared by data-parallel processes) slows torch
    down: the user is told so; the default never warns."""
    import warnings

    import torch

    from taskfit.machine import cpu_cores
    from taskfit.training.hardware import resolve_hardware

    before = torch.get_num_threads()
    try:
        with pytest.warns(RuntimeWarning, match="outnumber the cores"):
            assert resolve_hardware(TrainSpec(device="cpu", threads=cpu_cores() + 1)).threads == cpu_cores() + 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            resolve_hardware(TrainSpec(device="cpu", threads=cpu_cores()))
            monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
            resolve_hardware(TrainSpec(device="cpu"))  # each process takes its share
        with pytest.warns(RuntimeWarning, match="each of 2 process"):
            resolve_hardware(TrainSpec(device="cpu", threads=cpu_cores()))  # the cores, twice over
    finally:
        torch.set_num_threads(before)


def test_dpo_raises_held_out_preference_for_chosen(tiny_model_dir, classify_task, tmp_path):
    rng = random.Random(0)
    prompts = ["my parcel is late", "refund my order", "I cannot log in", "the app crashes",
               "change my address", "cancel my plan"]

    answers = ["That is on us: a refund is on its way.", "Sorry about that, I will help you now."]

    def pairs(n, offset):
        return [PreferencePair(id=str(offset + i), prompt=rng.choice(prompts) + "!" * (i % 3),
                               chosen=answers[0], rejected=answers[1])
                for i in range(n)]

    lm = load_model(str(tiny_model_dir))
    answers[:] = liked_less_first(lm.model, lm.tokenizer, classify_task, prompts[0], answers)
    spec = _spec(method="dpo", learning_rate=5e-3, epochs=4, validation_share=0.1, eval_every=4)
    read = []
    model, result, held = train_dpo(lm.model, lm.tokenizer, classify_task, spec, pairs(32, 0),
                                    pairs(8, 100), held_out=pairs(16, 200), run_dir=tmp_path, on_read=read.append)
    # the passes over the pairs before and after training show how far they are
    assert read[-1] == "held-out pairs scored 16/16" and "pairs read before training 56/56" in read
    assert result.state.losses[-1] < result.state.losses[0]
    assert held["preference_accuracy_after"] > held["preference_accuracy_before"]
    assert held["preference_accuracy_after"] == 1.0 and held["pairs"] == 16
    # every pair that was wrong before flipped to chosen; none went the other way
    assert held["flipped_to_chosen"] == round(16 * (1 - held["preference_accuracy_before"]))
    assert held["flipped_to_rejected"] == 0 and held["reward_accuracy"] == 1.0 and held["p_value"] < 0.05
    # The summed figure moves the same way (it need not reach 1: a longer chosen answer keeps a lower sum).
    assert held["summed_preference_accuracy_after"] >= held["summed_preference_accuracy_before"]
    assert all(v["metric"] is not None for v in result.state.validations)
    # each pair's figures are kept, and they give the report's figures again
    with (tmp_path / "held_out_pairs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [str(200 + i) for i in range(16)]
    per_token = [float(r["chosen_logp_after"]) / int(r["chosen_tokens"]) >
                 float(r["rejected_logp_after"]) / int(r["rejected_tokens"]) for r in rows]
    assert all(per_token)


def test_dpo_preference_is_judged_per_answer_token_not_by_length():
    from taskfit.training.dpo import held_out_report

    # summed log-probability favours the shorter answer; per token, these pairs prefer the other
    lengths = torch.tensor([[5.0, 20.0], [20.0, 5.0], [10.0, 10.0]])
    before = torch.tensor([[-10.0, -20.0], [-20.0, -10.0], [-30.0, -20.0]])  # per token: -2,-1 / -1,-2 / -3,-2
    after = torch.tensor([[-10.0, -20.0], [-12.0, -10.0], [-10.0, -20.0]])   # -2,-1 / -.6,-2 / -1,-2
    h = held_out_report(before, after, lengths)
    assert h["summed_picks_shorter"] == 1.0
    assert h["preference_accuracy_before"] == pytest.approx(1 / 3)  # only the second pair, per token
    assert h["summed_preference_accuracy_before"] == pytest.approx(1 / 3)  # only the first, summed
    assert h["preference_accuracy_after"] == pytest.approx(2 / 3)
    assert (h["flipped_to_chosen"], h["flipped_to_rejected"]) == (1, 0)
    assert h["summed_preference_accuracy_after"] == pytest.approx(2 / 3)
    assert h["reward_accuracy"] == pytest.approx(2 / 3)  # the second pair's chosen rose, the third's too


def test_qlora_on_a_cpu_machine_says_so_and_suggests_lora():
    from taskfit.training.hardware import resolve_hardware

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="needs a CUDA GPU") as info:
        resolve_hardware(TrainSpec(method="qlora"))
    assert "method: lora" in info.value.hint
    hw = resolve_hardware(TrainSpec())
    assert hw.device == "cpu" and hw.dtype == "float32"
    assert json.dumps(hw.describe())


def test_a_dpo_answer_too_long_to_fit_is_cut_not_fatal(tiny, classify_task):
    from taskfit.training.dpo import featurize_pairs

    pair = PreferencePair(id="1", prompt="where is my parcel", chosen="I will check. " * 80, rejected="No.",
                          source="pairs.jsonl:3")
    ((chosen, rejected),) = featurize_pairs(tiny.tokenizer, classify_task, [pair], max_length=128)
    assert len(chosen.ids) <= 128 and chosen.ids[: chosen.n_prompt] == rejected.ids[: rejected.n_prompt]
    assert chosen.completion[-1] == tiny.tokenizer.eos_token_id
    dialogue = PreferencePair(id="3", prompt="OLDEST turn. " + "Human: more words here. " * 60 + "LATEST question?",
                              chosen="Sure.", rejected="No.")
    ((chosen, _),) = featurize_pairs(tiny.tokenizer, classify_task, [dialogue], max_length=128)
    shown = tiny.tokenizer.decode(chosen.ids[: chosen.n_prompt])
    assert len(chosen.ids) <= 128 and "LATEST question?" in shown and "OLDEST" not in shown
    hopeless = PreferencePair(id="2", prompt="x", chosen="y", rejected="z", system="long system " * 80,
                              source="pairs.jsonl:4")
    with pytest.raises(DataError, match="pairs.jsonl:4"):
        featurize_pairs(tiny.tokenizer, classify_task, [hopeless], max_length=32)


def test_dpo_starts_from_an_sft_adapter_and_uses_it_as_reference(tiny_model_dir, classify_task, tmp_path):
    lm = load_model(str(tiny_model_dir))
    sft, _ = train_sft(lm.model, lm.tokenizer, classify_task, _spec(epochs=2), _data(32))
    sft.save_pretrained(tmp_path / "sft")
    trained = {k.replace(".default", ""): v.clone() for k, v in sft.state_dict().items() if "lora_B" in k}
    assert any(v.abs().sum() > 0 for v in trained.values())  # a fresh adapter's B would be zero
    pairs = [PreferencePair(id=str(i), prompt=f"ticket {i}: I was charged twice", chosen="billing",
                            rejected="shipping") for i in range(16)]
    fresh = load_model(str(tiny_model_dir))
    # A learning rate too small to move anything: what comes out is what DPO started from.
    model, result, _ = train_dpo(fresh.model, fresh.tokenizer, classify_task,
                                 _spec(method="dpo", learning_rate=1e-12), pairs,
                                 adapter=tmp_path / "sft")
    started = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_B" in k}
    assert started.keys() == trained.keys()
    assert all(torch.allclose(started[k], trained[k], atol=1e-6) for k in trained)
    assert result.state.losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference (but dropout)


@pytest.mark.parametrize("kind", ["extract", "qa", "generate"])
def test_validation_scores_the_generating_kinds_by_their_own_metric(tiny_model_dir, tmp_path, kind):
    from taskfit.config import EvalSpec, TaskSpec

    schema = {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}
    task = TaskSpec(kind=kind, success="s", system_prompt="Answer briefly.",
                    **({"schema": schema} if kind == "extract" else {}))
    target = '{"order": "A12"}' if kind == "extract" else "Order A12."
    rows = [Example(id=str(i), input=f"where is order A{i}?", target=target,
                    context="Order A12 shipped." if kind == "qa" else None) for i in range(12)]
    lm = load_model(str(tiny_model_dir))
    spec = _spec(eval_every=1, metric_sample=4)
    _, result = train_sft(lm.model, lm.tokenizer, task, spec, rows[:8], rows[8:], run_dir=tmp_path,
                          evaluation=EvalSpec(max_new_tokens=24))
    side = {"extract": "valid_rate", "qa": "refusal_recall", "generate": "format_compliance"}[kind]
    assert result.state.validations and all(0.0 <= v["metric"] <= 1.0 and v[side] is not None
                                            for v in result.state.validations)
    if kind == "extract":  # held to the schema while decoding, so every answer complies
        assert all(v["valid_rate"] == 1.0 for v in result.state.validations)
    with (tmp_path / "validation_log.csv").open() as f:
        logged = list(csv.DictReader(f))
    assert len(logged) == len(result.state.validations) and logged[0]["metric"] != "" and side in logged[0]


def test_ipo_loss_matches_a_hand_computation_per_answer_token():
    from taskfit.training.dpo import dpo_loss

    policy = torch.tensor([[-4.0, -9.0], [-6.0, -3.0]])  # summed answer log-probabilities (chosen, rejected)
    ref = torch.tensor([[-5.0, -8.0], [-6.0, -6.0]])
    lengths = torch.tensor([[2.0, 4.0], [3.0, 1.0]])
    # per token: pair 1 h = 1/2 - (-1/4) = 0.75, pair 2 h = 0/3 - 3/1 = -3; 1/(2β) = 1 at β = 0.5
    assert float(dpo_loss(policy, ref, 0.5, "ipo", lengths)) == pytest.approx(((0.75 - 1) ** 2 + (-3 - 1) ** 2) / 2)
    # DPO's logistic loss is unchanged, and reads summed log-ratios: margins 2 and -3
    expected = (-torch.nn.functional.logsigmoid(torch.tensor(1.0)) - torch.nn.functional.logsigmoid(torch.tensor(-1.5))) / 2
    assert float(dpo_loss(policy, ref, 0.5)) == pytest.approx(float(expected))
    # IPO pulls the per-token margin to 1/(2β) and no further: there its gradient is zero
    at_target = torch.tensor([[-3.0, -8.0]], requires_grad=True)  # h = (−3+5)/2 − 0/4 = 1
    dpo_loss(at_target, torch.tensor([[-5.0, -8.0]]), 0.5, "ipo", torch.tensor([[2.0, 4.0]])).backward()
    assert at_target.grad.abs().max() == 0


def test_dpo_config_loss_ipo_trains_a_different_adapter_than_sigmoid(tiny_model_dir, classify_task):
    pairs = [PreferencePair(id=str(i), prompt=f"ticket {i}: my parcel is late", chosen="That is on us, sorry.",
                            rejected="No.") for i in range(16)]
    adapters, first_losses = {}, {}
    for loss in ("sigmoid", "ipo"):
        lm = load_model(str(tiny_model_dir))
        spec = _spec(method="dpo", learning_rate=5e-3, dpo={"beta": 0.1, "loss": loss})
        model, result, _ = train_dpo(lm.model, lm.tokenizer, classify_task, spec, pairs)
        adapters[loss] = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
        first_losses[loss] = result.state.losses[0]
    # A fresh adapter leaves the policy equal to the reference at the first step: h = 0
    assert first_losses["sigmoid"] == pytest.approx(0.6931, abs=1e-3)  # -log σ(0)
    assert first_losses["ipo"] == pytest.approx((1 / (2 * 0.1)) ** 2, rel=1e-3)  # (0 - 1/(2β))²
    assert adapters["sigmoid"].keys() == adapters["ipo"].keys()
    assert any(not torch.allclose(adapters["sigmoid"][k], adapters["ipo"][k]) for k in adapters["ipo"])


# ---- a classification head (train.classify_head) ---------------------------------------------
def _head_spec(**kw):
    return _spec(**{"classify_head": True, "max_seq_length": 64, **kw})


@pytest.fixture(scope="module", params=["mean", "last"])
def head_run(tiny_model_dir, tmp_path_factory, request):
    """A head trained on the separable set and saved as `taskfit train` saves it (in ``run/adapter``),
    with the base's body weights as they were before training; reading the mean of the hidden
    states (the default) and the last token's."""
    from taskfit.config import TaskSpec
    from taskfit.data.sample import QUEUES

    task = TaskSpec(kind="classify", success="s", system_prompt="Route the ticket.", labels=list(QUEUES))
    run = tmp_path_factory.mktemp("head-run")
    lm = load_model(str(tiny_model_dir))
    before = {k: v.clone() for k, v in lm.model.model.state_dict().items()}
    model, head, result = train_head(lm.model, lm.tokenizer, task, _head_spec(epochs=4, head_pooling=request.param),
                                     _data(), run_dir=run)
    save_trained(model, lm.tokenizer, run / "adapter", "# card\n", extra={HEAD_FILE: head.to_json()})
    return {"lm": lm, "model": model, "head": head, "result": result, "run": run, "before": before}


def test_a_head_learns_a_separable_set_and_leaves_the_base_untouched(head_run, classify_task):
    lm, model, head, before = head_run["lm"], head_run["model"], head_run["head"], head_run["before"]
    s = head_run["result"].state
    assert s.step == 24 and s.loss_tokens == 4 * 48  # one prediction per row
    assert sum(s.losses[-4:]) / 4 < 0.5 * sum(s.losses[:4]) / 4
    assert head.labels == tuple(classify_task.labels) and head.max_length == 64
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    assert any("score" in n for n in trainable)
    body = model.get_base_model().model.state_dict()
    for name, value in before.items():  # the base's weights, looked at through the LoRA layers
        key = name if name in body else name.replace(".weight", ".base_layer.weight")
        assert torch.equal(body[key], value), name
    predictions = list(HeadClassifier("head", model, lm.tokenizer, head, batch_size=5).predict(_data()))
    assert sum(p.output == ex.target for p, ex in zip(predictions, _data())) / 48 == 1.0


def test_a_validation_due_just_before_the_epoch_end_is_left_to_it(tiny_model_dir, classify_task):
    """Validation runs every eval_every steps and at each epoch's end, but not eval_every steps in
    when the epoch ends fewer than eval_every / 2 steps later (the same weights, measured twice)."""
    lm = load_model(str(tiny_model_dir))
    data = _data(48)
    spec = _head_spec(epochs=2, eval_every=4, metric_sample=4, early_stopping_patience=0)
    _, _, result = train_head(lm.model, lm.tokenizer, classify_task, spec, data[:40], data[40:])
    # 5 steps an epoch: step 4 is one step before the epoch's end; step 8 two before the last.
    assert [v["step"] for v in result.state.validations] == [5, 8, 10]


def test_a_resumed_head_run_takes_the_steps_of_an_uninterrupted_one(tiny_model_dir, classify_task, tmp_path):
    spec = _head_spec(epochs=3, checkpoint_every=3, validation_share=0.1, eval_every=4, metric_sample=4,
                 early_stopping_patience=0)
    data = _data(40)
    train, val = data[:32], data[32:]
    lm = load_model(str(tiny_model_dir))
    whole, _, whole_result = train_head(lm.model, lm.tokenizer, classify_task, spec, train, val,
                                        run_dir=tmp_path / "whole")
    found = checkpoints(tmp_path / "whole" / "checkpoints")
    assert [p.name for p in found] == ["step-000009", "step-000012"]
    lm2 = load_model(str(tiny_model_dir))
    resumed, _, result = train_head(lm2.model, lm2.tokenizer, classify_task, spec, train, val,
                                    run_dir=tmp_path / "whole", resume_from=found[0])
    assert result.state.resumed_from == 9 and result.state.step == 12
    assert result.state.losses == pytest.approx(whole_result.state.losses, abs=1e-6)
    assert result.state.validations == whole_result.state.validations
    a = {k: v for k, v in whole.state_dict().items() if "lora_" in k or "score" in k}
    b = {k: v for k, v in resumed.state_dict().items() if "lora_" in k or "score" in k}
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_the_adapter_is_plain_peft_with_its_head_and_loads_as_trained(head_run, tiny_model_dir, classify_task):
    from safetensors import safe_open

    lm, model, head = head_run["lm"], head_run["model"], head_run["head"]
    adapter = head_run["run"] / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    assert shapes["base_model.model.score.weight"] == [len(classify_task.labels), 48]
    assert read_head(adapter) == head and read_head(head_run["run"]) is None

    rows = [classifier_ids(lm.tokenizer, ex, 64) for ex in _data(6)]
    fresh = load_model(str(tiny_model_dir))
    reloaded, reread = load_classifier(fresh.model, fresh.tokenizer, adapter)
    assert reread == head
    with torch.no_grad():
        expected = HeadClassifier("a", model.eval(), lm.tokenizer, head).log_probs(rows)
        got = HeadClassifier("b", reloaded, fresh.tokenizer, head).log_probs(rows)
    assert torch.allclose(expected, got, atol=1e-5)

    # The model card's snippet, run as a user would (transformers and PEFT only), gives the same labels.
    code = load_hint(_head_spec(head_pooling=head.pooling), adapter, tiny_model_dir)
    for ex, row in zip(_data(6), expected):
        scope = {"text": ex.input}
        exec(code, scope)
        assert scope["label"] == head.labels[int(row.argmax())]


def test_confidence_is_a_softmax_over_every_label_and_the_fallback_applies(head_run):
    lm, model, head = head_run["lm"], head_run["model"], head_run["head"]
    predictor = HeadClassifier("head", model, lm.tokenizer, head, batch_size=4)
    rows = _data(12, seed=5)
    predictions = list(predictor.predict(rows))
    for ex, p in zip(rows, predictions):
        scores = predictor.scores(predictor.prompt_ids(ex))
        assert sum(math.exp(s) for s in scores) == pytest.approx(1.0, abs=1e-5)
        assert p.confidence == pytest.approx(max(math.exp(s) for s in scores), abs=1e-5)
        assert p.output == head.labels[scores.index(max(scores))] and p.valid and p.completion_tokens == 0
        assert 1 / len(head.labels) < p.confidence <= 1 and p.prompt_tokens == len(predictor.prompt_ids(ex))
    threshold = sorted(p.confidence for p in predictions)[6]
    result = score_classify("head", list(head.labels), rows, predictions, n_boot=10, threshold=threshold,
                            fallback="needs_human")
    assert result.metrics["coverage"] == pytest.approx(sum(p.confidence >= threshold for p in predictions) / 12)
    assert "ece" in result.metrics and 0 <= result.metrics["ece"] <= 1
    with pytest.raises(DataError, match="row id e"):
        predictor.prompt_ids(Example(id="e", input="", target="billing"))


def test_training_evaluation_and_the_export_read_the_same_tokens(tiny_model_dir, classify_task, tmp_path):
    from transformers import AutoTokenizer

    lm = load_model(str(tiny_model_dir))
    head = Head(labels=tuple(classify_task.labels), max_length=12)
    ex = Example(id="x", input="word " * 40 + "my parcel", target="shipping")
    (trained,), _ = label_rows(lm.tokenizer, head, [ex])
    assert len(trained.ids) == 12
    assert HeadClassifier("h", None, lm.tokenizer, head).prompt_ids(ex) == trained.ids
    lm.tokenizer.save_pretrained(tmp_path / "exported")
    exported = AutoTokenizer.from_pretrained(tmp_path / "exported")
    assert exported(ex.input, truncation=True, max_length=12)["input_ids"] == trained.ids


def test_the_merged_export_is_a_sequence_classifier_that_answers_the_same(head_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    lm, model, head = head_run["lm"], head_run["model"], head_run["head"]
    rows = _data(8, seed=3)
    evaluated = list(HeadClassifier("head", model, lm.tokenizer, head, batch_size=3).predict(rows))
    merged = export_merged(head_run["run"], tmp_path / "merged")
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert [config["id2label"][str(i)] for i in range(len(head.labels))] == list(head.labels)
    card = (merged / "README.md").read_text()
    assert "AutoModelForSequenceClassification" in card and read_head(merged) == head
    if head.pooling == "last":  # transformers' own form: its pipeline answers as evaluation did
        shipped = AutoModelForSequenceClassification.from_pretrained(merged).eval()
        tokenizer = AutoTokenizer.from_pretrained(merged)
        classify = pipeline("text-classification", model=shipped, tokenizer=tokenizer)
        for ex, p in zip(rows, evaluated):
            with torch.no_grad():
                probs = torch.softmax(shipped(**tokenizer(ex.input, return_tensors="pt")).logits[0], -1)
            assert head.labels[int(probs.argmax())] == p.output
            assert float(probs.max()) == pytest.approx(p.confidence, abs=1e-4)
            top = classify(ex.input, truncation=True, max_length=64)[0]
            assert top["label"] == p.output and top["score"] == pytest.approx(p.confidence, abs=1e-4)
        return
    # Mean pooling: the card's code, run as a user would, answers as evaluation did.
    code = card.split("```python\n")[-1].split("```")[0].replace("PATH", repr(str(merged)))
    for ex, p in zip(rows, evaluated):
        scope = {"text": ex.input}
        exec(code, scope)
        assert scope["label"] == p.output
        assert float(torch.softmax(scope["logits"], -1).max()) == pytest.approx(p.confidence, abs=1e-4)


def test_a_head_answers_a_row_alike_alone_and_in_a_padded_batch(head_run):
    """Padding is left out of the mean (and the last token read is the row's own): a short row's
    answer does not depend on the longer rows it is batched with (evaluation and serving batch
    rows; a request may come alone)."""
    lm, model, head = head_run["lm"], head_run["model"], head_run["head"]
    rows = [classifier_ids(lm.tokenizer, ex, 64) for ex in _data(6, seed=9)]
    rows[0] = rows[0][:3]  # much shorter than the rest: most of its batch row is padding
    with torch.no_grad():
        together = head_logits(model.eval(), rows, lm.tokenizer.pad_token_id, head.pooling)
        alone = torch.cat([head_logits(model, [r], lm.tokenizer.pad_token_id, head.pooling) for r in rows])
    assert torch.allclose(together, alone, atol=1e-4)


def test_the_setting_is_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match="method dpo"):
        TrainSpec(classify_head=True, method="dpo")
    with pytest.raises(ValueError, match="train.packing"):
        TrainSpec(classify_head=True, packing=True)
    with pytest.raises(ValueError, match="train.fsdp"):
        TrainSpec(classify_head=True, fsdp=True)
    doc = {"task": {"kind": "extract", "success": "s", "system_prompt": "p",
                    "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
           "data": {"train": "t.jsonl"}, "train": {"classify_head": True}}
    with pytest.raises(ConfigError, match="train.classify_head: .* task.kind is extract"):
        parse_config(doc)


def test_adapters_on_the_top_layers_leave_the_rest_frozen_and_read_them_once(tiny_model_dir, classify_task,
                                                                               monkeypatch):
    """`train.lora.layers: 1` of the tiny model's 2: LoRA in the top layer only, and the head's
    later epochs and validations start from the kept output of the layer below, training exactly
    as the run that reads the whole body every pass (no memory for kept states)."""
    from taskfit.training import head as head_training

    spec = _head_spec(epochs=3, lora={"layers": 1}, validation_share=0.1, eval_every=4, metric_sample=4,
                      early_stopping_patience=0)
    data = _data(40)
    reused = []
    original = head_training.FrozenLayers._from_states

    def counting(self, keys):
        reused.append(len(keys))
        return original(self, keys)

    monkeypatch.setattr(head_training.FrozenLayers, "_from_states", counting)
    runs = {}
    for budget in (head_training.FROZEN_STATES_BYTES, 0):
        monkeypatch.setattr(head_training, "FROZEN_STATES_BYTES", budget)
        reused.clear()
        lm = load_model(str(tiny_model_dir))
        model, _, result = train_head(lm.model, lm.tokenizer, classify_task, spec, data[:32], data[32:])
        runs[budget] = (model, result.state, sum(reused))
    (fast, fast_state, fast_reused), (whole, whole_state, whole_reused) = runs.values()
    # every row after its first pass: epochs 2 and 3 (32 rows each) and the later validations
    assert whole_reused == 0 and fast_reused >= 2 * 32
    assert fast_state.losses == pytest.approx(whole_state.losses, abs=1e-5)
    assert [v["val_loss"] for v in fast_state.validations] == pytest.approx(
        [v["val_loss"] for v in whole_state.validations], abs=1e-5)
    trainable = {n for n, p in fast.named_parameters() if p.requires_grad and "lora_" in n}
    assert trainable and all(".layers.1." in n for n in trainable)
    a = {k: v for k, v in fast.state_dict().items() if "lora_" in k or "score" in k}
    b = {k: v for k, v in whole.state_dict().items() if "lora_" in k or "score" in k}
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_lora_layers_adapts_the_top_layers_of_a_written_answer_too_and_refuses_too_many(tiny_model_dir,
                                                                                        classify_task):
    lm = load_model(str(tiny_model_dir))
    model, _ = train_sft(lm.model, lm.tokenizer, classify_task, _spec(lora={"layers": 1}), _data(8))
    adapted = {n for n, p in model.named_parameters() if p.requires_grad}
    assert adapted and all(".layers.1." in n and "lora_" in n for n in adapted)
    lm = load_model(str(tiny_model_dir))
    with pytest.raises(ConfigError, match=r"train.lora.layers: 3, but the model has 2 decoder layers"):
        train_head(lm.model, lm.tokenizer, classify_task, _head_spec(lora={"layers": 3}), _data(8))


def test_a_body_that_cannot_start_midway_is_read_whole_with_a_warning(tiny_model_dir, classify_task, monkeypatch):
    """A body that changes the input embeddings it is given (as Gemma's scaled them before
    transformers 5) cannot take the kept states as its input: the comparison before the first
    reuse finds it, and training goes on reading the whole body, as without kept states."""
    from transformers.models.llama.modeling_llama import LlamaModel

    spec = _head_spec(epochs=2, lora={"layers": 1})
    plain = load_model(str(tiny_model_dir))
    _, _, expected = train_head(plain.model, plain.tokenizer, classify_task, spec, _data(16))
    forward = LlamaModel.forward

    def rescaled(self, *args, inputs_embeds=None, **kwargs):
        return forward(self, *args, inputs_embeds=None if inputs_embeds is None else inputs_embeds * 2.0, **kwargs)

    monkeypatch.setattr(LlamaModel, "forward", rescaled)
    lm = load_model(str(tiny_model_dir))
    with pytest.warns(RuntimeWarning, match="cannot be started at its first adapted layer"):
        _, _, result = train_head(lm.model, lm.tokenizer, classify_task, spec, _data(16))
    assert result.state.losses == pytest.approx(expected.state.losses, abs=1e-5)


def test_a_head_on_cpu_reads_bigger_micro_batches_than_a_written_answer():
    from taskfit.training.batching import micro_batch_tokens

    assert micro_batch_tokens(TrainSpec(device="cpu")) == 128
    assert micro_batch_tokens(TrainSpec(device="cpu", classify_head=True)) == 512
    assert micro_batch_tokens(TrainSpec(device="cpu", classify_head=True, micro_batch_tokens=64)) == 64


def test_loss_per_row_weighs_each_row_alike_whatever_its_answer_length(tiny, classify_task):
    """train.loss_per: row averages each row's answer tokens first: the batch's loss is the mean of
    its rows' own mean losses, so a long answer (a ten-token qa refusal) weighs what a short one
    does; the default averages over every answer token. dpo and a head refuse it."""
    from transformers import LlamaForCausalLM

    from taskfit.training.parallel import Parallel
    from taskfit.training.sft import SftObjective

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny.model.config).eval()
    data = _data(6)
    per_token = SftObjective(model, tiny.tokenizer, classify_task, _spec(), Parallel(), data)
    per_row = SftObjective(model, tiny.tokenizer, classify_task, _spec(loss_per="row"), Parallel(), data)
    lengths = [len(r.completion) for r in per_row.rows]
    assert len(set(lengths)) > 1  # answers of several lengths, or the two averages could not differ
    batch = list(range(len(data)))
    assert per_row.units(batch) == len(batch) and per_token.units(batch) == sum(lengths)
    with torch.no_grad():
        alone = [float(answer_loss(model, collate([r], tiny.tokenizer.pad_token_id))) for r in per_row.rows]
        by_row = float(per_row.loss_sum(batch).loss_sum) / per_row.units(batch)
        by_token = float(per_token.loss_sum(batch).loss_sum) / per_token.units(batch)
    assert by_row == pytest.approx(sum(alone) / len(alone), rel=1e-5)
    assert by_token == pytest.approx(sum(a * n for a, n in zip(alone, lengths)) / sum(lengths), rel=1e-5)
    assert abs(by_row - by_token) > 1e-4
    with pytest.raises(ValueError, match="loss_per"):
        _spec(loss_per="row", method="dpo")
    with pytest.raises(ValueError, match="loss_per"):
        _spec(loss_per="row", classify_head=True)
