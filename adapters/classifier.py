"""The normal-vs-abnormal classifier of the "No finding" stage: a torchvision backbone
(ResNet-18/34/50, EfficientNet-B0..B3, B6) with one logit, P(abnormal) = sigmoid(logit).

It runs inside the same job machinery as the detectors (same split and folds, Hydra groups, offline
guard, failure handling, resumable checkpoints): an image is "abnormal" when the split's COCO file
gives it at least one finding box. Unlike the detectors it always trains on every image of the
fold (the normal images are its negative class), whatever `train.negatives` says.

- Input: the prepared grayscale PNGs (8- or 16-bit), resized to `train.imgsz` square, scaled to
  [0, 1], normalised with ImageNet's mean/std averaged over RGB; `train.channels=3` repeats the gray
  channel (the ImageNet stem unchanged), `1` sums the pretrained stem's kernels over RGB.
- Weights: from scratch, or a local torchvision ImageNet checkpoint (`train.weights=imagenet`, from
  the registry, or a file): every tensor of matching name and shape is loaded, the 1000-class head
  is re-initialised (recorded in metrics.json `init`).
- Augmentation: the shared spec (random rotation, horizontal and vertical flips).
- Recipe: BCE loss, the TrainSpec's optimizer (SGD with momentum 0.9, Adam or AdamW), lr with a
  cosine decay per iteration, weight decay, `train.seed`, `train.device`, AMP on CUDA when
  `train.amp`. Checkpoints every `train.checkpoint_interval` epochs (model, optimizer, scheduler,
  RNG), resumed by a rerun like the detectors' (adapters.resume).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from adapters.base import Adapter, trusted_load
from adapters.readback import init_report
from adapters.images import unreadable_reason
from adapters.spec import TrainSpec
from harness import atomic
from harness.split import ImageRef, Split

log = logging.getLogger(__name__)

VARIANTS = ("resnet18", "resnet34", "resnet50", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
            "efficientnet_b3", "efficientnet_b6")
MEAN, STD = 0.449, 0.226  # ImageNet's mean/std, averaged over R, G, B


def load_gray(path: Path, size: int) -> np.ndarray:
    """A PNG as float32 (size, size) in [0, 1] (8-bit / 255, 16-bit / 65535, colour -> luminance)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float32) / 65535.0
        else:
            arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    resized = Image.fromarray(arr, mode="F").resize((size, size), Image.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def augment(x: np.ndarray, aug, rng: np.random.Generator) -> np.ndarray:
    """The shared augmentation on one (H, W) image: h/v flips, rotation in [-deg, deg] (bilinear,
    zero fill)."""
    if aug.hflip and rng.random() < aug.hflip:
        x = x[:, ::-1]
    if aug.vflip and rng.random() < aug.vflip:
        x = x[::-1, :]
    if aug.rotate_deg:
        from PIL import Image

        angle = float(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
        x = np.array(Image.fromarray(np.ascontiguousarray(x), mode="F").rotate(angle, Image.BILINEAR), np.float32)
    return np.ascontiguousarray(x)


class TrainImages:
    """The training images as a map-style dataset (any object with __len__/__getitem__ serves
    torch's DataLoader, so this module imports no torch at import time): (1, S, S) float32 in [0, 1]
    and the 0/1 label; the augmentation draws from a generator seeded by (seed, epoch, index), the
    same whichever worker decodes the image."""

    def __init__(self, paths: list[Path], labels: list[int], size: int, aug, seed: int):
        self.paths, self.labels, self.size, self.aug, self.seed = paths, labels, size, aug, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, k: int):
        rng = np.random.default_rng([self.seed, self.epoch, k])
        x = augment(load_gray(self.paths[k], self.size), self.aug, rng)
        return x[None], np.float32(self.labels[k])


def abnormal_targets(coco_json: Path) -> dict[int, int]:
    import json

    from harness.nofinding import abnormal_labels

    return abnormal_labels(json.loads(Path(coco_json).read_text()))


class TorchvisionClassifier(Adapter):
    """P(abnormal) per image; the classifier kind of adapter (fit / predict / versions)."""

    name = "classifier"
    kind = "classifier"
    framework = "torchvision"
    default_variant = "resnet18"
    variants = VARIANTS

    def __init__(self, spec: TrainSpec):
        super().__init__(spec)
        self.recipe: dict[str, Any] = {}

    # -- the model ----------------------------------------------------------------------------
    def build(self, pretrained: bool = True):
        import torch
        import torchvision

        model = torchvision.models.get_model(self.spec.variant, weights=None, num_classes=1)
        state = None
        if pretrained and self.spec.weights:
            state = torch.load(self.spec.weights, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            own = model.state_dict()
            usable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
            model.load_state_dict(usable, strict=False)
        if self.spec.channels == 1:
            self._one_channel_stem(model)
            if state is not None:
                state = {**state, **{k: v.sum(dim=1, keepdim=True) for k, v in state.items()
                                     if k in self._stem_keys(model)}}
        if pretrained:
            self.init = init_report(model.state_dict(), state, self.spec.weights)
        return model

    @staticmethod
    def _stem(model):
        if hasattr(model, "conv1"):  # ResNet
            return model, "conv1"
        return model.features[0], "0"  # EfficientNet: features[0] = Conv2dNormActivation, [0] its conv

    def _stem_keys(self, model) -> set[str]:
        return {"conv1.weight"} if hasattr(model, "conv1") else {"features.0.0.weight"}

    def _one_channel_stem(self, model) -> None:
        import torch

        parent, attr = self._stem(model)
        conv = getattr(parent, attr) if attr != "0" else parent[0]
        new = torch.nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
        with torch.no_grad():
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if attr == "0":
            parent[0] = new
        else:
            setattr(parent, attr, new)

    def _device(self):
        import torch

        device = str(self.spec.device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"train.device={device} but CUDA is not available (torch {torch.__version__})")
        return torch.device(device)

    def _normalise(self, x, device):
        x = (x.to(device) - MEAN) / STD
        return x.expand(-1, 3, -1, -1).contiguous() if self.spec.channels == 3 else x

    def _batch(self, refs: Sequence[ImageRef], device):
        import torch

        return self._normalise(torch.from_numpy(np.stack([load_gray(r.path, self.spec.imgsz) for r in refs])[:, None]),
                               device)

    # -- training -----------------------------------------------------------------------------
    def _loader(self, items: "TrainImages", epoch: int, bs: int):
        """One epoch's batches: shuffled by a generator seeded from (seed, epoch), so a resumed run
        draws the same order; `train.workers` processes decode the PNGs."""
        import torch

        items.epoch = epoch
        generator = torch.Generator().manual_seed(self.spec.seed * 100_003 + epoch)
        return torch.utils.data.DataLoader(items, batch_size=bs, shuffle=True, drop_last=len(items) > bs,
                                           num_workers=int(self.spec.workers), generator=generator,
                                           pin_memory=str(self.spec.device).startswith("cuda"))

    def fit(self, split: Split, workdir: Path) -> Path:
        import torch

        spec, workdir = self.spec, Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(spec.seed)
        targets = abnormal_targets(split.train_json)
        refs = [ref for ref in split.images("train") if ref.id in targets]
        usable = []
        for ref in refs:
            reason = unreadable_reason(ref.path)
            if reason:
                log.error("classifier: skipping training image %s (id %s): %s", ref.path, ref.id, reason)
            else:
                usable.append(ref)
        if len(usable) < 2 or len({targets[r.id] for r in usable}) < 2:
            raise ValueError(f"{split.train_json}: the classifier needs normal and abnormal training images "
                             f"({sum(targets[r.id] for r in usable)} abnormal of {len(usable)} usable)")
        self.consumed = {"images": len(usable), "boxes": 0, "abnormal": int(sum(targets[r.id] for r in usable))}
        device = self._device()
        model = self.build(pretrained=True).to(device)
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            (no_decay if param.ndim <= 1 else decay).append(param)
        groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if spec.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=spec.lr, momentum=0.9, nesterov=True)
        elif spec.optimizer == "adam":
            optimizer = torch.optim.Adam(groups, lr=spec.lr)
        else:
            optimizer = torch.optim.AdamW(groups, lr=spec.lr)
        bs = max(1, min(spec.batch_size, len(usable)))
        per_epoch = max(1, len(usable) // bs)  # full batches only (BatchNorm needs > 1 sample)
        total = per_epoch * spec.epochs
        warmup = min(per_epoch, max(1, total // 10))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: min(1.0, (it + 1) / warmup) * 0.5 * (
            1 + math.cos(math.pi * min(it, total) / total)))
        self.recipe = {"optimizer": spec.optimizer, "lr": spec.lr, "weight_decay": spec.weight_decay,
                       "norm_decay": 0.0, "schedule": "linear warmup then cosine per iteration",
                       "warmup_iters": warmup, "iterations": total, "batch": bs, "loss": "BCE with logits",
                       "momentum": 0.9 if spec.optimizer == "sgd" else None}
        items = TrainImages([r.path for r in usable], [targets[r.id] for r in usable], spec.imgsz, spec.aug, spec.seed)
        use_amp = bool(spec.amp) and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        key = self.training_key(split.split_hash)
        start_epoch = self._resume(split, workdir, model, optimizer, scheduler)
        path_last = workdir / "last.pt"
        for epoch in range(start_epoch, spec.epochs):
            model.train()
            losses = []
            for images, labels in self._loader(items, epoch, bs):
                x = self._normalise(images, device)
                y = labels.to(device=device, dtype=torch.float32)
                with torch.autocast(device_type=device.type, enabled=use_amp):
                    loss = loss_fn(model(x).squeeze(1).float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                losses.append(float(loss.detach()))
            log.info("classifier %s: epoch %d/%d, loss %.4f, lr %.2e", spec.variant, epoch + 1, spec.epochs,
                     float(np.mean(losses)), optimizer.param_groups[0]["lr"])
            if (epoch + 1) % spec.checkpoint_interval == 0 or epoch + 1 == spec.epochs:
                self._save(path_last, model, optimizer, scheduler, epoch + 1, key)
            self.epoch_done(workdir, workdir.parent, epoch + 1, spec.epochs)
        final = workdir / "classifier.pt"
        with atomic.atomic_path(final) as tmp:
            torch.save({"model": model.state_dict(), "variant": spec.variant, "channels": spec.channels,
                        "imgsz": spec.imgsz}, tmp)
        return final

    def _save(self, path: Path, model, optimizer, scheduler, epoch: int, key: str) -> None:
        import torch

        with atomic.atomic_path(path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "torch_rng": torch.get_rng_state(), "epoch": epoch}, tmp)
        self.checkpoint_saved(path, key, epoch, self.spec.epochs)

    def _resume(self, split: Split, workdir: Path, model, optimizer, scheduler) -> int:
        import torch

        point = self.resume_point(split, workdir, trusted_load)
        if point is None:
            return 0
        state = trusted_load(point.checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        log.info("classifier: resume: continuing from %s (epoch %d of %d)", point.checkpoint, point.epoch, point.epochs)
        return int(state["epoch"])

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, checkpoint: Path | None, images: Sequence[ImageRef], workdir: Path | None = None) -> dict[int, float]:
        """{image id: P(abnormal)} for every readable image (unreadable ones are named in the log
        and in `failed_images`); checkpoint None = the untrained (seeded) model."""
        import torch

        self.failed_images = []
        device = self._device()
        torch.manual_seed(self.spec.seed)
        model = self.build(pretrained=False)
        if checkpoint is not None:
            model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"])
        model.to(device).eval()
        usable = []
        for ref in images:
            reason = unreadable_reason(ref.path)
            if reason:
                log.error("classifier: cannot predict image %s (id %s): %s", ref.path, ref.id, reason)
                self.failed_images.append((str(ref.path), reason))
            else:
                usable.append(ref)
        out: dict[int, float] = {}
        bs = max(1, int(self.spec.batch_predict))
        with torch.no_grad():
            for start in range(0, len(usable), bs):
                batch = usable[start:start + bs]
                try:
                    probs = torch.sigmoid(model(self._batch(batch, device)).squeeze(1).float()).cpu().numpy()
                except Exception as err:  # noqa: BLE001 - one bad file must not lose the rest
                    for ref in batch:
                        self.failed_images.append((str(ref.path), f"{type(err).__name__}: {err}"))
                    continue
                out.update({ref.id: float(p) for ref, p in zip(batch, probs)})
        if images and not out:
            raise RuntimeError(f"the classifier could not use any of the {len(images)} images: {self.failed_images[:3]}")
        return out
