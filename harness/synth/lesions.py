"""Class-specific lesion appearance, drawn into a box of the chest background.

Each of the 14 classes has its own look, loosely after its radiological sign, so a detector can learn
to tell them apart: an enlarged heart shadow (cardiomegaly), a basal opacity with a meniscus (pleural
effusion), a small dense round spot (nodule), a dark lucent rim without lung markings
(pneumothorax), a reticular net (ILD), coarse streaks (fibrosis), etc.
`PRIORS` gives plausible positions and sizes (fractions of the image) for when no real template box
is available.
"""
from __future__ import annotations

import cv2
import numpy as np

from harness.synth.anatomy import Anatomy

# class id -> (centre x choices, centre y range, width range, height range) as image fractions
PRIORS: dict[int, tuple] = {
    0: ((0.57,), (0.28, 0.36), (0.08, 0.13), (0.08, 0.13)),  # Aortic enlargement: aortic knob
    1: ((0.3, 0.7), (0.55, 0.68), (0.12, 0.2), (0.06, 0.1)),  # Atelectasis
    2: ((0.3, 0.7), (0.3, 0.6), (0.04, 0.08), (0.04, 0.08)),  # Calcification
    3: ((0.55,), (0.6, 0.66), (0.34, 0.42), (0.16, 0.22)),  # Cardiomegaly
    4: ((0.3, 0.7), (0.45, 0.65), (0.12, 0.2), (0.12, 0.2)),  # Consolidation
    5: ((0.3, 0.7), (0.5, 0.65), (0.18, 0.24), (0.22, 0.32)),  # ILD
    6: ((0.3, 0.7), (0.35, 0.6), (0.12, 0.2), (0.12, 0.2)),  # Infiltration
    7: ((0.3, 0.7), (0.35, 0.6), (0.12, 0.2), (0.12, 0.2)),  # Lung Opacity
    8: ((0.28, 0.72), (0.3, 0.6), (0.04, 0.07), (0.04, 0.07)),  # Nodule/Mass
    9: ((0.3, 0.7), (0.3, 0.6), (0.07, 0.12), (0.07, 0.12)),  # Other lesion
    10: ((0.26, 0.74), (0.62, 0.68), (0.15, 0.2), (0.1, 0.15)),  # Pleural effusion: costophrenic angle
    11: ((0.3, 0.7), (0.17, 0.22), (0.1, 0.16), (0.05, 0.08)),  # Pleural thickening: apex
    12: ((0.2, 0.8), (0.3, 0.42), (0.12, 0.18), (0.3, 0.4)),  # Pneumothorax: lateral
    13: ((0.3, 0.7), (0.25, 0.38), (0.14, 0.2), (0.12, 0.18)),  # Pulmonary fibrosis: upper zones
}


def sample_box(cid: int, h: int, w: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A plausible box (pixels) for class `cid` from PRIORS."""
    xs, (y0, y1), (w0, w1), (h0, h1) = PRIORS[cid]
    cx = rng.choice(xs) + rng.uniform(-0.04, 0.04)
    cy = rng.uniform(y0, y1)
    bw, bh = rng.uniform(w0, w1), rng.uniform(h0, h1)
    x1, x2 = np.clip([cx - bw / 2, cx + bw / 2], 0.01, 0.99) * w
    y1, y2 = np.clip([cy - bh / 2, cy + bh / 2], 0.01, 0.99) * h
    return float(x1), float(y1), float(x2), float(y2)


def _layer(shape) -> np.ndarray:
    return np.zeros(shape, np.float32)


def _blur(layer: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(layer, (0, 0), max(sigma, 0.5))


def draw(anatomy: Anatomy, cid: int, box, rng: np.random.Generator) -> None:
    """Draw class `cid` into `box` (x1, y1, x2, y2 pixels) of anatomy.image, in place."""
    img = anatomy.image
    h, w = img.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = max(x2 - x1, 2.0), max(y2 - y1, 2.0)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    s = min(bw, bh)
    lay = _layer(img.shape)
    c = (int(cx), int(cy))
    axes = (max(1, int(bw / 2)), max(1, int(bh / 2)))
    lateral_left = cx < w / 2  # which side is the chest wall for this box
    if cid == 0:  # aortic enlargement: dense rounded bulge
        cv2.ellipse(lay, c, (max(1, int(bw * 0.45)), max(1, int(bh * 0.45))), 0, 0, 360, 1.0, -1)
        img += 0.24 * _blur(lay, s * 0.08)
    elif cid == 1:  # atelectasis: oblique plate-like band
        p1, p2 = (int(x1), int(y1 + 0.65 * bh)), (int(x2), int(y1 + 0.35 * bh))
        cv2.line(lay, p1, p2, 1.0, max(1, int(bh * 0.3)))
        img += 0.2 * _blur(lay, s * 0.1)
    elif cid == 2:  # calcification: a few small very dense dots
        for _ in range(int(rng.integers(3, 7))):
            p = (int(rng.uniform(x1 + 0.2 * bw, x2 - 0.2 * bw)), int(rng.uniform(y1 + 0.2 * bh, y2 - 0.2 * bh)))
            cv2.circle(lay, p, max(1, int(s * rng.uniform(0.06, 0.1))), 1.0, -1)
        img += 0.45 * _blur(lay, 0.6)
    elif cid == 3:  # cardiomegaly: enlarged heart shadow filling the box
        # the box spans the heart's width and height: a wide shadow filling it, its edges the box edges
        cv2.ellipse(lay, (int(cx), int(cy)), (max(1, int(bw * 0.5)), max(1, int(bh * 0.5))), 0, 0, 360, 1.0, -1)
        img += 0.3 * _blur(lay, s * 0.05) * (0.5 + 0.5 * anatomy.lungs)
    elif cid == 4:  # consolidation: dense lobulated blob with dark air bronchograms
        for _ in range(5):
            cv2.ellipse(lay, (int(cx + rng.uniform(-0.2, 0.2) * bw), int(cy + rng.uniform(-0.2, 0.2) * bh)),
                        (max(1, int(bw * rng.uniform(0.2, 0.32))), max(1, int(bh * rng.uniform(0.2, 0.32)))),
                        rng.uniform(0, 180), 0, 360, 1.0, -1)
        img += 0.3 * _blur(lay, s * 0.05)
        air = _layer(img.shape)
        for _ in range(3):
            a = rng.uniform(0, np.pi)
            d = np.array([np.cos(a), np.sin(a)]) * s * 0.3
            cv2.line(air, (int(cx - d[0]), int(cy - d[1])), (int(cx + d[0]), int(cy + d[1])), 1.0, max(1, int(s * 0.03)))
        img -= 0.12 * _blur(air, 0.8) * lay
    elif cid == 5:  # ILD: reticular net inside an elliptic region
        step = max(3, int(s * 0.12))
        for x in range(int(x1), int(x2), step):
            cv2.line(lay, (x + int(rng.integers(-2, 3)), int(y1)), (x + int(rng.integers(-2, 3)), int(y2)), 1.0, 1)
        for y in range(int(y1), int(y2), step):
            cv2.line(lay, (int(x1), y + int(rng.integers(-2, 3))), (int(x2), y + int(rng.integers(-2, 3))), 1.0, 1)
        region = _layer(img.shape)
        cv2.ellipse(region, c, axes, 0, 0, 360, 1.0, -1)
        img += (0.14 * _blur(lay, 0.7) + 0.05) * _blur(region, s * 0.08)
    elif cid == 6:  # infiltration: patchy, mottled opacity
        noise = rng.random((max(2, int(bh / 6)), max(2, int(bw / 6)))).astype(np.float32)
        patch = cv2.resize(noise, (int(bw), int(bh)), interpolation=cv2.INTER_CUBIC)
        patch = (patch > 0.55).astype(np.float32)
        ys, xs = slice(int(y1), int(y1) + patch.shape[0]), slice(int(x1), int(x1) + patch.shape[1])
        lay[ys, xs] = patch[: lay[ys, xs].shape[0], : lay[ys, xs].shape[1]]
        region = _layer(img.shape)
        cv2.ellipse(region, c, axes, 0, 0, 360, 1.0, -1)
        img += 0.17 * _blur(lay * region, s * 0.04)
    elif cid == 7:  # lung opacity: smooth hazy ground-glass
        yy, xx = np.ogrid[0:h, 0:w]
        g = np.exp(-(((xx - cx) / (0.4 * bw)) ** 2 + ((yy - cy) / (0.4 * bh)) ** 2)).astype(np.float32)
        img += 0.17 * g
    elif cid == 8:  # nodule/mass: small, round, dense, sharp
        cv2.circle(lay, c, max(1, int(s * 0.42)), 1.0, -1)
        img += 0.34 * _blur(lay, max(0.6, s * 0.04))
    elif cid == 9:  # other lesion: a ring shadow
        r = max(2, int(s * 0.4))
        cv2.circle(lay, c, r, 1.0, max(1, int(r * 0.25)))
        img += 0.26 * _blur(lay, s * 0.03)
    elif cid == 10:  # pleural effusion: basal opacity with a meniscus rising laterally
        xs = np.arange(int(x1), int(x2) + 1)
        t = np.clip((xs - x1) / bw, 0.0, 1.0)
        t = 1 - t if not lateral_left else t  # 0 at the chest wall
        top = y1 + bh * (0.05 + 0.55 * t ** 1.5)  # high at the wall, lower medially
        pts = np.concatenate([np.stack([xs, top], 1), [[x2, y2 + bh * 0.1], [x1, y2 + bh * 0.1]]]).astype(np.int32)
        cv2.fillPoly(lay, [pts], 1.0)
        img += 0.36 * _blur(lay, s * 0.05)
    elif cid == 11:  # pleural thickening: dense cap along the apex / wall
        cv2.ellipse(lay, (int(cx), int(y2)), (max(1, int(bw * 0.5)), max(1, int(bh * 0.9))), 0, 180, 360, 1.0,
                    max(1, int(bh * 0.35)))
        img += 0.26 * _blur(lay, s * 0.06)
    elif cid == 12:  # pneumothorax: lucent rim without lung markings, thin pleural line medially
        wall_x = x1 if lateral_left else x2
        cv2.ellipse(lay, (int(wall_x), int(cy)), (max(1, int(bw * 0.8)), max(1, int(bh * 0.5))), 0, 0, 360, 1.0, -1)
        box_mask = _layer(img.shape)
        box_mask[int(y1):int(y2) + 1, int(x1):int(x2) + 1] = 1.0
        lucent = _blur(lay * box_mask, s * 0.02)
        img -= lucent * (0.08 * anatomy.markings + 0.1)
        edge = cv2.Canny((lay * box_mask * 255).astype(np.uint8), 50, 150).astype(np.float32) / 255.0
        img += 0.12 * _blur(edge * (anatomy.lungs > 0.3), 0.6)
    elif cid == 13:  # pulmonary fibrosis: coarse irregular streaks
        for _ in range(int(rng.integers(6, 11))):
            p = np.array([rng.uniform(x1, x2), rng.uniform(y1, y2)])
            a = rng.uniform(0, np.pi)
            d = np.array([np.cos(a), np.sin(a)]) * s * rng.uniform(0.15, 0.35)
            q1, q2 = np.clip(p - d, [x1, y1], [x2, y2]), np.clip(p + d, [x1, y1], [x2, y2])
            cv2.line(lay, tuple(int(v) for v in q1), tuple(int(v) for v in q2), 1.0, max(1, int(s * 0.04)))
        img += 0.22 * _blur(lay, 0.8)
    else:
        raise ValueError(f"unknown class id {cid}")
    np.clip(img, 0, 1, out=img)
