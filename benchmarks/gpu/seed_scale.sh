#!/usr/bin/env bash
# Stages `seed_*` of run.sh (issue 22): the seeds' recipes on random-initialised Qwen3-8B and
# Qwen3-14B shapes, through `tuneserve train` and `tuneserve export` themselves.
#   seed_scale.sh build SHAPE          # the shape on the GPU -> /tmp/seed/qwen3-SHAPE (once)
#   seed_scale.sh data                 # the length mixes + their token lengths
#   seed_scale.sh train CONFIG...      # one `tuneserve train` each (004-* on 14b, 000-* on 8b)
#   seed_scale.sh export CONFIG        # merged16 of that run: time, peak host/GPU memory, disk,
#                                      # the manifest's hashing (threads vs one), `tuneserve verify`
#   seed_scale.sh drop SHAPE           # free its disk (the device has 64 GiB)
# Results: $RESULTS/seed/{results.jsonl,export.json,*.log}; render with
#   python benchmarks/seed_scale.py render results.jsonl --export export.json --info info.json
# A config starts only if its usual duration fits before the stage's deadline ($STAGE_END).
set -uo pipefail
root=/tmp/seed bench="$PWD/benchmarks/seed_scale.py" out="$RESULTS/seed"
mkdir -p "$root" "$out"
export TUNESERVE_MODELS_DIR="$root/models"
# SEED_SHAPE, SEED_BACKEND, SEED_SET: a dry run here, e.g. SEED_SHAPE=tiny SEED_BACKEND=hf
# SEED_SET="--set model.load_in_4bit=false" (the hf backend has no 4-bit on a CPU).
shape_of() { [ -n "${SEED_SHAPE:-}" ] && { echo "$SEED_SHAPE"; return; }; case $1 in 004-*) echo 14b ;; *) echo 8b ;; esac; }
left() { echo $(( ${STAGE_END:-$(( $(date +%s) + 10**6 ))} - $(date +%s) )); }

info() {
  python3 - "$out/info.json" <<'PY'
import json, subprocess, sys
from importlib.metadata import version
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
except OSError:
    gpu = "none"
info = {"gpu": gpu}
for name in ("torch", "transformers", "unsloth", "peft", "trl", "bitsandbytes"):
    try:
        info[name] = version(name)
    except Exception:
        info[name] = "absent"
json.dump(info, open(sys.argv[1], "w"))
print(info)
PY
}

build() {
  local shape=$1 dest="$root/qwen3-$1"
  [ -f "$dest/config.json" ] && { echo "have $dest"; return 0; }
  local t0=$SECONDS
  python3 - "$shape" "$dest" "$TOKENIZER" <<'PY' || return 1
import sys
from pathlib import Path
import torch
from tests.qwen3_shapes import build_qwen3
with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
    build_qwen3(Path(sys.argv[2]), sys.argv[1], Path(sys.argv[3]), dtype="bfloat16")
PY
  echo "built $shape in $((SECONDS - t0)) s: $(du -sh "$dest" | cut -f1)"
}

data() {
  python3 "$bench" data --rows "${SEED_ROWS:-400}" --out "$root/data" --tokenizer "$root/qwen3-${1:-14b}"
}

train() {
  for config in "$@"; do
    local shape; shape=$(shape_of "$config")
    local need=150; [ "$shape" = 8b ] && need=90
    if [ "$(left)" -lt "$need" ]; then echo "skip $config: $(left) s left, needs ~$need"; continue; fi
    python3 "$bench" recipe "$config" --model "$root/qwen3-$shape" --data "$root/data" \
      --steps "${SEED_STEPS:-8}" > "$root/$config.yaml" || return 1
    rm -rf "$TUNESERVE_MODELS_DIR/runs/seed-$config"
    local t0; t0=$(date +%s.%N)
    # shellcheck disable=SC2086  # SEED_SET is several words
    timeout -k 5 "$(( $(left) - 5 ))" python3 -m toolkit.cli train "$root/$config.yaml" \
      --backend "${SEED_BACKEND:-unsloth}" ${SEED_SET:-} > "$out/$config.log" 2>&1
    local rc=$? wall; wall=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
    tail -4 "$out/$config.log"; echo "$config: exit $rc after $wall s"
    cp "$TUNESERVE_MODELS_DIR/runs/seed-$config/logs/train-ranks.log" "$out/$config.ranks.log" 2> /dev/null
    python3 "$bench" collect "$config" --run "$TUNESERVE_MODELS_DIR/runs/seed-$config" \
      --model "$root/qwen3-$shape" --data "$root/data" --wall "$wall" --log "$out/$config.log" \
      >> "$out/results.jsonl" && tail -1 "$out/results.jsonl"
  done
}

export_run() {
  local run="$TUNESERVE_MODELS_DIR/runs/seed-$1" measure="python3 $PWD/benchmarks/gpu/peak_rss.py"
  # the machine went cold since the training: train it again (fewer steps) before exporting
  [ -f "$run/adapter/adapter_config.json" ] || SEED_STEPS="${SEED_EXPORT_STEPS:-2}" train "$1"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$out/export-gpu.csv" 2> /dev/null &
  local smi=$!
  # when the merged folder lands (merge + write), apart from the checks that follow
  (t0=$(date +%s); until [ -d "$run/merged16" ]; do sleep 1; done
   echo "merged16 written after $(( $(date +%s) - t0 )) s") > "$out/merge-time.txt" &
  local watcher=$!
  $measure "$out/export-merged16.json" -- python3 -m toolkit.cli export "seed-$1" --format merged16 \
    > "$out/export.log" 2>&1
  local rc=$?
  kill $smi $watcher 2> /dev/null
  tail -5 "$out/export.log"; echo "export exit $rc"; cat "$out/merge-time.txt"
  $measure "$out/verify.json" -- python3 -m toolkit.cli verify "seed-$1" > "$out/verify.log" 2>&1
  echo "verify exit $?"; tail -5 "$out/verify.log"
  # The manifest's hashing on this 28 GB folder: one thread (before) vs the threads it uses now.
  [ "${SEED_HASH:-1}" = 0 ] || python3 - "$run" "$out" <<'PY'
import json, sys, time
from pathlib import Path
from toolkit.core.artifacts import sha256_file, sha256_files
run, out = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(p for p in (run / "merged16").rglob("*") if p.is_file())
t0 = time.perf_counter(); one = {p: sha256_file(p) for p in files}; t1 = time.perf_counter()
many = sha256_files(files); t2 = time.perf_counter()
assert one == many
size = sum(p.stat().st_size for p in files) / 2**30
report = {"hash_gib": size, "hash_one_thread_s": t1 - t0, "hash_threads_s": t2 - t1}
print(report)
(out / "hashing.json").write_text(json.dumps(report))
PY
  du -sb "$run/merged16" | cut -f1 > "$out/merged16.bytes"
  sort -n "$out/export-gpu.csv" | tail -1 | sed 's/^/export peak GPU MiB: /'
  return $rc
}

case "${1:-}" in
  build) shift; build "$@" ;;
  data) shift; data "$@" ;;
  train) shift; info; train "$@" ;;
  export) shift; export_run "$@" ;;
  drop) rm -rf "$root/qwen3-$2"; df -h /tmp | tail -1 ;;
  *) echo "usage: seed_scale.sh build|data|train|export|drop ..." >&2; exit 2 ;;
esac
