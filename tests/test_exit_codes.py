"""Exit codes and messages of the cxr-* commands: a failed job is a non-zero exit (after the table of
failed jobs) and still gets its report, a missing sweep is refused without creating anything, the data
settings are checked before anything is converted, expected user errors are one line without a traceback."""
from __future__ import annotations


import pytest
from conftest import FAST, run_app
from hydra import compose, initialize_config_dir

from harness.cli.common import CONF_DIR
from harness.jobs.config import ConfigError
from harness.jobs.data_step import check_data_config, ensure_raw


def _data(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="prepare", overrides=list(overrides)).data


@pytest.mark.parametrize("override, key", [("data.size=abc", "data.size='abc'"), ("data.size=16", "data.size=16"),
                                           ("data.fold=5", "data.fold=5 is out of range for data.folds=5"),
                                           ("data.folds=1", "data.folds=1"), ("data.bits=12", "data.bits=12"),
                                           ("data.bad_rows=skip", "data.bad_rows='skip'")])
def test_data_settings_are_checked_naming_the_key(override, key):
    check_data_config(_data())  # the defaults pass
    check_data_config(_data("data.size=orig"))
    with pytest.raises(ConfigError) as err:
        check_data_config(_data(override))
    assert str(err.value).startswith(key)


def test_a_png_folder_points_to_the_nih_dataset(tmp_path):
    (tmp_path / "images_001").mkdir()
    (tmp_path / "images_001" / "x.png").write_bytes(b"")
    with pytest.raises(ConfigError, match="data=nih_cxr14"):
        ensure_raw(_data("data=vinbigdata", f"data.raw_dir={tmp_path}"))


def test_prepare_refuses_bad_settings_before_converting_with_one_line(tmp_path, monkeypatch):
    out = run_app("harness.cli.prepare", ["data.size=abc"], tmp_path, check=False)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("cxr-prepare: data.size='abc'") and "Traceback" not in out.stderr
    # nothing generated or converted (Hydra's own log folder is all there is)
    assert not (tmp_path / "data" / "raw").exists() and not (tmp_path / "data" / "synthetic-tiny" / "images").exists()
    # HYDRA_FULL_ERROR=1: the traceback, as Hydra's apps usually give it
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    full = run_app("harness.cli.prepare", ["data.size=abc"], tmp_path, check=False)
    assert full.returncode == 1 and "Traceback" in full.stderr and "check_data_config" in full.stderr


def test_run_refuses_a_fold_out_of_range_before_preparing(tmp_path):
    out = run_app("harness.cli.run", ["sweep=range", "pipeline.folds=[0,5]", "data.folds=2"], tmp_path, check=False)
    assert out.returncode != 0
    assert "pipeline.folds: 5 is out of range for data.folds=2" in out.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "data" / "raw").exists()


def test_report_on_a_missing_sweep_fails_and_creates_nothing(tmp_path):
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    out = run_app("harness.cli.report", ["sweep=demoo"], tmp_path, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("cxr-report: no sweep folder") and "demo" in out.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["demo"]


@pytest.mark.slow
def test_run_with_every_job_failed_reports_them_and_exits_non_zero(tmp_path):
    """Both models' jobs fail (a file stands where each job writes its split folder): cxr-run skips the
    ensemble instead of failing on it, writes the report listing both, prints them and exits 3."""
    sweep = tmp_path / "runs" / "allfail"
    for model in ("yolov5", "mmdet_frcnn"):
        blocker = sweep / model / "fold0" / "split"
        blocker.parent.mkdir(parents=True)
        blocker.write_text("not a folder")
    out = run_app("harness.cli.run", ["sweep=allfail", "pipeline.models=[yolov5,mmdet_frcnn]", *FAST,
                                      "train.epochs=1"], tmp_path, check=False)
    assert out.returncode == 3, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "ensemble skipped" in log and "no finished model runs" not in log
    assert "2 failed job(s)" in out.stderr and out.stderr.strip().splitlines()[-1].startswith("cxr-run: train jobs failed")
    # the train step's own table, before: both jobs by their overrides
    assert "2 job(s) failed" in out.stderr and "model=mmdet_frcnn" in out.stderr
    failed = (sweep / "report" / "results.md").read_text().split("## Failed jobs")[1]
    assert "| yolov5 | fold0 |" in failed and "| mmdet_frcnn | fold0 |" in failed
    assert not (sweep / "ensemble").exists()
