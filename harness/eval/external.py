"""External validation: a model trained on one dataset scored on another through a class mapping.

A `ClassMapping` (config group `mapping`, e.g. conf/mapping/vinbigdata_to_nih.yaml) names, for every
class of the source label set (what the model predicts), the target class(es) it is scored as, and
lists the classes on either side without a counterpart; a class that is neither mapped nor listed is
an error, so nothing is dropped silently. One source class may map to several target classes
(VinBigData "Nodule/Mass" -> NIH "Nodule" and "Mass": each detection is scored in both); a target
class comes from at most one source class, so its internal score is that class's.

The table (`external_rows`): per mapped target class, AP@0.4 (pycocotools) on the external images
with its bootstrap interval over those images, beside the same model's internal AP@0.4 of the source
class on its own validation fold with that fold's interval; plus the mean over the mapped classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from harness.classes import LabelSet, label_set
from harness.eval.bootstrap import ImageMatches, percentile_ci, resample_counts
from harness.predictions import Predictions


class MappingError(ValueError):
    """A class mapping that does not cover both label sets exactly (the message says what is wrong)."""


@dataclass(frozen=True)
class ClassMapping:
    name: str
    source: LabelSet
    target: LabelSet
    classes: dict[str, tuple[str, ...]]  # source class -> target classes
    unmapped_source: tuple[str, ...]
    unmapped_target: tuple[str, ...]

    @classmethod
    def from_config(cls, node: Mapping) -> "ClassMapping":
        """Build and check a mapping from its config (see conf/mapping/*.yaml)."""
        try:
            source, target = label_set(node["source"]), label_set(node["target"])
            pairs = {str(k): tuple(str(t) for t in ([v] if isinstance(v, str) else v))
                     for k, v in dict(node["classes"]).items()}
        except (KeyError, TypeError, ValueError) as err:
            raise MappingError(f"mapping {node.get('name')!r}: {err}") from err
        mapping = cls(str(node.get("name", f"{source.name}_to_{target.name}")), source, target, pairs,
                      tuple(node.get("unmapped_source") or ()), tuple(node.get("unmapped_target") or ()))
        mapping.check()
        return mapping

    def check(self) -> None:
        problems = []
        for side, names, known in (("source", self.classes, self.source.classes),
                                   ("target", [t for ts in self.classes.values() for t in ts], self.target.classes)):
            problems += [f"{side} class {n!r} is not in the {side} label set" for n in names if n not in known]
        problems += [f"unmapped_source class {n!r} is not in {self.source.name}" for n in self.unmapped_source
                     if n not in self.source.classes]
        problems += [f"unmapped_target class {n!r} is not in {self.target.name}" for n in self.unmapped_target
                     if n not in self.target.classes]
        mapped_targets = [t for ts in self.classes.values() for t in ts]
        problems += [f"target class {t!r} comes from several source classes" for t in set(mapped_targets)
                     if mapped_targets.count(t) > 1]
        for side, label_set_, mapped, unmapped in (("source", self.source, set(self.classes), self.unmapped_source),
                                                    ("target", self.target, set(mapped_targets), self.unmapped_target)):
            both = mapped & set(unmapped)
            problems += [f"{side} class {n!r} is both mapped and listed as unmapped" for n in sorted(both)]
            missing = [n for n in label_set_.classes if n not in mapped and n not in unmapped]
            problems += [f"{side} class {n!r} is neither mapped nor listed in unmapped_{side}" for n in missing]
        if problems:
            raise MappingError(f"mapping {self.name!r} ({self.source.name} -> {self.target.name}): " + "; ".join(problems))

    def target_of(self) -> dict[str, str]:
        """{target class: its source class} for every mapped target class, in the target's order."""
        source = {t: s for s, ts in self.classes.items() for t in ts}
        return {t: source[t] for t in self.target.classes if t in source}

    def map_predictions(self, preds: Predictions) -> Predictions:
        """The detections re-labelled with target category ids (one copy per target class of a
        source class); detections of unmapped source classes are left out (they are listed)."""
        ids = {self.source.classes.index(s): [self.target.classes.index(t) for t in ts] for s, ts in self.classes.items()}
        dets = [{**det, "category_id": t} for det in preds.detections for t in ids.get(det["category_id"], [])]
        return Predictions(f"{preds.source} -> {self.name}", preds.split_hash, list(preds.image_ids), dets)


@dataclass(frozen=True)
class ClassScore:
    """AP@0.4 of one class on a set of images, with its bootstrap interval and ground-truth count."""

    ap: float | None
    low: float | None
    high: float | None
    n_gt: int


def class_scores(gt_coco, preds: Predictions, classes: list[str], resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[dict[str, ClassScore], ClassScore]:
    """AP@0.4 of each class named in `classes` (names of the ground truth's categories) on the
    predictions' images, with percentile intervals over bootstrap resamples of those images; and the
    mean over those classes that have ground truth (its interval from the same resamples)."""
    from harness.classes import class_names
    from harness.eval.coco_map import load_gt

    gt = load_gt(gt_coco)
    names = class_names(gt)
    matches = ImageMatches.from_coco(gt, preds)
    counts = resample_counts(matches.image_ids, resamples, seed)
    ones = np.ones((1, len(matches.image_ids)))
    point = matches.per_class_ap(ones)
    samples = matches.per_class_ap(counts)
    out, cats = {}, []
    for name in classes:
        cat = names.index(name)
        n_gt = int(matches.classes[cat].n_gt.sum())
        if n_gt == 0:
            out[name] = ClassScore(None, None, None, 0)
            continue
        cats.append(cat)
        drawn = samples[cat][~np.isnan(samples[cat])]
        low, high = percentile_ci(drawn, level) if drawn.size else (None, None)
        out[name] = ClassScore(float(point[cat][0]), low, high, n_gt)
    if not cats:
        return out, ClassScore(None, None, None, 0)
    mean_point = float(np.mean([point[c][0] for c in cats]))
    stacked = np.stack([samples[c] for c in cats], axis=1)
    mean_samples = np.array([np.mean(r[~np.isnan(r)]) if (~np.isnan(r)).any() else np.nan for r in stacked])
    low, high = percentile_ci(mean_samples[~np.isnan(mean_samples)], level)
    return out, ClassScore(mean_point, low, high, int(sum(s.n_gt for s in out.values())))


def external_rows(mapping: ClassMapping, external: dict[str, ClassScore],
                  internal: dict[str, ClassScore] | None) -> list[dict]:
    """One row per mapped target class: target, source, external AP + CI + GT boxes, internal AP + CI."""
    rows = []
    for target, source in mapping.target_of().items():
        ext = external[target]
        intl = (internal or {}).get(source)
        rows.append({"target": target, "source": source, "external_ap": ext.ap, "external_low": ext.low,
                     "external_high": ext.high, "external_gt": ext.n_gt,
                     "internal_ap": intl.ap if intl else None, "internal_low": intl.low if intl else None,
                     "internal_high": intl.high if intl else None, "internal_gt": intl.n_gt if intl else None})
    return rows
