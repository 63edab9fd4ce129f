#!/usr/bin/env bash
# The catalogue of bad inputs (project issue 8): each case damages a COPY of a fixture (or the
# command line, or the output folder) and runs the real binary end to end. Every case must
#   - exit 1 (bad input or output) or 2 (bad command line),
#   - print exactly one stderr line "moe2onnx: error: ..." naming the file/tensor/option and the
#     fix, and nothing on stdout,
#   - leave no output folder and no temporary folder, or the previous model byte-for-byte intact.
# The exact messages are the table in README.md (section Errors), compared line by line (a change to a
# message fails here until the table is regenerated with M2O_UPDATE_DOCS=1).
# Plain bash + coreutils; prints "ok"/"FAIL" per case and a final "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
export LC_ALL=C

BIN=${M2O_BIN:-build/moe2onnx}
DOC=README.md
. tests/tools/corrupt.sh
. tests/tools/errcheck.sh

if [ ! -x "$BIN" ]; then fail "$BIN is missing (run make)"; finish; fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/m2o-errors.XXXXXX") || { fail "mktemp"; finish; }
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/out"

name=""; desc=""; ck=""; out=""; keep_sum=""; RUN=()

# new_case NAME FIXTURE DESCRIPTION: $ck = fresh copy of the fixture (no reference files),
# $out = an output path that does not exist yet.
new_case() {
    name=$1; desc=$3; ck=$tmp/$1; out=$tmp/out/$1; keep_sum=""; RUN=()
    mkdir -p "$ck"
    local f
    for f in "tests/fixtures/$2"/*; do
        case $f in */reference*) ;; *) cp "$f" "$ck/" ;; esac
    done
}

# with_previous_model: $out holds a complete model (converted from the intact fixture copy),
# which the case must leave exactly as it was.
with_previous_model() {
    "$BIN" -q --threads 2 -i "$1" -o "$out" -p int4 -e cpu >/dev/null 2>&1 ||
        problem "could not convert the previous model"
    keep_sum=$(tree_sum "$out")
}

# expect EXIT NEEDLE... -- ARG...: runs the binary with ARGs and checks the contract.
expect() {
    local want=$1 rc; shift
    local needles=()
    while [ "$1" != -- ]; do needles+=("$1"); shift; done
    shift
    "${RUN[@]}" "$BIN" "$@" >"$tmp/stdout" 2>"$tmp/stderr"; rc=$?
    [ "$rc" -eq "$want" ] || problem "exit $rc, expected $want"
    check_error_line "$tmp/stderr" "$tmp/stdout" "${needles[@]}"
    if [ -n "$keep_sum" ]; then check_same_tree "$out" "$keep_sum"; else check_no_output "$out"; fi
    if [ -z "$problems" ]; then ok "$name"; else fail "$name: $problems"; fi
    problems=""
    table_row "$name" "$rc" "$desc" "$(normalize "$(head -n1 "$tmp/stderr")" "$ck" "$out")"
    rm -rf "$ck"
}

std() { std=(-q --threads 2 -i "$ck" -o "$out" -p "${1:-int4}" -e "${2:-cpu}"); } # [PRECISION [EP]]

S1=model-00001-of-00002.safetensors
S2=model-00002-of-00002.safetensors
L0=model.layers.0
L1=model.layers.1

# ---- safetensors files ----
new_case truncated-shard gpt-oss-tiny "second shard cut to 1000000 bytes (interrupted download)"
truncate -s 1000000 "$ck/$S2"; std
expect 1 "$S2" "$L1.mlp.experts.gate_up_proj_blocks" re-download -- "${std[@]}"

new_case shard-shorter-than-8-bytes gpt-oss-tiny "shard cut to 5 bytes"
truncate -s 5 "$ck/$S2"; std
expect 1 "$S2" "too short" re-download -- "${std[@]}"

new_case header-length-past-file gpt-oss-tiny "8-byte header length says 2000000, file is 1774280 bytes"
st_set_header_len "$ck/$S1" 2000000; std
expect 1 "$S1" "header length 2000000" re-download -- "${std[@]}"

new_case header-invalid-json gpt-oss-tiny "a quote deleted from the JSON header"
st_edit_header "$ck/$S1" 's/:{"format"/:{format"/'; std
expect 1 "$S1" "not valid JSON" -- "${std[@]}"

new_case gapped-offsets gpt-oss-tiny "last tensor moved 2 bytes later, 2 bytes appended: a hole"
st_edit_header "$ck/$S2" 's/\[1215512,1248280\]/[1215514,1248282]/'
printf '\0\0' >>"$ck/$S2"; std
expect 1 "$S2" "$L1.mlp.experts.gate_up_proj_scales" hole re-download -- "${std[@]}"

new_case overlapping-offsets gpt-oss-tiny "last tensor moved 2 bytes earlier, file 2 bytes shorter"
st_edit_header "$ck/$S2" 's/\[1215512,1248280\]/[1215510,1248278]/'
truncate -s -2 "$ck/$S2"; std
expect 1 "$S2" "$L1.mlp.experts.gate_up_proj_scales" overlap re-download -- "${std[@]}"

new_case unknown-dtype gpt-oss-tiny "dtype \"Q8\" for an MXFP4 scales tensor"
st_edit_header "$ck/$S2" 's/"U8","shape":\[8,512,8\]/"Q8","shape":[8,512,8]/'; std
expect 1 "$S2" "$L1.mlp.experts.gate_up_proj_scales" "unknown dtype" -- "${std[@]}"

new_case shape-bytes-mismatch gpt-oss-bf16-tiny "router weight shape [8,255] over [8,256] bytes"
st_edit_header "$ck/model.safetensors" "s/\"$L0.mlp.router.weight\":{\"dtype\":\"BF16\",\"shape\":\[8,256\]/\"$L0.mlp.router.weight\":{\"dtype\":\"BF16\",\"shape\":[8,255]/"; std
expect 1 model.safetensors "$L0.mlp.router.weight" bytes -- "${std[@]}"

new_case duplicate-tensor gpt-oss-bf16-tiny "two header entries named $L0.self_attn.sinks"
st_edit_header "$ck/model.safetensors" "s/\"$L0.self_attn.k_proj.bias\"/\"$L0.self_attn.sinks\"/"; std
expect 1 model.safetensors "$L0.self_attn.sinks" twice -- "${std[@]}"

# ---- shard index ----
new_case index-missing-shard gpt-oss-tiny "index names a shard that is not in the folder"
rm "$ck/$S2"; std
expect 1 "$S2" missing download -- "${std[@]}"

new_case index-invalid-json gpt-oss-tiny "model.safetensors.index.json cut in the middle"
truncate -s 1000 "$ck/model.safetensors.index.json"; std
expect 1 model.safetensors.index.json "not valid JSON" -- "${std[@]}"

new_case index-wrong-shard gpt-oss-tiny "index maps lm_head.weight to the shard that lacks it"
sed -i "s/\"lm_head.weight\": \"$S1\"/\"lm_head.weight\": \"$S2\"/" "$ck/model.safetensors.index.json"; std
expect 1 lm_head.weight "$S2" -- "${std[@]}"

new_case no-weights gpt-oss-tiny "folder with config.json but no safetensors"
rm "$ck"/*.safetensors "$ck/model.safetensors.index.json"; std
expect 1 model.safetensors -- "${std[@]}"

new_case shard-is-directory gpt-oss-bf16-tiny "model.safetensors is a directory"
rm "$ck/model.safetensors"; mkdir "$ck/model.safetensors"; std
expect 1 model.safetensors "not a regular file" -- "${std[@]}"

new_case shard-is-fifo gpt-oss-tiny "a shard is a named pipe (must not hang)"
rm "$ck/$S2"; mkfifo "$ck/$S2"; std
RUN=(timeout 20)
expect 1 "$S2" "not a regular file" -- "${std[@]}"

# ---- tensors against the architecture ----
new_case missing-tensor gpt-oss-bf16-tiny "$L1.mlp.router.bias renamed away"
st_edit_header "$ck/model.safetensors" "s/\"$L1.mlp.router.bias\"/\"$L1.mlp.router.bia_\"/"; std
expect 1 "$L1.mlp.router.bias" -- "${std[@]}"

new_case wrong-shape gpt-oss-tiny "MXFP4 scales stored [8,128,16] instead of [8,256,8]"
st_edit_header "$ck/$S1" 's/"U8","shape":\[8,256,8\]/"U8","shape":[8,128,16]/'; std
expect 1 "$L0.mlp.experts.down_proj_scales" "[8, 256, 8]" -- "${std[@]}"

new_case wrong-expert-dim gpt-oss-bf16-tiny "BF16 experts gate_up_proj [8,512,256] instead of [8,256,512]"
st_edit_header "$ck/model.safetensors" "s/\"$L0.mlp.experts.gate_up_proj\":{\"dtype\":\"BF16\",\"shape\":\[8,256,512\]/\"$L0.mlp.experts.gate_up_proj\":{\"dtype\":\"BF16\",\"shape\":[8,512,256]/"; std
expect 1 "$L0.mlp.experts.gate_up_proj" "[8, 256, 512]" -- "${std[@]}"

new_case router-wrong-dtype gpt-oss-bf16-tiny "router weight stored as U16 (same bytes)"
st_edit_header "$ck/model.safetensors" "s/\"$L0.mlp.router.weight\":{\"dtype\":\"BF16\"/\"$L0.mlp.router.weight\":{\"dtype\":\"U16\"/"; std
expect 1 "$L0.mlp.router.weight" U16 -- "${std[@]}"

new_case mxfp4-blocks-wrong-dtype gpt-oss-tiny "MXFP4 blocks stored as I8"
st_edit_header "$ck/$S1" 's/"U8","shape":\[8,256,8,16\]/"I8","shape":[8,256,8,16]/'; std
expect 1 "$L0.mlp.experts.down_proj_blocks" I8 U8 -- "${std[@]}"

# Qwen layouts: per-expert tensors, shared expert, linear attention.
QE=$L0.mlp.experts
new_case qwen3-missing-expert qwen3-moe-tiny "experts.3.up_proj.weight renamed away"
st_edit_header "$ck/model.safetensors" "s/\"$QE.3.up_proj.weight\"/\"$QE.3.up_proj.weighX\"/"; std
expect 1 "$QE.3.up_proj.weight" -- "${std[@]}"

new_case qwen3-expert-wrong-dtype qwen3-moe-tiny "experts.5.gate_proj.weight stored as I16 (same bytes)"
st_edit_header "$ck/model.safetensors" "s/\"$QE.5.gate_proj.weight\":{\"dtype\":\"BF16\"/\"$QE.5.gate_proj.weight\":{\"dtype\":\"I16\"/"; std
expect 1 "$QE.5.gate_proj.weight" I16 -- "${std[@]}"

new_case qwen3-nan-expert qwen3-moe-tiny "NaN in experts.2.down_proj.weight, -p fp16"
st_poke "$ck/model.safetensors" "$QE.2.down_proj.weight" 200 c0 7f; std fp16
expect 1 "$QE.2.down_proj.weight" NaN --allow-nonfinite -- "${std[@]}"

new_case qwen2-shared-gate-shape qwen2-moe-tiny "shared_expert_gate.weight [256,1] instead of [1,256]"
st_edit_header "$ck/model.safetensors" "s/\"$L0.mlp.shared_expert_gate.weight\":{\"dtype\":\"BF16\",\"shape\":\[1,256\]/\"$L0.mlp.shared_expert_gate.weight\":{\"dtype\":\"BF16\",\"shape\":[256,1]/"; std
expect 1 "$L0.mlp.shared_expert_gate.weight" "[1, 256]" -- "${std[@]}"

new_case qwen3_5-a-log-wrong-dtype qwen3_5-moe-tiny "linear_attn.A_log stored as I16"
st_edit_header "$ck/model.safetensors" "s/\"$L0.linear_attn.A_log\":{\"dtype\":\"BF16\"/\"$L0.linear_attn.A_log\":{\"dtype\":\"I16\"/"; std
expect 1 "$L0.linear_attn.A_log" I16 -- "${std[@]}"

new_case qwen3_5-missing-conv1d qwen3_5-moe-tiny "linear_attn.conv1d.weight renamed away"
st_edit_header "$ck/model.safetensors" "s/\"$L0.linear_attn.conv1d.weight\"/\"$L0.linear_attn.conv1d.weighX\"/"; std
expect 1 "$L0.linear_attn.conv1d.weight" -- "${std[@]}"

# ---- tensors the config does not account for ----
new_case unused-layer qwen3-moe-tiny "config.json says num_hidden_layers 1, the checkpoint has 2"
sed -i 's/"num_hidden_layers": *2/"num_hidden_layers": 1/' "$ck/config.json"; std
expect 1 "33 tensors" "$L1.input_layernorm.weight" config.json -- "${std[@]}"

new_case unused-bias qwen3-moe-tiny "an extra $L0.self_attn.q_proj.bias, config attention_bias false"
st_add_tensor "$ck/model.safetensors" "$L0.self_attn.q_proj.bias" BF16 4 8; std
expect 1 "1 tensor " "$L0.self_attn.q_proj.bias" attention_bias -- "${std[@]}"

new_case mtp-head-skipped qwen3_5-moe-tiny "(passes)"
st_add_tensor "$ck/model.safetensors" "mtp.fc.weight" BF16 4 8; std
if "$BIN" "${std[@]}" >"$tmp/stdout" 2>"$tmp/stderr" &&
    grep -q "; 1 checkpoint tensors left out on purpose" "$tmp/stdout"; then
    ok "mtp-head-skipped: an mtp.* tensor is left out on purpose and counted in the summary line"
else
    fail "mtp-head-skipped: $(cat "$tmp/stderr" "$tmp/stdout")"
fi
rm -rf "$ck" "$out"

# ---- config.json ----
new_case config-missing gpt-oss-tiny "no config.json"
rm "$ck/config.json"; std
expect 1 config.json -- "${std[@]}"

new_case config-is-fifo gpt-oss-tiny "config.json is a named pipe (must not hang)"
rm "$ck/config.json"; mkfifo "$ck/config.json"; std
RUN=(timeout 20)
expect 1 config.json "not a regular file" -- "${std[@]}"

new_case config-invalid-json gpt-oss-tiny "config.json with a comma removed"
sed -i 's/"vocab_size": 512,/"vocab_size": 512/' "$ck/config.json"; std
expect 1 config.json "not valid JSON" -- "${std[@]}"

new_case config-missing-field gpt-oss-tiny "config.json without hidden_size"
sed -i '/"hidden_size"/d' "$ck/config.json"; std
expect 1 config.json hidden_size -- "${std[@]}"

new_case qwen2-config-missing-field qwen2-moe-tiny "config.json without moe_intermediate_size"
sed -i '/"moe_intermediate_size"/d' "$ck/config.json"; std
expect 1 config.json moe_intermediate_size -- "${std[@]}"

new_case config-rope-factor-tiny qwen3-moe-tiny "rope_scaling {linear, factor 1e-300}: infinite frequencies, NaN caches"
sed -i 's/"rope_scaling": null/"rope_scaling": {"rope_type": "linear", "factor": 1e-300}/' "$ck/config.json"; std
expect 1 config.json rope_scaling NaN -- "${std[@]}"

new_case config-wrong-type gpt-oss-tiny "hidden_size given as a string"
sed -i 's/"hidden_size": 256/"hidden_size": "256"/' "$ck/config.json"; std
expect 1 config.json hidden_size -- "${std[@]}"

new_case config-unknown-model-type gpt-oss-tiny "model_type \"llama\""
sed -i 's/"model_type": "gpt_oss"/"model_type": "llama"/' "$ck/config.json"; std
expect 1 config.json llama -- "${std[@]}"

new_case qwen3_5-rotary-dim-8 qwen3_5-moe-tiny "partial_rotary_factor 0.125: 8 rotary dimensions, GroupQueryAttention needs a multiple of 16"
sed -i 's/"partial_rotary_factor": 0.25/"partial_rotary_factor": 0.125/' "$ck/config.json"; std
expect 1 config.json partial_rotary_factor "multiple of 16" -- "${std[@]}"

new_case config-disagrees-with-tensors gpt-oss-tiny "config says hidden_size 128, tensors are 256 wide"
sed -i 's/"hidden_size": 256/"hidden_size": 128/' "$ck/config.json"; std
expect 1 model.embed_tokens.weight "[512, 128]" -- "${std[@]}"

# ---- non-finite weights ----
new_case nan-weight gpt-oss-tiny "NaN (BF16 0x7fc0) in q_proj.weight, -p fp32"
st_poke "$ck/$S1" "$L0.self_attn.q_proj.weight" 10 c0 7f; std fp32
expect 1 "$L0.self_attn.q_proj.weight" NaN --allow-nonfinite -- "${std[@]}"

new_case inf-weight gpt-oss-tiny "+Inf (BF16 0x7f80) in the router weight, -p fp16"
st_poke "$ck/$S1" "$L0.mlp.router.weight" 0 80 7f; std fp16
expect 1 "$L0.mlp.router.weight" Inf --allow-nonfinite -- "${std[@]}"

new_case nan-int4-allow-nonfinite gpt-oss-tiny "NaN in q_proj.weight, -p int4 --allow-nonfinite"
st_poke "$ck/$S1" "$L0.self_attn.q_proj.weight" 10 c0 7f; std int4
expect 1 "$L0.self_attn.q_proj.weight" "cannot encode" -- "${std[@]}" --allow-nonfinite

new_case nan-mxfp4-scale gpt-oss-tiny "MXFP4 scale byte 255 (E8M0 NaN), -p fp32"
st_poke "$ck/$S1" "$L0.mlp.experts.down_proj_scales" 100 ff; std fp32
expect 1 "$L0.mlp.experts.down_proj_scales" NaN --allow-nonfinite -- "${std[@]}"

new_case nan-bf16-expert-int4 gpt-oss-bf16-tiny "NaN in BF16 experts gate_up_proj, -p int4 (no flag)"
st_poke "$ck/model.safetensors" "$L1.mlp.experts.gate_up_proj" 64 c0 7f; std int4
expect 1 "$L1.mlp.experts.gate_up_proj" "cannot encode" -- "${std[@]}"

# Finite weights that the output type cannot hold: refused, whatever --allow-nonfinite says.
new_case overflow-fp16-weight gpt-oss-bf16-tiny "999424 (BF16 0x4974) in q_proj.weight, -p fp16 --allow-nonfinite"
st_poke "$ck/model.safetensors" "$L0.self_attn.q_proj.weight" 10 74 49; std fp16 cuda
expect 1 "$L0.self_attn.q_proj.weight" "element 5 is 999424" "overflows float16" -- "${std[@]}" --allow-nonfinite

new_case overflow-fp16-expert gpt-oss-bf16-tiny "999424 in BF16 experts gate_up_proj, -p fp16"
st_poke "$ck/model.safetensors" "$L0.mlp.experts.gate_up_proj" 10 74 49; std fp16 cuda
expect 1 "$L0.mlp.experts.gate_up_proj" "overflows float16" -- "${std[@]}"

new_case overflow-int4-cuda-scale gpt-oss-bf16-tiny "999424 in BF16 experts gate_up_proj, -p int4 -e cuda: its fp16 block scale overflows"
st_poke "$ck/model.safetensors" "$L0.mlp.experts.gate_up_proj" 10 74 49; std int4 cuda
expect 1 "$L0.mlp.experts.gate_up_proj" "scale that overflows float16" use_cuda_bf16 -- "${std[@]}"

new_case overflow-mxfp4-fp16 gpt-oss-tiny "MXFP4 scale byte 141 (2^14: code 4 decodes to 65536), -p fp16"
st_poke "$ck/$S1" "$L0.mlp.experts.down_proj_scales" 100 8d; std fp16 cuda
expect 1 "$L0.mlp.experts.down_proj_blocks" "overflows float16" -- "${std[@]}"

new_case overflow-neg-exp-a-log qwen3_5-moe-tiny "linear_attn.A_log element 1 set to 100 (BF16 0x42c8): -exp(100) overflows float32"
st_poke "$ck/model.safetensors" "$L0.linear_attn.A_log" 2 c8 42; std fp32
expect 1 "$L0.linear_attn.A_log" "overflows float32" -- "${std[@]}" --allow-nonfinite

# --allow-nonfinite really keeps the value where the format can carry it.
new_case nan-fp32-allowed gpt-oss-tiny "(passes)"
st_poke "$ck/$S1" "$L0.self_attn.q_proj.weight" 10 c0 7f; std fp32
if "$BIN" "${std[@]}" --allow-nonfinite >"$tmp/stdout" 2>"$tmp/stderr" &&
    [ "$(od -An -tx4 -v -w4 "$out/model.onnx.data" | grep -c 7fc00000)" -eq 1 ]; then
    ok "nan-fp32-allowed: --allow-nonfinite exports the NaN (one float32 0x7fc00000 in model.onnx.data)"
else
    fail "nan-fp32-allowed: $(cat "$tmp/stderr")"
fi
rm -rf "$ck" "$out"

new_case nan-mxfp4-passthrough-allowed gpt-oss-tiny "(passes)"
st_poke "$ck/$S1" "$L0.mlp.experts.down_proj_scales" 100 ff
std int4 cuda
if "$BIN" "${std[@]}" --extra_options moe_quant_type=mxfp4 --allow-nonfinite >"$tmp/stdout" 2>"$tmp/stderr"; then
    ok "nan-mxfp4-passthrough-allowed: MXFP4 scale 255 passes through to the fp4 QMoE with --allow-nonfinite"
else
    fail "nan-mxfp4-passthrough-allowed: $(cat "$tmp/stderr")"
fi
rm -rf "$ck" "$out"

# ---- tokenizer files (checked before converting) ----
new_case tokenizer-missing gpt-oss-tiny "no tokenizer.json nor tokenizer.model"
rm "$ck/tokenizer.json"; std
expect 1 "$ck" tokenizer.json -- "${std[@]}"

new_case tokenizer-link-outside gpt-oss-tiny "tokenizer.json is a link to /etc/passwd"
rm "$ck/tokenizer.json"; ln -s /etc/passwd "$ck/tokenizer.json"; std
expect 1 "$ck/tokenizer.json" /etc/passwd "outside the checkpoint" -- "${std[@]}"

new_case tokenizer-invalid-json gpt-oss-tiny "tokenizer.json cut to 100 bytes"
truncate -s 100 "$ck/tokenizer.json"; std
expect 1 "$ck/tokenizer.json" "not valid JSON" -- "${std[@]}"

new_case tokenizer-trailing-data gpt-oss-tiny "tokenizer_config.json has a second JSON value after the first"
echo '{"extra": 1}' >>"$ck/tokenizer_config.json"; std
expect 1 "$ck/tokenizer_config.json" "data after the JSON value" -- "${std[@]}"

new_case tokenizer-is-directory gpt-oss-tiny "tokenizer_config.json is a folder"
rm "$ck/tokenizer_config.json"; mkdir "$ck/tokenizer_config.json"; std
expect 1 "$ck/tokenizer_config.json" "regular file" -- "${std[@]}"

new_case tokenizer-in-hf-cache gpt-oss-tiny "(passes)"
# the Hugging Face cache layout: snapshot files are links into blobs/, which is allowed
hub=$tmp/hub; repo=$hub/models--org--tiny
mkdir -p "$repo/blobs" "$repo/snapshots/c0ffee" "$repo/refs"; echo c0ffee >"$repo/refs/main"
for f in "$ck"/*; do
    b=$(md5sum "$f" | cut -d' ' -f1); mv "$f" "$repo/blobs/$b"
    ln -s "../../blobs/$b" "$repo/snapshots/c0ffee/$(basename "$f")"
done
chmod 640 "$repo/blobs/$(md5sum <"$repo/snapshots/c0ffee/tokenizer.json" | cut -d' ' -f1)"
if "$BIN" -q --threads 2 -m org/tiny -c "$hub" -o "$out" -p int4 -e cpu >"$tmp/stdout" 2>"$tmp/stderr" &&
    [ -f "$out/tokenizer.json" ] && [ ! -L "$out/tokenizer.json" ] &&
    cmp -s "$out/tokenizer.json" "$repo/snapshots/c0ffee/tokenizer.json" &&
    [ "$(( 0$(stat -c %a "$out/tokenizer.json") & 0037 ))" -eq 0 ]; then
    ok "tokenizer-in-hf-cache: links into the cache's blobs/ are copied as files, mode $(stat -c %a "$out/tokenizer.json") (source 640)"
else
    fail "tokenizer-in-hf-cache: $(cat "$tmp/stderr"); $(ls -l "$out" 2>&1 | head -c 400)"
fi
rm -rf "$ck" "$out" "$hub"

# ---- output folder ----
new_case output-has-model gpt-oss-tiny "output already holds a model, no --overwrite"
with_previous_model "$ck"; std
expect 1 "$out" --overwrite -- "${std[@]}"

new_case overwrite-bad-input-keeps-model gpt-oss-tiny "--overwrite, but the new checkpoint has a NaN: the old model stays"
with_previous_model "$ck"
st_poke "$ck/$S1" "$L0.self_attn.q_proj.weight" 10 c0 7f; std
expect 1 "$L0.self_attn.q_proj.weight" -- "${std[@]}" --overwrite

new_case output-foreign-files gpt-oss-tiny "output folder holds notes.txt (refused even with --overwrite)"
mkdir -p "$out"; echo mine >"$out/notes.txt"; keep_sum=$(tree_sum "$out"); std
expect 1 "$out" notes.txt -- "${std[@]}" --overwrite

new_case output-is-a-file gpt-oss-tiny "-o names a regular file"
echo x >"$out"; keep_sum=x; std
"$BIN" "${std[@]}" >"$tmp/stdout" 2>"$tmp/stderr"; rc=$?
[ "$rc" -eq 1 ] || problem "exit $rc, expected 1"
check_error_line "$tmp/stderr" "$tmp/stdout" "$out" "not a folder"
[ "$(cat "$out")" = x ] || problem "the file was changed"
if [ -z "$problems" ]; then ok "$name"; else fail "$name: $problems"; fi
problems=""
table_row "$name" "$rc" "$desc" "$(normalize "$(head -n1 "$tmp/stderr")" "$ck" "$out")"
rm -rf "$ck" "$out"

new_case output-not-writable gpt-oss-tiny "output parent folder is read-only (mode 555)"
mkdir -p "$tmp/ro"; chmod 555 "$tmp/ro"; out=$tmp/ro/model; std
# root ignores mode bits: drop the capabilities that let it (needs setpriv when run as root)
if [ "$(id -u)" -eq 0 ]; then RUN=(setpriv --bounding-set=-dac_override,-dac_read_search --); fi
expect 1 "$tmp/ro" "not writable" -- "${std[@]}"

new_case output-locked gpt-oss-tiny "another moe2onnx holds the lock on the same -o (refused at once)"
lock="$(dirname "$out")/.$(basename "$out").moe2onnx-lock"; std
# flock(1) holds the lock while our binary runs, as a concurrent conversion would.
flock "$lock" "$BIN" "${std[@]}" >"$tmp/stdout" 2>"$tmp/stderr"; rc=$?
[ "$rc" -eq 1 ] || problem "exit $rc, expected 1"
check_error_line "$tmp/stderr" "$tmp/stdout" "another moe2onnx" "$out"
rm -f "$lock"
check_no_output "$out"
if [ -z "$problems" ]; then ok "$name"; else fail "$name: $problems"; fi
problems=""
table_row "$name" "$rc" "$desc" "$(normalize "$(head -n1 "$tmp/stderr")" "$ck" "$out")"
rm -rf "$ck" "$out"

new_case output-parents-removed gpt-oss-tiny "-o new/a/b/model and a NaN weight: the parents it created go too"
st_poke "$ck/$S1" "$L0.self_attn.q_proj.weight" 10 c0 7f
out=$tmp/out/new-parent/a/b/model; std
expect 1 "$L0.self_attn.q_proj.weight" -- "${std[@]}"
[ ! -e "$tmp/out/new-parent" ] || fail "output-parents-removed: $tmp/out/new-parent is left behind"

new_case output-dangling-link gpt-oss-tiny "-o is a symbolic link to a missing folder"
ln -s "$tmp/out/nowhere" "$out"; std
expect 1 "$out" "symbolic link" -- "${std[@]}"
rm -f "$out"

# ---- command line (exit 2) ----
new_case unknown-option gpt-oss-tiny "--frobnicate"; std
expect 2 --frobnicate --help -- "${std[@]}" --frobnicate

new_case bad-precision gpt-oss-tiny "-p int3"; std int3
expect 2 int3 int4 -- "${std[@]}"

new_case missing-input gpt-oss-tiny "no -i or -m"
expect 2 -i -- -q -o "$out" -p int4 -e cpu

new_case input-not-found gpt-oss-tiny "-i names a folder that does not exist"
rm -rf "$ck"; std
expect 2 "$ck" -- "${std[@]}"

new_case qwen2-int4-bf16-shared-expert qwen2-moe-tiny "use_cuda_bf16=true on a model with a shared expert (wrong on ONNX Runtime's CUDA provider)"
std int4 cuda
expect 2 use_cuda_bf16 "shared expert" -- "${std[@]}" --extra_options use_cuda_bf16=true

new_case mxfp4-on-cpu gpt-oss-tiny "moe_quant_type=mxfp4 with -e cpu"; std
expect 2 mxfp4 cuda -- "${std[@]}" --extra_options moe_quant_type=mxfp4

# Quantization options ONNX Runtime cannot run (docs/QUANTIZATION.md), refused before any output.
new_case uint4-odd-blocks-cpu qwen3-moe-tiny "moe_quant_type=uint4, qmoe_block_size=128 on -e cpu: fc2 has 128/128 = 1 block a row (ONNX Runtime's CPU QMoE computes odd 4-bit zero-point counts wrongly)"; std
expect 2 uint4 qmoe_block_size=128 "odd block count" wrongly -- "${std[@]}" --extra_options moe_quant_type=uint4 qmoe_block_size=128

new_case uint-per-channel gpt-oss-tiny "moe_quant_type=uint8 with qmoe_block_size=0 (zero points with per-channel scales)"; std
expect 2 uint8 "per channel" "zero points" -- "${std[@]}" --extra_options moe_quant_type=uint8 qmoe_block_size=0

new_case per-channel-scale-search gpt-oss-tiny "qmoe_block_size=0 with scale_search=true"; std
expect 2 qmoe_block_size=0 scale_search -- "${std[@]}" --extra_options qmoe_block_size=0 scale_search=true

new_case quantize-bias-per-channel gpt-oss-tiny "qmoe_quantize_bias=true with qmoe_block_size=0"; std
expect 2 qmoe_quantize_bias per-channel -- "${std[@]}" --extra_options qmoe_quantize_bias=true qmoe_block_size=0

new_case dense-per-channel gpt-oss-tiny "block_size=0: MatMulNBits has no per-channel form"; std
expect 2 block_size=0 MatMulNBits qmoe_block_size=0 -- "${std[@]}" --extra_options block_size=0

new_case deprecated-and-current-name gpt-oss-tiny "int4_block_size=64 and block_size=32 (the deprecated and the current name)"; std
expect 2 int4_block_size block_size "keep one" -- "${std[@]}" --extra_options int4_block_size=64 block_size=32

new_case unknown-algo-config gpt-oss-tiny "algo_config=gptq"; std
expect 2 algo_config=gptq k_quant -- "${std[@]}" --extra_options algo_config=gptq

new_case unknown-mixed-selector gpt-oss-tiny "matmul_mixed_precision=lm_head:int8 (the selector is last_matmul)"; std
expect 2 matmul_mixed_precision last_matmul -- "${std[@]}" --extra_options matmul_mixed_precision=lm_head:int8

new_case mxfp4-asymmetric gpt-oss-tiny "moe_quant_type=mxfp4 with is_symmetric=false (the builder forbids it)"; std int4 cuda
expect 2 mxfp4 is_symmetric -- "${std[@]}" --extra_options moe_quant_type=mxfp4 is_symmetric=false

new_case matmulnbits-prepacked-cpu gpt-oss-tiny "matmulnbits_weights_prepacked=1 with -e cpu"; std
expect 2 matmulnbits_weights_prepacked "-e cuda" -- "${std[@]}" --extra_options matmulnbits_weights_prepacked=1

new_case matmulnbits-sm90-block gpt-oss-tiny "matmulnbits_weights_prepacked=2 (SM90) with block_size=32"; std int4 cuda
expect 2 matmulnbits_weights_prepacked=2 "64 or 128" -- "${std[@]}" --extra_options matmulnbits_weights_prepacked=2 block_size=32

new_case quant-config-and-flat gpt-oss-tiny "quant_config JSON beside a flat block_size"; std
expect 2 quant_config block_size -- "${std[@]}" --extra_options 'quant_config={"weights":{"block_size":64}}' block_size=32

new_case quant-config-unknown-field gpt-oss-tiny "quant_config with a misspelt field"; std
expect 2 quant_config blocksize -- "${std[@]}" --extra_options 'quant_config={"weights":{"blocksize":64}}'

new_case quant-config-io-dtype gpt-oss-tiny "quant_config io_dtype=fp16 for a -e cpu build (float32 io)"; std
expect 2 io_dtype=fp16 fp32 -- "${std[@]}" --extra_options 'quant_config={"io_dtype":"fp16"}'

new_case mixed-precision-float gpt-oss-tiny "matmul_mixed_precision with -p fp32 (nothing is quantized)"; std fp32
expect 2 matmul_mixed_precision "-p int4" -- "${std[@]}" --extra_options matmul_mixed_precision=last_matmul:int8

new_case scale-search-with-k-quant gpt-oss-tiny "scale_search=true with algo_config=k_quant_mixed (k_quant chooses its own scales)"; std
expect 2 scale_search algo_config=k_quant_mixed "drop one" -- "${std[@]}" --extra_options scale_search=true algo_config=k_quant_mixed

# Quantization values this build does not write yet (quant_config_check_supported).
new_case embedding-override gpt-oss-tiny "quant_config override that quantizes the embedding (role embed)"; std
expect 2 "weights.overrides[0]" embedding "not yet supported" -- "${std[@]}" --extra_options 'quant_config={"weights":{"overrides":[{"match":{"role":"embed"},"type":"int4"}]}}'

new_case op-types-gather gpt-oss-tiny "op_types_to_quantize=MatMul/Gather (a 4-bit embedding)"; std
expect 2 op_types_to_quantize "not yet supported" -- "${std[@]}" --extra_options op_types_to_quantize=MatMul/Gather

new_case use-qdq gpt-oss-tiny "use_qdq=true (DequantizeLinear + MatMul)"; std
expect 2 use_qdq "not yet supported" -- "${std[@]}" --extra_options use_qdq=true

new_case matmulnbits-prepacked-cuda gpt-oss-tiny "matmulnbits_weights_prepacked=1 on CUDA (the fpA_intB layout is not written yet)"; std int4 cuda
expect 2 matmulnbits_weights_prepacked=1 "not yet supported" -- "${std[@]}" --extra_options matmulnbits_weights_prepacked=1

new_case int8-budget-no-unit gpt-oss-tiny "int8_budget=10 (no unit)"; std
expect 2 int8_budget=10 "%" MB -- "${std[@]}" --extra_options int8_budget=10

new_case bad-threads gpt-oss-tiny "--threads lots"
expect 2 --threads -- -q --threads lots -i "$ck" -o "$out" -p int4 -e cpu

new_case quant-report-no-folder gpt-oss-tiny "--quant-report in a folder that does not exist"; std
expect 2 --quant-report no-such-dir -- "${std[@]}" --quant-report "$tmp/no-such-dir/report.json"

new_case quant-report-folder gpt-oss-tiny "--quant-report naming a folder"; std
expect 2 --quant-report folder -- "${std[@]}" --quant-report "$tmp"

check_doc_table errors-catalogue
finish
