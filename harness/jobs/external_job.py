"""External validation (`cxr-predict predict.input=external data=<other dataset> mapping=<mapping>`):
the runs' checkpoints (one model, or several fused as an ensemble) predict every labelled image of the
external dataset; their classes are mapped onto the external label set (harness.eval.external) and
scored per mapped class, beside the same model's score on its own validation fold. Writes
predictions.json (the model's classes), predictions_mapped.json (the external classes), external.json
and external_validation.md into predict.out_dir; cxr-report adds every external.json under the sweep
to results.md.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from harness import atomic
from harness.eval.external import ClassMapping, MappingError, external_rows, score_external, unscored
from harness.jobs.config import ConfigError, data_label_set, to_plain
from harness.jobs.data_step import ensure_prepared
from harness.jobs.run_predictions import fuse_runs, predict_with_runs
from harness.jobs.settings import bootstrap_settings
from harness.predictions import Predictions
from harness.report.external import RESULT_FILE, external_markdown
from harness.report.overlays import write_overlays
from harness.split import ImageRef

log = logging.getLogger(__name__)


def load_mapping(cfg: DictConfig, source, target):
    node = to_plain(cfg.get("mapping"))
    if not node:
        raise ConfigError(f"predict.input=external needs a class mapping: add mapping=<name> (conf/mapping/, e.g. "
                          f"mapping={source.name}_to_{target.name})")
    try:
        mapping = ClassMapping.from_config(node)
    except MappingError as err:
        raise ConfigError(str(err)) from err
    if (mapping.source, mapping.target) != (source, target):
        raise ConfigError(f"mapping={mapping.name} maps {mapping.source.name} -> {mapping.target.name}, but the runs were "
                          f"trained on {source.name} and data={target.name} is the external set")
    return mapping


def internal_predictions(cfg: DictConfig, runs: list[tuple[DictConfig, dict]], run_dirs: list[Path]):
    """(the model's predictions on its own validation fold, that fold's val.json), or None with the
    reason logged: a single run's own files, or its members' val predictions fused like the external
    ones (the members must share one split)."""

    val_jsons = [d / "split" / "val.json" for d in run_dirs]
    missing = [str(d) for d, v in zip(run_dirs, val_jsons) if not (v.is_file() and (d / "predictions.json").is_file())]
    if missing:
        log.warning("external validation: no internal score (no split/val.json or predictions.json in %s)", missing)
        return None
    splits = {metrics.get("split_hash") for _, metrics in runs}
    if len(splits) > 1:
        log.warning("external validation: no internal score for the ensemble: its runs come from different splits")
        return None
    preds = [Predictions.load(d / "predictions.json") for d in run_dirs]
    if len(preds) == 1:
        return preds[0], val_jsons[0]
    val = json.loads(val_jsons[0].read_text())
    sizes = {img["id"]: (img["width"], img["height"]) for img in val["images"]}
    return fuse_runs(cfg, preds, sizes, [c.model.name for c, _ in runs], [str(d) for d in run_dirs]), val_jsons[0]


def run_external(cfg: DictConfig, runs: list[tuple[DictConfig, dict]], run_dirs: list[Path], source, out_dir: Path) -> dict:
    target = data_label_set(cfg.data)
    mapping = load_mapping(cfg, source, target)
    dataset = ensure_prepared(cfg.data)
    coco = json.loads(dataset.labels.read_text())
    images = [ImageRef(img["id"], dataset.out_dir / img["file_name"], int(img["width"]), int(img["height"]))
              for img in coco["images"]]
    preds = predict_with_runs(cfg, runs, run_dirs, images, out_dir)
    preds.save(out_dir / "predictions.json")
    mapped = mapping.map_predictions(preds)
    mapped.save(out_dir / "predictions_mapped.json")
    boot = bootstrap_settings(cfg.report.get("bootstrap"))
    internal = internal_predictions(cfg, runs, run_dirs)
    scores = score_external(mapping, coco, preds, internal[1] if internal else None,
                            internal[0] if internal else None, boot.resamples, boot.seed, boot.ci)
    folds = sorted({int(m["fold"]) for _, m in runs if m.get("fold") is not None})
    info = coco.get("info") or {}
    doc = {
        "model": preds.source, "runs": [str(d) for d in run_dirs], "folds": folds,
        "mapping": mapping.name, "source_label_set": mapping.source.name, "target_label_set": mapping.target.name,
        "external_dataset": str(cfg.data.name), "external_labels": str(dataset.labels), "n_images": len(images),
        "rows": external_rows(mapping, scores.external, scores.internal),
        "external_mean": vars(scores.external_mean),
        "internal_mean": vars(scores.internal_mean) if scores.internal_mean else None,
        "mean_sources": scores.mean_sources,
        "unmapped_source": list(mapping.unmapped_source), "unmapped_target": list(mapping.unmapped_target),
        "unscored": unscored(mapping, coco),
        "exhaustive": info.get("exhaustive"), "unboxed_findings": info.get("unboxed_findings"),
        "grouped_by": info.get("group_by"),
        "bootstrap": {"resamples": boot.resamples, "seed": boot.seed, "ci": boot.ci},
    }
    atomic.write_json(out_dir / RESULT_FILE, doc)
    atomic.write_text(out_dir / "external_validation.md", external_markdown(doc))
    write_overlays(mapped, coco, dataset.out_dir, out_dir / "overlays", n=int(cfg.report.overlays),
                   score_thr=float(cfg.report.overlay_score_thr))
    log.info("external validation of %s on %s (%d images): %s", preds.source, cfg.data.name, len(images),
             out_dir / "external_validation.md")
    return {"predictions": out_dir / "predictions.json", "external": out_dir / RESULT_FILE,
            "external_md": out_dir / "external_validation.md", "overlays": out_dir / "overlays"}
