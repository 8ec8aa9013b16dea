#!/usr/bin/env bash
# Every CUDA check in one go, for a GPU machine lent for a few minutes: explainer precisions and
# layouts against a plain forward (and their map agreement, CUDA against CPU too), training steps
# in fp32/bf16/fp16, the Ray job with one GPU per actor, and the demo on the GPU.
#
#   bash benchmarks/gpu_checks.sh            # logs to $OUT (default /tmp/densecam-gpu)
#
# Packages the machine lacks may sit in .whl/ as wheels (plus ray-pruned.tar.xz, a Ray install
# without its web UI, jars and libraries densecam does not use); they are installed to /tmp/site.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/densecam-gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    [ -f .whl/ray-pruned.tar.xz ] && tar -xJf .whl/ray-pruned.tar.xz -C /tmp/site
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
step() { echo; echo "=== $1"; }
step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
nproc
python3 -c "import torch, torchvision, zarr; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'zarr', zarr.__version__, 'cuda', torch.cuda.is_available())"
python3 -c "import ray; print('ray', ray.__version__)"
step "explainer, 320 px, batch 32"
timeout 130 python3 benchmarks/explainer.py --device cuda --batch 32 --rounds 10 --warmup 3 --skip-gradcam-lib 2>&1 | tee "$OUT/explainer.txt"
step "training steps, 320 px, batch 32"
timeout 60 python3 benchmarks/train.py --device cuda --size 320 --batch 32 --steps 5 --rounds 2 2>&1 | tee "$OUT/train.txt"
step "job vs in-process explainer on the GPU, 512 images"
timeout 110 python3 benchmarks/job.py --device cuda --images 512 --batch 32 2>&1 | tee "$OUT/job.txt"
step "the job CLI, fp16, --gpus-per-worker 1"
timeout 80 python3 -m jobs.explain --store /tmp/densecam-gpu-store --synthetic-images 256 --gpus-per-worker 1 \
    --precision fp16 --batch-size 32 --no-progress 2>&1 | tee "$OUT/job_fp16.txt"
step "demo on the GPU"
timeout 170 python3 -m jobs.demo --workdir /tmp/densecam-gpu-demo --no-progress 2>&1 | tee "$OUT/demo.txt"
echo "=== done"
