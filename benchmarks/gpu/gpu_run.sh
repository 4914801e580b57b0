#!/usr/bin/env bash
# Stages `gpu_run` and `gpu_run_check` of run.sh (issue 18): `tuneserve run recipe.yaml` from
# nothing to the report on the GPU machine, then `run --serve` answering the openai client.
#   gpu_run.sh start   # the run in its own session (it outlives the device call while the
#                      # machine is warm), waited for until it serves or the stage's deadline
#   gpu_run.sh check   # waits until it serves, asks it with the openai client, stops it
# RUN_ARGS: more `tuneserve run` arguments (e.g. "--set train.max_steps=4" for a dry run on CPU).
# Needs: stages setup, vllm_setup and smol_setup (the offline Hub cache in $HF_HUB_CACHE).
set -uo pipefail
work=/tmp/tsrun log=/tmp/tsrun/run.log pidfile=/tmp/tsrun/run.pid key=gpu-run-key
export TUNESERVE_MODELS_DIR="$work/models" HF_HUB_OFFLINE=1 TUNESERVE_API_KEY="$key"
served() { grep -q "^endpoint: " "$log" 2> /dev/null; }

if [ "${1:-start}" = start ]; then
  rm -rf "$work" && mkdir -p "$work" || exit 1
  sed "s#@DATA@#$PWD/toolkit/demo/facts.jsonl#" benchmarks/gpu/run_recipe.yaml > "$work/recipe.yaml"
  date +%s > "$work/started"
  # --serve (the default): the engines that answer the eval go on serving.
  # The process writes its own PID (setsid may fork, and then `$!` is not the one to signal).
  # The whole subshell is redirected: a background list holding run.sh's pipe would keep the
  # stage (and the device call) from ending while the run serves.
  (cd "$work" && RUN_ARGS="${RUN_ARGS:-}" exec setsid bash -c 'echo $$ > run.pid; exec python3 -m toolkit.cli run recipe.yaml $RUN_ARGS') \
    > "$log" 2>&1 < /dev/null &
  for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
fi
pid=$(cat "$pidfile")
until served; do
  if ! kill -0 "$pid" 2> /dev/null; then echo "tuneserve run exited:"; cat "$log"; exit 1; fi
  sleep 3
done
echo "serving after $(($(date +%s) - $(cat "$work/started"))) s"; cat "$log"
cp "$log" "$RESULTS/gpu_run.log"
[ "${1:-start}" = start ] && exit 0

run="$work/models/runs/gpu-run"
mkdir -p "$RESULTS/gpu-run" && cp -r "$run/eval" "$run/manifest.json" "$run/recipe.yaml" "$RESULTS/gpu-run/"
cp -r "$work/models/logs/serve" "$RESULTS/gpu-run/engine-logs" 2> /dev/null
grep -hE "Loading weights took|init engine|Graph capturing finished|torch.compile takes|Available KV cache|Starting vLLM" \
  "$work"/models/logs/serve/*.log > "$RESULTS/vllm_startup.txt" 2> /dev/null
python3 - "$key" <<'PY' 2>&1 | tee "$RESULTS/gpu_run_client.txt"
# `run --serve` answers the official openai client, base and tuned side by side.
import json, sys, time
from openai import OpenAI
client = OpenAI(base_url="http://127.0.0.1:8100/v1", api_key=sys.argv[1])
print("models:", [m.id for m in client.models.list().data])
for row in open("/tmp/tsrun/models/runs/gpu-run/data/heldout.jsonl").readlines()[:4]:
    messages = json.loads(row)["messages"]
    for model in ("base", "tuned"):
        started = time.perf_counter()
        reply = client.chat.completions.with_raw_response.create(
            model=model, messages=messages[:-1], max_tokens=32, temperature=0)
        answer = reply.parse().choices[0].message.content
        print(f"{model:5} {time.perf_counter() - started:5.2f} s  {reply.headers['x-tuneserve-mode']:8} "
              f"{messages[-2]['content']!r} -> {answer!r} (expected {messages[-1]['content']!r})")
PY
kill -TERM "$pid"; for _ in $(seq 60); do kill -0 "$pid" 2> /dev/null || break; sleep 1; done
echo "after SIGTERM:"; pgrep -af "vllm|EngineCore|toolkit.cli" || echo "(no process left)"
