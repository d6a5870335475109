"""`cxr-doctor`: what is installed and usable — torch/CUDA, ultralytics, detectron2 (_C ops?),
mmcv (ops compiled? CPU/CUDA?), mmdet, pydicom decoders — and a one-line verdict per framework.

Exit status: 0 when all three detector frameworks are usable, 1 otherwise.
`cxr-doctor --models` lists the model names and, per framework, the architectures `model.arch` takes.

examples:
  cxr-doctor              check every framework (a line per check, then the verdict)
  cxr-doctor --models     the model names (model=...) and the architectures each takes (model.arch=...)
"""
from __future__ import annotations

import argparse
import importlib
import sys

from harness.deps import check, declared


def dependencies() -> bool:
    """Print the declared runtime requirements that are missing or at another version; True when none."""
    requirements = declared()
    if requirements is None:
        print("[FAIL] cxr-bench is not installed as a package: run `make setup` (or "
              "`pip install -e . -c requirements/constraints.txt` in an environment with torch and mmcv)")
        return False
    bad = [c for c in check(requirements) if not c.ok]
    if not bad:
        print(f"[ok  ] requirements  all {len(requirements)} declared runtime requirements are installed")
        return True
    print(f"[FAIL] requirements  {len(bad)} of {len(requirements)} declared runtime requirements not met "
          f"(fix: `make setup`, or `pip install -e . -c requirements/constraints.txt`):")
    for c in bad:
        print(f"         {c.requirement}: {'missing' if c.installed is None else 'installed ' + c.installed}")
    return False


def report() -> int:
    deps_ok = dependencies()
    if not deps_ok and any(c.installed is None for c in check(declared() or [])):
        print("\nthe detector frameworks were not probed: install the missing requirements first")
        return 1
    # imported only now: the probes import numpy, torch and the frameworks, which the check above
    # must be able to report missing
    probes = importlib.import_module("adapters.probe").run_all()
    width = max(len(p.name) for p in probes)
    for probe in probes:
        mark = "ok  " if probe.ok else "FAIL"
        print(f"[{mark}] {probe.name:<{width}}  {probe.verdict}")
        for key, value in probe.details.items():
            print(f"         {'':<{width}}  {key}: {value}")
    frameworks = [p for p in probes if p.name in ("ultralytics", "detectron2", "mmdet")]
    usable = sum(p.ok for p in frameworks)
    print(f"\n{usable}/3 detector frameworks usable" + ("" if deps_ok else "; runtime requirements not met (above)"))
    return 0 if usable == 3 and deps_ok else 1


def list_models() -> int:
    from adapters import REGISTRY
    from adapters.zoo import listing

    print(f"models (model=<name>): {', '.join(REGISTRY)}")
    print(listing())
    return 0


def parser() -> argparse.ArgumentParser:
    parts = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="cxr-doctor", description="\n\n".join(parts[:2]),
                                epilog=parts[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", action="store_true", help="list the models and their architectures; check nothing")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    sys.exit(list_models() if args.models else report())


if __name__ == "__main__":
    main()
