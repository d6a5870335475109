"""The package: pyproject.toml declares requirements/base.txt's runtime lines (so `pip install -e .`
with the lock as constraints gives the tested environment), every console script resolves,
CITATION.cff matches, and cxr-doctor's requirement check names what is missing."""
from __future__ import annotations

import ast
import re
import tomllib

import numpy
import yaml

from conftest import ROOT
from harness.deps import check, satisfies


def _base_sections() -> dict[str, list[str]]:
    """requirements/base.txt's requirement lines by section: runtime, docs, test."""
    sections: dict[str, list[str]] = {"runtime": [], "docs": [], "test": []}
    section = "runtime"
    for line in (ROOT / "requirements" / "base.txt").read_text().splitlines():
        text = line.strip()
        if text.startswith("#"):
            for name in ("docs", "test"):
                if text.lstrip("# ").startswith(name):
                    section = name
            if text.lstrip("# ").startswith("detectron2"):
                section = "runtime"
            continue
        if text:
            sections[section].append(text.split("#")[0].strip())
    return sections


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_declares_the_runtime_requirements_of_base_txt():
    project, base = _pyproject()["project"], _base_sections()
    assert project["dependencies"] == base["runtime"]
    assert {"torch==2.14.1", "mmdet==3.3.0", "hydra-core==1.3.8"} <= set(project["dependencies"])
    assert project["optional-dependencies"]["test"] == base["test"]
    assert project["optional-dependencies"]["docs"] == base["docs"] == ["mkdocs==1.6.1"]
    # every pinned requirement is the lock's version (the lock is the constraint file)
    lock = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            lock[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    for requirement in [*base["runtime"], *base["docs"], *base["test"]]:
        if "==" in requirement:
            name, version = requirement.split("==")
            assert lock.get(re.sub(r"[-_.]+", "-", name).lower()) == version, requirement


def test_every_console_script_resolves_to_a_function():
    scripts = _pyproject()["project"]["scripts"]
    assert "cxr-eval" in scripts
    for script, target in scripts.items():
        module, attr = target.split(":")
        source = ROOT / (module.replace(".", "/") + ".py")
        assert source.is_file(), script
        names = {node.name for node in ast.parse(source.read_text()).body
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert attr in names, script


def test_citation_matches_the_package():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    project = _pyproject()["project"]
    assert citation["cff-version"] == "1.2.0"
    assert str(citation["version"]) == project["version"] and citation["license"] == project["license"]
    dois = {ref.get("doi") for ref in citation["references"]}
    assert "10.1038/s41597-022-01498-w" in dois  # VinDr-CXR


def test_requirement_check_names_missing_and_mismatched_packages():
    found = check(["cxr-bench-surely-not-a-package==1.0", "numpy==0.0.1", f"numpy=={numpy.__version__}",
                   "setuptools<1"])
    assert [c.ok for c in found] == [False, False, True, False]
    assert found[0].installed is None and found[1].installed == numpy.__version__
    assert satisfies("80.9.0", "<81") and not satisfies("81.0", "<81")
    assert satisfies("2.14.1+cpu", "==2.14.1") and not satisfies("2.14.10", "==2.14.1")
    assert satisfies("0.1.5.post20221221", "==0.1.5.post20221221") and satisfies("1.5", ">=1,<2")
    assert not satisfies("2.0", ">=1,<2") and satisfies("3.1", "")
