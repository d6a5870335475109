"""The "No finding" stage's classifier (adapters/classifier.py): it learns normal vs abnormal on the
toy set offline, and its P(abnormal) file and metrics come out of the shared job."""
from __future__ import annotations

import json
from collections import defaultdict

import pytest
from testdata import require_module

torch = require_module("torch", "torch==2.14.1")
torchvision = require_module("torchvision", "torchvision==0.29.1")

from adapters import get_detector, is_classifier  # noqa: E402
from adapters.base import AugSpec, TrainSpec  # noqa: E402
from harness.nofinding import abnormal_labels, roc_auc  # noqa: E402
from harness.split import make_split  # noqa: E402
from harness.weights.formats import detect_format  # noqa: E402
from toy import make_toy_dataset  # noqa: E402


def _spec(**kw) -> TrainSpec:
    base = dict(variant="resnet18", epochs=3, batch_size=8, imgsz=48, optimizer="adam", lr=1e-3, seed=0,
                aug=AugSpec(rotate_deg=10, hflip=0.5, vflip=0.1), batch_predict=16)
    return TrainSpec(**{**base, **kw})


def test_classifier_learns_normal_vs_abnormal_offline(tmp_path, forbid_network):
    toy = make_toy_dataset(tmp_path / "toy", n_images=60, size=64, seed=1, k=3)  # k=3: normals in every fold
    split = make_split(toy["labels"], toy["folds"], 0, tmp_path / "run")
    val = split.images("val")
    labels = abnormal_labels(json.loads(split.val_json.read_text()))
    assert is_classifier("classifier")
    clf = get_detector("classifier", _spec())
    checkpoint = clf.fit(split, tmp_path / "run" / "native")
    p = clf.predict(checkpoint, val)
    assert set(p) == {ref.id for ref in val} and all(0.0 <= v <= 1.0 for v in p.values())
    auc = roc_auc([labels[i] for i in p], [p[i] for i in p])
    assert auc >= 0.85
    # an untrained network already ranks the bright toy lesions high (its AUC is near 1 too): what
    # training adds is the probability scale the policies' thresholds act on
    untrained = get_detector("classifier", _spec()).predict(None, val)

    def gap(scores):
        normal = [scores[i] for i in scores if not labels[i]]
        abnormal = [scores[i] for i in scores if labels[i]]
        return sum(abnormal) / len(abnormal) - sum(normal) / len(normal)

    accuracy = sum((p[i] >= 0.5) == bool(labels[i]) for i in p) / len(p)
    print("AUC", auc, "gap", gap(p), "untrained gap", gap(untrained), "accuracy", accuracy)
    assert gap(p) > 0.3 and abs(gap(untrained)) < 0.1
    assert accuracy >= 0.9
    assert clf.consumed == {"images": 40, "boxes": 0, "abnormal": 30}
    assert not forbid_network  # no connection was attempted
    # the resumable checkpoint is recorded, the final one is a torch file the job reads back
    assert (tmp_path / "run" / "native" / "last.pt.resume.json").is_file()
    assert checkpoint.name == "classifier.pt"
    # a rerun of the same training resumes from its recorded checkpoint (here: already at the last epoch)
    again = get_detector("classifier", _spec())
    again.fit(split, tmp_path / "run" / "native")
    assert again.resumed is not None and again.resumed["epoch"] == again.resumed["epochs"] == 3
    assert again.predict(tmp_path / "run" / "native" / "classifier.pt", val) == pytest.approx(p)


def test_one_channel_stem_from_an_imagenet_style_state_dict(tmp_path):
    weights = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), weights)
    assert detect_format(weights) == "torchvision"
    clf = get_detector("classifier", _spec(weights=str(weights), channels=1))
    model = clf.build()
    assert model.conv1.in_channels == 1 and model.fc.out_features == 1
    assert "fc.weight" in clf.init["reinitialised"] and "conv1.weight" not in clf.init["reinitialised"]
    assert clf.init["loaded"] == clf.init["total"] - 2  # all but the 1000-class head (weight, bias)


@pytest.mark.slow
def test_classifier_in_a_sweep_report_and_submission(tmp_path):
    """`model=classifier` runs beside a detector in one multirun on the same fold; the report scores the
    detector with it; cxr-predict applies the policy with it (the same code) to new images."""
    import csv

    from test_hydra_pipeline import FAST, run_app

    fast = [*FAST, "train.epochs=1", "per_model.classifier.train.epochs=2", "per_model.classifier.train.imgsz=64",
            "per_model.classifier.train.batch_size=8"]
    run_app("harness.cli.train", ["-m", "sweep=nf", "model=yolov5,classifier", "data.fold=0", *fast], tmp_path)
    sweep = tmp_path / "runs" / "nf"
    metrics = json.loads((sweep / "classifier" / "fold0" / "metrics.json").read_text())
    detector = json.loads((sweep / "yolov5" / "fold0" / "metrics.json").read_text())
    assert metrics["kind"] == "classifier" and metrics["split_hash"] == detector["split_hash"]
    assert metrics["auc"] is not None and 0.0 <= metrics["auc"] <= 1.0
    assert set(metrics["at_low"]) >= {"sensitivity", "specificity"} and metrics["thresholds"] == {"low": 0.08,
                                                                                                   "high": 0.95}
    assert (sweep / "classifier" / "fold0" / "abnormal.json").is_file()
    run_app("harness.cli.report", ["sweep=nf", "report.bootstrap.enabled=false"], tmp_path)
    md = (sweep / "report" / "results.md").read_text()
    assert "classifier: keep/add/replace" in md
    names = {row["name"] for row in csv.DictReader(open(sweep / "report" / "results.csv"))}
    assert "yolov5" in names and "classifier" not in names  # not a detector row
    assert (sweep / "report" / "nofinding_sweep.png").is_file()

    def predict(threshold: float) -> dict:
        run_app("harness.cli.predict", ["sweep=nf", *fast, f"predict.runs=[{sweep / 'yolov5' / 'fold0'}]",
                                        f"predict.classifier={sweep / 'classifier' / 'fold0'}", "predict.input=test",
                                        "predict.no_finding=keep_add_replace", f"nofinding.low={threshold}",
                                        f"nofinding.high={threshold}"], tmp_path)
        p = json.loads((sweep / "predict" / "abnormal.json").read_text())
        return dict(zip(p["image_ids"], p["p_abnormal"]))

    prob = predict(0.5)
    # the threshold between the middle two P(abnormal) values: both branches are exercised below
    ordered = sorted(set(prob.values()))
    assert len(ordered) >= 2, ordered
    threshold = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    assert predict(threshold) == pytest.approx(prob)
    preds = json.loads((sweep / "predict" / "predictions.json").read_text())
    dets = defaultdict(list)
    for det in preds["detections"]:
        dets[det["image_id"]].append(det)
    rows = list(csv.DictReader(open(sweep / "predict" / "submission.csv")))
    assert len(rows) == len(preds["image_ids"]) == len(prob)
    kept = replaced = 0
    for row, image_id in zip(rows, preds["image_ids"]):  # the submission follows the predictions' image order
        tokens = row["PredictionString"].split()
        assert len(tokens) % 6 == 0, row
        entries = [tokens[i:i + 6] for i in range(0, len(tokens), 6)]
        if prob[image_id] < threshold:  # below low: "No finding" only
            assert entries == [["14", "1.0000", "0", "0", "1", "1"]], row
            replaced += 1
        else:  # at or above high: the detector's boxes, each one, by descending score, and no class-14 row
            expected = [(str(d["category_id"]), f"{d['score']:.4f}")
                        for d in sorted(dets[image_id], key=lambda d: -d["score"])]
            assert [(e[0], e[1]) for e in entries] == expected, row
            kept += 1
    assert replaced, "no image was replaced by 'No finding': the replace branch was not exercised"
    assert kept, "no image kept its boxes: the keep branch was not exercised"


def test_presets_and_pipeline_switch_compose(tmp_path):
    import torch
    from test_hydra_pipeline import compose_train

    from harness.jobs.config import ConfigError, pipeline_jobs, train_spec

    demo = compose_train(["experiment=demo"])
    assert demo.pipeline.classifier is None and pipeline_jobs(demo) == (list(demo.pipeline.models), [])
    models, extra = pipeline_jobs(compose_train(["experiment=demo", "pipeline.classifier=resnet18"]))
    assert models[-1] == "classifier" and extra == ["per_model.classifier.variant=resnet18"]
    with pytest.raises(ConfigError, match="pipeline.classifier"):
        pipeline_jobs(compose_train(["pipeline.classifier=vgg11"]))
    clf = train_spec(compose_train(["experiment=demo", "model=classifier"]))
    assert (clf.variant, clf.imgsz, clf.epochs) == ("resnet18", 96, 4)
    # the original study: its thresholds, and an ImageNet classifier fetched like the detectors' weights
    study = compose_train(["experiment=original_study", "model=classifier", f"pretrained.cache_dir={tmp_path}"])
    assert (study.nofinding.low, study.nofinding.high) == (0.0, 0.99) and study.pipeline.classifier == "efficientnet_b6"
    with pytest.raises(ConfigError, match="cxr-weights imagenet/classifier/efficientnet_b6"):
        train_spec(study)
    cached = tmp_path / "imagenet" / "classifier" / "efficientnet_b6_lukemelas-24a108a5.pth"
    cached.parent.mkdir(parents=True)
    torch.save({"features.0.0.weight": torch.zeros(1), "classifier.1.weight": torch.zeros(1)}, cached)
    spec = train_spec(study)
    assert spec.weights == str(cached) and spec.weights_name == "imagenet" and spec.imgsz == 512
    # a detector checkpoint is refused for the classifier, by name
    wrong = tmp_path / "det.pth"
    torch.save({"state_dict": {"rpn_head.rpn_conv.weight": torch.zeros(1)}}, wrong)
    with pytest.raises(ConfigError, match="torchvision"):
        train_spec(compose_train(["model=classifier", f"train.weights={wrong}"]))


def test_training_set_without_normal_images_is_a_clear_error(tmp_path):
    toy = make_toy_dataset(tmp_path / "toy", n_images=8, size=32, seed=0, k=2)  # k=2: every normal image in fold 1
    split = make_split(toy["labels"], toy["folds"], 1, tmp_path / "run")
    with pytest.raises(ValueError, match=r"train\.json: the classifier needs normal and abnormal training images"):
        get_detector("classifier", _spec()).fit(split, tmp_path / "run" / "native")
    with pytest.raises(ValueError, match="unknown classifier variant 'vgg11'"):
        get_detector("classifier", _spec(variant="vgg11"))
