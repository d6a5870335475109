"""Detectron2 Faster R-CNN behind the cxr-bench `Detector` interface.

Why this module looks the way it does
-------------------------------------
* Training runs through detectron2's own machinery: a `DefaultTrainer` subclass (its hooks, its
  `WarmupMultiStepLR` from `solver.build_lr_scheduler`, its `DetectionCheckpointer`, its metric
  printer/JSON writer). The subclass only swaps in what cxr-bench needs: the optimizer choice, the
  augmentation list, writers that need no tensorboard, and an atomic checkpoint save.
* Variants come from detectron2's model-zoo configs (shipped inside the package, read from disk, never
  downloaded): "R50-FPN" = `COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml` (the original study's model),
  "R101-FPN" = `COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml`, and "R18-FPN" = the R50 config with
  `RESNETS.DEPTH=18, RES2_OUT_CHANNELS=64` for CPU demos. Always `ROI_HEADS.NUM_CLASSES = 14`.
* Weights: without `spec.weights` the model trains from scratch, and the default FrozenBN R50 config
  diverges within a few iterations there, so scratch runs use detectron2's own scratch recipe
  (`Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml`): `RESNETS.NORM=GN`, `FPN.NORM=GN`,
  `RESNETS.STRIDE_IN_1X1=False`, `BACKBONE.FREEZE_AT=0`. With `spec.weights` (a LOCAL COCO
  checkpoint) the standard zoo config is used with `MODEL.WEIGHTS` = that file; mismatching class
  heads are skipped by detectron2's checkpointer. `MODEL.WEIGHTS` is never a URL.
* Images are the prepared 8-bit grayscale PNGs. detectron2's own reader (`detection_utils.read_image`
  with `INPUT.FORMAT="BGR"`) converts mode "L" to 3 identical channels, for training and prediction
  alike; `spec.channels` is therefore not honoured (a 3-channel model sees a replicated gray image):
  the protocol card reads the model's input channels back, so channels=1 shows as a difference.
  16-bit PNGs would be clipped by that reader, so they are refused with an error naming the file.
* Datasets are registered from the split's COCO files with `load_coco_json` under names unique to the
  job (uuid) and removed from `DatasetCatalog`/`MetadataCatalog` afterwards, so several jobs in one
  process never collide. The COCO category ids are 0..n-1 (checked once, where the split is made:
  `harness.split.check_categories`), so `load_coco_json`'s sorted-id mapping is the identity.

Mapping of the shared settings
------------------------------
=====================  ======================================================================
TrainSpec              detectron2
=====================  ======================================================================
epochs                 SOLVER.MAX_ITER = ceil(epochs * n_train / batch_size); n_train counts the
                       images the loader keeps (images without boxes only with negatives=keep);
                       what the loader consumed is read back from the dataset list it was built on
                       SOLVER.STEPS scaled from the zoo schedule (3x: 210k/250k of 270k → 78%, 93%)
                       SOLVER.WARMUP_ITERS = min(zoo value 1000, ceil(10% of MAX_ITER))
batch_size             SOLVER.IMS_PER_BATCH
imgsz                  INPUT.MIN_SIZE_TRAIN=(imgsz,), MAX_SIZE_TRAIN=imgsz, MIN/MAX_SIZE_TEST=imgsz
                       (ResizeShortestEdge: the longer side ends at imgsz for non-square images)
optimizer sgd          detectron2's default SGD (BASE_LR, MOMENTUM 0.9, WEIGHT_DECAY)
optimizer adam/adamw   torch.optim.Adam/AdamW over `get_default_optimizer_params` (same per-parameter
                       groups as detectron2's SGD: norm/bias weight decay rules), lr=BASE_LR,
                       weight_decay=WEIGHT_DECAY, with detectron2's gradient clipping wrapper;
                       recorded as SOLVER.OPTIMIZER in the dumped config
lr / weight_decay      SOLVER.BASE_LR / SOLVER.WEIGHT_DECAY
seed                   SEED, plus `seed_all_rng(seed)` before building the model and the loader
                       (weights init, sampler order and augmentation draws are then reproducible)
device                 MODEL.DEVICE
gpus                   N > 1: `detectron2.engine.launch(num_gpus_per_machine=N)` (NCCL; gloo on a
                       CPU-only machine, where DDP gets no device_ids); IMS_PER_BATCH stays the total
workers                DATALOADER.NUM_WORKERS
amp                    SOLVER.AMP.ENABLED (CUDA only: ignored with a warning on CPU)
weights                MODEL.WEIGHTS (local file) else "" with the GN scratch recipe
negatives              DATALOADER.FILTER_EMPTY_ANNOTATIONS (drop -> True, keep -> False)
score_thr / max_det    MODEL.ROI_HEADS.SCORE_THRESH_TEST / TEST.DETECTIONS_PER_IMAGE
nms_iou                MODEL.ROI_HEADS.NMS_THRESH_TEST (per-class NMS, detectron2's default 0.5)
checkpoint_interval    SOLVER.CHECKPOINT_PERIOD = interval x iterations per epoch (resumable checkpoints)
checkpoint_keep        PeriodicCheckpointer(max_to_keep=keep); a rerun resumes with
                       `resume_or_load(resume=True)` from the checkpoint `adapters.resume` picks
native                 {"KEY.PATH": value} merged last with cfg.merge_from_list (wins over all; the
                       prediction config too, so e.g. INPUT.MIN/MAX_SIZE_TEST reach prediction)
=====================  ======================================================================

Augmentation mapping (AugSpec → detectron2 transforms, in this order, via a `DatasetMapper` built
with `augmentations=[...]`; INPUT.RANDOM_FLIP is set to "none" because the list replaces the default):
  1. T.ResizeShortestEdge((imgsz,), max_size=imgsz)                   always
  2. T.RandomFlip(prob=hflip, horizontal=True, vertical=False)        when hflip > 0
  3. T.RandomFlip(prob=vflip, horizontal=False, vertical=True)        when vflip > 0
  4. T.RandomRotation(angle=[-d, d], expand=False)                     when rotate_deg d > 0
     (boxes become the axis-aligned box around the rotated corners, clipped to the image)

Read back for the protocol card (`readback`, into `Detector.ran`): after training, the trainer's own
config (`trainer.cfg`, which DefaultTrainer rescales with auto_scale_workers: batch, lr, iterations,
steps, warm-up, clipping, seed, weights), `trainer.max_iter`, the built DatasetMapper's augmentations
(the training size and flips: they replace the config's INPUT resize and RANDOM_FLIP), the built
dataset's background images, the model's input channels and the optimizer's parameter groups; when
predicting, the built model's box predictor (score threshold, NMS IoU, detections per image, its
every-class inference) and the test-time ResizeShortestEdge.

Modules: `config` (spec -> CfgNode, augmentations), `data` (catalog registration), `trainer`
(DefaultTrainer subclass, log file), `readback` (what it ran), `detector` (the adapter).
"""
from adapters.detectron2_frcnn.config import (VARIANTS, build_config, checkpoint_tensors, merge_native,
                                              predict_resize, train_augmentations, zoo_config_path, zoo_solver)
from adapters.detectron2_frcnn.data import registered_split
from adapters.detectron2_frcnn.detector import Detectron2FasterRCNN
from adapters.detectron2_frcnn.trainer import trainer_class

__all__ = ["VARIANTS", "Detectron2FasterRCNN", "build_config", "checkpoint_tensors", "merge_native",
           "predict_resize", "registered_split", "train_augmentations", "trainer_class", "zoo_config_path",
           "zoo_solver"]
