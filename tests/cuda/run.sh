#!/usr/bin/env bash
# The CUDA suite, on the GPU machine: unpacks the staged ONNX Runtime CUDA kit if needed, points
# the suite at the carried moe2onnx bundle and runs tests/cuda/suite.mjs, which writes
# RESULTS.md into $OUT (or M2O_RESULTS). README, "CUDA suite", has the device calls. Needs
# python3 with torch (CUDA) and transformers for the precision yardstick.
set -uo pipefail
cd "$(dirname "$0")/../.."
[ -x /root/ortcuda/kit/node ] || bash scripts/cuda/stage.sh --unpack >/dev/null || exit 1
. scripts/cuda/stage.sh --env
B=$PWD/.carry/bundle
export LD_LIBRARY_PATH="$B/lib:$LD_LIBRARY_PATH" M2O_BIN=$B/moe2onnx M2O_POKE=$B/onnx_poke
export M2O_COMMIT=${M2O_COMMIT:-$(cat "$B/COMMIT" 2>/dev/null || echo unknown)}
[ -e node_modules ] || ln -s "$ORT_NODE_DIR" node_modules
# The original models in float16/bfloat16 under transformers: the measured part of the floors.
export M2O_TF_PRECISION=${OUT:-/tmp}/transformers_precision.json
Q35_BIG=$(mktemp -d)/qwen3_5-35b-a3b-widths   # the suite's random Qwen3.5 checkpoint, same bytes
"$NODE" tests/cuda/make_q35_big.mjs "$Q35_BIG"
timeout 150 python3 tests/cuda/transformers_precision.py "$M2O_TF_PRECISION" \
    "qwen3_5-35b-a3b-widths=$Q35_BIG" >/dev/null 2>&1 ||
    echo "transformers_precision.py failed: fixed floors only" >&2
# A device command runs at most 600 s and returns nothing when killed: the suite stops its jobs
# in time to write RESULTS.md (suite.mjs, "deadline"); its jobs run in parallel processes.
export M2O_CUDA_DEADLINE_S=${M2O_CUDA_DEADLINE_S:-$((540 - SECONDS))}
echo "setup took ${SECONDS} s; suite deadline ${M2O_CUDA_DEADLINE_S} s"
# ONNX Runtime's CUDA kernels on single-op models with zero points (MatMulNBits, QMoE): what
# they compute for each format, against float64 (docs/FORMATS.md §15 records it).
M2O_ZP_EP=cuda M2O_ZP_MODELS=$B/zp_models "$NODE" tests/e2e/zero_points.test.mjs \
    > "${OUT:-/tmp}/zero_points_cuda.txt" 2>&1 || true
"$NODE" tests/cuda/suite.mjs
