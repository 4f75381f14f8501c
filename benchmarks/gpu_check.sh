#!/usr/bin/env bash
# One-GPU check of the issue-12 work, under 10 minutes on one CUDA GPU (each phase is time-boxed):
#   (a) the tests that touch device code, run on CUDA (their CUDA-only cases are skipped on CPU);
#   (b) the recipe for $RECIPE_STEPS steps in bf16 (views/s, peak GPU memory from its metrics.jsonl),
#       then syncs per step of the training step: new helpers vs today's loop (gpu_sync_count.py);
#   (c) a time-boxed speedrun (full-width ResNet-18, full CIFAR-10, recommended recipe, kNN on the 10k
#       test split every $KNN_EVERY s) -> benchmarks/results/gpu_speedrun.json.
# Without CUDA (or with --dry-run) it says so, runs the same code path on the CPU with tiny limits and
# exits 0; results then go to $OUT_DIR (default: a temporary folder), not benchmarks/results.
#
#   bash benchmarks/gpu_check.sh            # on a GPU machine
#   bash benchmarks/gpu_check.sh --dry-run  # CPU, ~30 s
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DATA=${DATA:-../shared/data/cifar10}
RECIPE_STEPS=${RECIPE_STEPS:-200}
BUDGET=${BUDGET:-150}
KNN_EVERY=${KNN_EVERY:-50}

DRY=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY=1
elif ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU visible -> dry run of the same code path on the CPU (tiny limits)"
  DRY=1
fi

if [ "$DRY" = 1 ]; then
  OUT_DIR=${OUT_DIR:-$(mktemp -d)}
  DEVICE=cpu
  [ -d "$DATA" ] || DATA=recipes/data/cifar10-5k
  RECIPE_ARGS=(--max_steps 1 --limit 32 --batch_size 8 --width 4 --proj_dim 16 --precision fp32
               --eval_split "" --log_every 1)
  SYNC_ARGS=(--smoke)  # width 4, batch 8, 2 steps, 64 images
  SPEED_ARGS=(--smoke)  # width 4, batch 16, 64 images, 3 s
else
  OUT_DIR=${OUT_DIR:-benchmarks/results}
  DEVICE=cuda
  RECIPE_ARGS=(--max_steps "$RECIPE_STEPS" --precision bf16 --knn_random_init false --eval_split ""
               --log_every 50)
  SYNC_ARGS=(--steps 20 --warmup 5)
  SPEED_ARGS=(--budget "$BUDGET" --knn-every "$KNN_EVERY")
fi
mkdir -p "$OUT_DIR"
RUN_DIR=$(mktemp -d)
trap 'rm -rf "$RUN_DIR"' EXIT
echo "gpu_check: device=$DEVICE data=$DATA out=$OUT_DIR"
"$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

# (a) tests touching device code (views, losses, step guard, backends, pinned gather)
# plus the two tests that must hold on a 1-GPU machine: bitwise resume (deterministic cuDNN) and the
# 2-process run (its ranks fall back to gloo on the CPU when there are fewer GPUs than ranks)
TESTS=(tests/test_views.py tests/test_losses.py tests/train/test_step_guard.py tests/train/test_backends.py tests/data/test_pinned.py
       tests/recipes/test_pretrain.py::test_interrupt_and_resume_is_bitwise_identical
       tests/test_distributed.py::test_two_processes_match_one_process_on_the_global_batch)
if [ "$DRY" = 1 ]; then
  echo "(a) skipped in the dry run: would run $PY -m pytest -q ${TESTS[*]}"
else
  echo "(a) device tests on CUDA"
  timeout 240 "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
fi

# (b) the recipe in bf16: views/s and peak memory from its metrics log
echo "(b) recipe: ${RECIPE_ARGS[*]}"
timeout 180 "$PY" recipes/pretrain.py --config recipes/configs/cifar10_bt_d256_m4.yaml --arch resnet18 \
  --data "$DATA" --output_dir "$RUN_DIR/recipe" --progress false --export false --run_state_every 0 --overwrite \
  "${RECIPE_ARGS[@]}" > "$RUN_DIR/recipe.log" 2>&1 || { tail -30 "$RUN_DIR/recipe.log"; exit 1; }
"$PY" - "$RUN_DIR/recipe/logs/metrics.jsonl" "$OUT_DIR/gpu_recipe.json" <<'EOF'
import json, sys
import torch
rows = [json.loads(line) for line in open(sys.argv[1])]
steps = [r for r in rows if "views_per_s" in r]
last = steps[-1]
out = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "step": last["step"],
       "views_per_s_last_window": last["views_per_s"], "peak_memory_mb": max(r["peak_memory_mb"] for r in steps),
       "loss": last["loss"], "nan_skipped": last["nan_skipped"]}
json.dump(out, open(sys.argv[2], "w"), indent=2)
print("(b) recipe:", out)
EOF
echo "(b) syncs per step"
timeout 120 "$PY" benchmarks/gpu_sync_count.py --device "$DEVICE" --data "$DATA" "${SYNC_ARGS[@]}" \
  --out "$OUT_DIR/gpu_sync_count.json"

# (c) time-boxed speedrun
echo "(c) speedrun: ${SPEED_ARGS[*]}"
timeout $((BUDGET + 150)) "$PY" benchmarks/gpu_speedrun.py --device "$DEVICE" --data "$DATA" "${SPEED_ARGS[@]}" \
  --out "$OUT_DIR/gpu_speedrun.json"
echo "gpu_check: done ($([ "$DRY" = 1 ] && echo 'dry run, CPU' || echo CUDA)); results in $OUT_DIR"
