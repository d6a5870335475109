"""`cxr-checkpoints`: the checkpoints a fresh start moved aside (`<job>/superseded/<time>/`), listed,
and deleted only when asked. Nothing else in cxr-bench deletes a resumable checkpoint of an earlier
config (adapters.resume.set_aside_checkpoints moves them aside).

examples:
  cxr-checkpoints runs/demo                       # list them, with sizes
  cxr-checkpoints --delete runs/demo/yolov5/fold0/superseded/20261203-181500
  cxr-checkpoints --delete-all runs/demo          # every superseded folder under it
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from harness.sweep import SUPERSEDED_DIR, superseded_folders


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxr-checkpoints", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="a sweep or run dir (list), or superseded folders")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--delete", action="store_true",
                       help=f"delete the given folders (each must be a {SUPERSEDED_DIR}/<time>/ folder)")
    group.add_argument("--delete-all", action="store_true",
                       help=f"delete every {SUPERSEDED_DIR}/<time>/ folder under the given paths")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    paths = [Path(p) for p in args.paths]
    missing = [p for p in paths if not p.is_dir()]
    if missing:
        print(f"cxr-checkpoints: not a folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    if args.delete:
        wrong = [p for p in paths if p.resolve().parent.name != SUPERSEDED_DIR]
        if wrong:
            print(f"cxr-checkpoints: --delete takes {SUPERSEDED_DIR}/<time>/ folders only, not "
                  f"{', '.join(map(str, wrong))} (list them first: cxr-checkpoints SWEEP_DIR)", file=sys.stderr)
            return 2
        folders = paths
    else:
        folders = [f for p in paths for f in superseded_folders(p)]
    if not (args.delete or args.delete_all):
        for folder in folders:
            print(f"{size_of(folder) / 1e6:10.1f} MB  {folder}")
        print(f"{len(folders)} superseded checkpoint folder(s)")
        return 0
    for folder in folders:
        freed = size_of(folder)
        shutil.rmtree(folder)
        print(f"deleted {folder} ({freed / 1e6:.1f} MB)")
    return 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
