"""report/index.html: the whole sweep report on one self-contained page.

The page is the report's Markdown (results.md: results table with intervals, paired comparisons,
"No finding" and tuning sections, error analysis, per-class AP, AP by size; then protocol.md, the
protocol card) rendered with markdown-it-py, with every chart placed after the section it belongs to
and the worst-image gallery as side-by-side panels. Every image is embedded as a data: URI, styles
are inline, there is no script, and a Content-Security-Policy forbids loading anything else: the page
opens from a file (or an e-mail attachment) and never touches the network. The Markdown, CSV and PNG
files stay next to it for scripts.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from harness import atomic

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:1rem 1.5rem 4rem}
nav{background:#263238;color:#eee;padding:.6rem 1.5rem;position:sticky;top:0;font-size:.9rem;z-index:2}
nav a{color:#cfd8dc;margin-right:1rem;text-decoration:none}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;font-size:1.25rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.82rem;background:#fff;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;white-space:nowrap}
th{background:#eceff1}tr:nth-child(even) td{background:#f7f9fa}
figure{margin:1rem 0;background:#fff;border:1px solid #e0e0e0;padding:.5rem;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:.8rem;color:#555;margin-top:.3rem}
.row{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-start}.row figure{flex:1 1 300px;max-width:420px}
details{margin:.6rem 0}summary{cursor:pointer;font-weight:600}
code{background:#eceff1;padding:0 .2rem}
"""

#: Charts placed after the Markdown section whose heading starts with the key (in this order).
SECTION_FIGURES = {
    "mAP@0.4 by model and fold": ("results_png",),
    "Per-class AP@0.4 (mean": ("per_class_png",),
    "\"No finding\" stage": ("nofinding_sweep_png",),
    "Why: error analysis": ("errors_png", "@confusion"),
    "Per-class AP@0.4 with": ("pr_overview_png", "@pr"),
    "Per-class AP@0.4\n": ("pr_overview_png", "@pr"),
    "AP@0.4 by box size": ("ap_by_size_png",),
    "FROC and image-level AUROC": ("froc_png",),
    "Operating points": ("operating_points_png",),
}


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _figure(path: Path, caption: str) -> str:
    return (f'<figure><img src="{data_uri(path)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _render_markdown(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _extra_blocks(kind: str, paths: dict[str, Path]) -> str:
    if kind == "@confusion":
        figs = [_figure(p, f"confusion matrix: {Path(p).stem}") for k, p in paths.items()
                if k.startswith("confusion_") and k.endswith("_png")]
        return ("<details open><summary>Confusion matrices with background (counts, row-normalised)</summary>"
                + "".join(figs) + "</details>") if figs else ""
    if kind == "@pr":
        figs = [_figure(p, f"precision-recall: {Path(p).stem}") for k, p in paths.items()
                if re.fullmatch(r"pr_\d+_png", k)]
        return ("<details><summary>Precision-recall curve of each class (every model)</summary>"
                f'<div class="row">{"".join(figs)}</div></details>') if figs else ""
    return ""


def _with_figures(body: str, paths: dict[str, Path]) -> str:
    """Insert each section's charts before the next <h2> (or the end), and anchor every <h2>."""
    parts = re.split(r"(?=<h2>)", body)
    out, used = [], set()
    for part in parts:
        match = re.match(r"<h2>(.*?)</h2>", part, re.S)
        if not match:
            out.append(part)
            continue
        heading = html.unescape(match.group(1))
        part = part.replace("<h2>", f'<h2 id="{_slug(heading)}">', 1)
        for prefix, keys in SECTION_FIGURES.items():
            if not (heading + "\n").startswith(prefix):
                continue
            for key in keys:
                if key in used:
                    continue
                if key.startswith("@"):
                    part += _extra_blocks(key, paths)
                elif key in paths and Path(paths[key]).is_file():
                    part += _figure(paths[key], Path(paths[key]).name)
                used.add(key)
        out.append(part)
    return "".join(out)


def _gallery(out_dir: Path) -> str:
    root = out_dir / "analysis" / "gallery"
    folders = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    if not folders:
        return ""
    blocks = ['<h2 id="worst-images">Worst images (missed + false boxes over all models)</h2>',
              "<p>Ground truth: solid green boxes; predictions: dashed, coloured by class, at the analysis' score "
              "threshold. Ranking and counts: <code>analysis/gallery/gallery.csv</code>, every image: "
              "<code>analysis/per_image.csv</code>.</p>"]
    for folder in folders:
        figs = "".join(_figure(png, png.stem) for png in sorted(folder.glob("*.png")))
        blocks.append(f"<h3>{html.escape(folder.name)}</h3><div class=\"row\">{figs}</div>")
    return "".join(blocks)


def _local_links(body: str, out_dir: Path) -> str:
    """Markdown links to the report's own files: the protocol card is on the page; other files stay
    relative links (opened by the reader, never loaded by the page); images become data: URIs."""
    body = body.replace('href="protocol.md"', 'href="#protocol"')

    def embed(match: re.Match) -> str:
        target = out_dir / html.unescape(match.group(1))
        return f'src="{data_uri(target)}"' if target.is_file() else 'src=""'

    return re.sub(r'src="(?!data:)([^"]+)"', embed, body)


def build_html(out_dir: str | Path, title: str, paths: dict[str, Path]) -> str:
    out_dir = Path(out_dir)
    results_md = out_dir / "results.md"
    body = _render_markdown(results_md.read_text()) if results_md.is_file() else ""
    body = _with_figures(body, paths)
    body += _gallery(out_dir)
    protocol = out_dir / "protocol.md"
    if protocol.is_file():
        card = _render_markdown(protocol.read_text())
        card = re.sub(r"<h1>(.*?)</h1>", r"<h2>\1</h2>", card, count=1)
        body += '<section id="protocol">' + card + "</section>"
    body = _local_links(body, out_dir)
    headings = re.findall(r'<h2 id="([^"]+)">(.*?)</h2>', body, re.S)
    nav = "".join(f'<a href="#{anchor}">{re.sub(r"<[^>]+>", "", text)[:40]}</a>' for anchor, text in headings)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><nav>{nav}</nav><main>{body}</main></body></html>\n")


def write_index(out_dir: str | Path, title: str, paths: dict[str, Path]) -> Path:
    """Write out_dir/index.html atomically from the report files already in out_dir."""
    path = Path(out_dir) / "index.html"
    atomic.write_text(path, build_html(out_dir, title, paths))
    return path
