"""The weights registry (conf/pretrained): names such as `coco` -> per model and variant, the
framework's official checkpoint URL, its file format and its checksum; and the offline resolution
of `train.weights` (a registry name or a local file) to a file in the cache."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlparse

from harness.weights.fetch import Expected

SCRATCH = (None, "", "scratch", "none")


class WeightsNotFetched(FileNotFoundError):
    """A registry name was asked for, but its file is not in the cache yet."""


class UnknownWeights(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message
        return str(self.args[0])


@dataclass(frozen=True)
class WeightsEntry:
    name: str  # registry name, e.g. "coco"
    model: str
    variant: str
    url: str
    format: str
    sha256: str | None = None
    sha256_prefix: str | None = None

    @property
    def filename(self) -> str:
        return Path(unquote(urlparse(self.url).path)).name

    @property
    def expected(self) -> Expected:
        return Expected(self.sha256, self.sha256_prefix)

    def path_in(self, cache_dir: str | Path) -> Path:
        return Path(cache_dir) / self.name / self.model / self.filename


def entries(registry: dict[str, Any]) -> list[WeightsEntry]:
    """Every (name, model, variant) entry of the registry mapping (conf/pretrained/default.yaml)."""
    out = []
    for name, models in (registry or {}).items():
        for model, variants in (models or {}).items():
            for variant, spec in (variants or {}).items():
                out.append(WeightsEntry(name, model, variant, spec["url"], spec["format"],
                                        spec.get("sha256"), spec.get("sha256_prefix")))
    return out


def lookup(registry: dict[str, Any], name: str, model: str, variant: str) -> WeightsEntry:
    found = [e for e in entries(registry) if (e.name, e.model, e.variant) == (name, model, variant)]
    if found:
        return found[0]
    have = sorted(e.variant for e in entries(registry) if (e.name, e.model) == (name, model))
    raise UnknownWeights(
        f"no {name!r} weights for {model} {variant} in the registry (conf/pretrained); "
        + (f"{name} {model} variants: {', '.join(have)}" if have else f"registry names: "
           f"{', '.join(sorted({e.name for e in entries(registry)})) or 'none'}")
        + "; or give a local checkpoint file")


def is_registry_name(value: Any, registry: dict[str, Any]) -> bool:
    return isinstance(value, str) and value in (registry or {})


def resolve(value: Any, model: str, variant: str, registry: dict[str, Any], cache_dir: str | Path,
            fetch_hint: str = "cxr-weights") -> str | None:
    """`train.weights` -> a local file (or None for from scratch), offline. Registry names resolve to
    the cached file; a missing one raises WeightsNotFetched with the command that fetches it."""
    if value in SCRATCH:
        return None
    if is_registry_name(value, registry):
        entry = lookup(registry, value, model, variant)
        path = entry.path_in(cache_dir)
        if not path.is_file():
            raise WeightsNotFetched(
                f"{model} {variant}: weights={value} needs {path.name}, not in the cache {cache_dir} yet. "
                f"Fetch it first (the one step that downloads): {fetch_hint}")
        return str(path)
    path = Path(str(value)).expanduser()
    if "://" in str(value):
        raise ValueError(f"weights must be a registry name or a local file, not a URL: {value} "
                         "(cxr-weights downloads registry entries on purpose)")
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {value} (a registry name: "
                                f"{', '.join(sorted(registry or {})) or 'none'}; or a local file)")
    return str(path.resolve())


def needed(requests: Iterable[tuple[str, str, Any]], registry: dict[str, Any]) -> list[WeightsEntry]:
    """The registry entries a set of (model, variant, weights value) requests needs, deduplicated."""
    out: list[WeightsEntry] = []
    for model, variant, value in requests:
        if is_registry_name(value, registry):
            entry = lookup(registry, value, model, variant)
            if entry not in out:
                out.append(entry)
    return out
