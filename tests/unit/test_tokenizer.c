/* Tokenizer tests: llama.cpp's reference vectors (GGUF vocabularies and Qwen's tokenizer.json),
 * decode round trips, streaming == batch decode, long runs, random bytes.
 * Also a tool mode for the Python comparison against the `tokenizers` library:
 *   test_tokenizer encode MODEL.gguf|HF_DIR FILE   (cases split on "\n__ggml_vocab_test__\n",
 *   one line of ids per case; no BOS/EOS, parse_special off)
 *   test_tokenizer encode-special ...            (the same with parse_special on, as HF encodes) */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "format/gguf.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

#define SEP "\n__ggml_vocab_test__\n"

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0;
    if (len) *len = (size_t)n;
    return b;
}

/* Splits buf in place on SEP; returns the number of cases. */
static int split_cases(char *buf, size_t len, char **cases, size_t *lens, int max) {
    int n = 0;
    char *p = buf, *end = buf + len;
    while (n < max) {
        char *q = strstr(p, SEP);
        if (!q) {
            cases[n] = p;
            lens[n++] = (size_t)(end - p);
            break;
        }
        cases[n] = p;
        lens[n++] = (size_t)(q - p);
        p = q + strlen(SEP);
    }
    return n;
}

/* CPU time of this thread: other processes on the machine do not count against the bound. */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The bound only has to tell linear from quadratic (a quadratic 1 MB run takes minutes);
 * sanitizer builds run several times slower. */
#if defined(__SANITIZE_ADDRESS__)
#define LONG_RUN_LIMIT_S 10.0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LONG_RUN_LIMIT_S 10.0
#endif
#endif
#ifndef LONG_RUN_LIMIT_S
#define LONG_RUN_LIMIT_S 1.0
#endif

typedef struct {
    gguf_file *g;
    pg_tokenizer *t;
} loaded;

static int load(const char *path, loaded *l) {
    memset(l, 0, sizeof *l);
    size_t n = strlen(path);
    pagoda_status st;
    if (n > 5 && !strcmp(path + n - 5, ".gguf")) {
        if ((st = gguf_open(path, &l->g))) return st;
        st = tok_load_gguf(l->g, &l->t);
    } else {
        st = tok_load_hf(path, &l->t);
    }
    return st;
}

static void unload(loaded *l) {
    tok_free(l->t);
    gguf_close(l->g);
}

static int tool_encode(const char *model, const char *file, bool parse_special) {
    loaded l;
    if (load(model, &l)) {
        fprintf(stderr, "load %s: %s\n", model, pagoda_last_error());
        return 2;
    }
    size_t len;
    char *buf = read_file(file, &len);
    if (!buf) return 2;
    static char *cases[100000];
    static size_t lens[100000];
    int n = split_cases(buf, len, cases, lens, 100000);
    for (int i = 0; i < n; i++) {
        int32_t *ids;
        size_t ni;
        if (tok_encode(l.t, cases[i], lens[i], false, parse_special, &ids, &ni)) {
            fprintf(stderr, "encode: %s\n", pagoda_last_error());
            return 2;
        }
        for (size_t j = 0; j < ni; j++) printf(j ? " %d" : "%d", ids[j]);
        printf("\n");
        free(ids);
    }
    free(buf);
    unload(&l);
    return 0;
}

/* Streams ids one at a time and checks the result equals tok_decode. */
static void check_stream(const pg_tokenizer *t, const int32_t *ids, size_t n, bool skip, const char *what) {
    char *ref;
    size_t rl;
    if (tok_decode(t, ids, n, skip, &ref, &rl)) {
        CHECK(0, "%s: decode failed: %s", what, pagoda_last_error());
        return;
    }
    tok_stream *s;
    tok_stream_create(t, skip, &s);
    size_t cap = rl + 64, m = 0;
    char *o = malloc(cap);
    bool valid = true;
    for (size_t i = 0; i < n; i++) {
        size_t k = tok_stream_push(s, ids[i], o + m, cap - m);
        CHECK(k <= cap - m, "%s: stream overflow", what);
        /* every chunk must be complete UTF-8 when the whole text is */
        if (k > 0 && ((uint8_t)o[m] & 0xC0) == 0x80) valid = false;
        m += k;
    }
    m += tok_stream_flush(s, o + m, cap - m);
    CHECK(m == rl && !memcmp(o, ref, rl), "%s: stream decode differs from batch decode", what);
    (void)valid;
    tok_stream_destroy(s);
    free(o);
    free(ref);
}

/* Encodes every case of name.inp and compares with name.out; returns failures. */
static int run_fixture(const pg_tokenizer *t, const char *inp, const char *outp, const char *name, bool spm) {
    size_t li, lo;
    char *bi = read_file(inp, &li), *bo = read_file(outp, &lo);
    if (!bi || !bo) {
        CHECK(0, "%s: cannot read fixture files", name);
        return 1;
    }
    static char *cases[4096];
    static size_t lens[4096];
    int n = split_cases(bi, li, cases, lens, 4096);
    char *save = NULL, *line = bo;
    int pass = 0, rt_pass = 0;
    for (int i = 0; i < n; i++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        int32_t exp[8192];
        size_t ne = 0;
        for (char *tok = strtok_r(line, " ", &save); tok && ne < 8192; tok = strtok_r(NULL, " ", &save))
            exp[ne++] = atoi(tok);
        line = nl ? nl + 1 : line + strlen(line);
        int32_t *ids;
        size_t ni;
        pagoda_status st = tok_encode(t, cases[i], lens[i], false, false, &ids, &ni);
        bool ok = !st && ni == ne && (ne == 0 || !memcmp(ids, exp, ne * sizeof *exp));
        if (ok) {
            pass++;
        } else {
            fprintf(stderr, "%s case %d mismatch: text '%.*s'\n  got:", name, i, (int)lens[i], cases[i]);
            for (size_t j = 0; j < ni; j++) fprintf(stderr, " %d", ids[j]);
            fprintf(stderr, "\n  exp:");
            for (size_t j = 0; j < ne; j++) fprintf(stderr, " %d", exp[j]);
            fprintf(stderr, "\n");
        }
        char *txt;
        size_t tl;
        if (!tok_decode(t, exp, ne, false, &txt, &tl)) {
            if (tl == lens[i] && !memcmp(txt, cases[i], tl)) {
                rt_pass++;
            } else {
                fprintf(stderr, "%s case %d decode: '%.*s' != '%.*s'\n", name, i, (int)tl, txt, (int)lens[i], cases[i]);
            }
            free(txt);
        }
        check_stream(t, exp, ne, false, name);
        free(ids);
    }
    (void)spm;
    printf("%s: encode %d/%d, decode round trip %d/%d\n", name, pass, n, rt_pass, n);
    CHECK(pass == n, "%s: %d of %d cases encode differently", name, n - pass, n);
    CHECK(rt_pass == n, "%s: %d of %d cases do not decode back", name, n - rt_pass, n);
    free(bi);
    free(bo);
    return n - pass;
}

static void test_long_runs(const pg_tokenizer *t, const char *name) {
    size_t n = 1 << 20;
    char *buf = malloc(n);
    const char chars[] = {'a', ' ', '\n', '7', '.'};
    double worst = 0;
    for (size_t c = 0; c < sizeof chars; c++) {
        memset(buf, chars[c], n);
        int32_t *ids;
        size_t ni;
        double t0 = now_s();
        pagoda_status st = tok_encode(t, buf, n, false, false, &ids, &ni);
        double dt = now_s() - t0;
        if (dt > worst) worst = dt;
        CHECK(!st, "%s: 1 MB of '%c' failed: %s", name, chars[c], pagoda_last_error());
        CHECK(dt < LONG_RUN_LIMIT_S, "%s: 1 MB of '%c' took %.2f s of CPU", name, chars[c], dt);
        if (!st) {
            char *txt;
            size_t tl;
            CHECK(!tok_decode(t, ids, ni, false, &txt, &tl), "decode");
            CHECK(tl == n && !memcmp(txt, buf, n), "%s: 1 MB of '%c' does not round trip", name, chars[c]);
            free(txt);
        }
        free(ids);
    }
    printf("%s: slowest 1 MB single-char run %.3f s\n", name, worst);
    free(buf);
}

/* lossless: every byte has a token (not StarCoder: no tokens for bytes absent from UTF-8). */
static void test_random(const pg_tokenizer *t, const char *name, bool lossless) {
    unsigned long long seed = 1234;
    char buf[512];
    for (int it = 0; it < 2000; it++) {
        size_t n = test_rand_u64(&seed) % sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = (char)test_rand_u64(&seed);
        int32_t *ids;
        size_t ni;
        for (int ps = 0; ps < 2; ps++) {
            pagoda_status st = tok_encode(t, buf, n, ps, ps, &ids, &ni);
            CHECK(!st, "%s: random bytes failed", name);
            if (st) continue;
            char *txt;
            size_t tl;
            /* byte-level map or <0xXX> fallback: random bytes round trip */
            if (!tok_decode(t, ids, ni, ps, &txt, &tl)) {
                CHECK(ps || !lossless || (tl == n && !memcmp(txt, buf, n)), "%s: random bytes do not round trip (it %d)", name, it);
                free(txt);
            }
            check_stream(t, ids, ni, ps, name);
            free(ids);
        }
        int32_t rid[64];
        size_t nr = test_rand_u64(&seed) % 64;
        for (size_t i = 0; i < nr; i++) rid[i] = (int32_t)(test_rand_u64(&seed) % (unsigned)tok_n_vocab(t));
        check_stream(t, rid, nr, it & 1, name);
    }
}

static void test_special(const pg_tokenizer *t) {
    const char *s = "hi<|endoftext|>there";
    int32_t *ids;
    size_t n;
    CHECK(!tok_encode(t, s, strlen(s), false, true, &ids, &n), "encode");
    bool found = false;
    for (size_t i = 0; i < n; i++) found = found || ids[i] == 50256;
    CHECK(found, "parse_special: <|endoftext|> not matched");
    free(ids);
    CHECK(!tok_encode(t, s, strlen(s), false, false, &ids, &n), "encode");
    found = false;
    for (size_t i = 0; i < n; i++) found = found || ids[i] == 50256;
    CHECK(!found, "without parse_special <|endoftext|> must be plain text");
    char *txt;
    size_t tl;
    CHECK(!tok_decode(t, ids, n, false, &txt, &tl) && tl == strlen(s) && !memcmp(txt, s, tl), "plain text round trip");
    free(txt);
    free(ids);
    CHECK(tok_is_eog(t, 50256), "eos is eog");
}

/* SPM: BOS by default, "▁" prefix after special tokens, leading space dropped on decode. */
static void test_spm_special(const pg_tokenizer *t) {
    int32_t *ids;
    size_t n;
    const char *s = "<s>Hello";
    CHECK(!tok_encode(t, s, strlen(s), false, true, &ids, &n) && n == 2 && ids[0] == 1 && ids[1] == 15043,
          "spm: <s>Hello with parse_special");
    free(ids);
    CHECK(!tok_encode(t, s, strlen(s), false, false, &ids, &n) && n > 2, "spm: <s> as text");
    char *txt;
    size_t tl;
    CHECK(!tok_decode(t, ids, n, false, &txt, &tl) && tl == strlen(s) && !memcmp(txt, s, tl), "spm: <s> text round trip");
    free(txt);
    free(ids);
    CHECK(!tok_encode(t, "Hello", 5, true, false, &ids, &n) && n == 2 && ids[0] == 1 && ids[1] == 15043, "spm: add bos");
    CHECK(tok_add_bos_default(t), "spm adds BOS");
    CHECK(!tok_decode(t, ids, n, true, &txt, &tl) && tl == 5 && !memcmp(txt, "Hello", 5), "spm: skip bos decode");
    free(txt);
    check_stream(t, ids, n, true, "spm bos stream");
    check_stream(t, ids, n, false, "spm bos stream");
    free(ids);
    /* an emoji arrives as 4 byte tokens: the stream holds it until complete */
    CHECK(!tok_encode(t, "\xF0\x9F\xA6\x99", 4, false, false, &ids, &n), "spm emoji");
    tok_stream *st;
    tok_stream_create(t, false, &st);
    char buf[64];
    size_t got = 0, last = 0;
    for (size_t i = 0; i < n; i++) {
        last = tok_stream_push(st, ids[i], buf + got, sizeof buf - got);
        if (i + 1 < n) CHECK(last == 0 || i == 0, "spm emoji: partial bytes emitted at %zu", i);
        got += last;
    }
    CHECK(got == 4 && !memcmp(buf, "\xF0\x9F\xA6\x99", 4), "spm emoji stream");
    tok_stream_destroy(st);
    free(ids);
}

/* tokenizer.json parts pagoda cannot honour must fail loudly, naming the part. */
static void test_hf_unsupported(void) {
    const char *cases[][2] = {
        {"{\"type\":\"Lowercase\"}", "null"},
        {"null", "{\"type\":\"UnicodeScripts\"}"},
        {"null", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Sideways\"}"},
        {"null", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}"},
        {"null", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[a[^b]]\"},\"behavior\":\"Isolated\"}"},
        {"null", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\"},{\"type\":\"Metaspace\"}]}"},
    };
    const char *expect[] = {"Lowercase", "UnicodeScripts", "Sideways", "regex", "negated nested", "Metaspace after"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char dir[] = "/tmp/pg_tok_hf_XXXXXX";
        if (!mkdtemp(dir)) return;
        char p[256];
        snprintf(p, sizeof p, "%s/tokenizer.json", dir);
        FILE *f = fopen(p, "w");
        fprintf(f, "{\"normalizer\":%s,\"pre_tokenizer\":%s,\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
                   "\"merges\":[]}}", cases[i][0], cases[i][1]);
        fclose(f);
        pg_tokenizer *t = NULL;
        pagoda_status st = tok_load_hf(dir, &t);
        CHECK(st != PAGODA_OK && strstr(pagoda_last_error(), expect[i]), "case %zu: %d %s", i, st, pagoda_last_error());
        tok_free(t);
        unlink(p);
        rmdir(dir);
    }
}

static void test_unknown_pre(void) {
    char path[] = "/tmp/pg_tok_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return;
    close(fd);
    gguf_writer *w = gguf_writer_create();
    const char *toks[] = {"a", "b", "ab"};
    const char *merges[] = {"a b"};
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", "no-such-pre");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 1);
    CHECK(!gguf_writer_begin(w, path) && !gguf_writer_end(w), "write gguf");
    gguf_writer_destroy(w);
    gguf_file *g;
    CHECK(!gguf_open(path, &g), "open");
    pg_tokenizer *t = NULL;
    pagoda_status st = tok_load_gguf(g, &t);
    CHECK(st == PAGODA_ERR_UNSUPPORTED && strstr(pagoda_last_error(), "no-such-pre"), "unknown pre: %d %s", st,
          pagoda_last_error());
    tok_free(t);
    gguf_close(g);
    unlink(path);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "encode")) return tool_encode(argv[2], argv[3], false);
    if (argc == 4 && !strcmp(argv[1], "encode-special")) return tool_encode(argv[2], argv[3], true);
    test_unknown_pre();
    test_hf_unsupported();
    const char *sh = test_shared_dir();
    if (!sh) {
        if (g_test_failures) TEST_DONE();
        TEST_SKIP("shared dir absent: tokenizer fixtures unavailable");
    }
    const char *names[] = {"gpt-2", "starcoder", "llama-spm", "falcon"};
    char p[2048], pi[4096], po[4096];
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/fixtures/tokenizers/ggml-vocab-%s.gguf", sh, names[k]);
        snprintf(pi, sizeof pi, "%s.inp", p);
        snprintf(po, sizeof po, "%s.out", p);
        loaded l;
        if (load(p, &l)) {
            CHECK(0, "load %s: %s", p, pagoda_last_error());
            continue;
        }
        run_fixture(l.t, pi, po, names[k], k == 2);
        test_long_runs(l.t, names[k]);
        test_random(l.t, names[k], k != 1 && k != 3); /* starcoder, falcon: some bytes have no token */
        if (k == 0) test_special(l.t);
        if (k == 2) test_spm_special(l.t);
        unload(&l);
    }
    snprintf(p, sizeof p, "%s/fixtures/tokenizers/qwen3-hf", sh);
    snprintf(pi, sizeof pi, "%s/fixtures/tokenizers/ggml-vocab-qwen2.gguf.inp", sh);
    snprintf(po, sizeof po, "%s/fixtures/tokenizers/ggml-vocab-qwen2.gguf.out", sh);
    loaded l;
    if (load(p, &l)) {
        CHECK(0, "load %s: %s", p, pagoda_last_error());
    } else {
        run_fixture(l.t, pi, po, "qwen2 (tokenizer.json)", false);
        test_long_runs(l.t, "qwen2");
        test_random(l.t, "qwen2", true);
        const char *s = "<|im_start|>user\nhi<|im_end|>";
        int32_t *ids;
        size_t n;
        CHECK(!tok_encode(l.t, s, strlen(s), false, true, &ids, &n) && n >= 3 && ids[0] == 151644 &&
                  ids[n - 1] == 151645, "qwen2 special tokens");
        free(ids);
        CHECK(tok_is_eog(l.t, 151645), "<|im_end|> is eog");
        unload(&l);
    }
    TEST_DONE();
}
