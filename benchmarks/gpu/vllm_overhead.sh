#!/usr/bin/env bash
# Stage `vllm_overhead` of run.sh: the gateway's cost at GPU speed on its own, with more rounds
# than vllm_serve.sh can afford. One vLLM engine (the untrained 0.6B-shaped base: the gateway's
# cost does not depend on the weights), then a py-spy profile of the gateway process at 1 stream.
# Needs: stage vllm_setup (vLLM installed); builds $VW/base if it is not there.
set -uo pipefail
if [ ! -d "$VW/base" ]; then
  python3 -c "from pathlib import Path; from tests.qwen3_shapes import Qwen3Shape, build_qwen3; build_qwen3(Path('$VW/base'), Qwen3Shape(1024, 3072, 28, 16, 8, 128, True), Path('$TOKENIZER'), dtype='bfloat16')" || exit 1
fi
export TUNESERVE_MODELS_DIR="$VW/models-overhead"
key=gpu-test-key port=8101 gateway=http://127.0.0.1:8101 logs="$VW/models-overhead/logs/serve"
rm -rf "$logs"
started=$SECONDS
python3 -m toolkit.cli serve "tuned=$VW/base" --engine vllm --api-key "$key" --port "$port" \
  --ready-timeout 400 > "$RESULTS/serve_overhead.log" 2>&1 &
pid=$!
trap 'kill $pid 2> /dev/null; wait $pid' EXIT
until python3 -c "import httpx, sys; sys.exit(httpx.get('$gateway/v1/models', headers={'Authorization': 'Bearer $key'}, timeout=2).status_code != 200)" 2> /dev/null; do
  kill -0 "$pid" 2> /dev/null || { echo "tuneserve serve exited"; tail -30 "$RESULTS/serve_overhead.log"; exit 1; }
  sleep 2
done
echo "one vLLM engine and the gateway ready after $((SECONDS - started)) s"
engine=$(grep -o -- '--port [0-9]*' "$logs/tuned.log" | head -1 | cut -d' ' -f2)
# the engine's own random key, from its environment (same user; tuneserve never puts it on argv)
engine_pid=$(pgrep -f -- "--port $engine( |$)" | head -1)
engine_key=$(tr '\0' '\n' < "/proc/$engine_pid/environ" | sed -n 's/^VLLM_API_KEY=//p')
bench=(python3 benchmarks/gateway_overhead.py --gateway-url "$gateway" --engine-url "http://127.0.0.1:$engine"
  --model tuned --api-key "$key" --engine-api-key "$engine_key" --max-tokens 256 --client-procs 4)
"${bench[@]}" --streams "${OVERHEAD_STREAMS:-1,8,32,64}" --requests-per-stream 6 --rounds 5 \
  --label "vLLM 0.26.0, 0.6b Qwen3, one engine" --out "$RESULTS/gateway_overhead_vllm_5rounds.md"
# Where the gateway's time goes at 1 stream: collapsed stacks (py-spy's raw format) of the
# serve process, gateway rounds and direct rounds alike (it idles in the direct ones).
# pip --target leaves out the wheel's scripts, where py-spy's binary is: take it from the wheel.
python3 -c "import glob, zipfile; w = zipfile.ZipFile(glob.glob('benchmarks/gpu/wheels/py_spy-*.whl')[0]); open('/tmp/py-spy', 'wb').write(w.read(next(n for n in w.namelist() if n.endswith('/scripts/py-spy'))))"
chmod +x /tmp/py-spy
/tmp/py-spy record --pid "$pid" --rate 500 --duration 30 --format raw --nonblocking \
  --output "$RESULTS/gateway_1stream.pyspy.txt" > "$RESULTS/pyspy.log" 2>&1 &
spy=$!
"${bench[@]}" --streams 1 --requests-per-stream 20 --rounds 2 --label "1 stream, under py-spy" \
  --out "$RESULTS/gateway_overhead_vllm_profiled.md"
wait "$spy"
