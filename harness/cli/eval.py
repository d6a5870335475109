"""`cxr-eval`: score the predictions of any detector on a prepared fold, as a run of a sweep.

    cxr-eval sweep=demo experiment=demo data.fold=0 eval.name=my_detector eval.results=my_results.json

The results file is a COCO results list ([{"image_id", "category_id", "bbox", "score"}], bbox
[x, y, w, h] in the prepared PNG's pixels, image_id the fold's COCO image id or the image key) or a
cxr-bench predictions.json. Written to <sweep>/<eval.name>/fold<k>/: cxr-report lists it beside the
trained models, cxr-ensemble can fuse it.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.cli.common import CONF_DIR
from harness.sweep import model_run_dir
from harness.jobs.eval_job import ExternalResultsError, run_eval


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> dict:
    try:
        metrics = run_eval(cfg)
    except ExternalResultsError as err:
        raise SystemExit(f"cxr-eval: {err}") from None
    print(f"{metrics['model']} fold {metrics['fold']}: mAP@0.4 {metrics['map40']:.4f} on {metrics['n_images']} "
          f"images -> {model_run_dir(cfg.sweep_dir, metrics['model'], metrics['fold'])}")
    return metrics


if __name__ == "__main__":
    main()
