/* Command-line and --extra_options validation: every bad value or combination is an error that
 * names the option and what is allowed; good combinations resolve to the documented defaults. */
#include "arch/family.h"
#include "test.h"

#include "cli/options.h"
#include "onnx/graph.h"

/* Parses and validates argv; returns the rc and leaves the message in err. */
static int validate(export_opts *o, m2o_err *err, int argc, const char *const *argv)
{
    build_args a;
    if (build_args_parse(argc, (char **)argv, &a, err))
        return -1;
    return options_validate(&a, o, err);
}

#define VALIDATE(o, err, ...)                                                     \
    ({                                                                            \
        const char *argv_[] = {__VA_ARGS__};                                      \
        validate(o, err, (int)(sizeof argv_ / sizeof argv_[0]), argv_);           \
    })

static model_desc gpt_oss_dims(int hidden, int inter)
{
    model_desc md;
    memset(&md, 0, sizeof md);
    md.family = family_find("gpt_oss", NULL);
    md.hidden_size = hidden;
    md.intermediate_size = inter;
    md.moe_intermediate_size = inter;
    return md;
}

TEST(cpu_int4_defaults)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(VALIDATE(&o, &e, "-i", "x", "-o", "y", "-p", "int4", "-e", "cpu"), 0);
    CHECK_EQ(o.io_dtype, ONNX_FLOAT);
    CHECK_EQ(o.int4_block_size, 32);
    CHECK_EQ(o.int4_accuracy_level, 4);
    CHECK_EQ(o.moe_quant_type, MOE_QUANT_INT4);
    CHECK_EQ(o.qmoe_weights_prepacked, 0);
    build_args a = {0};
    model_desc md = gpt_oss_dims(256, 256);
    CHECK_EQ(options_resolve(&a, &md, &o, &e), 0);
    CHECK_EQ(o.qmoe_block_size, 32);
}

TEST(cuda_int4_defaults_prepacked_largest_block)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(VALIDATE(&o, &e, "-i", "x", "-o", "y", "-p", "int4", "-e", "cuda"), 0);
    CHECK_EQ(o.io_dtype, ONNX_FLOAT16);
    CHECK_EQ(o.int4_accuracy_level, 0);
    CHECK_EQ(o.qmoe_weights_prepacked, 1);
    build_args a = {0};
    model_desc md = gpt_oss_dims(2880, 2880); /* not a multiple of 128 */
    CHECK_EQ(options_resolve(&a, &md, &o, &e), 0);
    CHECK_EQ(o.qmoe_block_size, 64);
    md = gpt_oss_dims(2048, 768);
    o.qmoe_block_size = 0;
    CHECK_EQ(options_resolve(&a, &md, &o, &e), 0);
    CHECK_EQ(o.qmoe_block_size, 128);
}

TEST(cuda_bf16_and_raw_layout)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(VALIDATE(&o, &e, "-i", "x", "-o", "y", "-p", "int4", "-e", "cuda", "--extra_options",
                      "use_cuda_bf16=true", "qmoe_weights_prepacked=0", "moe_quant_type=int8"), 0);
    CHECK_EQ(o.io_dtype, ONNX_BFLOAT16);
    CHECK_EQ(o.qmoe_weights_prepacked, 0);
    CHECK_EQ(o.moe_quant_type, MOE_QUANT_INT8);
}

TEST(mxfp4_aliases_and_block)
{
    export_opts o;
    m2o_err e = {{0}};
    CHECK_EQ(VALIDATE(&o, &e, "-i", "x", "-o", "y", "-p", "int4", "-e", "cuda", "--extra_options",
                      "use_fp4_moe=1"), 0);
    CHECK_EQ(o.moe_quant_type, MOE_QUANT_MXFP4);
    CHECK_EQ(o.qmoe_block_size, 32);
    CHECK_EQ(o.qmoe_weights_prepacked, 0);
    CHECK_EQ(VALIDATE(&o, &e, "-i", "x", "-o", "y", "-p", "int4", "-e", "cuda", "--extra_options",
                      "use_8bits_moe=true"), 0);
    CHECK_EQ(o.moe_quant_type, MOE_QUANT_INT8);
    /* use_fp4_moe=false must mean off (the reference builder turned it on). */
    CHECK_EQ(VALIDATE(&o, &e, "-i", "x", "-o", "y", "-p", "int4", "-e", "cuda", "--extra_options",
                      "use_fp4_moe=false"), 0);
    CHECK_EQ(o.moe_quant_type, MOE_QUANT_INT4);
}

/* Each bad input: rc -1 and a message containing the named fragments. */
typedef struct bad_case { const char *argv[16]; const char *expect1, *expect2; } bad_case;

static const bad_case BAD[] = {
    {{"-i", "x", "-o", "y", "-p", "int3", "-e", "cpu"}, "-p/--precision 'int3'", "fp32, fp16, bf16 or int4"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "rocm"}, "execution_provider 'rocm'", "cpu or cuda"},
    {{"-i", "x", "-o", "y", "-e", "cpu"}, "missing -p/--precision", "int4"},
    {{"-i", "x", "-p", "int4", "-e", "cpu"}, "missing -o/--output", ""},
    {{"-o", "y", "-p", "int4", "-e", "cpu"}, "missing -i/--input", ""},
    {{"-i", "x", "-o", "y", "-p", "int4"}, "missing -e", "cpu, cuda"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--bogus"}, "unknown argument '--bogus'", ""},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "use_fp4_moe=yes"}, "use_fp4_moe=yes", "true, false, 1 or 0"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "frobnicate=1"}, "unknown extra option 'frobnicate'", "qmoe_block_size"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "int4_block_size=48"}, "int4_block_size=48", "16, 32, 64, 128, 256"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "int4_accuracy_level=5"}, "int4_accuracy_level=5", "0, 1, 2, 3, 4"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "moe_quant_type=fp8"}, "moe_quant_type=fp8", "int4, int8, uint4, uint8, mxfp4"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "moe_quant_type=mxfp4"}, "mxfp4", "no fp4 kernel"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cuda", "--extra_options", "use_fp4_moe=true", "use_8bits_moe=true"}, "conflict", "use_8bits_moe"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cuda", "--extra_options", "moe_quant_type=int8", "use_fp4_moe=true"}, "contradicts", "moe_quant_type"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "qmoe_weights_prepacked=1"}, "qmoe_weights_prepacked=1 with -e cpu", "raw layout"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cuda", "--extra_options", "qmoe_weights_prepacked=2"}, "qmoe_weights_prepacked=2", "-1"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cuda", "--extra_options", "qmoe_block_size=16"}, "qmoe_block_size=16 with -e cuda", "32, 64, 128"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "qmoe_block_size=256"}, "qmoe_block_size=256 with -e cpu", "16, 32, 64, 128"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cuda", "--extra_options", "use_fp4_moe=1", "qmoe_block_size=64"}, "qmoe_block_size=64", "always 32"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cuda", "--extra_options", "use_fp4_moe=1", "qmoe_weights_prepacked=1"}, "qmoe_weights_prepacked", "fp4 layout"},
    {{"-i", "x", "-o", "y", "-p", "fp16", "-e", "cuda", "--extra_options", "moe_quant_type=int8"}, "need -p int4", ""},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "use_cuda_bf16=true"}, "use_cuda_bf16", "-e cuda"},
    {{"-i", "x", "-o", "y", "-p", "bf16", "-e", "cpu"}, "-p bf16 with -e cpu", ""},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "qmoe_block_size=32", "qmoe_block_size=64"}, "given twice", ""},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "noequals"}, "not KEY=VALUE", ""},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options"}, "--extra_options needs", ""},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--threads", "many"}, "--threads 'many'", ""},
    {{"-i"}, "option -i needs a value", ""},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options", "exclude_embeds=true"}, "exclude_embeds=true", "not supported"},
    {{"-i", "x", "-o", "y", "-p", "fp32", "-e", "cpu", "--extra_options", "qmoe_quantize_bias=1"}, "qmoe_quantize_bias", "need -p int4"},
    {{"-i", "x", "-o", "y", "-p", "int4", "-e", "cuda", "--extra_options", "moe_quant_type=mxfp4", "qmoe_quantize_bias=1"}, "qmoe_quantize_bias", "not mxfp4"},
};

TEST(bad_options_are_named)
{
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        int argc = 0;
        while (argc < 16 && BAD[i].argv[argc]) argc++;
        export_opts o;
        m2o_err e = {{0}};
        int rc = validate(&o, &e, argc, BAD[i].argv);
        CHECK_MSG(rc == -1, "case %zu (%s) was accepted", i, BAD[i].expect1);
        CHECK_STR_CONTAINS(e.msg, BAD[i].expect1);
        CHECK_STR_CONTAINS(e.msg, BAD[i].expect2);
        CHECK_MSG(!strchr(e.msg, '\n'), "case %zu: message spans lines", i);
    }
}

TEST(dims_not_divisible_are_errors)
{
    export_opts o;
    m2o_err e = {{0}};
    build_args a = {0};
    CHECK_EQ(VALIDATE(&o, &e, "-i", "x", "-o", "y", "-p", "int4", "-e", "cpu", "--extra_options",
                      "qmoe_block_size=128"), 0);
    model_desc md = gpt_oss_dims(2880, 2880);
    CHECK_EQ(options_resolve(&a, &md, &o, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "qmoe_block_size=128 does not divide hidden_size 2880");
    CHECK_EQ(VALIDATE(&o, &e, "-i", "x", "-o", "y", "-p", "int4", "-e", "cuda"), 0);
    md = gpt_oss_dims(2880, 2848); /* 2848 is not a multiple of 64 */
    CHECK_EQ(options_resolve(&a, &md, &o, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "multiples of 64");
}
