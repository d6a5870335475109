"""logger=mlflow: a sweep's runs and report logged to MLflow, read back with MLflow's own client.
MLflow is an extra (cxr-bench[mlflow]); CXR_MLFLOW_PATH may name a --target folder holding it."""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest
from analysis_sweep import make_analysis_sweep
from hydra import compose, initialize_config_dir

from harness.report import AnalysisSettings, BootstrapSettings, build_report

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def test_logger_is_off_by_default_and_logger_mlflow_selects_it():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        assert compose(config_name="report").get("logger") is None
        cfg = compose(config_name="report", overrides=["logger=mlflow", "sweep=abc"])
    assert cfg.logger.name == "mlflow" and cfg.logger.tracking_uri is None and cfg.logger.experiment == "abc"


def _mlflow():
    extra = os.environ.get("CXR_MLFLOW_PATH")
    if extra and extra not in sys.path:
        sys.path.append(extra)
    try:
        return importlib.import_module("mlflow.tracking")
    except ImportError:
        if os.environ.get("CI") == "true" and extra:
            raise
        pytest.skip("MLflow is not importable (the cxr-bench[mlflow] extra; or set CXR_MLFLOW_PATH)")


def test_sweep_logged_and_read_back(toy_dataset, tmp_path, forbid_network):
    tracking = _mlflow()
    from harness.tracking import log_sweep

    root = make_analysis_sweep(toy_dataset, tmp_path / "sweep")
    report = root / "report"
    build_report(root, bootstrap=BootstrapSettings(resamples=50), analysis=AnalysisSettings(gallery=1))
    logged = log_sweep(root, report)
    assert logged["tracking_uri"].startswith("sqlite:///") and (root / "mlflow" / "mlflow.db").is_file()
    client = tracking.MlflowClient(tracking_uri=logged["tracking_uri"])
    experiment = client.get_experiment_by_name("sweep")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 7  # 2 models x 2 folds, the ensemble x 2 folds, the report
    by_path = {run.data.tags["cxr.path"]: run for run in runs}
    run_dir = root / "loose" / "fold1"
    run = by_path[str(run_dir)]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["map40"] == pytest.approx(metrics["map40"])
    assert run.data.metrics["AP/Aortic enlargement"] == pytest.approx(metrics["per_class"]["Aortic enlargement"])
    assert run.data.metrics["map40_ci_low"] <= metrics["map40"] <= run.data.metrics["map40_ci_high"]
    assert run.data.params["data.prepared_dir"] == str(toy_dataset["root"])
    assert run.data.tags["cxr.name"] == "loose" and run.data.tags["cxr.fold"] == "fold1"
    assert {f.path for f in client.list_artifacts(run.info.run_id)} == {"metrics.json", "predictions.json"}
    report_run = by_path[str(report)]
    assert "report/index.html" in {f.path for f in client.list_artifacts(report_run.info.run_id, "report")}
    # logging again updates the same runs
    again = log_sweep(root, report)
    assert again["runs"] == logged["runs"] and len(client.search_runs([experiment.experiment_id])) == 7
