#!/usr/bin/env python3
"""ONNX Runtime's own Python path for one MoE layer, as onnxruntime-genai's builder runs it:
quantize_matmul_4bits per expert matrix, then cuda_quantizer's CUTLASS SM80 prepack.
Prints one line per shape in the same form as build/bench/bench_layer, so
bench/run_device_bench.sh can print ratios. Shapes, dtype (float16 input, the CUDA io dtype)
and block size match bench_layer's defaults.

usage: ort_python_layer.py gpt-oss-20b|qwen3-30b-a3b [block] [max_experts]
"""
import inspect
import sys
import time

import numpy as np
from onnxruntime.capi import _pybind_state as C
from onnxruntime.quantization import cuda_quantizer as cq

SHAPES = {"gpt-oss-20b": (32, 2880, 2880), "qwen3-30b-a3b": (128, 2048, 768)}


def find_packer():
    for name in ("_pack_weights_for_cuda_mixed_gemm", "pack_weights_for_cuda_mixed_gemm"):
        fn = getattr(cq, name, None)
        if fn is not None:
            return name, fn
    raise SystemExit("cuda_quantizer has no CUTLASS packer: " + ", ".join(dir(cq)))


def quantize(w_kn, n, k, block):
    blocks = k // block
    packed = np.zeros((n, blocks, block // 2), dtype=np.uint8)
    scales = np.zeros((n, blocks), dtype=w_kn.dtype)
    zp = np.zeros((n, (blocks + 1) // 2), dtype=np.uint8)
    C.quantize_matmul_4bits(packed, w_kn, scales, zp, block, n, k, True)
    return packed, scales


def main():
    shape = sys.argv[1]
    block = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    max_experts = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    experts, hidden, inter = SHAPES[shape]
    if max_experts:
        experts = min(experts, max_experts)
    name, pack = find_packer()
    print(f"# packer: cuda_quantizer.{name}{inspect.signature(pack)}", flush=True)
    rng = np.random.default_rng(0)
    mats = [(2 * inter, hidden), (hidden, inter)]  # (N, K) of fc1 and fc2
    inputs = [(rng.standard_normal((k, n), dtype=np.float32) * 0.02).astype(np.float16) for n, k in mats]
    tq = tp = 0.0
    for _ in range(experts):
        for (n, k), w in zip(mats, inputs):
            t0 = time.perf_counter()
            packed, _ = quantize(w, n, k, block)
            t1 = time.perf_counter()
            pack(packed.reshape(n, k // 2), n, k, 4)
            t2 = time.perf_counter()
            tq += t1 - t0
            tp += t2 - t1
    total = tq + tp
    print(f"onnxruntime-python {shape} layer: {experts} experts, int4 block {block}, quantize+cutlass pack: "
          f"{total:.3f} s ({total * 1e3 / experts:.2f} ms/expert; quantize {tq:.3f} s, pack {tp:.3f} s)")


if __name__ == "__main__":
    main()
