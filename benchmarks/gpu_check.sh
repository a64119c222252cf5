#!/usr/bin/env bash
# GPU readiness in one script (one call of at most 10 minutes on one H100/H200: every step's limit is cut to what is
# left of BUDGET seconds, default 570, and a step with under 10 s left is skipped, recorded with rc 124): a DeiT-S
# distilled training step in bf16 with and without data.device_augment and compile (images/s, MFU against the
# datasheet peak, the device stage's cost), for DeiT's recipe and DeiT III's (3-Augment), the tests that need CUDA, one demo epoch on the GPU in bf16 and in fp16
# with the grad scaler, `deit benchmark` for DeiT-B in bf16 with and without --compile, a teacher-cache build on the
# GPU; then one JSON of everything.
#
#   bash benchmarks/gpu_check.sh            # writes $OUT/gpu_check.json (OUT defaults to runs/gpu_check)
#   PY=/path/to/python bash benchmarks/gpu_check.sh
#   DRY_RUN=1 bash benchmarks/gpu_check.sh  # on a CPU: the train-step steps with a tiny DeiT at 32 px in fp32 and
#                                           # the report; the GPU-only steps recorded as skipped
#
# Needs a python whose torch sees the GPU (PY, default python3) with this package's dependencies; the package
# itself runs from src/ (no install). Each step has its own time limit; a failing step is recorded, not fatal.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/deit-gpu-check.XXXXXX")
STEPS="$OUT/steps.jsonl"
: > "$STEPS"
DEADLINE=$(( $(date +%s) + ${BUDGET:-570} ))
DRY_RUN=${DRY_RUN:-0}
if [[ $DRY_RUN == 1 ]]; then  # a tiny student on the CPU: the same code paths, seconds instead of minutes
  STEP_ARGS=(--device cpu --dtype fp32 --batch 8 --steps 1 --warmup 1 --photos 8 --sides 40,60 --img-size 32
             --model-args '{"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}'
             --variants "${VARIANTS:-worker,device,worker+compile,device+compile}")
else
  STEP_ARGS=(--device cuda --dtype bf16 --batch 256)
fi

step() {  # step NAME LIMIT_SECONDS COMMAND...: run, time, record {name, rc, seconds, log} in steps.jsonl
  local name=$1 limit=$2; shift 2
  local start rc ms left
  if [[ $DRY_RUN == 1 && $name != *train_step* ]]; then  # needs the GPU
    echo "skipped: DRY_RUN=1" > "$OUT/$name.log"
    printf '{"step": "%s", "rc": 0, "seconds": 0, "skipped": true}\n' "$name" >> "$STEPS"
    echo "[gpu_check] $name: skipped (dry run)"
    return
  fi
  start=$(date +%s%N)
  left=$(( DEADLINE - $(date +%s) ))
  (( limit > left )) && limit=$left
  if (( limit < 10 )); then
    echo "skipped: the script's time budget is spent" > "$OUT/$name.log"
    rc=124
  else
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
  fi
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '{"step": "%s", "rc": %d, "seconds": %d.%03d}\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) >> "$STEPS"
  echo "[gpu_check] $name: rc=$rc ($(tail -n 1 "$OUT/$name.log" | cut -c1-150))"
}

step environment 60 "$PY" -c "
import json, torch, platform
from deit.runtime.precision import resolve_amp
d = torch.device('cuda')
print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'device': torch.cuda.get_device_name(d),
                  'bf16': torch.cuda.is_bf16_supported(), 'amp_auto': resolve_amp('auto', d)[0],
                  'python': platform.python_version()}))"

# DeiT-S distilled, one training step as a run takes it (batch moved, device stage, mixup, forward, loss, backward,
# AdamW), bf16, batch 256: the worker path's float batch against device_augment's uint8 boxes, eager and compiled
# (compile: true, as a run compiles); then DeiT III's recipe (3-Augment, colour jitter on the device), eager.
step deit_s_train_step 240 "$PY" benchmarks/gpu_train_step.py "${STEP_ARGS[@]}" --output "$OUT/deit_s_train_step.json"
step deit3_s_train_step 90 "$PY" benchmarks/gpu_train_step.py "${STEP_ARGS[@]}" --recipe deit3 \
  --variants worker,device --output "$OUT/deit3_s_train_step.json"

step cuda_tests 240 "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider

# One demo epoch on the GPU: the digits teacher (1 epoch), then the distilled student for one epoch in bf16 and in
# fp16 with the grad scaler.
step demo_teacher 120 "$PY" -m deit train --config digits-convnet-teacher device=cuda epochs=1 progress=false \
  "output_dir=$WORK/teacher"
for amp in bf16 fp16; do
  step "demo_epoch_$amp" 120 "$PY" -m deit train --config digits-deit-distilled device=cuda epochs=1 amp=$amp \
    progress=false "teacher.checkpoint=$WORK/teacher/best.safetensors" "output_dir=$WORK/student_$amp"
  cp "$WORK/student_$amp/summary.json" "$OUT/demo_epoch_$amp.summary.json" 2>/dev/null
done

# DeiT-B in bf16, eager and compiled: inference and the training step, MFU against the datasheet peak.
for compile in "" "--compile"; do
  tag=${compile:+compiled}; tag=${tag:-eager}
  step "benchmark_deit_b_bf16_$tag" 240 "$PY" -m deit benchmark --device cuda --dtype bf16 $compile --json \
    --models deit_base_patch16_224 --train-models deit_base_distilled_patch16_224 --batch-sizes 256 \
    --train-batch-size 128 --tasks gemm inference train train+cache --repeats 5 --train-repeats 5 --no-peer
  grep -v '^\[benchmark\]' "$OUT/benchmark_deit_b_bf16_$tag.log" > "$OUT/benchmark_deit_b_bf16_$tag.json"
done

# A teacher-output cache built on the GPU for the demo student's stream (40 epochs), then its size.
step teacher_cache_build 120 "$PY" -m deit teacher-cache build --config digits-deit-distilled device=cuda \
  "teacher.checkpoint=$WORK/teacher/best.safetensors" --output "$WORK/cache" --outputs logits --no-progress
step teacher_cache_info 30 "$PY" -m deit teacher-cache info "$WORK/cache" --json

"$PY" - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
report = {"steps": steps, "ok": all(s["rc"] == 0 for s in steps)}
def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None
report["environment"] = load("environment.log")
report["cuda_tests"] = (out / "cuda_tests.log").read_text().strip().splitlines()[-1:]
report["deit_s_train_step"] = (load("deit_s_train_step.json") or {}).get("rows")
report["deit3_s_train_step"] = (load("deit3_s_train_step.json") or {}).get("rows")
for amp in ("bf16", "fp16"):
    s = load(f"demo_epoch_{amp}.summary.json") or {}
    report[f"demo_epoch_{amp}"] = {k: s.get(k) for k in ("seconds", "final")}
for tag in ("eager", "compiled"):
    b = load(f"benchmark_deit_b_bf16_{tag}.json") or {}
    report[f"benchmark_deit_b_bf16_{tag}"] = [
        {k: r.get(k) for k in ("task", "model", "batch", "ours_img_s", "ours_gflops", "ours_mfu_pct", "gemm_gflops",
                                "ours_peak_mem_mb")} for r in b.get("rows", [])]
report["teacher_cache"] = load("teacher_cache_info.log")
(out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
print(json.dumps({"ok": report["ok"], "steps": {s["step"]: s["rc"] for s in steps}}))
EOF
rm -rf "$WORK"
