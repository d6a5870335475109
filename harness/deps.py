"""The runtime dependencies cxr-bench declares (pyproject.toml, from requirements/base.txt) against
what is installed: what `cxr-doctor` lists as missing or at another version.

Standard library only, so that the doctor can say what is missing in an environment that lacks it
all. Requirements are read from the installed package's metadata; the specifiers this project uses
(`==`, `!=`, `<`, `<=`, `>`, `>=`, several joined by commas) are compared on the release numbers.
"""
from __future__ import annotations

import importlib.metadata as md
import re
from dataclasses import dataclass

DISTRIBUTION = "cxr-bench"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")
_SPEC = re.compile(r"^\s*(==|!=|<=|>=|<|>|~=)\s*([^\s,]+)\s*$")


def _release(version: str) -> tuple[int, ...]:
    """The leading release numbers of a version ("0.1.5.post2022" -> (0, 1, 5), "2.14.1+cpu" -> (2, 14, 1))."""
    numbers = []
    for part in version.split("+")[0].split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        numbers.append(int(digits.group()))
        if digits.group() != part:
            break
    return tuple(numbers)


def _same(a: str, b: str) -> bool:
    return a.split("+")[0].lower() == b.split("+")[0].lower()


def satisfies(installed: str, specifier: str) -> bool:
    """Whether version `installed` meets `specifier` (e.g. "==2.14.1", "<81", ">=1,<2"; "" = any)."""
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        match = _SPEC.match(clause)
        if not match:
            return False
        op, wanted = match.groups()
        have, want = _release(installed), _release(wanted)
        ok = {"==": _same(installed, wanted), "!=": not _same(installed, wanted), "<": have < want,
              "<=": have <= want, ">": have > want, ">=": have >= want,
              "~=": have >= want and have[:max(len(want) - 1, 1)] == want[:max(len(want) - 1, 1)]}[op]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class DependencyCheck:
    requirement: str
    installed: str | None   # the installed version, None when missing

    @property
    def name(self) -> str:
        return _NAME.match(self.requirement).group(1)

    @property
    def ok(self) -> bool:
        return self.installed is not None and satisfies(self.installed, _NAME.match(self.requirement).group(2))


def declared(distribution: str = DISTRIBUTION) -> list[str] | None:
    """The distribution's runtime requirements (extras left out), None when it is not installed."""
    try:
        requires = md.requires(distribution) or []
    except md.PackageNotFoundError:
        return None
    return [line.split(";")[0].strip() for line in requires if "extra" not in line.partition(";")[2]]


def check(requirements: list[str]) -> list[DependencyCheck]:
    found = []
    for line in requirements:
        name = _NAME.match(line).group(1)
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            version = None
        found.append(DependencyCheck(line, version))
    return found
