"""Protocol-card rows: how an adapter states a setting, where its value came from (`source`: read back
from a named framework object, applied by the harness, or only asked: `harness.provenance`), what the
harness asked for, the framework's native default and why they differ. The card
(`harness.report.protocol`) reads these rows from metrics.json.

A row's note is a *reason*. Where the value differs from what the harness asked, only the reason given
for the `native` key that caused it explains it (`asked_reason`); without one the row is flagged
("unexplained"). Where the value is what the harness asked, the harness's own note explains a
deviation from the native default (rows without a native default keep their note as a description).
For dict-valued settings (a framework's augmentation, the `native` overrides) every key that differs
needs its own reason; keys without one are listed in the row's "unexplained" field, which the card flags.
"""
from __future__ import annotations

from typing import Any, Mapping

from harness.compare import same
from harness.provenance import ASKED, READ, RECIPE

# one label per recipe key, for every framework
RECIPE_LABELS = {
    "architecture": "architecture",
    "epochs": "epochs",
    "iterations": "iterations (batches)",
    "batch_size": "batch",
    "optimizer": "optimizer",
    "lr": "learning rate",
    "schedule": "lr schedule",
    "warmup": "warmup",
    "weight_decay": "weight decay",
    "norm_decay": "weight decay on norm layers",
    "grad_clip": "gradient clipping",
    "framework_aug": "framework's own augmentation",
}
RAN_NOT_ASKED = "ran other than asked"  # the "unexplained" entry of a row whose value is not what was asked


def protocol_row(key: str, label: str, value: Any, native: Any = None, scope: str = RECIPE, note: str = "",
                 reasons: Mapping[str, str] | None = None, *, source: str = ASKED, read_from: str = "",
                 asked: Any = None, asked_reason: str = "") -> dict:
    """One line of the protocol card. `source`/`read_from`: where `value` came from
    (`harness.provenance`; by default "asked": a row is never confirmed unless its builder says so); `asked`: the harness's setting (None: it asks nothing); `asked_reason`: the
    reason given for the `native` key(s) that make the value differ from `asked`. `note` explains a
    deviation from `native` (kept only when the value deviates, or as a description when there is no
    native default); `reasons` explains a dict value key by key."""
    row = {"key": key, "label": label, "value": value, "native": native, "scope": scope, "note": "",
           "source": source, "read_from": read_from, "asked": asked}
    if asked is not None and not same(value, asked):
        row["note"] = asked_reason
        if not asked_reason:
            row["unexplained"] = [RAN_NOT_ASKED]
        return row
    if native is None:
        row["note"] = note
        return row
    if same(value, native):
        return row
    if reasons is not None and isinstance(value, dict) and isinstance(native, dict):
        off = [k for k in dict.fromkeys([*native, *value]) if not same(value.get(k), native.get(k))]
        row["note"] = "; ".join(f"{k}: {reasons[k]}" for k in off if reasons.get(k))
        missing = [k for k in off if not reasons.get(k)]
        if missing:
            row["unexplained"] = missing
    else:
        row["note"] = note
    return row


def read_row(key: str, label: str, read: Any, asked: Any = None, **kwargs: Any) -> dict:
    """A row from a `readback.Read` (None: not read back, so the value shown is `asked`, marked so)."""
    if read is None:
        return protocol_row(key, label, asked, source=ASKED, asked=asked, **kwargs)
    return protocol_row(key, label, read.value, source=READ, read_from=read.source, asked=asked, **kwargs)


def recipe_rows(reads: Mapping[str, Any], natives: Mapping[str, Any], notes: Mapping[str, str],
                reasons: Mapping[str, Mapping[str, str]] | None = None, asked: Mapping[str, Any] | None = None,
                asked_reasons: Mapping[str, str] | None = None) -> list[dict]:
    """A framework's training recipe as rows, in RECIPE_LABELS order: `reads` as read back from the
    framework (key -> readback.Read), `natives` its own defaults, `notes` the reason for each deviation,
    `asked` what the harness asked (a key not read back shows that, marked "asked"; with nothing asked
    either, "–"; every recipe key has a row), `asked_reasons` the reasons of the native keys behind each
    recipe key."""
    reasons, asked, asked_reasons = reasons or {}, asked or {}, asked_reasons or {}
    return [read_row(key, label, reads.get(key), asked.get(key), native=natives.get(key), note=notes.get(key, ""),
                     reasons=reasons.get(key), asked_reason=asked_reasons.get(key, ""))
            for key, label in RECIPE_LABELS.items()]


def native_reason(spec, native_keys: tuple[str, ...]) -> str:
    """The reasons given (spec.reasons) for the `native` overrides among `native_keys` (a key ending in
    "." matches every key under it) that the spec sets: what explains a value other than asked."""
    keys = [k for k in spec.native if any(k == n or (n.endswith(".") and k.startswith(n)) for n in native_keys)]
    return "; ".join(f"{k}: {spec.reasons[k]}" for k in keys if spec.reasons.get(k))


def size_value(train: Any, test: Any) -> Any:
    """One value when training and prediction used the same, else {"train": .., "test": ..}; the
    one that is known when only one is."""
    if train is None or test is None:
        return test if train is None else train
    return train if same(train, test) else {"train": train, "test": test}


def init_note(init: dict[str, Any] | None) -> str:
    """The protocol card's note on how the pretrained weights initialised the model."""
    if not init or not init.get("weights"):
        return ""
    head = ", ".join(init["reinitialised"][:4]) + (" ..." if len(init["reinitialised"]) > 4 else "")
    return (f"{init['weights']}: {init['loaded']}/{init['total']} tensors from the checkpoint; "
            f"re-initialised: {head or 'none'}")
