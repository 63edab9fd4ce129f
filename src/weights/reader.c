#include "weights/reader.h"

#include <string.h>

#include "quant/quant.h"

int tensor_read_f32(const st_tensor *t, int64_t first, int64_t count, float *out, m2o_err *err)
{
    if (first < 0 || count < 0 || first + count > t->numel)
        return m2o_fail(err, "tensor %s: elements [%lld, %lld) out of range (numel %lld)",
                        t->name, (long long)first, (long long)(first + count),
                        (long long)t->numel);
    const uint8_t *p = t->data + (size_t)first * st_dtype_size(t->dtype);
    /* The conversion kernels take aligned 16-bit arrays; a tensor at an odd offset (legal in
     * safetensors) goes through the reader's own element-wise path. */
    switch (t->dtype) {
    case ST_BF16:
        if (((uintptr_t)p & 1) == 0) {
            convert_bf16_to_f32((const uint16_t *)(const void *)p, out, (size_t)count);
            return 0;
        }
        break;
    case ST_F16:
        if (((uintptr_t)p & 1) == 0) {
            convert_f16_to_f32((const uint16_t *)(const void *)p, out, (size_t)count);
            return 0;
        }
        break;
    case ST_F32:
        memcpy(out, p, (size_t)count * sizeof(float));
        return 0;
    default:
        return m2o_fail(err, "tensor %s (%s): expected a BF16, F16 or F32 tensor", t->name,
                        st_dtype_name(t->dtype));
    }
    return st_read_f32(t, first, count, out, err);
}

int require_float(const st_tensor *t, m2o_err *err)
{
    if (t->dtype == ST_BF16 || t->dtype == ST_F16 || t->dtype == ST_F32)
        return 0;
    return m2o_fail(err, "%s: tensor '%s' is %s, but it holds weights read as floating point "
                         "(BF16, F16 or F32) — the checkpoint is corrupt or not of this "
                         "architecture; re-download it",
                    st_file_path(t->file), t->name, st_dtype_name(t->dtype));
}

void wt_read_ahead(const st_tensor *t, size_t offset, size_t len)
{
    st_prefetch(t, offset, len);
}

void wt_release(const st_tensor *t, size_t offset, size_t len)
{
    st_release(t, offset, len);
}

void wt_release_elems(const st_tensor *t, int64_t first, int64_t count)
{
    size_t es = st_dtype_size(t->dtype);
    st_release(t, (size_t)first * es, (size_t)count * es);
}

void wt_reader_init(wt_reader *r)
{
    memset(r, 0, sizeof *r);
}

void wt_reader_add(wt_reader *r, const st_tensor *t, size_t base, size_t unit_bytes)
{
    if (r->n >= WT_READER_STREAMS)
        return; /* callers add at most two: codes + scales or gate + up */
    r->t[r->n] = t;
    r->base[r->n] = base;
    r->unit[r->n] = unit_bytes;
    r->released[r->n] = base;
    r->n++;
}

void wt_reader_done(wt_reader *r, int64_t units_done)
{
    for (int i = 0; i < r->n; i++)
        st_release_behind(r->t[i], &r->released[i], r->base[i] + (size_t)units_done * r->unit[i]);
}
