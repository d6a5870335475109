"""The image checks every adapter shares: which files a framework can read, before it trains or
predicts, so one bad file is named and the rest go on (or, for training, the job stops naming it)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from harness.split import ImageRef

log = logging.getLogger(__name__)


def unreadable_reason(path: str | Path, modes: Sequence[str] | None = None) -> str | None:
    """Why an image cannot be used (missing, not an image, truncated, a PIL mode outside `modes`
    when given), or None. PIL reads the header and checks the file's integrity without decoding
    the pixels."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        return "file not found"
    try:
        with Image.open(path) as img:
            mode = img.mode
            img.verify()
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported, the rest go on
        return f"cannot read: {type(err).__name__}: {err}"
    if modes is not None and mode not in modes:
        return f"PIL mode {mode!r}: only {', '.join(modes)} images are supported"
    return None


class UnreadableImages(RuntimeError):
    """Images a framework cannot use; carries the per-file reasons."""

    def __init__(self, failures: list[tuple[str, str]]):
        self.failures = failures
        lines = "\n".join(f"  {path}: {reason}" for path, reason in failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        super().__init__(f"{len(failures)} image(s) could not be used:\n{lines}{more}")


def screen_training_images(paths: Sequence[str | Path], modes: Sequence[str] | None = None) -> None:
    """Before training: raise UnreadableImages naming every training image the framework cannot
    read (missing, broken, or of a PIL mode outside `modes`)."""
    failures = [(str(p), reason) for p in paths if (reason := unreadable_reason(p, modes))]
    if failures:
        raise UnreadableImages(failures)


def warn_size_mismatch(ref: ImageRef, width: int, height: int) -> None:
    """Log when the framework read an image of another size than its record says (boxes are then in
    the PNG's own pixels)."""
    if (int(width), int(height)) != (ref.width, ref.height):
        log.warning("%s: PNG is %dx%d but its record says %dx%d; boxes are in the PNG's pixels",
                    ref.path, width, height, ref.width, ref.height)
