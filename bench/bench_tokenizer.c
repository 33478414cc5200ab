/* Tokenizer throughput: encodes a few MB of mixed English and C source (the shared DESIGN.md,
 * tokenizer test inputs, the repo's own sources) with each shared vocabulary, single thread.
 * Usage: bench_tokenizer [SHARED_DIR] [MB (0: the sources once)]   Prints MB/s and tokens/s per vocabulary. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format/gguf.h"
#include "tokenizer/tokenizer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* thread CPU time: steadier than wall time on a shared machine */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static size_t append_file(char *buf, size_t at, size_t cap, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return at;
    at += fread(buf + at, 1, cap - at, f);
    fclose(f);
    return at;
}

static size_t append_dir(char *buf, size_t at, size_t cap, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return at;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d)) && at < cap) {
        size_t n = strlen(e->d_name);
        if (n < 3 || (strcmp(e->d_name + n - 2, ".c") && strcmp(e->d_name + n - 2, ".h") &&
                      strcmp(e->d_name + n - 3, ".md") && strcmp(e->d_name + n - 4, ".inp")))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        at = append_file(buf, at, cap, p);
    }
    closedir(d);
    return at;
}

int main(int argc, char **argv) {
    const char *sh = argc > 1 ? argv[1] : getenv("PAGODA_SHARED");
    if (!sh) sh = "../shared";
    size_t mb = argc > 2 ? (size_t)atoi(argv[2]) : 4;
    size_t scap = 8 << 20, cap = mb << 20;
    char *src = malloc(scap), *text = malloc(cap > scap ? cap : scap);
    size_t n = 0;
    char p[4096];
    snprintf(p, sizeof p, "%s/DESIGN.md", sh);
    n = append_file(src, n, scap, p);
    snprintf(p, sizeof p, "%s/fixtures/tokenizers", sh);
    n = append_dir(src, n, scap, p);
    const char *dirs[] = {"src/core", "src/format", "src/tokenizer", "src/model", "src/kernels/ref", "src/engine",
                          "tests/unit", "bench"};
    /* the repo root, or its parent when run from a build folder */
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        size_t before = n;
        n = append_dir(src, n, scap, dirs[i]);
        if (n == before) {
            snprintf(p, sizeof p, "../%s", dirs[i]);
            n = append_dir(src, n, scap, p);
        }
    }
    if (n == 0) {
        fprintf(stderr, "no input text found\n");
        return 1;
    }
    if (mb == 0) cap = n; /* one copy: no repeated words, so the word cache helps less */
    for (size_t at = 0; at < cap; at += n) memcpy(text + at, src, at + n <= cap ? n : cap - at);
    printf("input: %.1f MB (%zu distinct bytes repeated)\n", cap / 1e6, n);
    const char *vocabs[] = {"gpt-2", "starcoder", "llama-spm"};
    for (size_t k = 0; k < sizeof vocabs / sizeof *vocabs; k++) {
        snprintf(p, sizeof p, "%s/fixtures/tokenizers/ggml-vocab-%s.gguf", sh, vocabs[k]);
        gguf_file *g;
        pg_tokenizer *t;
        if (gguf_open(p, &g) || tok_load_gguf(g, &t)) {
            fprintf(stderr, "%s: %s\n", p, pagoda_last_error());
            continue;
        }
        int32_t *ids;
        size_t ni;
        double best = 1e9, best_cpu = 1e9;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = now_s(), c0 = cpu_s();
            if (tok_encode(t, text, cap, false, false, &ids, &ni)) return 1;
            double dt = now_s() - t0, dc = cpu_s() - c0;
            if (dt < best) best = dt;
            if (dc < best_cpu) best_cpu = dc;
            free(ids);
        }
        char *out;
        size_t ol;
        tok_encode(t, text, cap, false, false, &ids, &ni);
        double t0 = now_s();
        tok_decode(t, ids, ni, false, &out, &ol);
        double dd = now_s() - t0;
        printf("%-10s encode %6.1f MB/s wall, %6.1f MB/s cpu (%.2f M tokens/s, %zu tokens)  decode %6.1f MB/s\n",
               vocabs[k], cap / 1e6 / best, cap / 1e6 / best_cpu, ni / 1e6 / best_cpu, ni, ol / 1e6 / dd);
        free(out);
        free(ids);
        tok_free(t);
        gguf_close(g);
    }
    free(src);
    free(text);
    return 0;
}
