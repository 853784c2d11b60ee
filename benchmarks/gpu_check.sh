#!/usr/bin/env bash
# One short GPU session (< 8 minutes on one recent GPU): the CUDA tests, then
# bench_predict.py on the GPU against MONAI's sliding_window_inference on the same GPU and the
# same prepared network: U-Net base 32 depth 5 and V-Net base 16 depth 5, tile 128^3, a 512^3
# volume, fp32 (U-Net also bf16, and the half-empty volume with skip_empty). The step limits
# add up to 8 minutes (480 s).
#
# Run from the repository root on a machine with CUDA, a Python that has torch (CUDA build)
# and the project's dependencies (pip install -e . or the Docker image):
#     PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
# Everything it prints also goes to $OUT (default /tmp/gpu_check): gpu_check.log and one log
# per step. Each step has its own time limit, so a slow step cannot eat the session.
set -u
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" VESSELSEG_PROGRESS=0
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
start=$SECONDS
step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s, at $((SECONDS - start))s)"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start))s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" - <<'PY' || { echo "no usable torch with CUDA here: stopping"; exit 3; }
import sys
import torch, monai, pydantic, vesselseg  # noqa: F401  (the project's own imports)
print("python", sys.version.split()[0], "torch", torch.__version__, "monai", monai.__version__,
      "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))
assert torch.cuda.is_available()
PY

step cuda_tests 100 "$PYTHON" -m pytest -o addopts="" -q -p no:warnings -p no:cacheprovider \
    tests/test_engine.py -k cuda
B="$PYTHON benchmarks/bench_predict.py --device cuda --tile 128 --sizes 512 --repeat 2"
step unet_fp32 180 $B --model unet --base-channels 32 --depth 5 --batch 4 --half-empty 512
step vnet_fp32 120 $B --model vnet --base-channels 16 --depth 5 --batch 4 --half-empty 0
step unet_bf16 80 $B --model unet --base-channels 32 --depth 5 --batch 4 --precision bf16 \
    --half-empty 0 --skip-forward
echo "=== done in $((SECONDS - start))s; logs in $OUT"
