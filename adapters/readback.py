"""Reading back what a framework really trained with, from its built objects (framework-agnostic:
only torch). The protocol card shows these values instead of the settings the harness asked for."""
from __future__ import annotations

from collections import Counter
from typing import Any

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
