"""MMDetection Faster R-CNN behind the shared `Detector` interface (mmdet 3.3 / mmengine 0.10 / mmcv 2.1).

Model variants come from mmdet's *packaged* configs (`mmdet/.mim/configs`), loaded with mmengine's
`Config.fromfile`, so the architecture is the one mmdet ships, not a re-typed copy:

    "R18-FPN"   faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py with ResNet depth 18,
                FPN in_channels [64, 128, 256, 512]  (small, for CPU demos)
    "R50-FPN"   faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py
    "R101-FPN"  faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py

All get `roi_head.bbox_head.num_classes` = the spec's class count (the split's categories).

From scratch (`spec.weights` None, the default) the ImageNet download is switched off
(`backbone.init_cfg=None`; mmdet would otherwise fetch torchvision://resnet50) and the network is
normalised so it trains from random init, as mmdet's `configs/scratch` recipe does: GroupNorm(32) in
backbone and FPN, no frozen stages, and the 4-conv + 1-fc GN box head (R50/R101). The R18 CPU
variant keeps the packaged 2-fc box head: the 4-conv GN head costs ~8x its FLOPs per RoI on CPU.
With `spec.weights` (a LOCAL mmdet detector checkpoint) the packaged BN architecture is kept and the
file becomes mmengine's `load_from`; box-head layers whose shape differs (e.g. 80 COCO classes)
are skipped by mmengine's non-strict loading and start from random init.

Shared augmentation spec -> mmdet train pipeline (after `Resize`, so rotation runs at training size):
    AugSpec.rotate_deg -> `Rotate(prob=1.0, min_mag=0.0, max_mag=deg, reversal_prob=0.5,
                           img_border_value=0)`: angle ~ U[-deg, +deg] (magnitude uniform in
                           [0, deg], sign flipped with p 0.5); boxes are rotated as their 4 corners
                           and replaced by the enclosing box, clipped to the image (mmdet's
                           `HorizontalBoxes.project_`); black border as on an X-ray.
    AugSpec.hflip      -> `RandomFlip(prob=hflip, direction='horizontal')`
    AugSpec.vflip      -> `RandomFlip(prob=vflip, direction='vertical')`
Two separate flips, not one `RandomFlip(prob=[h, v], direction=[...])`: with list probabilities mmcv
picks at most ONE direction (h with p h, v with p v, none with p 1-h-v, and requires h+v <= 1), while
the study's albumentations flips are independent. A zero probability / angle drops the transform.
Images are resized to `spec.imgsz` on the longer side (`Resize(scale=(s, s), keep_ratio=True)`).

Training runs through mmengine's `Runner` with mmdet's own recipe: `EpochBasedTrainLoop(max_epochs=
spec.epochs)`, an `OptimWrapper` (sgd -> SGD(momentum 0.9), adam -> Adam, adamw -> AdamW; spec.lr and
weight_decay; no gradient clipping, as mmdet's Faster R-CNN configs; no decay on norm layers in the
scratch recipe, as configs/scratch; `AmpOptimWrapper` when spec.amp on CUDA), warmup (`LinearLR`,
1/1000 -> 1 over min(500, 10% of the iterations)) then `MultiStepLR` x0.1 at the native schedule's
fractions of training (pretrained: the 1x schedule's 8/12 and 11/12; scratch: the 6x scratch
schedule's 65/73 and 71/73), and `CheckpointHook(interval=spec.checkpoint_interval,
max_keep_ckpts=spec.checkpoint_keep)` (each ~100-300 MB). Resuming (`adapters.resume`): a hook after
the CheckpointHook records each `epoch_<k>.pth` as resumable and updates the progress file; a rerun
sets mmengine's `resume=True` with `load_from` = the chosen checkpoint (model, optimizer, schedulers,
epoch/iteration, seed). Training images without boxes follow the shared protocol's `spec.negatives`
(`filter_empty_gt`: drop -> True, keep -> False); what mmdet consumed is read back from the
runner's built training dataset. Validation keeps every image.
At the end of training (mmengine always validates after the last epoch) mmdet's own `CocoMetric`
scores the val split (logged as `coco/bbox_mAP_50` etc., a cross-check of the harness score; its
`iou_thrs=[0.4]` is unusable: pycocotools' summarize fails on a list under numpy 2). `spec.native`
is merged last into the Config with `Config.merge_from_dict`, e.g. {"val_cfg": None,
"val_dataloader": None, "val_evaluator": None} to skip that evaluation, or
{"model.rpn_head.anchor_generator.scales": [4]}; keys under "model." are merged into the model
config for prediction too, so training and prediction use the same model.

Data-parallel (`spec.gpus` = N > 1): mmengine's Runner with `launcher="pytorch"` in N processes
started as torchrun would (`adapters.ddp.spawn`: RANK/LOCAL_RANK/WORLD_SIZE, process group joined
first, NCCL on GPUs, gloo on CPU), MMDistributedDataParallel and the DefaultSampler's shards; the
dataloader batch is spec.batch_size / N per process, so the total stays spec.batch_size; rank 0
writes the checkpoints and reports back (`ddp_result.json`).

Prediction (the shared protocol): mmdet's test pipeline and `model.test_step`, whose RCNN test
config gets score_thr = spec.score_thr, max_per_img = spec.max_det and a per-class NMS at
spec.nms_iou; then the harness's shared post-processing (`adapters.base.postprocess`).

mmengine keeps process-wide singletons (DefaultScope, MMLogger, MessageHub, Visualizer) keyed by
name; the packaged config names its visualizer "visualizer", so a second job in the same process
would get the first job's visualizer (and its output folder). Each job here gets a unique
experiment and visualizer name, runs inside `DefaultScope.overwrite_default_scope("mmdet")` (the
job's scope is dropped afterwards), and closes its log file handlers when done.

Checkpoints: torch >= 2.6 loads with `weights_only=True` by default and refuses mmengine
checkpoints (they pickle config/meta objects). cxr-bench's own checkpoints and the user's local
`spec.weights` are trusted files: they are loaded with `weights_only=False` explicitly, through a
`cxrbench-trusted://` scheme registered with mmengine's `CheckpointLoader` (additive: mmengine's
own loaders are untouched). Everything mmengine writes goes under `workdir` (its `work_dir`).

Read back for the protocol card (`readback`, into `Detector.ran`): after training, the Runner's train
loop (`runner.max_epochs`, `runner.iter`), seed and load_from, its built dataset (images without a box
after its filter; pipeline: size, flips, rotation, any other transform), model (input channels,
backbone norm, box head), optimizer wrapper (param groups: lr, weight decay on weights / norm layers;
gradient clipping) and parameter schedulers (milestones, warmup); when predicting, the built model's
`test_cfg` (score threshold, NMS IoU, detections per image), its head's every-class inference and the
test pipeline's size.

Modules: `config` (spec -> Config pieces), `runner` (trusted loader, Runner, hooks), `readback` (what
it ran), `detector` (the adapter).
"""
from adapters.mmdet_frcnn.config import (GRAY_MEAN, GRAY_STD, TRUSTED_PREFIX, VARIANTS, aug_transforms, model_native,
                                         optimizer_cfg, packaged_config_dir, schedule_cfg, test_pipeline,
                                         train_pipeline)
from adapters.mmdet_frcnn.detector import MMDetFasterRCNN
from adapters.mmdet_frcnn.runner import load_trusted_checkpoint, register_trusted_loader, training_set_counts

__all__ = ["GRAY_MEAN", "GRAY_STD", "TRUSTED_PREFIX", "VARIANTS", "MMDetFasterRCNN", "aug_transforms",
           "load_trusted_checkpoint", "model_native", "optimizer_cfg", "packaged_config_dir", "register_trusted_loader",
           "schedule_cfg", "test_pipeline", "train_pipeline", "training_set_counts"]
