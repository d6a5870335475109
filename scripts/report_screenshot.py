"""The first screen of a report: a 1280 x 800 headless-chromium screenshot of <report>/index.html.

    python scripts/report_screenshot.py runs/demo/report/index.html docs/report-index.png

Uses the browser check of the test suite (tests/browser.py: Debian's chromium over its DevTools pipe,
no network, no extra package). The PNG is written atomically; an existing file is replaced only when
--force is given (the committed docs/report-index.png is a chosen picture).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import check_page, chromium_binary  # noqa: E402

from harness import atomic  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index_html", type=Path)
    parser.add_argument("out_png", type=Path, nargs="?", default=ROOT / "docs" / "report-index.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--force", action="store_true", help="replace an existing PNG")
    args = parser.parse_args(argv)
    if not args.index_html.is_file():
        print(f"error: {args.index_html} does not exist; build the report first (cxr-report sweep=<name>)",
              file=sys.stderr)
        return 2
    if chromium_binary() is None:
        print("error: chromium is not installed; apt-get install chromium (or name it in CXR_CHROMIUM)", file=sys.stderr)
        return 2
    if args.out_png.exists() and not args.force:
        print(f"error: {args.out_png} exists; pass --force to replace it", file=sys.stderr)
        return 2
    result = check_page(args.index_html, screenshot=True, viewport=(args.width, args.height))
    if result.outside_requests() or result.page.get("broken"):
        print(f"error: the page is not self-contained (requests {result.outside_requests()}, broken images "
              f"{result.page.get('broken')}); no screenshot written", file=sys.stderr)
        return 1
    with atomic.atomic_path(args.out_png) as tmp:
        Path(tmp).write_bytes(result.screenshot)
    print(f"{args.out_png}: {args.width}x{args.height} first screen of {args.index_html}"
          + (f" (summary box at {result.page['glance']['top']:.0f} px)" if result.page.get("glance") else
             " (no summary box on this page)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
