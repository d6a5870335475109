#!/usr/bin/env bash
# Assemble the wheelhouse experiments/bench_gpu.py needs on the GPU test machine, which has no
# network and its own Python 3.12 + torch 2.11/torchvision 0.26 (CUDA 13) but not the rest
# (../shared/gpu/README.md lists what is missing). Runs here, where pip can reach the package index:
#
#   bash experiments/gpu_wheelhouse.sh [OUT]        # default OUT: gpu-wheelhouse/ (git-ignored)
#
# OUT then holds cp312/py3 wheels (pure-Python sdists are built into py3 wheels here), the cp310
# sal-detectron2 wheel (its Python code runs on 3.12; its compiled _C is dropped on install), the
# mmcv 2.1.0 wheel with CUDA ops built on that machine (MMCV_WHEEL, default ../shared/gpu/), and a
# setuptools<81 wheel (mmcv's and detectron2's `import pkg_resources`). polars (~50 MB) is left out:
# ultralytics 8.4.190 reads its results CSV with it at every epoch end, and the adapters replace that
# reading where polars is missing (adapters/yolov5/compat.py). The total must stay under
# MAX_MIB (default 60): the device run carries at most 64 MiB.
# experiments/run_bench_gpu.sh installs from OUT offline and runs the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-wheelhouse}
MMCV_WHEEL=${MMCV_WHEEL:-$( (ls ../shared/gpu/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl \
  /work/shared/gpu/mmcv-2.1.0-cp312-cp312-linux_x86_64.whl 2>/dev/null || true) | head -1)}
PIP=${PIP:-$(command -v pip3 || command -v pip)}
mkdir -p "$OUT"
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
      --platform any -d "$OUT" "$s" 2>/dev/null; then
    missing+=("$s")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  say "no wheel on the index for: ${missing[*]}: building pure-Python wheels from their sdists"
  "$PIP" wheel -q --no-deps -w "$OUT" "${missing[@]}"
  for s in "${missing[@]}"; do  # a built wheel must be pure Python to run on 3.12
    name=$(echo "${s%%[=<>]*}" | tr - _)
    compgen -G "$OUT/${name}-*-py*-none-any.whl" >/dev/null \
      || { say "ERROR: $s did not give a pure-Python wheel"; exit 1; }
  done
fi

say "sal-detectron2 0.7.2 (cp310 wheel; installed with --target and without _C there)"
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$OUT" sal-detectron2==0.7.2

if [ -n "$MMCV_WHEEL" ] && [ -f "$MMCV_WHEEL" ]; then
  cp "$MMCV_WHEEL" "$OUT/"
else
  say "WARNING: no mmcv wheel with CUDA ops (set MMCV_WHEEL=path): the GPU run will build mmcv (~5 min) or skip mmdet"
fi
total=$(du -cb "$OUT"/*.whl | tail -1 | cut -f1)
say "$(ls "$OUT"/*.whl | wc -l) wheels, $((total / 1024 / 1024)) MiB in $OUT"
if [ "$total" -gt $((${MAX_MIB:-60} * 1024 * 1024)) ]; then
  say "ERROR: over ${MAX_MIB:-60} MiB: the device run cannot carry it (64 MiB with the rest)"; exit 1
fi
