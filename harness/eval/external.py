"""External validation: a model trained on one dataset scored on another through a class mapping.

A `ClassMapping` (config group `mapping`, e.g. conf/mapping/vinbigdata_to_nih.yaml) names, for every
class of the source label set (what the model predicts), the target class(es) it is scored as, and
lists the classes on either side without a counterpart; a class that is neither mapped nor listed is
an error, so nothing is dropped silently. A target class comes from at most one source class, so its
internal score is that class's.

One source class may map to several target classes (VinBigData "Nodule/Mass" -> NIH "Nodule" and
"Mass"). Such a source class is scored like for like in two ways (`score_external`):

- a **merged row** (kind "merged"): the target classes relabelled as one class (NIH Nodule and Mass
  boxes are all "Nodule/Mass" boxes), each detection scored once: the same question the source
  class answers on its own validation fold;
- **per target class rows** (kind "class"): each detection scored as every one of the target classes,
  where a detection on a box of a sibling target class (a "Nodule/Mass" detection on an NIH Mass box,
  scored as a Nodule) is ignored rather than counted false: the sibling's boxes are ignore regions
  (COCO ``iscrowd``: a detection covering at least 0.4 of its own area with one is left out).

The means are per source class, on both sides: the external mean averages each source class once (its
single target class's row, or its merged row), the internal mean the same source classes on the
model's own validation fold, each with its bootstrap interval (harness.eval.bootstrap: the same draws
for every class of one image set, by patient where the labels are grouped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from harness.classes import LabelSet, class_names, label_set
from harness.eval.bootstrap import ImageMatches, bca_ci, influence, mean_present
from harness.eval.coco_map import load_gt
from harness.predictions import Predictions

#: How a merged row is named: the source class's own name (e.g. "Nodule/Mass").
MERGED = "{source}"


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

    def merged_sources(self) -> list[str]:
        """The source classes that map to several target classes (scored as one merged class too)."""
        return [s for s, ts in self.classes.items() if len(ts) > 1]

    def scoring_coco(self, gt: dict) -> dict:
        """The target ground truth to score mapped predictions on: for each source class with several
        target classes, its siblings' boxes as ignore regions (iscrowd) of each target class, and one
        merged category (id N + k, named after the source class) holding all their boxes."""
        gt = load_gt(gt)
        names = class_names(gt)
        anns = [dict(a) for a in gt["annotations"]]
        next_id = max([int(a["id"]) for a in anns] + [0]) + 1
        categories = [dict(c) for c in gt.get("categories") or self.target.categories()]
        extra = []
        for k, source in enumerate(self.merged_sources()):
            targets = {names.index(t) for t in self.classes[source]}
            merged_id = len(names) + k
            categories.append({"id": merged_id, "name": MERGED.format(source=source), "supercategory": "merged"})
            for ann in anns:
                if ann["category_id"] not in targets or ann.get("iscrowd", 0):
                    continue
                extra.append({**ann, "id": next_id, "category_id": merged_id})
                next_id += 1
                for sibling in targets - {ann["category_id"]}:
                    extra.append({**ann, "id": next_id, "category_id": sibling, "iscrowd": 1})
                    next_id += 1
        return {**gt, "annotations": anns + extra, "categories": categories}

    def scoring_predictions(self, preds: Predictions) -> Predictions:
        """map_predictions plus one copy of each detection of a merged source class in its merged
        category (the ids scoring_coco gives them)."""
        mapped = self.map_predictions(preds)
        n = len(self.target.classes)
        merged = {self.source.classes.index(s): n + k for k, s in enumerate(self.merged_sources())}
        extra = [{**det, "category_id": merged[det["category_id"]]} for det in preds.detections
                 if det["category_id"] in merged]
        return Predictions(mapped.source, mapped.split_hash, list(mapped.image_ids), mapped.detections + extra)

    def source_rows(self) -> dict[str, str]:
        """{source class: the row its external mean uses} for every mapped source class: its single
        target class, or its merged row."""
        return {s: (MERGED.format(source=s) if len(ts) > 1 else ts[0]) for s, ts in self.classes.items()}


@dataclass(frozen=True)
class ClassScore:
    """AP@0.4 of one class on a set of images, with its bootstrap interval and ground-truth count."""

    ap: float | None
    low: float | None
    high: float | None
    n_gt: int


def class_scores(gt_coco, preds: Predictions, classes: list[str], resamples: int = 1000, seed: int = 0,
                 level: float = 0.95, means: dict[str, list[str]] | None = None
                 ) -> tuple[dict[str, ClassScore], ClassScore]:
    """AP@0.4 of each class named in `classes` (names of the ground truth's categories) on the
    predictions' images, with BCa intervals over bootstrap resamples of those images (or patients);
    and the mean over those classes that have ground truth (its interval from the same resamples; a
    class without images in a resample drops out of that resample's mean). `means` {name: classes}:
    further means, returned in place of the one over `classes` as {name: ClassScore} (see score_means)."""
    scores, mean_scores = score_means(gt_coco, preds, classes, {"mean": classes, **(means or {})},
                                      resamples, seed, level)
    return scores, mean_scores["mean"]


def score_means(gt_coco, preds: Predictions, classes: list[str], means: dict[str, list[str]],
                resamples: int = 1000, seed: int = 0, level: float = 0.95
                ) -> tuple[dict[str, ClassScore], dict[str, ClassScore]]:
    """Per class scores (as class_scores) and, per entry of `means`, the mean over its classes that
    have ground truth, with its interval from the same resamples."""
    gt = load_gt(gt_coco)
    names = class_names(gt)
    names = tuple(names) + tuple(str(c["name"]) for c in sorted(gt.get("categories") or [], key=lambda c: c["id"])
                                 if int(c["id"]) >= len(names))
    matches = ImageMatches.from_coco(gt, preds)
    n = len(matches.image_ids)
    point = matches.per_class_ap(np.ones((1, n)))
    samples = matches.per_class_ap(matches.counts(resamples, seed))
    jack = matches.per_class_ap(matches.jackknife_weights()) if n else {}
    out = {}
    for name in dict.fromkeys([*classes, *(c for cs in means.values() for c in cs)]):
        cat = names.index(name)
        n_gt = int(matches.classes[cat].n_gt.sum())
        if n_gt == 0:
            out[name] = ClassScore(None, None, None, 0)
            continue
        drawn = samples[cat][~np.isnan(samples[cat])]
        infl = np.nan_to_num(influence(jack[cat])) if cat in jack and (~np.isnan(jack[cat])).all() else None
        low, high = bca_ci(drawn, float(point[cat][0]), infl, level) if drawn.size else (None, None)
        out[name] = ClassScore(float(point[cat][0]), low, high, n_gt)
    mean_scores = {}
    for key, members in means.items():
        cats = [names.index(c) for c in members if out[c].n_gt > 0]
        if not cats:
            mean_scores[key] = ClassScore(None, None, None, 0)
            continue
        mean_point = float(np.mean([point[c][0] for c in cats]))
        mean_samples = mean_present(np.stack([samples[c] for c in cats], axis=1))
        jack_means = mean_present(np.stack([jack[c] for c in cats], axis=1)) if jack else None
        low, high = bca_ci(mean_samples, mean_point, None if jack_means is None else influence(jack_means), level)
        mean_scores[key] = ClassScore(mean_point, low, high, int(sum(out[c].n_gt for c in members)))
    return {name: out[name] for name in classes}, mean_scores


@dataclass(frozen=True)
class ExternalScores:
    """Everything the external table shows (score_external)."""

    external: dict[str, ClassScore]     # per target class (siblings ignored) and per merged row
    internal: dict[str, ClassScore] | None   # per source class, on the model's own validation fold
    external_mean: ClassScore           # per source class: its target class or its merged row
    internal_mean: ClassScore | None    # the same source classes, on the validation fold
    mean_sources: list[str]             # the source classes in both means


def score_external(mapping: ClassMapping, gt_coco, preds: Predictions, internal_gt=None,
                   internal_preds: Predictions | None = None, resamples: int = 1000, seed: int = 0,
                   level: float = 0.95) -> ExternalScores:
    """The like-for-like external scores of a source-class model's `preds` (source category ids) on
    the target ground truth (module doc), and its internal scores on its own validation fold."""
    gt = mapping.scoring_coco(gt_coco)
    rows = mapping.source_rows()
    names = [*mapping.target_of(), *(rows[s] for s in mapping.merged_sources())]
    external, _ = class_scores(gt, mapping.scoring_predictions(preds), names, resamples, seed, level)
    sources = [s for s, row in rows.items() if external[row].n_gt > 0]
    _, ext_means = score_means(gt, mapping.scoring_predictions(preds), names, {"mean": [rows[s] for s in sources]},
                               resamples, seed, level)
    internal = internal_mean = None
    if internal_gt is not None and internal_preds is not None:
        internal, int_means = score_means(internal_gt, internal_preds, list(mapping.classes), {"mean": sources},
                                          resamples, seed, level)
        internal_mean = int_means["mean"]
    return ExternalScores(external, internal, ext_means["mean"], internal_mean, sources)


def external_rows(mapping: ClassMapping, external: dict[str, ClassScore],
                  internal: dict[str, ClassScore] | None) -> list[dict]:
    """One row per mapped target class ("class": for a source class with several target classes, a
    detection on a sibling's box ignored) and one per merged source class ("merged"): target, source,
    external AP + CI + GT boxes, internal AP + CI of the source class."""
    rows = []
    merged = {MERGED.format(source=s): s for s in mapping.merged_sources()}
    entries = [(t, s, "class") for t, s in mapping.target_of().items()]
    entries += [(name, source, "merged") for name, source in merged.items() if name in external]
    for target, source, kind in entries:
        ext = external[target]
        intl = (internal or {}).get(source)
        label = f"{' + '.join(mapping.classes[source])} (merged)" if kind == "merged" else target
        rows.append({"target": label, "source": source, "kind": kind,
                     "siblings": [t for t in mapping.classes[source] if t != target] if kind == "class" else [],
                     "external_ap": ext.ap, "external_low": ext.low,
                     "external_high": ext.high, "external_gt": ext.n_gt,
                     "internal_ap": intl.ap if intl else None, "internal_low": intl.low if intl else None,
                     "internal_high": intl.high if intl else None, "internal_gt": intl.n_gt if intl else None})
    return rows


def unscored(mapping: ClassMapping, gt_coco) -> dict:
    """What the external table does not score, and why: the target classes no source class predicts
    (their boxes, and the images whose only boxes are theirs: those count as negatives of every mapped
    class)."""
    gt = load_gt(gt_coco)
    names = class_names(gt)
    unmapped = {names.index(t) for t in mapping.unmapped_target}
    boxes = {t: 0 for t in mapping.unmapped_target}
    by_image: dict[int, set[int]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], set()).add(ann["category_id"])
        if ann["category_id"] in unmapped:
            boxes[names[ann["category_id"]]] += 1
    only = sorted(i for i, cats in by_image.items() if cats and cats <= unmapped)
    return {"target_boxes": boxes, "images_only_unmapped": len(only)}
