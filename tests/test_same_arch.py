"""experiment=same_arch's two comparisons: the aligned pairs (RetinaNet R50-FPN, Cascade R-CNN R50-FPN in
detectron2 and mmdet) are the same network, checked on the built models (not trained): no network
difference, the same parameter count per module group, the same backbone+FPN outputs once one side's
weights are copied into the other; the difference finder finds each of today's known differences when it
is put back into an aligned build; the zoo's mmdet Faster R-CNN is mmdet_frcnn's; the by-architecture
table names the comparisons and gives each Δ its paired-bootstrap interval and seed spread."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adapters import get_detector
from adapters.aligned import FAMILY_TAG
from adapters.spec import TrainSpec
from harness import atomic
from harness.report import arch_diff, by_arch
from harness.report.uncertainty import BootstrapSettings, Uncertainty

RETINANET = {"detectron2": "COCO-Detection/retinanet_R_50_FPN_3x.yaml", "mmdet": "retinanet_r50_fpn_1x_coco"}
CASCADE = {"detectron2": "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml", "mmdet": "cascade-rcnn_r50_fpn_1x_coco"}


def spec(**overrides) -> TrainSpec:
    """same_arch's settings (12 epochs, batch 4), 64 px, two classes."""
    return TrainSpec(**{"imgsz": 64, "batch_size": 4, "epochs": 12, "classes": ["a", "b"], **overrides})


def model(name: str, native: dict | None = None):
    native = native or {}
    return get_detector(name, spec(native=native, reasons={key: "test" for key in native}))


_FACTS: dict = {}


def facts(name: str, native: dict | None = None) -> dict:
    """A preset's architecture facts, built once per test session."""
    key = (name, repr(sorted((native or {}).items())))
    if key not in _FACTS:
        _FACTS[key] = model(name, native).architecture_facts()
    return _FACTS[key]


def by_category(found) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in found:
        out.setdefault(d.category, []).append(d.item)
    return out


@pytest.mark.parametrize("arch", ["retinanet", "cascade"])
def test_the_aligned_pair_is_the_same_network_with_what_remains_listed(arch):
    found = arch_diff.differences(facts(f"detectron2_{arch}_aligned"), facts(f"mmdet_{arch}_aligned"))
    categories = by_category(found)
    assert "network" not in categories, found
    a, b = facts(f"detectron2_{arch}_aligned"), facts(f"mmdet_{arch}_aligned")
    # the same parameter count per module group (backbone, neck, rpn, head), counted on the built models
    assert a["network"]["parameters per group"] == b["network"]["parameters per group"]
    assert set(a["network"]["parameters per group"]) == ({"backbone", "neck", "head"} |
                                                          ({"rpn"} if arch == "cascade" else set()))
    for category in ("init", "normalisation", "loss", "assignment", "schedule"):
        assert category not in categories, (category, [d for d in found if d.category == category])
    if arch == "retinanet":
        assert found == []
    else:  # the one difference aligned configs cannot remove: how stages 2-3 get their RoIs
        assert [(d.category, d.item) for d in found] == [("sampling", "R-CNN stages 2+")]


def test_the_defaults_pairs_differ_where_the_issue_found_them():
    retina = by_category(arch_diff.differences(facts("detectron2_retinanet"), facts("mmdet_retinanet")))
    assert {"neck extra levels", "neck extra convs norm"} <= set(retina["network"])
    assert "pixel std (RGB)" in retina["normalisation"]
    assert retina["loss"] == ["loss normaliser"]  # both zoo files use an L1 box loss
    cascade = by_category(arch_diff.differences(facts("detectron2_cascade"), facts("mmdet_cascade")))
    assert {"R-CNN stage loss weights", "rpn box loss", "R-CNN box loss per stage"} <= set(cascade["loss"])
    assert {"rpn anchors: anchors crossing the border", "rpn anchors: low-quality matches"} <= set(cascade["assignment"])
    assert "lr steps (iteration)" in cascade["schedule"]


# each of today's known differences, put back into an aligned build: (model, native, category, item)
REINTRODUCED = [
    ("mmdet_retinanet_aligned", {"model.neck.relu_before_extra_convs": False}, "network", "neck extra levels"),
    ("mmdet_retinanet_aligned", {"model.neck.type": "FPN"}, "network", "neck extra convs norm"),
    ("mmdet_retinanet_aligned", {"model.backbone.zero_init_residual": True}, "init",
     "residual branch last norm zero-initialised (share of blocks)"),
    ("detectron2_retinanet_aligned", {"MODEL.PIXEL_STD": [1.0, 1.0, 1.0]}, "normalisation", "pixel std (RGB)"),
    ("detectron2_retinanet_aligned", {"MODEL.META_ARCHITECTURE": "RetinaNet"}, "loss", "loss normaliser"),
    ("mmdet_cascade_aligned", {"model.roi_head.stage_loss_weights": [1, 0.5, 0.25]}, "loss", "R-CNN stage loss weights"),
    ("mmdet_cascade_aligned", {"model.train_cfg.rpn.allowed_border": 0}, "assignment",
     "rpn anchors: anchors crossing the border"),
    ("mmdet_cascade_aligned", {"model.train_cfg.rpn.assigner.min_pos_iou": 0.3}, "assignment",
     "rpn anchors: low-quality matches"),
]


def _put_back(name: str) -> tuple[dict, list[tuple[str, str]]]:
    """One build of `name` with all of its known differences put back, and the (category, item) each must show."""
    chosen = [r for r in REINTRODUCED if r[0] == name]
    native = {key: value for _, overrides, _, _ in chosen for key, value in overrides.items()}
    return native, [(category, item) for _, _, category, item in chosen]


@pytest.mark.parametrize("name", list(dict.fromkeys(r[0] for r in REINTRODUCED)))
def test_a_known_difference_put_back_is_found(name):
    """Each of today's known differences, put back into an aligned build (one build per preset, all of its
    differences at once), is found by the difference finder, under its category."""
    arch = "retinanet" if "retinanet" in name else "cascade"
    pair = {f"detectron2_{arch}_aligned": facts(f"detectron2_{arch}_aligned"),
            f"mmdet_{arch}_aligned": facts(f"mmdet_{arch}_aligned")}
    native, expected = _put_back(name)
    pair[name] = facts(name, native)
    found = {(d.category, d.item) for d in arch_diff.differences(*pair.values())}
    assert [e for e in expected if e not in found] == []


def test_backbone_and_fpn_outputs_agree_once_weights_are_copied():
    """The classic conversion check on the aligned RetinaNet: detectron2's ResNet-50 + FPN (P3-P7) weights
    copied into mmdet's, one fixed input, the same five feature maps. (The heads are not compared: the two
    order the 9 anchors of a location differently, size-major vs ratio-major, so their output channels are
    a permutation of each other; their parameter counts are equal, above.)"""
    import torch
    from adapters.detectron2_zoo import facts as d2_facts
    from adapters.mmdet_zoo import facts as mm_facts

    _, d2 = d2_facts.build(model("detectron2_retinanet_aligned"))
    _, mm = mm_facts.build(model("mmdet_retinanet_aligned"))
    d2_state = {k: v for k, v in d2.backbone.state_dict().items()}
    target = {}
    for key in list(mm.backbone.state_dict()):
        target[f"backbone.{key}"] = d2_state[_d2_backbone_key(key)]
    for key in list(mm.neck.state_dict()):
        target[f"neck.{key}"] = d2_state[_d2_neck_key(key)]
    missing = mm.load_state_dict(target, strict=False)
    assert not [k for k in missing.missing_keys if k.startswith(("backbone.", "neck."))]
    d2.eval(), mm.eval()
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = d2.backbone(x)
        theirs = mm.neck(mm.backbone(x))
    assert len(theirs) == len(ours) == 5
    for level, out in zip(("p3", "p4", "p5", "p6", "p7"), theirs):
        assert torch.allclose(ours[level], out, atol=1e-4, rtol=1e-4), level
    # and the copy is what makes them agree: mmdet's own init gives other features
    _, fresh = mm_facts.build(model("mmdet_retinanet_aligned"))
    fresh.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh.neck(fresh.backbone(x))[0], ours["p3"], atol=1e-2)


def _d2_backbone_key(key: str) -> str:
    """mmdet ResNet parameter name -> detectron2's (ResNet with GN, stride on the 3x3 conv)."""
    parts = key.split(".")
    if parts[0] in ("conv1", "gn1"):
        return "bottom_up.stem.conv1." + ("weight" if parts[0] == "conv1" else "norm." + parts[1])
    stage, block, layer = f"res{int(parts[0][5:]) + 1}", parts[1], parts[2]
    rest = ".".join(parts[3:])
    if layer == "downsample":  # downsample.0 the conv, downsample.1 its norm
        return f"bottom_up.{stage}.{block}.shortcut." + ("weight" if parts[3] == "0" else f"norm.{parts[-1]}")
    if layer.startswith("conv"):
        return f"bottom_up.{stage}.{block}.{layer}.{rest}"
    return f"bottom_up.{stage}.{block}.conv{layer[2:]}.norm.{rest}"  # gn1/gn2/gn3


def _d2_neck_key(key: str) -> str:
    """mmdet FPN parameter name (P3-P5 and the two extra convs) -> detectron2's FPN + LastLevelP6P7."""
    kind, index, module, name = key.split(".")
    index = int(index)
    if kind == "fpn_convs" and index >= 3:
        return f"top_block.p{index + 3}.{name}"
    prefix = f"fpn_{'lateral' if kind == 'lateral_convs' else 'output'}{index + 3}"
    return f"{prefix}.{name}" if module == "conv" else f"{prefix}.norm.{name}"


def test_the_zoo_faster_rcnn_is_mmdet_frcnn():
    """One scratch builder: mmdet's packaged Faster R-CNN by name builds mmdet_frcnn's model config."""
    from adapters.mmdet_frcnn.config import model_config
    from adapters.mmdet_zoo.config import arch_model_config

    zoo = arch_model_config(spec(variant="faster-rcnn_r50_fpn_1x_coco")).model.to_dict()
    preset = model_config(spec(variant="R50-FPN")).model.to_dict()
    assert zoo == preset
    assert zoo["backbone"]["zero_init_residual"] is False  # mmdet's own scratch config's setting


def test_the_aligned_tag_is_the_reports():
    assert by_arch.ALIGNED_TAG == FAMILY_TAG


def test_presets_name_both_comparisons_and_same_arch_is_a_gpu_job():
    from omegaconf import OmegaConf

    from harness.cli.common import CONF_DIR
    full, smoke = (OmegaConf.load(Path(CONF_DIR, "experiment", f"{name}.yaml")) for name in ("same_arch", "same_arch_cpu"))
    models = list(full.pipeline.models)
    for arch in ("retinanet", "cascade"):
        for framework in ("detectron2", "mmdet"):
            assert f"{framework}_{arch}" in models and f"{framework}_{arch}_aligned" in models
    assert full.train.device == "cuda" and full.train.amp is True
    assert smoke.train.device == "cpu" and list(smoke.pipeline.models) == models
    for framework in ("detectron2", "mmdet"):  # the CPU cuts are the same for both variants
        assert smoke.per_model[f"{framework}_cascade"] == smoke.per_model[f"{framework}_cascade_aligned"]


def _write_run(root: Path, model_name: str, family: str, facts_: dict | None, seed: int | None = None) -> str:
    run_dir = root / model_name / "fold0"
    metrics = {"protocol": [{"key": "architecture", "value": f"{family}: fw cfg (built)"}]}
    if facts_ is not None:
        metrics["architecture_facts"] = facts_
    atomic.write_json(run_dir / "metrics.json", metrics)
    return str(run_dir)


def test_report_names_the_comparisons_gives_the_interval_and_lists_the_differences(tmp_path):
    same = {"network": {"backbone": "ResNet, blocks [3, 4, 6, 3]"}, "loss": {"box loss": "L1"}}
    other = {"network": {"backbone": "ResNet, blocks [3, 4, 6, 3]", "neck extra convs norm": ["GroupNorm(32)"]},
             "loss": {"box loss": "SmoothL1(beta=0.1111)"}}
    rows, means = [], {}
    for name, family, value, fact in (
            ("detectron2_retinanet", "RetinaNet R50-FPN", 0.30, {**same, "network": {**same["network"],
                                                                                    "neck extra convs norm": ["none"]}}),
            ("mmdet_retinanet", "RetinaNet R50-FPN", 0.25, other),
            ("detectron2_retinanet_aligned", "RetinaNet R50-FPN" + FAMILY_TAG, 0.28, same),
            ("mmdet_retinanet_aligned", "RetinaNet R50-FPN" + FAMILY_TAG, 0.27, same)):
        rows.append({"kind": "model", "name": name, "base": name, "fold": "fold0", "seed": None, "n_images": 12,
                     "map40": value, "path": _write_run(tmp_path, name, family, fact)})
        means[name] = value
    runs = pd.DataFrame(rows)
    summ = pd.DataFrame({"name": list(means), "map40 mean": list(means.values())})
    pairs = pd.DataFrame([  # as harness.report.uncertainty.compute writes them (a - b)
        {"a": "detectron2_retinanet", "b": "mmdet_retinanet", "delta": 0.05, "delta_ci_low": 0.01,
         "delta_ci_high": 0.09, "seed": None},
        {"a": "detectron2_retinanet_aligned", "b": "mmdet_retinanet_aligned", "delta": 0.01, "delta_ci_low": -0.03,
         "delta_ci_high": 0.05, "seed": None}])
    unc = Uncertainty(BootstrapSettings(), pairs=pairs)
    text = by_arch.markdown(runs, summ, unc)
    # mmdet - detectron2, its interval flipped from the d2 - mmdet pair, and the verdict
    assert ("| RetinaNet R50-FPN | each framework's defaults | mmdet_retinanet | 0.2500 | -0.0500 | [-0.0900, -0.0100] "
            "| detectron2_retinanet better |") in text
    assert ("| RetinaNet R50-FPN (aligned) | framework effect | mmdet_retinanet_aligned | 0.2700 | -0.0100 | "
            "[-0.0500, +0.0300] | not distinguishable |") in text
    assert "1 fold, 1 seed, 12 validation images per fold" in text
    # the defaults pair's differences, derived from the recorded facts; none for the aligned pair
    assert "| network | neck extra convs norm | ['none'] | ['GroupNorm(32)'] |" in text
    assert "| loss | box loss | L1 | SmoothL1(beta=0.1111) |" in text
    assert "No difference between detectron2_retinanet_aligned and mmdet_retinanet_aligned" in text
    section = by_arch.differences_section(runs)  # protocol.md: the same derived tables
    assert "| loss | box loss | L1 | SmoothL1(beta=0.1111) |" in section and "(framework effect)" in section


def test_report_gives_the_seed_spread_of_a_delta(tmp_path):
    rows, pairs = [], []
    values = {0: (0.30, 0.25), 1: (0.32, 0.31), 2: (0.28, 0.27)}
    for seed, (d2, mm) in values.items():
        for base, value in (("detectron2_cascade_aligned", d2), ("mmdet_cascade_aligned", mm)):
            name = f"{base} · seed {seed}"
            path = _write_run(tmp_path / f"seed{seed}", base, "Cascade R-CNN R50-FPN" + FAMILY_TAG, {"network": {}})
            rows.append({"kind": "model", "name": name, "base": base, "fold": "fold0", "seed": seed, "n_images": 12,
                         "map40": value, "path": path})
        low = -0.01 if seed else 0.01  # seed 0: detectron2 better; seeds 1, 2: not distinguishable
        pairs.append({"a": f"detectron2_cascade_aligned · seed {seed}", "b": f"mmdet_cascade_aligned · seed {seed}",
                      "delta": d2 - mm, "delta_ci_low": low, "delta_ci_high": 0.09, "seed": seed})
    runs = pd.DataFrame(rows)
    summ = pd.DataFrame({"name": runs["name"], "map40 mean": runs["map40"]})
    text = by_arch.markdown(runs, summ, Uncertainty(BootstrapSettings(), pairs=pd.DataFrame(pairs)))
    deltas = [mm - d2 for d2, mm in values.values()]
    mean, sd = float(np.mean(deltas)), float(np.std(deltas, ddof=1))
    assert f"{mean:+.4f} ± {sd:.4f} (sd over 3 seeds)" in text
    assert "2 of 3 seeds not distinguishable, 0 mmdet_cascade_aligned better, 1 detectron2_cascade_aligned better" in text
    assert not math.isnan(mean)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["detectron2_retinanet_aligned", "mmdet_retinanet_aligned"])
def test_an_aligned_preset_trains_and_its_card_states_every_override(name, split0, tmp_path, forbid_network):
    """Two iterations on the toy set: the registered modules train and predict, the card names the aligned
    family and gives every aligned override its reason, and the run's facts are what the test above compared."""
    from harness.report.protocol import collect_protocols, unexplained

    det = get_detector(name, TrainSpec(imgsz=64, batch_size=4, epochs=1, lr=0.001, batch_predict=2, seed=0))
    checkpoint = det.fit(split0, tmp_path / "native")
    det.predict(checkpoint, split0.images("val"), tmp_path / "predict")
    rows = det.protocol()
    architecture = next(r for r in rows if r["key"] == "architecture")["value"]
    assert architecture.startswith("RetinaNet R50-FPN" + FAMILY_TAG + ": ")
    overrides = next(r for r in rows if r["key"] == "native_overrides")
    assert overrides["value"] and all(str(why).startswith("aligned: ") for why in det.spec.reasons.values())
    atomic.write_json(tmp_path / "sweep" / name / "fold0" / "metrics.json",
                      {"model": name, "variant": det.spec.variant, "fold": 0, "protocol": rows})
    assert unexplained(collect_protocols(tmp_path / "sweep")) == []
    trained = det.architecture_facts()
    assert trained["schedule"]["iterations"] == 2  # the facts follow the run: 6 images with boxes, batch 4
    drop = "parameters per group"  # the head's size follows the class count (the toy set's 14, here 2)
    assert {k: v for k, v in trained["network"].items() if k != drop} == \
        {k: v for k, v in facts(name)["network"].items() if k != drop}
