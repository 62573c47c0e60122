#!/usr/bin/env bash
# The one call a lent GPU machine gets (its device time is short): set up, check and time the GPU paths, then
# measure CPU-recipe variants' accuracy over seeds where that is cheap. Results land in $OUT.
#
#   ../shared/tools/device-bundle                     (here, once: fills .device/)
#   device run, carry [".device"], command:  bash benchmarks/gpu_session.sh
#
# KC_SESSION_SECONDS (default 570) bounds the whole call; each part gets what is left of it.
set -u
limit=${KC_SESSION_SECONDS:-570}
source .device/setup.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv >"$OUT/nvidia-smi.csv" 2>&1
check=$((limit - SECONDS - 140)) # the sweep keeps 140 s
timeout -k 10 $check python3 benchmarks/gpu_check.py --data-dir "$KC_DATA" --out "$OUT" --logs /tmp/gpu-logs \
  --runs fast=2 --mission 130 --fp16 --deadline $((check - 60)) 2>&1 | tee "$OUT/gpu_check.log"
tar czf "$OUT/gpu_logs.tgz" -C /tmp gpu-logs
left=$((limit - SECONDS))
timeout -k 5 $((left - 5)) python3 benchmarks/bench_recipes.py --data-dir "$KC_DATA" --device cuda --parallel 16 \
  --deadline $((left - 90)) --out "$OUT/recipes.json" 2>&1 | tail -12
echo "gpu_session: $SECONDS s"
