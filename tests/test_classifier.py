"""The "No finding" stage's classifier (adapters/classifier.py): it learns normal vs abnormal on the
toy set offline, and its P(abnormal) file and metrics come out of the shared job."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torchvision")

from adapters import get_detector, is_classifier  # noqa: E402
from adapters.base import AugSpec, TrainSpec  # noqa: E402
from harness.nofinding import abnormal_labels, roc_auc  # noqa: E402
from harness.split import make_split  # noqa: E402
from harness.weights.formats import detect_format  # noqa: E402
from toy import make_toy_dataset  # noqa: E402


def _spec(**kw) -> TrainSpec:
    base = dict(variant="resnet18", epochs=3, batch_size=8, imgsz=48, optimizer="adam", lr=1e-3, seed=0,
                aug=AugSpec(hflip=0.5), batch_predict=16)
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


def test_one_channel_stem_from_an_imagenet_style_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    import torchvision

    weights = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), weights)
    assert detect_format(weights) == "torchvision"
    clf = get_detector("classifier", _spec(weights=str(weights), channels=1))
    model = clf.build()
    assert model.conv1.in_channels == 1 and model.fc.out_features == 1
    assert "fc.weight" in clf.init["reinitialised"] and "conv1.weight" not in clf.init["reinitialised"]
    assert clf.init["loaded"] == clf.init["total"] - 2  # all but the 1000-class head (weight, bias)
