/* A tiny test harness: each tests/unit/test_*.c becomes one binary; TEST() bodies register
 * themselves, main() runs them all and prints "ok"/"FAIL" per test and a final
 * "N passed, N failed" line that tests/run.sh adds up. Checks stop the current test only. */
#ifndef M2O_TEST_H
#define M2O_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*test_fn)(void);
struct test_case { const char *name; test_fn fn; };

static struct test_case g_tests[512];
static int g_ntests;
static int g_failed_now;
static char g_fail_msg[2048];

#define TEST(name)                                                                          \
    static void name(void);                                                                 \
    __attribute__((constructor)) static void register_##name(void)                          \
    {                                                                                       \
        if (g_ntests < (int)(sizeof g_tests / sizeof g_tests[0]))                           \
            g_tests[g_ntests++] = (struct test_case){#name, name};                          \
    }                                                                                       \
    static void name(void)

#define FAIL_AT(...)                                                                        \
    do {                                                                                    \
        if (!g_failed_now) {                                                                \
            int fail_n_ = snprintf(g_fail_msg, sizeof g_fail_msg, "%s:%d: ", __FILE__, __LINE__); \
            snprintf(g_fail_msg + fail_n_, sizeof g_fail_msg - (size_t)fail_n_, __VA_ARGS__);         \
        }                                                                                   \
        g_failed_now = 1;                                                                   \
        return;                                                                             \
    } while (0)

#define CHECK(cond)                                                                         \
    do { if (!(cond)) FAIL_AT("check failed: %s", #cond); } while (0)
#define CHECK_MSG(cond, ...)                                                                \
    do { if (!(cond)) FAIL_AT(__VA_ARGS__); } while (0)
#define CHECK_EQ(a, b)                                                                      \
    do {                                                                                    \
        long long a_ = (long long)(a), b_ = (long long)(b);                                 \
        if (a_ != b_) FAIL_AT("%s == %lld, expected %s == %lld", #a, a_, #b, b_);           \
    } while (0)
#define CHECK_NEAR(a, b, tol)                                                               \
    do {                                                                                    \
        double a_ = (double)(a), b_ = (double)(b);                                          \
        if (!(fabs(a_ - b_) <= (tol))) FAIL_AT("%s = %.9g, expected %.9g (tol %g)", #a, a_, b_, (double)(tol)); \
    } while (0)
#define CHECK_STR_CONTAINS(hay, needle)                                                     \
    do {                                                                                    \
        const char *h_ = (hay);                                                             \
        if (!h_ || !strstr(h_, (needle))) FAIL_AT("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", (needle)); \
    } while (0)
/* Byte equality with the first differing offset in the message. */
#define CHECK_BYTES_EQ(a, b, n)                                                             \
    do {                                                                                    \
        const unsigned char *a_ = (const unsigned char *)(a), *b_ = (const unsigned char *)(b); \
        size_t n_ = (n);                                                                    \
        for (size_t i_ = 0; i_ < n_; i_++)                                                  \
            if (a_[i_] != b_[i_]) FAIL_AT("%s and %s differ at byte %zu of %zu: 0x%02x vs 0x%02x", #a, #b, i_, n_, a_[i_], b_[i_]); \
    } while (0)

/* Repository-relative path of the copied fixtures (tests run from the repository root). */
static inline const char *test_fixtures_dir(void)
{
    const char *d = getenv("M2O_FIXTURES");
    return d ? d : "tests/fixtures";
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    for (int i = 0; i < g_ntests; i++) {
        if (argc > 1 && !strstr(g_tests[i].name, argv[1]))
            continue;
        g_failed_now = 0;
        g_fail_msg[0] = 0;
        g_tests[i].fn();
        if (g_failed_now) {
            failed++;
            printf("FAIL %s: %s\n", g_tests[i].name, g_fail_msg);
        } else {
            passed++;
            printf("ok   %s\n", g_tests[i].name);
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif
