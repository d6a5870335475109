"""The data step shared by `cxr-prepare` and every train job: make sure the dataset is prepared.

Preparation is idempotent (finished PNGs are skipped), so a train job calls it too; a file lock
keeps parallel jobs (joblib, submitit) from preparing the same dataset at once.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig

from harness.data.labels import POLICIES as BAD_ROW_POLICIES
from harness.data.nih import prepare_nih
from harness.data.pipeline import prepare_dataset
from harness.data.prepare import ConvertSettings
from harness.jobs.config import ConfigError, to_plain
from harness.synth import generate

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dataset_lock(prepared_dir: Path) -> Iterator[None]:
    prepared_dir.mkdir(parents=True, exist_ok=True)
    with open(prepared_dir / ".prepare.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_raw(data: DictConfig) -> Path:
    """The raw VinBigData-layout folder; generated first for a synthetic dataset. (NIH ChestX-ray14's
    layout is checked by harness.data.nih.)"""
    raw_dir = Path(data.raw_dir)
    if data.get("layout") == "nih_cxr14":
        if not raw_dir.is_dir():
            raise ConfigError(f"data.raw_dir={raw_dir} does not exist: point it at the NIH ChestX-ray14 folder "
                              "(BBox_List_2017.csv and the images_*/ folders)")
    elif data.synthetic:
        if not (raw_dir / "train.csv").is_file():
            log.info("generating synthetic dataset (preset %s, seed %s) in %s", data.synthetic.preset,
                     data.synthetic.seed, raw_dir)
            generate(raw_dir, preset=data.synthetic.preset, seed=int(data.synthetic.seed))
    elif not (raw_dir / "train.csv").is_file():
        pngs = raw_dir.is_dir() and next(raw_dir.rglob("*.png"), None) is not None
        raise ConfigError(
            f"data.raw_dir={raw_dir} has no train.csv: point it at the VinBigData folder "
            "(train.csv, train/*.dicom, test/*.dicom)"
            + ("; it holds PNG images: for the NIH ChestX-ray14 box set use data=nih_cxr14 data.raw_dir=" + str(raw_dir)
               if pngs else "")
        )
    return raw_dir


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_data_config(data: DictConfig) -> None:
    """The `data` settings, checked before anything is generated or converted: one ConfigError naming
    the first wrong key, what it holds and what it takes."""
    size = data.get("size")
    if size != "orig" and not (_int(size) is not None and size >= 32):
        raise ConfigError(f"data.size={size!r}: give the PNGs' longer side in pixels (an integer >= 32, e.g. "
                          "data.size=1024) or data.size=orig")
    if data.get("bits") not in (8, 16):
        raise ConfigError(f"data.bits={data.get('bits')!r}: use 8 or 16")
    folds, fold = _int(data.get("folds")), _int(data.get("fold"))
    if folds is None or folds < 2:
        raise ConfigError(f"data.folds={data.get('folds')!r}: the number of cross-validation folds, an integer >= 2")
    if fold is None or not 0 <= fold < folds:
        raise ConfigError(f"data.fold={data.get('fold')!r} is out of range for data.folds={folds} "
                          f"(0..{folds - 1})")
    if data.get("bad_rows") not in BAD_ROW_POLICIES:
        raise ConfigError(f"data.bad_rows={data.get('bad_rows')!r}: use {' or '.join(BAD_ROW_POLICIES)}")


def ensure_prepared(data: DictConfig):
    """Prepare (or find prepared) data per `data` config; returns the pipeline's PrepareSummary
    (paths of manifest, labels, folds, stats; counts converted/skipped/failed). The settings are
    checked first (check_data_config), before any conversion."""
    check_data_config(data)
    prepared_dir = Path(data.prepared_dir)
    with dataset_lock(prepared_dir):
        raw_dir = ensure_raw(data)
        if data.get("layout") == "nih_cxr14":
            summary = _prepare_nih(data, raw_dir, prepared_dir)
        else:
            summary = prepare_dataset(
                raw_dir, prepared_dir, size=data.size, square=bool(data.square), bits=int(data.bits),
                fusion=data.fusion, fusion_iou=float(data.fusion_iou), readers_keep=to_plain(data.readers_keep),
                readers_drop=to_plain(data.readers_drop), bad_rows=data.bad_rows, folds=int(data.folds),
                seed=int(data.fold_seed), workers=data.workers, exact=bool(data.get("exact", False)),
                png_compression=int(data.get("png_compression", ConvertSettings.png_compression)),
                png_strategy=str(data.get("png_strategy", ConvertSettings.png_strategy)),
            )
    return summary


def _prepare_nih(data: DictConfig, raw_dir: Path, prepared_dir: Path):
    """`data=nih_cxr14`: the NIH ChestX-ray14 box set (PNG, own classes, one reader, patient-grouped folds)."""
    if data.get("fusion", "none") != "none":
        raise ConfigError(f"data.fusion={data.fusion}: the NIH boxes have one reader each; use data.fusion=none")
    return prepare_nih(raw_dir, prepared_dir, size=data.size, square=bool(data.square), bits=int(data.bits),
                       bad_rows=data.bad_rows, folds=int(data.folds), seed=int(data.fold_seed),
                       normals=int(data.get("normals") or 0), workers=data.workers,
                       png_compression=int(data.get("png_compression", ConvertSettings.png_compression)),
                       png_strategy=str(data.get("png_strategy", ConvertSettings.png_strategy)))
