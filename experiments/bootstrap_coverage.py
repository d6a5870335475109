"""Coverage of the bootstrap intervals of mAP@0.4 (harness.eval.bootstrap) on small validation sets.

A cheap synthetic detector on a synthetic population: 4 classes, three common ones and one rare one
whose expected number of carrier images per validation set is 1, 2, 5 or 20; images independent, or
grouped into patients (1-4 images each) who share their findings and how hard they are to detect.
The population's mAP@0.4 (the target) is computed from `--population` images with the harness's own
AP (harness.eval.bootstrap: pycocotools' 101-point interpolation); then `--sets` validation sets of
`--images` images are drawn, each gets its interval, and the table gives the share of intervals that
contain the population value ("coverage", nominal `--level`), overall and over the sets in which
every class has at least FEW_IMAGES carrier images, with the mean width.

Methods: "percentile" = the plain percentile interval of the image bootstrap; "BCa" = Efron's BCa
alone; "shipped" = what the harness ships (harness.eval.bootstrap.Bootstrap.ci: BCa after spreading
the resamples to the jackknife's standard error where that is larger), resampling images; with
patients also "shipped, by patient" = the same over the harness's cluster bootstrap (whole patients
drawn), which is what it ships for patient-grouped folds. Every method drops a class absent from a
resample out of that resample's mean.

    python experiments/bootstrap_coverage.py                 # 300 sets, 1000 resamples: a few CPU minutes
    python experiments/bootstrap_coverage.py --sets 20 --resamples 200     # a smoke run (seconds)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.eval.bootstrap import (FEW_IMAGES, Bootstrap, ClassMatches, ImageMatches,  # noqa: E402
                                    bca_ci, percentile_ci)

COMMON = (0.35, 0.25, 0.15)      # image-level prevalence of the common classes
RARE_CARRIERS = (1, 2, 5, 20)    # expected carrier images of the rare class per validation set
MIN_SETS = 20                    # fewest sets behind a "coverage on those" figure


def population(n: int, rare: float, clustered: bool, rng: np.random.Generator):
    """Per image: boxes per class (n x C), its patient, and a difficulty shift (shared by a patient)."""
    prevalence = np.array([*COMMON, rare])
    if clustered:
        sizes = rng.integers(1, 5, size=n)          # 1-4 images per patient
        patient = np.repeat(np.arange(n), sizes)[:n]
        n_patients = patient.max() + 1
        # a patient has a finding (prevalence scaled so images keep the same prevalence) and shows it
        # on 80 % of their images
        has = rng.random((n_patients, len(prevalence))) < np.minimum(prevalence / 0.8, 1.0)
        shows = rng.random((n, len(prevalence))) < 0.8
        present = has[patient] & shows
        difficulty = rng.normal(0, 1.0, n_patients)[patient]
    else:
        patient = np.arange(n)
        present = rng.random((n, len(prevalence))) < prevalence
        difficulty = rng.normal(0, 1.0, n)
    boxes = present * rng.integers(1, 3, size=present.shape)   # 1-2 boxes where present
    return boxes, patient, difficulty


def detections(boxes: np.ndarray, difficulty: np.ndarray, rng: np.random.Generator) -> dict[int, ClassMatches]:
    """A synthetic detector: each box found with a probability falling with the image's difficulty,
    a TP score ~ N(0.65, 0.15), false positives Poisson(0.4) per image and class with score ~ N(0.4, 0.15)."""
    n, n_classes = boxes.shape
    out = {}
    for c in range(n_classes):
        p_find = 1 / (1 + np.exp(-(1.2 - difficulty)))
        found = rng.binomial(boxes[:, c], p_find)
        n_fp = rng.poisson(0.4 * np.exp(0.3 * difficulty))
        image = np.concatenate([np.repeat(np.arange(n), found), np.repeat(np.arange(n), n_fp)])
        tp = np.concatenate([np.ones(found.sum(), bool), np.zeros(n_fp.sum(), bool)])
        score = np.where(tp, rng.normal(0.65, 0.15, tp.size), rng.normal(0.4, 0.15, tp.size))
        order = np.argsort(-score, kind="mergesort")
        out[c] = ClassMatches(image[order], tp[order], ~tp[order], boxes[:, c].astype(np.int64))
    return out


def subset(classes: dict[int, ClassMatches], rows: np.ndarray) -> dict[int, ClassMatches]:
    """The matches of images `rows` (re-indexed 0..len-1)."""
    where = -np.ones(max(len(m.n_gt) for m in classes.values()), np.int64)
    where[rows] = np.arange(len(rows))
    out = {}
    for c, m in classes.items():
        keep = where[m.image] >= 0
        out[c] = ClassMatches(where[m.image[keep]], m.tp[keep], m.fp[keep], m.n_gt[rows])
    return out


def one_config(rare_carriers: float, clustered: bool, args, rng) -> list[dict]:
    rare = rare_carriers / args.images
    boxes, patient, difficulty = population(args.population, rare, clustered, rng)
    pop = ImageMatches(list(range(len(boxes))), detections(boxes, difficulty, rng))
    truth = float(pop.map(np.ones((1, len(boxes))))[0])
    methods = ["percentile", "BCa", "shipped"] + (["shipped, by patient"] if clustered else [])
    hits = {m: [] for m in methods}
    widths = {m: [] for m in methods}
    thick = []
    for _ in range(args.sets):
        # a validation set: whole patients from a fresh population draw until `images` images
        b, p, d = population(args.images * 2, rare, clustered, rng)
        rows = np.arange(args.images)
        b, p, d = b[rows], p[rows], d[rows]
        matches = ImageMatches(list(range(args.images)), detections(b, d, rng),
                               tuple(str(x) for x in p) if clustered else None)
        thick.append(min(int((b[:, c] > 0).sum()) for c in range(b.shape[1])) >= FEW_IMAGES)
        point = float(matches.map(np.ones((1, args.images)))[0])
        seed = int(rng.integers(1 << 31))
        plain = ImageMatches(matches.image_ids, matches.classes)
        samples = plain.map(plain.counts(args.resamples, seed))
        jack = plain.map(plain.jackknife_weights())
        intervals = {"percentile": percentile_ci(samples, args.level),
                     "BCa": bca_ci(samples, point, jack.mean() - jack, args.level, scale_to_jackknife=False),
                     "shipped": Bootstrap(point, samples, tuple(plain.image_ids), seed, jack.mean() - jack).ci(args.level)}
        if clustered:
            intervals["shipped, by patient"] = matches.bootstrap(args.resamples, seed).ci(args.level)
        for m, (low, high) in intervals.items():
            hits[m].append(low <= truth <= high)
            widths[m].append(high - low)
    thick = np.array(thick)
    rows = []
    for m in methods:
        h = np.array(hits[m])
        rows.append({"rare": rare_carriers, "patients": clustered, "method": m, "truth": truth,
                     "coverage": h.mean(), "thick": int(thick.sum()),
                     "coverage_thick": h[thick].mean() if thick.sum() >= MIN_SETS else float("nan"),
                     "width": float(np.mean(widths[m]))})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=300, help="validation sets per configuration")
    parser.add_argument("--images", type=int, default=51, help="images per validation set")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--population", type=int, default=40_000, help="images behind the population mAP")
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--rare", type=float, nargs="*", default=list(RARE_CARRIERS),
                        help="expected carrier images of the rare class per set")
    parser.add_argument("--patients", choices=("no", "yes", "both"), default="both",
                        help="images independent, grouped into patients, or both (the rows of one run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"{args.sets} validation sets of {args.images} images per row, {args.resamples} resamples, nominal "
          f"{args.level:.0%}; population mAP@0.4 from {args.population} images; seed {args.seed}\n")
    print("| rare class: expected carrier images / set | patients | interval | coverage (all sets) | "
          f"sets with every class on ≥ {FEW_IMAGES} images | coverage on those | mean width |")
    print("|---|---|---|---|---|---|---|")
    for clustered in {"no": (False,), "yes": (True,), "both": (False, True)}[args.patients]:
        for rare in args.rare:
            # each row its own generator: a row's figures do not depend on which other rows run
            rng = np.random.default_rng([args.seed, int(round(rare * 1000)), int(clustered)])
            for r in one_config(rare, clustered, args, rng):
                thick = "–" if np.isnan(r["coverage_thick"]) else f"{r['coverage_thick']:.3f}"
                print(f"| {r['rare']:g} | {'yes' if r['patients'] else 'no'} | {r['method']} | {r['coverage']:.3f} | "
                      f"{r['thick']} | {thick} | {r['width']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
