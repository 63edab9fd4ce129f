#!/usr/bin/env bash
# End-to-end check of `moe2onnx verify` through the command line: exports of each fixture verify
# with exit 0 and a PASS verdict (table and --json), a folder checked against the wrong checkpoint
# fails with exit 1, and usage errors exit 2. Exports the exporter cannot make yet are reported
# and skipped. Then the corruption table: each row damages a copy of a good export (or its
# folder) and verify must fail with the row's fault code; the verdict lines are the table in
# README.md (section Verify), compared line by line (M2O_UPDATE_DOCS=1 rewrites it).
# Prints "ok"/"FAIL" per check and a final "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/../.."

BIN=build/moe2onnx
DOC=README.md
. tests/tools/errcheck.sh # ok/fail/finish and the README table check

bin=build/moe2onnx
poke=build/tools/onnx_poke
fx=tests/fixtures
tmp=$(mktemp -d "${TMPDIR:-/tmp}/m2o-verify-e2e.XXXXXX") || { fail "mktemp"; finish; }
trap 'rm -rf "$tmp"' EXIT
if [ ! -x "$bin" ]; then fail "$bin is missing (run make)"; finish; fi

"$bin" verify >/dev/null 2>&1; rc=$?
[ "$rc" -eq 2 ] && ok "verify without arguments exits 2" || fail "verify without arguments exited $rc"
"$bin" verify -i "$fx/gpt-oss-tiny" -o "$tmp/x" --frobnicate >/dev/null 2>&1; rc=$?
[ "$rc" -eq 2 ] && ok "unknown option exits 2" || fail "unknown option exited $rc"
"$bin" verify -i "$fx/gpt-oss-tiny" -o "$tmp/nothing-here" >/dev/null 2>&1; rc=$?
[ "$rc" -eq 1 ] && ok "missing model folder exits 1" || fail "missing model folder exited $rc"

verified=0
for case in "gpt-oss-tiny int4 cpu" "gpt-oss-tiny int4 cuda" "gpt-oss-tiny fp16 cuda" \
            "gpt-oss-tiny int4 cuda moe_quant_type=mxfp4" "gpt-oss-bf16-tiny int4 cpu" \
            "gpt-oss-bf16-tiny fp32 cpu" "qwen3-moe-tiny int4 cpu" "qwen2-moe-tiny int4 cpu" \
            "qwen2-moe-tiny int4 cuda" "qwen2-moe-tiny bf16 cuda" "qwen2-moe-tiny fp32 cpu" \
            "qwen3_5-moe-tiny int4 cpu" "qwen3-moe-tiny int4 cpu moe_quant_type=uint4" \
            "qwen3-moe-tiny int4 cpu qmoe_block_size=0" "gpt-oss-bf16-tiny int4 cuda scale_search=true" \
            "qwen3-moe-tiny int4 cpu algo_config=k_quant" "qwen3_5-moe-tiny int4 cpu algo_config=k_quant_linear" \
            "qwen2-moe-tiny int4 cpu scale_search=true"; do
    set -- $case
    name=$(echo "$case" | tr ' =' '__')
    out="$tmp/$name"
    extra=()
    [ $# -ge 4 ] && extra=(--extra_options "$4")
    if ! "$bin" -q --threads 2 -i "$fx/$1" -o "$out" -p "$2" -e "$3" "${extra[@]}" >"$tmp/log" 2>&1; then
        echo "skip $case: $(tail -n1 "$tmp/log")"
        continue
    fi
    table=$("$bin" verify -i "$fx/$1" -o "$out" 2>&1); rc=$?
    if [ "$rc" -eq 0 ] && printf '%s\n' "$table" | tail -n1 | grep -q '^verify: PASS'; then
        ok "verify $case: $(printf '%s\n' "$table" | tail -n1)"
    else
        fail "verify $case (exit $rc): $(printf '%s\n' "$table" | tail -n3)"
    fi
    json=$("$bin" verify --json -i "$fx/$1" -o "$out" 2>&1); rc=$?
    if [ "$rc" -eq 0 ] && printf '%s\n' "$json" | grep -q '"verdict":[[:space:]]*"PASS"'; then
        ok "verify --json $case"
    else
        fail "verify --json $case (exit $rc)"
    fi
    verified=$((verified + 1))
done
[ "$verified" -gt 0 ] && ok "$verified exports verified" || fail "no fixture could be exported"

# the same folder against another checkpoint: every weight is off
if [ -d "$tmp/gpt-oss-tiny_int4_cpu" ]; then
    "$bin" verify -i "$fx/gpt-oss-bf16-tiny" -o "$tmp/gpt-oss-tiny_int4_cpu" >"$tmp/log" 2>&1; rc=$?
    if [ "$rc" -eq 1 ] && tail -n1 "$tmp/log" | grep -q '^verify: FAIL'; then
        ok "wrong checkpoint fails: $(tail -n1 "$tmp/log" | cut -c1-120)"
    else
        fail "wrong checkpoint exited $rc"
    fi
fi
# the report does not depend on the thread count (a good and a damaged folder)
if [ -d "$tmp/gpt-oss-tiny_int4_cpu" ]; then
    same=1
    for t in 1 3; do
        "$bin" verify --json --threads $t -i "$fx/gpt-oss-bf16-tiny" -o "$tmp/gpt-oss-tiny_int4_cpu" >"$tmp/bad$t.json" 2>&1
        "$bin" verify --json --threads $t -i "$fx/gpt-oss-tiny" -o "$tmp/gpt-oss-tiny_int4_cpu" >"$tmp/good$t.json" 2>&1
    done
    cmp -s "$tmp/bad1.json" "$tmp/bad3.json" && cmp -s "$tmp/good1.json" "$tmp/good3.json" || same=0
    [ "$same" = 1 ] && ok "verify --json is identical with --threads 1 and 3" ||
        fail "verify --json differs between --threads 1 and 3"
fi

# ---- subnormal checkpoint values: no false FAIL ----
# subnormal NAME FIXTURE PRECISION EP [EXTRA...] -- SHARD TENSOR HEX...: the fixture copy gets
# the bytes at the tensor's start, is exported and must verify.
. tests/tools/corrupt.sh
subnormal() {
    local name=$1 fixture=$2 prec=$3 ep=$4; shift 4
    local extra=() ck="$tmp/sub-$name-ck" out="$tmp/sub-$name"
    while [ "$1" != -- ]; do extra+=("$1"); shift; done
    shift
    local shard=$1 tensor=$2; shift 2
    cp -r "$fx/$fixture" "$ck"
    st_poke "$ck/$shard" "$tensor" 0 "$@" || { fail "subnormal $name: cannot poke $tensor"; return; }
    if ! "$bin" -q --threads 2 -i "$ck" -o "$out" -p "$prec" -e "$ep" "${extra[@]}" >"$tmp/log" 2>&1; then
        fail "subnormal $name: export failed: $(tail -n1 "$tmp/log")"; return
    fi
    "$bin" verify --threads 2 -i "$ck" -o "$out" >"$tmp/log" 2>&1 && ok "subnormal $name verifies" ||
        fail "subnormal $name: $(tail -n1 "$tmp/log")"
    rm -rf "$ck" "$out"
}
sub64=(); for i in $(seq 32); do sub64+=(01 00); done # 32 BF16 0x0001 = 2^-133
subnormal bf16-block-int4-cpu gpt-oss-bf16-tiny int4 cpu -- model.safetensors \
    model.layers.0.self_attn.q_proj.weight "${sub64[@]}"
subnormal bf16-block-fp16 gpt-oss-bf16-tiny fp16 cuda -- model.safetensors \
    model.layers.0.self_attn.q_proj.weight "${sub64[@]}"
subnormal bf16-experts-int4-cuda gpt-oss-bf16-tiny int4 cuda -- model.safetensors \
    model.layers.0.mlp.experts.down_proj "${sub64[@]}"
subnormal mxfp4-scale-0-int4-cpu gpt-oss-tiny int4 cpu -- model-00001-of-00002.safetensors \
    model.layers.0.mlp.experts.down_proj_scales 00 00 00 00
subnormal mxfp4-scale-0-passthrough gpt-oss-tiny int4 cuda --extra_options moe_quant_type=mxfp4 -- \
    model-00001-of-00002.safetensors model.layers.0.mlp.experts.down_proj_scales 00 00 00 00

# ---- corruption table: verify must name each fault ----
# corrupt NAME FIXTURE_EXPORT CODE DESCRIPTION -- COMMAND...: COMMAND damages $dst (a copy of
# the export), then verify must exit 1 with a FAIL verdict carrying CODE.
corrupt() {
    local name=$1 src=$2 code=$3 desc=$4; shift 5
    local fixture=${src%%_*} dst="$tmp/corrupt-$name" rc verdict
    if [ ! -d "$tmp/$src" ]; then fail "corruption $name: export $src is missing"; return; fi
    rm -rf "$dst"; cp -r "$tmp/$src" "$dst"
    if ! "$@" >"$tmp/log" 2>&1; then fail "corruption $name: $(cat "$tmp/log")"; return; fi
    "$bin" verify --threads 2 -i "$fx/$fixture" -o "$dst" >"$tmp/log" 2>&1; rc=$?
    verdict=$(tail -n1 "$tmp/log")
    if [ "$rc" -eq 1 ] && case "$verdict" in "verify: FAIL: [$code]"*) true ;; *) false ;; esac; then
        ok "corruption $name fails with $code"
    else
        fail "corruption $name (exit $rc): $verdict"
    fi
    table_row "$name" "$rc" "$desc" "$(normalize "$verdict" "" "$dst")"
    rm -rf "$dst"
}
set_f32() { "$poke" set "$dst/model.onnx" "$1" "$2" "${@:3}"; }

G=gpt-oss-tiny_int4_cpu L0=model.layers.0
corrupt inf-expert-scale "$G" error_bound "+Inf (float32 0x7f800000) as scale 100 of the layer-0 gate_up QMoE experts" -- \
    set_f32 $L0.moe.experts.gate_up_proj.scales 400 00 00 80 7f
corrupt huge-nbits-scale "$G" error_bound "1e30 as the first lm_head MatMulNBits scale" -- \
    set_f32 lm_head.MatMul.weight_scales 0 ca f2 49 71
K=qwen3-moe-tiny_int4_cpu_algo_config_k_quant
corrupt zero-points-lost "$K" error_bound "k_quant export: the first 4 lm_head MatMulNBits zero-point bytes (8 blocks) set to 0" -- \
    set_f32 lm_head.MatMul.weight_zp 0 00 00 00 00
corrupt garbage-embedding "$G" value_mismatch "embedding element 10 set to 1e30" -- \
    set_f32 model.embed_tokens.weight 40 ca f2 49 71
corrupt garbage-cos-cache "$G" value_mismatch "cos_cache element 1000 set to 2.0" -- \
    set_f32 cos_cache 4000 00 00 00 40
corrupt garbage-sin-cache "$G" value_mismatch "sin_cache element 0 (position 0: must be 0) set to 0.5" -- \
    set_f32 sin_cache 0 00 00 00 3f
corrupt garbage-norm "$G" value_mismatch "input_layernorm weight element 3 set to 0" -- \
    set_f32 $L0.input_layernorm.weight 12 00 00 00 00
corrupt garbage-bias "$G" value_mismatch "qkv bias element 7 set to NaN" -- \
    set_f32 $L0.attn.qkv_proj.Add.bias 28 00 00 c0 7f
corrupt garbage-sinks "$G" value_mismatch "attention sink 1 (inline in model.onnx) set to 100" -- \
    set_f32 $L0.attn.sinks 4 00 00 c8 42
corrupt garbage-router-bias "$G" value_mismatch "router bias element 2 (inline): its top byte set to 0x80" -- \
    set_f32 $L0.moe.router.Add.bias 11 80
corrupt garbage-expert-bias "$G" value_mismatch "expert down_proj bias element 5 set to 1" -- \
    set_f32 $L0.moe.experts.down_proj.bias 20 00 00 80 3f
corrupt garbage-int64-constant "$G" value_mismatch "the Reshape shape constant [-1, 8] holds [-1, 9]" -- \
    set_f32 "/model/constants/INT64/[-1, 8]" 8 09
U4=qwen3-moe-tiny_int4_cpu_moe_quant_type_uint4
corrupt zero-point-shifted "$U4" error_bound "uint4 experts: the first zero-point byte of layer 0's gate_up (blocks 0 and 1 of row 0) set to 0x00" -- \
    set_f32 $L0.moe.experts.gate_up_proj.zero_points 0 00
corrupt per-channel-scale-negative "qwen3-moe-tiny_int4_cpu_qmoe_block_size_0" error_bound "per-channel experts: layer 0 down_proj row 2's scale set to -0.01 (the builder's per-channel scales are positive)" -- \
    set_f32 $L0.moe.experts.down_proj.scales 8 0a d7 23 bc
corrupt missing-tokenizer "$G" folder_files "tokenizer.json deleted" -- rm "$tmp/corrupt-missing-tokenizer/tokenizer.json"
corrupt graph-cycle "$G" graph_order "layer 0's input norm reads the o_proj output (a cycle)" -- \
    "$poke" rewire "$tmp/corrupt-graph-cycle/model.onnx" /model/layers.0/input_layernorm/SimplifiedLayerNorm 0 /model/layers.0/attn/o_proj/MatMul_Q4
corrupt unknown-initializer "$G" unchecked_initializer "the router bias renamed (with its reader) to a name no check knows" -- \
    "$poke" rename "$tmp/corrupt-unknown-initializer/model.onnx" $L0.moe.router.Add.bias $L0.moe.router.Add.mystery
corrupt bf16-topk "qwen2-moe-tiny_bf16_cuda" graph "bf16 export: the top-k mass Softmax reads the bfloat16 router logits (TopK on bfloat16: ONNX Runtime refuses it)" -- \
    "$poke" rewire "$tmp/corrupt-bf16-topk/model.onnx" /model/layers.0/moe/topk_mass/Softmax 0 /model/layers.0/moe/router/Reshape
DOC_HEADER="| Case | Corruption | Exit | Verdict (last line of stdout) |" check_doc_table verify-corruptions
finish
