"""The forgetting check (eval.forgetting): what a fine-tune cost outside its task, on the general
probe that ships with taskfit, measured on the tiny model; the warning in the verdict; the probe's
source and licence in the scorecard and the report."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import pytest

from taskfit.config import ForgettingSpec
from taskfit.errors import ConfigError
from taskfit.evaluation.compare import build_scorecard
from taskfit.evaluation.report import write_scorecard_report
from taskfit.probes import GENERAL, load_probe, measure_forgetting
from taskfit.probes.forgetting import _answer_tokens, _task
from taskfit.records import EvalResult, ForgettingResult

ROOT = Path(__file__).resolve().parents[2]
PROBES = ROOT / "src" / "taskfit" / "probes"


def _lora(model_dir, seed=0):
    """A fresh LoRA on its own copy of the tiny model: B = 0, so it changes nothing yet."""
    import torch
    from peft import LoraConfig, get_peft_model

    from taskfit.models import load_model

    torch.manual_seed(seed)
    loaded = load_model(str(model_dir))
    return loaded.tokenizer, get_peft_model(loaded.model, LoraConfig(r=4, target_modules="all-linear")).eval()


def _perturb(model, std=0.5, seed=1):
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def test_the_probe_ships_with_its_source_and_licence_and_refuses_more_items_than_it_holds():
    probe = load_probe(GENERAL, 128)  # every item: the most eval.forgetting.items allows
    assert len(probe.items) == 128 and len(probe.shots) == 3
    with pytest.raises(ValueError, match="less than or equal to 128"):
        ForgettingSpec(items=129)
    ids = [ex.id for ex in probe.shots + probe.items]
    assert len(set(ids)) == len(ids)
    assert all(ex.target and ex.target in ex.context for ex in probe.shots + probe.items)
    assert len(load_probe(GENERAL, ForgettingSpec().items).items) == ForgettingSpec().items == 64
    source = (PROBES / "SOURCE.md").read_text()
    assert GENERAL.licence == "CC BY-SA 4.0" and "CC BY-SA 4.0" in source and "Rajpurkar" in source
    assert "Rajpurkar" in GENERAL.source
    with pytest.raises(ConfigError, match="eval.forgetting.items: 129 asked.*holds 128"):
        load_probe(GENERAL, 129)


def test_the_package_data_includes_the_probe_and_its_source():
    """Installed from a wheel, taskfit still finds the probe: pyproject ships it as package data."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {p.name for pattern in data["taskfit.probes"] for p in PROBES.glob(pattern)}
    assert {"general.jsonl", "SOURCE.md"} <= shipped


def test_a_zero_adapter_costs_nothing_and_a_changed_one_moves_the_figures(tiny_model_dir):
    tokenizer, model = _lora(tiny_model_dir)
    probe = load_probe(GENERAL, 8)
    fresh = measure_forgetting("fine-tuned", tokenizer, model, None, probe)
    assert fresh.n == 8 and fresh.kl == [0.0] * 8
    assert fresh.tuned_right == fresh.base_right and fresh.tuned_loglik == fresh.base_loglik
    assert all(x < 0 for x in fresh.base_loglik)

    _perturb(model)
    moved = measure_forgetting("fine-tuned", tokenizer, model, None, probe)
    assert all(k > 1e-4 for k in moved.kl)
    assert moved.base_loglik == pytest.approx(fresh.base_loglik, abs=1e-5)  # the base is the adapter disabled
    assert all(abs(t - b) > 1e-4 for t, b in zip(moved.tuned_loglik, moved.base_loglik))


def test_the_shared_prefix_read_once_gives_what_reading_each_item_whole_gives(tiny_model_dir):
    """The system turn and the solved items are read into a cache once per model; each item's
    figures equal a plain forward pass over its whole rendering."""
    import torch

    from taskfit.training.batching import collate
    from taskfit.training.forward import answer_logits_of

    tokenizer, model = _lora(tiny_model_dir)
    _perturb(model)
    probe = load_probe(GENERAL, 3)
    measured = measure_forgetting("fine-tuned", tokenizer, model, None, probe)
    for i, ex in enumerate(probe.items):
        row = _answer_tokens(tokenizer, _task(GENERAL), ex, probe.shots)
        assert tokenizer.decode(row.ids[row.n_prompt:]) == ex.target  # the end-of-turn token is left out
        batch = collate([row], tokenizer.pad_token_id)
        with torch.no_grad():
            tuned = torch.log_softmax(answer_logits_of(model, batch.ids, batch.mask, None, *batch.src), -1)
            with model.disable_adapter():
                base = torch.log_softmax(answer_logits_of(model, batch.ids, batch.mask, None, *batch.src), -1)
        assert measured.tuned_loglik[i] == pytest.approx(float(tuned.gather(1, batch.targets[:, None]).mean()), abs=1e-4)
        assert measured.base_loglik[i] == pytest.approx(float(base.gather(1, batch.targets[:, None]).mean()), abs=1e-4)
        assert measured.kl[i] == pytest.approx(float((tuned.exp() * (tuned - base)).sum(-1).mean()), abs=1e-5)


def test_a_full_fine_tune_is_compared_with_the_base_loaded_apart(tiny_model_dir):
    import torch

    from taskfit.models import load_model

    base, same, changed = (load_model(str(tiny_model_dir)).model.eval() for _ in range(3))
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tokenizer = load_model(str(tiny_model_dir)).tokenizer
    probe = load_probe(GENERAL, 4)
    assert measure_forgetting("fine-tuned", tokenizer, same, base, probe).kl == [0.0] * 4
    assert all(k > 1e-4 for k in measure_forgetting("fine-tuned", tokenizer, changed, base, probe).kl)
    with pytest.raises(TypeError, match="PEFT"):
        measure_forgetting("fine-tuned", tokenizer, same, None, probe)


def _card(tuned_right, max_drop=0.05, n=50):
    rng = random.Random(0)
    rows = [float(rng.random() < 0.7) for _ in range(40)]
    results = [EvalResult(candidate=name, metrics={"accuracy": sum(s) / len(s), "latency_p50_s": 0.1}, n=40,
                          per_example=s)
               for name, s in (("prompt-only", [0.0] * 40), ("fine-tuned", rows))]
    forgetting = ForgettingResult(candidate="fine-tuned", probe=GENERAL.source, licence=GENERAL.licence, n=n,
                                  base_right=[1.0] * 30 + [0.0] * 20,
                                  tuned_right=[1.0] * round(n * tuned_right) + [0.0] * (n - round(n * tuned_right)),
                                  base_loglik=[-1.0] * n, tuned_loglik=[-1.5] * n, kl=[0.2] * n)
    return build_scorecard(results, {}, forgetting=[forgetting], max_drop=max_drop)


def test_the_verdict_warns_when_the_general_probe_drops_more_than_max_drop_and_not_otherwise():
    warned = _card(tuned_right=0.5)  # 10 points below the base's 60%: 5 of 50 questions lost
    assert warned.verdict.startswith("Keep the fine-tuned adapter")
    assert ("Mind what it cost outside the task: fine-tuned answers 10.0 points fewer of the general probe's "
            "questions right than the base model (60.0% -> 50.0%" in warned.verdict)
    assert "eval.forgetting.max_drop (5.0 points)" in warned.verdict
    assert warned.to_json()["forgetting"][0]["warning"] is True
    assert warned.forgetting_table()[2][0][-1] == "yes"

    for quiet in (_card(tuned_right=0.58), _card(tuned_right=0.5, max_drop=0.15), _card(tuned_right=0.7)):
        assert "outside the task" not in quiet.verdict, quiet.verdict
        assert quiet.to_json()["forgetting"][0]["warning"] is False and quiet.forgetting_table()[2][0][-1] == "no"
    assert "15.0 points" not in _card(tuned_right=0.5, max_drop=0.15).verdict


def test_the_scorecard_and_the_report_show_the_figures_with_the_probes_source_and_licence(tmp_path):
    card = _card(tuned_right=0.5)
    markdown = "\n".join(card.markdown())
    assert "SQuAD 2.0 (Rajpurkar, Jia & Liang 2018)" in markdown and "CC BY-SA 4.0" in markdown
    assert "| fine-tuned | 60.0% | 50.0% | -10.0 pts [" in markdown and "| -1.000 | -1.500 | -0.500 [" in markdown
    assert "0.2000 nats" in markdown
    page = write_scorecard_report(tmp_path, "taskfit: t", card, {}).read_text()
    assert "Outside the task: the forgetting check" in page and 'class="forgetting"' in page
    assert "SQuAD 2.0 (Rajpurkar, Jia &amp; Liang 2018)" in page and "licence CC BY-SA 4.0" in page
    assert page.index('id="verdict"') < page.index("Mind what it cost outside the task")


def test_a_fine_tune_the_check_does_not_apply_to_says_why_and_is_never_warned_about():
    skipped = ForgettingResult(candidate="fine-tuned", probe=GENERAL.source, licence=GENERAL.licence,
                               skipped="the forgetting check does not apply: a head")
    rows = [1.0] * 30 + [0.0] * 10
    card = build_scorecard([EvalResult(candidate="fine-tuned", metrics={"accuracy": 0.75}, n=40, per_example=rows)],
                           {}, forgetting=[skipped], max_drop=0.0)
    assert card.notes == ["fine-tuned: the forgetting check does not apply: a head."]
    assert card.forgetting_table() is None and "outside the task" not in card.verdict
