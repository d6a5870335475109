"""`cxr-predict`: trained runs -> detections on new DICOMs/PNGs, overlays and a Kaggle submission.

    cxr-predict sweep=demo predict.runs=[runs/demo/yolov5/fold0] predict.input=test
    cxr-predict sweep=demo predict.runs=[runs/demo/yolov5/fold0,runs/demo/mmdet_frcnn/fold0] \\
        predict.input=/path/to/dicoms          (several runs are fused with the `ensemble` settings)
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.cli.common import CONF_DIR, output_dir, quiet_frameworks, user_errors
from harness.jobs.predict_job import run_predict

quiet_frameworks()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> dict:
    with user_errors("cxr-predict"):
        paths = run_predict(cfg, output_dir())
    for kind, path in paths.items():
        print(f"{kind:>12}: {path}")
    return paths


if __name__ == "__main__":
    main()
