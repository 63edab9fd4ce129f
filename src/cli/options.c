#include "cli/options.h"
#include "cli/quant_options.h"
#include "onnx/ort_rules.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "onnx/graph.h"

/* ---------- argv ---------- */

static int need_value(int argc, char **argv, int i, m2o_err *err)
{
    if (i + 1 >= argc || argv[i + 1][0] == 0)
        return m2o_fail(err, "option %s needs a value (see --help)", argv[i]);
    return 0;
}

static int parse_threads(const char *s, int *out, m2o_err *err)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < 0 || v > 1024)
        return m2o_fail(err, "--threads '%s' is not a thread count: use an integer from 0 (all cores) to 1024", s);
    *out = (int)v;
    return 0;
}

int build_args_parse(int argc, char **argv, build_args *a, m2o_err *err)
{
    memset(a, 0, sizeof *a);
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            a->help = true;
        } else if (!strcmp(s, "-i") || !strcmp(s, "--input")) {
            if (need_value(argc, argv, i, err)) return -1;
            a->input = argv[++i];
        } else if (!strcmp(s, "-o") || !strcmp(s, "--output")) {
            if (need_value(argc, argv, i, err)) return -1;
            a->output = argv[++i];
        } else if (!strcmp(s, "-m") || !strcmp(s, "--model_name")) {
            if (need_value(argc, argv, i, err)) return -1;
            a->model_name = argv[++i];
        } else if (!strcmp(s, "-c") || !strcmp(s, "--cache_dir")) {
            if (need_value(argc, argv, i, err)) return -1;
            a->cache_dir = argv[++i];
        } else if (!strcmp(s, "-p") || !strcmp(s, "--precision")) {
            if (need_value(argc, argv, i, err)) return -1;
            a->precision = argv[++i];
        } else if (!strcmp(s, "-e") || !strcmp(s, "--execution_provider")) {
            if (need_value(argc, argv, i, err)) return -1;
            a->ep = argv[++i];
        } else if (!strcmp(s, "--extra_options")) {
            /* Like the reference builder: every following argument up to the next option. */
            int taken = 0;
            while (i + 1 < argc && argv[i + 1][0] != '-') {
                if (a->n_extra == CLI_MAX_EXTRA)
                    return m2o_fail(err, "--extra_options: more than %d KEY=VALUE pairs", CLI_MAX_EXTRA);
                a->extra[a->n_extra++] = argv[++i];
                taken++;
            }
            if (!taken)
                return m2o_fail(err, "--extra_options needs at least one KEY=VALUE (see --help)");
        } else if (!strcmp(s, "--threads")) {
            if (need_value(argc, argv, i, err) || parse_threads(argv[i + 1], &a->threads, err)) return -1;
            i++;
        } else if (!strncmp(s, "--threads=", 10)) {
            if (parse_threads(s + 10, &a->threads, err)) return -1;
        } else if (!strcmp(s, "--quant-report")) {
            if (need_value(argc, argv, i, err)) return -1;
            a->quant_report = argv[++i];
        } else if (!strncmp(s, "--quant-report=", 15)) {
            a->quant_report = s + 15;
        } else if (!strcmp(s, "-q") || !strcmp(s, "--quiet")) {
            a->quiet = true;
        } else if (!strcmp(s, "--overwrite")) {
            a->overwrite = true;
        } else if (!strcmp(s, "--allow-nonfinite")) {
            a->allow_nonfinite = true;
        } else {
            return m2o_fail(err, "unknown argument '%s' (see moe2onnx --help)", s);
        }
    }
    return 0;
}

/* ---------- values ---------- */

/* The options that are not about quantization (those are parsed by cli/quant_options.c). */
typedef struct extra_values {
    quant_flat q;
    bool use_cuda_bf16, exclude_lm_head, include_hidden_states, exclude_embeds;
} extra_values;

static const char *const EXTRA_KEYS =
    "block_size, accuracy_level, is_symmetric, op_types_to_quantize, nodes_to_exclude, algo_config "
    "(each also with the deprecated int4_ prefix), matmul_mixed_precision, matmulnbits_weights_prepacked, "
    "use_qdq, moe_quant_type, use_8bits_moe, use_fp4_moe, qmoe_block_size, qmoe_weights_prepacked, "
    "qmoe_quantize_bias, quant_config, scale_search, int8_budget, use_cuda_bf16, exclude_lm_head, "
    "include_hidden_states";

static int parse_one_extra(const char *key, const char *v, extra_values *x, m2o_err *err)
{
    int rc = quant_option_parse(&x->q, key, v, err);
    if (rc <= 0) return rc;
    if (!strcmp(key, "use_cuda_bf16")) return quant_parse_bool(key, v, &x->use_cuda_bf16, err);
    if (!strcmp(key, "exclude_lm_head")) return quant_parse_bool(key, v, &x->exclude_lm_head, err);
    if (!strcmp(key, "include_hidden_states")) return quant_parse_bool(key, v, &x->include_hidden_states, err);
    if (!strcmp(key, "exclude_embeds")) {
        if (quant_parse_bool(key, v, &x->exclude_embeds, err)) return -1;
        if (x->exclude_embeds)
            return m2o_fail(err, "extra option exclude_embeds=true is not supported: moe2onnx always exports "
                                 "the embedding (input_ids input); remove the option");
        return 0;
    }
    return m2o_fail(err, "unknown extra option '%s'; valid ones: %s", key, EXTRA_KEYS);
}

static int parse_extras(const build_args *a, extra_values *x, m2o_err *err)
{
    memset(x, 0, sizeof *x);
    quant_flat_init(&x->q);
    for (int i = 0; i < a->n_extra; i++) {
        const char *kv = a->extra[i];
        const char *eq = strchr(kv, '=');
        if (!eq || eq == kv || !eq[1])
            return m2o_fail(err, "extra option '%s' is not KEY=VALUE; valid keys: %s", kv, EXTRA_KEYS);
        char key[64];
        size_t klen = (size_t)(eq - kv);
        if (klen >= sizeof key)
            return m2o_fail(err, "unknown extra option '%.*s'; valid ones: %s", (int)klen, kv, EXTRA_KEYS);
        memcpy(key, kv, klen);
        key[klen] = 0;
        for (int j = 0; j < i; j++)
            if (!strncmp(a->extra[j], kv, klen + 1))
                return m2o_fail(err, "extra option %s given twice; keep one", key);
        if (parse_one_extra(key, eq + 1, x, err))
            return -1;
    }
    return 0;
}

static int io_dtype_for(precision p, exec_provider ep, bool cuda_bf16)
{
    if (p == PREC_FP32 || (p == PREC_INT4 && ep == EP_CPU))
        return ONNX_FLOAT;
    if (p == PREC_BF16 || (p == PREC_INT4 && cuda_bf16))
        return ONNX_BFLOAT16;
    return ONNX_FLOAT16;
}

/* Expert options: the checks and messages as they were before issue 18 (README error catalogue). */
static int check_expert_options(const build_args *a, const quant_flat *f, const export_opts *o, m2o_err *err)
{
    bool int4 = o->precision == PREC_INT4;
    bool has_qb = f->qmoe_block_size != QUANT_UNSET;
    if (!int4) {
        if (f->moe_quant_set || f->use_8bits_moe == 1 || f->use_fp4_moe == 1 || has_qb ||
            f->qmoe_prepacked != QUANT_UNSET)
            return m2o_fail(err, "expert quantization options (moe_quant_type, use_8bits_moe, use_fp4_moe, "
                                 "qmoe_block_size, qmoe_weights_prepacked) need -p int4; -p %s keeps experts "
                                 "in floating point", a->precision);
        if (f->block_size != QUANT_UNSET || f->accuracy_level != QUANT_UNSET || f->qmoe_quantize_bias)
            return m2o_fail(err, "extra options int4_block_size/int4_accuracy_level/qmoe_quantize_bias need -p int4");
    }
    if (o->moe_quant_type == MOE_QUANT_MXFP4 && o->ep == EP_CPU)
        return m2o_fail(err, "moe_quant_type=mxfp4: ONNX Runtime's CPU QMoE has no fp4 kernel; use -e cuda, "
                             "or moe_quant_type=int4|int8 for cpu");
    if (o->ep == EP_CPU && f->qmoe_prepacked == 1)
        return m2o_fail(err, "qmoe_weights_prepacked=1 with -e cpu: the CPU QMoE kernel reads the raw layout "
                             "only; use 0 or -1 (or -e cuda)");
    if (o->moe_quant_type == MOE_QUANT_MXFP4 && (f->qmoe_prepacked == 0 || f->qmoe_prepacked == 1))
        return m2o_fail(err, "qmoe_weights_prepacked applies to int4/int8 experts; MXFP4 experts always use "
                             "the CUDA fp4 layout (remove the option)");
    if (o->moe_quant_type == MOE_QUANT_MXFP4 && has_qb && f->qmoe_block_size != ORT_MXFP4_BLOCK)
        return m2o_fail(err, "qmoe_block_size=%d with moe_quant_type=mxfp4: MXFP4 blocks are always %d",
                        f->qmoe_block_size, ORT_MXFP4_BLOCK);
    bool cuda = o->ep == EP_CUDA;
    if (int4 && has_qb && f->qmoe_block_size > 0 && o->moe_quant_type != MOE_QUANT_MXFP4 &&
        !ort_qmoe_block_ok(cuda, f->qmoe_block_size))
        return m2o_fail(err, "qmoe_block_size=%d with -e %s: the %s QMoE kernel allows %s", f->qmoe_block_size,
                        cuda ? "cuda" : "cpu", cuda ? "CUDA" : "CPU", ort_qmoe_blocks_text(cuda));
    return 0;
}

static int check_io_options(const extra_values *x, const export_opts *o, m2o_err *err)
{
    bool int4 = o->precision == PREC_INT4;
    if (x->use_cuda_bf16 && o->ep != EP_CUDA)
        return m2o_fail(err, "extra option use_cuda_bf16=true needs -e cuda (the CPU build uses float32 inputs)");
    if (x->use_cuda_bf16 && !int4)
        return m2o_fail(err, "extra option use_cuda_bf16=true applies to -p int4; for bfloat16 weights use -p bf16");
    if (o->ep == EP_CPU && o->precision == PREC_BF16)
        return m2o_fail(err, "-p bf16 with -e cpu: ONNX Runtime's CPU GroupQueryAttention/MoE have no bfloat16 "
                             "kernels; use -p fp32 or -p int4 for cpu, or -e cuda");
    return 0;
}

int options_validate(const build_args *a, export_opts *o, m2o_err *err)
{
    memset(o, 0, sizeof *o);
    if (!a->output)
        return m2o_fail(err, "missing -o/--output: the folder to write the ONNX model into");
    if (!a->input && !a->model_name)
        return m2o_fail(err, "missing -i/--input: the Hugging Face checkpoint folder to convert "
                             "(or -m NAME to find it in the local Hugging Face cache)");
    if (!a->precision)
        return m2o_fail(err, "missing -p/--precision: one of fp32, fp16, bf16, int4");
    if (!a->ep)
        return m2o_fail(err, "missing -e/--execution_provider: one of cpu, cuda");

    if (!strcmp(a->precision, "fp32")) o->precision = PREC_FP32;
    else if (!strcmp(a->precision, "fp16")) o->precision = PREC_FP16;
    else if (!strcmp(a->precision, "bf16")) o->precision = PREC_BF16;
    else if (!strcmp(a->precision, "int4")) o->precision = PREC_INT4;
    else return m2o_fail(err, "-p/--precision '%s' is not supported: use fp32, fp16, bf16 or int4", a->precision);

    if (!strcmp(a->ep, "cpu")) o->ep = EP_CPU;
    else if (!strcmp(a->ep, "cuda")) o->ep = EP_CUDA;
    else return m2o_fail(err, "-e/--execution_provider '%s' is not supported: use cpu or cuda", a->ep);

    extra_values x;
    if (parse_extras(a, &x, err))
        return -1;
    const quant_flat *f = &x.q;
    o->io_dtype = io_dtype_for(o->precision, o->ep, x.use_cuda_bf16);
    if (quant_config_build(&x.q, o->precision, o->ep, o->io_dtype, &o->quant, err))
        return -1;
    o->moe_quant_type = f->moe_resolved;
    if (check_expert_options(a, f, o, err) || check_io_options(&x, o, err))
        return -1;
    bool has_qb = f->qmoe_block_size != QUANT_UNSET && f->qmoe_block_size != 0; /* 0: per channel */
    o->int4_block_size = o->quant.block_size;
    o->int4_accuracy_level = o->quant.accuracy_level;
    o->qmoe_block_size = o->moe_quant_type == MOE_QUANT_MXFP4 ? 32 : has_qb ? f->qmoe_block_size : 0;
    if (o->ep == EP_CPU || o->moe_quant_type == MOE_QUANT_MXFP4)
        o->qmoe_weights_prepacked = 0;
    else
        o->qmoe_weights_prepacked = f->qmoe_prepacked == 0 ? 0 : 1;
    o->use_cuda_bf16 = x.use_cuda_bf16;
    o->exclude_lm_head = x.exclude_lm_head;
    o->include_hidden_states = x.include_hidden_states && !x.exclude_lm_head; /* already the output */
    o->exclude_embeds = false;
    if (f->qmoe_quantize_bias && o->moe_quant_type == MOE_QUANT_MXFP4)
        return m2o_fail(err, "extra option qmoe_quantize_bias=true applies to int4/int8 experts, not mxfp4");
    if (f->qmoe_quantize_bias && (o->quant.moe_per_channel || f->moe_unsigned))
        return m2o_fail(err, "extra option qmoe_quantize_bias=true rounds biases with the symmetric blockwise "
                             "quantizer; it is not offered with per-channel or uint4/uint8 experts");
    o->qmoe_quantize_bias = f->qmoe_quantize_bias;
    o->allow_nonfinite = a->allow_nonfinite;
    for (int i = 0; i < o->quant.n_overrides; i++)
        if (o->exclude_lm_head && o->quant.overrides[i].preset == QPRESET_LAST_MATMUL)
            return m2o_fail(err, "extra option matmul_mixed_precision=last_matmul (or algo_config=*_last/_mixed/"
                                 "_linear) with exclude_lm_head=true: there is no lm_head to place; drop one");
    /* Last: what ONNX Runtime could run but this build cannot write yet. */
    return quant_config_check_supported(&o->quant, err);
}

/* ---------- dims-dependent ---------- */

/* every family sets moe_intermediate_size (gpt-oss: = intermediate_size) */
static int expert_width(const model_desc *md)
{
    return md->moe_intermediate_size;
}

/* Every architecture's attention is GroupQueryAttention with its rotary caches: a config whose
 * head or rotary widths ONNX Runtime refuses at run time is refused here, before any output. */
int options_check_model(const model_desc *md, m2o_err *err)
{
    double prf = md->partial_rotary_factor > 0 ? md->partial_rotary_factor : 1.0;
    int rotary_dim = (int)(md->head_dim * prf);
    m2o_err why;
    if (!ort_gqa_rule(md->num_heads, md->num_kv_heads, md->head_dim, rotary_dim, &why))
        return 0;
    return m2o_fail(err, "config.json (head_dim %d, partial_rotary_factor %g, %d/%d heads): %s; "
                    "this configuration cannot be exported for ONNX Runtime",
                    md->head_dim, prf, md->num_heads, md->num_kv_heads, why.msg);
}

int options_resolve(const build_args *a, const model_desc *md, export_opts *o, m2o_err *err)
{
    (void)a;
    /* Measured with ONNX Runtime 1.29's CUDA provider (tests/cuda/RESULTS.md): the int4 builds of
     * the shared-expert models in bfloat16 land 5e-2 to 4e-1 of max|logit| from the reference,
     * 5 to 20 times transformers' own bfloat16 error, where the same exports in float16, and
     * -p bf16, match. A wrong model is not exported. */
    if (o->use_cuda_bf16 && md->shared_expert_intermediate_size > 0)
        return m2o_fail(err, "extra option use_cuda_bf16=true: ONNX Runtime's CUDA provider runs int4 "
                             "models with a shared expert wrongly in bfloat16 (measured by tests/cuda); "
                             "drop use_cuda_bf16 (float16 io) or use -p bf16");
    if (o->precision != PREC_INT4)
        return 0;
    int H = md->hidden_size, I = expert_width(md);
    bool cuda_int = o->ep == EP_CUDA && o->moe_quant_type != MOE_QUANT_MXFP4;
    if (o->moe_quant_type == MOE_QUANT_MXFP4) {
        if (H % ORT_MXFP4_BLOCK || I % ORT_MXFP4_BLOCK)
            return m2o_fail(err, "moe_quant_type=mxfp4: hidden_size %d and expert intermediate size %d must be "
                                 "multiples of %d (MXFP4 block)", H, I, ORT_MXFP4_BLOCK);
        return 0;
    }
    if (cuda_int && (H % ORT_QMOE_CUDA_WIDTH_MULTIPLE || I % ORT_QMOE_CUDA_WIDTH_MULTIPLE))
        return m2o_fail(err, "-e cuda int%d experts: hidden_size %d and expert intermediate size %d must be "
                             "multiples of %d for ONNX Runtime's CUDA QMoE kernel; use -e cpu",
                        o->moe_quant_type == MOE_QUANT_INT8 ? 8 : 4, H, I, ORT_QMOE_CUDA_WIDTH_MULTIPLE);
    bool uint = o->quant.moe_type == QTYPE_UINT4 || o->quant.moe_type == QTYPE_UINT8;
    int bits = o->moe_quant_type == MOE_QUANT_INT8 ? 8 : 4;
    if (o->quant.moe_per_channel) /* one scale per row: no block rule (CUDA widths checked above) */
        return uint ? ort_qmoe_zero_point_rule(o->ep == EP_CUDA, bits, 0, H, I, err) : 0;
    if (o->qmoe_block_size)
        return ort_qmoe_int_rule(o->ep == EP_CUDA, o->qmoe_block_size, H, I, err) ||
               (uint && ort_qmoe_zero_point_rule(o->ep == EP_CUDA, bits, o->qmoe_block_size, H, I, err)) ? -1 : 0;
    /* Default: CPU uses 32 like int4_block_size (most accurate common choice); CUDA the largest
     * block its kernel allows that divides both widths (gpt-oss's 2880 is not a multiple of 128). */
    static const int cpu_pref[] = {32, 128, 64, 16};
    static const int cuda_pref[] = {128, 64, 32};
    const int *pref = o->ep == EP_CPU ? cpu_pref : cuda_pref;
    int n = o->ep == EP_CPU ? 4 : 3;
    /* uint4 skips the blocks its zero points cannot take (odd counts per row, ort_rules.h) */
    m2o_err skip;
    for (int i = 0; i < n; i++)
        if (ort_qmoe_block_ok(o->ep == EP_CUDA, pref[i]) && H % pref[i] == 0 && I % pref[i] == 0 &&
            !(uint && ort_qmoe_zero_point_rule(o->ep == EP_CUDA, bits, pref[i], H, I, &skip))) {
            o->qmoe_block_size = pref[i];
            return 0;
        }
    return m2o_fail(err, "no QMoE block size allowed for -e %s divides hidden_size %d and expert intermediate "
                         "size %d; use -p fp16/fp32 for this model",
                    o->ep == EP_CPU ? "cpu" : "cuda", H, I);
}

/* ---------- input location ---------- */

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int options_input_dir(const build_args *a, char *buf, size_t len, m2o_err *err)
{
    if (a->input) {
        if (!is_dir(a->input))
            return m2o_fail(err, "-i/--input %s: not a directory; pass the folder holding config.json and "
                                 "the *.safetensors files", a->input);
        if ((size_t)snprintf(buf, len, "%s", a->input) >= len)
            return m2o_fail(err, "-i/--input: path too long");
        return 0;
    }
    /* -m org/name: look for a snapshot in the Hugging Face hub cache (no downloads). */
    char cache[PATH_MAX];
    const char *hf = getenv("HF_HOME"), *home = getenv("HOME");
    if (a->cache_dir) snprintf(cache, sizeof cache, "%s", a->cache_dir);
    else if (hf) snprintf(cache, sizeof cache, "%s/hub", hf);
    else snprintf(cache, sizeof cache, "%s/.cache/huggingface/hub", home ? home : ".");
    char repo[512]; /* the cache names "org/name" as "models--org--name" */
    size_t r = 0;
    for (const char *p = a->model_name; *p && r + 3 < sizeof repo; p++) {
        if (*p == '/') { repo[r++] = '-'; repo[r++] = '-'; }
        else repo[r++] = *p;
    }
    repo[r] = 0;
    char ref_path[PATH_MAX + 600], commit[128] = "";
    snprintf(ref_path, sizeof ref_path, "%s/models--%s/refs/main", cache, repo);
    FILE *f = fopen(ref_path, "r");
    if (f) {
        if (!fgets(commit, sizeof commit, f)) commit[0] = 0;
        fclose(f);
        commit[strcspn(commit, "\r\n")] = 0;
    }
    if (!commit[0])
        return m2o_fail(err, "-m %s: not found in the Hugging Face cache %s (moe2onnx does not download); "
                             "download it first or pass -i DIR", a->model_name, cache);
    if ((size_t)snprintf(buf, len, "%s/models--%s/snapshots/%s", cache, repo, commit) >= len || !is_dir(buf))
        return m2o_fail(err, "-m %s: the cache entry %s/models--%s names snapshot %s, which is missing; "
                             "re-download it or pass -i DIR", a->model_name, cache, repo, commit);
    return 0;
}

void build_usage(FILE *f)
{
    fputs(
        "usage: moe2onnx [build] -i CHECKPOINT_DIR -o OUTPUT_DIR -p PRECISION -e PROVIDER [options]\n"
        "       moe2onnx verify -i CHECKPOINT_DIR -o MODEL_DIR [--json]\n"
        "       moe2onnx synth --preset NAME -o DIR [--layers N] [--experts mxfp4|bf16]\n"
        "\n"
        "Converts a Hugging Face Mixture-of-Experts checkpoint (gpt_oss, qwen3_moe, qwen2_moe,\n"
        "qwen3_5_moe) into an ONNX Runtime GenAI model folder.\n"
        "\n"
        "  -i, --input DIR             checkpoint folder (config.json + *.safetensors)\n"
        "  -m, --model_name NAME       find the checkpoint in the local Hugging Face cache instead\n"
        "  -c, --cache_dir DIR         Hugging Face cache for -m (default $HF_HOME/hub)\n"
        "  -o, --output DIR            output folder (written under a temporary name, renamed at the end)\n"
        "  -p, --precision P           fp32 | fp16 | bf16 | int4\n"
        "  -e, --execution_provider E  cpu | cuda\n"
        "  --extra_options K=V ...     quantization, as onnxruntime-genai's builder (docs/QUANTIZATION.md):\n"
        "                              block_size=16|32|64|128|256 (default 32; MatMulNBits)\n"
        "                              accuracy_level=0..4 (default 4 on cpu, 0 on cuda)\n"
        "                              is_symmetric=BOOL (default true; false = uint4 with zero points)\n"
        "                              algo_config=default|rtn|k_quant (legacy: rtn_last, k_quant_last,\n"
        "                                k_quant_mixed, k_quant_linear)\n"
        "                              matmul_mixed_precision=SEL:TYPE,... (SEL last_matmul|mixed_layers|\n"
        "                                linear_attn, TYPE int4|int8)\n"
        "                              nodes_to_exclude=NODE,... op_types_to_quantize=MatMul[/Gather]\n"
        "                              (int4_block_size, int4_accuracy_level, int4_is_symmetric,\n"
        "                                int4_algo_config, int4_nodes_to_exclude,\n"
        "                                int4_op_types_to_quantize: deprecated names, same meaning)\n"
        "                              matmulnbits_weights_prepacked=0|1|2 (cuda: raw, SM80, SM90)\n"
        "                              use_qdq=BOOL\n"
        "                              moe_quant_type=int4|int8|uint4|uint8|mxfp4 (default int4; uint:\n"
        "                                zero points per block; mxfp4 needs cuda)\n"
        "                              use_8bits_moe=BOOL, use_fp4_moe=BOOL (aliases of moe_quant_type)\n"
        "                              qmoe_block_size=N (cpu 16..128, default 32; cuda 32|64|128,\n"
        "                                default the largest dividing hidden and expert sizes;\n"
        "                                0 = per channel)\n"
        "                              qmoe_weights_prepacked=-1|0|1 (cuda int: 1/-1 CUTLASS SM80, 0 raw)\n"
        "                              qmoe_quantize_bias=BOOL (round expert biases like the weights;\n"
        "                                off = exact biases, as onnxruntime-genai)\n"
        "                              quant_config=JSON|FILE (the builder's structured QuantConfig;\n"
        "                                not combined with the flat quantization options)\n"
        "                              scale_search=BOOL (moe2onnx: error-minimizing scales)\n"
        "                              int8_budget=P%|SIZE (moe2onnx: int8 where it helps most, within\n"
        "                                P% more dense bytes or SIZE bytes, e.g. 10% or 500MB)\n"
        "                              Values that change the weights beyond the defaults above are\n"
        "                                refused by this build for now (docs/QUANTIZATION.md)\n"
        "                              use_cuda_bf16=BOOL\n"
        "                              exclude_lm_head=BOOL (no lm_head: output hidden_states, the\n"
        "                                final norm's output, instead of logits)\n"
        "                              include_hidden_states=BOOL (hidden_states output beside logits)\n"
        "                              BOOL is true|false|True|False|1|0\n"
        "  --threads N                 worker threads (default: all cores)\n"
        "  -q, --quiet                 only the final summary line\n"
        "  --quant-report FILE         write every quantized tensor's error (relative RMS, max abs,\n"
        "                                format) as JSON to FILE\n"
        "  --overwrite                 replace an existing model in OUTPUT_DIR\n"
        "  --allow-nonfinite           pass NaN/Inf weights through instead of failing\n"
        "  -h, --help, --version\n",
        f);
}
