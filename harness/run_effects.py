"""What each run setting can change in a job's numbers (one text, used by the log, metrics.json and
the protocol card).

The run settings (`train.device`, `train.gpus`, `train.workers`, `train.batch_predict`, and the host)
are not part of a job's config hash: a rerun on other hardware skips a finished job and resumes an
interrupted one. They do not change *what* is trained, but they can change the numbers: a result
reproduced under other run settings is close, not guaranteed identical. docs/run-identity.md.
"""
from __future__ import annotations

EFFECTS = {
    "device": "with train.amp=true mixed precision runs only on CUDA (fp32 on CPU), and CPU and GPU kernels "
              "round differently",
    "gpus": "data-parallel training gives each process batch_size/gpus images: BatchNorm statistics are "
            "computed per process, and the per-process batch differs",
    "workers": "each data-loader worker draws augmentations from its own seed: other workers, other random "
               "flips/crops/mosaics",
    "batch_predict": "ultralytics pads every image of a prediction batch to the batch's letterbox shape, so "
                     "its boxes (and scores) can differ with the batch size",
    "host": "another machine or library build can round differently",
}

NOTE = ("Not part of the config hash (a rerun on other hardware resumes or skips the job), but not without "
        "effect: " + "; ".join(f"{key}: {text}" for key, text in EFFECTS.items()) + ".")


def effects(changed: list[str]) -> list[str]:
    """"<setting>: <what it can change>" for each changed run setting that has a known effect."""
    return [f"{key}: {EFFECTS[key]}" for key in changed if key in EFFECTS]
