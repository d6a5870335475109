"""The synthetic VinBigData-format dataset: cxr-bench's embedded default data.

`generate(out_dir, preset, seed)` (harness.synth.dataset) writes the real layout; anatomy and lesions
draw the images, readers plan the findings and reader boxes, dicomio writes the DICOM files.
"""
from harness.synth import anatomy, dicomio, lesions
from harness.synth.dataset import PRESETS, VERSION, Preset, generate

__all__ = ["PRESETS", "Preset", "VERSION", "generate", "anatomy", "dicomio", "lesions"]
