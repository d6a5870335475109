"""harness.report.protocol: the protocol card (protocol.md) and its fairness check, from metrics.json files only."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness import atomic
from harness.report import build_report
from harness.report.protocol import (collect_protocols, deviates, fairness_summary, fmt_value, protocol_markdown, same,
                                     unexplained, write_protocol)

MODELS = {"yolov5": "yolov5s", "detectron2_frcnn": "R_50_FPN_3x", "mmdet_frcnn": "r50_fpn_1x"}


def row(key: str, label: str, value, native=None, scope: str = "shared", note: str = "", **provenance) -> dict:
    """A row as an adapter writes it: read back from a (named) framework object unless `provenance` says otherwise."""
    return {"key": key, "label": label, "value": value, "native": native, "scope": scope, "note": note,
            "source": "read", "read_from": f"framework.{key}", "asked": None, **provenance}


def protocol(model: str, fold: int) -> list[dict]:
    """Identical shared rows for every model (split_hash per fold); recipes differ per framework."""
    shared = [row("train_images", "training images consumed", 24),
              row("train_boxes", "training boxes consumed", 36),
              row("negatives", "images without boxes", "drop"),
              row("image_size", "input image size", 256, native=640 if model == "yolov5" else 800,
                  note="one image size for every model"),
              row("score_thr", "score threshold", 0.001),
              row("max_det", "max detections per image", 100),
              row("augmentation", "augmentation", {"fliplr": 0.5, "mosaic": 0.0}),
              row("split_hash", "split hash", f"h{fold}")]
    recipe = {
        "yolov5": [row("epochs", "epochs", 30, native=300, scope="recipe", note="short schedule for the benchmark"),
                   row("optimizer", "optimizer", "SGD", native="SGD", scope="recipe"),
                   row("lr", "learning rate", 0.01, native=0.01, scope="recipe")],
        "detectron2_frcnn": [row("epochs", "epochs", 30, scope="recipe"),
                             row("optimizer", "optimizer", "SGD", native="SGD", scope="recipe"),
                             row("lr", "learning rate", 0.0005, native=5e-4, scope="recipe")],
        "mmdet_frcnn": [row("epochs", "epochs", 30, native=12, scope="recipe", note="matched to the others"),
                        row("optimizer", "optimizer", "SGD", native="SGD", scope="recipe"),
                        row("lr", "learning rate", 0.005, native=0.02, scope="recipe")],  # no note: unexplained
    }[model]
    return shared + recipe


def metrics(model: str, fold: int, variant: str, with_protocol: bool = True) -> dict:
    out = {"source": f"{model}:{variant}", "model": model, "variant": variant, "fold": fold, "split_hash": f"h{fold}",
           "n_images": 10, "map40": 0.3, "per_class": {}, "train_time_s": 100.0, "predict_time_s": 5.0}
    if with_protocol:
        out["protocol"] = protocol(model, fold)
    return out


@pytest.fixture
def sweep(tmp_path) -> Path:
    """3 models x 2 folds with protocols, one ensemble, one old run without a protocol."""
    root = tmp_path / "demo"
    for model, variant in MODELS.items():
        for fold in (0, 1):
            atomic.write_json(root / model / f"fold{fold}" / "metrics.json", metrics(model, fold, variant))
            atomic.write_json(root / model / f"fold{fold}" / "native" / "metrics.json", {"framework": "own file"})
    for fold in (0, 1):
        atomic.write_json(root / "ensemble" / "wbf" / f"fold{fold}" / "metrics.json",
                          {"model": "ensemble", "variant": "wbf", "fold": fold, "map40": 0.35,
                           "members": ["yolov5", "mmdet_frcnn"], "weights": [2, 1],
                           "config": {"method": "wbf", "iou_thr": 0.55, "skip_box_thr": 0.0001, "conf_type": "avg"}})
    return root


def set_value(root: Path, model: str, fold: int, key: str, value) -> None:
    path = root / model / f"fold{fold}" / "metrics.json"
    data = metrics(model, fold, MODELS[model])
    for item in data["protocol"]:
        if item["key"] == key:
            item["value"] = value
    atomic.write_json(path, data)


def section(md: str, heading: str) -> str:
    """The text under `heading` up to the next heading of any level."""
    start = md.index(heading) + len(heading)
    rest = md[start:]
    ends = [i for i in (rest.find("\n## "), rest.find("\n### ")) if i >= 0]
    return rest[:min(ends)] if ends else rest


def test_values_compare_as_json_with_a_tolerance():
    assert same(0.0005, 5e-4) and same(24, 24.0) and same({"a": 1, "b": [1, 2]}, {"b": [1.0, 2], "a": 1})
    assert not same(True, 1) and not same("24", 24) and not same([1, 2], [2, 1]) and not same(0.01, 0.0100001)
    assert not deviates(row("x", "x", 0.0005, native=5e-4)) and deviates(row("x", "x", 1, native=2))
    assert not deviates(row("x", "x", 1, native=None))
    assert fmt_value(0.1 + 0.2) == "0.3" and fmt_value(None) == "–" and fmt_value(False) == "false"
    assert fmt_value({"fliplr": 0.5, "scale": [0.5, 1.5]}) == "fliplr=0.5, scale=[0.5, 1.5]"
    assert fmt_value(["a", "b"]) == "a, b"


def test_build_report_writes_the_card_and_links_it(sweep):
    paths = build_report(sweep)
    assert paths["protocol_md"] == sweep / "report" / "protocol.md" and paths["protocol_md"].is_file()
    results_md = paths["results_md"].read_text()
    assert "Protocol and fairness check: [protocol.md](protocol.md)" in results_md.splitlines()[2]
    assert "unexplained deviation" in results_md  # mmdet's lr: the warning reaches the table's reader
    assert not any(p.name.endswith(".tmp") for p in (sweep / "report").iterdir())
    # a sweep whose runs recorded no protocol gets no card and no link (older sweeps look as before)
    for model in MODELS:
        for fold in (0, 1):
            atomic.write_json(sweep / model / f"fold{fold}" / "metrics.json",
                              metrics(model, fold, MODELS[model], with_protocol=False))
    paths = build_report(sweep, sweep / "report2")
    assert "protocol_md" not in paths and "protocol.md" not in paths["results_md"].read_text()


def test_identical_shared_settings_pass_the_fairness_check(sweep):
    md = protocol_markdown(collect_protocols(sweep), "Protocol: demo")
    assert md.index("## Fairness check") < md.index("## yolov5")
    assert "⚠ Shared settings that differ" not in md
    shared = section(md, "### Shared settings")
    assert "✓ All models share the same protocol settings: train_images 24, train_boxes 36" in shared
    assert "(same in every fold)" in shared
    assert "These settings must be identical" not in shared and "| fold |" not in shared
    assert "- fold0: split_hash h0" in shared and "- fold1: split_hash h1" in shared  # per-fold, not a difference
    assert "shared setting" not in fairness_summary(collect_protocols(sweep))


def test_a_shared_difference_is_flagged_with_fold_and_values(sweep):
    set_value(sweep, "yolov5", 1, "train_images", 23)
    collected = collect_protocols(sweep)
    md = protocol_markdown(collected)
    shared = section(md, "### ⚠ Shared settings that differ between models")
    assert "✓ All models" not in shared
    assert "| fold | setting | detectron2_frcnn | mmdet_frcnn | yolov5 |" in shared
    assert "| fold1 | training images consumed (`train_images`) | 24 | 24 | 23 |" in shared
    assert "fold0" not in shared  # fold0 agrees
    assert "1 shared setting differs between models (train_images)" in fairness_summary(collected)


def test_recipe_rows_and_unexplained_deviations(sweep):
    md = protocol_markdown(collect_protocols(sweep))
    loose = section(md, "### ⚠ Unexplained deviations")
    assert "mmdet_frcnn · learning rate (`lr`): 0.005 vs native 0.02 (fold0, fold1)" in loose
    # deviations with a note, equal-within-tolerance values and rows without a native default are not listed
    assert "epochs" not in loose and "image_size" not in loose and "detectron2" not in loose
    recipe = section(md, "### Recipe settings that differ between models (each framework's own recipe)")
    assert "- **learning rate (`lr`)**" in recipe and "`optimizer`" not in recipe
    assert "  - mmdet_frcnn: 0.005 — ⚠ unexplained: deviates from native 0.02 with no note" in recipe
    assert "  - detectron2_frcnn: 0.0005 — = native default" in recipe
    assert "  - yolov5: 0.01 — = native default" in recipe
    assert "`epochs`" not in recipe  # 30 everywhere: same value, though natives differ
    # once explained, nothing is left unexplained
    for fold in (0, 1):
        data = metrics("mmdet_frcnn", fold, MODELS["mmdet_frcnn"])
        next(r for r in data["protocol"] if r["key"] == "lr")["note"] = "linear scaling for batch 4"
        atomic.write_json(sweep / "mmdet_frcnn" / f"fold{fold}" / "metrics.json", data)
    md = protocol_markdown(collect_protocols(sweep))
    assert "✓ every deviation from a framework default is explained below" in md
    assert "deviates from native 0.02: linear scaling for batch 4" in md
    assert fairness_summary(collect_protocols(sweep)).startswith(
        "✓ shared settings agree, every deviation is explained, every value read back or applied by the harness")


def test_model_tables_show_per_fold_values_natives_and_notes(sweep):
    set_value(sweep, "yolov5", 1, "train_images", 23)
    md = protocol_markdown(collect_protocols(sweep))
    yolo = section(md, "## yolov5 — variant yolov5s")
    assert "| setting | scope | value | asked | native default | ≠ | source | note |" in yolo
    assert ("| training images consumed (`train_images`) | shared | fold0: 24 · fold1: 23 | – | – |  | "
            "read back: framework.train_images |  |") in yolo
    assert ("| input image size (`image_size`) | shared | 256 | – | 640 | ≠ | read back: framework.image_size | "
            "one image size for every model |") in yolo
    assert "| `augmentation` | shared | fliplr=0.5, mosaic=0 | – | – |  | read back: framework.augmentation |  |" in yolo
    # rows in the order of the first run that has them
    keys = [line.split("`")[1] for line in yolo.splitlines() if line.startswith("| ") and "`" in line]
    assert keys[:3] == ["train_images", "train_boxes", "negatives"] and keys[-3:] == ["epochs", "optimizer", "lr"]
    assert "## detectron2_frcnn — variant R_50_FPN_3x" in md and "## mmdet_frcnn — variant r50_fpn_1x" in md
    mmdet = section(md, "## mmdet_frcnn — variant r50_fpn_1x")
    assert ("| learning rate (`lr`) | recipe | 0.005 | – | 0.02 | ≠ | read back: framework.lr | "
            "⚠ unexplained: no note |") in mmdet
    assert "| `epochs` | recipe | 30 | – | 12 | ≠ | read back: framework.epochs | matched to the others |" in mmdet


def test_missing_keys_pipes_and_runs_without_protocol(sweep):
    data = metrics("yolov5", 0, "yolov5s")
    data["protocol"] = [r for r in data["protocol"] if r["key"] != "max_det"]
    data["protocol"][0]["note"] = "a | b"
    atomic.write_json(sweep / "yolov5" / "fold0" / "metrics.json", data)
    atomic.write_json(sweep / "old_model" / "fold0" / "metrics.json", metrics("old_model", 0, "v", with_protocol=False))
    (sweep / "broken" / "fold0").mkdir(parents=True)
    (sweep / "broken" / "fold0" / "metrics.json").write_text("{not json")
    collected = collect_protocols(sweep)
    assert set(collected.models) == set(MODELS) and [m["name"] for m in collected.missing] == ["old_model"]
    path = write_protocol(sweep, sweep / "out", collected)
    md = path.read_text()
    assert "| max detections per image (`max_det`) | shared | fold0: – · fold1: 100 |" in md
    assert "a \\| b" in md
    gaps = section(md, "## No protocol recorded")
    assert "- old_model fold0: no protocol recorded" in gaps
    assert "broken" in section(md, "## Unreadable result files")
    # a key one model did not record is not proof of agreement
    assert "| fold0 | max detections per image (`max_det`) | 100 | 100 | – |" in md


def test_ensembles_list_members_weights_and_fusion(sweep):
    md = protocol_markdown(collect_protocols(sweep))
    ens = section(md, "## Ensembles")
    assert "| ensemble | folds | members | weights | method | iou_thr | skip_box_thr | conf_type |" in ens
    assert "| wbf | fold0, fold1 | yolov5, mmdet_frcnn | 2, 1 | wbf | 0.55 | 0.0001 | avg |" in ens
    assert "ensemble" not in section(md, "## Fairness check")


def test_cards_of_single_model_and_variant_sweeps(tmp_path):
    root = tmp_path / "one"
    atomic.write_json(root / "yolov5" / "fold0" / "metrics.json", metrics("yolov5", 0, "yolov5n"))
    atomic.write_json(root / "yolov5" / "fold1" / "metrics.json", metrics("yolov5", 1, "yolov5s"))
    collected = collect_protocols(root)
    assert set(collected.models) == {"yolov5 (yolov5n)", "yolov5 (yolov5s)"}  # kept apart, as in results.md
    md = protocol_markdown(collected)
    assert "Nothing to compare" in md and "no fold has two models to compare" in fairness_summary(collected)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "No model run recorded a protocol." in protocol_markdown(collect_protocols(empty))
    with pytest.raises(FileNotFoundError):
        collect_protocols(tmp_path / "nope")


def rewrite(root: Path, model: str, fold: int, change) -> None:
    """Rewrite one run's protocol rows with `change(rows)`."""
    data = metrics(model, fold, MODELS[model])
    change(data["protocol"])
    atomic.write_json(root / model / f"fold{fold}" / "metrics.json", data)


def test_a_value_not_read_back_is_never_shown_as_confirmed(sweep):
    assert "not read back" not in fairness_summary(collect_protocols(sweep))

    def asked_only(rows):
        item = next(r for r in rows if r["key"] == "max_det")
        item.update(source="asked", read_from="")
        del next(r for r in rows if r["key"] == "lr")["source"]  # an older run: no source recorded

    rewrite(sweep, "yolov5", 0, asked_only)
    collected = collect_protocols(sweep)
    summary = fairness_summary(collected)
    assert "⚠ 2 values not read back from the framework (yolov5)" in summary and "✓" not in summary
    md = protocol_markdown(collected)
    unread = section(md, "### ⚠ Values not read back")
    assert "- yolov5 · max detections per image (`max_det`): asked, not read back (fold0)" in unread
    assert "- yolov5 · learning rate (`lr`): source not recorded (fold0)" in unread
    yolo = section(md, "## yolov5 — variant yolov5s")
    assert ("| max detections per image (`max_det`) | shared | 100 | – | – |  | "
            "⚠ fold0: asked, not read back · fold1: read back: framework.max_det |  |") in yolo

    def unknown_lr(rows):  # nothing read and nothing asked: unknown, which is not a deviation from native
        next(r for r in rows if r["key"] == "lr").update(value=None, source="asked", read_from="")

    for fold in (0, 1):
        rewrite(sweep, "mmdet_frcnn", fold, unknown_lr)
    collected = collect_protocols(sweep)
    assert not [e for e in unexplained(collected) if e["key"] == "lr"]
    assert "  - mmdet_frcnn: – — ⚠ not read back" in protocol_markdown(collected)


def test_a_value_other_than_asked_is_flagged_per_model_even_when_all_differ_alike(sweep):
    from adapters.card import protocol_row

    def channels(reason: str):
        def change(rows):
            rows.append(protocol_row("channels", "input channels", 3, scope="shared", source="read",
                                     read_from="model.conv1", asked=1, asked_reason=reason))
        return change

    for model in MODELS:
        for fold in (0, 1):
            rewrite(sweep, model, fold, channels(""))
    collected = collect_protocols(sweep)
    assert "channels" not in fairness_summary(collected).split("differ")[0]  # no shared difference: all read 3
    assert "⚠ 4 unexplained deviations" in fairness_summary(collected)  # the 3 models' channels, mmdet's lr
    md = protocol_markdown(collected)
    ran = section(md, "### Asked vs ran")
    for model in MODELS:
        assert f"- {model} · input channels (`channels`): ran 3, asked 1 (fold0, fold1) — ⚠ no reason given" in ran
    assert "| input channels (`channels`) | shared | 3 | 1 | – | ≠ asked | read back: model.conv1 |" in md

    for model in MODELS:  # a reason given for the native key that caused it explains it, on that row
        for fold in (0, 1):
            rewrite(sweep, model, fold, channels("INPUT.FORMAT: the framework reads RGB"))
    collected = collect_protocols(sweep)
    summary = fairness_summary(collected)
    assert summary.startswith("⚠ 1 unexplained deviation ")  # mmdet's lr only
    assert "3 settings ran other than asked, each with its reason" in summary
    ran = section(protocol_markdown(collected), "### Asked vs ran")
    assert "- yolov5 · input channels (`channels`): ran 3, asked 1 (fold0, fold1) — INPUT.FORMAT: the framework " \
           "reads RGB" in ran
