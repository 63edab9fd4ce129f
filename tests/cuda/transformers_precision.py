"""How far the original model, run by transformers on the GPU in float16 and in bfloat16, lands
from its own float32 reference (the fixtures' reference.safetensors): per logits row,
max|logits - reference| / max|reference|. The CUDA suite (suite.mjs) uses these numbers as the
measured noise of each precision for each fixture: an export may be at most twice as far from
the float32 reference as the original model is in the same precision (and never more than the
fixed floors allow when the original is closer).

python3 tests/cuda/transformers_precision.py OUT.json [NAME=DIR ...]
    (needs torch with CUDA and transformers). Each NAME=DIR is a checkpoint without reference
    files (DIR/ids.json holds its prompt): there transformers' own float32 is the reference.
"""
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

FIXTURES = ["gpt-oss-tiny", "gpt-oss-bf16-tiny", "qwen3-moe-tiny", "qwen2-moe-tiny", "qwen3_5-moe-tiny"]


def load(path, dtype):
    cfg = AutoConfig.from_pretrained(path)
    kw = {}
    if getattr(cfg, "quantization_config", None):
        from transformers import Mxfp4Config  # MXFP4 experts: dequantized, exactly representable
        kw["quantization_config"] = Mxfp4Config(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager", **kw)
    return model.to("cuda").eval()


def row_ratios(got, ref):
    d = (got - ref).abs().amax(dim=-1)
    return (d / ref.abs().amax(dim=-1)).flatten().tolist()


def measure(out, f, path, ids, ref_logits):
    out[f] = {}
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        try:
            model = load(path, dtype)
            with torch.no_grad():
                logits = model(ids).logits.float().cpu()
            out[f][name] = row_ratios(logits, ref_logits)
        except Exception as e:  # recorded, the suite then keeps the fixed floors
            out[f][name] = f"error: {type(e).__name__}: {str(e)[:300]}"
        print(f, name, out[f][name] if isinstance(out[f][name], str) else f"max {max(out[f][name]):.3e}", flush=True)


def main(out_path, extra):
    out = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    import transformers
    out["transformers"] = transformers.__version__
    for spec in extra:
        name, path = spec.split("=", 1)
        with open(f"{path}/ids.json") as fh:
            ids = torch.tensor([json.load(fh)]).cuda()
        with torch.no_grad():
            ref = load(path, torch.float32)(ids).logits.float().cpu()
        measure(out, name, path, ids, ref)
    for f in FIXTURES:
        path = f"tests/fixtures/{f}"
        ref = load_file(f"{path}/reference.safetensors")
        ids = ref["input_ids"].cuda()
        measure(out, f, path, ids, ref["logits"].float())
    with open(out_path, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
