"""YOLOv5 (n/s/m/l/x) behind the shared `Detector` interface, trained and run by ultralytics 8.4.

Architecture. The model is built from ultralytics' own YOLOv5 model YAML (`yolov5n.yaml` ...
`yolov5x.yaml`, i.e. `cfg/models/v5/yolov5.yaml` at that scale), never from a `.pt` hub name. That
YAML keeps YOLOv5's CSP-Darknet backbone and PANet neck but ends in ultralytics' anchor-free,
decoupled `Detect` head (DFL box regression, task-aligned assigner) - the model ultralytics calls
"YOLOv5u". It is NOT the classic anchor-based YOLOv5 of the original Kaggle notebooks (that code
lives in the unmaintained `yolov5` PyPI package, which breaks on this stack). `versions()` and
`HEAD` say so, and results should be labelled accordingly. The model always has the 14 VinBigData
classes (names from `harness.classes.CLASSES`, class index == COCO category id).

Weights. From scratch by default (`pretrained=False`). With `spec.weights` (a LOCAL ultralytics
`.pt`), the variant's YAML architecture is built and the checkpoint's tensors are transferred by
name and shape (`pretrained=<path>`): a head trained for another class count, or a 3-channel
first conv in a 1-channel model, keeps its random init.

Data. The shared COCO split is converted inside `workdir/yolo_data/` (built in a temporary folder,
then renamed into place): `images/{train,val}/<stem>.png` are symlinks to the prepared PNGs (a copy
where symlinks are impossible), `labels/{train,val}/<stem>.txt` hold `class cx cy w h` normalised
by the PNG size (an empty file for an image without findings: a background image), and
`data.yaml` has the absolute path, the 14 names and `channels`. Nothing is written into the
dataset folder. Channels: `spec.channels == 1` trains a true 1-channel model (`channels: 1` in the
data YAML: the first conv has one input channel and images are read with IMREAD_GRAYSCALE);
3 = the gray PNG replicated into three channels (ultralytics' default reading).

Offline by construction (`ultralytics_offline`). Before ultralytics is imported, YOLO_OFFLINE=1,
YOLO_AUTOINSTALL=0 and YOLO_CONFIG_DIR=<workdir>/ultralytics_config are set, and matplotlib's
DejaVuSans.ttf is placed as `<YOLO_CONFIG_DIR>/Ultralytics/Arial.ttf` and `Arial.Unicode.ttf`
(ultralytics' dataset check otherwise downloads Arial on every train/val). If ultralytics was
already imported in this process (its config dir and ONLINE flag are fixed at import), the same
effect is patched in for the duration of the call: every `ultralytics.*` module's copy of
USER_CONFIG_DIR points at the run's folder, ONLINE/AUTOINSTALL are False, the telemetry queue is
disabled, and the settings dict is redirected to the run's own settings.json with sync and all
logger integrations off (comet, clearml, mlflow, dvc, raytune, tensorboard, wandb). The AMP
self-test (CUDA, spec.amp True) would download yolo26n.pt: it is replaced by "trust spec.amp"
while a fit runs. Everything is restored on exit (settings, module attributes, env variables,
torch's thread count, which ultralytics' `select_device` resets) so two fits in one process do
not see each other's state.

Shared augmentation spec -> ultralytics train arguments:
    AugSpec.rotate_deg -> `degrees`  (random rotation in [-deg, +deg], boxes re-fitted to the
                                      rotated corners, ultralytics' `RandomPerspective`)
    AugSpec.hflip      -> `fliplr`   (probability of a horizontal flip)
    AugSpec.vflip      -> `flipud`   (probability of a vertical flip)
ultralytics' other augmentations stay its own recipe (mosaic 1.0 switched off for the last 10
epochs, hsv_v 0.4, translate 0.1, scale 0.5), except hsv_h and hsv_s, set to 0 because they do
nothing to a gray image (`XRAY_AUG_DEFAULTS`); the protocol card lists them.
Any key in `spec.native` overrides these and everything else below (passed to `model.train`; the
prediction-time keys `iou` and `imgsz` reach `model.predict` too, and `multi_label` goes to prediction
only). `spec.reasons` says why a native key is set; the protocol card flags a deviation without one.

Training arguments: epochs, batch (= spec.batch_size; ultralytics still accumulates gradients up to
its nominal batch `nbs` 64 and scales weight decay by batch*accumulate/nbs - its recipe; set
native {"nbs": N} to change), imgsz, optimizer (sgd -> "SGD", adam -> "Adam", adamw -> "AdamW"),
lr0 = spec.lr, weight_decay, seed, deterministic=True, device (cpu; cuda/cuda:N -> "0"/"N";
spec.gpus = N > 1 -> "0,1,...,N-1": ultralytics' own DDP in subprocesses, CUDA only, batch = the
total over the N GPUs; the callbacks below reach its workers, which ultralytics pickles them into),
workers, amp, project=<workdir>, name="train", val=False (the val split is scored once after the
last epoch by ultralytics, as a log line; cxr-bench scores `predict()`'s output), plots=False.
`fit` returns `train/weights/last.pt` - the last epoch, never a "best" picked on the val fold.
Resuming (`adapters.resume`): save_period = spec.checkpoint_interval makes ultralytics write
`train/weights/epoch<N>.pt` (N counted from 0); a callback records each as resumable, keeps the newest
spec.checkpoint_keep and updates the progress file. A rerun loads the chosen one and trains with
ultralytics' own `resume=True` (args, optimizer, EMA and epoch from the checkpoint); ultralytics
cannot resume a finished training, so a checkpoint of the last epoch is never chosen.

Training images: the shared protocol's `spec.negatives`. "drop" leaves the images without findings
out of the YOLO train folder (the Faster R-CNNs' FILTER_EMPTY_ANNOTATIONS / filter_empty_gt);
"keep" writes them with an empty label file, which ultralytics trains on as background images.
What ultralytics consumed is read back from its built training dataset (`labels`) after the fit.

Prediction (the shared protocol): `model.predict` on the PNG paths in batches of
spec.batch_predict through `MultiLabelPredictor`, ultralytics' DetectionPredictor with its NMS called
as ultralytics' own validation calls it (`multi_label=True`: a box keeps every class above the
threshold, as both Faster R-CNN heads do); conf=spec.score_thr, max_det=spec.max_det, NMS IoU
spec.nms_iou (class-aware), imgsz=spec.imgsz (letterboxed; ultralytics maps boxes back to the PNG
pixels, `Results.boxes.xyxy`). native {"iou": x}, {"imgsz": n} or {"multi_label": False} override
these for prediction too. The harness's shared post-processing (`adapters.postprocess`) follows.

Read back for the protocol card (`readback`, into `Detector.ran`), by an `on_train_end` callback (on
rank 0 of a DDP fit, which writes it for the job's process): `trainer.args` (image size, flips/rotation,
ultralytics' own augmentation incl. mosaic, seed, pretrained), `trainer.epochs`, the train loader's
length and ultralytics' own warm-up rule (`_get_warmup_iterations`, which keeps the last epoch out of
warm-up), the built model's YAML and input channels, the optimizer's parameter groups (lr, weight decay
on weights / norm layers), the gradient clipping it called (single process), and whether background
images were in its dataset; when predicting, the predictor's resolved args (conf, iou, max_det,
augment: ultralytics' own TTA), its resolved image size (`predictor.imgsz`, a stride multiple), its
multi-label NMS switch and its model's input channels.

Modules: `config` (spec -> arguments), `data` (the YOLO dataset folder), `offline` (the sandbox),
`framework` (predictor, training-set counts), `readback` (what it ran), `detector` (the adapter).
"""
from adapters.yolov5.config import (FRAMEWORK_AUG_KEYS, HEAD, PREDICT_KEYS, VARIANTS, XRAY_AUG_DEFAULTS, aug_args,
                                    predict_kwargs, train_args, yolo_device)
from adapters.yolov5.data import write_yolo_dataset
from adapters.yolov5.detector import YoloV5Detector
from adapters.yolov5.framework import (cached_training_set_counts, describe_transforms, multi_label_predictor,
                                       training_set_counts)
from adapters.yolov5.offline import ultralytics_offline

__all__ = ["FRAMEWORK_AUG_KEYS", "HEAD", "PREDICT_KEYS", "VARIANTS", "XRAY_AUG_DEFAULTS", "YoloV5Detector",
           "aug_args", "cached_training_set_counts", "describe_transforms", "multi_label_predictor",
           "predict_kwargs", "train_args", "training_set_counts", "ultralytics_offline", "yolo_device",
           "write_yolo_dataset"]
