#!/usr/bin/env bash
# The CUDA suite, on the GPU machine: unpacks the staged ONNX Runtime CUDA kit if needed, points
# the suite at the carried moe2onnx bundle and runs tests/cuda/suite.mjs, which writes
# RESULTS.md into $OUT (or M2O_RESULTS). README, "CUDA suite", has the device calls.
set -uo pipefail
cd "$(dirname "$0")/../.."
[ -x /root/ortcuda/kit/node ] || bash scripts/cuda/stage.sh --unpack >/dev/null || exit 1
. scripts/cuda/stage.sh --env
B=$PWD/.carry/bundle
export LD_LIBRARY_PATH="$B/lib:$LD_LIBRARY_PATH" M2O_BIN=$B/moe2onnx M2O_POKE=$B/onnx_poke
[ -e node_modules ] || ln -s "$ORT_NODE_DIR" node_modules
"$NODE" tests/cuda/suite.mjs
