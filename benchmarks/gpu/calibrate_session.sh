#!/usr/bin/env bash
# The calibration run (issue 12, Part B) as ONE command for a device session with a hard
# 10-minute limit: run from the repo root on the GPU machine,
#     bash benchmarks/gpu/calibrate_session.sh OUTDIR
# Needs nothing prepared: the traces are synthesized in the run (fixed seeds). The script budgets
# itself (--budget-s 510: it skips what would not finish and writes its JSON after every phase);
# `timeout 560` is the backstop (with the figure, under 600 s). The Llama-3.1-70B set (the
# default, 6 configurations) runs first, the DeepSeek-V3.2 set (ds rows, 656 B) only if the
# budget still allows.
# OUTDIR receives calibration-<gpu>.json, session.log and, where matplotlib is installed, the
# figure calibration-<gpu>.png (else draw it afterwards on any machine:
# python benchmarks/gpu/plot_calibration.py OUTDIR/calibration-h200.json --figure PNG).
set -u
OUT=${1:?usage: calibrate_session.sh OUTDIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="src:${PYTHONPATH:-}"
exec > >(tee "$OUT/session.log") 2>&1
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
timeout 560 python benchmarks/gpu/calibrate_gpu.py --out "$OUT" --budget-s 510 \
  --models llama-3.1-70b,deepseek-v3.2
echo "calibrate rc=$?"
for f in "$OUT"/calibration-*.json; do
  [ -f "$f" ] && timeout 25 python benchmarks/gpu/plot_calibration.py "$f" --figure "${f%.json}.png"
done
ls -la "$OUT"
date -u
