#!/usr/bin/env bash
# The prepared check for a GPU machine; the whole run ends within about 8 minutes.
#
#   1. versions: nvidia-smi, Python, NumPy, CuPy and its CUDA, PyTorch, what ldm_np sees;
#   2. the GPU tests: python -m pytest -m gpu (NumPy/CuPy parity, training, sampling, checkpoints);
#   3. the GPU benchmark: python benchmarks/run.py --device gpu (when that script exists).
#
# Every stage runs under `timeout`, and all stages share one deadline (GPU_CHECK_BUDGET
# seconds, default 450), so a hung kernel or a slow first compile cannot eat the
# machine's time. Logs: one file per stage and summary.txt, in $OUT when it is set
# (the device runner brings $OUT back), else in ./gpu_check_logs.
#
#   bash benchmarks/gpu_check.sh
#   BENCH_ARGS=--quick bash benchmarks/gpu_check.sh      # a shorter benchmark
#
# Environment: OUT, PYTHON (default python), GPU_CHECK_BUDGET, BENCH_ARGS.
# Exit status: 4 if ldm_np sees no usable GPU (the tests then skip: nothing was checked),
# else that of the tests (0 = all passed), else 3 if the benchmark failed, else 0.
set -u

cd "$(dirname "$0")/.." || exit 1
PY="${PYTHON:-python}"
LOGS="${OUT:-gpu_check_logs}"
BUDGET="${GPU_CHECK_BUDGET:-450}"
START=$(date +%s)
mkdir -p "$LOGS"

# The float32 tolerances of tests/test_gpu.py assume full-precision matrix products
# (CuPy's default); TF32 would need tolerances 100x looser.
export CUPY_TF32=0
export PYTHONUNBUFFERED=1

declare -A STATUS=()
ORDER=()

# Seconds a stage may take: what it asks for, or what is left of the budget if less.
limit() {
    local want=$1 left=$((BUDGET - ($(date +%s) - START)))
    ((left < want)) && want=$left
    ((want < 5)) && want=5
    echo "$want"
}

# run_stage NAME SECONDS COMMAND...: run with a time limit, log to $LOGS/NAME.log, keep the status.
run_stage() {
    local name=$1 secs
    secs=$(limit "$2")
    shift 2
    ORDER+=("$name")
    echo "== $name (limit ${secs} s): $*" | tee "$LOGS/$name.log"
    local t0=$(date +%s)
    timeout --kill-after=10 "$secs" "$@" 2>&1 | tee -a "$LOGS/$name.log"
    local status=${PIPESTATUS[0]}
    if ((status == 124 || status == 137)); then
        echo "!! $name: stopped after its ${secs} s limit" | tee -a "$LOGS/$name.log"
    fi
    echo "== $name: exit ${status} after $(($(date +%s) - t0)) s" | tee -a "$LOGS/$name.log"
    STATUS[$name]=$status
}

versions() {
    date -u '+%Y-%m-%d %H:%M:%S UTC'
    if command -v nvidia-smi >/dev/null; then
        timeout 30 nvidia-smi
        timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    else
        echo "nvidia-smi: not found"
    fi
    timeout 90 "$PY" - <<'EOF'
import os, platform, sys
print(f"python {sys.version.split()[0]} on {platform.platform()}")
import numpy as np
print(f"numpy {np.__version__}")
try:
    import cupy as cp
    rt = cp.cuda.runtime
    props = rt.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    free, total = cp.cuda.Device(0).mem_info
    print(f"cupy {cp.__version__}: CUDA runtime {rt.runtimeGetVersion()}, driver {rt.driverGetVersion()}, "
          f"{rt.getDeviceCount()} device(s); device 0: {name}, compute capability "
          f"{props['major']}.{props['minor']}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} free)")
    print(f"CUPY_TF32={os.environ.get('CUPY_TF32')}, kernel cache {os.environ.get('CUPY_CACHE_DIR', '~/.cupy/kernel_cache')}")
except Exception as exc:
    print(f"cupy: unusable ({type(exc).__name__}: {exc})")
try:
    import torch
    cuda = torch.cuda.is_available()
    extra = f", CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}" if cuda else ", no CUDA device"
    print(f"torch {torch.__version__}{extra}")
except Exception as exc:
    print(f"torch: not available ({type(exc).__name__})")
import ldm_np
from ldm_np import backend
print(f"ldm_np {ldm_np.__version__}: gpu_available() = {backend.gpu_available()}"
      + ("" if backend.gpu_available() else f" ({backend._CUPY_PROBLEM})"))
EOF
}

# Each command inside has its own timeout: at most 150 s in all, a few seconds normally.
ORDER+=(versions)
versions 2>&1 | tee "$LOGS/versions.log"
STATUS[versions]=${PIPESTATUS[0]}

run_stage tests 270 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider --durations=10 tests

if [[ -f benchmarks/run.py ]]; then
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
    run_stage benchmark 300 "$PY" benchmarks/run.py --device gpu ${BENCH_ARGS:-}
else
    echo "== benchmark: benchmarks/run.py does not exist yet; skipped" | tee "$LOGS/benchmark.log"
fi

{
    echo "gpu_check: $(($(date +%s) - START)) s of a ${BUDGET} s budget; logs in $LOGS"
    for name in "${ORDER[@]}"; do
        echo "  ${name}: exit ${STATUS[$name]}"
    done
} | tee "$LOGS/summary.txt"

if grep -q "gpu_available() = False" "$LOGS/versions.log"; then
    echo "!! ldm_np sees no usable GPU: the gpu tests were skipped and nothing was checked" | tee -a "$LOGS/summary.txt"
    exit 4
fi
tests_status=${STATUS[tests]:-1}
if ((tests_status != 0)); then
    exit "$tests_status"
fi
if [[ -n "${STATUS[benchmark]+set}" ]] && ((STATUS[benchmark] != 0)); then
    exit 3
fi
exit 0
