#!/usr/bin/env bash
# Train several text2img variants side by side on one GPU, from the shipped weights, and
# pack each one's exported text2img folder (UNet, text encoder, training.json, log) as
# $OUT/<name>.tar. Made for a short lent GPU machine (15 minutes in all): one shared
# preparation (states recreated from the shipped folders, one scene cache drawn on every
# core), then every variant at once, each with a few CPU threads for its data side.
# Usage: OUT=<folder> bash playground/starter/gpu_variants.sh [minutes] [cache scenes]
# The variants are the lines of VARIANTS below: a name, then train's flags beyond COMMON.
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes=${1:-7}
cache=${2:-60000}
OUT=${OUT:?set OUT to the folder the packed results go to}
base=${GPU_RUNS:-/tmp/gpu_runs}
T="${PYTHON:-python3} -m playground.starter.train"
COMMON="--own-text --cell-words-only --attention-loss 0.01 --high-noise-share 0.3
        --x0-weight-floor 0.5 --article-share 0.1 --anneal-to 0.1 --batch 64 --threads 4"
VARIANTS=(
  "a --lr 3e-3 --unet-lr-scale 0.03 --cell-attention-loss 1"
  "b --lr 3e-3 --unet-lr-scale 0.1 --cell-attention-loss 1"
  "c --lr 3e-3 --unet-lr-scale 0.1 --cell-attention-loss 0.3"
  "d --lr 3e-3 --unet-lr-scale 0.03 --cell-attention-loss 3"
)

# shared preparation: no training step (--max-steps 0), only the states and the cache
STARTER_RUNS=$base/prep $T text2img --max-steps 0 --cache "$cache" $COMMON --lr 3e-3 \
    > "$OUT/prep.log" 2>&1 || true  # a CUDA process may abort at exit after saving
[ -f "$base/prep/text2img/state.safetensors" ] || { tail -30 "$OUT/prep.log"; exit 1; }
echo "prepared in ${SECONDS} s"

nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 20 \
    > "$OUT/gpu.csv" 2>/dev/null &
smi=$!
pids=()
for v in "${VARIANTS[@]}"; do
  read -r name flags <<< "$v"
  cp -r "$base/prep" "$base/$name"
  STARTER_RUNS=$base/$name $T text2img --minutes "$minutes" $COMMON $flags > "$base/$name.out" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}" || true
kill "$smi" 2>/dev/null || true
echo "trained by ${SECONDS} s"

for v in "${VARIANTS[@]}"; do
  read -r name flags <<< "$v"
  (STARTER_RUNS=$base/$name $T export --weights "$base/export_$name" > "$base/export_$name.out" 2>&1
   cp "$base/$name/text2img/log.txt" "$base/export_$name/log.txt"
   echo "$flags" > "$base/export_$name/flags.txt"
   tar cf "$OUT/$name.tar" -C "$base/export_$name" text2img/unet text2img/text_encoder \
       training.json log.txt flags.txt) &
done
wait
for v in "${VARIANTS[@]}"; do
  read -r name flags <<< "$v"
  echo "== $name: $flags"; tail -3 "$base/$name.out"
done
echo "done in ${SECONDS} s"
