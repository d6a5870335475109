"""Turning a composed Hydra config into the objects the steps need, with clear errors."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from adapters import REGISTRY, WEIGHTS_FORMATS
from adapters.base import AugSpec, TrainSpec
from adapters.classifier import VARIANTS
from adapters.resume import NOT_IN_KEY
from harness.classes import label_set
from harness.digest import file_sha256_cached
from harness.weights import formats, registry


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and what is allowed."""


def to_plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def model_settings(cfg: DictConfig) -> tuple[str, str, dict]:
    """(model name, variant, train settings) after applying cfg.per_model[<name>] on top."""
    name = cfg.model.name
    if name not in REGISTRY:
        raise ConfigError(f"model={name!r} is not a known model; choose one of {', '.join(sorted(REGISTRY))}")
    per = to_plain(cfg.per_model.get(name)) or {}
    unknown = set(per) - {"variant", "train", "native", "reasons"}
    if unknown:
        raise ConfigError(f"per_model.{name} has unknown keys {sorted(unknown)}; allowed: variant, train, native, reasons")
    train = {**to_plain(cfg.train), **{k: v for k, v in (per.get("train") or {}).items() if v is not None}}
    variant = per.get("variant") or cfg.model.variant
    reasons = {**(to_plain(cfg.model.get("reasons")) or {}), **(per.get("reasons") or {})}
    return name, variant, {**train, "native": {**to_plain(cfg.model.native), **(per.get("native") or {})},
                           "reasons": {str(k): str(v) for k, v in reasons.items()}}


def train_spec(cfg: DictConfig) -> TrainSpec:
    """The adapter's TrainSpec; type and value errors name the offending `train.*` key."""
    name, variant, train = model_settings(cfg)
    typed = OmegaConf.structured(TrainSpec)
    try:
        merged = OmegaConf.merge(typed, {**train, "variant": variant, "aug": to_plain(cfg.aug)})
    except Exception as err:  # omegaconf ValidationError / ConfigKeyError carry the key path
        raise ConfigError(f"invalid training setting for model {name}: {err}") from err
    values = OmegaConf.to_container(merged, resolve=True)
    values["aug"] = AugSpec(**values["aug"])
    values["classes"] = list(data_label_set(cfg.data).classes)
    requested = values["weights"]
    values["weights"] = resolve_weights(cfg, name, variant, requested)
    registry_names = (to_plain(cfg.get("pretrained")) or {}).get("registry") or {}
    values["weights_name"] = requested if values["weights"] and requested in registry_names else None
    if values["gpus"] < 1:
        raise ConfigError(f"train.gpus={values['gpus']}: must be >= 1")
    if values["epochs"] < 1 or values["batch_size"] < 1 or values["imgsz"] < 32:
        raise ConfigError("train.epochs and train.batch_size must be >= 1 and train.imgsz >= 32")
    device = str(values["device"])
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ConfigError(f"train.device={device!r}: use cpu, cuda or cuda:N")
    try:
        return TrainSpec(**values)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from err


def data_label_set(data: DictConfig):
    """The dataset's label set (`data.label_set`; VinBigData's when the data config has none)."""
    try:
        return label_set(data.get("label_set"))
    except ValueError as err:
        raise ConfigError(f"data.label_set: {err}") from err


def resolve_weights(cfg: DictConfig, name: str, variant: str, value):
    """`train.weights` (a registry name such as `coco`, a local file, or null) -> a local file or
    None, offline; a registry file not fetched yet, or a file in another framework's format, is a
    ConfigError that says what to do."""
    pretrained = to_plain(cfg.get("pretrained")) or {}
    reg = pretrained.get("registry") or {}
    try:
        path = registry.resolve(value, name, variant, reg, pretrained.get("cache_dir") or ".",
                                fetch_hint=f"cxr-weights {value}/{name}/{variant}")
        if path is not None:
            formats.check_format(path, WEIGHTS_FORMATS[name], name)
    except (registry.UnknownWeights, FileNotFoundError, ValueError) as err:
        raise ConfigError(f"per_model.{name}.train.weights={value}: {err}") from err
    return path


# where the data lives, not what it is: its content enters a job's identity through the split hash
# (labels + folds; harness.jobs.train_job checks it before skipping a finished job)
DATA_LOCATIONS = ("raw_dir", "prepared_dir")


def weights_identity(cfg: DictConfig) -> dict | None:
    """What the job's `train.weights` (after per_model) are by content: {"sha256"} of the resolved
    file, None from scratch, {"unresolved": value} when the file cannot be found (the job then fails
    with the message train_spec gives)."""
    try:
        name, variant, train = model_settings(cfg)
    except ConfigError:
        return {"unresolved": str(to_plain(cfg.train).get("weights"))}
    value = train.get("weights")
    pretrained = to_plain(cfg.get("pretrained")) or {}
    try:
        path = registry.resolve(value, name, variant, pretrained.get("registry") or {},
                                pretrained.get("cache_dir") or ".")
    except (registry.UnknownWeights, FileNotFoundError, ValueError):
        return {"unresolved": str(value)}
    if path is None:
        return None
    return {"sha256": file_sha256_cached(path)}


def config_hash(cfg: DictConfig, with_fold: bool = True) -> str:
    """Hash of what a job computes (not where it is written, nor how it runs), to skip finished jobs
    and to resume only checkpoints of the same config. Identity by content, not location: the
    data's folders are left out (the split hash stands for the data) and the weights enter as their
    sha256, so moving the project changes nothing and new bytes at the same weights path do.
    Left out as well: `data.workers`, the checkpoint settings and the run settings (`train.workers`,
    `train.device`, `train.gpus`, `train.batch_predict`; also under `per_model.<name>.train`): a rerun
    with more workers or on two GPUs instead of one skips finished jobs and resumes interrupted ones
    (harness.jobs.run_settings records them; they can still change the numbers slightly:
    harness.run_effects). `with_fold=False`: the same without `data.fold`, one value for all folds of
    a sweep's model (the report flags a fold whose value differs: `sweep_config_hash`)."""
    relevant = {key: to_plain(cfg[key]) for key in ("data", "model", "train", "aug", "tta_hflip")}
    per_model = to_plain(cfg.per_model.get(cfg.model.name))
    relevant["per_model"] = per_model
    relevant["data"].pop("workers", None)
    for key in DATA_LOCATIONS:
        relevant["data"].pop(key, None)
    relevant["weights"] = weights_identity(cfg)
    if not with_fold:
        relevant["data"].pop("fold", None)
    for holder in (relevant["model"], per_model or {}):  # why a setting is overridden: same result
        holder.pop("reasons", None)
    trains = [relevant["train"]] + ([per_model["train"]] if isinstance(per_model, dict)
                                    and isinstance(per_model.get("train"), dict) else [])
    for train in trains:
        for key in NOT_IN_KEY:
            train.pop(key, None)
        train.pop("weights", None)  # by content: relevant["weights"]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def job_config(cfg: DictConfig) -> dict:
    """The resolved settings that define a job (what `predict` needs to rebuild its detector)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return {key: resolved[key] for key in ("data", "model", "train", "aug", "per_model", "tta_hflip",
                                           "offline_guard", "fail_fast", "skip_finished", "nofinding")
            if key in resolved}


def pipeline_jobs(cfg: DictConfig, overrides: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(models the pipeline trains, extra overrides for the train step): `pipeline.models`, plus the
    "No finding" classifier when `pipeline.classifier` names a variant (per_model.classifier.variant)."""
    models = [str(m) for m in cfg.pipeline.models]
    extra: list[str] = []
    variant = cfg.pipeline.get("classifier")
    if variant:
        if str(variant) not in VARIANTS:
            raise ConfigError(f"pipeline.classifier={variant!r}; choose one of {', '.join(VARIANTS)} (or null)")
        if "classifier" not in models:
            models.append("classifier")
        if not any(o.startswith("per_model.classifier.variant=") for o in overrides or []):
            extra.append(f"per_model.classifier.variant={variant}")
    return models, extra
