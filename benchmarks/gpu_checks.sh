#!/usr/bin/env bash
# Every CUDA check in one go, for a GPU machine lent for a few minutes (about 7.5 minutes in all; the
# feeding checks, up to the memory table, about 3.5), the most wanted first (a call cut short at its
# limit still returns what the first steps logged):
# device normalisation against the host path, the GPU actor's automatic batch size, a CUDA graph's
# maps against the eager pass; the job on 2,048 generated PNGs cold and again from the input cache
# against the in-process Explainer, eager and with CUDA graphs; peak memory and images/s per batch
# size and precision, and CUDA graphs against the eager pass; the actor's pipeline without Ray under
# py-spy (what holds its GIL; benchmarks/host_pipeline.py, whose simulated device, the CPU-only proxy,
# was calibrated on a GPU node once: docs/PERFORMANCE.md); the cost of decode tasks to the actor on
# the node's CPUs (benchmarks/decode_tasks.py) and of starting and closing 15 decode processes in a Ray
# worker (benchmarks/spawn_start.py); the evaluation's scorer against a plain loop, and the evaluation job
# end to end. (torch.compile was measured once and not kept: benchmarks/gpu_memory.py --compile
# reruns it.)
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
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
nproc
python3 -c "import torch, torchvision, zarr, ray; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'zarr', zarr.__version__, 'ray', ray.__version__, 'cuda', torch.cuda.is_available())"
step "uint8 normalised on the device equals the host path; automatic GPU batch; a CUDA graph records and equals the eager pass"
timeout 90 python3 - <<'EOF' 2>&1 | tee "$OUT/normalise.txt"
import numpy as np, torch
from densecam_core import Explainer, load_densenet169
from densecam_core.data.preprocess import normalise
from densecam_core.vocabulary import METHODS
from jobs.explain.settings import ExplainSettings
from jobs.explain.worker import ExplainWorker
model = load_densenet169(device="cuda")
explainer = Explainer(model, precision="fp32")
pixels = torch.randint(0, 256, (4, 3, 320, 320), dtype=torch.uint8)
host = torch.from_numpy(np.stack([normalise(p) for p in pixels.numpy()]))
print("max |device - host| input:", float((explainer._to_device(pixels).cpu() - host).abs().max()))
for precision in ("fp32", "fp16"):
    worker = ExplainWorker(model.state_dict(), ExplainSettings(methods=METHODS, size=320, precision=precision, batch_size=None), device="cuda", warm_up=False)
    print(precision, "automatic GPU batch size:", worker.batch_size)
    eager = Explainer(model, precision=precision)
    graphed = Explainer(model, precision=precision, cuda_graphs=True)
    for channels in (3, 1, 3):  # RGB, grey (broadcast into the recorded input), RGB again: one recording
        batch = torch.randint(0, 256, (8, channels, 320, 320), dtype=torch.uint8)
        want, got = eager(batch), graphed(batch)
        worst = max(float((got.maps[m][b] - want.maps[m][b]).abs().max() / want.maps[m][b].abs().max().clamp_min(1e-12)) for m in want.maps for b in want.maps[m])
        print(precision, f"CUDA graph, {channels} channel(s): largest map difference {worst:.1e} of the map's range; recordings {len(graphed._graphs)}")
EOF
GRAPHS=--cuda-graphs
grep -q "fp16 CUDA graph, 1 channel" "$OUT/normalise.txt" || { GRAPHS=; echo "CUDA graphs failed above: the steps below run without them"; }
step "job on 2,048 PNGs, fp16, default GPU batch, one GPU actor: cold, then a new checkpoint from the cache; with CUDA graphs (the default) and --no-cuda-graphs"
timeout 330 python3 benchmarks/job.py --device cuda --images 2048 --precision fp16 --cached ${GRAPHS:+--also-eager} 2>&1 | grep -v "^202" | tee "$OUT/job.txt"
step "peak memory and images/s per batch, fp32 and fp16, 320 px; CUDA graphs against the eager pass"
GRAPH_SETTINGS=
[ -n "$GRAPHS" ] && GRAPH_SETTINGS="--graphs fp16,64 --graphs fp16,128 --graphs fp32,64"
timeout 150 python3 benchmarks/gpu_memory.py --batches 32,64,128 --precisions fp32,fp16 $GRAPH_SETTINGS 2>&1 | tee "$OUT/memory.txt"
step "the GPU actor's pipeline without Ray, real Explainer, fp16 ${GRAPHS:+with CUDA graphs }under py-spy --gil"
SPY=$(command -v py-spy || echo /tmp/site/bin/py-spy)
GIL=/tmp/densecam-gil.txt  # raw samples stay on the machine: the device tool returns at most 8 files
if [ -x "$SPY" ]; then
    timeout 120 "$SPY" record --gil --nonblocking -r 200 -f raw -o "$GIL" -- \
        python3 benchmarks/host_pipeline.py --device cuda --precision fp16 --images 2048 --rgb-fraction 0 $GRAPHS 2>&1 | tee "$OUT/host_pipeline.txt"
fi
if [ -s "$GIL" ]; then
    python3 benchmarks/gil_summary.py "$GIL" 2>&1 | tee "$OUT/gil_summary.txt"
else  # no py-spy, or not allowed to trace here
    timeout 100 python3 benchmarks/host_pipeline.py --device cuda --precision fp16 --images 2048 --rgb-fraction 0 $GRAPHS 2>&1 | tee "$OUT/host_pipeline.txt"
fi
step "what the actor pays per decode task, one image a task against eight, 15 decode processes; starting and closing them"
timeout 60 python3 benchmarks/decode_tasks.py --processes 15 --images 1024 --chunks 1 8 2>&1 | tee "$OUT/decode_tasks.txt"
timeout 60 python3 benchmarks/spawn_start.py --processes 15 2>&1 | grep -v "^202" | tee -a "$OUT/decode_tasks.txt"
step "deletion + insertion of 21 maps, K = 16: the evaluation actor's scorer against a plain per-step loop"
timeout 120 python3 benchmarks/evaluate.py --device cuda --sizes 128,320 --images 16 --reference-maps 1 2>&1 | tee "$OUT/evaluate.txt"
step "the evaluation job end to end on one GPU actor: 128 images, 320 px, fp16, K = 16, every metric"
timeout 180 python3 benchmarks/evaluate_job.py --images 128 --size 320 --precision fp16 --steps 16 --batch-size 16 2>&1 | grep -v "^202" | tee "$OUT/evaluate_job.txt"
echo "=== done ($(date +%T))"
