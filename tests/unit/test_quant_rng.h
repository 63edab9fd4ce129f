/* Shared by the quant tests: seeded random numbers (splitmix64; Gaussian by Box-Muller), so every
 * run sees the same data, and a byte-comparison check. Include after test.h. */
#ifndef M2O_TEST_QUANT_RNG_H
#define M2O_TEST_QUANT_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct rng {
    uint64_t s;
} rng;

static inline uint64_t rng_u64(rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform integer in [0, n). */
static inline int64_t rng_below(rng *r, int64_t n)
{
    return (int64_t)(rng_u64(r) % (uint64_t)n);
}

/* Uniform in [0, 1). */
static inline double rng_unit(rng *r)
{
    return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

static inline float rng_gauss(rng *r)
{
    double u = rng_unit(r), v = rng_unit(r);
    if (u < 1e-300)
        u = 1e-300;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* Byte equality naming the first differing offset. (test.h's CHECK_BYTES_EQ reuses the name
 * n_ inside FAIL_AT, which -Wshadow rejects, so the quant tests use this one.) */
#define CHECK_SAME_BYTES(a, b, len)                                                          \
    do {                                                                                    \
        const unsigned char *qa_ = (const unsigned char *)(a), *qb_ = (const unsigned char *)(b); \
        size_t qlen_ = (len);                                                               \
        for (size_t qi_ = 0; qi_ < qlen_; qi_++)                                            \
            if (qa_[qi_] != qb_[qi_])                                                       \
                FAIL_AT("%s and %s differ at byte %zu of %zu: 0x%02x vs 0x%02x", #a, #b, qi_, \
                        qlen_, qa_[qi_], qb_[qi_]);                                         \
    } while (0)

#endif
