#!/usr/bin/env python3
"""Golden vectors for the k_quant and INC-RTN weight-only quantizers, made by ONNX Runtime's own
Python code (the functions onnxruntime-genai's builder reaches for algo_config=k_quant and
algo_config=rtn), written as tests/fixtures/golden/ort-kquant-golden.safetensors. Layout:
docs/FORMATS.md §17. tests/unit/test_kquant_golden.c compares src/quant/kquant.c with it.

Needs numpy and onnxruntime (1.30) only; no network, no GPU (k_quant's CUDA variant needs cupy and
is switched off: CUDA_VISIBLE_DEVICES is emptied before anything imports torch). The functions are
taken, in this order, from:
  1. onnxruntime.quantization.neural_compressor.weight_only (needs the `onnx` package, which
     that module imports): rtn_quantize run on a one-MatMul model, exactly as
     MatMulNBitsQuantizer(algo_config=KQuantWeightOnlyQuantConfig()) calls it;
  2. without `onnx`: quant_tensor_k_quant_cpu, quant_tensor and make_matmul_weight_only_node read
     from the installed weight_only.py source (ast) and run with a minimal stand-in for the
     onnx.helper calls, repeating rtn_quantize's few lines of glue.
When both work they must agree byte for byte (checked). Anything missing stops the script with a
message naming it.

usage: make_kquant_goldens.py [-o OUT.safetensors] [--weight-only-py PATH]
  --weight-only-py reads that file instead of the installed one (path 2 only; checking this
  script on a machine without onnxruntime).
"""
import argparse
import ast
import hashlib
import importlib.util
import json
import os
import sys
import types

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # k_quant's cupy path must not run

try:
    import numpy as np
except ImportError:
    sys.exit("make_kquant_goldens.py: numpy is not installed: pip install numpy")

DEFAULT_OUT = "tests/fixtures/golden/ort-kquant-golden.safetensors"
NEEDED = ("quant_tensor_k_quant_cpu", "quant_tensor", "make_matmul_weight_only_node")

# name, method, bits, block (0: one block per row = K), K, N, dtype, distribution, seed
CASES = [
    ("k0", "k_quant", 4, 32, 256, 64, "float32", "normal", 1),
    ("k1", "k_quant", 4, 16, 128, 48, "float32", "heavy", 2),
    ("k2", "k_quant", 4, 64, 256, 32, "float16", "normal", 3),
    ("k3", "k_quant", 4, 128, 512, 16, "float16", "heavy", 4),
    ("k4", "k_quant", 8, 32, 128, 40, "float32", "normal", 5),
    ("k5", "k_quant", 8, 128, 256, 24, "float32", "heavy", 6),
    ("k6", "k_quant", 8, 64, 192, 8, "float16", "normal", 7),
    ("k7", "k_quant", 4, 32, 96, 1, "float32", "normal", 8),  # 3 blocks: pad nibble
    ("k8", "k_quant", 8, 0, 200, 6, "float32", "heavy", 9),  # one block of 200 per row
    ("k9", "k_quant", 4, 16, 64, 8, "float32", "special", 10),
    ("k10", "k_quant", 4, 32, 128, 16, "float16", "wide", 11),
    ("k11", "k_quant", 8, 16, 64, 12, "float32", "special", 12),
    ("r0", "rtn", 4, 32, 256, 32, "float32", "normal", 21),
    ("r1", "rtn_asym", 4, 32, 256, 32, "float32", "heavy", 22),
    ("r2", "rtn", 8, 128, 256, 16, "float16", "heavy", 23),
    ("r3", "rtn_asym", 8, 64, 192, 16, "float16", "normal", 24),
    ("r4", "rtn_asym", 4, 16, 64, 8, "float32", "special", 25),
]
# Shapes ONNX Runtime's k_quant packing cannot handle (recorded, not stored): 4-bit with an odd
# block count per row and N > 1 (make_matmul_weight_only_node packs the zero points over the whole
# matrix, then reshapes to [N, -1]).
EXPECTED_FAILURES = [("x0", "k_quant", 4, 32, 96, 4, "float32", "normal", 31),
                     ("x1", "k_quant", 4, 0, 64, 2, "float32", "normal", 32)]


def make_weight(dist, K, N, dtype, seed):
    """W^T [K, N] as the builder's MatMul initializer holds it."""
    rng = np.random.default_rng(seed)
    if dist == "normal":
        w = rng.standard_normal((K, N)) * 0.02
    elif dist == "heavy":
        w = rng.standard_t(2.5, (K, N)) * 0.02
    elif dist == "wide":
        w = rng.standard_normal((K, N)) * np.exp(rng.uniform(-6, 3, (1, N)))
    else:  # special blocks along K of the first columns, Gaussian elsewhere
        w = rng.standard_normal((K, N)) * 0.05
        w[:16, 0] = 0.0
        w[:16, 1] = 0.3
        w[:16, 2] = -2.6
        w[:16, 3] = 1e-30
        w[:16, 4] = 0.0
        w[5, 4] = 7.5  # one spike
        w[16:32, 5] = np.linspace(-1, 1, 16)
        w[:, 6] = np.round(w[:, 6] * 100) / 16  # many exact ties at .5 steps
    return w.astype(np.float32).astype(dtype)


def load_functions(path_override):
    """(source of the functions, a dict of callables, rtn_quantize or None, description)."""
    wo_mod = None
    if path_override is None:
        try:
            from onnxruntime.quantization.neural_compressor import weight_only as wo_mod
        except ImportError as e:
            print(f"note: weight_only module not importable ({e}); reading its source instead")
        spec = importlib.util.find_spec("onnxruntime")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("make_kquant_goldens.py: onnxruntime is not installed: pip install "
                     "onnxruntime==1.30.*")
        path = os.path.join(list(spec.submodule_search_locations)[0], "quantization",
                            "neural_compressor", "weight_only.py")
    else:
        path = path_override
    if not os.path.isfile(path):
        sys.exit(f"make_kquant_goldens.py: {path} does not exist: this onnxruntime has no "
                 "neural_compressor/weight_only.py (k_quant needs onnxruntime >= 1.21)")
    src = open(path, encoding="utf-8").read()
    tree = ast.parse(src)
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    missing = [n for n in NEEDED + ("rtn_quantize",) if n not in defs]
    if missing:
        sys.exit(f"make_kquant_goldens.py: {path} lacks {', '.join(missing)}: this ONNX "
                 "Runtime does not implement k_quant as the builder expects")
    code = ast.Module(body=[defs[n] for n in NEEDED], type_ignores=[])
    helper = types.SimpleNamespace(
        make_tensor=lambda name, data_type, dims, vals, raw: types.SimpleNamespace(
            name=name, data_type=data_type, dims=list(dims), raw=bytes(vals)),
        make_node=lambda op, inputs, outputs, name, domain, **kw: types.SimpleNamespace(
            op_type=op, input=list(inputs), attrs=kw))
    ns = {"np": np, "logger": types.SimpleNamespace(error=print, warning=print, info=print),
          "onnx": types.SimpleNamespace(helper=helper),
          "np_dtype_to_tensor_dtype": lambda dt: {np.dtype("float32"): 1,
                                                  np.dtype("float16"): 10}[np.dtype(dt)]}
    exec(compile(code, path, "exec"), ns)
    fsrc = "\n".join(ast.get_source_segment(src, defs[n]) for n in NEEDED + ("rtn_quantize",))
    rtn_glue = ast.get_source_segment(src, defs["rtn_quantize"])
    return fsrc, {n: ns[n] for n in NEEDED}, wo_mod, path, rtn_glue


def run_functions(fn, method, bits, bs, w):
    """Path 2: rtn_quantize's own steps around the extracted functions."""
    K, N = w.shape
    kb = K // bs
    if method == "k_quant":
        q, s, zp = fn["quant_tensor_k_quant_cpu"](w.T, bits, bs)
        keep_zp = True
    else:
        scheme = "asym" if method == "rtn_asym" else "sym"
        q, s, zp = fn["quant_tensor"](w.T, bits, bs, scheme, "uint", 1)
        keep_zp = scheme == "asym"
    node = types.SimpleNamespace(input=["X", "W"], output=["Y"], name="mm")
    _, inits = fn["make_matmul_weight_only_node"](
        node=node, weight_shape=w.shape, num_bits=bits, group_size=bs, k_blocks=kb,
        q_weight=q.astype("uint8"), scale=s.astype(w.dtype),
        zero_point=zp if keep_zp else None, accuracy_level=0)
    out = {}
    for t in inits:
        key = "packed" if "_Q" in t.name else "scales" if t.name.endswith("_scale") else "zero_points"
        out[key] = (t.raw, t.dims)
    return out


def run_module(wo, method, bits, bs, w):
    """Path 1: ONNX Runtime's rtn_quantize on a one-MatMul model (needs onnx)."""
    import onnx
    from onnx import helper, numpy_helper
    K, N = w.shape
    et = helper.np_dtype_to_tensor_dtype(w.dtype)
    g = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm")], "g",
                          [helper.make_tensor_value_info("X", et, [1, K])],
                          [helper.make_tensor_value_info("Y", et, [1, N])],
                          [numpy_helper.from_array(w, "W")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    scheme = "asym" if method == "rtn_asym" else "sym"  # the builder's default is symmetric
    algo = "k_quant" if method == "k_quant" else "RTN"
    cfg = {"mm": {"bits": bits, "group_size": bs, "scheme": scheme}}
    m = wo.rtn_quantize(model, weight_config=cfg, algorithm=algo, ratios={})
    out = {}
    for t in m.model.graph.initializer:
        key = ("packed" if "_Q" in t.name else "scales" if t.name.endswith("_scale")
               else "zero_points" if t.name.endswith("_zp") else None)
        if key:
            out[key] = (numpy_helper.to_array(t).tobytes(), list(t.dims))
    return out


ST_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("uint8"): "U8"}


def write_safetensors(path, tensors, metadata):
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    os.replace(tmp, path)


def one_case(case, fn, wo):
    name, method, bits, bs, K, N, dtype, dist, seed = case
    bs = bs or K
    w = make_weight(dist, K, N, np.dtype(dtype), seed)
    res = run_functions(fn, method, bits, bs, w)
    path = "weight_only.py functions (ast)"
    if wo is not None:
        mod = run_module(wo, method, bits, bs, w)
        if method == "k_quant" and "zero_points" not in mod:
            sys.exit(f"make_kquant_goldens.py: {name}: rtn_quantize(algorithm='k_quant') with "
                     "scheme 'sym' (the builder's default) wrote no zero points: this ONNX Runtime "
                     "drops k_quant's zero points; record that and regenerate with scheme 'asym'")
        if mod != res:
            sys.exit(f"make_kquant_goldens.py: {name}: rtn_quantize and the extracted functions "
                     f"disagree ({sorted(mod)} vs {sorted(res)}): investigate before using either")
        path = "rtn_quantize on a MatMul model (checked equal to the functions)"
    return w, res, path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", default=DEFAULT_OUT)
    ap.add_argument("--weight-only-py", default=None)
    args = ap.parse_args()
    fsrc, fn, wo, src_path, _ = load_functions(args.weight_only_py)
    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "not installed (functions read from %s)" % src_path
    tensors, cases, paths = {}, {}, set()
    for case in CASES:
        name, method, bits, bs, K, N, dtype, dist, seed = case
        w, res, path = one_case(case, fn, wo)
        paths.add(path)
        st = ST_DTYPES[w.dtype]
        kb = K // (bs or K)
        tensors[f"{name}.w"] = (st, (K, N), w.tobytes())
        raw, _ = res["packed"]
        tensors[f"{name}.packed"] = ("U8", (N, kb, (bs or K) * bits // 8), raw)
        raw, _ = res["scales"]
        tensors[f"{name}.scales"] = (st, (N, kb), raw)
        if "zero_points" in res:
            raw, dims = res["zero_points"]
            tensors[f"{name}.zero_points"] = ("U8", tuple(dims), raw)
        cases[name] = {"method": method, "bits": bits, "block_size": bs or K, "per_row": bs == 0,
                       "K": K, "N": N, "dtype": dtype, "dist": dist, "seed": seed,
                       "zero_points": "zero_points" in res}
        print(f"{name:4s} {method:8s} {bits}-bit block {bs or K:4d} K {K:4d} N {N:3d} {dtype:8s} "
              f"{dist:8s} zero points {'yes' if 'zero_points' in res else 'no'}")
    failures = {}
    for case in EXPECTED_FAILURES:
        try:
            one_case(case, fn, wo)
            failures[case[0]] = "ran (no longer fails)"
        except Exception as e:  # the packing's reshape; recorded as a fact
            failures[case[0]] = f"{type(e).__name__}: {e}"
        print(f"{case[0]:4s} {case[1]} {case[2]}-bit block {case[3] or case[4]} K {case[4]} N "
              f"{case[5]}: {failures[case[0]]}")
    meta = {"cases": json.dumps(cases, sort_keys=True),
            "expected_failures": json.dumps({c[0]: {"method": c[1], "bits": c[2],
                                                    "block_size": c[3] or c[4], "K": c[4],
                                                    "N": c[5], "result": failures[c[0]]}
                                             for c in EXPECTED_FAILURES}, sort_keys=True),
            "onnxruntime": ort_version, "numpy": np.__version__,
            "python": sys.version.split()[0], "path": "; ".join(sorted(paths)),
            "cupy_installed": str(importlib.util.find_spec("cupy") is not None),
            "source_sha256": hashlib.sha256(fsrc.encode()).hexdigest()}
    write_safetensors(args.out, tensors, meta)
    print(f"wrote {args.out}: {len(cases)} cases, {len(tensors)} tensors; onnxruntime "
          f"{ort_version}, numpy {np.__version__}; path: {meta['path']}")


if __name__ == "__main__":
    main()
