#!/usr/bin/env bash
# Run experiments/bench_gpu.py on a GPU machine without network whose Python already has torch +
# torchvision with CUDA (the GPU test machine: Python 3.12, torch 2.11): installs what is missing from
# the wheelhouse built by experiments/gpu_wheelhouse.sh into a folder put on PYTHONPATH (ahead of the
# system's site-packages, so its setuptools<81 gives mmcv/detectron2 their pkg_resources; the
# system's torch is used as is), then benchmarks each framework in its own process.
#
#   bash experiments/run_bench_gpu.sh [bench_gpu.py args, e.g. --tiny]
#
# Settings (environment):
#   BENCH_OUT      output folder, new for each run (default runs/bench/gpu-<UTC time>, git-ignored); the
#                  script refuses a folder that already holds a run's records
#   BENCH_TIMEOUT  the whole run's budget in seconds, install and import check included (default 540)
#   WHEELHOUSE     the wheelhouse folder (default gpu-wheelhouse); BENCH_INSTALL=0 uses $PYTHON as it
#                  is, installing nothing (the CPU rehearsal in tests/test_bench_gpu.py)
#   FRAMEWORKS     adapter-vs-native pairs (default yolov5,detectron2_frcnn,mmdet_frcnn)
#   COVERAGE       after the pairs, if time remains (default ultralytics,detectron2,mmdet,nccl): a
#                  two-iteration smoke of each zoo family per framework, and one NCCL process group
#   BENCH_WEIGHTS  expected cost of each item, for its share of the time (default below)
#   PYTHON         the interpreter (default python3)
#   BENCH_SITE     where the wheelhouse is installed (default $BENCH_OUT/site); a folder kept across runs
#                  is reused only when installed from the same wheels
#
# Built to return what finished, whatever fails:
#   * every finished run, prediction, smoke and check is appended to $BENCH_OUT/bench_gpu.jsonl at once
#     (fsync'd); bench_gpu.md / bench_gpu.json are rebuilt from those lines at the end in any case -
#     after a framework is cut off, and after this script is stopped (TERM/INT: trap) - and name what
#     did not finish;
#   * the install, the import check and the data are made first, inside the budget (`timeout`); then
#     each framework gets a share of the time left weighted by its expected cost; one cut off is named;
#   * a framework whose imports fail is skipped and named; the others run;
#   * exit status: 0 when everything planned finished, 3 when some of it did not (the summary says
#     what), 143/130 when stopped, 1 when the run could not start (no GPU, no wheelhouse, ...);
#   * log.txt holds this script's whole output (tee, flushed before the script exits), env.txt the
#     machine and versions; caches (matplotlib, ultralytics, torch, pip, XDG) go under $BENCH_OUT/cache.
set -uo pipefail
START=$SECONDS
BUDGET=${BENCH_TIMEOUT:-540}
RESERVE=20  # seconds kept for the last summary
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# paths given relative to where the script is called from; the defaults inside the repository
BENCH_OUT=$(realpath -m "${BENCH_OUT:-$ROOT/runs/bench/gpu-$(date -u +%Y%m%d-%H%M%S)}")
WH=$(realpath -m "${WHEELHOUSE:-$ROOT/gpu-wheelhouse}")
PYTHON=${PYTHON:-python3}
case $PYTHON in */*) PYTHON=$(realpath -ms "$PYTHON") ;; esac  # -s: a venv's python link kept
cd "$ROOT"
DEST=${BENCH_SITE:-$BENCH_OUT/site}
IFS=, read -r -a WANTED <<< "${FRAMEWORKS-yolov5,detectron2_frcnn,mmdet_frcnn}"
IFS=, read -r -a COVER <<< "${COVERAGE-ultralytics,detectron2,mmdet,nccl}"
TINY=0
for a in "$@"; do [ "$a" = "--tiny" ] && TINY=1; done
# expected cost of each item, the weight of its share: on a GPU estimated minutes (not measured yet);
# with --tiny seconds on a quiet 2-core CPU (the pairs measured in the 2026-12-03 rehearsal, the rest estimated)
if [ "$TINY" = 1 ]; then
  DEFAULT_WEIGHTS=yolov5=15,detectron2_frcnn=70,mmdet_frcnn=100,ultralytics=30,detectron2=40,mmdet=40,nccl=10
else
  DEFAULT_WEIGHTS=yolov5=1.5,detectron2_frcnn=2.5,mmdet_frcnn=2.5,ultralytics=0.5,detectron2=0.5,mmdet=0.5,nccl=0.2
fi
WEIGHTS=${BENCH_WEIGHTS:-$DEFAULT_WEIGHTS}

if [ -e "$BENCH_OUT/bench_gpu.jsonl" ]; then
  echo "run_bench_gpu: $BENCH_OUT already holds a run's records (bench_gpu.jsonl): set BENCH_OUT to a new folder" >&2
  exit 1
fi
mkdir -p "$BENCH_OUT/cache" \
  || { echo "run_bench_gpu: cannot create $BENCH_OUT: set BENCH_OUT to a writable folder" >&2; exit 1; }
# caches into the output folder, not the home folder
C=$BENCH_OUT/cache
export XDG_CACHE_HOME=$C/xdg MPLCONFIGDIR=$C/matplotlib YOLO_CONFIG_DIR=$C/ultralytics TORCH_HOME=$C/torch \
  PIP_CACHE_DIR=$C/pip FVCORE_CACHE=$C/fvcore TORCHINDUCTOR_CACHE_DIR=$C/inductor TRITON_CACHE_DIR=$C/triton \
  CUDA_CACHE_PATH=$C/nv HF_HOME=$C/huggingface
export CUDA_DEVICE_ORDER=PCI_BUS_ID MPLBACKEND=Agg YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 PYTHONUNBUFFERED=1

# the whole output into log.txt as well; tee ignores TERM/INT so that it outlives a stop and writes the
# last lines; at exit this script closes its end and waits for tee to finish (flushed)
exec > >(trap '' TERM INT; exec tee -a "$BENCH_OUT/log.txt") 2>&1
TEE=$!

say() { printf '[run_bench_gpu %4ds] %s\n' $((SECONDS - START)) "$*"; }
left() { echo $((BUDGET - (SECONDS - START))); }
bench() { "$PYTHON" experiments/bench_gpu.py --out "$BENCH_OUT" "$@"; }
record() {  # record(name, reason): why a framework or coverage item gave no (or not all) figures
  say "$1: $2"
  bench --record-error "$1=$2" >/dev/null || say "could not record $1's note"
}
weight() {  # weight(name): its expected cost from WEIGHTS, in thousandths
  local w
  w=$(printf '%s\n' "${WEIGHTS//,/$'\n'}" | awk -F= -v k="$1" '$1 == k {print $2}')
  awk -v w="${w:-1}" 'BEGIN {printf "%d", w * 1000}'
}

CHILD=""  # the `timeout` running the current step
CURRENT=""  # the framework or coverage item running now
STOPPED=""
finish() {  # always: the summary from the records, then log.txt flushed
  trap '' TERM INT
  if [ -n "$STOPPED" ] && [ -n "$CURRENT" ]; then
    record "$CURRENT" "cut off: the run was stopped (SIG$STOPPED) during it, $((SECONDS - START)) s after its start"
  fi
  if [ -f "$BENCH_OUT/bench_gpu.jsonl" ]; then
    bench --summarize >/dev/null || say "could not build the summary from bench_gpu.jsonl"
    [ -f "$BENCH_OUT/bench_gpu.md" ] && cat "$BENCH_OUT/bench_gpu.md"
  fi
  say "${STOPPED:+stopped by SIG$STOPPED; }ended after $((SECONDS - START)) s; results in $BENCH_OUT"
  exec >&- 2>&-  # tee sees the end of its input and finishes writing; wait for it (at most 10 s)
  for _ in $(seq 100); do
    [ "$(awk '{print $3}' "/proc/$TEE/stat" 2>/dev/null || echo Z)" = Z ] && break
    sleep 0.1
  done
}
on_signal() {  # on_signal(name, exit status)
  STOPPED=$1
  if [ -n "$CHILD" ]; then
    kill -TERM "$CHILD" 2>/dev/null  # timeout passes it on to the step it runs
    wait "$CHILD" 2>/dev/null
  fi
  exit "$2"
}
trap finish EXIT
trap 'on_signal TERM 143' TERM
trap 'on_signal INT 130' INT

step() {  # step(seconds, command...): the command under `timeout`, interruptible; its exit status
  [ "$1" -gt 0 ] || return 124  # no time left (`timeout 0` would mean no limit at all)
  timeout --kill-after=10 "$1" "${@:2}" &
  CHILD=$!
  wait "$CHILD"
  local rc=$?
  CHILD=""
  return $rc
}

say "budget ${BUDGET} s (install, import check and data included); results in $BENCH_OUT"
if [ "$TINY" = 0 ]; then
  "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'" \
    || { say "no GPU: torch sees none (the CPU rehearsal is: bash experiments/run_bench_gpu.sh --tiny)"; exit 1; }
fi
if [ "${BENCH_INSTALL:-1}" = 1 ]; then
  [ -d "$WH" ] \
    || { say "no wheelhouse at $WH: build it with bash experiments/gpu_wheelhouse.sh (and copy it here)"; exit 1; }
  export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WH"
  PIP=("$PYTHON" -m pip --disable-pip-version-check -q)
  # an earlier install (BENCH_SITE set to a kept folder) is reused only when made from the same wheels
  WHEELS_ID=$(cd "$WH" && ls -l --time-style=+%s -- *.whl | awk '{print $5, $6, $7}' | md5sum | cut -d' ' -f1)
  if [ "$(cat "$DEST/.done" 2>/dev/null)" != "$WHEELS_ID" ]; then
    if [ -e "$DEST" ] && [ ! -f "$DEST/.done" ]; then
      say "$DEST exists but holds no install of this script: set BENCH_SITE to a new folder"; exit 1
    fi
    rm -rf "$DEST"  # this script's install from other wheels
    say "installing the wheelhouse into $DEST (offline; up to $(( $(left) - RESERVE )) s)"
    # every wheel but detectron2's (cp310-tagged: installed into its own folder, without _C)
    mapfile -t wheels < <(ls "$WH"/*.whl | grep -v sal_detectron2)
    step $(( $(left) - RESERVE )) "${PIP[@]}" install --no-deps --target "$DEST/site" "${wheels[@]}" \
      || { say "install failed or ran out of time (exit $?)"; exit 1; }
    step $(( $(left) - RESERVE )) "${PIP[@]}" install --no-deps --only-binary=:all: --python-version 3.10 \
      --target "$DEST/d2" "$WH"/sal_detectron2-*.whl \
      || say "detectron2 install failed (detectron2_frcnn will be skipped)"
    rm -rf "$DEST/d2/tools" "$DEST"/d2/detectron2/_C*.so
    echo "$WHEELS_ID" > "$DEST/.done"
  fi
  export PYTHONPATH="$PWD:$DEST/site:$DEST/d2${PYTHONPATH:+:$PYTHONPATH}"
else
  WH="(none: BENCH_INSTALL=0, $PYTHON as it is)"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

{ date -u; echo "host $(hostname) · $(nproc) cores"; nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none"
  "$PYTHON" -c "import platform, torch; print('python', platform.python_version(), '· torch', torch.__version__,
'· CUDA', torch.version.cuda, '·', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
  echo "wheelhouse $WH:"; ls "$WH" 2>/dev/null
  if [ -d "$DEST/site" ]; then echo "installed into $DEST:"; "$PYTHON" -m pip list --path "$DEST/site" 2>/dev/null
    ls "$DEST/d2" 2>/dev/null | grep -i dist-info; fi
} > "$BENCH_OUT/env.txt" 2>&1

# the plan and the data, before any share of the time is set
ITEMS=()
for item in "${COVER[@]}"; do [ -n "$item" ] && ITEMS+=("$item"); done
say "planning and making the data"
step $(( $(left) - RESERVE )) "$PYTHON" experiments/bench_gpu.py --out "$BENCH_OUT" --prepare \
  --frameworks "$(IFS=,; echo "${WANTED[*]}")" --coverage "$(IFS=,; echo "${ITEMS[*]}")" "$@" \
  || { say "planning / making the data failed or ran out of time (exit $?)"; exit 1; }

# which frameworks import (those asked for, and those the coverage items use): "ok <name>" or
# "skip <name> <reason>" per line
need_of() { case $1 in ultralytics) echo yolov5 ;; detectron2) echo detectron2_frcnn ;; mmdet) echo mmdet_frcnn ;; esac; }
CHECKED=("${WANTED[@]}")
for item in "${ITEMS[@]}"; do
  need=$(need_of "$item")
  [ -n "$need" ] && ! printf '%s\n' "${CHECKED[@]}" | grep -qx "$need" && CHECKED+=("$need")
done
say "import check"
[ $(( $(left) - RESERVE )) -gt 0 ] || { say "no time left for the import check within BENCH_TIMEOUT=${BUDGET} s"; exit 1; }
CHECK=$(timeout --kill-after=5 $(( $(left) - RESERVE )) "$PYTHON" - "${CHECKED[@]}" <<'PY'
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
rc=$?
[ "$rc" = 0 ] || { say "the import check failed or ran out of time (exit $rc)"; exit 1; }
printf '%s\n' "$CHECK"
mapfile -t RUN < <(printf '%s\n' "$CHECK" | awk '$1 == "ok" {print $2}')
ok() { printf '%s\n' "${RUN[@]}" | grep -qx "$1"; }
wanted() { printf '%s\n' "${WANTED[@]}" | grep -qx "$1"; }
while read -r kind fw why; do
  [ "$kind" = skip ] && wanted "$fw" && record "$fw" "skipped, $why"
done <<< "$CHECK"

# run(names...): each in its own process, a share of the time left weighted by expected cost
run_items() {
  local kind=$1; shift
  local names=("$@") i name total share rc
  for ((i = 0; i < ${#names[@]}; i++)); do
    name=${names[$i]}
    total=0; for n in "${names[@]:$i}"; do total=$((total + $(weight "$n"))); done
    share=$(( ($(left) - RESERVE) * $(weight "$name") / (total > 0 ? total : 1) ))
    if [ "$share" -lt 30 ]; then
      record "$name" "not run: no time left within BENCH_TIMEOUT=${BUDGET} s"
      continue
    fi
    say "$name: up to ${share} s"
    CURRENT=$name
    if [ "$kind" = pair ]; then
      step "$share" "$PYTHON" experiments/bench_gpu.py --out "$BENCH_OUT" --part --frameworks "$name" --coverage "" "${ARGS[@]}"
    else
      step "$share" "$PYTHON" experiments/bench_gpu.py --out "$BENCH_OUT" --part --frameworks "" --coverage "$name" "${ARGS[@]}"
    fi
    rc=$?
    CURRENT=""
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      record "$name" "cut off after its ${share} s share of BENCH_TIMEOUT=${BUDGET} s"
    elif [ "$rc" != 0 ]; then
      record "$name" "bench_gpu.py exited with status $rc (see log.txt)"
    fi
    say "$name done (exit $rc)"
  done
}
ARGS=("$@")
PAIRS=(); for fw in "${RUN[@]}"; do [ -n "$fw" ] && wanted "$fw" && PAIRS+=("$fw"); done
SMOKES=()
for item in "${ITEMS[@]}"; do
  need=$(need_of "$item")
  if [ -n "$need" ] && ! ok "$need"; then
    record "$item" "skipped, $(printf '%s\n' "$CHECK" | awk -v k="$need" '$2 == k {$1 = ""; $2 = ""; sub(/^ +/, ""); print}')"
  else
    SMOKES+=("$item")
  fi
done
[ ${#PAIRS[@]} -gt 0 ] && run_items pair "${PAIRS[@]}"
[ ${#SMOKES[@]} -gt 0 ] && run_items coverage "${SMOKES[@]}"
bench --summarize >/dev/null || { say "could not build the summary from bench_gpu.jsonl"; exit 1; }
if grep -q '^\*\*Did not finish\*\*' "$BENCH_OUT/bench_gpu.md"; then
  say "not everything planned finished: bench_gpu.md lists what did not and why (run those again with FRAMEWORKS=/COVERAGE= and a new BENCH_OUT)"
  exit 3
fi
exit 0
