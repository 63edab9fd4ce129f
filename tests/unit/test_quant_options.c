/* Quantization options (cli/quant_options.c): the builder's names and deprecated aliases, the
 * JSON quant_config, the refusals, and quant_resolve's answer for every role — presets place
 * int8 on exactly the builder's tensors, exclusions and overrides win in the documented order. */
#include "test.h"

#include "cli/options.h"
#include "cli/quant_options.h"
#include "onnx/graph.h"

/* Parses KEY=VALUE pairs and builds the config for -p int4 (or p) -e ep without the "not yet"
 * check, so placement can be tested before the graph is wired. */
static int build(export_opts *o, precision p, exec_provider ep, m2o_err *e, const char *const *kv)
{
    memset(o, 0, sizeof *o);
    o->precision = p;
    o->ep = ep;
    o->qmoe_block_size = 64;
    o->qmoe_weights_prepacked = ep == EP_CUDA;
    quant_flat f;
    quant_flat_init(&f);
    for (int i = 0; kv[i]; i++) {
        char key[64];
        const char *eq = strchr(kv[i], '=');
        snprintf(key, sizeof key, "%.*s", (int)(eq - kv[i]), kv[i]);
        int rc = quant_option_parse(&f, key, eq + 1, e);
        if (rc) return rc == 1 ? (snprintf(e->msg, sizeof e->msg, "not a quant key %s", key), -1) : -1;
    }
    int io = p == PREC_INT4 && ep == EP_CPU ? ONNX_FLOAT : ONNX_FLOAT16;
    return quant_config_build(&f, p, ep, io, &o->quant, e);
}

#define KV(...) ((const char *const[]){__VA_ARGS__, NULL})

static tensor_quant at(const export_opts *o, const char *role, int layer, int n, bool linear)
{
    quant_site s = {role, layer, n, linear, NULL};
    tensor_quant t;
    m2o_err e = {{0}};
    memset(&t, 0xff, sizeof t);
    if (quant_resolve(o, &s, &t, &e)) t.kind = (tq_kind)-1;
    return t;
}

TEST(defaults_per_role_cpu)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("qmoe_quantize_bias=false")), 0);
    tensor_quant t = at(&o, "attn.qkv", 0, 4, false);
    CHECK_EQ(t.kind, TQ_INT);
    CHECK_EQ(t.bits, 4);
    CHECK(t.symmetric);
    CHECK_EQ(t.block_size, 32);
    CHECK_EQ(t.accuracy_level, 4);
    CHECK_EQ(t.method, QMETHOD_DEFAULT);
    CHECK_EQ(t.prepacked, 0);
    CHECK_STR_CONTAINS(t.why, "default");
    CHECK_EQ(at(&o, "lm_head", -1, 4, false).bits, 4);
    CHECK_EQ(at(&o, "shared_expert.down", 2, 4, false).kind, TQ_INT);
    CHECK_EQ(at(&o, "router", 1, 4, false).kind, TQ_FLOAT);
    CHECK_EQ(at(&o, "shared_expert_gate", 1, 4, false).kind, TQ_FLOAT);
    CHECK_EQ(at(&o, "embed", -1, 4, false).kind, TQ_FLOAT); /* op_types_to_quantize = MatMul */
    CHECK_EQ(at(&o, "linear_attn.in_proj_qkv", 0, 4, true).bits, 4);
    CHECK_EQ(at(&o, "linear_attn.in_proj_a", 0, 4, true).kind, TQ_FLOAT); /* as moe2onnx writes it today */
    t = at(&o, "experts.fc2", 3, 4, false);
    CHECK_EQ(t.kind, TQ_INT);
    CHECK_EQ(t.bits, 4);
    CHECK_EQ(t.block_size, 64); /* export_opts.qmoe_block_size, as options_resolve chose it */
    CHECK_EQ(t.accuracy_level, -1);
}

TEST(cuda_defaults_and_int8_experts)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build(&o, PREC_INT4, EP_CUDA, &e, KV("moe_quant_type=int8")), 0);
    CHECK_EQ(at(&o, "attn.o", 1, 2, false).accuracy_level, 0);
    tensor_quant t = at(&o, "experts.fc1", 1, 2, false);
    CHECK_EQ(t.bits, 8);
    CHECK_EQ(t.prepacked, 1);
    CHECK_EQ(build(&o, PREC_INT4, EP_CUDA, &e, KV("use_fp4_moe=True")), 0);
    t = at(&o, "experts.fc1", 0, 2, false);
    CHECK_EQ(t.kind, TQ_MXFP4);
    CHECK_EQ(t.block_size, 32);
}

TEST(float_precision_quantizes_nothing)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build(&o, PREC_FP16, EP_CUDA, &e, KV("use_qdq=false")), 0);
    CHECK_EQ(at(&o, "attn.qkv", 0, 2, false).kind, TQ_FLOAT);
    CHECK_EQ(at(&o, "experts.fc1", 0, 2, false).kind, TQ_FLOAT);
    CHECK_EQ(build(&o, PREC_FP16, EP_CUDA, &e, KV("algo_config=rtn")), -1);
    CHECK_STR_CONTAINS(e.msg, "algo_config needs -p int4");
}

TEST(aliases_and_booleans)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("int4_block_size=128", "int4_accuracy_level=1",
                                                 "int4_is_symmetric=True")), 0);
    CHECK_EQ(o.quant.block_size, 128);
    CHECK_EQ(o.quant.accuracy_level, 1);
    CHECK(o.quant.symmetric);
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("is_symmetric=False")), 0);
    CHECK(!o.quant.symmetric);
    CHECK(!at(&o, "attn.o", 0, 2, false).symmetric);
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("int4_algo_config=k_quant", "block_size=per_channel")), -1);
    CHECK_STR_CONTAINS(e.msg, "MatMulNBits needs a block");
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("int4_algo_config=rtn")), 0);
    CHECK_EQ(o.quant.method, QMETHOD_RTN);
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("block_size=64", "int4_block_size=64")), -1);
    CHECK_STR_CONTAINS(e.msg, "block_size and int4_block_size both set block_size");
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("is_symmetric=yes")), -1);
    CHECK_STR_CONTAINS(e.msg, "is_symmetric=yes: expected true, false, 1 or 0 (or True/False)");
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("algo_config=gptq")), -1);
    CHECK_STR_CONTAINS(e.msg, "allowed values are default, rtn, k_quant");
}

/* The builder's llama.cpp rule with Python's round (halves to even): for 20 layers round(2.5)
 * is 2, giving {0,1,2,4,7,10,13,16,18,19}; for 24 layers {0,1,2,5,8,11,14,17,20,21,22,23}. */
TEST(mixed_layers_preset_matches_the_builder)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("matmul_mixed_precision=mixed_layers:int8")), 0);
    static const int want20[] = {0, 1, 2, 4, 7, 10, 13, 16, 18, 19};
    static const int want24[] = {0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23};
    for (int n = 20; n <= 24; n += 4) {
        const int *want = n == 20 ? want20 : want24;
        int nw = n == 20 ? 10 : 12, k = 0;
        for (int i = 0; i < n; i++) {
            bool up = k < nw && want[k] == i;
            if (up) k++;
            CHECK_MSG(at(&o, "attn.qkv", i, n, false).bits == (up ? 8 : 4), "n %d layer %d qkv", n, i);
            CHECK_MSG(at(&o, "mlp.down", i, n, false).bits == (up ? 8 : 4), "n %d layer %d down", n, i);
            CHECK_EQ(at(&o, "attn.v", i, n, false).bits, up ? 8 : 4);
            CHECK_EQ(at(&o, "attn.o", i, n, false).bits, 4);
            CHECK_EQ(at(&o, "mlp.up", i, n, false).bits, 4);
            CHECK_EQ(at(&o, "shared_expert.down", i, n, false).bits, 4);
        }
    }
    CHECK_EQ(at(&o, "lm_head", -1, 20, false).bits, 4);
    CHECK_STR_CONTAINS(at(&o, "attn.qkv", 0, 20, false).why, "mixed_layers");
}

TEST(last_matmul_and_linear_attn_presets)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("algo_config=k_quant_linear")), 0);
    CHECK_EQ(o.quant.method, QMETHOD_K_QUANT);
    CHECK_EQ(at(&o, "lm_head", -1, 4, false).bits, 8);
    CHECK_EQ(at(&o, "linear_attn.in_proj_qkv", 0, 4, true).bits, 8);
    CHECK_EQ(at(&o, "linear_attn.out_proj", 2, 4, true).bits, 8);
    CHECK_EQ(at(&o, "linear_attn.in_proj_b", 2, 4, true).bits, 8);  /* the preset names it, as the builder */
    CHECK_EQ(at(&o, "mlp.gate", 0, 4, true).bits, 8);     /* the MLP of a linear layer */
    CHECK_EQ(at(&o, "mlp.gate", 3, 4, false).bits, 4);    /* a full-attention layer's MLP */
    CHECK_EQ(at(&o, "attn.qkv", 3, 4, false).bits, 4);
    CHECK_EQ(at(&o, "shared_expert.up", 0, 4, true).bits, 4);
    CHECK_EQ(at(&o, "experts.fc1", 0, 4, true).bits, 4);  /* presets place MatMuls only */
    /* rtn_last = rtn + last_matmul:int8; an explicit selector replaces the alias's type, in
     * either order */
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("matmul_mixed_precision=last_matmul:int4", "algo_config=rtn_last")), 0);
    CHECK_EQ(o.quant.method, QMETHOD_RTN);
    CHECK_EQ(at(&o, "lm_head", -1, 4, false).bits, 4);
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("algo_config=k_quant_mixed", "matmul_mixed_precision=last_matmul:int4")), 0);
    CHECK_EQ(at(&o, "lm_head", -1, 4, false).bits, 4);
    CHECK_EQ(at(&o, "attn.qkv", 0, 4, false).bits, 8);
    /* linear_attn beats mixed_layers where both select (the builder applies it last) */
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("matmul_mixed_precision=mixed_layers:int8,linear_attn:int4")), 0);
    CHECK_EQ(at(&o, "mlp.down", 0, 8, true).bits, 4);
    CHECK_EQ(at(&o, "mlp.down", 0, 8, false).bits, 8);
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("matmul_mixed_precision=lm_head:int8")), -1);
    CHECK_STR_CONTAINS(e.msg, "selector 'lm_head' is unknown");
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("matmul_mixed_precision=last_matmul:fp8")), -1);
    CHECK_STR_CONTAINS(e.msg, "allowed: int4, int8");
}

TEST(nodes_to_exclude_wins_over_presets)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("int4_nodes_to_exclude=/lm_head/MatMul,/model/layers.1/attn/o_proj/MatMul",
                                                 "algo_config=rtn_last")), 0);
    tensor_quant t = at(&o, "lm_head", -1, 4, false);
    CHECK_EQ(t.kind, TQ_FLOAT);
    CHECK_STR_CONTAINS(t.why, "nodes_to_exclude");
    CHECK_EQ(at(&o, "attn.o", 1, 4, false).kind, TQ_FLOAT);
    CHECK_EQ(at(&o, "attn.o", 2, 4, false).kind, TQ_INT);
    /* the graph's own node name matches too */
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("nodes_to_exclude=/model/layers.0/attn/qkv_proj/MatMul_Q4")), 0);
    quant_site s = {"attn.qkv", 0, 4, false, "/model/layers.0/attn/qkv_proj/MatMul_Q4"};
    CHECK_EQ(quant_resolve(&o, &s, &t, &e), 0);
    CHECK_EQ(t.kind, TQ_FLOAT);
    s.layer = 1;
    s.node_name = "/model/layers.1/attn/qkv_proj/MatMul_Q4";
    CHECK_EQ(quant_resolve(&o, &s, &t, &e), 0);
    CHECK_EQ(t.kind, TQ_INT);
}

TEST(json_config_overrides_first_match_wins)
{
    export_opts o;
    m2o_err e = {{0}};
    const char *json =
        "quant_config={\"quantization\":{\"io_dtype\":\"fp32\",\"weights\":{\"type\":\"int4\",\"block_size\":64,"
        "\"accuracy_level\":1,\"method\":\"rtn\",\"overrides\":["
        "{\"match\":{\"name_regex\":\"layers\\\\.3/\"},\"exclude\":true},"
        "{\"match\":{\"role\":\"attn.*\",\"layers\":[0,2]},\"type\":\"int8\"},"
        "{\"match\":{\"preset\":\"last_matmul\"},\"type\":\"uint8\"},"
        "{\"match\":{\"role\":\"attn.qkv\"},\"type\":\"none\"}]},"
        "\"moe\":{\"type\":\"int8\",\"block_size\":\"per_channel\"},\"runtime\":{\"use_qdq\":false}}}";
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV(json)), 0);
    CHECK(o.quant.from_json);
    CHECK_EQ(o.quant.block_size, 64);
    CHECK_EQ(o.quant.accuracy_level, 1);
    CHECK_EQ(o.quant.method, QMETHOD_RTN);
    CHECK_EQ(o.quant.n_overrides, 4);
    CHECK_EQ(at(&o, "attn.o", 3, 4, false).kind, TQ_FLOAT);
    CHECK_EQ(at(&o, "mlp.up", 3, 4, false).kind, TQ_FLOAT);
    CHECK_EQ(at(&o, "attn.qkv", 2, 4, false).bits, 8);   /* second override before the fourth */
    CHECK_EQ(at(&o, "attn.o", 0, 4, false).bits, 8);
    CHECK_EQ(at(&o, "attn.qkv", 1, 4, false).kind, TQ_FLOAT);
    CHECK_EQ(at(&o, "attn.o", 1, 4, false).bits, 4);
    tensor_quant t = at(&o, "lm_head", -1, 4, false);
    CHECK_EQ(t.bits, 8);
    CHECK(!t.symmetric);                                  /* uint8 */
    t = at(&o, "experts.fc1", 0, 4, false);
    CHECK_EQ(t.bits, 8);
    CHECK_EQ(t.block_size, 0);                            /* per channel */
}

/* Each bad quantization request: rc -1 and a one-line message with the fragment. */
static const struct { const char *kv[4]; exec_provider ep; const char *want; } BAD[] = {
    {{"quant_config={\"weights\":{\"blocksize\":32}}"}, EP_CPU, "unknown field 'blocksize'"},
    {{"quant_config={\"io_dtype\":\"fp16\"}"}, EP_CPU, "io_dtype=fp16"},
    {{"quant_config={\"weights\":{\"overrides\":[{\"match\":{\"preset\":\"first\"},\"type\":\"int8\"}]}}"}, EP_CPU, "preset 'first'"},
    {{"quant_config={\"weights\":{\"overrides\":[{\"match\":{\"role\":\"attn.qkv\"},\"type\":\"int8\",\"exclude\":true}]}}"}, EP_CPU, "either 'type' or 'exclude"},
    {{"quant_config={\"weights\":{\"overrides\":[{\"match\":{\"role\":\"attention\"},\"exclude\":true}]}}"}, EP_CPU, "role 'attention' is unknown"},
    {{"quant_config={\"weights\":{\"overrides\":[{\"match\":{\"name_regex\":\"(\"},\"exclude\":true}]}}"}, EP_CPU, "not a POSIX extended"},
    {{"quant_config={\"weights\":{\"overrides\":[{\"match\":{},\"exclude\":true}]}}"}, EP_CPU, "must not be empty"},
    {{"quant_config={\"weights\":{\"type\":\"uint4\",\"symmetric\":true}}"}, EP_CPU, "uint types are the asymmetric"},
    {{"quant_config={\"weights\":{\"method\":\"k_quant_mixed\"}}"}, EP_CPU, "only default, rtn or k_quant"},
    {{"quant_config={\"weights\":{\"block_size\":48}}"}, EP_CPU, "quant_config weights.block_size"},
    {{"quant_config={\"weights\":", NULL}, EP_CPU, "not valid JSON"},
    {{"quant_config=/nonexistent/q.json"}, EP_CPU, "cannot open"},
    {{"block_size=32", "quant_config={}"}, EP_CPU, "quant_config and block_size both set"},
    {{"moe_quant_type=mxfp4", "int4_is_symmetric=false"}, EP_CUDA, "MXFP4 experts need the symmetric"},
    {{"matmulnbits_weights_prepacked=1"}, EP_CPU, "use -e cuda"},
    {{"matmulnbits_weights_prepacked=2", "block_size=32"}, EP_CUDA, "SM90 layout takes blocks 64 or 128"},
    {{"matmulnbits_weights_prepacked=1", "block_size=16"}, EP_CUDA, "SM80 layout takes blocks 32, 64 or 128"},
    {{"matmulnbits_weights_prepacked=1", "is_symmetric=0"}, EP_CUDA, "symmetric weights only"},
    {{"matmulnbits_weights_prepacked=3"}, EP_CUDA, "0 (raw), 1 (SM80), 2 (SM90)"},
    {{"int8_budget=10"}, EP_CPU, "give a unit"},
    {{"int8_budget=150%"}, EP_CPU, "at most 100%"},
    {{"op_types_to_quantize=MatMul/Conv"}, EP_CPU, "'Conv' is not an op type"},
    {{"nodes_to_exclude=,"}, EP_CPU, "give node names"},
    {{"int8_budget=1e30GB"}, EP_CPU, "larger than any model"},
    {{"quant_config={\"weights\":{\"op_types\":[\"MatMul\",\"MatMul\",\"MatMul\",\"MatMul\",\"MatMul\",\"MatMul\",\"MatMul\",\"MatMul\",\"MatMul\",\"MatMul\",\"MatMul\"]}}"}, EP_CPU, "weights.op_types"},
    {{"moe_quant_type=nvfp4"}, EP_CUDA, "does not write NVFP4"},
};

TEST(bad_requests_are_named)
{
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        export_opts o;
        m2o_err e = {{0}};
        CHECK_MSG(build(&o, PREC_INT4, BAD[i].ep, &e, BAD[i].kv) == -1, "case %zu (%s) accepted", i, BAD[i].want);
        CHECK_STR_CONTAINS(e.msg, BAD[i].want);
        CHECK_MSG(!strchr(e.msg, '\n'), "case %zu: message spans lines", i);
    }
}

TEST(int8_budget_values)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("int8_budget=12.5%")), 0);
    CHECK_NEAR(o.quant.int8_budget_percent, 12.5, 0);
    CHECK_EQ(o.quant.int8_budget_bytes, -1);
    CHECK(at(&o, "attn.o", 0, 2, false).budget_candidate);
    CHECK(!at(&o, "experts.fc1", 0, 2, false).budget_candidate);
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("int8_budget=500MB")), 0);
    CHECK_EQ(o.quant.int8_budget_bytes, 500000000);
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("int8_budget=2GiB")), 0);
    CHECK_EQ(o.quant.int8_budget_bytes, 2147483648LL);
}

/* Until the graph honours them, every weight-changing value is refused, naming the option. */
TEST(not_yet_supported_is_refused_by_one_function)
{
    static const char *const CASES[][2] = {
        {"op_types_to_quantize=MatMul/Gather", "op_types_to_quantize"},
        {"use_qdq=True", "use_qdq"},
        {"quant_config={\"moe\":{\"type\":\"none\"}}", "moe.type=none"},
        {"quant_config={\"weights\":{\"overrides\":[{\"match\":{\"op_type\":\"Gather\"},\"type\":\"int4\"}]}}",
         "embedding"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        export_opts o;
        m2o_err e = {{0}};
        CHECK_MSG(build(&o, PREC_INT4, EP_CPU, &e, KV(CASES[i][0])) == 0, "case %s: %s", CASES[i][0], e.msg);
        CHECK_EQ(quant_config_check_supported(&o.quant, &e), -1);
        CHECK_STR_CONTAINS(e.msg, CASES[i][1]);
        CHECK_STR_CONTAINS(e.msg, "not yet supported by this build");
    }
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build(&o, PREC_INT4, EP_CUDA, &e, KV("block_size=128", "accuracy_level=2", "is_symmetric=1",
                                                  "op_types_to_quantize=MatMul", "matmulnbits_weights_prepacked=0",
                                                  "scale_search=false", "moe_quant_type=int8")), 0);
    CHECK_EQ(quant_config_check_supported(&o.quant, &e), 0);
}

/* What the graph writes for MatMuls now passes (graph/linear.c). */
TEST(matmul_options_the_graph_writes_are_supported)
{
    static const char *const CASES[] = {
        "is_symmetric=false", "algo_config=k_quant", "algo_config=rtn", "algo_config=k_quant_mixed",
        "algo_config=rtn_last", "algo_config=k_quant_linear", "matmul_mixed_precision=last_matmul:int8",
        "nodes_to_exclude=/lm_head/MatMul", "scale_search=true", "int8_budget=5%", "int8_budget=500MB",
        "quant_config={\"weights\":{\"type\":\"int8\"}}", "quant_config={\"weights\":{\"type\":\"uint8\"}}",
        "quant_config={\"weights\":{\"type\":\"none\"}}",
        "quant_config={\"weights\":{\"overrides\":[{\"match\":{\"role\":\"attn.*\"},\"type\":\"uint8\"}]}}",
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        export_opts o;
        m2o_err e = {{0}};
        CHECK_MSG(build(&o, PREC_INT4, EP_CPU, &e, KV(CASES[i])) == 0, "case %s: %s", CASES[i], e.msg);
        CHECK_MSG(quant_config_check_supported(&o.quant, &e) == 0, "case %s: %s", CASES[i], e.msg);
    }
}

/* scale_search refines the default method; with rtn or k_quant it would do nothing to MatMuls. */
TEST(scale_search_with_an_inc_method_is_refused)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("scale_search=true", "algo_config=rtn")), -1);
    CHECK_STR_CONTAINS(e.msg, "scale_search=true and algo_config=rtn");
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e,
                   KV("quant_config={\"weights\":{\"scale_search\":true,\"method\":\"k_quant\"}}")), -1);
    CHECK_STR_CONTAINS(e.msg, "weights.method=k_quant");
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("scale_search=true", "algo_config=default")), 0);
    CHECK(o.quant.scale_search && o.quant.scale_search_matmul);
    /* one side only: "experts" leaves the MatMuls to their method (rtn here), "matmul" the experts */
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("scale_search=experts", "algo_config=rtn")), 0);
    CHECK(o.quant.scale_search && !o.quant.scale_search_matmul);
    CHECK(!at(&o, "attn.o", 0, 2, false).scale_search);
    CHECK(at(&o, "experts.fc1", 0, 2, false).scale_search);
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("quant_config={\"weights\":{\"scale_search\":\"matmul\"}}")), 0);
    CHECK(!o.quant.scale_search && o.quant.scale_search_matmul);
    CHECK(at(&o, "attn.o", 0, 2, false).scale_search);
    CHECK(!at(&o, "experts.fc1", 0, 2, false).scale_search);
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("scale_search=both")), -1);
    CHECK_STR_CONTAINS(e.msg, "true, false, experts, matmul");
}

/* The expert side writes per-channel, uint4/uint8 and scale_search (flat and JSON spellings);
 * the combinations it cannot write are refused by name. */
TEST(expert_variants_are_accepted_and_their_impossible_combinations_refused)
{
    static const char *const OK[][2] = {
        {"qmoe_block_size=0", NULL}, {"qmoe_block_size=-1", NULL}, {"scale_search=true", NULL},
        {"moe_quant_type=uint4", "uint4"}, {"moe_quant_type=uint8", "uint8"},
        {"quant_config={\"moe\":{\"type\":\"uint8\",\"block_size\":\"per_channel\"}}", NULL},
    };
    for (size_t i = 0; i < sizeof OK / sizeof OK[0]; i++) {
        export_opts o;
        m2o_err e = {{0}};
        CHECK_MSG(build(&o, PREC_INT4, EP_CPU, &e, KV(OK[i][0])) == 0, "case %s: %s", OK[i][0], e.msg);
        int rc = quant_config_check_supported(&o.quant, &e);
        if (i == 5) { /* uint8 per channel: zero points with row-wise scales */
            CHECK_EQ(rc, -1);
            CHECK_STR_CONTAINS(e.msg, "per channel");
            continue;
        }
        CHECK_MSG(rc == 0, "case %s: %s", OK[i][0], e.msg);
    }
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("moe_quant_type=uint4")), 0);
    CHECK_EQ(o.quant.moe_type, QTYPE_UINT4);
    CHECK(!at(&o, "experts.fc2", 0, 2, false).symmetric);
    CHECK_EQ(at(&o, "experts.fc2", 0, 2, false).bits, 4);
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("moe_quant_type=uint8", "use_8bits_moe=true")), 0);
    CHECK_EQ(o.quant.moe_type, QTYPE_UINT8);
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("qmoe_block_size=0", "scale_search=true")), 0);
    CHECK_EQ(quant_config_check_supported(&o.quant, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "scale_search");
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("moe_quant_type=uint16")), -1);
    CHECK_STR_CONTAINS(e.msg, "int4, int8, uint4, uint8, mxfp4");
}

/* Through options_validate: the new names reach the fields the graph reads today. */
TEST(validate_fills_the_graph_fields)
{
    const char *argv[] = {"-i", "x", "-o", "y", "-p", "int4", "-e", "cuda", "--extra_options", "block_size=64",
                          "accuracy_level=1", "qmoe_block_size=128", "qmoe_weights_prepacked=0"};
    build_args a;
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build_args_parse(13, (char **)argv, &a, &e), 0);
    CHECK_EQ(options_validate(&a, &o, &e), 0);
    CHECK_EQ(o.int4_block_size, 64);
    CHECK_EQ(o.int4_accuracy_level, 1);
    CHECK_EQ(o.qmoe_block_size, 128);
    CHECK_EQ(o.qmoe_weights_prepacked, 0);
    const char *json[] = {"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options",
                          "quant_config={\"weights\":{\"block_size\":128},\"moe\":{\"type\":\"int8\",\"block_size\":16}}"};
    CHECK_EQ(build_args_parse(10, (char **)json, &a, &e), 0);
    CHECK_EQ(options_validate(&a, &o, &e), 0);
    CHECK_EQ(o.int4_block_size, 128);
    CHECK_EQ(o.moe_quant_type, MOE_QUANT_INT8);
    CHECK_EQ(o.qmoe_block_size, 16);
    const char *lm[] = {"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "exclude_lm_head=true",
                        "algo_config=rtn_last"};
    CHECK_EQ(build_args_parse(11, (char **)lm, &a, &e), 0);
    CHECK_EQ(options_validate(&a, &o, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "no lm_head to place");
}

TEST(resolve_rejects_bad_sites)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(build(&o, PREC_INT4, EP_CPU, &e, KV("block_size=32")), 0);
    tensor_quant t;
    quant_site s = {"attn.qkvo", 0, 2, false, NULL};
    CHECK_EQ(quant_resolve(&o, &s, &t, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "unknown role 'attn.qkvo'");
    s = (quant_site){"attn.o", 2, 2, false, NULL};
    CHECK_EQ(quant_resolve(&o, &s, &t, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "layer out of range");
    s = (quant_site){"lm_head", 0, 2, false, NULL};
    CHECK_EQ(quant_resolve(&o, &s, &t, &e), -1);
    char name[128];
    quant_builder_node_name("linear_attn.in_proj_a", 7, name, sizeof name);
    CHECK_STR_CONTAINS(name, "/model/layers.7/linear_attn/in_proj_a/MatMul");
    CHECK(quant_role_known("shared_expert.*", true));
    CHECK(!quant_role_known("shared_expert.*", false));
}
