"""`--help` of every cxr-* command starts with what it does and shows examples (not a config dump), and
cxr-doctor --help prints help instead of running the checks."""
from __future__ import annotations

import pytest
from conftest import run_app
from hydra import compose, initialize_config_dir

from harness.cli import checkpoints, doctor, weights
from harness.cli.common import CONF_DIR

HYDRA_APPS = {"prepare": "cxr-prepare: the dataset step", "train": "cxr-train: train and score one model",
              "ensemble": "cxr-ensemble: fuse the models", "report": "cxr-report: the results of a sweep",
              "predict": "cxr-predict: trained runs", "run": "cxr-run: the whole benchmark"}


@pytest.mark.parametrize("app", sorted(HYDRA_APPS))
def test_every_hydra_app_has_its_description_and_examples_as_help_header(app):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=app, return_hydra_config=True)
    header = cfg.hydra.help.header
    assert header.startswith(HYDRA_APPS[app]) and cfg.hydra.help.app_name == f"cxr-{app}"
    examples = header.split("Examples:")[1]
    assert f"  cxr-{app} " in examples or f"  cxr-{app}\n" in examples
    assert cfg.hydra.help.template.startswith(header) and "$CONFIG" not in cfg.hydra.help.template


@pytest.mark.parametrize("app", ["train", "report"])  # the two with a wrapper around Hydra's main
def test_hydra_app_help_prints_the_description_not_a_config_dump(app, tmp_path):
    out = run_app(f"harness.cli.{app}", ["--help"], tmp_path)
    text = out.stdout
    assert text.startswith(HYDRA_APPS[app]) and "Examples:" in text
    assert "== Config ==" not in text and len(text.splitlines()) < 60  # no 590-line config dump
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()  # help runs nothing


@pytest.mark.parametrize("module, prog", [(doctor, "cxr-doctor"), (checkpoints, "cxr-checkpoints"),
                                          (weights, "cxr-weights")])
def test_argparse_tools_help_has_description_and_examples(module, prog, capsys):
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {prog}") and f"`{prog}`:" in text.split("options:")[0]
    assert f"  {prog} " in text.split("examples:")[1]
    if module is doctor:
        assert "detector frameworks usable" not in text  # help, not the checks
