"""Reading back what a framework really trained and predicted with, from its built objects
(framework-agnostic: only torch), and the one record every framework fills (`ReadBack`: each value a
`Read` naming the object it came from, None where nothing was read). Each framework package's
`readback` module fills it; `Detector.protocol` turns it into the card's rows."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class Read:
    """A value read back from a framework, and the resolved object it was read from
    (`trainer.cfg.SOLVER.MAX_ITER`, `predictor.imgsz`, the built mapper's ResizeShortestEdge ...)."""

    value: Any
    source: str


@dataclass
class ReadBack:
    """What a framework ran, read back (None: not read back, e.g. no fit in this process). Training:
    consumed (images/boxes of its built training set), negatives, train_size, train_channels,
    augmentation (the shared one: rotate_deg/hflip/vflip), seed, init (the weights it was given: a file
    name, "" for none), processes, recipe (recipe key -> Read: `card.RECIPE_LABELS`), details (what the
    architecture row names: head, backbone_norm ...). Prediction: test_size, test_channels, score_thr,
    max_det, nms_iou, multi_label, tta (the framework's own test-time augmentation)."""

    consumed: Read | None = None
    negatives: Read | None = None
    train_size: Read | None = None
    train_channels: Read | None = None
    augmentation: Read | None = None
    seed: Read | None = None
    init: Read | None = None
    processes: Read | None = None
    test_size: Read | None = None
    test_channels: Read | None = None
    score_thr: Read | None = None
    max_det: Read | None = None
    nms_iou: Read | None = None
    multi_label: Read | None = None
    tta: Read | None = None
    recipe: dict[str, Read] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def update(self, **reads: Any) -> None:
        """Set fields (a Read each; `recipe`/`details`: dicts merged into the record's)."""
        names = {f.name for f in fields(self)}
        for name, value in reads.items():
            if name not in names:
                raise TypeError(f"ReadBack has no field {name!r}")
            if name in ("recipe", "details"):
                getattr(self, name).update(value)
            else:
                if value is not None and not isinstance(value, Read):
                    raise TypeError(f"ReadBack.{name} must be a Read, not {type(value).__name__}")
                setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (the data-parallel round trip: rank 0 -> the job's process)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "recipe":
                out[f.name] = {k: [r.value, r.source] for k, r in value.items()}
            elif f.name == "details":
                out[f.name] = dict(value)
            else:
                out[f.name] = None if value is None else [value.value, value.source]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReadBack":
        out = cls()
        for f in fields(cls):
            value = data.get(f.name)
            if f.name == "recipe":
                out.recipe = {k: Read(*v) for k, v in (value or {}).items()}
            elif f.name == "details":
                out.details = dict(value or {})
            elif value is not None:
                setattr(out, f.name, Read(*value))
        return out

NORM_TYPES = ("BatchNorm", "GroupNorm", "LayerNorm", "SyncBatchNorm", "InstanceNorm")


def _most_common(values: list) -> Any:
    return Counter(values).most_common(1)[0][0] if values else None


def optimizer_settings(optimizer, model) -> dict[str, Any]:
    """The optimizer a framework built, per kind of parameter: its type and momentum, the initial
    learning rate and weight decay of the weights, and the decay on norm-layer weights and on biases
    (each the most common value over those parameters' groups)."""
    model = getattr(model, "module", model)
    kinds: dict[int, str] = {}
    for module in model.modules():
        is_norm = any(name in type(module).__name__ for name in NORM_TYPES)
        for name, param in module.named_parameters(recurse=False):
            kinds[id(param)] = "norm" if is_norm else "bias" if name == "bias" else "weight"
    seen: dict[str, dict[str, list]] = {kind: {"lr": [], "decay": []} for kind in ("weight", "norm", "bias")}
    momentum = []
    for group in optimizer.param_groups:
        lr = float(group.get("initial_lr", group["lr"]))
        decay = float(group.get("weight_decay", 0.0))
        for param in group["params"]:
            kind = kinds.get(id(param))
            if kind is not None and param.requires_grad:
                seen[kind]["lr"].append(lr)
                seen[kind]["decay"].append(decay)
        if "momentum" in group:
            momentum.append(float(group["momentum"]))
        elif "betas" in group:
            momentum.append(float(group["betas"][0]))
    name = type(optimizer).__name__
    for base in type(optimizer).__mro__:  # wrappers (e.g. detectron2's clipping subclass) -> torch's class
        if base.__module__.startswith("torch.optim"):
            name = base.__name__
            break
    return {"type": name, "momentum": _most_common(momentum), "lr": _most_common(seen["weight"]["lr"]),
            "weight_decay": _most_common(seen["weight"]["decay"]), "norm_decay": _most_common(seen["norm"]["decay"]),
            "bias_decay": _most_common(seen["bias"]["decay"])}


def optimizer_text(settings: dict[str, Any]) -> str:
    """`SGD(momentum 0.9)`, `AdamW(beta1 0.9)` ..."""
    kind, momentum = settings.get("type"), settings.get("momentum")
    if momentum is None:
        return str(kind)
    return f"{kind}({'momentum' if kind == 'SGD' else 'beta1'} {momentum:g})"


def input_channels(model) -> int | None:
    """The image channels the network was built to read: the fewest input channels of any of its
    convolutions (the stem's; every later layer reads feature maps)."""
    import torch

    found = [int(m.in_channels) for m in getattr(model, "module", model).modules() if isinstance(m, torch.nn.Conv2d)]
    return min(found) if found else None


class GradClipRecorder:
    """While active, records the max-norm of every `torch.nn.utils.clip_grad_norm_` call (what a
    framework really clips at, where it calls torch's function at run time)."""

    def __init__(self) -> None:
        self.max_norms: set[float] = set()
        self._original = None

    def __enter__(self) -> "GradClipRecorder":
        import torch

        original = self._original = torch.nn.utils.clip_grad_norm_

        def recorder(parameters, max_norm, *args, **kwargs):
            self.max_norms.add(float(max_norm))
            return original(parameters, max_norm, *args, **kwargs)

        torch.nn.utils.clip_grad_norm_ = recorder
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.nn.utils.clip_grad_norm_ = self._original

    def text(self) -> str:
        return ", ".join(f"max norm {v:g}" for v in sorted(self.max_norms)) or "none"


def init_report(model_state: Mapping[str, Any], checkpoint_state: Mapping[str, Any] | None,
                weights: str | None) -> dict[str, Any]:
    """Which tensors of a model about to train equal the checkpoint's tensor of the same name and
    shape (`loaded`), and which do not (`reinitialised`: absent, other shape, or other values)."""
    import numpy as np
    import torch

    if checkpoint_state is None:
        return {"weights": None, "loaded": 0, "total": len(model_state), "reinitialised": [], "checkpoint_unused": []}
    loaded, reinitialised = [], []
    for key, value in model_state.items():
        source = checkpoint_state.get(key)
        if source is not None and not isinstance(source, torch.Tensor):
            source = torch.as_tensor(np.asarray(source))
        same_tensor = (source is not None and tuple(source.shape) == tuple(value.shape)
                       and torch.equal(value.detach().cpu().float(), source.detach().cpu().float()))
        (loaded if same_tensor else reinitialised).append(key)
    return {"weights": Path(str(weights)).name if weights else None, "loaded": len(loaded),
            "total": len(model_state), "reinitialised": reinitialised,
            "checkpoint_unused": sorted(set(checkpoint_state) - set(model_state))}
