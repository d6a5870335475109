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
import io
import logging
import re
from pathlib import Path

from harness import atomic

log = logging.getLogger(__name__)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:1rem 1.5rem 4rem}
nav{background:#263238;color:#eee;padding:.4rem 1.5rem;font-size:.85rem;display:flex;flex-wrap:wrap;gap:.15rem 1rem}
nav a{color:#cfd8dc;text-decoration:none}
section.glance{background:#fff;border:2px solid #263238;border-radius:6px;padding:.2rem 1rem .6rem;margin:.8rem 0}
section.glance h2{margin-top:.6rem;border:0}
caption{text-align:left;font-size:.78rem;color:#555;padding:.15rem 0;caption-side:top}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;font-size:1.25rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.82rem;background:#fff;display:block;overflow-x:auto;max-width:100%}
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

#: What each chart shows (its alt text and caption), by path key; figures of several files say it themselves.
FIGURE_TEXT = {
    "results_png": "mAP@0.4 per model and ensemble, mean over folds with its interval",
    "per_class_png": "Heat map of AP@0.4 per class (rows) and model (columns)",
    "nofinding_sweep_png": "The \"No finding\" stage's score over its threshold grid (out of fold)",
    "errors_png": "Where the AP goes: AP points gained by fixing each TIDE error type, per model",
    "pr_overview_png": "Precision-recall curve of every class, one line per model (folds pooled)",
    "ap_by_size_png": "mAP@0.4 per box-size band (small, medium, large) and over all boxes, per model",
    "froc_png": "FROC: lesion sensitivity against false positives per image (log scale), one line per model",
    "operating_points_png": "Precision, recall and F1 against the score threshold, one panel per model",
}
#: Gallery images are embedded as JPEG thumbnails of at most this width (px); the full-size files stay
#: beside the page and are linked. A chart over CHART_INLINE_BYTES is embedded as a JPEG of at most
#: CHART_PX wide (its PNG stays beside the page); smaller charts as written. With these, the page stays
#: under PAGE_BUDGET_BYTES for a sweep of a few models (the gallery's size is fixed by report.analysis.gallery).
THUMB_PX = 360
CHART_PX = 1400
CHART_INLINE_BYTES = 200_000
PAGE_BUDGET_BYTES = 3_000_000


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def jpeg_uri(path: Path, max_px: int) -> str:
    """A JPEG data: URI of the image, scaled down to at most `max_px` wide (as is when it is narrower)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > max_px:
            image = image.resize((max_px, max(1, round(image.height * max_px / image.width))), Image.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chart_uri(path: Path) -> str:
    """A chart as embedded: the PNG itself, or a JPEG of it when the PNG is over CHART_INLINE_BYTES."""
    return jpeg_uri(path, CHART_PX) if Path(path).stat().st_size > CHART_INLINE_BYTES else data_uri(path)


def _figure(path: Path, caption: str) -> str:
    return (f'<figure><img src="{chart_uri(path)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def thumbnail_uri(path: Path, max_px: int = THUMB_PX) -> str:
    """A gallery thumbnail: a JPEG data: URI of the image at most `max_px` wide."""
    return jpeg_uri(path, max_px)


def _thumbnail(path: Path, out_dir: Path, alt: str) -> str:
    """A gallery panel: the thumbnail inline, linked to the full-size file beside the page."""
    href = html.escape(Path(path).relative_to(out_dir).as_posix())
    return (f'<figure><a href="{href}"><img src="{thumbnail_uri(path)}" alt="{html.escape(alt)}"></a>'
            f"<figcaption>{html.escape(alt)} (full size: <code>{href}</code>)</figcaption></figure>")


def _render_markdown(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _extra_blocks(kind: str, paths: dict[str, Path]) -> str:
    if kind == "@confusion":
        figs = [_figure(p, f"Confusion matrix of {Path(p).stem} with background: counts and row-normalised")
                for k, p in paths.items()
                if k.startswith("confusion_") and k.endswith("_png")]
        return ("<details open><summary>Confusion matrices with background (counts, row-normalised)</summary>"
                + "".join(figs) + "</details>") if figs else ""
    if kind == "@pr":
        figs = [_figure(p, f"Precision-recall curve of class {Path(p).stem}, every model") for k, p in paths.items()
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
                    part += _figure(paths[key], FIGURE_TEXT.get(key, Path(paths[key]).stem))
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
        figs = "".join(_thumbnail(png, out_dir, f"{folder.name}: ground truth and {png.stem}'s boxes")
                       for png in sorted(folder.glob("*.png")))
        blocks.append(f"<h3>{html.escape(folder.name)}</h3><div class=\"row\">{figs}</div>")
    return "".join(blocks)


def _local_links(body: str, out_dir: Path) -> str:
    """Markdown links to the report's own files: the protocol card is on the page; other files stay
    relative links (opened by the reader, never loaded by the page); images become data: URIs."""
    body = body.replace('href="protocol.md"', 'href="#protocol"')

    def embed(match: re.Match) -> str:
        target = out_dir / html.unescape(match.group(1))
        return f'src="{chart_uri(target)}"' if target.is_file() else 'src=""'

    return re.sub(r'src="(?!data:)([^"]+)"', embed, body)


def _accessible_tables(body: str) -> str:
    """Every header cell scoped to its column, and every table captioned with the section it belongs to
    (numbered when a section holds several)."""
    body = body.replace("<th>", '<th scope="col">').replace('<th style=', '<th scope="col" style=')
    out, heading, lead, lead_at, count = [], "Table", None, 0, {}
    for part in re.split(r"(<h[23][^>]*>.*?</h[23]>|<p>.*?</p>|<table>)", body, flags=re.S):
        match = re.match(r"<h[23][^>]*>(.*?)</h[23]>", part, re.S)
        if match:
            heading, lead = re.sub(r"<[^>]+>", "", match.group(1)).strip(), None
        elif part.startswith("<p>"):
            text = re.sub(r"<[^>]+>", "", part[3:-4]).strip()
            lead = text.rstrip(":") if text.endswith(":") and len(text) <= 140 else None  # a table's own intro
            lead_at = len(out)
        elif part == "<table>":
            count[heading] = count.get(heading, 0) + 1
            label = lead or (heading if count[heading] == 1 else f"{heading} ({count[heading]})")
            if lead:
                out[lead_at] = ""  # the intro becomes the caption, said once
            part, lead = f"<table><caption>{label}</caption>", None
        elif part.strip():
            lead = None if "</table>" in part else lead
        out.append(part)
    return "".join(out)


def _glance_box(body: str) -> str:
    """The first screen: the summary section (harness.report.summary) in a box of its own."""
    match = re.search(r'<h2 id="at-a-glance">.*?(?=<h2|$)', body, re.S)
    if not match:
        return body
    box = f'<section class="glance" aria-label="summary">{match.group(0)}</section>'
    return body[:match.start()] + box + body[match.end():]


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
    body = _glance_box(_accessible_tables(body))
    headings = re.findall(r'<h2 id="([^"]+)">(.*?)</h2>', body, re.S)
    nav = "".join(f'<a href="#{anchor}">{re.sub(r"<[^>]+>", "", text)}</a>' for anchor, text in headings)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f'<body><nav aria-label="sections">{nav}</nav><main>{body}</main></body></html>\n')


def write_index(out_dir: str | Path, title: str, paths: dict[str, Path]) -> Path:
    """Write out_dir/index.html atomically from the report files already in out_dir."""
    path = Path(out_dir) / "index.html"
    page = build_html(out_dir, title, paths)
    if len(page.encode()) > PAGE_BUDGET_BYTES:
        log.warning("%s is %.1f MB, over the page's %.1f MB budget (many models or a large gallery: lower "
                    "report.analysis.gallery)", path, len(page.encode()) / 1e6, PAGE_BUDGET_BYTES / 1e6)
    atomic.write_text(path, page)
    return path
