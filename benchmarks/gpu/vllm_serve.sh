#!/usr/bin/env bash
# Stage `vllm_serve` of run.sh: one `tuneserve serve --engine vllm` (two vLLM engines: the merged
# export, and the base carrying the adapter unmerged), then, in order of what matters most if
# the call runs out of time: vLLM's raw response shapes, the `gpu` tests, the gateway overhead at
# GPU speed, the before/after eval, the harness rate, and last the SIGTERM test.
# Needs: stage vllm_setup (vLLM installed) and vllm_models (the run in $VW/models).
# VLLM_QUICK=1 (when device time is short): vLLM with --enforce-eager (no torch.compile, no CUDA
# graphs: ready in about a minute, slower per token) and fewer benchmark requests.
set -uo pipefail
quick=${VLLM_QUICK:-0}
eager=(); per_stream=4; rounds=2; max_tokens=256
[ "$quick" = 1 ] && { eager=(--engine-arg=--enforce-eager); per_stream=2; rounds=1; max_tokens=128; }
export TUNESERVE_MODELS_DIR="$VW/models"
run="$VW/models/runs/gpu-vllm" logs="$VW/models/logs/serve" key=gpu-test-key port=8100
gateway="http://127.0.0.1:$port"
# The adapter's own record of its base, so `--lora` finds it among the served folders.
base=$(python3 -c "import json, os; p = json.load(open('$run/adapter/adapter_config.json'))['base_model_name_or_path']; print(p if os.path.isdir(p) else '$VW/base')")
pidfile="$VW/serve.pid" startfile="$VW/serve.started"
# serve runs in its own session: the device keeps such a process across calls while the machine
# is warm, so `vllm_serve.sh ready` (start, wait until ready, return) can spend one call on the
# engines' minutes of startup and a second call on the rest.
if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2> /dev/null; }; then
  rm -rf "$logs" "$RESULTS/vllm_startup.txt"
  date +%s > "$startfile"
  setsid python3 -m toolkit.cli serve "tuned=$run/merged16" "base=$base" --lora "tuned-lora=$run/adapter" \
    --engine vllm --api-key "$key" --port "$port" --ready-timeout 540 \
    --engine-arg=--enable-log-requests "${eager[@]}" > "$RESULTS/serve.log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
fi
pid=$(cat "$pidfile")
collect() {
  mkdir -p "$RESULTS/engine-logs"
  for log in "$logs"/*.log; do tail -c 3000000 "$log" > "$RESULTS/engine-logs/$(basename "$log")"; done
}
trap collect EXIT
trap 'collect; exit 143' TERM INT  # run.sh's deadline: the engines' logs still come back
until python3 -c "import httpx, sys; sys.exit(httpx.get('$gateway/v1/models', headers={'Authorization': 'Bearer $key'}, timeout=2).status_code != 200)" 2> /dev/null; do
  kill -0 "$pid" 2> /dev/null || { echo "tuneserve serve exited"; tail -30 "$RESULTS/serve.log"; exit 1; }
  sleep 2
done
engine=$(grep -o -- '--port [0-9]*' "$logs/tuned.log" | head -1 | cut -d' ' -f2)
# Engines answer only their gateway: tuneserve gives each a random key through its environment
# (VLLM_API_KEY). The direct measurements below read it there (same user; never on argv).
engine_pid=$(pgrep -f -- "--port $engine( |$)" | head -1)
engine_key=$(tr '\0' '\n' < "/proc/$engine_pid/environ" | sed -n 's/^VLLM_API_KEY=//p')
if [ ! -s "$RESULTS/vllm_startup.txt" ]; then
  echo "gateway and both vLLM engines ready after $(($(date +%s) - $(cat "$startfile"))) s (engines started one after another)" | tee "$RESULTS/vllm_startup.txt"
  for model in tuned base; do
    grep -E "Loading weights took|init engine|Graph capturing finished|torch.compile takes|Available KV cache" "$logs/$model.log" | sed "s/^/$model: /" >> "$RESULTS/vllm_startup.txt"
  done
fi
echo "tuned's vLLM engine listens on $engine"
[ "${1:-}" = ready ] && { echo "tuneserve serve ready (pid $pid), left running"; trap - EXIT; exit 0; }

# vLLM's own response shapes (straight from the engine), to check the gateway's fixtures against.
python3 - "$engine" "$RESULTS" "$engine_key" <<'PY'
import json, sys, httpx
url, out = f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions", sys.argv[2]
auth = {"Authorization": f"Bearer {sys.argv[3]}"}
body = {"model": "tuned", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12,
        "min_tokens": 12, "seed": 1}
open(f"{out}/vllm_chat_completion.json", "w").write(
    httpx.post(url, json=body, headers=auth, timeout=60).text)
stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
with httpx.stream("POST", url, json=stream, headers=auth, timeout=60) as response:
    open(f"{out}/vllm_chat_stream.txt", "w").write("".join(response.iter_text()))
PY

export TUNESERVE_VLLM_GATEWAY="$gateway/v1" TUNESERVE_VLLM_KEY="$key" TUNESERVE_VLLM_LOGS="$logs" \
  TUNESERVE_VLLM_SERVE_PID="$pid"
python3 -m pytest -m gpu tests/serve/test_vllm_gpu.py -k "not sigterm" -p no:cacheprovider -q -rA \
  -s --timeout=300 2>&1 | tee "$RESULTS/pytest_vllm.txt"
collect

python3 benchmarks/gateway_overhead.py --gateway-url "$gateway" --engine-url "http://127.0.0.1:$engine" \
  --model tuned --api-key "$key" --engine-api-key "$engine_key" --streams 1,8,32,64 --requests-per-stream "$per_stream" --max-tokens "$max_tokens" \
  --client-procs 4 --rounds "$rounds" --label "vLLM 0.26.0, ${VLLM_SHAPE:-0.6b} Qwen3${eager[*]:+, eager}" \
  --out "$RESULTS/gateway_overhead_vllm.md"

eval_started=$SECONDS
python3 -m toolkit.cli eval --suite heldout --suite guard --model base --model tuned \
  --model tuned-lora --run gpu-vllm --base-url "$gateway/v1" --api-key "$key" --concurrency 64 \
  --max-tokens 128 --report "$RESULTS/eval" 2>&1 | tee "$RESULTS/eval.txt"
echo "eval wall: $((SECONDS - eval_started)) s" | tee -a "$RESULTS/eval.txt"

[ "$quick" = 1 ] || python3 benchmarks/eval_throughput.py --url "http://127.0.0.1:$engine/v1" --model tuned \
  --api-key "$engine_key" --concurrency 1,8,32,64 --requests 100 --repeats 2 --max-tokens 16 \
  --label "vLLM 0.26.0 direct" --out "$RESULTS/eval_throughput_vllm_direct.md"
python3 benchmarks/eval_throughput.py --url "$gateway/v1" --model tuned --api-key "$key" \
  --concurrency "$([ "$quick" = 1 ] && echo 64 || echo 8,64)" --requests 100 --repeats "$rounds" --max-tokens 16 \
  --label "vLLM 0.26.0 via gateway" --out "$RESULTS/eval_throughput_vllm_gateway.md"

python3 -m pytest -m gpu tests/serve/test_vllm_gpu.py -k sigterm -p no:cacheprovider -q -rA \
  --timeout=120 2>&1 | tee -a "$RESULTS/pytest_vllm.txt"
echo "left after SIGTERM:"; pgrep -af "vllm.entrypoints|EngineCore|toolkit.cli serve" || echo "(no process)"
kill "$pid" 2> /dev/null
rm -f "$pidfile"
exit 0
