#!/usr/bin/env bash
# Everything the course measures on a GPU, as one command, from the repository root:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]        # default OUT_DIR: $OUT, else ./gpu_results
#
# 1. the library's tests on that machine's torch, CUDA tests included (tests/test_cuda.py:
#    fp32 against a CPU float64 reference, bf16/fp16 against the same-dtype naive error, KV-cache
#    decoding and gradients on the device);
# 2. the GPU benchmarks: core (bf16, fp16, fp32 at every shape, causal and not, then the two GPU
#    goals), decoding and memory, into OUT_DIR/gpu.json, with Markdown tables in OUT_DIR/gpu.md
#    for benchmarks/RESULTS.md.
#
# It needs python3 with torch (a CUDA build) and numpy; pytest for step 1 (a machine without it
# can use a folder made here with `pip install --target .gpu-site pytest` and carried along: it
# is put on PYTHONPATH when present). It does not need nbgrader or Jupyter. Each step has its own
# time limit, so a hang in one still leaves the others' results; the whole run takes a few
# minutes on an H100.
set -u
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_results}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
if [ -d .gpu-site ]; then
    export PYTHONPATH="$PWD/.gpu-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # mhsa_lib from this checkout, uninstalled
status=0

echo "== machine" | tee "$out/machine.txt"
{
    "$py" -c 'import sys, torch, numpy
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| numpy", numpy.__version__)
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(), "| capability", torch.cuda.get_device_capability())'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
} 2>&1 | tee -a "$out/machine.txt"

echo "== library tests (CUDA included)"
if "$py" -c "import pytest" 2>/dev/null; then
    timeout 150 "$py" -m pytest -q -p no:cacheprovider -rs \
        tests/test_cuda.py tests/test_attention.py tests/test_heads.py tests/test_multihead.py \
        tests/test_block.py tests/test_kv_cache.py tests/test_interop.py tests/test_positional.py \
        2>&1 | tee "$out/pytest.txt"
    rc=${PIPESTATUS[0]}
    echo "pytest exit code: $rc" | tee -a "$out/pytest.txt"
    [ "$rc" -eq 0 ] || status=1
else
    echo "pytest is not installed here and there is no .gpu-site folder: tests skipped" | tee "$out/pytest.txt"
    status=1
fi

echo "== benchmarks"
timeout 360 "$py" benchmarks/run.py --device cuda --groups core,decoding,memory --out "$out/gpu.json" \
    2>&1 | tee "$out/bench.txt"
rc=${PIPESTATUS[0]}
echo "benchmark exit code: $rc" | tee -a "$out/bench.txt"
[ "$rc" -eq 0 ] || status=1
if [ -s "$out/gpu.json" ]; then
    "$py" benchmarks/report.py "$out/gpu.json" > "$out/gpu.md" 2>&1 || status=1
fi
echo "== results in $out (exit $status)"
exit $status
