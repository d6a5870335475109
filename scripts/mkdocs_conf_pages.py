"""mkdocs hook: the configuration reference pages, generated from `conf/` at every build.

`mkdocs build` (mkdocs.yml: `hooks:`) calls `on_files`; this adds one page per config group
(`config/<group>.md`: every option file of the group with its header comment and its YAML) and an
index (`config/index.md`: the apps' top-level configs and the groups). Nothing is written into
`docs/`: the pages exist only in the build, so they cannot go stale.
"""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

CONF = Path(__file__).resolve().parents[1] / "conf"
APPS = {  # top-level config -> the console script that reads it
    "train.yaml": "cxr-train", "prepare.yaml": "cxr-prepare", "ensemble.yaml": "cxr-ensemble",
    "report.yaml": "cxr-report", "predict.yaml": "cxr-predict", "run.yaml": "cxr-run",
    "eval.yaml": "cxr-eval", "base.yaml": "(shared by every app)",
}


def groups() -> list[str]:
    return sorted(p.name for p in CONF.iterdir() if p.is_dir() and any(p.glob("*.yaml")))


def header(text: str) -> str:
    """The leading comment block of a YAML file, as plain text (`# @package` lines left out)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("# @package"):
            continue
        lines.append(line[1:].strip())
    return "\n".join(lines).strip()


def yaml_block(text: str) -> str:
    fence = "````" if "```" in text else "```"
    return f"{fence}yaml\n{text.rstrip()}\n{fence}\n"


def group_page(group: str) -> str:
    options = sorted((CONF / group).glob("*.yaml"))
    out = [f"# Config group `{group}`\n",
           f"Generated from `conf/{group}/` when the site is built. Choose an option with "
           f"`{group}=<option>` on any `cxr-*` command line; override one key with "
           f"`{group}.<key>=<value>`.\n",
           "| option | file |", "|---|---|"]
    out += [f"| [`{p.stem}`](#{p.stem.lower()}) | `conf/{group}/{p.name}` |" for p in options]
    out.append("")
    for p in options:
        text = p.read_text()
        out.append(f"## {p.stem}\n")
        about = header(text)
        if about:
            out.append(about.replace("\n", "  \n") + "\n")
        out.append(yaml_block(text))
    return "\n".join(out)


def index_page() -> str:
    out = ["# Configuration reference\n",
           "Generated from `conf/` when the site is built, so it lists exactly what the configs hold. "
           "Every value can be overridden on the command line (`key=value`); a typo in an override "
           "fails at once with the key's name.\n",
           "## Config groups\n", "| group | options |", "|---|---|"]
    for g in groups():
        names = ", ".join(f"`{p.stem}`" for p in sorted((CONF / g).glob("*.yaml")))
        out.append(f"| [`{g}`]({g}.md) | {names} |")
    out += ["", "## The apps' top-level configs\n"]
    for p in sorted(CONF.glob("*.yaml")):
        out.append(f"### {p.name}\n")
        out.append(f"Read by {APPS.get(p.name, 'a cxr-* app')}.\n")
        out.append(yaml_block(p.read_text()))
    return "\n".join(out)


def pages() -> dict[str, str]:
    """src path inside the site -> Markdown text."""
    found = {"config/index.md": index_page()}
    found.update({f"config/{g}.md": group_page(g) for g in groups()})
    return found


def on_files(files, config):
    for src, text in pages().items():
        files.append(File.generated(config, src, content=text))
    return files
