"""`cxr-prepare`: generate the synthetic raw data if needed, then DICOM -> PNG + manifest, fused
COCO labels, folds and data statistics. A rerun skips finished work.

    cxr-prepare                                   (the embedded synthetic default)
    cxr-prepare data=vinbigdata data.raw_dir=/data/vinbigdata data.size=1024

Exit status: 0 all converted; 100 + N when N DICOMs failed (each listed with its reason, the rest
converted); 1 on an error such as invalid train.csv rows.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from harness.cli.common import CONF_DIR, user_errors
from harness.jobs.data_step import ensure_prepared


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="prepare")
def main(cfg: DictConfig) -> None:
    with user_errors("cxr-prepare"):
        summary = ensure_prepared(cfg.data)
    print(f"prepared {summary.train_images} train images into {summary.out_dir}: "
          f"{summary.converted} converted, {summary.skipped} already done, {summary.failed} failed")
    for name in ("manifest", "labels", "folds", "stats_dir"):
        print(f"  {name:>9}: {getattr(summary, name)}")
    for path, reason in summary.failures:
        print(f"  FAILED {path}: {reason}")
    # The exit status tells how many DICOMs failed: 100 + count (capped at 254), so it cannot be
    # mistaken for an error exit (1, 2).
    if summary.failed:
        sys.exit(min(100 + summary.failed, 254))


if __name__ == "__main__":
    main()
