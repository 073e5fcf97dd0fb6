"""`taskfit train` as users run it: killed with SIGKILL mid-run and resumed, the artifact and its
model card, the merged export, DPO from the command line, and qlora's error on a CPU machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.workflows import train_project
from taskfit.quickstart import make_quickstart_project


def _project(tmp_path, model_dir, name, **train):
    path = make_quickstart_project(tmp_path / name, seed=0, n_tickets=300)
    doc = yaml.safe_load(path.read_text())
    doc["model"]["name"] = str(model_dir)
    doc["data"].update(max_train_examples=96, max_eval_examples=16)
    doc["train"].update(dict(batch_size=4, max_seq_length=128, learning_rate=5e-3, checkpoint_every=5,
                             eval_every=10, metric_sample=4, early_stopping_patience=0), **train)
    path.write_text(yaml.safe_dump(doc))
    return path.parent


def _adapter(run_dir):
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def test_kill_9_then_resume_ends_with_the_same_adapter(tmp_path, tiny_model_dir, kill_at_checkpoint):
    killed = _project(tmp_path, tiny_model_dir, "killed", epochs=8)
    whole = _project(tmp_path, tiny_model_dir, "whole", epochs=8)

    kill_at_checkpoint("train", killed)
    (run,) = killed.glob("runs/*")
    assert not (run / "adapter").exists()  # no artifact from an unfinished run
    assert json.loads((run / "manifest.json").read_text())["status"] == "started"

    result = CliRunner().invoke(app, ["train", str(killed), "--resume"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["training"]["resumed_from_step"] >= 5
    steps = manifest["training"]["steps"]
    assert re.search(rf"training \(lora\).*\b{steps}/{steps}\b", result.output)  # the bar counts from the resumed step

    reference = train_project(whole)
    assert reference.training["steps"] == manifest["training"]["steps"]
    a, b = _adapter(run), _adapter(reference.run_dir)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert manifest["training"]["best_validation"] == pytest.approx(reference.training["best_validation"])

    # Nothing left to resume: a clear error, not a traceback.
    again = CliRunner().invoke(app, ["train", str(killed), "--resume"])
    assert again.exit_code == 2 and "no unfinished training run" in again.output


def test_train_leaves_a_plain_peft_adapter_a_model_card_and_curves(tmp_path, tiny_model_dir):
    project = _project(tmp_path, tiny_model_dir, "p", epochs=1)
    result = CliRunner().invoke(app, ["train", str(project)])
    assert result.exit_code == 0, result.output
    (run,) = project.glob("runs/*")
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/README.md",
                 "train_log.csv", "validation_log.csv", "plots/loss.png", "manifest.json",
                 "config.resolved.yaml", "data/data_card.md"):
        assert (run / name).exists(), name
    card = (run / "adapter" / "README.md").read_text()
    for needle in ("## Base model", "licence", "## Data", "rows read", "learning_rate", "tokens per second"):
        assert needle in card, needle
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["train"]["method"] == "lora" and manifest["seeds"]["train"] == 0
    assert manifest["hardware"]["dtype"] == "float32" and manifest["versions"]["peft"]

    # Loadable with PEFT alone, and the merged export loads with transformers alone.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "adapter")
    exported = CliRunner().invoke(app, ["export", str(run), "--merged"])
    assert exported.exit_code == 0, exported.output
    merged = AutoModelForCausalLM.from_pretrained(run / "merged")
    ids = torch.tensor([[1, 5, 9, 13, 40]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft_model(ids).logits, atol=1e-4)
    assert not (run / "merged.tmp").exists()


def test_more_threads_than_cores_get_the_clis_warning_and_train(tmp_path, tiny_model_dir):
    """train.threads above this machine's cores: `taskfit train` says so on a warning line of its
    own (not Python's warning format, with its file and source line) and trains all the same."""
    from taskfit.machine import cpu_cores

    project = _project(tmp_path, tiny_model_dir, "busy", epochs=1, threads=cpu_cores() + 1)
    done = subprocess.run([sys.executable, "-m", "taskfit.cli.main", "train", str(project)], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"warning: train.threads: {cpu_cores() + 1} threads in each of 1 process(es)" in done.stderr
    assert "RuntimeWarning" not in done.stderr and "hardware.py" not in done.stderr


def test_full_method_saves_a_whole_model(tmp_path, tiny_model_dir):
    project = _project(tmp_path, tiny_model_dir, "full", method="full", learning_rate=1e-4, epochs=1)
    summary = train_project(project)
    from transformers import AutoModelForCausalLM

    assert summary.artifact.name == "model"
    AutoModelForCausalLM.from_pretrained(summary.artifact)  # an ordinary transformers model

    # The forgetting check compares the trained model with the base loaded apart.
    from taskfit.workflows.evaluate import check_forgetting, trained_candidate
    from taskfit.workflows.workspace import Workspace

    ws = Workspace.open(project)
    forgetting = check_forgetting(ws, trained_candidate(ws, summary.run_dir))
    assert forgetting.n == 64 and not forgetting.skipped and all(k > 0 for k in forgetting.kl)


def test_dpo_from_the_command_line(tmp_path, tiny_model_dir):
    project = tmp_path / "dpo"
    assert CliRunner().invoke(app, ["init", str(project)]).exit_code == 0
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    from conftest import liked_less_first
    from taskfit.config import load_config
    from taskfit.models import load_model

    lm = load_model(str(tiny_model_dir))
    chosen, rejected = liked_less_first(lm.model, lm.tokenizer, load_config(project).task, "Customer 0: where is my "
                                        "parcel?", ["That is on us: a refund is on its way.",
                                                    "Sorry about that, I will help you now."])
    rows = [{"prompt": f"Customer {i}: where is my parcel?", "chosen": chosen, "rejected": rejected}
            for i in range(60)]
    (project / "data" / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    doc["model"]["name"] = str(tiny_model_dir)
    doc["data"]["train"] = "data/pairs.jsonl"
    doc["train"].update(method="dpo", batch_size=8, max_seq_length=256, epochs=3, learning_rate=5e-3,
                        checkpoint_every=0)
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    # The classify template trains a classification head, which DPO does not: the error says what to do.
    result = CliRunner().invoke(app, ["train", str(project)])
    assert result.exit_code != 0 and "set classify_head: false to train with method dpo" in result.output
    doc["train"]["classify_head"] = False
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["train", str(project)])
    assert result.exit_code == 0, result.output
    assert "held-out preference accuracy" in result.output
    manifest = json.loads(next(project.glob("runs/*/manifest.json")).read_text())
    held = manifest["training"]["held_out"]
    assert held["preference_accuracy_after"] > held["preference_accuracy_before"]
    assert (next(project.glob("runs/*")) / "held_out_pairs.csv").exists()


def test_qlora_on_cpu_and_pairs_for_sft_fail_clearly(tmp_path, tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    project = _project(tmp_path, tiny_model_dir, "q", method="qlora")
    result = CliRunner().invoke(app, ["train", str(project)])
    assert result.exit_code == 2 and "needs a CUDA GPU" in result.output and "method: lora" in result.output


@pytest.mark.multiprocess
def test_two_processes_train_the_same_adapter_as_one(tmp_path, tiny_model_dir):
    """Data parallel (what `accelerate launch --multi_gpu` runs, here with torchrun on CPU and the
    gloo backend): each process takes half of every batch, gradients are summed, and the result
    equals the single-process run."""
    train = dict(epochs=1, checkpoint_every=0, lora={"dropout": 0.0})  # dropout draws differ per process
    one = train_project(_project(tmp_path, tiny_model_dir, "one", **train))
    two = _project(tmp_path, tiny_model_dir, "two", **train)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29533", "-m", "taskfit.cli.main", "train", str(two)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = two.glob("runs/*")  # one process wrote
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["training"]["trained_tokens"] == one.training["trained_tokens"]
    assert manifest["training"]["parallel"] == {**manifest["training"]["parallel"], "processes": 2, "fsdp": False}
    a, b = _adapter(run), _adapter(one.run_dir)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def _torchrun(project, port, *extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), "-m", "taskfit.cli.main", "train", str(project), *extra],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.multiprocess
def test_fsdp_shards_the_model_and_trains_the_same_adapter_and_resumes(tmp_path, tiny_model_dir):
    """FSDP (`train.fsdp: true`, what `accelerate launch --multi_gpu` runs on GPUs, here two CPU
    processes on gloo): every decoder layer sharded across the processes, validation with label
    scoring, checkpoints gathered whole; the adapter equals the single-process one, and a run
    resumed from an early checkpoint under FSDP ends with it too."""
    # Batches of 5 rows, one row per forward pass: the processes take 3 and 2 passes (and 1 and 0
    # in the last batch), so the one with fewer must run zero-weighted passes to keep in step.
    train = dict(epochs=1, checkpoint_every=5, batch_size=5, micro_batch_tokens=16, lora={"dropout": 0.0})
    one = train_project(_project(tmp_path, tiny_model_dir, "one", **train))
    two = _project(tmp_path, tiny_model_dir, "two", fsdp=True, **train)
    _torchrun(two, 29541)
    (run,) = two.glob("runs/*")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["training"]["trained_tokens"] == one.training["trained_tokens"]
    spread = manifest["training"]["parallel"]  # each process held half of the weights
    assert spread["processes"] == 2 and spread["fsdp"]
    assert spread["parameters_per_process"] <= spread["parameters"] // 2 + 1000
    a, b = _adapter(run), _adapter(one.run_dir)
    # sums in another order: float noise of ~1e-5 (averaging instead of summing moved them 7e-3)
    assert sorted(a) == sorted(b) and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "adapter")  # plain PEFT

    # As if it had died after its first kept checkpoint: resume it, sharded again.
    kept = sorted((run / "checkpoints").glob("step-*"))
    for later in kept[1:]:
        shutil.rmtree(later)
    shutil.rmtree(run / "adapter")
    manifest["status"] = "started"
    (run / "manifest.json").write_text(json.dumps(manifest))
    _torchrun(two, 29542, "--resume")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["training"]["resumed_from_step"] == int(kept[0].name[5:])
    a = _adapter(run)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_resume_refuses_when_the_config_changed(tmp_path, tiny_model_dir):
    project = _project(tmp_path, tiny_model_dir, "changed", epochs=1)
    summary = train_project(project)
    manifest_path = summary.run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["status"] = "started"  # as if it had been killed
    manifest_path.write_text(json.dumps(manifest))
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["train"]["learning_rate"] = 1e-3
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["train", str(project), "--resume"])
    assert result.exit_code == 2 and "changed since this run started" in result.output


# ---- train.report_to: the run's figures in MLflow or TensorBoard too ------------------------------
def _logged(run, name):
    """train_log.csv or validation_log.csv as {step: row}."""
    import csv

    with (run / name).open() as fh:
        return {int(r["step"]): r for r in csv.DictReader(fh)}


def _installed(*modules):
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"the tracking extra is not installed ({', '.join(missing)}): "
                                                    "pip install -e '.[tracking]'")


@_installed("mlflow", "sqlalchemy", "alembic")
def test_report_to_mlflow_logs_the_run_and_its_evaluation(tmp_path, tiny_model_dir, monkeypatch):
    from mlflow.tracking import MlflowClient

    from taskfit.workflows import eval_project

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    project = _project(tmp_path, tiny_model_dir, "m", epochs=1, report_to="mlflow")
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["eval"]["generation_sample"] = 0  # the held-out scores are enough here: no free decoding
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["train", str(project)])
    assert result.exit_code == 0, result.output
    (run,) = project.glob("runs/*")
    manifest = json.loads((run / "manifest.json").read_text())

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns.sqlite'}")  # the default store
    experiment = client.get_experiment_by_name(manifest["task"])
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert tracked.info.run_name == run.name and tracked.info.status == "FINISHED"
    params, tags = tracked.data.params, tracked.data.tags
    assert params["method"] == "lora" and params["lora_r"] == str(manifest["config"]["train"]["lora"]["r"])
    assert params["base_model"] == manifest["model"]["name"] and float(params["learning_rate"]) == 5e-3
    assert params["data_fingerprint"] == manifest["data"]["train_fingerprint"]
    assert params["train_rows"] == str(manifest["data"]["train_rows"])
    assert tags["taskfit.task_kind"] == "classify" and tags["taskfit.version"]
    assert tags["taskfit.best_step"] == str(manifest["training"]["best_step"])

    steps, validations = _logged(run, "train_log.csv"), _logged(run, "validation_log.csv")
    history = {m.step: m.value for m in client.get_metric_history(tracked.info.run_id, "train/loss")}
    assert history.keys() == steps.keys() and len(steps) == manifest["training"]["steps"]
    assert all(history[s] == pytest.approx(float(steps[s]["loss"]), abs=1e-5) for s in steps)
    rates = {m.step: m.value for m in client.get_metric_history(tracked.info.run_id, "train/learning_rate")}
    assert all(rates[s] == pytest.approx(float(steps[s]["learning_rate"])) for s in steps)
    assert len(client.get_metric_history(tracked.info.run_id, "train/tokens_per_second")) == len(steps)
    val = {m.step: m.value for m in client.get_metric_history(tracked.info.run_id, "val/loss")}
    assert val.keys() == validations.keys() and len(val) >= 2
    assert all(val[s] == pytest.approx(float(validations[s]["val_loss"])) for s in val)
    accuracy = client.get_metric_history(tracked.info.run_id, "val/accuracy")
    assert [m.step for m in accuracy] == sorted(validations)

    evaluated = eval_project(project)  # the held-out figures join the same MLflow run
    (again,) = client.search_runs([experiment.experiment_id])
    assert again.info.run_id == tracked.info.run_id and again.info.status == "FINISHED"
    (figure,) = client.get_metric_history(tracked.info.run_id, "eval/fine-tuned/accuracy")
    assert figure.value == pytest.approx(evaluated.metrics["accuracy"]) and figure.step == len(steps)


@_installed("tensorboard")
def test_report_to_tensorboard_writes_the_curves_of_a_head_run(tmp_path, tiny_model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    project = _project(tmp_path, tiny_model_dir, "t", epochs=1, report_to="tensorboard", classify_head=True)
    result = CliRunner().invoke(app, ["train", str(project)])
    assert result.exit_code == 0, result.output
    (run,) = project.glob("runs/*")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    steps, validations = _logged(run, "train_log.csv"), _logged(run, "validation_log.csv")
    loss = {e.step: e.value for e in events.Scalars("train/loss")}
    assert loss.keys() == steps.keys() and len(steps) >= 2
    assert all(loss[s] == pytest.approx(float(steps[s]["loss"]), abs=1e-5) for s in steps)
    val = {e.step: e.value for e in events.Scalars("val/loss")}
    assert val.keys() == validations.keys()
    assert all(val[s] == pytest.approx(float(validations[s]["val_loss"]), abs=1e-5) for s in val)
    assert [e.step for e in events.Scalars("val/accuracy")] == sorted(validations)


def test_report_to_without_its_package_stops_before_any_work(tmp_path, tiny_model_dir, monkeypatch):
    import importlib.util

    project = _project(tmp_path, tiny_model_dir, "x", epochs=1, report_to="mlflow")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    result = CliRunner().invoke(app, ["train", str(project)])
    assert result.exit_code == 2, result.output
    assert "train.report_to is mlflow, but the mlflow package is not installed" in result.output
    assert "pip install -e '.[tracking]'" in result.output
    assert not list(project.glob("runs/*"))


def test_a_tracker_failing_mid_run_loses_nothing_of_the_training(tmp_path, tiny_model_dir, monkeypatch):
    from taskfit.training import tracking

    class Flaky:  # a tracking server that goes away after three steps
        calls = 0

        def log_metrics(self, metrics, step):
            Flaky.calls += 1
            if Flaky.calls > 3:
                raise ConnectionError("tracking server unreachable")

        def set_tag(self, key, value, step):
            pass

        def close(self, status="FINISHED"):
            raise AssertionError("a failed tracker is not called again")

    monkeypatch.setattr(tracking, "_needed", lambda report_to, project_dir: [])
    monkeypatch.setattr(tracking._Tensorboard, "open", classmethod(lambda cls, *a, **k: Flaky()))
    project = _project(tmp_path, tiny_model_dir, "f", epochs=1, report_to="tensorboard")
    result = CliRunner().invoke(app, ["train", str(project)])
    assert result.exit_code == 0, result.output
    assert "tensorboard failed (ConnectionError: tracking server unreachable)" in result.output
    assert "training continues" in result.output
    (run,) = project.glob("runs/*")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and (run / "adapter" / "adapter_model.safetensors").exists()
    assert len(_logged(run, "train_log.csv")) == manifest["training"]["steps"] > 3 and Flaky.calls == 4


@_installed("tensorboard")
def test_a_resumed_run_continues_its_tensorboard_curves_without_doubling_back(tmp_path, tiny_model_dir,
                                                                             kill_at_checkpoint):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    project = _project(tmp_path, tiny_model_dir, "r", epochs=1, report_to="tensorboard")
    kill_at_checkpoint("train", project)
    (run,) = project.glob("runs/*")
    killed = EventAccumulator(str(run / "tensorboard"))
    killed.Reload()
    assert {e.step for e in killed.Scalars("train/loss")} >= {1, 2, 3, 4, 5}  # flushed at the checkpoint
    # a restart within the killed run's second: TensorBoard reads the files in name order (the
    # second, then host and pid), and the resumed one must come after it
    (old,) = (run / "tensorboard").glob("events.out.tfevents.*")
    parts = old.name.split(".")
    parts[3] = str(int(time.time()) + 1)
    old.rename(old.with_name(".".join(parts)))
    result = CliRunner().invoke(app, ["train", str(project), "--resume"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "manifest.json").read_text())["training"]["resumed_from_step"] >= 5
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    steps = _logged(run, "train_log.csv")
    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in loss] == sorted(steps)  # each step once, in order
    assert all(v == pytest.approx(float(steps[s]["loss"]), abs=1e-5) for s, v in loss)


def test_a_new_run_is_told_how_long_it_takes_at_an_earlier_runs_speed_and_the_cap_for_an_hour(tmp_path,
                                                                                              tiny_model_dir):
    """A walkthrough: `taskfit run` on 151 intents without caps trained for hours with no word of
    it. A run trained alike before (here: a first one; after `taskfit advise`, its curve's runs)
    measured this machine's speed: the next says how long it takes, and past two hours the cap
    that trains in one."""
    project = _project(tmp_path, tiny_model_dir, "timed", epochs=1, eval_every=0, metric_sample=0)
    runner = CliRunner()
    first = runner.invoke(app, ["train", str(project)])
    assert first.exit_code == 0, first.output
    assert "training: about" not in first.output  # nothing measured yet: nothing to say
    (run,) = project.glob("runs/*")
    # the same run as a slow machine measures it: its median step after the first 1 token a second,
    # the whole run's rate (a first step of warm-up in it) half that
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["training"].update(steady_tokens_per_second=1.0, tokens_per_second=0.5)
    (run / "manifest.json").write_text(json.dumps(manifest))
    from taskfit.evaluation.advice import HOUR_S, LONG_TRAINING_S
    from taskfit.workflows.train import training_speed

    speed = training_speed(manifest["training"], manifest["data"]["train_rows"], 1)
    assert speed.tokens_per_second == 1.0 and speed.steady

    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["train"]["learning_rate"] = 1e-3  # a new run, trained alike
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    second = runner.invoke(app, ["train", str(project)])
    assert second.exit_code == 0, second.output
    said = " ".join(second.output.split())
    estimate = re.search(r"training: about (\d+) h (\d+) min here for (\d+) rows trained on", said)
    assert estimate and f"at the 1.0 tokens/s {run.name} trained at (its median step after the first" in said
    fit = int(estimate.group(3))
    assert abs(int(estimate.group(1)) * 3600 + int(estimate.group(2)) * 60 - speed.seconds_for(fit, 1)) <= 60
    assert speed.seconds_for(fit, 1) > LONG_TRAINING_S
    cap = int(re.search(r"data\.max_train_examples: (\d+) \(of the 96 training rows, their classes kept in "
                        r"proportion\) trains in about an hour", said).group(1))
    assert 0.95 * HOUR_S <= speed.seconds_for(cap * fit / 96, 1) <= HOUR_S
