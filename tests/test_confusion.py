"""Confusion matrix with background, from the metric's matches."""
from __future__ import annotations

import numpy as np
import pytest
from test_error_analysis import case
from test_eval_voc import random_case

from harness.classes import CLASSES
from harness.eval.confusion import BACKGROUND, confusion_matrix, normalised
from harness.eval.matches import MatchTable

A, B, C, D = (0, 0, 100, 100), (200, 200, 100, 100), (400, 400, 50, 50), (0, 300, 80, 80)


def test_hand_built_cells():
    gts = [(1, 0, A), (1, 1, B), (1, 3, C), (1, 5, D)]
    dets = [(1, 0, A, 0.9),                  # true positive
            (1, 2, B, 0.8),                  # class 2 on a class-1 box: confusion (1 -> 2)
            (1, 4, (500, 0, 40, 40), 0.7),   # on nothing: (background -> 4)
            (1, 0, (0, 0, 100, 90), 0.6),    # duplicate of A: a false box of class 0
            (1, 0, A, 0.1),                  # below the score threshold: not counted
            (1, 5, D, 0.2)]                  # the box's only detection is below the threshold: D missed
    counts = confusion_matrix(MatchTable.from_coco(*case(gts, dets)), score_thr=0.25)
    name = CLASSES.__getitem__
    expected = {(name(0), name(0)): 1, (name(1), name(2)): 1, (name(3), BACKGROUND): 1,
                (BACKGROUND, name(4)): 1, (BACKGROUND, name(0)): 1, (name(5), BACKGROUND): 1}
    nonzero = {(r, c): int(v) for (r, c), v in counts.stack().items() if v}
    assert nonzero == expected
    norm = normalised(counts)
    assert norm.loc[name(1), name(2)] == 1.0 and norm.loc[BACKGROUND, name(0)] == 0.5
    # the same detections with the threshold at 0.15 find D
    counts = confusion_matrix(MatchTable.from_coco(*case(gts, dets)), score_thr=0.15)
    assert counts.loc[name(5), name(5)] == 1 and counts.loc[name(5), BACKGROUND] == 0


def test_a_box_is_confused_once_by_the_best_scoring_detection():
    dets = [(1, 2, A, 0.9), (1, 3, (0, 0, 100, 95), 0.8)]
    counts = confusion_matrix(MatchTable.from_coco(*case([(1, 0, A)], dets)))
    assert counts.loc[CLASSES[0], CLASSES[2]] == 1 and counts.loc[BACKGROUND, CLASSES[3]] == 1
    assert counts.loc[CLASSES[0], CLASSES[3]] == 0


@pytest.mark.parametrize("seed", range(4))
def test_rows_sum_to_ground_truth_and_columns_to_kept_detections(seed):
    gt, preds = random_case(seed, n_images=30)
    table = MatchTable.from_coco(gt, preds)
    counts = confusion_matrix(table, score_thr=0.3)
    n_gt = table.n_gt()
    assert counts.iloc[:-1].sum(axis=1).tolist() == [n_gt[c] for c in range(len(CLASSES))]
    kept = table.det[table.det["score"] >= 0.3]["category_id"].value_counts()
    assert counts.iloc[:, :-1].sum(axis=0).tolist() == [int(kept.get(c, 0)) for c in range(len(CLASSES))]
    assert np.trace(counts.to_numpy()[:-1, :-1]) == int(table.det[(table.det["score"] >= 0.3)]["tp"].sum())
    assert counts.loc[BACKGROUND, BACKGROUND] == 0
