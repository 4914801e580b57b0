#!/usr/bin/env bash
# Download the wheels the GPU machine lacks (requirements-gpu.txt) for Python 3.12 / x86-64
# into benchmarks/gpu/wheels/ (git-ignored), slimmed to travel in one device call (< 64 MiB):
# Unsloth's web UI and bitsandbytes' libraries for other CUDA versions are never loaded there.
#   bash benchmarks/gpu/wheels.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/wheels"
rm -rf "$out" && mkdir -p "$out"
plat=(--python-version 3.12 --implementation cp --only-binary=:all:)
for n in 5 17 24 26 27 28 31 34 35; do plat+=(--platform "manylinux_2_${n}_x86_64"); done
plat+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps "${plat[@]}" -d "$out" -r "$here/requirements-gpu.txt"
python3 - "$out" <<'PY'
import pathlib, sys, zipfile
drop = {
    "unsloth-": lambda f: "/studio/" in f or f.startswith("studio/"),
    "bitsandbytes-": lambda f: f.endswith(".so") and "libbitsandbytes_" in f
        and not any(k in f for k in ("_cpu", "cuda130", "cuda132")),
}
for whl in pathlib.Path(sys.argv[1]).glob("*.whl"):
    rule = next((r for p, r in drop.items() if whl.name.startswith(p)), None)
    if rule is None:
        continue
    slim = whl.with_suffix(".slim")
    with zipfile.ZipFile(whl) as zi, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as zo:
        for info in zi.infolist():
            if not rule(info.filename):
                zo.writestr(info, zi.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    slim.replace(whl)
PY
du -sh "$out"
