#!/usr/bin/env bash
# GPU readiness in one command: the throughput benchmark (k-means, then fast vs reference
# pipeline and the CoNR/BYOL step ratio), the neighbourhood benchmark and as much of the timed
# CIFAR-10 run as fits, every result as JSON in one folder, the whole in under 8 minutes.
#
#   benchmarks/gpu_check.sh [--smoke] [--data DIR] [--budget SECONDS] [OUT_DIR]
#
# OUT_DIR: where the JSON files go (default: $OUT when set, else benchmarks/results/gpu-check).
# --data / $CONR_DATA_ROOT: the CIFAR-10 JPEG tree (default .device-data/cifar10-jpeg, git-ignored;
#   a copy of ../shared/data/cifar10-jpeg carried to the GPU machine). When missing, the throughput
#   benchmark uses random images (noted in its JSON) and the timed run reports the missing folder.
# --budget / $GPU_CHECK_BUDGET_S: seconds for all stages together (default 465; 120 with --smoke,
#   about a minute of it used on an idle 2-core machine).
# --smoke: the same stages on the CPU at tiny sizes (random images, scikit-learn's digits for the
#   timed run), about a minute; tests/test_gpu_check.py runs it.
#
# Runs from the checkout alone (PYTHONPATH=., nothing installed). Every stage runs under `timeout`
# with its own time box, trimmed to what is left of the budget; a stage cut short or failing leaves
# what it wrote and the next stage still runs. Files written (at most 6, for the device tool's limit):
#   gpu_check.json       stages: rc, seconds, time box, timed out; torch / GPU; rewritten after each stage
#   kmeans.json          k-means + NMI/ACC/ARI on 60k x 256 features (device, and CPU beside scikit-learn)
#   throughput.json      pairs/s fast vs reference, CoNR/BYOL step ratio (+ FLOP/s with --smoke, on the CPU)
#   neighbors.json       ConAff vs F·Fᵀ top-k cost, and its share of a step (written per size)
#   cifar10_timed.json   the timed run's epochs (loss, NMI/ACC/ARI when clustered) and its final scores
#   gpu_check.log        every stage's output
set -u
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

SMOKE=0
DATA=${CONR_DATA_ROOT:-.device-data/cifar10-jpeg}
BUDGET=${GPU_CHECK_BUDGET_S:-}
DEST=${OUT:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --data) DATA=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) DEST=$1 ;;
  esac
  shift
done
DEST=${DEST:-benchmarks/results/gpu-check}
if [ -z "$BUDGET" ]; then BUDGET=$([ $SMOKE = 1 ] && echo 120 || echo 465); fi
mkdir -p "$DEST" || exit 2
DEST=$(cd "$DEST" && pwd)
LOG="$DEST/gpu_check.log"
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-run.XXXXXX")  # checkpoints stay out of DEST
STAGES="$RUN_DIR/stages.tsv"
: > "$LOG"; : > "$STAGES"
START=$(date +%s)

if [ $SMOKE = 1 ]; then
  DEVICE=cpu
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  KMEANS_ARGS=(--kmeans-n 3000 --kmeans-dim 32 --kmeans-n-init 2)
  THROUGHPUT_ARGS=(--backbone small_cnn --batch-sizes 32 --steps 1 --warmup 1 --images 64 --workers 0
                   --data "$RUN_DIR/no-data")
  NEIGHBORS_ARGS=(--sizes 64 --step-sizes 32 --backbone small_cnn --reps 2 --step-reps 1)
  TIMED_CONFIG=digits
  TIMED_OVERRIDES=(train.epochs=3 train.warmup_epochs=1 stage2.start_epoch=2 stage2.t_end=3 data.subset=300
                   model.width=8 model.hidden_dim=64 model.proj_dim=32 train.batch_size=100 cluster.n_init=2
                   cluster.eval_every=1 run.progress=false run.tensorboard=false train.threads=1)
  LIMITS=(kmeans=20 throughput=40 neighbors=25)
  TIMED_MARGIN=10
else
  DEVICE=cuda
  KMEANS_ARGS=(--kmeans-n-init 10)   # the official runs' restarts
  THROUGHPUT_ARGS=(--batch-sizes 512 --steps 30 --warmup 3 --workers 8 --data "$DATA")
  NEIGHBORS_ARGS=(--sizes 256 512 1024 2048 4096 8192 --step-sizes 512)
  TIMED_CONFIG=conr/configs/cifar10_timed.yaml
  TIMED_OVERRIDES=("data.root=$DATA")
  LIMITS=(kmeans=45 throughput=150 neighbors=70)
  TIMED_MARGIN=120   # start-up (decode, compile) + the final clustering after the last epoch
fi

limit_of() { local kv; for kv in "${LIMITS[@]}"; do [ "${kv%%=*}" = "$1" ] && echo "${kv#*=}"; done; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

ENV_JSON=$(python3 - <<'EOF' 2>/dev/null || echo '{}'
import json, platform
info = {"python": platform.python_version()}
try:
    import torch
    info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    import torchvision
    info["torchvision"] = torchvision.__version__
except Exception as exc:  # the summary still gets written
    info["error"] = repr(exc)
print(json.dumps(info))
EOF
)

write_summary() {  # gpu_check.json from the stages so far (atomic: temp file, then rename)
  python3 - "$DEST/gpu_check.json" "$STAGES" "$1" "$SMOKE" "$DEVICE" "$BUDGET" "$START" "$DATA" "$ENV_JSON" <<'EOF'
import json, os, sys, time
path, stages, done, smoke, device, budget, start, data, env = sys.argv[1:]
rows = []
for line in open(stages):
    name, rc, seconds, limit, timed_out, output = line.rstrip("\n").split("\t")
    rows.append({"stage": name, "rc": int(rc), "seconds": float(seconds), "time_box_s": int(limit),
                 "timed_out": timed_out == "1", "output": output or None})
summary = {"complete": done == "1", "mode": "smoke" if smoke == "1" else "gpu", "device": device,
           "budget_s": int(budget), "elapsed_s": round(time.time() - int(start), 1), "data_root": data,
           "env": json.loads(env or "{}"), "stages": rows}
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(summary, f, indent=2)
os.replace(tmp, path)
EOF
}

run_stage() {  # run_stage NAME OUTPUT_FILE LIMIT_S COMMAND...
  local name=$1 output=$2 limit=$3; shift 3
  local avail; avail=$(left)
  [ "$limit" -gt "$avail" ] && limit=$avail
  if [ "$limit" -lt 5 ]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" -1 0 "$limit" 0 "" >> "$STAGES"
    echo "== $name: skipped, budget spent" | tee -a "$LOG"
    write_summary 0
    return
  fi
  echo "== $name (time box ${limit}s): $*" | tee -a "$LOG"
  local t0 rc timed_out=0; t0=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" >> "$LOG" 2>&1
  rc=$?
  { [ $rc = 124 ] || [ $rc = 137 ]; } && timed_out=1
  local secs; secs=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$limit" "$timed_out" "$output" >> "$STAGES"
  echo "== $name: rc=$rc in ${secs}s" | tee -a "$LOG"
  write_summary 0
}

write_summary 0
run_stage kmeans kmeans.json "$(limit_of kmeans)" \
  python3 benchmarks/throughput.py --device "$DEVICE" --kmeans-only "${KMEANS_ARGS[@]}" --out "$DEST/kmeans.json"
run_stage throughput throughput.json "$(limit_of throughput)" \
  python3 benchmarks/throughput.py --device "$DEVICE" --skip-kmeans "${THROUGHPUT_ARGS[@]}" \
  --out "$DEST/throughput.json"
run_stage neighbors neighbors.json "$(limit_of neighbors)" \
  python3 benchmarks/neighbors.py --device "$DEVICE" "${NEIGHBORS_ARGS[@]}" --out "$DEST/neighbors.json"

# the timed run: what is left of the budget; its epochs stop cleanly (checkpointed, then scored)
# TIMED_MARGIN seconds before the time box, and `timeout` ends it at the box in any case
TIMED_LEFT=$(( $(left) - 10 ))
EPOCH_MIN=$(python3 -c "print(round(max(0.1, ($TIMED_LEFT - $TIMED_MARGIN) / 60), 2))")
run_stage cifar10_timed cifar10_timed.json "$TIMED_LEFT" \
  python3 -m conr train --config "$TIMED_CONFIG" --run-dir "$RUN_DIR/timed" "${TIMED_OVERRIDES[@]}" \
  "run.max_epoch_minutes=$EPOCH_MIN" "train.device=$DEVICE"
python3 - "$RUN_DIR/timed" "$LOG" "$DEST/cifar10_timed.json" "$TIMED_CONFIG" "$EPOCH_MIN" <<'EOF'
import json, os, re, sys
run, log, path, config, minutes = sys.argv[1:]
records = []
if os.path.exists(os.path.join(run, "metrics.jsonl")):
    records = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl")) if x.strip()]
lines = open(log).read().splitlines()
start = min((i for i, x in enumerate(lines) if x.startswith("== cifar10_timed (")), default=len(lines))
final = None
for line in lines[start:]:  # the closing line of `conr train`: nmi=… acc=… ari=… [scored=…]
    m = re.match(r"nmi=([\d.]+) acc=([\d.]+) ari=(-?[\d.]+)", line.strip())
    if m:
        final = dict(zip(("nmi", "acc", "ari"), map(float, m.groups())))
summary = {"config": config, "max_epoch_minutes": float(minutes), "epochs_done": len(records),
           "epoch_seconds": [r.get("epoch_seconds") for r in records], "final": final, "records": records,
           "note": "CIFAR-10 (JPEG q75), short schedule: not the paper's benchmark",
           "log_tail": lines[start:][-15:]}
with open(path + ".tmp", "w") as f:
    json.dump(summary, f, indent=2)
os.replace(path + ".tmp", path)
EOF
write_summary 1
rm -rf "$RUN_DIR"
echo "gpu_check: results in $DEST ($(( $(date +%s) - START ))s)"
