#!/usr/bin/env bash
# The one call a lent GPU machine gets (its device time is short): set up, then check and time the GPU paths
# (benchmarks/gpu_check.py). Results land in $OUT.
#
#   ../shared/tools/device-bundle --junk 5000         (here, once: fills .device/)
#   device run, carry [".device"], command:  bash benchmarks/gpu_session.sh
#
# KC_SESSION_SECONDS (default 540) bounds the whole call; KC_RUNS (default fast=3,fast96=1,gpu=1) and
# KC_MISSION (default 0: the mission's commands were checked as typed on an H200 before) pick the runs.
set -u
limit=${KC_SESSION_SECONDS:-540}
source .device/setup.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv >"$OUT/nvidia-smi.csv" 2>&1
check=$((limit - SECONDS - 15))
timeout -k 10 $check python3 benchmarks/gpu_check.py --data-dir "$KC_DATA" --out "$OUT" --logs /tmp/gpu-logs \
  --runs "${KC_RUNS:-fast=3,fast96=1,gpu=1}" --mission "${KC_MISSION:-0}" --fp16 --deadline $((check - 75)) \
  2>&1 | tee "$OUT/gpu_check.log"
tar czf "$OUT/gpu_logs.tgz" -C /tmp gpu-logs
echo "gpu_session: $SECONDS s"
