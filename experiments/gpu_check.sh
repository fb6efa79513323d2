#!/usr/bin/env bash
# The one-command GPU check, for a machine with an NVIDIA GPU, its driver, and a Python with a
# CUDA build of PyTorch (`pip install torch`):
#
#     bash experiments/gpu_check.sh            # the first GPU
#     bash experiments/gpu_check.sh cuda:1     # another one
#
# 1. Builds vislang with CUDA (CUDARC_CUDA_VERSION defaults to 13000, CUDA 13.0; set 12080 for
#    CUDA 12.8 and so on).
# 2. Runs every family (training steps, evaluation, logits, KV-cached generation) on the GPU and
#    on the CPU from the same weights and batches, and checks they agree: f32, then bf16 mixed
#    precision against the f32 CPU run (examples/device_parity.rs).
# 3. Times every family's training step and DALL-E's generation on the GPU next to the committed
#    PyTorch reference (experiments/reference/bench_reference.py) on the same GPU at the same
#    configuration, in interleaved rounds, in f32 and in bf16 (torch.autocast on PyTorch's side),
#    and prints the ratios, with the GPU named.
#
# Further arguments go to the bench (e.g. `--rounds 3 --steps 10`). `bash
# experiments/gpu_check.sh cpu` runs step 3 alone on the CPU (no CUDA build): what our machines,
# which have no GPU, can check of it.
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cuda}"
shift || true
python="${VISLANG_PYTHON:-python3}"

if [ "$device" != cpu ]; then
    export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
    features=(--features cuda)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
        || echo "(nvidia-smi not found; PyTorch names the GPU below)"
    "$python" -c "import torch, sys; ok = torch.cuda.is_available(); print('PyTorch', torch.__version__, 'sees', torch.cuda.get_device_name() if ok else 'no GPU'); sys.exit(0 if ok else 1)" \
        || { echo "error: $python's PyTorch sees no CUDA GPU (install a CUDA build of torch, or set VISLANG_PYTHON)" >&2; exit 1; }
else
    features=()
fi
cargo build --release "${features[@]}" --bin bench --example device_parity

if [ "$device" != cpu ]; then
    ./target/release/examples/device_parity --device "$device"
    ./target/release/examples/device_parity --device "$device" --precision bf16
fi
for precision in f32 bf16; do
    ./target/release/bench --sections pytorch --device "$device" --precision "$precision" "$@"
done
