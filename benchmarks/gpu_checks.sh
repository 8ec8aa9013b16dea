#!/usr/bin/env bash
# Every CUDA check in one go, for a GPU machine lent for a few minutes (about 6 minutes in all):
# device normalisation against the host path, peak memory and images/s per batch size and
# precision (and torch.compile), the GPU actor's automatic batch size, and the job on 2,048
# generated PNGs cold (decoding) and again from the input cache, against the in-process Explainer.
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
step "peak memory and images/s per batch, fp32 and fp16, 320 px"
timeout 90 python3 benchmarks/gpu_memory.py --batches 32,64,128 --precisions fp32,fp16 2>&1 | tee "$OUT/memory.txt"
step "job on 2,048 PNGs, fp16, default GPU batch, one GPU actor: cold, then a new checkpoint from the cache"
timeout 200 python3 benchmarks/job.py --device cuda --images 2048 --precision fp16 --cached 2>&1 | grep -v "^202" | tee "$OUT/job.txt"
step "torch.compile of each dense block, fp16, batch 64 (last: compiling may take minutes)"
timeout 150 python3 benchmarks/gpu_memory.py --batches 64 --precisions fp16 --compile fp16,64 2>&1 | tee "$OUT/compile.txt"
echo "=== done ($(date +%T))"
