/* safetensors tensor data: values converted to float32, finiteness, and the page-cache hints
 * (prefetch ahead, release behind) that keep resident memory bounded while streaming. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/st_internal.h"
#include "common/half.h"


int st_read_f32(const st_tensor *t, int64_t first, int64_t count, float *out, m2o_err *err)
{
    if (first < 0 || count < 0 || first > t->numel || count > t->numel - first)
        return m2o_fail(err, "%s: tensor '%s': elements [%lld, %lld) are outside its %lld elements",
                        st_file_path(t->file), t->name, (long long)first, (long long)first + count,
                        (long long)t->numel);
    size_t es = st_dtype_size(t->dtype);
    const uint8_t *p = t->data + (size_t)first * es;
    switch (t->dtype) {
    case ST_BF16:
        for (int64_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = bf16_to_f32(h);
        }
        return 0;
    case ST_F16:
        for (int64_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = f16_to_f32(h);
        }
        return 0;
    case ST_F32:
        if (count)
            memcpy(out, p, (size_t)count * 4);
        return 0;
    default:
        return m2o_fail(err, "%s: tensor '%s' is %s, not a float type (BF16, F16, F32) — this "
                        "checkpoint layout is not supported here", st_file_path(t->file), t->name,
                        st_dtype_name(t->dtype));
    }
}

bool st_all_finite(const st_tensor *t, int64_t *bad_index)
{
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        bool bad;
        if (t->dtype == ST_BF16 || t->dtype == ST_F16) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint16_t expmask = t->dtype == ST_BF16 ? 0x7f80 : 0x7c00;
            bad = (h & expmask) == expmask;
        } else if (t->dtype == ST_F32) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            bad = (u & 0x7f800000u) == 0x7f800000u;
        } else if (t->dtype == ST_F64) {
            uint64_t u;
            memcpy(&u, p + 8 * i, 8);
            bad = (u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
        } else {
            return true;
        }
        if (bad) {
            if (bad_index)
                *bad_index = i;
            return false;
        }
    }
    return true;
}

/* Releases happen in whole windows of the file, aligned in file offsets. A page fault on a file
 * map maps more than the page: the cached pages around it ("fault-around", 64 KiB by default)
 * and, with large page-cache folios (ext4, XFS, tmpfs on recent kernels), the whole folio, up
 * to 2 MiB, naturally aligned in the file. So the first read of a range can map the tail of the
 * range before it, which may already have been released; whoever finishes last must release
 * the whole shared window. A page still being read by a neighbour is simply faulted in again
 * (the map is read-only and never written). Rounding inward instead would leave boundary pages
 * resident for good and let resident memory grow with the model. */
#define ST_RELEASE_WINDOW ((size_t)2 << 20)

static void release_file_range(const st_file *f, size_t a, size_t b)
{
    a &= ~(ST_RELEASE_WINDOW - 1);
    if (b > f->image_len)
        b = f->image_len;
    if (b > a)
        madvise((void *)(f->image + a), b - a, MADV_DONTNEED);
}

void st_release(const st_tensor *t, size_t offset, size_t len)
{
    /* Only our own read-only file map: MADV_DONTNEED on it drops clean page-cache pages (they are
     * re-read if touched again). On a caller's heap buffer it would zero memory, so never there. */
    if (!t || !t->file || !t->file->mapped || offset >= t->nbytes)
        return;
    if (len > t->nbytes - offset)
        len = t->nbytes - offset;
    size_t start = (size_t)(t->data - t->file->image) + offset;
    size_t end = (start + len + ST_RELEASE_WINDOW - 1) & ~(ST_RELEASE_WINDOW - 1);
    release_file_range(t->file, start, end);
}

void st_prefetch(const st_tensor *t, size_t offset, size_t len)
{
    if (!t || !t->file || !t->file->mapped || offset >= t->nbytes || !len)
        return;
    if (len > t->nbytes - offset)
        len = t->nbytes - offset;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)(t->data + offset) & ~(page - 1);
    uintptr_t b = (uintptr_t)(t->data + offset + len);
    madvise((void *)a, b - a, MADV_WILLNEED);
}

void st_release_behind(const st_tensor *t, size_t *released, size_t pos)
{
    if (!t || !t->file || !t->file->mapped)
        return;
    if (pos > t->nbytes)
        pos = t->nbytes;
    size_t base = (size_t)(t->data - t->file->image);
    size_t end = (base + pos) & ~(ST_RELEASE_WINDOW - 1); /* the window holding pos stays */
    if (end <= base + *released)
        return;
    release_file_range(t->file, base + *released, end);
    *released = end - base;
}
