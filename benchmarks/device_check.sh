#!/usr/bin/env bash
# GPU check of llkd's CUDA selection kernel, for a lent GPU machine (see CUDA_NOTES.md).
#   1. builds and installs llkd there (pip install -e, LLKD_CUDA=ON; falls back to a direct
#      nvcc build of the CUDA module if the full build fails),
#   2. a smoke step per class count against the NumPy reference,
#   3. every GPU test: pytest -m gpu tests/ (this module's file first),
#   4. the benchmark (benchmarks/_bench_selection_cuda.py): GB/s vs a device copy, x torch eager,
#   5. if time is left, Nsight Compute on one step at N=1e7, C=20.
# Usage, from the repository root: bash benchmarks/device_check.sh
# Logs and results go under $OUT (default /tmp/llkd-device-out), at most 8 files.
# LLKD_DEVICE_DEADLINE (seconds, default 300) bounds the whole script. LLKD_DEVICE_FULL=0 skips
# show_config, the SASS dump and the GPU tests outside tests/test_selection_cuda.py (a rerun).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/llkd-device-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
export PATH=$PATH:/usr/local/cuda/bin
PY=${PYTHON:-python3}
DEADLINE=${LLKD_DEVICE_DEADLINE:-300}
FULL=${LLKD_DEVICE_FULL:-1}
T0=$(date +%s)
el() { echo $(($(date +%s) - T0)); }
left() { local l=$((DEADLINE - $(el))); echo $((l > 5 ? l : 5)); }
log() { echo "[$(el)s] $*" | tee -a "$OUT/setup.log"; }
cap() { local a=$1 b; b=$(left); echo $((a < b ? a : b)); }

log "environment"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv
  nvcc --version | tail -2
  cmake --version | head -1
  "$PY" -c "import sys, torch, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'numpy', numpy.__version__)"
} 2>&1 | tee -a "$OUT/setup.log"

log "build: pip install -e . (LLKD_CUDA=ON, CMAKE_CUDA_ARCHITECTURES=${LLKD_DEVICE_ARCH:-90-real})"
if LLKD_CUDA=ON timeout "$(cap 240)" "$PY" -m pip install -q --no-build-isolation --no-deps --no-cache-dir -e . \
    -C cmake.define.CMAKE_CUDA_ARCHITECTURES="${LLKD_DEVICE_ARCH:-90-real}" -C build-dir=/tmp/llkd-build \
    >>"$OUT/setup.log" 2>&1 && "$PY" -c "import llkd.selection._selection_cuda" >>"$OUT/setup.log" 2>&1; then
  log "build ok"
else
  log "full build failed (see setup.log); building only the CUDA module with nvcc"
  tail -25 "$OUT/setup.log"
  EXT=$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
  nvcc -O3 -std=c++17 -arch=sm_90 -shared -Xcompiler -fPIC,-fvisibility=hidden -DLLKD_CUDA_ARCHS='"90-real"' \
    $("$PY" -m pybind11 --includes) -Icsrc csrc/selection_cuda.cu csrc/bindings_cuda.cpp \
    -o "src/llkd/selection/_selection_cuda$EXT" >>"$OUT/setup.log" 2>&1 || { log "nvcc build failed"; tail -30 "$OUT/setup.log"; exit 1; }
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
SO=$("$PY" -c "import llkd.selection._selection_cuda as m; print(m.__file__)")
{ echo "== cuobjdump -res-usage"; cuobjdump -res-usage "$SO" 2>&1 | grep -E "Function|REG" | sed 's/_ZN9llkd_cuda[^ ]*\(row_kernel\|select_kernel\|scale_kernel\|update_kernel\)/\1/'; } >>"$OUT/setup.log" 2>&1
if [ "$FULL" = 1 ]; then
  "$PY" -c "import llkd; llkd.show_config()" >>"$OUT/setup.log" 2>&1
  cuobjdump -sass "$SO" 2>/dev/null | gzip >"$OUT/sass.txt.gz"
fi

log "smoke: one step per class count vs the NumPy reference"
timeout "$(cap 60)" "$PY" - <<'EOF' 2>&1 | tee -a "$OUT/setup.log"
import time, numpy as np, torch
from llkd.selection import AdaptiveSelector
for c in (2, 20, 100, 1000, 3000):
    for dt in (torch.float32, torch.float64):
        n = 20000 if c <= 100 else 3000
        g = torch.Generator(device="cuda").manual_seed(c)
        z = torch.randn(n, c, device="cuda", dtype=dt, generator=g) * 3
        y = torch.randint(0, c, (n,), device="cuda", generator=g)
        cf = torch.rand(n, device="cuda", dtype=torch.float64, generator=g)
        a, b = AdaptiveSelector(c, backend="cuda"), AdaptiveSelector(c, backend="numpy")
        t = time.perf_counter(); ra = a.step(z, y, cf); t = time.perf_counter() - t
        rb = b.step(z.cpu().numpy(), y.cpu().numpy(), cf.cpu().numpy())
        du = np.abs(ra.uncertainty.double().cpu().numpy() - rb.uncertainty).max()
        agree = (ra.mask.cpu().numpy() == rb.mask).mean()
        dw = np.abs(ra.weights.double().cpu().numpy() - rb.weights).max()
        dt_ = np.abs(ra.teacher_threshold - rb.teacher_threshold).max()
        ds = np.abs(ra.student_threshold - rb.student_threshold).max()
        print(f"C={c:5d} {str(dt)[6:]:8s} n={n}: max|du|={du:.2e} mask agree={agree:.5f} "
              f"max|dw|={dw:.2e} max|dtauT|={dt_:.1e} max|dtauS|={ds:.1e} first call {1e3*t:.1f} ms")
EOF

log "pytest -m gpu tests/test_selection_cuda.py"
timeout "$(cap 150)" "$PY" -m pytest -m gpu tests/test_selection_cuda.py -q -p no:cacheprovider -rfE \
  >"$OUT/pytest.log" 2>&1
echo "exit code $?" >>"$OUT/pytest.log"
tail -4 "$OUT/pytest.log"
log "pytest tests/test_selection_cuda.py -m 'not gpu', then the other GPU tests in tests/"
timeout "$(cap 60)" "$PY" -m pytest -m "not gpu" tests/test_selection_cuda.py -q -p no:cacheprovider -rfE \
  >>"$OUT/pytest.log" 2>&1
echo "exit code $?" >>"$OUT/pytest.log"
if [ "$FULL" = 1 ]; then
  timeout "$(cap 90)" "$PY" -m pytest -m gpu tests/ -q -p no:cacheprovider \
    -rfE --continue-on-collection-errors --ignore=tests/test_selection_cuda.py >>"$OUT/pytest.log" 2>&1
  echo "exit code $?" >>"$OUT/pytest.log"
fi
tail -3 "$OUT/pytest.log"

log "benchmark"
timeout "$(cap 150)" "$PY" benchmarks/_bench_selection_cuda.py --out "$OUT" >/dev/null 2>&1
echo "benchmark exit code $?" | tee -a "$OUT/setup.log"

if [ "$(left)" -gt 45 ] && command -v ncu >/dev/null; then
  log "ncu: one step at N=1e7, C=20 (after a warm-up step)"
  timeout "$(cap 60)" ncu --clock-control none --kernel-name regex:"row_kernel|select_kernel|scale_kernel|update_kernel" \
    --launch-skip 4 --launch-count 4 --section SpeedOfLight --section LaunchStats --section Occupancy \
    "$PY" - >"$OUT/ncu.txt" 2>&1 <<'EOF'
import torch
from llkd.selection import AdaptiveSelector
n, c = 10**7, 20
z = torch.randn(n, c, device="cuda") * 3
y = torch.randint(0, c, (n,), device="cuda")
cf = torch.rand(n, device="cuda")
sel = AdaptiveSelector(c, backend="cuda")
for _ in range(2):
    sel.step(z, y, cf)
torch.cuda.synchronize()
EOF
  grep -E "row_kernel|select_kernel|scale_kernel|update_kernel|Duration|DRAM Throughput|Memory Throughput|Registers Per|Achieved Occupancy" \
    "$OUT/ncu.txt" | sed 's/void llkd_cuda::[^ ]*\(row_kernel\|select_kernel\|scale_kernel\|update_kernel\)/\1/' | cut -c1-120
fi

log "summary"
grep -E "^(FAILED|ERROR)|passed|failed|exit code" "$OUT/pytest.log" | tail -12
[ -f "$OUT/results_section.md" ] && cat "$OUT/results_section.md"
log "done"
