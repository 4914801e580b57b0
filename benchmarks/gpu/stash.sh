#!/usr/bin/env bash
# A device call's carry replaces what earlier calls carried, and /tmp stays while the machine
# is warm: each carry call runs this to keep its part, e.g. wheels-vllm/part3 -> /tmp/parts/vllm-part3.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p /tmp/parts
for part in wheels-*/part*; do
  [ -d "$part" ] || continue
  name="${part%%/*}"; name="${name#wheels-}-$(basename "$part")"
  rm -rf "/tmp/parts/$name" && cp -r "$part" "/tmp/parts/$name"
done
du -sh /tmp/parts/* 2> /dev/null
