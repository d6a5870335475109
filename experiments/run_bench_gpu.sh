#!/usr/bin/env bash
# Run experiments/bench_gpu.py on a GPU machine without network whose Python already has torch +
# torchvision with CUDA (the GPU test machine: Python 3.12, torch 2.11): installs what is missing from
# the wheelhouse built by experiments/gpu_wheelhouse.sh into a folder put on PYTHONPATH (ahead of the
# system's site-packages, so its setuptools<81 gives mmcv/detectron2 their pkg_resources; the
# system's torch is used as is), then runs the benchmark. Extra arguments go to bench_gpu.py.
#
#   WHEELHOUSE=gpu-wheelhouse bash experiments/run_bench_gpu.sh [--frameworks ...] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
WH=$(realpath "${WHEELHOUSE:-gpu-wheelhouse}")
DEST=${BENCH_SITE:-/tmp/cxr-bench-gpu-site}
PYTHON=${PYTHON:-python3}
say() { printf '[run_bench_gpu] %s\n' "$*"; }
[ -d "$WH" ] || { say "no wheelhouse at $WH: build it with experiments/gpu_wheelhouse.sh"; exit 1; }
"$PYTHON" -c "import torch, torchvision; assert torch.cuda.is_available(), 'no GPU'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
PIP=("$PYTHON" -m pip --disable-pip-version-check -q)
export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WH"
if [ ! -f "$DEST/.done" ]; then
  rm -rf "$DEST"
  # every wheel but detectron2's (cp310-tagged: installed into its own folder, without _C)
  mapfile -t wheels < <(ls "$WH"/*.whl | grep -v sal_detectron2)
  "${PIP[@]}" install --no-deps --target "$DEST/site" "${wheels[@]}"
  "${PIP[@]}" install --no-deps --only-binary=:all: --python-version 3.10 --target "$DEST/d2" "$WH"/sal_detectron2-*.whl
  rm -rf "$DEST/d2/tools" "$DEST"/d2/detectron2/_C*.so
  touch "$DEST/.done"
fi
export PYTHONPATH="$PWD:$DEST/site:$DEST/d2${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" - <<'PY'
import importlib, sys
missing = []
for name in ("numpy", "cv2", "PIL", "pandas", "scipy", "matplotlib", "yaml", "tqdm", "psutil", "requests",
             "pkg_resources", "ultralytics", "detectron2", "mmengine", "mmcv.ops", "mmdet", "pycocotools", "fvcore",
             "omegaconf"):
    try:
        importlib.import_module(name)
    except Exception as err:  # noqa: BLE001
        missing.append(f"{name} ({type(err).__name__}: {err})")
if missing:
    sys.exit("cannot import: " + "; ".join(missing))
from mmcv.ops import get_compiling_cuda_version
print("imports ok; mmcv CUDA ops:", get_compiling_cuda_version())
PY
"$PYTHON" experiments/bench_gpu.py "$@"
