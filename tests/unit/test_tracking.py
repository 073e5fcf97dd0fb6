"""train.report_to without training: which packages a tracker needs, and MLFLOW_TRACKING_URI."""

from __future__ import annotations

import importlib.util

import pytest

from taskfit.errors import ConfigError
from taskfit.paths import RunDir
from taskfit.training.tracking import check_tracking, log_evaluation, open_tracker


def _without(monkeypatch, *modules):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


def test_the_local_store_needs_sqlalchemy_a_tracking_server_does_not(tmp_path, monkeypatch):
    _without(monkeypatch, "mlflow", "sqlalchemy", "alembic", "tensorboard")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    check_tracking("none", tmp_path)  # nothing to install
    with pytest.raises(ConfigError) as info:
        check_tracking("mlflow", tmp_path)
    assert "mlflow, sqlalchemy, alembic packages are not installed" in str(info.value)
    assert "pip install -e '.[tracking]'" in str(info.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    with pytest.raises(ConfigError, match="the mlflow package is not installed"):
        check_tracking("mlflow", tmp_path)
    with pytest.raises(ConfigError, match="the tensorboard package is not installed"):
        check_tracking("tensorboard", tmp_path)


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mlflow", "sqlalchemy", "alembic")),
                    reason="the tracking extra is not installed: pip install -e '.[tracking]'")
def test_mlflow_tracking_uri_is_where_the_run_goes(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    elsewhere = f"sqlite:///{tmp_path / 'team.sqlite'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team-experiments")
    run = RunDir(tmp_path / "project" / "runs" / "20260101-000000-triage")
    tracker = open_tracker("mlflow", tmp_path / "project", run, experiment="triage", params={"method": "lora"})
    tracker.log_metrics({"train/loss": 1.5, "val/accuracy": None}, step=1)  # a figure not measured is left out
    tracker.close()
    assert not (tmp_path / "project" / "mlruns.sqlite").exists()
    client = MlflowClient(tracking_uri=elsewhere)
    (tracked,) = client.search_runs([client.get_experiment_by_name("team-experiments").experiment_id])
    assert tracked.info.run_name == run.root.name and tracked.data.params == {"method": "lora"}
    assert tracked.data.metrics == {"train/loss": 1.5}
    # taskfit eval adds to that run, and to no other
    assert log_evaluation("mlflow", tmp_path / "project", run, "triage", "fine-tuned", {"accuracy": 0.75}, 12, 1)
    other = RunDir(tmp_path / "project" / "runs" / "untracked")
    assert not log_evaluation("mlflow", tmp_path / "project", other, "triage", "fine-tuned", {"accuracy": 0.5}, 12, 1)
    (tracked,) = client.search_runs([client.get_experiment_by_name("team-experiments").experiment_id])
    assert tracked.data.metrics["eval/fine-tuned/accuracy"] == 0.75 and tracked.info.status == "FINISHED"
