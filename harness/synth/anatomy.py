"""A chest-radiograph-like background: body, lung fields, mediastinum, heart shadow, ribs, clavicles,
vessel markings, noise and intensity variation.

Values are display intensities in [0, 1] (MONOCHROME2 sense: dense = bright). Not anatomy-exact —
just enough structure that a detector must tell lesions from ribs, heart borders and noise.
`Anatomy` keeps the lung mask so lesions such as pneumothorax can erase lung markings.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Anatomy:
    image: np.ndarray  # float32 H×W in [0, 1]
    lungs: np.ndarray  # float32 soft mask of the lung fields
    markings: np.ndarray  # float32 layer of ribs + vessels inside the lungs (for pneumothorax)


def _blur(layer: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(layer, (0, 0), max(sigma, 0.5))


def _ellipse(h: int, w: int, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (int(cx * w), int(cy * h)), (max(1, int(rx * w)), max(1, int(ry * h))), angle, 0, 360, 1.0, -1)
    return mask


def chest(h: int, w: int, rng: np.random.Generator) -> Anatomy:
    """Draw one random chest background of h×w pixels."""
    s = min(h, w)
    body = _blur(_ellipse(h, w, 0.5, 0.58, rng.uniform(0.44, 0.5), rng.uniform(0.58, 0.66)), s * 0.03)
    img = 0.06 + 0.5 * body
    # lungs: two tall ellipses, the (image-)right one a bit shorter because of the heart
    dx = rng.uniform(-0.02, 0.02)
    lungs = np.maximum(
        _ellipse(h, w, 0.31 + dx, 0.46, rng.uniform(0.14, 0.17), rng.uniform(0.29, 0.33), rng.uniform(-6, 0)),
        _ellipse(h, w, 0.69 + dx, 0.45, rng.uniform(0.14, 0.17), rng.uniform(0.27, 0.31), rng.uniform(0, 6)),
    )
    lungs = _blur(lungs, s * 0.02)
    img -= 0.34 * lungs
    # mediastinum / spine: a bright central column
    spine = _blur(_ellipse(h, w, 0.5 + dx, 0.55, 0.055, 0.5), s * 0.02)
    img += 0.12 * spine
    # heart shadow, low and to the image right of the midline
    heart = _blur(_ellipse(h, w, 0.55 + dx, 0.62, rng.uniform(0.12, 0.14), rng.uniform(0.09, 0.11), rng.uniform(-20, -5)),
                  s * 0.015)
    img += 0.26 * heart * lungs + 0.08 * heart
    # ribs: curved bands across each lung, plus clavicles
    markings = np.zeros((h, w), np.float32)
    thick = max(1, int(s * 0.012))
    for k in range(10):
        y0 = 0.16 + k * 0.065 + rng.uniform(-0.01, 0.01)
        for side in (-1, 1):
            xs = np.linspace(0.5 + side * 0.05, 0.5 + side * 0.42, 24)
            ys = y0 + 0.10 * ((xs - 0.5) * side) - 0.25 * ((xs - 0.5) * side - 0.2) ** 2
            pts = np.stack([xs * w, ys * h], 1).astype(np.int32)
            cv2.polylines(markings, [pts], False, 0.9, thick)
    # vessels: thin branching lines from the hila
    for side in (-1, 1):
        hx, hy = 0.5 + side * 0.1, 0.46
        for _ in range(10):
            ang = rng.uniform(-np.pi * 0.9, np.pi * 0.9) if side > 0 else rng.uniform(np.pi * 0.1, np.pi * 1.9)
            length = rng.uniform(0.08, 0.22)
            ex, ey = hx + side * abs(np.cos(ang)) * length, hy + np.sin(ang) * length
            cv2.line(markings, (int(hx * w), int(hy * h)), (int(ex * w), int(ey * h)), 0.5, max(1, thick // 2))
    markings = _blur(markings, s * 0.004) * lungs
    img += 0.08 * markings
    clav = np.zeros((h, w), np.float32)
    for side in (-1, 1):
        pts = np.array([[(0.5 + side * 0.06) * w, 0.15 * h], [(0.5 + side * 0.32) * w, 0.11 * h]], np.int32)
        cv2.polylines(clav, [pts], False, 1.0, max(1, int(s * 0.02)))
    img += 0.1 * _blur(clav, s * 0.005)
    # low-frequency exposure variation, noise, contrast curve
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img += rng.uniform(-0.05, 0.05) * (xx / w - 0.5) + rng.uniform(-0.05, 0.05) * (yy / h - 0.5)
    img += rng.normal(0, 0.012, (h, w)).astype(np.float32)
    img = np.clip(img, 0, 1) ** rng.uniform(0.85, 1.15)
    return Anatomy(img.astype(np.float32), lungs.astype(np.float32), markings.astype(np.float32))


def finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Final fine-grain noise after lesions are drawn (so lesions are not noise-free)."""
    out = img + rng.normal(0, 0.008, img.shape).astype(np.float32)
    return np.clip(out, 0, 1).astype(np.float32)
