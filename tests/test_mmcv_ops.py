"""mmcv's compiled CPU ops (RoIAlign, nms, bbox_overlaps) against results computed by hand.

Faster R-CNN in mmdet depends on these kernels from the source-built mmcv; a miscompiled build
(e.g. wrong C++ standard flags) would still import but give wrong numbers, so check values.
"""
from __future__ import annotations

import mmcv.ops as ops
import pytest
import torch


def ramp(h: int = 8, w: int = 8) -> "torch.Tensor":
    """Feature map f(x, y) = x + 10*y at pixel (x, y): bilinear interpolation of a linear function is
    exact, and the average of samples is the value at their mean, so RoIAlign is computable by hand."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return (xs + 10 * ys)[None, None]


@pytest.mark.parametrize("sampling_ratio", [1, 2, 0])
def test_roi_align_linear_ramp_aligned(sampling_ratio):
    # aligned=True: pixel i's centre is at continuous coordinate i + 0.5, so sampling at c gives c - 0.5.
    # RoI [2, 2, 6, 6] -> 2x2 bins of size 2 with centres x, y in {3, 5} -> values {2.5, 4.5} (+10*y).
    roi_align = ops.RoIAlign(output_size=(2, 2), spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True)
    rois = torch.tensor([[0, 2.0, 2.0, 6.0, 6.0]])
    out = roi_align(ramp(), rois)
    expected = torch.tensor([[2.5 + 25, 4.5 + 25], [2.5 + 45, 4.5 + 45]])
    assert out.shape == (1, 1, 2, 2)
    assert torch.allclose(out[0, 0], expected, atol=1e-4)


def test_roi_align_spatial_scale_and_unaligned():
    # Image-space RoI [4, 4, 12, 12] at spatial_scale 0.5 is feature RoI [2, 2, 6, 6]; without the
    # half-pixel shift (aligned=False) the bin centres 3 and 5 sample values 3 and 5.
    roi_align = ops.RoIAlign(output_size=2, spatial_scale=0.5, sampling_ratio=2, aligned=False)
    out = roi_align(ramp(), torch.tensor([[0, 4.0, 4.0, 12.0, 12.0]]))
    expected = torch.tensor([[3.0 + 30, 5.0 + 30], [3.0 + 50, 5.0 + 50]])
    assert torch.allclose(out[0, 0], expected, atol=1e-4)


def test_roi_align_constant_map_and_batch_index():
    # Two images with constant maps 1 and 7: each RoI must read its own image (column 0 of rois).
    feats = torch.cat([torch.full((1, 2, 6, 6), 1.0), torch.full((1, 2, 6, 6), 7.0)])
    rois = torch.tensor([[1, 0.5, 0.5, 4.5, 3.5], [0, 1.0, 1.0, 5.0, 5.0]])
    out = ops.RoIAlign(output_size=3, spatial_scale=1.0, sampling_ratio=2, aligned=True)(feats, rois)
    assert out.shape == (2, 2, 3, 3)
    assert torch.allclose(out[0], torch.full((2, 3, 3), 7.0))
    assert torch.allclose(out[1], torch.full((2, 3, 3), 1.0))


# Boxes with hand-computed IoUs: A=[0,0,10,10] (area 100), B=[1,0,11,10] (overlap 90, union 110 ->
# 0.818), C=[0,0,10,5] (overlap with A 50 -> 0.5; with B: 45 / (100 + 50 - 45) = 0.4286).
BOXES = [[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 5.0]]


def test_bbox_overlaps_by_hand():
    boxes = torch.tensor(BOXES)
    iou = ops.bbox_overlaps(boxes, boxes)
    expected = torch.tensor([[1.0, 90 / 110, 0.5], [90 / 110, 1.0, 45 / 105], [0.5, 45 / 105, 1.0]])
    assert torch.allclose(iou, expected, atol=1e-5)


@pytest.mark.parametrize(
    "iou_thr, kept",
    [(0.6, [0, 2]),  # B overlaps A at 0.818 > 0.6: suppressed; C at 0.5 survives
     (0.45, [0]),  # C overlaps A at 0.5 > 0.45: suppressed too
     (0.9, [0, 1, 2])],  # nothing overlaps above 0.9
)
def test_nms_three_boxes(iou_thr, kept):
    boxes, scores = torch.tensor(BOXES), torch.tensor([0.9, 0.8, 0.7])
    dets, inds = ops.nms(boxes, scores, iou_threshold=iou_thr)
    assert inds.tolist() == kept
    assert torch.allclose(dets[:, :4], boxes[kept])
    assert torch.allclose(dets[:, 4], scores[kept])


def test_nms_order_follows_scores_and_batched_nms_is_per_class():
    boxes = torch.tensor(BOXES)
    _, inds = ops.nms(boxes, torch.tensor([0.5, 0.9, 0.7]), iou_threshold=0.6)
    assert inds.tolist() == [1, 2]  # B first (highest); A suppressed by B (0.818); C vs B 0.43 kept
    # Same boxes, B in another class: class-aware NMS keeps it.
    dets, keep = ops.batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]),
                                 {"type": "nms", "iou_threshold": 0.6})
    assert sorted(keep.tolist()) == [0, 1, 2]
