/* libFuzzer harness: config.json text, optionally followed by a NUL byte and
 * generation_config.json text, through config_parse. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arch/model_desc.h"

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 2);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = 0;
    size_t first = strlen(buf);
    const char *gen = first < size ? buf + first + 1 : NULL;
    model_desc d;
    m2o_err err;
    if (config_parse(buf, gen, "fuzz/config.json", &d, &err) == 0) {
        /* what every accepted description guarantees to its users */
        REQUIRE(d.num_layers >= 1 && d.num_layers <= MD_MAX_LAYERS);
        REQUIRE(d.hidden_size > 0 && d.num_heads > 0 && d.num_kv_heads > 0 && d.head_dim > 0);
        REQUIRE(d.num_heads % d.num_kv_heads == 0);
        REQUIRE(d.num_experts > 0 && d.top_k >= 1 && d.top_k <= d.num_experts);
        REQUIRE(d.n_eos >= 0 && d.n_eos <= MD_MAX_EOS);
        REQUIRE(d.partial_rotary_factor > 0 && d.partial_rotary_factor <= 1 && d.rope_theta > 0);
        for (int i = 0; i < d.num_layers; i++)
            REQUIRE(d.layer_type[i] != LAYER_SLIDING_ATTENTION || d.sliding_window > 0);
        REQUIRE(strlen(d.prefix) > 0 && strlen(d.model_type) > 0);
    } else {
        REQUIRE(err.msg[0]);
    }
    free(buf);
    return 0;
}
