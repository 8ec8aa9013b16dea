#!/usr/bin/env bash
# Every CUDA check in one go, for a GPU machine lent for a few minutes (about 8 minutes in all):
# device normalisation against the host path, the GPU actor's automatic batch size, the job on 2,048
# generated PNGs cold (decode processes and decode threads) and again from the input cache against
# the in-process Explainer, the actor's pipeline without Ray under py-spy (what holds its GIL) and
# with a simulated device (benchmarks/host_pipeline.py: to calibrate that CPU-only proxy), the cost
# of decode tasks to the actor on the node's CPUs (benchmarks/decode_tasks.py), the
# evaluation's scorer against a plain loop, the evaluation job end to end, and peak memory and
# images/s per batch size and precision. (torch.compile was measured once and not kept:
# benchmarks/gpu_memory.py --compile reruns it.) The feeding checks come first.
#
#   bash benchmarks/gpu_checks.sh            # logs to $OUT (default /tmp/densecam-gpu)
#
# Packages the machine lacks may sit in .whl/ as wheels (plus ray-pruned.tar.xz, a Ray install
# without its web UI, jars and libraries densecam does not use, and py-spy's wheel); they are
# installed to /tmp/site.
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
step() { echo; echo "=== $1 ($(date +%T))"; }
step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
nproc
python3 -c "import torch, torchvision, zarr, ray; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'zarr', zarr.__version__, 'ray', ray.__version__, 'cuda', torch.cuda.is_available())"
step "uint8 normalised on the device equals the host path; automatic GPU batch"
timeout 60 python3 - <<'EOF' 2>&1 | tee "$OUT/normalise.txt"
import numpy as np, torch
from densecam_core import Explainer, load_densenet169
from densecam_core.images import normalise
from densecam_core.spec import METHODS
from densecam_core.worker import ExplainSettings, ExplainWorker
model = load_densenet169(device="cuda")
explainer = Explainer(model, precision="fp32")
pixels = torch.randint(0, 256, (4, 3, 320, 320), dtype=torch.uint8)
host = torch.from_numpy(np.stack([normalise(p) for p in pixels.numpy()]))
print("max |device - host| input:", float((explainer._to_device(pixels).cpu() - host).abs().max()))
for precision in ("fp32", "fp16"):
    worker = ExplainWorker(model.state_dict(), ExplainSettings(methods=METHODS, size=320, precision=precision, batch_size=None), device="cuda", warm_up=False)
    print(precision, "automatic GPU batch size:", worker.batch_size)
EOF
step "job on 2,048 PNGs, fp16, default GPU batch, one GPU actor: cold (decode processes), then a new checkpoint from the cache"
timeout 240 python3 benchmarks/job.py --device cuda --images 2048 --precision fp16 --cached 2>&1 | grep -v "^202" | tee "$OUT/job.txt"
step "the GPU actor's pipeline without Ray, real Explainer, fp16, under py-spy --gil; then the simulated device (the CPU-only proxy)"
SPY=$(command -v py-spy || echo /tmp/site/bin/py-spy)
if [ -x "$SPY" ]; then
    timeout 150 "$SPY" record --gil --nonblocking -r 200 -f raw -o "$OUT/gil.txt" -- \
        python3 benchmarks/host_pipeline.py --device cuda --precision fp16 --images 2048 --rgb-fraction 0 2>&1 | tee "$OUT/host_pipeline.txt"
fi
if [ -s "$OUT/gil.txt" ]; then
    python3 benchmarks/gil_summary.py "$OUT/gil.txt" 2>&1 | tee "$OUT/gil_summary.txt"
else  # no py-spy, or not allowed to trace here
    timeout 120 python3 benchmarks/host_pipeline.py --device cuda --precision fp16 --images 2048 --rgb-fraction 0 2>&1 | tee "$OUT/host_pipeline.txt"
fi
timeout 90 python3 benchmarks/host_pipeline.py --images 2048 --rgb-fraction 0 --launches 916 2>&1 | tee -a "$OUT/host_pipeline.txt"
step "what the actor pays per decode task, one image a task against eight, 15 decode processes"
timeout 60 python3 benchmarks/decode_tasks.py --processes 15 --images 1024 --chunks 1 8 2>&1 | tee "$OUT/decode_tasks.txt"
step "deletion + insertion of 21 maps, K = 16: the evaluation actor's scorer against a plain per-step loop"
timeout 120 python3 benchmarks/evaluate.py --device cuda --sizes 128,320 --images 16 --reference-maps 1 2>&1 | tee "$OUT/evaluate.txt"
timeout 120 python3 benchmarks/evaluate.py --device cuda --sizes 128,320 --images 16 --reference-maps 1 --no-tf32 2>&1 | tee -a "$OUT/evaluate.txt"
step "the evaluation job end to end on one GPU actor: 128 images, 320 px, fp16, K = 16, every metric"
timeout 180 python3 benchmarks/evaluate_job.py --images 128 --size 320 --precision fp16 --steps 16 --batch-size 16 2>&1 | grep -v "^202" | tee "$OUT/evaluate_job.txt"
step "peak memory and images/s per batch, fp32 and fp16, 320 px"
timeout 90 python3 benchmarks/gpu_memory.py --batches 32,64,128 --precisions fp32,fp16 2>&1 | tee "$OUT/memory.txt"
echo "=== done ($(date +%T))"
