/* Minimal test helpers: CHECK records a failure and continues; tests exit 1 on failure,
 * 77 when skipped (CTest SKIP_RETURN_CODE). */
#ifndef PG_TEST_UTIL_H
#define PG_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>

static int g_test_failures __attribute__((unused)); /* unused where a whole test is compiled out */

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            g_test_failures++;                                             \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
        }                                                                  \
    } while (0)

#define TEST_SKIP(...)                               \
    do {                                             \
        fprintf(stderr, "SKIP: " __VA_ARGS__);       \
        fputc('\n', stderr);                         \
        exit(77);                                    \
    } while (0)

#define TEST_DONE()                                                   \
    do {                                                              \
        if (g_test_failures) {                                        \
            fprintf(stderr, "%d check(s) failed\n", g_test_failures); \
            return 1;                                                 \
        }                                                             \
        printf("ok\n");                                               \
        return 0;                                                     \
    } while (0)

/* ../shared (or $PAGODA_SHARED); NULL if absent. */
static inline const char *test_shared_dir(void) {
    const char *s = getenv("PAGODA_SHARED");
    if (!s) s = "../shared";
    FILE *f;
    char p[4096];
    snprintf(p, sizeof p, "%s/DESIGN.md", s);
    if (!(f = fopen(p, "r"))) return NULL;
    fclose(f);
    return s;
}

/* Small deterministic RNG for tests (splitmix64). */
static inline unsigned long long test_rand_u64(unsigned long long *s) {
    unsigned long long z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static inline float test_rand_f(unsigned long long *s) { /* uniform [-1, 1) */
    return (float)((test_rand_u64(s) >> 40) * (1.0 / 8388608.0) - 1.0);
}

#endif
