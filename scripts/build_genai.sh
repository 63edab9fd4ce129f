#!/usr/bin/env bash
# Builds the part of onnxruntime-genai that decides whether it accepts a moe2onnx folder: its
# config parser (src/config.cpp, json.cpp, config_utils.cpp), its model-type lists
# (src/models/model_type.h) and its sliding-window KV cache sizing (ComputeWindowedKvCacheSize,
# cut out of src/models/windowed_kv_cache.cpp), compiled from the given source tree and linked
# into tests/genai/genai_load_check.cpp. Cached and idempotent like scripts/setup.sh:
#
#   scripts/build_genai.sh SRC_DIR      SRC_DIR: a checkout of microsoft/onnxruntime-genai
#
# Output: ${M2O_GENAI_DIR:-/var/cache/moe2onnx/genai}/genai_load_check (+ a stamp naming the
# sources). tests/run.sh runs tests/e2e/genai.test.sh when it exists.
#
# Not built: the rest of the runtime (sessions, generator, tokenizer). It needs onnxruntime-
# extensions and its fetched dependencies, the ONNX Runtime C/C++ headers of the linked version
# and ~150 C++ files; the generation loop it would run is what tests/e2e/lib/harness.mjs does
# with ONNX Runtime 1.30 (same inputs, window-sized caches as sized here).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:?usage: scripts/build_genai.sh SRC_DIR (a checkout of microsoft/onnxruntime-genai)}
OUT=${M2O_GENAI_DIR:-/var/cache/moe2onnx/genai}
CXX=${CXX:-g++}

need=(src/config.cpp src/config.h src/json.cpp src/json.h src/config_utils.cpp src/config_utils.h
      src/filesystem.h src/provider_options.h src/runtime_settings.h src/models/model_type.h
      src/models/windowed_kv_cache.cpp src/smartptrs.h)
for f in "${need[@]}"; do
    [ -f "$SRC/$f" ] || { echo "build_genai: $SRC/$f missing: pass a checkout of microsoft/onnxruntime-genai" >&2; exit 2; }
done

ours=(scripts/build_genai.sh scripts/genai_shim/generators.h scripts/genai_shim/pre.h
      scripts/genai_shim/models/onnxruntime_api.h tests/genai/genai_load_check.cpp)
stamp=$(cat "${need[@]/#/$SRC/}" "${ours[@]}" | sha256sum | cut -c1-16)
if [ -x "$OUT/genai_load_check" ] && [ "$(cat "$OUT/genai_load_check.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "build_genai: up to date ($OUT, sources $stamp)"
    exit 0
fi

mkdir -p "$OUT"
work=$(mktemp -d "$OUT/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/models" "$work/include"
for f in "${need[@]}"; do cp "$SRC/$f" "$work/$f"; done

# DeviceType from smartptrs.h and ComputeWindowedKvCacheSize from windowed_kv_cache.cpp, cut
# out verbatim: the rest of those files needs a whole session.
awk '/^enum struct DeviceType \{/,/^\};/' "$work/src/smartptrs.h" > "$work/enum.txt"
awk '/^int ComputeWindowedKvCacheSize\(/,/^\}/' "$work/src/models/windowed_kv_cache.cpp" > "$work/fn.txt"
[ -s "$work/enum.txt" ] && [ -s "$work/fn.txt" ] ||
    { echo "build_genai: DeviceType or ComputeWindowedKvCacheSize not found in $SRC (source layout changed)" >&2; exit 1; }
{ echo '#pragma once'; echo 'namespace Generators {'; cat "$work/enum.txt"; echo '}'; } > "$work/include/device_type.h"
{ echo '#include "generators.h"'; echo '#include "device_type.h"'; echo 'namespace Generators {';
  cat "$work/fn.txt"; echo '}'; } > "$work/src/windowed_size.cpp"

flags=(-std=c++20 -O1 -include "$PWD/scripts/genai_shim/pre.h" -I"$PWD/scripts/genai_shim"
       -I"$work/src" -I"$work/include")
objs=()
for f in config json config_utils windowed_size; do
    nice -n 15 "$CXX" "${flags[@]}" -c "$work/src/$f.cpp" -o "$work/$f.o"
    objs+=("$work/$f.o")
done
nice -n 15 "$CXX" "${flags[@]}" tests/genai/genai_load_check.cpp "${objs[@]}" -o "$work/genai_load_check"
mv "$work/genai_load_check" "$OUT/genai_load_check"
echo "$stamp" > "$OUT/genai_load_check.stamp"
{ git -C "$SRC" rev-parse HEAD 2>/dev/null || echo "$SRC, version $(cat "$SRC/VERSION_INFO" 2>/dev/null || echo unknown)"; } > "$OUT/genai_load_check.source"
echo "build_genai: built $OUT/genai_load_check from $SRC ($(cat "$OUT/genai_load_check.source"))"
