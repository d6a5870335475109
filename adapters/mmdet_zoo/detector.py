"""`MMDetDetector`: the MMDetection Faster R-CNN adapter made general over mmdet's packaged configs."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from adapters.aligned import aligned_family
from adapters.byarch import ByArchitecture, with_architecture
from adapters.card import protocol_row
from adapters.mmdet_frcnn.config import param_scheduler, train_config
from adapters.mmdet_frcnn.detector import MMDetFasterRCNN
from adapters.mmdet_zoo import aligned
from adapters.mmdet_zoo.config import arch_model_config
from adapters.trainset import iterations_per_epoch
from adapters.zoo import MMDET
from harness.split import Split


class MMDetDetector(ByArchitecture, MMDetFasterRCNN):
    """Any `adapters.zoo.MMDET` architecture (spec.variant = model.arch) via MMDetection. `aligned`
    (the `*_aligned` presets): aligned with detectron2's build of the same architecture
    (adapters.aligned): its overrides join spec.native with their reasons, so the card states them."""

    name = "mmdet"
    zoo_framework = "mmdet"
    default_variant = "retinanet_r50_fpn_1x_coco"
    variants = tuple(MMDET)
    aligned = False

    def __init__(self, spec) -> None:
        super().__init__(spec)
        if self.aligned:
            native, reasons = aligned.overrides(self.arch.family)
            self.spec = dataclasses.replace(self.spec, native={**native, **(self.spec.native or {})},
                                            reasons={**reasons, **(self.spec.reasons or {})})

    def model_config(self):
        return arch_model_config(self.spec, aligned=self.aligned)

    def build_config(self, split: Split, workdir: Path, run_name: str | None = None):
        schedule = aligned.iteration_schedule() if self.aligned else None
        return train_config(self.spec, split, workdir, run_name, self.model_config(), iteration_schedule=schedule)

    def architecture_facts(self) -> dict:
        """What the built model and its training config are, by category (adapters.mmdet_zoo.facts),
        for the report's list of differences between frameworks (built on CPU, not trained)."""
        from adapters.mmdet_zoo.facts import facts

        return facts(self)

    def recipe(self) -> list[dict]:
        ran = self.ran.details
        norm = "GN" if self.spec.weights is None else "BN"
        built = f"{norm} backbone+neck, {ran.get('head') or 'packaged head'}"
        family = aligned_family(self.arch.family, self.aligned)
        rows = with_architecture(super().recipe(), "mmdet", self.arch.config, family, built)
        return self._aligned_schedule_rows(rows, ran) if self.aligned else rows

    def _aligned_schedule_rows(self, rows: list[dict], ran: dict) -> list[dict]:
        """The schedule rows of the aligned variant: its milestones are iterations (detectron2's 3x
        fractions by iteration), not the epochs the Faster R-CNN recipe reads them as."""
        steps, length, warmup = aligned.iteration_schedule()
        n_images = (self.consumed or {}).get("images")
        total = self.spec.epochs * iterations_per_epoch(n_images, self.spec.batch_size) if n_images else None
        planned = param_scheduler(self.spec, n_images, aligned.iteration_schedule())[1]["milestones"] if n_images \
            else None
        milestones = ran.get("milestones") if ran else planned
        value = (f"x{ran.get('gamma', 0.1):g} at iterations {milestones} of {total}" if total
                 else f"x0.1 at {[round(s / length, 3) for s in steps]} of the iterations")
        note = (f"aligned: detectron2's 3x schedule (steps at {steps[0]} and {steps[1]} of {length} iterations) at "
                f"the same fractions of the run, by iteration; warmup {warmup} iterations capped at 10% of the run")
        out = []
        for row in rows:
            if row.get("key") == "schedule":
                row = protocol_row("schedule", row.get("label", "schedule"), value, row.get("native"), note=note)
            out.append(row)
        return out


class MMDetRetinaNet(MMDetDetector):
    """Preset: RetinaNet R50-FPN (experiment=same_arch)."""

    name, default_variant = "mmdet_retinanet", "retinanet_r50_fpn_1x_coco"


class MMDetCascade(MMDetDetector):
    """Preset: Cascade R-CNN R50-FPN (experiment=same_arch, experiment=vinbigdata_2nd)."""

    name, default_variant = "mmdet_cascade", "cascade-rcnn_r50_fpn_1x_coco"


class MMDetRetinaNetAligned(MMDetRetinaNet):
    """Preset: RetinaNet R50-FPN aligned with detectron2's (experiment=same_arch)."""

    name, aligned = "mmdet_retinanet_aligned", True


class MMDetCascadeAligned(MMDetCascade):
    """Preset: Cascade R-CNN R50-FPN aligned with detectron2's (experiment=same_arch)."""

    name, aligned = "mmdet_cascade_aligned", True
