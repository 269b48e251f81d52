#!/usr/bin/env bash
# The one GPU session this project gets (15 device-minutes, one <= 10 min command), in phases
# that each have their own time limit so a failure or overrun in one never loses the others:
#   1. train the bundled backbone (issue 3; docs/backbone.md), ~3 min
#   2. distil its lightning indexer (issue 3; docs/distill.md), ~1 min
#   3. measure the GPU prototype (issue 6; docs/gpu-prototype.md), ~4 min
# Run from the repo root on the GPU machine: bash benchmarks/gpu/device_session.sh OUTDIR
# Needs .backbone-data/ (`python -m dsacache.dsa.backbone.corpus --out .backbone-data`), the
# distillation text .device-in/distill_train.txt (320k tokens decoded from train.npy) and the
# trace .device-in/ds_trace.npz (`python benchmarks/gpu/run_gpu.py --make-trace ...`).
# Weights come back as a split tarball (the device tool returns files of <= 16 MiB).
set -u
OUT=${1:?usage: device_session.sh OUTDIR}
W=/tmp/dsacache-session
rm -rf "$W" && mkdir -p "$W"
export PYTHONUNBUFFERED=1 PYTHONPATH="src:${PYTHONPATH:-}"
exec > >(tee "$OUT/session.log") 2>&1
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', \
triton.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"

echo "== 1. backbone"
timeout 220 python -m dsacache.dsa.backbone.train --data .backbone-data --out "$W/tiny" \
  --device cuda --steps 4000 --batch 32 --seq 2048 --seed 0 --max-minutes 2.7
echo "train rc=$?"
cp "$W/tiny/training_log.json" "$OUT/" 2>/dev/null

echo "== 2. distil"
if [ -f "$W/tiny/model.safetensors" ]; then
  timeout 90 python -m dsacache distill --model "$W/tiny" --text .device-in/distill_train.txt \
    --heldout .backbone-data/heldout.txt \
    --steps 300 --seq 1024 --batch 8 --top-k 32 --checkpoint-every 100 --seed 0 --device cuda \
    --out "$W/tiny/indexer.safetensors"
  echo "distill rc=$?"
  cp "$W"/tiny/indexer*.json "$OUT/" 2>/dev/null
fi

echo "== 3. gpu prototype"
timeout 260 python benchmarks/gpu/run_gpu.py --trace .device-in/ds_trace.npz --out "$W/gpu" \
  --budget-s 220
echo "gpu rc=$?"
cp "$W/gpu/results.json" "$W/gpu/results.csv" "$OUT/" 2>/dev/null

echo "== pack"
rm -f "$W"/tiny/*.train.safetensors
tar -C "$W" -czf "$W/all.tgz" tiny gpu && split -b 15M "$W/all.tgz" "$OUT/all.tgz.part-"
ls -la "$OUT"
date -u
