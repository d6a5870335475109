#!/usr/bin/env bash
# One environment for cxr-bench: ultralytics, detectron2 and mmdet in ONE venv (.venv).
# Idempotent: a ready venv whose inputs did not change is detected in a second.
#   VENV=path     where to put it (default .venv)
#   PYTHON=exe    interpreter to build it from (default python3.11, else python3)
#   MAX_JOBS=N    parallel compile jobs for mmcv (default: core count)
#   FORCE_CUDA=   mmcv's ops: unset = decided by the machine (scripts/mmcv_build_plan.py): with a GPU,
#                 CUDA ops for its architecture + PTX (TORCH_CUDA_ARCH_LIST from the GPU, CUDA_HOME from
#                 nvcc; nvcc runs through scripts/nvcc20, the same C++20 wrapper), and an installed mmcv
#                 without working CUDA ops is rebuilt; without a GPU, CPU ops. 1 = CUDA ops even without
#                 a GPU (TORCH_CUDA_ARCH_LIST, default "8.0;9.0+PTX"); 0 = CPU ops only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
PY=$VENV/bin/python
STAMP=$VENV/.cxr-bench-setup
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

inputs_hash() {
  cat scripts/setup_env.sh scripts/cxx20 scripts/mmcv_build_plan.py adapters/mmcv_cuda.py requirements/base.txt \
    requirements/constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1
}
# The machine's side of the stamp, cheap (no torch): a venv set up without a GPU is checked again
# (and its mmcv rebuilt with CUDA ops) when it meets one.
machine_kind() {
  local gpus
  gpus=$( (ls -d /proc/driver/nvidia/gpus/* /dev/nvidia[0-9]* 2>/dev/null || true) | wc -l)
  echo "gpus=$gpus force_cuda=${FORCE_CUDA:-auto} archs=${TORCH_CUDA_ARCH_LIST:-auto}"
}
stamp() { echo "$(inputs_hash) $(machine_kind)"; }

if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp)" ]; then
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
# the plan: MMCV_MODE=cpu|cuda|refuse, MMCV_REASON, and for cuda the build's environment
eval "$("$PY" scripts/mmcv_build_plan.py)"
say "   $MMCV_REASON"
if [ "$MMCV_MODE" = refuse ]; then
  say "   REFUSED: mmcv without CUDA ops would fail every mmdet job on this machine's GPU"
  exit 1
fi
eval "$("$PY" scripts/mmcv_build_plan.py --installed)"  # MMCV_STATE=none|cpu|cuda|cuda-broken
build=0
case "$MMCV_STATE:$MMCV_MODE" in
  none:*) build=1 ;;
  cpu:cuda) say "   the installed mmcv has CPU ops only (built without a GPU): rebuilding it with CUDA ops"; build=1 ;;
  cuda-broken:cuda) say "   the installed mmcv's CUDA ops fail on this GPU (another architecture?): rebuilding"; build=1 ;;
  cuda-broken:*) say "   mmcv with ops already installed (its CUDA ops fail on this GPU: FORCE_CUDA=0 keeps it)" ;;
  *) say "   mmcv with ${MMCV_STATE/cuda/CPU+CUDA} ops already installed" ;;
esac
if [ "$build" = 1 ]; then
  say "   building mmcv 2.1.0 from source: 15-30 minutes on 2 cores the first time (CPU ops);"
  say "   pip's wheel cache makes later installs take seconds"
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  export CXX20_REAL=${CXX20_REAL:-g++}
  export CXX="$ROOT/scripts/cxx20"
  export MMCV_WITH_OPS=1
  cache_flag=()
  if [ "$MMCV_MODE" = cuda ]; then
    export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST CUDA_HOME PYTORCH_NVCC="$ROOT/scripts/nvcc20"
    [ -n "${CPATH:-}" ] && export CPATH
    say "   CUDA ops for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, CUDA_HOME=$CUDA_HOME"
    # pip caches the built wheel by name+version: a CUDA build must not reuse a cached CPU-only one
    cache_flag=(--no-cache-dir)
    pip_ uninstall -y -q mmcv
  fi
  pip_ install --no-build-isolation "${cache_flag[@]}" mmcv==2.1.0
  eval "$("$PY" scripts/mmcv_build_plan.py --installed)"
  if [ "$MMCV_MODE" = cuda ] && [ "$MMCV_STATE" != cuda ]; then
    say "   FAILED: the new mmcv's CUDA ops do not work here (state: $MMCV_STATE); see cxr-doctor"
    exit 1
  fi
fi

say "4/5 cxr-bench itself (editable)"
pip_ install -q --no-deps --no-build-isolation -e .

say "5/5 checking"
# Known, harmless: sal-detectron2 is a cp310-tagged wheel whose metadata asks for numpy<2, black and
# tensorboard (unused); torchxrayvision is installed for its data file only.
pip_ check | grep -v -E "^(sal-detectron2|torchxrayvision) " || true
"$PY" -c "import ultralytics, detectron2, mmdet, mmcv.ops, harness, adapters" 
stamp > "$STAMP"
say "done: activate with 'source $VENV/bin/activate', check with 'cxr-doctor'"
