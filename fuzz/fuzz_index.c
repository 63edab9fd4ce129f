/* libFuzzer harness: model.safetensors.index.json text through st_index_parse. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/safetensors.h"

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_index *ix = NULL;
    m2o_err err;
    if (st_index_parse((const char *)data, size, "fuzz/model.safetensors.index.json", &ix, &err)) {
        REQUIRE(ix == NULL && err.msg[0]);
        return 0;
    }
    REQUIRE(ix->n_entries > 0 && ix->n_shards > 0 && ix->n_shards <= ix->n_entries);
    for (size_t i = 0; i < ix->n_shards; i++) {
        REQUIRE(ix->shards[i][0] && !strchr(ix->shards[i], '/'));
        if (i)
            REQUIRE(strcmp(ix->shards[i - 1], ix->shards[i]) < 0);
    }
    for (size_t i = 0; i < ix->n_entries; i++) {
        REQUIRE(ix->entries[i].shard < ix->n_shards);
        REQUIRE(st_index_find(ix, ix->entries[i].tensor) == &ix->entries[i]);
        if (i)
            REQUIRE(strcmp(ix->entries[i - 1].tensor, ix->entries[i].tensor) < 0);
    }
    st_index_free(ix);
    return 0;
}
