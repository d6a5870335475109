"""`cxr-weights`: fetch pretrained checkpoints from the registry (conf/pretrained) into the local
cache, on purpose - the one cxr-bench step that uses the network. Training, prediction and scoring
only read the cache (per_model.<m>.train.weights=coco resolves to the cached file).

examples:
  cxr-weights --list                                  # the registry and what is cached
  cxr-weights coco/mmdet_frcnn/R50-FPN                # one entry: name/model/variant
  cxr-weights experiment=original_study               # everything that config's models ask for
  cxr-weights --check experiment=original_study       # fetch nothing: exit 3 if any is not cached
                                                      # (cxr-run does this before its first job)

Each file is downloaded resumably to a partial file, checked against its published sha256 (or
prefix; otherwise the digest recorded at its first complete fetch of known length, which is
printed) and against the registry's `format` (the framework that reads it), then renamed into
place; a mismatch leaves nothing in the cache.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli.common import CONF_DIR
from harness.jobs.config import model_settings, pipeline_jobs
from harness.weights import fetch, registry
from harness.weights.registry import entries


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="run", overrides=overrides)


def requests_of(overrides: list[str]) -> list[tuple[str, str, object]]:
    """(model, variant, train.weights) for every model the config's pipeline runs."""
    cfg = compose(overrides)
    models, extra = pipeline_jobs(cfg, overrides)
    out = []
    for model in models:
        name, variant, train = model_settings(compose([*overrides, *extra, f"model={model}"]))
        out.append((name, variant, train.get("weights")))
    return out


def listing(registry: dict, cache_dir: Path) -> str:
    lines = [f"weights registry (conf/pretrained), cache {cache_dir}:"]
    for e in entries(registry):
        state = "cached" if e.path_in(cache_dir).is_file() else "not fetched"
        check = (f"sha256 {e.sha256[:12]}..." if e.sha256 else f"sha256 prefix {e.sha256_prefix}"
                 if e.sha256_prefix else "sha256 recorded on first fetch")
        lines.append(f"  {e.name + '/' + e.model + '/' + e.variant:<32} {e.format:<11} {state:<11} {check}  {e.url}")
    return "\n".join(lines)


def parser(epilog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxr-weights", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n")[1] + "\n\n" + epilog)
    p.add_argument("targets", nargs="*", metavar="ENTRY|OVERRIDE",
                   help="name/model/variant registry entries, or Hydra overrides (key=value) of a config "
                        "whose models' weights to fetch")
    p.add_argument("--list", action="store_true", help="print the registry and what is cached, fetch nothing")
    p.add_argument("--check", action="store_true",
                   help="fetch nothing; exit 3 with the command that fetches them when any is not cached")
    p.add_argument("--cache-dir", help="cache folder (default: pretrained.cache_dir = paths.weights_dir)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a transfer fails")
    return p


def main(argv: list[str] | None = None) -> int:
    from omegaconf import OmegaConf

    argv = sys.argv[1:] if argv is None else argv
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    base = compose(overrides)
    pretrained = OmegaConf.to_container(base.pretrained, resolve=True)
    reg = pretrained.get("registry") or {}
    args = parser(listing(reg, Path(pretrained["cache_dir"]))).parse_args(argv)
    cache_dir = Path(args.cache_dir or pretrained["cache_dir"])
    if args.list:
        print(listing(reg, cache_dir))
        return 0
    wanted: list[registry.WeightsEntry] = []
    try:
        for target in args.targets:
            if "=" in target:
                continue
            parts = target.split("/", 2)  # a detectron2 arch name holds "/"
            if len(parts) != 3:
                raise registry.UnknownWeights(f"{target!r}: give name/model/variant, e.g. coco/mmdet_frcnn/R50-FPN")
            wanted.append(registry.lookup(reg, *parts))
        wanted += [e for e in registry.needed(requests_of(overrides), reg) if e not in wanted]
    except registry.UnknownWeights as err:
        print(f"cxr-weights: {err}", file=sys.stderr)
        return 2
    if not wanted and args.check:
        print("weights: this config asks for no registry weights")
        return 0
    if not wanted:
        print("nothing to fetch: no model of this config asks for registry weights "
              "(set per_model.<model>.train.weights=coco, or name an entry; see --list)")
        return 0
    if args.check:
        return check_cached(wanted, cache_dir, [a for a in argv if a != "--check"])
    failures = 0
    for entry in wanted:
        target = entry.path_in(cache_dir)
        try:
            got = fetch.fetch(entry.url, target, entry.expected, cache_dir=cache_dir, timeout=args.timeout,
                              fmt=entry.format)
        except Exception as err:  # noqa: BLE001 - report every entry, then fail
            failures += 1
            print(f"FAILED {entry.name}/{entry.model}/{entry.variant}: {err}", file=sys.stderr)
            continue
        print(f"ok {entry.name}/{entry.model}/{entry.variant}: {target} ({entry.format}) sha256 {got.digest} "
              f"({got.describe()})")
    return 1 if failures else 0


def check_cached(wanted: list, cache_dir: Path, argv: list[str]) -> int:
    """One message, on stderr, naming every entry not in the cache and the one command that fetches
    them all; 0 when all are there."""
    import shlex

    missing = [e for e in wanted if not e.path_in(cache_dir).is_file()]
    if not missing:
        print(f"weights: all {len(wanted)} registry file(s) this config needs are in the cache {cache_dir}")
        return 0
    names = ", ".join(f"{e.name}/{e.model}/{e.variant}" for e in missing)
    command = " ".join(["cxr-weights", *(shlex.quote(a) for a in argv)])
    print(f"{len(missing)} pretrained weights file(s) this config needs are not in the cache {cache_dir}: {names}. "
          f"Nothing was started. Fetch them all first (the one step that downloads), then rerun:\n    {command}",
          file=sys.stderr)
    return 3


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
