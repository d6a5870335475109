"""The documentation: the README stays a short entry page whose links resolve, and the mkdocs site
builds with --strict (a broken link, a missing page or a bad anchor fails), its configuration
reference generated from conf/."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path


from conftest import ROOT

README_MAX_LINES = 150


def mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess:
    # not -q: mkdocs counts warnings for --strict only at the log level it prints
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                          cwd=root, capture_output=True, text=True, timeout=300)


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    # the two commands a newcomer starts with, exactly
    assert "make demo" in text and "make test" in text
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= 10
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.exists(), f"README links to a missing file: {link}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, f"README links to a missing heading: {link}"


def test_docs_site_builds_strict_with_generated_config_reference(tmp_path):
    site = tmp_path / "site"
    done = mkdocs_build(ROOT, site)
    assert done.returncode == 0, done.stdout + done.stderr
    for page in ("getting-started", "protocol", "statistics", "data", "models", "clusters", "report",
                 "eval", "benchmarks", "architecture", "experiments"):
        assert (site / page / "index.html").is_file(), page
    # one reference page per config group, listing every option file found in conf/ now
    groups = sorted(p for p in (ROOT / "conf").iterdir() if p.is_dir() and any(p.glob("*.yaml")))
    assert {g.name for g in groups} >= {"data", "model", "experiment", "launcher", "logger"}
    for group in groups:
        html = (site / "config" / group.name / "index.html").read_text()
        for option in group.glob("*.yaml"):
            assert f'id="{option.stem.lower()}"' in html, (group.name, option.stem)
    index = (site / "config" / "index.html").read_text()
    assert "mlflow" in index and "nih_cxr14" in index


def test_docs_build_fails_on_a_broken_link_and_picks_up_a_new_config(tmp_path):
    """On a copy of the docs: a new option file in conf/ gets its reference section without any
    edit to docs/, and a link to a missing page fails the strict build."""
    copy = tmp_path / "repo"
    for name in ("docs", "conf", "scripts"):
        shutil.copytree(ROOT / name, copy / name)
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    (copy / "conf" / "aug" / "brand_new_aug.yaml").write_text("# a new augmentation option\nhflip: 0.25\n")
    done = mkdocs_build(copy, tmp_path / "site1")
    assert done.returncode == 0, done.stdout + done.stderr
    html = (tmp_path / "site1" / "config" / "aug" / "index.html").read_text()
    assert 'id="brand_new_aug"' in html and "a new augmentation option" in html

    page = copy / "docs" / "statistics.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    done = mkdocs_build(copy, tmp_path / "site2")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stdout + done.stderr
