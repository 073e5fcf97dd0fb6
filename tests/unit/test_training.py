"""LoRA training on the tiny model: loss only on answers, only adapters change, PEFT layout."""

from __future__ import annotations

import random

import torch

from taskfit.config import TrainSpec
from taskfit.models import load_model
from taskfit.records import Example
from taskfit.training import train_lora
from taskfit.training.sft import _collate, featurize


def _data(n=48):
    rng = random.Random(0)
    pairs = [("I was charged twice on my invoice", "billing"), ("My parcel has not arrived", "shipping"),
             ("I cannot log in to my account", "account_access")]
    return [Example(id=str(i), input=t + "!" * rng.randint(0, 3), target=lab)
            for i, (t, lab) in enumerate(rng.choice(pairs) for _ in range(n))]


def test_only_answer_tokens_carry_loss(tiny, classify_task):
    rows = featurize(tiny.tokenizer, classify_task, _data(4), max_length=128)
    ids, mask, (b, t), targets = _collate(rows, tiny.tokenizer.pad_token_id)
    assert len(targets) == sum(len(r.completion) for r in rows) > 0
    for row_i, pos, tok in zip(b.tolist(), t.tolist(), targets.tolist()):
        r = rows[row_i]
        assert pos + 1 >= r.n_prompt  # predicted from inside the answer (or the header's end)
        assert ids[row_i, pos + 1] == tok


def test_training_lowers_loss_and_changes_only_adapters(tiny_model_dir, classify_task, tmp_path):
    lm = load_model(str(tiny_model_dir))
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    spec = TrainSpec(learning_rate=5e-3, epochs=4, batch_size=8, max_seq_length=128)
    model, result = train_lora(lm.model, lm.tokenizer, classify_task, spec, _data(),
                               log_path=tmp_path / "log.csv")
    assert result.steps == 24 and result.trained_tokens > 0 and result.loss_tokens > 0
    assert sum(result.losses[-4:]) / 4 < sum(result.losses[:4]) / 4
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 25
    for name, value in model.get_base_model().state_dict().items():
        if "lora_" not in name:
            clean = name.replace("base_layer.", "")
            assert torch.equal(value, before[clean]), name

    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                         tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-5)


def test_same_seed_same_adapter(tiny_model_dir, classify_task):
    spec = TrainSpec(learning_rate=5e-3, epochs=1, batch_size=8, max_seq_length=128, seed=3)
    runs = []
    for _ in range(2):
        lm = load_model(str(tiny_model_dir))
        _, result = train_lora(lm.model, lm.tokenizer, classify_task, spec, _data())
        runs.append(result.losses)
    assert runs[0] == runs[1]
