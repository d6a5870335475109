"""YOLO trains where polars is missing (the GPU test machine): ultralytics 8.4.190's
`BaseTrainer.read_results_csv` imports polars before its try, at every epoch end (`save_model`).

A fresh Python process hides polars (a meta-path finder refusing it: `import polars` raises
ImportError there, as on a machine without it) and trains the real ultralytics on CPU:
  1. the adapter's `fit`, 2 epochs (the offline sandbox's class-level replacement);
  2. ultralytics' own `YOLO(...).train`, 1 epoch, with only the adapter's callback and without the
     sandbox's replacement, as in one of ultralytics' DDP workers (DDP itself needs CUDA).
Each checkpoint must hold the training history read from results.csv without polars.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from conftest import ROOT


SCRIPT = r"""
import importlib.abc, json, sys
from pathlib import Path

class HidePolars(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("polars", "_polars_runtime_32", "_polars_runtime"):
            raise ImportError(f"No module named {name!r} (hidden by the test)")
        return None

sys.meta_path.insert(0, HidePolars())
for name in [n for n in sys.modules if n.split(".")[0] in ("polars", "_polars_runtime_32")]:
    del sys.modules[name]
try:
    import polars  # noqa: F401
    hidden = False
except ImportError:
    hidden = True

import torch
torch.set_num_threads(1)
from adapters import TrainSpec, get_detector
import adapters.yolov5 as ay
import adapters.yolov5.compat as ayc
import adapters.yolov5.offline as ayo
from harness.split import make_split
from toy import make_toy_dataset

work = Path(sys.argv[1])
toy = make_toy_dataset(work / "toy", n_images=16, size=64, seed=0, k=2)
split = make_split(toy["labels"], toy["folds"], 0, work / "split")
spec = TrainSpec(epochs=2, batch_size=4, imgsz=64, optimizer="sgd", lr=0.01, seed=0, workers=0,
                 native={"warmup_epochs": 0, "nbs": 4})
det = get_detector("yolov5", spec)
from ultralytics.utils.callbacks import base
pickled = {}  # the callbacks ultralytics would pickle into DDP workers (trainer.callbacks)
base.default_callbacks["on_train_end"].append(
    lambda trainer: pickled.update(callback=ayc.survive_missing_polars in trainer.callbacks["on_pretrain_routine_start"]))
adapter_ckpt = det.fit(split, work / "adapter")
base.default_callbacks["on_train_end"].pop()

def history(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["train_results"]

# a DDP worker's view: no class-level replacement, only the callback the adapter registers
ayo.offline_patches = lambda: []
args = ay.train_args(TrainSpec(**{**spec.to_dict(), "epochs": 1}), work / "adapter" / "yolo_data" / "data.yaml",
                     work / "worker")
with ay.ultralytics_offline(work / "worker" / "ultralytics_config"):
    from ultralytics import YOLO
    from ultralytics.engine.trainer import BaseTrainer
    class_patched = BaseTrainer.read_results_csv.__module__ != "ultralytics.engine.trainer"
    model = YOLO("yolov5n.yaml", task="detect")
    model.add_callback("on_pretrain_routine_start", ayc.survive_missing_polars)
    model.train(**args)
    worker_ckpt = Path(model.trainer.save_dir) / "weights" / "last.pt"
print("RESULT " + json.dumps({"hidden": hidden, "polars_loaded": "polars" in sys.modules,
                              "class_patched_in_worker": class_patched,
                              "callback_for_workers": pickled.get("callback"),
                              "adapter": history(adapter_ckpt), "worker": history(worker_ckpt)}))
"""


def test_yolo_trains_two_epochs_without_polars(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "MPLBACKEND": "Agg",
           "YOLO_CONFIG_DIR": str(tmp_path / "yolo_config")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["hidden"] and not result["polars_loaded"]
    assert result["callback_for_workers"]  # the adapter's trainer carries the callback to DDP workers
    assert not result["class_patched_in_worker"]  # the second run relied on the callback alone
    adapter, worker = result["adapter"], result["worker"]
    assert adapter["epoch"] == [1, 2] and worker["epoch"] == [1]  # results.csv read without polars
    assert all(isinstance(v, float) and v >= 0 for v in adapter["train/box_loss"])
