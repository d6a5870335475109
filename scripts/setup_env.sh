#!/usr/bin/env bash
# One environment for cxr-bench: ultralytics, detectron2 and mmdet in ONE venv (.venv).
# Idempotent: a ready venv whose inputs did not change is detected in a second.
#   VENV=path     where to put it (default .venv)
#   PYTHON=exe    interpreter to build it from (default python3.11, else python3)
#   MAX_JOBS=N    parallel compile jobs for mmcv (default: core count)
#   FORCE_CUDA=1  build mmcv's CUDA ops too (with TORCH_CUDA_ARCH_LIST="8.0;9.0" and CUDA_HOME set;
#                 nvcc runs through scripts/nvcc20, the same C++20 wrapper).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
PY=$VENV/bin/python
STAMP=$VENV/.cxr-bench-setup
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

inputs_hash() {
  cat scripts/setup_env.sh scripts/cxx20 requirements/base.txt requirements/constraints.txt pyproject.toml \
    | sha256sum | cut -d' ' -f1
}

if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(inputs_hash)" ]; then
  say "environment $VENV is up to date"
  exit 0
fi

if [ ! -x "$PY" ]; then
  say "creating venv $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$PY" -m pip --disable-pip-version-check)
# pip, minus the noise of machines whose pip.conf lists local indexes that lack a package
pip_() { "${PIP[@]}" "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
export PIP_CONSTRAINT="$ROOT/requirements/constraints.txt${PIP_CONSTRAINT:+ $PIP_CONSTRAINT}"

say "1/5 base packages: torch 2.14.1, ultralytics, mmengine/mmdet, pydicom, hydra, ... (first time: a few minutes)"
pip_ install -q "pip>=24" wheel "setuptools<81"
pip_ install -q -r requirements/base.txt
# The real VinBigData train.csv ships inside torchxrayvision's wheel (data/vinbigdata-train.csv.gz):
# the synthetic generator samples real reader box sets from it and tests fuse it. Only that data
# file is read (the package is never imported), so none of its dependencies are installed.
pip_ install -q --no-deps torchxrayvision==1.5.7

say "2/5 detectron2"
if "$PY" -c "import detectron2" 2>/dev/null && [ ! -f "$VENV/detectron2-site/.cxr-bench" ]; then
  say "   detectron2 already importable (your own build): keeping it"
else
  # sal-detectron2 0.7.2 carries upstream detectron2 code in a wheel tagged cp310; its compiled _C
  # fits Python 3.10 only. The Python code runs on 3.11 without _C (Faster R-CNN uses torchvision's
  # ROIAlign/NMS). Install it into its own folder, drop its stray top-level `tools` package, and
  # put the folder on sys.path through a .pth file.
  D2=$VENV/detectron2-site
  if [ ! -f "$D2/.cxr-bench" ]; then
    rm -rf "$D2"
    PIP_CONSTRAINT= pip_ install -q --no-deps --only-binary=:all: --python-version 3.10 \
      --target "$D2" sal-detectron2==0.7.2
    rm -rf "$D2/tools" "$D2"/detectron2/_C*.so
    touch "$D2/.cxr-bench"
  fi
  SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$D2" > "$SITE/cxr_bench_detectron2.pth"
fi

say "3/5 mmcv 2.1.0 with compiled ops"
if "$PY" -c "import mmcv, mmcv.ops; from mmcv.ops import nms" 2>/dev/null; then
  say "   mmcv with ops already installed"
else
  say "   building mmcv 2.1.0 from source: 15-30 minutes on 2 cores the first time;"
  say "   pip's wheel cache makes later installs take seconds"
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  export CXX20_REAL=${CXX20_REAL:-g++}
  export CXX="$ROOT/scripts/cxx20"
  export MMCV_WITH_OPS=1
  if [ "${FORCE_CUDA:-0}" = 1 ]; then
    export PYTORCH_NVCC="$ROOT/scripts/nvcc20"
    say "   FORCE_CUDA=1: CUDA ops for TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-<torch default>}, CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}"
  fi
  # pip caches the built wheel by name+version: a CUDA build must not reuse a cached CPU-only one
  cache_flag=(); [ "${FORCE_CUDA:-0}" = 1 ] && cache_flag=(--no-cache-dir)
  pip_ install --no-build-isolation "${cache_flag[@]}" mmcv==2.1.0
fi

say "4/5 cxr-bench itself (editable)"
pip_ install -q --no-deps --no-build-isolation -e .

say "5/5 checking"
# Known, harmless: sal-detectron2 is a cp310-tagged wheel whose metadata asks for numpy<2, black and
# tensorboard (unused); torchxrayvision is installed for its data file only.
pip_ check | grep -v -E "^(sal-detectron2|torchxrayvision) " || true
"$PY" -c "import ultralytics, detectron2, mmdet, mmcv.ops, harness, adapters" 
inputs_hash > "$STAMP"
say "done: activate with 'source $VENV/bin/activate', check with 'cxr-doctor'"
