"""`cxr-checkpoints`: the files a fresh start moved aside (`<run>/superseded/<time>/`: checkpoints,
metrics, predictions of an earlier attempt), listed, and deleted only when asked. Nothing else in
cxr-bench deletes them (harness.supersede, adapters.resume.set_aside_checkpoints move them aside).

examples:
  cxr-checkpoints runs/demo                       # list them, with sizes
  cxr-checkpoints --delete runs/demo/yolov5/fold0/superseded/20261203-181500
  cxr-checkpoints --delete-all runs/demo/yolov5/fold0   # the superseded folders of that run
  cxr-checkpoints --delete-all runs/demo                # ... of every run of that sweep

`--delete-all` deletes only `<run>/superseded/<time>/` of the run folders it is given, or of the
sweep's runs (`<model>/[<key>/]fold<k>`, `classifier/fold<k>`, `ensemble/<name>/[<key>/]fold<k>`, a
tuning study): never a folder that merely happens to be named `superseded` somewhere below the path.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from harness.sweep import CLASSIFIER_DIR, SUPERSEDED_DIR, model_runs, superseded_folders


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_folders(path: Path) -> list[Path]:
    """`path` itself (a run folder) and, for a sweep, its runs' folders."""
    found = [path, *(run.path for run in model_runs(path, finished_only=False))]
    for pattern in (f"{CLASSIFIER_DIR}/fold*", f"{CLASSIFIER_DIR}/*/fold*", "ensemble/*/fold*", "ensemble/*/*/fold*",
                    "ensemble/.tune/*/fold*"):
        found += sorted(p for p in path.glob(pattern) if p.is_dir())
    return list(dict.fromkeys(found))


def owned_superseded(path: Path) -> list[Path]:
    """The `<run>/superseded/<time>/` folders of the run folders `path` names."""
    return sorted(d for run in run_folders(path) if (run / SUPERSEDED_DIR).is_dir()
                  for d in (run / SUPERSEDED_DIR).iterdir() if d.is_dir())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxr-checkpoints", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="a sweep or run dir (list), or superseded folders")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--delete", action="store_true",
                       help=f"delete the given folders (each must be a {SUPERSEDED_DIR}/<time>/ folder)")
    group.add_argument("--delete-all", action="store_true",
                       help=f"delete every {SUPERSEDED_DIR}/<time>/ folder of the given run folders (or of a "
                            "sweep's runs)")
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
    elif args.delete_all:
        folders = [f for p in paths for f in owned_superseded(p)]
    else:
        folders = [f for p in paths for f in superseded_folders(p)]
    if not (args.delete or args.delete_all):
        for folder in folders:
            print(f"{size_of(folder) / 1e6:10.1f} MB  {folder}")
        print(f"{len(folders)} superseded folder(s)")
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
