"""logger=mlflow: a sweep's runs and report logged to MLflow, read back with MLflow's own client.
MLflow is an extra (cxr-bench[mlflow]); CXR_MLFLOW_PATH may name a --target folder holding it."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from analysis_sweep import make_analysis_sweep
from conftest import ROOT, missing_reference
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
        missing_reference("MLflow", "CXR_MLFLOW_PATH", "pip install 'cxr-bench[mlflow]', or install it into a "
                          "--target folder named by CXR_MLFLOW_PATH, as .ci/run does")


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


#: The markers MLflow reads to turn its telemetry off by itself under tests and CI
#: (mlflow/telemetry/utils.py, _is_ci_env_or_testing); the offline test runs without them.
CI_MARKERS = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
              "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION",
              "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID")

#: A process that records every network attempt of any thread - each socket connect / DNS lookup seen by
#: CPython's audit hook (refused), and each one a no_network() guard refused - then either logs a sweep with
#: harness.tracking ("harness") or uses MLflow's client as it comes ("as-shipped", the control).
PROBE = textwrap.dedent("""
    import socket, sys, time
    mode, sweep, extra = sys.argv[1:4]
    sys.path.append(extra)
    attempts = []

    def audit(event, args):
        if event in ("socket.getaddrinfo", "socket.gethostbyname") or (
                event == "socket.connect" and args[0].family != socket.AF_UNIX):
            attempts.append((event, repr(args[1:])[:80]))
            raise ConnectionRefusedError("the probe refuses network access")

    sys.addaudithook(audit)
    import harness.netguard as netguard
    refused = netguard.NetworkAttempt.__init__
    def seen(self, *args):
        attempts.append(("no_network", args[0][:80] if args else ""))
        refused(self, *args)
    netguard.NetworkAttempt.__init__ = seen
    if mode == "harness":
        from harness.tracking import log_sweep
        log_sweep(sweep, sweep + "/report")
    else:
        from mlflow.tracking import MlflowClient
        client = MlflowClient(tracking_uri="sqlite:///" + sweep + "/as-shipped.db")
        client.create_run(client.create_experiment("as-shipped"))
    import mlflow.telemetry.utils as telemetry
    assert not telemetry._IS_IN_CI_ENV_OR_TESTING, "a CI/test marker is still set: MLflow would stay quiet anyway"
    deadline = time.time() + (10 if mode != "harness" else 4)
    while time.time() < deadline and not attempts:  # the telemetry thread asks for its config on the first event
        time.sleep(0.2)
    print("ATTEMPTS", attempts)
""")


def _probe(mode: str, sweep: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in CI_MARKERS and k not in ("MLFLOW_DISABLE_TELEMETRY",
                                                                                  "DO_NOT_TRACK")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(sweep), os.environ.get("CXR_MLFLOW_PATH", "")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_logging_stays_offline_with_mlflows_own_test_switches_removed(toy_dataset, tmp_path):
    """Without pytest's and CI's markers MLflow sends usage telemetry as soon as it is imported (the control
    shows the attempt); harness.tracking turns it off before the import and logs inside no_network(), so a
    whole log_sweep makes no network attempt. Fails when telemetry is left on."""
    _mlflow()
    root = make_analysis_sweep(toy_dataset, tmp_path / "sweep")
    assert _probe("as-shipped", root) != "ATTEMPTS []"  # the check can see MLflow's telemetry
    assert _probe("harness", root) == "ATTEMPTS []"
    assert (root / "mlflow" / "mlflow.db").is_file()
