/* libFuzzer harness: a whole safetensors file image (8-byte length, header, data) through
 * st_file_parse, then every accessor on what it accepted. Invariants that must hold for any
 * accepted file are checked and abort on violation, so the fuzzer reports them as crashes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/safetensors.h"

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_file *f = NULL;
    m2o_err err;
    if (st_file_parse(data, size, "fuzz.safetensors", &f, &err)) {
        REQUIRE(f == NULL && memchr(err.msg, 0, sizeof err.msg) && err.msg[0]);
        return 0;
    }
    size_t covered = 0;
    for (size_t i = 0; i < st_file_count(f); i++) {
        const st_tensor *t = st_file_tensor(f, i);
        /* data inside the image, sizes consistent, names sorted and found */
        REQUIRE(t->data >= data && t->data + t->nbytes <= data + size);
        REQUIRE((size_t)t->numel * st_dtype_size(t->dtype) == t->nbytes);
        REQUIRE(st_file_find(f, t->name) == t);
        if (i)
            REQUIRE(strcmp(st_file_tensor(f, i - 1)->name, t->name) < 0);
        covered += t->nbytes;
        float v[8];
        int64_t n = t->numel < 8 ? t->numel : 8;
        int rc = st_read_f32(t, t->numel - n, n, v, &err);
        REQUIRE(rc == 0 || (t->dtype != ST_BF16 && t->dtype != ST_F16 && t->dtype != ST_F32));
        int64_t bad = -1;
        if (!st_all_finite(t, &bad))
            REQUIRE(bad >= 0 && bad < t->numel);
        st_release(t, 0, t->nbytes); /* heap image: must be a no-op */
    }
    uint64_t hlen;
    memcpy(&hlen, data, 8);
    REQUIRE(covered == size - 8 - hlen); /* tensors tile the data buffer */
    st_file_metadata(f, "format");
    st_file_close(f);
    return 0;
}
