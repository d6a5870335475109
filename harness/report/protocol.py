"""The protocol card of a sweep (protocol.md): every setting that can move a model's score, per model.

Why: a results table compares frameworks fairly only when the harness-level protocol (images and
boxes consumed, negatives, image size, score threshold, max detections, NMS, TTA, split ...) is the
same for every model, and each framework's own recipe (epochs, lr, schedule ...) is either its
native default or a deviation with a reason. Each adapter records that in metrics.json under
"protocol" (rows of key, label, value, native, scope, note, and where the value came from: source,
read_from, asked - `harness.provenance`); this module only reads those files, so the card can be
rebuilt from a sweep directory alone, like the results tables. A value that was not read back from the
framework (or a row written before sources were recorded) is never shown as confirmed: the model table
says so, and the fairness summary counts it.

    from harness.report.protocol import collect_protocols, protocol_markdown, write_protocol
    path = write_protocol("runs/demo", "runs/demo/report")      # -> runs/demo/report/protocol.md
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import atomic, run_effects
from harness.compare import same
from harness.provenance import RECIPE, SHARED, confirmed, source_text
from harness.report.tables import _find, _fold_label, _sort_key
from harness.sweep import read_run_key

RUN_COLUMNS = ("device", "gpus", "workers", "batch_predict")  # how each run ran (not in the config hash)
RAN_NOT_ASKED = "ran other than asked"  # adapters.card's "unexplained" entry for such a row
ENSEMBLE_CONFIG = ("method", "iou_thr", "skip_box_thr", "conf_type")


@dataclass
class SweepProtocols:
    """What a sweep recorded about its protocol.

    models: model name -> fold label -> protocol rows (a name gets " (variant)" when one model ran
    with several variants, as in the results table); variants: model name -> variant;
    ensembles: one dict per ensemble run (name, fold, members, weights, config, path);
    missing: model runs whose metrics.json has no usable "protocol" (name, fold, path, reason);
    unreadable: metrics.json files that are not a JSON object."""

    models: dict[str, dict[str, list[dict]]] = field(default_factory=dict)
    variants: dict[str, str] = field(default_factory=dict)
    ensembles: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    # model name -> fold label -> how it ran (device, gpus, workers, batch_predict: metrics.json "run_settings")
    run_settings: dict[str, dict[str, dict]] = field(default_factory=dict)

    @property
    def recorded(self) -> bool:
        """True when at least one model run recorded a protocol (worth writing a card for)."""
        return bool(self.models)


# ---------------------------------------------------------------- collecting


def _is_ensemble(rel: tuple[str, ...], metrics: dict) -> bool:
    return metrics.get("model") == "ensemble" or (len(rel) > 0 and rel[0] == "ensemble")


def _rows(protocol: Any) -> list[dict] | None:
    """The well-formed rows of a "protocol" value (dicts with a key), or None when it is not a list."""
    if not isinstance(protocol, list):
        return None
    return [dict(row) for row in protocol if isinstance(row, dict) and row.get("key") not in (None, "")]


def _ensemble_entry(path: Path, rel: tuple[str, ...], metrics: dict) -> dict:
    config = metrics.get("config") if isinstance(metrics.get("config"), dict) else {}
    return {"name": str(metrics.get("variant") or (rel[1] if len(rel) > 1 else "ensemble")),
            "fold": _fold_label(metrics.get("fold")), "members": metrics.get("members"),
            "weights": metrics.get("weights"), "config": config, "path": str(path.parent),
            "max_det_observed": metrics.get("max_det_observed")}


def collect_protocols(sweep_dir: str | Path) -> SweepProtocols:
    """Every model run's protocol rows under `sweep_dir`, grouped by model then fold, plus the
    ensembles' fusion settings. Same search rules as the results table (tables._find), so the card
    and the table describe the same runs; a file without "protocol" is listed, never fatal."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {sweep_dir} does not exist")
    out, found = SweepProtocols(), []
    for path in _find(sweep_dir, "metrics.json"):
        try:
            metrics = json.loads(path.read_text())
            if not isinstance(metrics, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            out.unreadable.append(f"{path}: {err}")
            continue
        if metrics.get("kind") == "classifier":
            continue  # the "No finding" classifier is not one of the compared detectors
        rel = path.parent.relative_to(sweep_dir).parts
        if _is_ensemble(rel, metrics):
            out.ensembles.append(_ensemble_entry(path, rel, metrics))
            continue
        model = str(metrics.get("model") or (rel[0] if rel else path.parent.name))
        label = read_run_key(path.parent).label()  # a keyed sweep: one card column per model and swept values
        model = f"{model} · {label}" if label else model
        found.append((model, str(metrics.get("variant") or ""), _fold_label(metrics.get("fold")), path, metrics))
    _group_models(found, out)
    out.ensembles.sort(key=lambda e: (e["name"], _sort_key(e["fold"])))
    return out


def _group_models(found: list[tuple], out: SweepProtocols) -> None:
    """Fill out.models / out.variants / out.missing; two variants of one model stay apart."""
    variants: dict[str, set[str]] = {}
    for model, variant, *_ in found:
        variants.setdefault(model, set()).add(variant)
    for model, variant, fold, path, metrics in sorted(found, key=lambda f: (f[0], f[1], _sort_key(f[2]))):
        name = f"{model} ({variant})" if len(variants[model]) > 1 else model
        rows = _rows(metrics.get("protocol"))
        if rows is None:
            reason = "no protocol recorded" if "protocol" not in metrics else "protocol is not a list"
            out.missing.append({"name": name, "fold": fold, "path": str(path.parent), "reason": reason})
            continue
        out.variants.setdefault(name, variant)
        out.models.setdefault(name, {})[fold] = rows
        ran = metrics.get("run_settings") if isinstance(metrics.get("run_settings"), dict) else {}
        out.run_settings.setdefault(name, {})[fold] = {"device": ran.get("device", metrics.get("device")),
                                                       **{k: ran.get(k) for k in RUN_COLUMNS[1:]}}


# ---------------------------------------------------------------- comparing


def deviates(row: dict) -> bool:
    """A row deviates when the framework has a native default and the model ran another value (a value
    that is not known - not read back and not asked - is reported as such, not as a deviation)."""
    return (row.get("native") is not None and row.get("value") is not None
            and not same(row.get("value"), row.get("native")))


def _note(row: dict | None) -> str:
    return str((row or {}).get("note") or "").strip()


def off_asked(row: dict | None) -> bool:
    """The value differs from what the harness asked for (rows that record what it asked)."""
    return row is not None and row.get("asked") is not None and not same(row.get("value"), row.get("asked"))


def _missing_reasons(row: dict) -> str:
    keys = [str(k) for k in row.get("unexplained") or [] if k != RAN_NOT_ASKED]
    parts = ([f"ran {fmt_value(row.get('value'))}, asked {fmt_value(row.get('asked'))}: no reason given"]
             if RAN_NOT_ASKED in (row.get("unexplained") or []) else [])
    parts += [f"no reason for: {', '.join(keys)}"] if keys else []
    return f" ({'; '.join(parts)})" if parts else ""


def _unexplained(row: dict | None) -> bool:
    """A deviation with no reason: from the native default with no note at all, keys of a dict value that
    differ without one, or a value other than the harness asked without a reason (`unexplained`)."""
    return row is not None and (bool(row.get("unexplained")) or (deviates(row) and not _note(row)))


def _key_order(collected: SweepProtocols) -> list[str]:
    """Keys in the order of the first run that has them (runs sorted by model, then fold)."""
    order: dict[str, None] = {}
    for folds in collected.models.values():
        for rows in folds.values():
            order.update((row["key"], None) for row in rows)
    return list(order)


def _first_row(collected: SweepProtocols, key: str) -> dict:
    for folds in collected.models.values():
        for rows in folds.values():
            for row in rows:
                if row["key"] == key:
                    return row
    return {"key": key}


def _row(collected: SweepProtocols, model: str, fold: str, key: str) -> dict | None:
    for row in collected.models.get(model, {}).get(fold, []):
        if row["key"] == key:
            return row
    return None


def _scope(collected: SweepProtocols, key: str) -> str:
    """"shared" when any run calls the key shared: a fairness check must not be talked out of it."""
    scopes = {row.get("scope") for folds in collected.models.values() for rows in folds.values()
              for row in rows if row["key"] == key}
    return SHARED if SHARED in scopes else RECIPE


def _compared_folds(collected: SweepProtocols) -> dict[str, list[str]]:
    """fold -> models that recorded a protocol for it, for every fold that has two or more."""
    return {fold: models for fold, models in _fold_models(collected).items() if len(models) > 1}


def _fold_models(collected: SweepProtocols) -> dict[str, list[str]]:
    """fold -> models that recorded a protocol for it, folds in order."""
    by_fold: dict[str, list[str]] = {}
    for model, folds in collected.models.items():
        for fold in folds:
            by_fold.setdefault(fold, []).append(model)
    return dict(sorted(by_fold.items(), key=lambda kv: _sort_key(kv[0])))


def _value(row: dict | None) -> Any:
    return None if row is None else row.get("value")


def differences(collected: SweepProtocols, scope: str) -> list[dict]:
    """Rows of `scope` whose value differs between the models of one fold: one dict per (fold, key)
    with the values by model. A model that did not record the key counts as a different value
    (None): an unknown setting cannot be shown to be the same."""
    diffs = []
    for fold, models in _compared_folds(collected).items():
        for key in _key_order(collected):
            if _scope(collected, key) != scope:
                continue
            values = {m: _value(_row(collected, m, fold, key)) for m in models}
            first = next(iter(values.values()))
            if not all(same(first, v) for v in values.values()):
                diffs.append({"fold": fold, "key": key, "values": values})
    return diffs


def unexplained(collected: SweepProtocols) -> list[dict]:
    """Rows (either scope) that deviate from the framework default, or from what the harness asked,
    without a reason, by model and key."""
    return _by_model_key(collected, _unexplained)


def not_read_back(collected: SweepProtocols) -> list[dict]:
    """Rows whose value was neither read back from the framework nor applied by the harness (including
    rows that recorded no source), by model and key: {"model", "key", "folds", "source"}."""
    return _by_model_key(collected, lambda row: not confirmed(row))


def asked_differences(collected: SweepProtocols) -> list[dict]:
    """Rows whose value is not what the harness asked for, by model and key (flagged per model, even
    when every model differs the same way)."""
    return _by_model_key(collected, off_asked)


def _by_model_key(collected: SweepProtocols, test) -> list[dict]:
    out: dict[tuple[str, str], dict] = {}
    for model, folds in collected.models.items():
        for fold, rows in sorted(folds.items(), key=lambda kv: _sort_key(kv[0])):
            for row in rows:
                if test(row):
                    entry = out.setdefault((model, row["key"]), {"model": model, "key": row["key"], "rows": {}})
                    entry["rows"][fold] = row
    return list(out.values())


def fairness_summary(collected: SweepProtocols) -> str:
    """One line for results.md: does the table compare like with like, and is every value confirmed?"""
    shared = {d["key"] for d in differences(collected, SHARED)}
    loose = unexplained(collected)
    unread = not_read_back(collected)
    asked = asked_differences(collected)
    parts = []
    if shared:
        parts.append(f"⚠ {len(shared)} shared setting{'s' * (len(shared) != 1)} differ{'s' * (len(shared) == 1)} "
                     f"between models ({', '.join(sorted(shared))})")
    if loose:
        parts.append(f"⚠ {len(loose)} unexplained deviation{'s' * (len(loose) != 1)} from a framework default "
                     "or from what the harness asked")
    if unread:
        parts.append(f"⚠ {len(unread)} value{'s' * (len(unread) != 1)} not read back from the framework "
                     f"({', '.join(sorted({e['model'] for e in unread}))}): shown as asked, not confirmed")
    if not _compared_folds(collected):
        parts.append("no fold has two models to compare")
    explained = [e for e in asked if not any(_unexplained(r) for r in e["rows"].values())]
    note = (f"; {len(explained)} setting{'s' * (len(explained) != 1)} ran other than asked, each with its reason"
            f" ({', '.join(e['model'] + ' ' + e['key'] for e in explained)})" if explained else "")
    if parts:
        return "; ".join(parts) + note
    return "✓ shared settings agree, every deviation is explained, every value read back or applied by the harness" \
        + note


# ---------------------------------------------------------------- formatting


def fmt_value(value: Any, nested: bool = False) -> str:
    """Compact cell text: floats to 6 significant digits, dicts as k=v, lists comma-joined, None as –."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        text = ", ".join(f"{k}={fmt_value(v, nested=True)}" for k, v in value.items()) if value else ""
        return f"{{{text}}}" if nested or not value else text
    if isinstance(value, (list, tuple)):
        text = ", ".join(fmt_value(v, nested=True) for v in value)
        return f"[{text}]" if nested or not value else text
    text = str(value)
    return text if text else '""'


def _cell(text: str) -> str:
    """Table-safe: a `|` would end the cell, a newline the row."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _per_fold(values: dict[str, Any], fmt=fmt_value) -> str:
    """One value when every fold agrees, otherwise `fold0: 24 · fold1: 23`."""
    if not values:
        return "–"
    first = next(iter(values.values()))
    if all(same(first, v) for v in values.values()):
        return fmt(first)
    return " · ".join(f"{fold}: {fmt(v)}" for fold, v in values.items())


def _folds(collected: SweepProtocols, model: str) -> list[str]:
    return sorted(collected.models[model], key=_sort_key)


def _setting(collected: SweepProtocols, key: str) -> str:
    label = str(_first_row(collected, key).get("label") or "").strip()
    return f"{label} (`{key}`)" if label and label != key else f"`{key}`"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


# ---------------------------------------------------------------- sections


def _shared_agreement(collected: SweepProtocols, compared: dict[str, list[str]]) -> list[str]:
    """The ✓ line: the shared values every model uses, once when equal in every fold, else per fold."""
    keys = [k for k in _key_order(collected) if _scope(collected, k) == SHARED]
    per_fold = {fold: {k: _value(_row(collected, models[0], fold, k)) for k in keys}
                for fold, models in compared.items()}
    folds = list(per_fold)
    common = [k for k in keys if all(same(per_fold[folds[0]][k], per_fold[f][k]) for f in folds)]
    text = ", ".join(f"{k} {fmt_value(per_fold[folds[0]][k])}" for k in common) or "(none)"
    where = "same in every fold" if len(folds) > 1 else folds[0]
    lines = [f"✓ All models share the same protocol settings: {text} ({where})."]
    varying = [k for k in keys if k not in common]
    if varying:
        lines += ["", "Shared settings that vary by fold (the same for every model within a fold):", ""]
        lines += [f"- {fold}: " + ", ".join(f"{k} {fmt_value(per_fold[fold][k])}" for k in varying) for fold in folds]
    return lines


def _shared_section(collected: SweepProtocols) -> list[str]:
    compared = _compared_folds(collected)
    diffs = differences(collected, SHARED) if compared else []
    lines = ["### ⚠ Shared settings that differ between models" if diffs else "### Shared settings", ""]
    lonely = [f"{f} ({', '.join(m)})" for f, m in _fold_models(collected).items() if len(m) < 2]
    if not compared:
        lines.append("Nothing to compare: no fold has a protocol recorded by two or more models.")
    else:
        if diffs:
            models = list(collected.models)
            rows = [[d["fold"], _setting(collected, d["key"]),
                     *[fmt_value(d["values"][m]) if m in d["values"] else "(no run)" for m in models]] for d in diffs]
            lines += ["These settings must be identical for a fair table, but are not:", ""]
            lines += _table(["fold", "setting", *models], rows)
        else:
            lines += _shared_agreement(collected, compared)
    if lonely:
        lines += ["", "Not compared (only one model has a protocol for the fold): " + "; ".join(lonely) + "."]
    return lines + [""]


def _native_status(collected: SweepProtocols, model: str, key: str) -> str:
    """How a model's value of `key` relates to its framework's default, over its folds."""
    rows = [r for f in _folds(collected, model) if (r := _row(collected, model, f, key)) is not None]
    if not rows:
        return "not recorded"
    if all(r.get("value") is None for r in rows):
        return "⚠ not read back" if any(not confirmed(r) for r in rows) else "no value"
    if any(RAN_NOT_ASKED in (r.get("unexplained") or []) for r in rows):
        asked = _per_fold({f: r.get("asked") for f in _folds(collected, model)
                           if (r := _row(collected, model, f, key)) is not None})
        return f"⚠ unexplained: ran other than asked ({asked}) with no reason"
    if any(_unexplained(r) for r in rows):
        natives = _per_fold({f: r.get("native") for f in _folds(collected, model)
                             if (r := _row(collected, model, f, key)) is not None})
        return f"⚠ unexplained: deviates from native {natives} with no note"
    deviating = [r for r in rows if deviates(r)]
    if deviating:
        notes = "; ".join(dict.fromkeys(_note(r) for r in deviating))
        return f"deviates from native {fmt_value(deviating[0].get('native'))}: {notes}"
    if all(r.get("native") is None for r in rows):
        return "no native default"
    return "= native default"


def _recipe_section(collected: SweepProtocols) -> list[str]:
    lines = ["### Recipe settings that differ between models (each framework's own recipe)", "",
             "Epochs, optimiser, learning rate, schedule ... legitimately differ between frameworks; each value "
             "is either the framework's native default or a deviation explained by its note.", ""]
    keys = list(dict.fromkeys(d["key"] for d in differences(collected, RECIPE)))
    if not keys:
        return lines + ["None: every model uses the same recipe values.", ""]
    for key in keys:
        lines.append(f"- **{_setting(collected, key)}**")
        for model in collected.models:
            value = _per_fold({f: _value(_row(collected, model, f, key)) for f in _folds(collected, model)})
            lines.append(f"  - {model}: {value} — {_native_status(collected, model, key)}")
    return lines + [""]


def _unexplained_section(collected: SweepProtocols) -> list[str]:
    lines = ["### ⚠ Unexplained deviations", ""]
    entries = unexplained(collected)
    if not entries:
        return lines + ["✓ every deviation from a framework default is explained below.", ""]
    lines += ["These settings differ from the framework's native default, or from what the harness asked, and no "
              "note says why:", ""]
    for entry in entries:
        rows = entry["rows"]
        folds = ", ".join(rows)
        value = _per_fold({f: r.get("value") for f, r in rows.items()})
        native = _per_fold({f: r.get("native") for f, r in rows.items()})
        why = "".join(dict.fromkeys(_missing_reasons(r) for r in rows.values()))
        lines.append(f"- {entry['model']} · {_setting(collected, entry['key'])}: {value} vs native {native} ({folds})"
                     f"{why}")
    return lines + [""]


def _model_section(collected: SweepProtocols, model: str) -> list[str]:
    variant = collected.variants.get(model) or ""
    folds = _folds(collected, model)
    lines = [f"## {model}" + (f" — variant {variant}" if variant else ""), "", f"Folds: {', '.join(folds)}.", "",
             "*value*: what the model ran, with its *source* (read back from the named framework object, applied "
             "by the harness, or only asked: not confirmed); *asked*: the harness's setting (– where it asks "
             "nothing); ≠ marks a value other than the native default, ≠ asked one other than the harness asked.",
             ""]
    rows = []
    for key in _key_order(collected):
        found = {f: _row(collected, model, f, key) for f in folds}
        present = {f: r for f, r in found.items() if r is not None}
        values = {f: _value(r) for f, r in found.items()}
        natives = {f: (r or {}).get("native") for f, r in found.items()}
        asked = {f: (r or {}).get("asked") for f, r in found.items()}
        marks = [_mark([f for f, r in present.items() if deviates(r)], folds, "≠"),
                 _mark([f for f, r in present.items() if off_asked(r)], folds, "≠ asked")]
        notes = "; ".join(dict.fromkeys(n for r in present.values() if (n := _note(r))))
        if any(_unexplained(r) for r in present.values()):
            missing = "".join(dict.fromkeys(_missing_reasons(r) for r in present.values()))
            notes = "; ".join(filter(None, [notes, f"⚠ unexplained: no note{missing}"]))
        sources = {f: source_text(r) for f, r in present.items()}
        source = _per_fold(sources, fmt=str)
        if any(not confirmed(r) for r in present.values()):
            source = f"⚠ {source}"
        rows.append([_setting(collected, key), _scope(collected, key), _per_fold(values), _per_fold(asked),
                     _per_fold(natives), " ".join(filter(None, marks)), source, notes])
    return lines + _table(["setting", "scope", "value", "asked", "native default", "≠", "source", "note"], rows) + [""]


def _mark(off: list[str], folds: list[str], mark: str) -> str:
    if not off:
        return ""
    return mark if len(off) == len(folds) or len(folds) == 1 else f"{mark} ({', '.join(off)})"


def _provenance_section(collected: SweepProtocols) -> list[str]:
    """Per model: the values other than asked (with their reasons, or flagged) and the values not read back."""
    lines = ["### Asked vs ran", ""]
    entries = asked_differences(collected)
    if not entries:
        lines += ["✓ every model ran every setting as the harness asked.", ""]
    else:
        lines += ["Settings a model ran with other values than the harness asked (each model on its own, even where "
                  "all differ alike):", ""]
        for entry in entries:
            rows = entry["rows"]
            value = _per_fold({f: r.get("value") for f, r in rows.items()})
            asked = _per_fold({f: r.get("asked") for f, r in rows.items()})
            why = ("⚠ no reason given" if any(_unexplained(r) for r in rows.values())
                   else "; ".join(dict.fromkeys(_note(r) for r in rows.values())))
            lines.append(f"- {entry['model']} · {_setting(collected, entry['key'])}: ran {value}, asked {asked} "
                         f"({', '.join(rows)}) — {why}")
        lines.append("")
    unread = not_read_back(collected)
    lines += ["### ⚠ Values not read back" if unread else "### Values not read back", ""]
    if not unread:
        return lines + ["✓ every value was read back from the framework or applied by the harness.", ""]
    lines += ["These values were not confirmed by the framework: the card shows what the harness asked (or what "
              "an older run recorded without a source).", ""]
    for entry in unread:
        rows = entry["rows"]
        lines.append(f"- {entry['model']} · {_setting(collected, entry['key'])}: "
                     f"{_per_fold({f: source_text(r) for f, r in rows.items()}, fmt=str)} ({', '.join(rows)})")
    return lines + [""]


def _ensemble_section(collected: SweepProtocols) -> list[str]:
    if not collected.ensembles:
        return []
    by_name: dict[str, list[dict]] = {}
    for entry in collected.ensembles:
        by_name.setdefault(entry["name"], []).append(entry)
    rows = []
    for name, entries in by_name.items():
        def across(get) -> str:
            return _per_fold({e["fold"]: get(e) for e in entries})
        rows.append([name, ", ".join(e["fold"] for e in entries), across(lambda e: e["members"]),
                     across(lambda e: e["weights"]), *[across(lambda e, k=k: e["config"].get(k))
                                                      for k in ENSEMBLE_CONFIG],
                     across(lambda e: e.get("max_det_observed"))])
    return (["## Ensembles", "", "Fused from the model runs above; they add no training protocol of their own. Fusion "
             "is not re-capped: an image can hold more boxes than the members' max detections (last column: the "
             "most any image has).", ""]
            + _table(["ensemble", "folds", "members", "weights", *ENSEMBLE_CONFIG, "max detections per image"], rows)
            + [""])


def _run_settings_section(collected: SweepProtocols) -> list[str]:
    """Where and how each model ran (per fold where they differ), and what that can change."""
    if not collected.run_settings:
        return []
    rows = []
    for model, folds in collected.run_settings.items():
        cells = [_per_fold({fold: ran.get(key) for fold, ran in folds.items()}) for key in RUN_COLUMNS]
        rows.append([model, ", ".join(folds), *cells])
    return ["## Run settings", "", run_effects.NOTE, ""] + _table(
        ["model", "folds", "device", "GPUs", "workers", "batch_predict"], rows) + [""]


def _missing_section(collected: SweepProtocols) -> list[str]:
    lines = []
    if collected.missing:
        lines += ["## No protocol recorded", "",
                  "These model runs were written before the protocol card existed (or by an adapter that does not "
                  "record one); their settings are unknown and they are left out of the fairness check.", ""]
        lines += [f"- {m['name']} {m['fold']}: {m['reason']} (`{m['path']}`)" for m in collected.missing]
        lines.append("")
    if collected.unreadable:
        lines += ["## Unreadable result files", ""] + [f"- `{item}`" for item in collected.unreadable] + [""]
    return lines


def protocol_markdown(collected: SweepProtocols, title: str = "Protocol") -> str:
    """protocol.md: what the card is, the fairness check, one table per model, ensembles, gaps."""
    lines = [f"# {title}", "",
             "This card lists every setting that can move a model's score: the value this sweep used, the "
             "framework's native default, and a ≠ mark where they differ (with the harness's reason in the note). "
             "*Shared* settings are the harness's protocol and must be identical for every model, or the results "
             "table does not compare like with like; *recipe* settings belong to each framework's own training "
             "recipe and may legitimately differ.", ""]
    if not collected.recorded:
        lines += ["No model run recorded a protocol.", ""]
    else:
        lines += ["## Fairness check", "", f"Summary: {fairness_summary(collected)}.", ""]
        lines += (_shared_section(collected) + _recipe_section(collected) + _unexplained_section(collected)
                  + _provenance_section(collected))
        for model in collected.models:
            lines += _model_section(collected, model)
    lines += _run_settings_section(collected) + _ensemble_section(collected) + _missing_section(collected)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_protocol(sweep_dir: str | Path, out_dir: str | Path, collected: SweepProtocols | None = None,
                   title: str | None = None, extra: str | None = None) -> Path:
    """Write <out_dir>/protocol.md atomically (collecting the sweep unless `collected` is given);
    `extra`: a section appended (the model-level differences of same-architecture pairs: by_arch)."""
    sweep_dir, out_dir = Path(sweep_dir), Path(out_dir)
    collected = collected if collected is not None else collect_protocols(sweep_dir)
    path = out_dir / "protocol.md"
    text = protocol_markdown(collected, title or f"Protocol: {sweep_dir.name}")
    atomic.write_text(path, text.rstrip("\n") + "\n\n" + extra if extra else text)
    return path


__all__ = ["SweepProtocols", "collect_protocols", "protocol_markdown", "write_protocol", "fairness_summary",
           "differences", "unexplained", "deviates", "same", "fmt_value", "not_read_back", "asked_differences",
           "off_asked"]
