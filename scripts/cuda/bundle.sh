#!/usr/bin/env bash
# Prepares, here (no GPU needed), what the CUDA suite carries to the GPU machine, in ignored
# folders under .carry/ that the device calls name in `carry`:
#   .carry/bundle/  build/moe2onnx and build/tools/onnx_poke from this checkout, with the shared
#                   libraries they need that the GPU machine's image lacks (protobuf-c, cJSON);
#   .carry/kit0/ .carry/kit1/ .carry/kit2/  the ONNX Runtime 1.29 CUDA kit (make_kit.sh) in
#                   parts small enough that one part plus the working tree fits one call's 64 MiB.
# Idempotent: the kit is built once (delete .carry/kit* to rebuild it); the bundle every time.
# Then see README, "CUDA suite", for the three device calls.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s all
B=.carry/bundle
rm -rf "$B" && mkdir -p "$B/lib"
cp build/moe2onnx build/tools/onnx_poke build/tools/zp_models "$B/"
for lib in $(ldd build/moe2onnx build/tools/onnx_poke build/tools/zp_models | awk '/libprotobuf-c|libcjson/ {print $3}' | sort -u); do
    cp -L "$lib" "$B/lib/"
done
# the commit the binary was built from, for RESULTS.md (the device's copy has no git history)
{ git rev-parse --short HEAD; git diff --quiet HEAD -- src Makefile || echo "+ uncommitted changes"; } | paste -sd' ' > "$B/COMMIT"
echo "bundle: $(du -sh "$B" | cut -f1) in $B ($(ls "$B/lib" | tr '\n' ' '); commit $(cat "$B/COMMIT"))"
if ! ls .carry/kit0/kit.tar.xz.part* >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    bash scripts/cuda/make_kit.sh "$tmp" 28
    i=0
    for p in "$tmp"/kit.tar.xz.part*; do mkdir -p ".carry/kit$i"; mv "$p" ".carry/kit$i/"; i=$((i + 1)); done
    rm -rf "$tmp"
fi
ls -la .carry/kit*/
