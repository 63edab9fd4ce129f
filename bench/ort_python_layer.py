#!/usr/bin/env python3
"""ONNX Runtime's own Python path for one MoE layer, as onnxruntime-genai's builder runs it:
quantize_matmul_4bits per expert matrix (float16 [K, N] input, the CUDA io dtype, so float16
scales), then the CUTLASS SM80 prepack from onnxruntime.quantization.cuda_quantizer.
Prints one line per shape in the same form as build/bench/bench_layer, so
bench/run_device_bench.sh can print ratios. Shapes and block size match bench_layer's defaults.

The packer is the first found of: cuda_quantizer._pack_weights_for_cuda_mixed_gemm (PyTorch
implementation; runs on CUDA when torch sees a GPU, so set CUDA_VISIBLE_DEVICES= for the CPU),
cuda_quantizer.pack_weights_for_cuda_mixed_gemm, the onnxruntime pybind
pack_weights_for_cuda_mixed_gemm (onnxruntime-gpu builds). Threads: ONNX Runtime's quantizer
uses its own pool (limit it with taskset); torch follows OMP_NUM_THREADS, which this script also
passes to torch.set_num_threads.

usage: ort_python_layer.py gpt-oss-20b|qwen3-30b-a3b [block] [max_experts]
"""
import inspect
import os
import sys
import time

import numpy as np
from onnxruntime.capi import _pybind_state as C

SHAPES = {"gpt-oss-20b": (32, 2880, 2880), "qwen3-30b-a3b": (128, 2048, 768)}


def find_packer():
    try:
        from onnxruntime.quantization import cuda_quantizer as cq
    except ImportError:
        cq = None
    candidates = []
    if cq is not None:
        for name in ("_pack_weights_for_cuda_mixed_gemm", "pack_weights_for_cuda_mixed_gemm"):
            if getattr(cq, name, None) is not None:
                candidates.append((f"cuda_quantizer.{name}", getattr(cq, name)))
        getter = getattr(cq, "_get_pack_weights_for_cuda_mixed_gemm", None)
        if getter is not None:
            try:
                candidates.append(("cuda_quantizer._get_pack_weights_for_cuda_mixed_gemm()", getter()))
            except ImportError:
                pass
    if getattr(C, "pack_weights_for_cuda_mixed_gemm", None) is not None:
        candidates.append(("_pybind_state.pack_weights_for_cuda_mixed_gemm", C.pack_weights_for_cuda_mixed_gemm))
    if not candidates:
        raise SystemExit("no CUTLASS packer in this onnxruntime (cuda_quantizer: "
                         + (", ".join(n for n in dir(cq) if "pack" in n) if cq else "missing") + ")")
    return candidates[0]


def call_packer(pack, q, n, k):
    try:
        takes_arch = "force_arch" in inspect.signature(pack).parameters
    except (TypeError, ValueError):  # pybind functions may hide their signature
        takes_arch = True
    return pack(q, n, k, 4, 80) if takes_arch else pack(q, n, k, 4)


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
    threads = os.environ.get("OMP_NUM_THREADS")
    try:
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        torch_note = f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda {torch.cuda.is_available()}"
    except ImportError:
        torch_note = "no torch"
    name, pack = find_packer()
    print(f"# packer: {name}; {torch_note}; cpus allowed {len(os.sched_getaffinity(0))}", flush=True)
    rng = np.random.default_rng(0)
    mats = [(2 * inter, hidden), (hidden, inter)]  # (N, K) of fc1 and fc2
    inputs = [(rng.standard_normal((k, n), dtype=np.float32) * 0.02).astype(np.float16) for n, k in mats]
    call_packer(pack, quantize(inputs[1], *mats[1], block)[0].reshape(mats[1][0], -1), *mats[1])  # warm-up
    tq = tp = 0.0
    for _ in range(experts):
        for (n, k), w in zip(mats, inputs):
            t0 = time.perf_counter()
            packed, _ = quantize(w, n, k, block)
            t1 = time.perf_counter()
            call_packer(pack, packed.reshape(n, k // 2), n, k)
            t2 = time.perf_counter()
            tq += t1 - t0
            tp += t2 - t1
    total = tq + tp
    print(f"onnxruntime-python {shape} layer: {experts} experts, int4 block {block}, quantize+cutlass pack: "
          f"{total:.3f} s ({total * 1e3 / experts:.2f} ms/expert; quantize {tq:.3f} s, pack {tp:.3f} s)")


if __name__ == "__main__":
    main()
