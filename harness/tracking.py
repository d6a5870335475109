"""Optional experiment tracking: `logger=mlflow` records a sweep's jobs in MLflow.

When the report step runs (after a sweep, also a partial one), every model and ensemble run of the
sweep becomes an MLflow run of the experiment ``logger.experiment`` (default: the sweep's name):
its resolved config as params (dotted keys), its metrics (mAP@0.4, VOC, AP50, AP50:95, times),
mAP@0.4's bootstrap interval from the report, the per-class AP@0.4 (``AP/<class>``, the
run's own label set), and its
metrics.json and predictions.json as artefacts. One more run, ``report``, holds the report folder.
A run is found again by its tag ``cxr.path`` (the run folder), so logging a sweep twice updates its
runs instead of adding copies.

Where: ``logger.tracking_uri`` if given (any MLflow tracking URI), else a local store under the sweep
(``<sweep>/mlflow/mlflow.db`` with artefacts in ``<sweep>/mlflow/artifacts``; MLflow's file store is
in maintenance mode, SQLite is its local default). Off unless asked for; MLflow is an extra
(``pip install cxr-bench[mlflow]``), imported only here and only when logging.

Offline: MLflow (>= 3.2) sends usage telemetry by default, from a thread it starts when ``mlflow`` is
first imported. Before that import this module sets MLflow's own switches off
(``MLFLOW_DISABLE_TELEMETRY=true``, ``DO_NOT_TRACK=true``; a telemetry client an earlier import already
started is dropped), and with a local store (the default SQLite under the sweep, or any ``sqlite:`` /
``file:`` URI) the whole logging runs inside ``harness.netguard.no_network()``: an attempt to reach the
network fails the step instead of leaving the machine. A remote ``logger.tracking_uri`` is the network
on purpose and is not guarded. MLflow turns telemetry off by itself under pytest and CI (it looks for
``PYTEST_CURRENT_TEST``, ``CI`` and other CI markers), so tests/test_tracking.py checks this in a
subprocess with those markers removed.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import pandas as pd

from harness.netguard import no_network

log = logging.getLogger(__name__)

METRIC_KEYS = ("map40", "voc_map40", "voc_map40_15", "ap50", "ap50_95", "train_time_s", "predict_time_s")
PARAM_BATCH = 100  # MLflow's limit of params per log_batch call
#: MLflow's own switches that stop its usage telemetry, set before MLflow is imported.
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
LOCAL_SCHEMES = ("sqlite:", "file:")


def telemetry_off() -> None:
    """Turn MLflow's usage telemetry off for this process: its switches in the environment before the
    first ``import mlflow``; a telemetry client that an earlier import started is dropped."""
    os.environ.update(TELEMETRY_OFF)
    if "mlflow.telemetry" in sys.modules:
        sys.modules["mlflow.telemetry"].set_telemetry_client()  # re-reads the switches: no client


def is_local(tracking_uri: str) -> bool:
    """A store on this machine (SQLite, a file store or a plain path): logging to it needs no network."""
    return tracking_uri.startswith(LOCAL_SCHEMES) or "://" not in tracking_uri


def local_store(sweep_dir: Path) -> tuple[str, str]:
    """(tracking URI, artefact location) of the default store under the sweep."""
    root = (Path(sweep_dir) / "mlflow").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def flatten(config, prefix: str = "") -> dict[str, str]:
    """Nested dicts/lists -> {"a.b.c": "value"} (lists as JSON), for MLflow params."""
    out: dict[str, str] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}{key}."))
    else:
        value = json.dumps(config) if isinstance(config, (list, tuple)) else str(config)
        out[prefix.rstrip(".")] = value[:6000]
    return out


def _client(sweep_dir: Path, tracking_uri: str | None, experiment: str):
    telemetry_off()
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as err:
        raise ImportError("logger=mlflow needs MLflow: pip install 'cxr-bench[mlflow]' (mlflow-skinny)") from err
    artifacts = None
    if not tracking_uri:
        tracking_uri, artifacts = local_store(sweep_dir)
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, artifact_location=artifacts)
    return client, experiment_id, tracking_uri


def _run_for(client, experiment_id: str, path: str, name: str, tags: dict):
    existing = client.search_runs([experiment_id], filter_string=f"tags.`cxr.path` = '{path}'", max_results=1)
    if existing:
        return existing[0].info.run_id
    return client.create_run(experiment_id, run_name=name, tags={"cxr.path": path, **tags}).info.run_id


def _metrics(values: dict) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, 0) for key, value in values.items()
            if value is not None and not (isinstance(value, float) and math.isnan(value))]


def log_sweep(sweep_dir: str | Path, report_dir: str | Path, tracking_uri: str | None = None,
              experiment: str | None = None) -> dict:
    """Log every run of the sweep and the report folder; returns {"tracking_uri", "experiment_id",
    "runs": {run folder: MLflow run id}}. MLflow's telemetry is off before it is imported; a local store is
    written inside no_network()."""
    telemetry_off()
    guard = no_network() if is_local(tracking_uri or "sqlite:") else contextlib.nullcontext()
    with guard:  # a local store: nothing may reach the network (a remote tracking URI is the network)
        return _log_sweep(Path(sweep_dir), Path(report_dir), tracking_uri, experiment)


def _log_sweep(sweep_dir: Path, report_dir: Path, tracking_uri: str | None, experiment: str | None) -> dict:
    from harness.report.tables import collect

    client, experiment_id, uri = _client(sweep_dir, tracking_uri, experiment or sweep_dir.name)
    from mlflow.entities import Param  # after _client turned telemetry off
    runs = collect(sweep_dir).runs
    intervals = _intervals(report_dir)
    logged = {}
    for row in runs.itertuples():
        run_dir = Path(row.path)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        run_id = _run_for(client, experiment_id, str(run_dir), f"{row.name}-{row.fold}",
                          {"cxr.kind": row.kind, "cxr.name": row.name, "cxr.fold": row.fold})
        params = flatten(metrics.get("config") or {})
        params.update({"cxr.variant": str(row.variant), "cxr.split_hash": str(row.split_hash)})
        existing = client.get_run(run_id).data.params
        fresh = [Param(k, v) for k, v in params.items() if k not in existing]  # MLflow params are write-once
        for start in range(0, len(fresh), PARAM_BATCH):
            client.log_batch(run_id, params=fresh[start:start + PARAM_BATCH])
        values = {key: metrics.get(key) for key in METRIC_KEYS}
        # every class of the run's own label set (metrics.json's per_class, in its order): VinBigData's, NIH's, ...
        values.update({f"AP/{cls}": ap for cls, ap in (metrics.get("per_class") or {}).items()})
        values.update(intervals.get(str(run_dir), {}))
        client.log_batch(run_id, metrics=_metrics(values))
        for name in ("metrics.json", "predictions.json"):
            if (run_dir / name).is_file():
                client.log_artifact(run_id, str(run_dir / name))
        client.set_terminated(run_id)
        logged[str(run_dir)] = run_id
    if report_dir.is_dir():
        run_id = _run_for(client, experiment_id, str(report_dir), "report", {"cxr.kind": "report"})
        client.log_artifacts(run_id, str(report_dir), artifact_path="report")
        client.set_terminated(run_id)
        logged[str(report_dir)] = run_id
    log.info("logged %d MLflow runs to %s (experiment %s)", len(logged), uri, experiment_id)
    return {"tracking_uri": uri, "experiment_id": experiment_id, "runs": logged}


def _intervals(report_dir: Path) -> dict[str, dict[str, float]]:
    """{run folder: {"map40_ci_low", "map40_ci_high"}} from the report's results.csv."""
    path = report_dir / "results.csv"
    if not path.is_file():
        return {}
    frame = pd.read_csv(path)
    if "map40 ci_low" not in frame or "path" not in frame:
        return {}
    rows = frame[frame["path"].notna()]
    return {str(p): {"map40_ci_low": lo, "map40_ci_high": hi}
            for p, lo, hi in zip(rows["path"], rows["map40 ci_low"], rows["map40 ci_high"])}
