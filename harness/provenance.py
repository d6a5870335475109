"""The protocol card's row vocabulary, shared by the adapters that write rows into metrics.json and the
report that reads them (`harness.report.protocol`).

A row's `scope` says whether the setting is the harness's shared protocol or a framework's own recipe.
Its `source` says where the value came from:

- `read`: read back from the framework's resolved object, named in `read_from` (`trainer.cfg`,
  `runner.max_epochs`, `predictor.imgsz`, the built mapper's ResizeShortestEdge, ...);
- `applied`: applied by the harness itself (e.g. its own score threshold and cap after the framework's
  post-processing, the native overrides it passed on); `read_from` says what it applied to what;
- `partly`: read back for part of the value only (e.g. the test size, but not the training size);
- `asked`: the harness's own setting, NOT confirmed by the framework (nothing was read back).

`asked` (the row field) holds what the harness asked the model to run with, or None where the harness
asks nothing (the framework's own choice); a value that differs from it is flagged on the card.
"""
from __future__ import annotations

SHARED, RECIPE = "shared", "recipe"
READ, APPLIED, PARTLY, ASKED = "read", "applied", "partly", "asked"
CONFIRMED = (READ, APPLIED)  # sources whose value the card may show as confirmed
SOURCE_TEXT = {READ: "read back", APPLIED: "applied by the harness", PARTLY: "partly read back",
               ASKED: "asked, not read back"}


def source_text(row: dict) -> str:
    """`read back: trainer.cfg.SOLVER.MAX_ITER`, `asked, not read back`, `source not recorded` ..."""
    source = row.get("source")
    if source is None:
        return "source not recorded"
    text = SOURCE_TEXT.get(str(source), str(source))
    detail = str(row.get("read_from") or "").strip()
    return f"{text}: {detail}" if detail else text


def confirmed(row: dict) -> bool:
    """True when the row's value was read back from the framework or applied by the harness itself."""
    return row.get("source") in CONFIRMED


__all__ = ["SHARED", "RECIPE", "READ", "APPLIED", "PARTLY", "ASKED", "CONFIRMED", "SOURCE_TEXT", "source_text",
           "confirmed"]
