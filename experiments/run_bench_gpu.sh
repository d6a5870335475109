#!/usr/bin/env bash
# Run experiments/bench_gpu.py on a GPU machine without network whose Python already has torch +
# torchvision with CUDA (the GPU test machine: Python 3.12, torch 2.11): installs what is missing from
# the wheelhouse built by experiments/gpu_wheelhouse.sh into a folder put on PYTHONPATH (ahead of the
# system's site-packages, so its setuptools<81 gives mmcv/detectron2 their pkg_resources; the
# system's torch is used as is), then benchmarks each framework in its own process.
#
#   OUT=/some/dir BENCH_TIMEOUT=540 bash experiments/run_bench_gpu.sh [bench_gpu.py args, e.g. --tiny]
#
# Built to return what finished, whatever fails:
#   * a framework whose imports fail is skipped and named (bench_gpu.json/.md and the log say why);
#     the others run;
#   * the whole script ends within BENCH_TIMEOUT seconds (default 540: below a 600 s call limit):
#     each framework gets a fair share of the time left (`timeout`), a framework cut off is named;
#   * results are written outside the repository copy (BENCH_RESULTS, default
#     /tmp/cxr-bench-gpu-results) and copied into $OUT after each framework: env.txt (machine,
#     versions), log.txt (this script's whole output, written as it runs), bench_gpu.json, bench_gpu.md.
# FRAMEWORKS (default yolov5,detectron2_frcnn,mmdet_frcnn) picks the frameworks; `--tiny` runs the
# same path on CPU (the rehearsal; see docs/benchmarks.md).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
BUDGET=${BENCH_TIMEOUT:-540}
WH=$(realpath "${WHEELHOUSE:-gpu-wheelhouse}")
DEST=${BENCH_SITE:-/tmp/cxr-bench-gpu-site}
RESULTS=${BENCH_RESULTS:-/tmp/cxr-bench-gpu-results}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-}
IFS=, read -r -a WANTED <<< "${FRAMEWORKS:-yolov5,detectron2_frcnn,mmdet_frcnn}"
export CUDA_DEVICE_ORDER=PCI_BUS_ID MPLBACKEND=Agg YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"
export YOLO_CONFIG_DIR=${YOLO_CONFIG_DIR:-$RESULTS/ultralytics_config}  # not the home folder
if [ -n "$OUT" ]; then
  mkdir -p "$OUT"
  exec > >(tee -a "$OUT/log.txt") 2>&1
fi
say() { printf '[run_bench_gpu %4ds] %s\n' $((SECONDS - START)) "$*"; }
left() { echo $((BUDGET - (SECONDS - START))); }
publish() {  # what exists so far, into $OUT
  [ -n "$OUT" ] || return 0
  for f in env.txt bench_gpu.json bench_gpu.md; do
    [ -f "$RESULTS/$f" ] && cp "$RESULTS/$f" "$OUT/$f"
  done
  return 0
}
TINY=0
for a in "$@"; do [ "$a" = "--tiny" ] && TINY=1; done
bench() { "$PYTHON" experiments/bench_gpu.py --out "$RESULTS" --append "$@"; }
record() {  # record(framework, reason): a framework that gave no figures, named in the results
  say "$1: $2"
  bench --frameworks "" --record-error "$1=$2" >/dev/null || say "could not record $1's failure"
  publish
}

say "budget ${BUDGET} s; results in $RESULTS${OUT:+, copied to $OUT}"
[ -d "$WH" ] || { say "no wheelhouse at $WH: build it with experiments/gpu_wheelhouse.sh"; exit 1; }
if [ "$TINY" = 0 ]; then
  "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'" || { say "no GPU"; exit 1; }
fi
export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WH"
PIP=("$PYTHON" -m pip --disable-pip-version-check -q)
if [ ! -f "$DEST/.done" ]; then
  rm -rf "$DEST"
  say "installing the wheelhouse into $DEST (offline)"
  # every wheel but detectron2's (cp310-tagged: installed into its own folder, without _C)
  mapfile -t wheels < <(ls "$WH"/*.whl | grep -v sal_detectron2)
  "${PIP[@]}" install --no-deps --target "$DEST/site" "${wheels[@]}" || { say "install failed"; exit 1; }
  "${PIP[@]}" install --no-deps --only-binary=:all: --python-version 3.10 --target "$DEST/d2" \
    "$WH"/sal_detectron2-*.whl || say "detectron2 install failed (detectron2_frcnn will be skipped)"
  rm -rf "$DEST/d2/tools" "$DEST"/d2/detectron2/_C*.so
  touch "$DEST/.done"
fi
export PYTHONPATH="$PWD:$DEST/site:$DEST/d2${PYTHONPATH:+:$PYTHONPATH}"
rm -f "$RESULTS/bench_gpu.json" "$RESULTS/bench_gpu.md"

{ date -u; echo "host $(hostname) · $(nproc) cores"; nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none"
  "$PYTHON" -c "import platform, torch; print('python', platform.python_version(), '· torch', torch.__version__,
'· CUDA', torch.version.cuda, '·', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
  echo "wheelhouse $WH:"; ls "$WH"; echo "installed into $DEST:"
  "${PIP[@]}" list --path "$DEST/site" 2>/dev/null; ls "$DEST/d2" | grep -i dist-info
} > "$RESULTS/env.txt" 2>&1
publish

# which frameworks import: "ok <name>" or "skip <name> <reason>" per line
CHECK=$("$PYTHON" - "${WANTED[@]}" <<'PY'
import importlib, sys
# the modules training builds from, not only the packages' top level (mmdet.models imports six, which the
# top level does not: the CPU rehearsal found it missing only when the first fit built the model)
NEEDS = {"yolov5": ["ultralytics", "ultralytics.models.yolo.detect", "adapters.yolov5"],
         "detectron2_frcnn": ["detectron2", "fvcore", "detectron2.modeling", "detectron2.engine",
                              "adapters.detectron2_frcnn"],
         "mmdet_frcnn": ["mmengine", "mmcv.ops", "mmdet", "mmdet.models", "mmdet.datasets", "mmdet.engine",
                         "adapters.mmdet_frcnn"]}
COMMON = ["numpy", "cv2", "PIL", "scipy", "yaml", "pycocotools", "adapters.base", "harness.split"]
def fails(names):
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException as err:  # noqa: BLE001 - named, the rest run
            return f"import {name} failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None
common = fails(COMMON)
for fw in sys.argv[1:]:
    why = common or (fails(NEEDS[fw]) if fw in NEEDS else "unknown framework")
    print(f"ok {fw}" if why is None else f"skip {fw} {why}")
PY
)
say "import check:"; printf '%s\n' "$CHECK"
mapfile -t RUN < <(printf '%s\n' "$CHECK" | awk '$1 == "ok" {print $2}')
while read -r kind fw why; do
  [ "$kind" = skip ] && record "$fw" "skipped, $why"
done <<< "$CHECK"

n=${#RUN[@]}
for fw in "${RUN[@]}"; do
  share=$(( ($(left) - 20) / n ))  # a fair share of what is left (20 s kept for the last copy)
  n=$((n - 1))
  if [ "$share" -lt 30 ]; then
    record "$fw" "not run: no time left within BENCH_TIMEOUT=${BUDGET} s"
    continue
  fi
  say "$fw: up to ${share} s"
  timeout --kill-after=10 "$share" "$PYTHON" experiments/bench_gpu.py --out "$RESULTS" --append --frameworks "$fw" "$@"
  rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    record "$fw" "cut off after its ${share} s share of BENCH_TIMEOUT=${BUDGET} s"
  elif [ "$rc" != 0 ]; then
    record "$fw" "bench_gpu.py exited with status $rc (see log.txt)"
  fi
  publish
  say "$fw done (exit $rc)"
done
publish
say "finished in $((SECONDS - START)) s"
[ -f "$RESULTS/bench_gpu.md" ] && cat "$RESULTS/bench_gpu.md"
exit 0
