"""The data pipeline: DICOM → PNG + manifest, train.csv → validated rows → fused COCO labels, folds, stats.

Framework-free. `harness.data.pipeline.prepare_dataset` runs every step; each module can be used alone.
"""
