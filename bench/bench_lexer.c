/* Grammar lexer (src/grammar/lexer.h) micro benchmark, single thread:
 *  1. lx_next throughput once the transitions are cached (a table lookup per byte): one terminal
 *     (a JSON string body) over 1 MB of text, and a JSON-like multi-terminal lexer that restarts at
 *     each lexeme boundary;
 *  2. compile time (lx_new + lx_start) of every `pattern` in the MaskBench schemas, p50/p99/max,
 *     and the time to run the first 64 bytes through a fresh lexer (DFA states built on demand).
 * Usage: bench_lexer [SHARED_DIR]   (default ../shared) */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grammar/lexer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 42;
static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void bench_throughput(void) {
    enum { N = 1 << 20 };
    uint8_t *text = malloc(N);
    const char *alpha = "abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .,:;-_ ";
    size_t na = strlen(alpha);
    for (size_t i = 0; i < N; i++) text[i] = (uint8_t)alpha[rnd() % na];
    char err[256];

    /* one terminal: a JSON string body */
    const char *p1 = "([^\"\\\\\\x00-\\x1f]|\\\\([\"\\\\/bfnrt]|u[0-9a-fA-F]{4}))*";
    size_t l1 = strlen(p1);
    lx_lexer *lx = lx_new(1, &p1, &l1, NULL, err, sizeof err);
    if (!lx) {
        fprintf(stderr, "lx_new: %s\n", err);
        exit(1);
    }
    uint64_t all = 1;
    lx_state s0 = lx_start(lx, &all), s = s0;
    for (size_t i = 0; i < N; i++) s = lx_next(lx, s, text[i]); /* warm: build the states */
    int reps = 50;
    double t0 = now_s();
    uint32_t sink = 0;
    for (int r = 0; r < reps; r++) {
        s = s0;
        for (size_t i = 0; i < N; i++) s = lx_next(lx, s, text[i]);
        sink += s;
    }
    double dt = now_s() - t0;
    printf("lx_next, 1 terminal (JSON string body), cached: %.2f ns/byte (%.0f MB/s)%s\n", dt * 1e9 / ((double)N * reps),
           (double)N * reps / dt / 1e6, sink == 0xFFFFFFFF ? " " : "");
    lx_free(lx);

    /* several terminals: identifier, number, whitespace, punctuation, a keyword; restart at DEAD */
    const char *pats[6] = {"[a-zA-Z_][a-zA-Z0-9_]*", "-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?", "[ \\t\\n\\r]+",
                           "[.,:;]", "-", "true|false|null"};
    size_t lens[6];
    for (int i = 0; i < 6; i++) lens[i] = strlen(pats[i]);
    lx = lx_new(6, pats, lens, NULL, err, sizeof err);
    if (!lx) {
        fprintf(stderr, "lx_new: %s\n", err);
        exit(1);
    }
    uint64_t six = 63;
    s0 = lx_start(lx, &six);
    size_t lexemes = 0;
    for (int r = 0; r < reps + 1; r++) {
        if (r == 1) t0 = now_s(), lexemes = 0;
        s = s0;
        for (size_t i = 0; i < N; i++) {
            lx_state nx = lx_next(lx, s, text[i]);
            if (nx == LX_DEAD) { /* boundary: the byte starts the next lexeme */
                lexemes++;
                nx = lx_next(lx, s0, text[i]);
            }
            s = nx;
        }
    }
    dt = now_s() - t0;
    printf("lx_next, 6 terminals with restarts, cached: %.2f ns/byte (%.1f M lexemes/s)\n",
           dt * 1e9 / ((double)N * reps), (double)lexemes / dt / 1e6);
    lx_free(lx);
    free(text);
}

static void collect(json_t *v, char ***out, size_t *n, size_t *cap) {
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            if (!strcmp(k, "pattern") && json_is_string(x)) {
                if (*n == *cap) *cap = *cap ? *cap * 2 : 256, *out = realloc(*out, *cap * sizeof **out);
                (*out)[(*n)++] = strdup(json_string_value(x));
            }
            collect(x, out, n, cap);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) collect(x, out, n, cap);
    }
}

static void bench_compile(const char *shared) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "zcat '%s/data/maskbench/maskbench-visible.jsonl.gz'", shared);
    FILE *f = popen(cmd, "r");
    if (!f) return;
    char **pats = NULL;
    size_t n = 0, cap = 0, lcap = 0;
    char *line = NULL;
    while (getline(&line, &lcap, f) > 0) {
        json_t *rec = json_loads(line, 0, NULL);
        if (rec) collect(json_object_get(rec, "schema"), &pats, &n, &cap);
        json_decref(rec);
    }
    free(line);
    pclose(f);
    if (!n) {
        printf("no MaskBench patterns under %s (skipping the compile benchmark)\n", shared);
        return;
    }
    double *tc = malloc(n * sizeof *tc), *tr = malloc(n * sizeof *tr);
    size_t ok = 0, slowest = 0;
    double t_slowest = 0;
    char err[256];
    uint8_t probe[64];
    for (size_t i = 0; i < 64; i++) probe[i] = (uint8_t)"abc-123_XYZ.def@ghi:/0x9z"[i % 25];
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(pats[i]);
        const char *p = pats[i];
        double t0 = now_s();
        lx_lexer *lx = lx_new(1, &p, &len, NULL, err, sizeof err);
        uint64_t all = 1;
        lx_state s = lx ? lx_start(lx, &all) : 0;
        double t1 = now_s();
        if (!lx) continue;
        for (size_t k = 0; k < 64 && s != LX_DEAD; k++) s = lx_next(lx, s, probe[k]);
        double t2 = now_s();
        if (t1 - t0 > t_slowest) t_slowest = t1 - t0, slowest = i;
        tc[ok] = t1 - t0;
        tr[ok++] = t2 - t1;
        lx_free(lx);
    }
    qsort(tc, ok, sizeof *tc, cmp_d);
    qsort(tr, ok, sizeof *tr, cmp_d);
    printf("MaskBench patterns: %zu (%zu compile)\n", n, ok);
    printf("  lx_new + lx_start: p50 %.1f us, p99 %.1f us, max %.1f us\n", tc[ok / 2] * 1e6, tc[ok * 99 / 100] * 1e6,
           tc[ok - 1] * 1e6);
    printf("  first 64 bytes on a fresh lexer (states built): p50 %.1f us, p99 %.1f us, max %.1f us\n",
           tr[ok / 2] * 1e6, tr[ok * 99 / 100] * 1e6, tr[ok - 1] * 1e6);
    printf("  slowest to compile: %.80s%s\n", pats[slowest], strlen(pats[slowest]) > 80 ? "..." : "");
    for (size_t i = 0; i < n; i++) free(pats[i]);
    free(pats);
    free(tc);
    free(tr);
}

int main(int argc, char **argv) {
    const char *shared = argc > 1 ? argv[1] : "../shared";
    bench_throughput();
    bench_compile(shared);
    return 0;
}
