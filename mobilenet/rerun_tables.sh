#!/usr/bin/env bash
# Re-run MobileNet v1's Table 4 (depthwise separable vs full convs) and Tables 6-7 (width
# multiplier alpha, resolution multiplier rho) at a CPU-sized setting on Imagenette: 56 px
# stands for 224, so Table 7's 192/160/128 are 48/40/32 (the same ratios 6/7, 5/7, 4/7);
# 3 epochs; the modern recipe of mobilenet/train.py at batch 64 (peak learning rate 0.1, one
# warm-up epoch); one thread per run, at most two runs at a time (RUNNING may name another run
# of ours that counts against the two). Table 7's sweep and Table 4 use alpha = 0.25 (the
# cheapest; 1.0 costs 4-5x the CPU time); then every point again at a second seed.
#
#   DATA=/path/to/imagenette2-224 RUNS=/tmp/runs bash mobilenet/rerun_tables.sh
#   python mobilenet/table_plot.py $RUNS/*/*      # the table and mobilenet/tables_4_6_7.png
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:?set DATA to the imagenette2-224 folder}
RUNS=${RUNS:-runs/mobilenet_tables}
RUNNING=${RUNNING:-}  # pids of other runs of ours already going
COMMON=(--DATA_PATH="$DATA" --RUNS_DIR="$RUNS" --NUM_EPOCHS=3 --BATCH_SIZE=64 --LEARNING_RATE=0.1
        --WARMUP_EPOCHS=1 --CACHE_DIM=128 --DECODE_WORKERS=1)
JOBS=(  # ARCH WIDTH_MULT IMAGE_DIM SEED, the costliest first
  "mobilenet_v1 1.0 56 0"        # Table 6, alpha = 1
  "mobilenet_v1 0.75 56 0"       # Table 6
  "mobilenet_v1 0.5 56 0"        # Table 6
  "conv_mobilenet_v1 0.25 56 0"  # Table 4, full convs
  "mobilenet_v1 0.25 56 0"       # Tables 4, 6, 7 (the shared point)
  "mobilenet_v1 0.25 48 0"       # Table 7, rho = 6/7
  "mobilenet_v1 0.25 40 0"       # Table 7, rho = 5/7
  "mobilenet_v1 0.25 32 0"       # Table 7, rho = 4/7
  "conv_mobilenet_v1 0.25 56 1"  # the second seed
  "mobilenet_v1 0.25 56 1"
  "mobilenet_v1 1.0 56 1"
  "mobilenet_v1 0.75 56 1"
  "mobilenet_v1 0.5 56 1"
  "mobilenet_v1 0.25 48 1"
  "mobilenet_v1 0.25 40 1"
  "mobilenet_v1 0.25 32 1"
)
pids=($RUNNING)
for job in "${JOBS[@]}"; do
  read -r arch width dim seed <<< "$job"
  while :; do  # keep at most two runs going
    alive=(); for p in "${pids[@]}"; do kill -0 "$p" 2> /dev/null && alive+=("$p"); done
    pids=("${alive[@]}"); [ "${#pids[@]}" -lt 2 ] && break; sleep 10
  done
  log="$RUNS/log_${arch}_${width}_${dim}_${seed}.txt"; mkdir -p "$RUNS"
  OMP_NUM_THREADS=1 python mobilenet/train.py "${COMMON[@]}" --ARCH="$arch" --WIDTH_MULT="$width" \
    --IMAGE_DIM="$dim" --SEED="$seed" > "$log" 2>&1 &
  pids+=($!); echo "started $job (pid $!)"
done
wait
