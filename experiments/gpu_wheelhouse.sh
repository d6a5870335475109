#!/usr/bin/env bash
# Assemble the wheelhouse experiments/bench_gpu.py needs on a GPU machine without network that has its
# own Python 3.12 + torch 2.11/torchvision 0.26 (CUDA 13) but not the rest (the GPU test machine;
# ../shared/gpu/README.md lists what is missing there). Runs on a machine where pip reaches the index:
#
#   bash experiments/gpu_wheelhouse.sh [DIR]        # default DIR: gpu-wheelhouse/ (git-ignored)
#
# DIR then holds cp312/py3 wheels (pure-Python sdists are built into py3 wheels here), the cp310
# sal-detectron2 wheel (its Python code runs on 3.12; its compiled _C is dropped on install), the
# mmcv 2.1.0 wheel with CUDA ops built on that machine (MMCV_WHEEL, default ../shared/gpu/), and a
# setuptools<81 wheel (mmcv's and detectron2's `import pkg_resources`). Without the mmcv wheel, mmcv
# is simply missing there: experiments/run_bench_gpu.sh's import check then skips mmdet (its pair and
# its zoo smoke), names why in the results, and runs the rest; it never builds mmcv. polars (~50 MB) is
# left out: ultralytics 8.4.190 reads its results CSV with it at every epoch end, and the adapters
# replace that reading where polars is missing (adapters/yolov5/compat.py). The total is kept under
# MAX_MIB (default 60), small enough to copy to the GPU machine in one go.
# Then copy DIR next to the repository there and run experiments/run_bench_gpu.sh (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-gpu-wheelhouse}
MMCV_WHEEL=${MMCV_WHEEL:-$( (ls ../shared/gpu/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl \
  /work/shared/gpu/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl 2>/dev/null || true) | head -1)}
PIP=${PIP:-$(command -v pip3 || command -v pip)}
mkdir -p "$DIR"
say() { printf '[wheelhouse] %s\n' "$*"; }

# exact pins: requirements/constraints.txt where it has them (the same versions as this venv)
pin() { grep -i -E "^$1==" requirements/constraints.txt | head -1 || true; }
PACKAGES=(ultralytics ultralytics-thop ultralytics-platform pycocotools fvcore iopath yacs termcolor portalocker
          hydra-core omegaconf antlr4-python3-runtime ensemble-boxes pydicom mmengine addict yapf platformdirs
          mmdet shapely terminaltables tabulate cloudpickle rich markdown-it-py mdurl pygments six)
SPECS=()
for p in "${PACKAGES[@]}"; do
  s=$(pin "$p"); SPECS+=("${s:-$p}")
done
SPECS+=("setuptools<81")

say "binary wheels for CPython 3.12 manylinux x86_64 (or pure Python)"
missing=()
for s in "${SPECS[@]}"; do
  if ! "$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
      --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d "$DIR" "$s" 2>/dev/null; then
    missing+=("$s")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  say "no wheel on the index for: ${missing[*]}: building pure-Python wheels from their sdists"
  "$PIP" wheel -q --no-deps -w "$DIR" "${missing[@]}"
  for s in "${missing[@]}"; do  # a built wheel must be pure Python to run on 3.12
    name=$(echo "${s%%[=<>]*}" | tr - _)
    compgen -G "$DIR/${name}-*-py*-none-any.whl" >/dev/null \
      || { say "ERROR: $s did not give a pure-Python wheel"; exit 1; }
  done
fi

say "sal-detectron2 0.7.2 (cp310 wheel; installed with --target and without _C there)"
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$DIR" sal-detectron2==0.7.2

if [ -n "$MMCV_WHEEL" ] && [ -f "$MMCV_WHEEL" ]; then
  cp "$MMCV_WHEEL" "$DIR/"
else
  say "WARNING: no mmcv wheel with CUDA ops (set MMCV_WHEEL=path): mmcv is left out, so the GPU run skips mmdet (named in its results); it does not build mmcv"
fi
total=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
say "$(ls "$DIR"/*.whl | wc -l) wheels, $((total / 1024 / 1024)) MiB in $DIR"
if [ "$total" -gt $((${MAX_MIB:-60} * 1024 * 1024)) ]; then
  say "ERROR: over ${MAX_MIB:-60} MiB (MAX_MIB): too large to copy to the GPU machine in one go"; exit 1
fi
