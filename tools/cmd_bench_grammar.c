/* pagoda bench grammar: MaskBench's method (bench/maskbench/README.md) with pagoda's grammar engine,
 * through the public API (pagoda_model_load_vocab, pagoda_grammar_compile, pagoda_grammar_matcher_*),
 * next to the reference engines (llguidance, XGrammar: bench/maskbench/run_reference.py, spawned on
 * the same schemas and tokenizer), then bench/maskbench/compare.py's table and TBM plot.
 *
 * Per schema: compile it (JSON Schema, compact JSON: whitespace_flexible 0) and compute the first
 * mask (TTFM); for each test instance, serialize it as Python's json.dumps(data, separators=(",",
 * ":"), ensure_ascii=False) (pyjson.h, byte for byte), tokenize it (no special tokens, no BOS) and
 * walk it: the mask must allow each token, which is accepted and the next mask computed (one TBM
 * sample), and the last mask must allow eos. Valid instances must pass, invalid ones must fail.
 * The walks run in a worker process, one schema at a time (single-threaded): a schema past
 * --timeout is killed ("timeout"), a worker that dies is a "crash"; either way the worker is
 * restarted and the run goes on. The output lines have run_reference.py's shape. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_common.h"
#include "commands.h"
#include "core/clock.h"
#include "jsonl.h"
#include "pagoda.h"
#include "pyjson.h"

#define ENGINE_VERSION "dev"
#define ENGINE_VERSION_GBNF "dev+gbnf" /* --gbnf: not the schemas' grammars */

static const char k_usage[] =
"usage: pagoda bench grammar --tokenizer PATH [options]\n"
            "  MaskBench (JSON Schema corpus) with pagoda's grammar engine and the reference engines,\n"
            "  side by side: one JSON line per schema per engine, then compare.py's table.\n\n"
            "  --tokenizer PATH    a .gguf or a Hugging Face tokenizer folder (tokenizer.json)\n"
            "  --engines LIST      of pagoda,llguidance,xgrammar (default all three; run one after another)\n"
            "  --data PATH         the corpus (default ../shared/data/maskbench/maskbench-visible.jsonl.gz\n"
            "                      beside the repository)\n"
            "  --limit N           the first N schemas (after --stride/--ids)\n"
            "  --stride K          every K-th line of the file only (a spread sample)\n"
            "  --ids A,B,...       these schema ids only\n"
            "  --timeout S         seconds per schema, compile + walks (default 60)\n"
            "  --eos ID            end token id (default: the tokenizer's eos)\n"
            "  --python PATH       interpreter for the reference engines (default .venv/bin/python of\n"
            "                      the repository)\n"
            "  --out-dir DIR       output folder (default bench-grammar beside the pagoda binary)\n"
            "  --progress N        a progress line on stderr every N schemas (default 100; 0: none)\n"
            "  --no-tbm-list       write tbm_summary only, not every TBM sample\n"
            "  --no-compare        skip compare.py (table and plot)\n"
            "  --mask-digest       add to each pagoda line a digest (FNV-1a 64) of every mask computed\n"
            "                      and their count: mask_digest, n_masks (before/after checks)\n"
            "  --dump-instances FILE  write each selected instance's serialized text, one a line, and\n"
            "                      exit (a check of the serialization against Python's)\n"
            "  --gbnf FILE         pagoda walks every schema's instances through this GBNF grammar instead\n"
            "                      of the schema (a check of the harness, e.g. with a grammar of all JSON)\n";

static void usage(void) { fputs(k_usage, stderr); }

/* ---------- the corpus ---------- */

typedef struct {
    char *text; /* the instance as json.dumps writes it (owned) */
    size_t len;
    int valid;
} bg_test;

typedef struct {
    char *id;       /* owned */
    pj_span features;
    char *schema;   /* compact text (owned) */
    size_t schema_len;
    bg_test *tests; /* owned */
    size_t n_tests;
} bg_record;

typedef struct {
    bg_record *recs;
    size_t n;
} bg_corpus;

static void corpus_free(bg_corpus *c) {
    for (size_t i = 0; i < c->n; i++) {
        bg_record *r = &c->recs[i];
        free(r->id);
        free(r->schema);
        for (size_t t = 0; t < r->n_tests; t++) free(r->tests[t].text);
        free(r->tests);
    }
    free(c->recs);
    memset(c, 0, sizeof *c);
}

static int id_listed(const char *ids, const char *id) {
    size_t n = strlen(id);
    for (const char *p = ids; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !memcmp(p, id, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

/* One record: the id, the features, the schema and the tests serialized as Python would. */
static int record_read(const char *path, size_t line_no, pj_span rec, bg_record *out) {
    char err[256];
    pj_span id, schema, tests = {"[]", 2};
    memset(out, 0, sizeof *out);
    size_t idlen;
    if (!pj_get(rec, "id", &id) || !pj_get(rec, "schema", &schema) || pj_string(id, &out->id, &idlen)) {
        fprintf(stderr, "pagoda bench grammar: %s:%zu: not a MaskBench record (needs id, schema, tests)\n", path,
                line_no);
        return 1;
    }
    if (!pj_get(rec, "features", &out->features)) out->features = (pj_span){"[]", 2};
    pj_get(rec, "tests", &tests);
    pj_buf b = {0};
    if (pj_compact(schema, 0, &b, err, sizeof err)) {
        fprintf(stderr, "pagoda bench grammar: %s:%zu: schema of %s: %s\n", path, line_no, out->id, err);
        pj_buf_free(&b);
        return 1;
    }
    out->schema = b.p, out->schema_len = b.n;
    pj_span *items;
    size_t n;
    if (pj_items(tests, &items, &n)) {
        fprintf(stderr, "pagoda bench grammar: %s:%zu: %s: tests is not an array\n", path, line_no, out->id);
        return 1;
    }
    out->tests = calloc(n ? n : 1, sizeof *out->tests);
    if (!out->tests) {
        free(items);
        return 1;
    }
    out->n_tests = n;
    for (size_t t = 0; t < n; t++) {
        pj_span data, valid;
        pj_buf d = {0};
        out->tests[t].valid = pj_get(items[t], "valid", &valid) && pj_is_true(valid);
        if (!pj_get(items[t], "data", &data) || pj_compact(data, 0, &d, err, sizeof err)) {
            fprintf(stderr, "pagoda bench grammar: %s:%zu: %s test %zu: %s\n", path, line_no, out->id, t,
                    pj_get(items[t], "data", &data) ? err : "no data");
            pj_buf_free(&d);
            free(items);
            return 1;
        }
        out->tests[t].text = d.p ? d.p : strdup("");
        out->tests[t].len = d.n;
    }
    free(items);
    return 0;
}

/* The records run_reference.py would pick: every stride-th line (blank lines count), those in ids,
 * the first limit of them. text stays alive (features point into it). */
static int corpus_load(const char *path, char *text, size_t len, long stride, const char *ids, long limit,
                       bg_corpus *c) {
    size_t cap = 0;
    char *p = text, *end = text + len;
    for (size_t line = 0; p < end; line++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        char *s = p;
        p = nl ? nl + 1 : end;
        size_t l = (size_t)(e - s);
        int blank = 1;
        for (size_t k = 0; k < l && blank; k++) blank = s[k] == ' ' || s[k] == '\t' || s[k] == '\r';
        if (blank || line % (size_t)stride) continue;
        char err[256];
        pj_span rec;
        if (pj_parse(s, l, &rec, err, sizeof err)) {
            fprintf(stderr, "pagoda bench grammar: %s:%zu: not JSON (%s)\n", path, line + 1, err);
            return 1;
        }
        if (ids) {
            pj_span idv;
            char *id = NULL;
            size_t il;
            int keep = pj_get(rec, "id", &idv) && !pj_string(idv, &id, &il) && id_listed(ids, id);
            free(id);
            if (!keep) continue;
        }
        if (c->n == cap) {
            cap = cap ? 2 * cap : 256;
            bg_record *g = realloc(c->recs, cap * sizeof *g);
            if (!g) return 1;
            c->recs = g;
        }
        if (record_read(path, line + 1, rec, &c->recs[c->n])) {
            c->n++;
            return 1;
        }
        c->n++;
        if (limit > 0 && (long)c->n >= limit) break;
    }
    return 0;
}

/* ---------- one schema, in the worker ---------- */

enum { ST_PASSING, ST_COMPILE, ST_VALIDATION, ST_INVALIDATION, ST_TIMEOUT, ST_CRASH, ST_N };
static const char *const status_names[ST_N] = {"passing", "compile_error", "validation_error",
                                               "invalidation_error", "timeout", "crash"};

typedef struct {
    pagoda_model *model;
    const char *gbnf; /* NULL: each schema; else this grammar for every schema */
    const char *tok_name;
    int32_t eos;
    int32_t n_words; /* mask words */
    int tbm_list;
    int digest; /* --mask-digest */
} bg_ctx;

/* FNV-1a 64 over every mask computed for a schema (--mask-digest) */
static void digest_mask(uint64_t *h, long *n, const uint32_t *mask, int32_t n_words) {
    const uint8_t *p = (const uint8_t *)mask;
    uint64_t x = *h;
    for (size_t i = 0; i < (size_t)n_words * sizeof *mask; i++) x = (x ^ p[i]) * 0x100000001B3ull;
    *h = x;
    (*n)++;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double us_01(int64_t ns) { return round((double)ns / 100.0) / 10.0; } /* 0.1 us, as run_reference */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* nearest rank, as run_reference.percentile; xs sorted */
static double pct(const double *xs, size_t n, double q) {
    long k = (long)ceil(q / 100.0 * (double)n) - 1;
    if (k < 0) k = 0;
    if (k > (long)n - 1) k = (long)n - 1;
    return xs[k];
}

static void put_counts_head(pj_buf *o, const bg_ctx *cx, const bg_record *r, int status, const char *error) {
    char err[64];
    pj_puts(o, "{\"id\": ");
    pj_put_str(o, r->id, strlen(r->id), 1);
    pj_puts(o, cx->gbnf ? ", \"engine\": \"pagoda\", \"engine_version\": \"" ENGINE_VERSION_GBNF "\", \"tokenizer\": "
                        : ", \"engine\": \"pagoda\", \"engine_version\": \"" ENGINE_VERSION "\", \"tokenizer\": ");
    pj_put_str(o, cx->tok_name, strlen(cx->tok_name), 1);
    pj_puts(o, ", \"features\": ");
    if (pj_compact(r->features, PJ_ASCII | PJ_SPACED, o, err, sizeof err)) pj_puts(o, "[]");
    pj_putf(o, ", \"status\": \"%s\", \"error\": ", status_names[status]);
    if (error) pj_put_str(o, error, strlen(error), 1);
    else pj_puts(o, "null");
}

static void put_tail(pj_buf *o, const bg_record *r, double ttfm, long n_tokens, long n_verr, long n_ierr,
                     double *tbm, size_t n_tbm, int tbm_list) {
    long n_valid = 0;
    for (size_t t = 0; t < r->n_tests; t++) n_valid += r->tests[t].valid;
    pj_puts(o, ", \"ttfm_us\": ");
    if (ttfm >= 0) pj_put_float(o, ttfm);
    else pj_puts(o, "null");
    pj_putf(o, ", \"n_tests\": %zu, \"n_valid\": %ld, \"n_tokens\": %ld, \"n_validation_errors\": %ld, "
               "\"n_invalidation_errors\": %ld",
            r->n_tests, n_valid, n_tokens, n_verr, n_ierr);
    if (tbm_list) {
        pj_puts(o, ", \"tbm_us\": [");
        for (size_t i = 0; i < n_tbm; i++) {
            if (i) pj_puts(o, ", ");
            pj_put_float(o, tbm[i]);
        }
        pj_puts(o, "]");
    }
    if (!n_tbm) {
        pj_puts(o, ", \"tbm_summary\": {\"n\": 0, \"p50\": null, \"p90\": null, \"p99\": null, \"max\": null, "
                   "\"sum\": 0.0}}");
        return;
    }
    double sum = 0;
    for (size_t i = 0; i < n_tbm; i++) sum += tbm[i];
    qsort(tbm, n_tbm, sizeof *tbm, cmp_double);
    pj_putf(o, ", \"tbm_summary\": {\"n\": %zu, \"p50\": ", n_tbm);
    pj_put_float(o, pct(tbm, n_tbm, 50));
    pj_puts(o, ", \"p90\": ");
    pj_put_float(o, pct(tbm, n_tbm, 90));
    pj_puts(o, ", \"p99\": ");
    pj_put_float(o, pct(tbm, n_tbm, 99));
    pj_puts(o, ", \"max\": ");
    pj_put_float(o, tbm[n_tbm - 1]);
    pj_puts(o, ", \"sum\": ");
    pj_put_float(o, round(sum * 10.0) / 10.0);
    pj_puts(o, "}}");
}

static int bit(const uint32_t *mask, int32_t n_words, int32_t t) {
    return t >= 0 && t / 32 < n_words && (mask[t / 32] >> (t % 32) & 1u);
}

/* Everything for one schema: the output line into o; returns the status. */
static int run_schema(const bg_ctx *cx, const bg_record *r, pj_buf *o) {
    pagoda_grammar_spec spec = {.kind = PAGODA_GRAMMAR_JSON_SCHEMA, .text = r->schema, .len = r->schema_len,
                                .whitespace_flexible = 0};
    if (cx->gbnf) spec = (pagoda_grammar_spec){.kind = PAGODA_GRAMMAR_GBNF, .text = cx->gbnf};
    uint32_t *mask = calloc((size_t)cx->n_words, sizeof *mask);
    double *tbm = NULL;
    size_t n_tbm = 0, cap_tbm = 0;
    if (!mask) return -1;
    pagoda_grammar *g = NULL;
    pagoda_grammar_matcher *mt = NULL;
    int64_t t0 = now_ns();
    pagoda_status st = pagoda_grammar_compile(cx->model, &spec, &g);
    if (!st) st = pagoda_grammar_matcher_create(g, &mt);
    if (st) {
        const char *e = pagoda_last_error();
        put_counts_head(o, cx, r, ST_COMPILE, e && *e ? e : "refused");
        put_tail(o, r, -1, 0, 0, 0, NULL, 0, cx->tbm_list);
        pagoda_grammar_unref(g);
        free(mask);
        return ST_COMPILE;
    }
    pagoda_grammar_matcher_mask(mt, mask);
    double ttfm = us_01(now_ns() - t0);
    uint64_t dig = 0xcbf29ce484222325ull;
    long n_masks = 0;
    if (cx->digest) digest_mask(&dig, &n_masks, mask, cx->n_words);
    long n_tokens = 0, n_verr = 0, n_ierr = 0;
    pj_buf first = {0};
    for (size_t ti = 0; ti < r->n_tests; ti++) {
        const bg_test *test = &r->tests[ti];
        if (ti > 0) {
            pagoda_grammar_matcher_destroy(mt);
            mt = NULL;
            if (pagoda_grammar_matcher_create(g, &mt)) break;
            pagoda_grammar_matcher_mask(mt, mask);
            if (cx->digest) digest_mask(&dig, &n_masks, mask, cx->n_words);
        }
        int32_t *ids = NULL;
        size_t n_ids = 0;
        if (pagoda_tokenize(cx->model, test->text, test->len, 0, 0, &ids, &n_ids)) {
            /* cannot happen for valid UTF-8 text; reported as the instance's failure */
            n_ids = 0;
        }
        n_tokens += (long)n_ids;
        long rejected_at = -1;
        for (size_t i = 0; i < n_ids; i++) {
            int32_t t = ids[i];
            if (!bit(mask, cx->n_words, t)) {
                rejected_at = (long)i;
                break;
            }
            int64_t a = now_ns();
            int ok = pagoda_grammar_matcher_accept(mt, t) == PAGODA_OK;
            if (ok) pagoda_grammar_matcher_mask(mt, mask);
            int64_t b = now_ns();
            if (ok && cx->digest) digest_mask(&dig, &n_masks, mask, cx->n_words);
            if (!ok) {
                rejected_at = (long)i;
                break;
            }
            if (n_tbm == cap_tbm) {
                cap_tbm = cap_tbm ? 2 * cap_tbm : 1024;
                double *gr = realloc(tbm, cap_tbm * sizeof *gr);
                if (!gr) abort(); /* out of memory: a crash of the worker, reported as such */
                tbm = gr;
            }
            tbm[n_tbm++] = us_01(b - a);
        }
        int accepted = rejected_at < 0 && bit(mask, cx->n_words, cx->eos);
        pj_buf msg = {0};
        if (test->valid && !accepted) {
            n_verr++;
            pj_putf(&msg, "valid test %zu rejected at ", ti);
            if (rejected_at >= 0) {
                size_t pl = 0;
                const char *piece = pagoda_token_piece(cx->model, ids[rejected_at], &pl);
                pj_putf(&msg, "token %ld ", rejected_at);
                pj_put_repr(&msg, piece ? piece : "", piece ? pl : 0);
            } else {
                pj_puts(&msg, "end (eos) not allowed");
            }
            const char *me = pagoda_grammar_matcher_error(mt);
            if (me && *me) pj_putf(&msg, " (matcher: %s)", me);
        } else if (!test->valid && accepted) {
            n_ierr++;
            pj_putf(&msg, "invalid test %zu accepted", ti);
        }
        if (msg.n && !first.n) first = msg;
        else pj_buf_free(&msg);
        pagoda_free(ids);
    }
    int status = n_verr ? ST_VALIDATION : n_ierr ? ST_INVALIDATION : ST_PASSING;
    put_counts_head(o, cx, r, status, first.n ? first.p : NULL);
    if (cx->digest) pj_putf(o, ", \"mask_digest\": \"%016llx\", \"n_masks\": %ld", (unsigned long long)dig, n_masks);
    put_tail(o, r, ttfm, n_tokens, n_verr, n_ierr, tbm, n_tbm, cx->tbm_list);
    pj_buf_free(&first);
    pagoda_grammar_matcher_destroy(mt);
    pagoda_grammar_unref(g);
    free(tbm);
    free(mask);
    return status;
}

/* ---------- the worker process ---------- */

typedef struct {
    pid_t pid;
    int to, from; /* pipe ends: schema index in, results out */
} bg_worker;

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        c += k, n -= (size_t)k;
    }
    return 0;
}

/* Reads n bytes before the deadline (pg_now_s seconds): 0, -1 end of file or error, -2 timed out. */
static int read_until(int fd, void *p, size_t n, double deadline) {
    char *c = p;
    while (n) {
        double left = deadline - pg_now_s();
        if (left <= 0) return -2;
        struct pollfd pf = {fd, POLLIN, 0};
        int pr = poll(&pf, 1, left > 3600 ? 3600 * 1000 : (int)(left * 1000.0) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) return -1;
        if (pr == 0) continue;
        ssize_t k = read(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        c += k, n -= (size_t)k;
    }
    return 0;
}

static void worker_loop(const bg_ctx *cx, const bg_corpus *c, int in, int out) {
    for (;;) {
        uint32_t idx;
        if (read_until(in, &idx, sizeof idx, pg_now_s() + 1e9)) _exit(0);
        if (idx >= c->n) _exit(0);
        pj_buf o = {0};
        int status = run_schema(cx, &c->recs[idx], &o);
        if (status < 0 || o.oom) _exit(3);
        uint32_t hdr[2] = {(uint32_t)status, (uint32_t)o.n};
        if (write_all(out, hdr, sizeof hdr) || write_all(out, o.p, o.n)) _exit(0);
        pj_buf_free(&o);
    }
}

static int worker_start(bg_worker *w, const bg_ctx *cx, const bg_corpus *c) {
    int a[2], b[2];
    if (pipe(a)) return -1;
    if (pipe(b)) {
        close(a[0]), close(a[1]);
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(a[0]), close(a[1]), close(b[0]), close(b[1]);
        return -1;
    }
    if (pid == 0) {
        close(a[1]), close(b[0]);
        worker_loop(cx, c, a[0], b[1]);
        _exit(0);
    }
    close(a[0]), close(b[1]);
    fcntl(a[1], F_SETFD, FD_CLOEXEC);
    fcntl(b[0], F_SETFD, FD_CLOEXEC);
    w->pid = pid, w->to = a[1], w->from = b[0];
    return 0;
}

/* Kills the worker (if alive) and reaps it; returns its wait status. */
static int worker_stop(bg_worker *w, int kill_it) {
    int status = 0;
    if (w->pid <= 0) return 0;
    close(w->to);
    if (kill_it) kill(w->pid, SIGKILL);
    while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR) {}
    close(w->from);
    w->pid = 0;
    return status;
}

/* ---------- the pagoda run ---------- */

static void counts_line(char *buf, size_t cap, const long *counts) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "{");
    int any = 0;
    for (int s = 0; s < ST_N && n < cap; s++)
        if (counts[s]) {
            n += (size_t)snprintf(buf + n, cap - n, "%s'%s': %ld", any ? ", " : "", status_names[s], counts[s]);
            any = 1;
        }
    if (n < cap) snprintf(buf + n, cap - n, "}");
}

static int run_pagoda(bg_ctx *cx, const bg_corpus *c, double timeout, long progress, const char *out_path) {
    FILE *out = fopen(out_path, "w");
    if (!out) {
        fprintf(stderr, "pagoda bench grammar: %s: %s\n", out_path, strerror(errno));
        return 1;
    }
    {
        /* per-model state a first compile builds (if any) then lives in the parent and every worker */
        pagoda_grammar_spec spec = {.kind = PAGODA_GRAMMAR_JSON_SCHEMA, .text = "{\"type\":\"integer\"}"};
        pagoda_grammar *g = NULL;
        pagoda_grammar_matcher *mt = NULL;
        uint32_t *mask = calloc((size_t)cx->n_words, sizeof *mask);
        if (mask && !pagoda_grammar_compile(cx->model, &spec, &g) && !pagoda_grammar_matcher_create(g, &mt))
            pagoda_grammar_matcher_mask(mt, mask);
        pagoda_grammar_matcher_destroy(mt);
        pagoda_grammar_unref(g);
        free(mask);
    }
    bg_worker w = {0};
    long counts[ST_N] = {0};
    double start = pg_now_s();
    int rc = 0;
    for (size_t i = 0; i < c->n; i++) {
        const bg_record *r = &c->recs[i];
        if (!w.pid && worker_start(&w, cx, c)) {
            fprintf(stderr, "pagoda bench grammar: cannot start the worker process: %s\n", strerror(errno));
            rc = 1;
            break;
        }
        uint32_t idx = (uint32_t)i, hdr[2];
        double deadline = pg_now_s() + timeout;
        int got = write_all(w.to, &idx, sizeof idx) ? -1 : read_until(w.from, hdr, sizeof hdr, deadline);
        char *line = NULL;
        if (!got) {
            line = malloc((size_t)hdr[1] + 1);
            got = !line || hdr[0] >= ST_N ? -1 : read_until(w.from, line, hdr[1], deadline);
        }
        pj_buf o = {0};
        int status;
        if (!got) {
            status = (int)hdr[0];
            pj_put(&o, line, hdr[1]);
        } else {
            char why[128];
            int ws = worker_stop(&w, 1);
            if (got == -2) {
                status = ST_TIMEOUT;
                snprintf(why, sizeof why, "over %g s", timeout);
            } else {
                status = ST_CRASH;
                int code = WIFSIGNALED(ws) ? -WTERMSIG(ws) : WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
                snprintf(why, sizeof why, "engine process died (exit %d)", code);
            }
            put_counts_head(&o, cx, r, status, why);
            put_tail(&o, r, -1, 0, 0, 0, NULL, 0, cx->tbm_list);
        }
        free(line);
        fwrite(o.p, 1, o.n, out);
        fputc('\n', out);
        fflush(out);
        pj_buf_free(&o);
        counts[status]++;
        if (progress > 0 && (long)(i + 1) % progress == 0) {
            char cl[256];
            counts_line(cl, sizeof cl, counts);
            fprintf(stderr, "[pagoda/%s] %zu schemas, %.0f s: %s\n", cx->tok_name, i + 1, pg_now_s() - start, cl);
        }
    }
    worker_stop(&w, 0);
    if (fclose(out)) {
        fprintf(stderr, "pagoda bench grammar: %s: %s\n", out_path, strerror(errno));
        rc = 1;
    }
    char cl[256];
    counts_line(cl, sizeof cl, counts);
    long total = 0;
    for (int s = 0; s < ST_N; s++) total += counts[s];
    fprintf(stderr, "[pagoda/%s] done: %ld schemas in %.0f s: %s\n", cx->tok_name, total, pg_now_s() - start, cl);
    return rc;
}

/* ---------- spawning Python ---------- */

/* Runs argv (argv[0] a path) to its end; stdout to out_path when given. Returns the exit code, or
 * -1 (with a message) when it could not start or died of a signal. */
static int spawn_wait(char *const argv[], const char *out_path) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "pagoda bench grammar: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (out_path) {
            int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0 || dup2(fd, 1) < 0) _exit(126);
        }
        execv(argv[0], argv);
        fprintf(stderr, "pagoda bench grammar: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (WIFSIGNALED(st)) {
        fprintf(stderr, "pagoda bench grammar: %s died of signal %d\n", argv[1] ? argv[1] : argv[0], WTERMSIG(st));
        return -1;
    }
    return WEXITSTATUS(st);
}

/* ---------- paths ---------- */

static int exists(const char *p) {
    struct stat s;
    return !stat(p, &s);
}

/* The repository the binary was built in (<repo>/<build>/pagoda), if it holds the harness. */
static int find_root(char *root, size_t cap) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            char probe[PATH_MAX + 64];
            snprintf(probe, sizeof probe, "%s/../bench/maskbench/run_reference.py", exe);
            char real[PATH_MAX];
            if (exists(probe) && realpath(probe, real)) {
                *strrchr(real, '/') = 0;             /* bench/maskbench */
                *strrchr(real, '/') = 0;             /* bench */
                *strrchr(real, '/') = 0;             /* the repository */
                snprintf(root, cap, "%s", real);
                return 0;
            }
        }
    }
    if (exists("bench/maskbench/run_reference.py")) {
        snprintf(root, cap, ".");
        return 0;
    }
    return 1;
}

static int mkdirs(const char *path) {
    char tmp[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

/* run_reference.py's display name: a GGUF's file stem, a tokenizer folder's name. */
static void tokenizer_name(const char *path, char *buf, size_t cap) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
    if (n > 15 && !strcmp(tmp + n - 15, "/tokenizer.json")) tmp[n -= 15] = 0;
    const char *base = strrchr(tmp, '/') ? strrchr(tmp, '/') + 1 : tmp;
    snprintf(buf, cap, "%s", base);
    size_t l = strlen(buf);
    if (l > 5 && !strcmp(buf + l - 5, ".gguf")) buf[l - 5] = 0;
}

/* ---------- the command ---------- */

enum { E_PAGODA = 1, E_LLG = 2, E_XGR = 4 };

static int parse_engines(const char *s, int *out) {
    *out = 0;
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", s);
    for (char *save = NULL, *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "pagoda")) *out |= E_PAGODA;
        else if (!strcmp(t, "llguidance")) *out |= E_LLG;
        else if (!strcmp(t, "xgrammar")) *out |= E_XGR;
        else {
            fprintf(stderr, "pagoda bench grammar: unknown engine '%s' (pagoda, llguidance, xgrammar)\n", t);
            return 1;
        }
    }
    if (!*out) {
        fprintf(stderr, "pagoda bench grammar: --engines names no engine\n");
        return 1;
    }
    return 0;
}

int cmd_bench_grammar(int argc, char **argv) {
    const char *tok = NULL, *data = NULL, *ids = NULL, *python = NULL, *out_dir = NULL, *dump = NULL, *gbnf = NULL;
    long limit = 0, stride = 1, progress = 100, eos_opt = -1;
    float timeout = 60;
    int engines = E_PAGODA | E_LLG | E_XGR, tbm_list = 1, compare = 1, digest = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!strcmp(a, "--no-tbm-list")) { tbm_list = 0; continue; }
        if (!strcmp(a, "--no-compare")) { compare = 0; continue; }
        if (!strcmp(a, "--mask-digest")) { digest = 1; continue; }
        if (strncmp(a, "--", 2)) {
            fprintf(stderr, "pagoda bench grammar: unexpected argument '%s'\n", a);
            return usage(), 2;
        }
        if (!v || !cli_option_listed(a, k_usage)) return cli_unknown_option("pagoda bench grammar", a, k_usage);
        i++;
        int bad = 0;
        if (!strcmp(a, "--tokenizer")) tok = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--ids")) ids = v;
        else if (!strcmp(a, "--python")) python = v;
        else if (!strcmp(a, "--out-dir")) out_dir = v;
        else if (!strcmp(a, "--dump-instances")) dump = v;
        else if (!strcmp(a, "--gbnf")) gbnf = v;
        else if (!strcmp(a, "--engines")) bad = parse_engines(v, &engines);
        else if (!strcmp(a, "--limit")) bad = cli_int(a, v, 1, 100000000, &limit);
        else if (!strcmp(a, "--stride")) bad = cli_int(a, v, 1, 100000000, &stride);
        else if (!strcmp(a, "--progress")) bad = cli_int(a, v, 0, 100000000, &progress);
        else if (!strcmp(a, "--eos")) bad = cli_int(a, v, 0, INT32_MAX, &eos_opt);
        else if (!strcmp(a, "--timeout")) bad = cli_float_in(a, v, 0.001f, 1e6f, &timeout);
        else return cli_unknown_option("pagoda bench grammar", a, k_usage);
        if (bad) return 2;
    }
    if (!tok && !dump) {
        fprintf(stderr, "pagoda bench grammar: --tokenizer PATH is required\n");
        return usage(), 2;
    }
    char root[PATH_MAX] = "", data_buf[PATH_MAX + 64], py_buf[PATH_MAX + 64], out_buf[PATH_MAX + 64];
    int have_root = !find_root(root, sizeof root);
    if (!data) {
        snprintf(data_buf, sizeof data_buf, "%s/../shared/data/maskbench/maskbench-visible.jsonl.gz",
                 have_root ? root : ".");
        if (!exists(data_buf)) snprintf(data_buf, sizeof data_buf, "../shared/data/maskbench/maskbench-visible.jsonl.gz");
        data = data_buf;
    }
    if (!exists(data)) {
        fprintf(stderr, "pagoda bench grammar: data not found: %s (give --data)\n", data);
        return 1;
    }
    char data_real[PATH_MAX];
    if (realpath(data, data_real)) data = data_real;

    char *text = NULL;
    size_t len = 0;
    bg_corpus c = {0};
    if (jsonl_read_file(data, (size_t)1 << 31, &text, &len)) return 1;
    if (corpus_load(data, text, len, stride, ids, limit, &c)) {
        corpus_free(&c);
        free(text);
        return 1;
    }
    if (dump) {
        FILE *f = strcmp(dump, "-") ? fopen(dump, "w") : stdout;
        if (!f) {
            fprintf(stderr, "pagoda bench grammar: %s: %s\n", dump, strerror(errno));
            corpus_free(&c);
            free(text);
            return 1;
        }
        for (size_t i = 0; i < c.n; i++)
            for (size_t t = 0; t < c.recs[i].n_tests; t++) {
                fwrite(c.recs[i].tests[t].text, 1, c.recs[i].tests[t].len, f);
                fputc('\n', f);
            }
        int bad = f != stdout ? fclose(f) : fflush(f);
        corpus_free(&c);
        free(text);
        return bad ? 1 : 0;
    }
    if (!c.n) {
        fprintf(stderr, "pagoda bench grammar: no schema selected in %s\n", data);
        free(text);
        return 1;
    }

    char *gbnf_text = NULL;
    size_t gbnf_len = 0;
    if (gbnf && jsonl_read_file(gbnf, (size_t)8 << 20, &gbnf_text, &gbnf_len)) {
        corpus_free(&c);
        free(text);
        return 1;
    }
    char tok_name[256];
    tokenizer_name(tok, tok_name, sizeof tok_name);
    /* a tokenizer.json file (as run_reference.py accepts): pagoda loads its folder */
    char tok_dir[PATH_MAX];
    const char *tok_load = tok;
    size_t tl = strlen(tok);
    if (tl >= 14 && !strcmp(tok + tl - 14, "tokenizer.json") && (tl == 14 || tok[tl - 15] == '/') && tl < sizeof tok_dir) {
        snprintf(tok_dir, sizeof tok_dir, "%.*s", tl == 14 ? 1 : (int)(tl - 15), tl == 14 ? "." : tok);
        tok_load = tok_dir;
    }
    pagoda_model *m = NULL;
    if (pagoda_model_load_vocab(tok_load, &m)) {
        corpus_free(&c);
        free(text);
        free(gbnf_text);
        return cli_error("bench grammar: tokenizer");
    }
    pagoda_model_info info;
    pagoda_model_get_info(m, &info);
    int32_t eos = eos_opt >= 0 ? (int32_t)eos_opt : info.eos;
    if (eos < 0 || eos >= info.n_vocab) {
        fprintf(stderr, "pagoda bench grammar: %s has no end token in its vocabulary of %d (give --eos)\n", tok,
                info.n_vocab);
        pagoda_model_free(m);
        corpus_free(&c);
        free(text);
        free(gbnf_text);
        return 1;
    }
    if (!out_dir) {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        char *slash = n > 0 ? (exe[n] = 0, strrchr(exe, '/')) : NULL;
        if (slash) *slash = 0;
        snprintf(out_buf, sizeof out_buf, "%s/bench-grammar", slash ? exe : ".");
        out_dir = out_buf;
    }
    if (mkdirs(out_dir)) {
        fprintf(stderr, "pagoda bench grammar: cannot create %s: %s\n", out_dir, strerror(errno));
        pagoda_model_free(m);
        corpus_free(&c);
        free(text);
        free(gbnf_text);
        return 1;
    }
    fprintf(stderr, "bench grammar: %zu schemas from %s, tokenizer %s (%d tokens, eos %d), timeout %g s, out %s\n",
            c.n, data, tok_name, info.n_vocab, eos, (double)timeout, out_dir);

    signal(SIGPIPE, SIG_IGN);
    int rc = 0;
    char outs[3][PATH_MAX + 300];
    const char *names[3] = {"pagoda", "llguidance", "xgrammar"};
    int n_outs = 0;
    char *out_files[3];
    if (engines & E_PAGODA) {
        bg_ctx cx = {m, gbnf_text, tok_name, eos, (info.n_vocab + 31) / 32, tbm_list, digest};
        snprintf(outs[0], sizeof outs[0], "%s/pagoda-%s.jsonl", out_dir, tok_name);
        if (run_pagoda(&cx, &c, timeout, progress, outs[0])) rc = 1;
        else out_files[n_outs++] = outs[0];
    }
    pagoda_model_free(m);
    corpus_free(&c);
    free(text);
    free(gbnf_text);

    if (engines & (E_LLG | E_XGR) || compare) {
        if (!python) {
            snprintf(py_buf, sizeof py_buf, "%s/.venv/bin/python", have_root ? root : ".");
            python = py_buf;
        }
        if (!have_root || !exists(python)) {
            fprintf(stderr, "pagoda bench grammar: %s\n",
                    !have_root ? "bench/maskbench/ not found beside the binary or here: the reference engines and "
                                 "compare.py cannot run"
                               : "no Python at the default .venv/bin/python (give --python): the reference "
                                 "engines and compare.py cannot run");
            return (engines & (E_LLG | E_XGR)) ? 1 : rc;
        }
    }
    char script[PATH_MAX + 64], eos_s[32], timeout_s[32], limit_s[32], stride_s[32], prog_s[32];
    snprintf(script, sizeof script, "%s/bench/maskbench/run_reference.py", root);
    snprintf(eos_s, sizeof eos_s, "%d", eos);
    snprintf(timeout_s, sizeof timeout_s, "%g", (double)timeout);
    snprintf(limit_s, sizeof limit_s, "%ld", limit);
    snprintf(stride_s, sizeof stride_s, "%ld", stride);
    snprintf(prog_s, sizeof prog_s, "%ld", progress);
    for (int e = 1; e < 3; e++) {
        if (!(engines & (1 << e))) continue;
        snprintf(outs[e], sizeof outs[e], "%s/%s-%s.jsonl", out_dir, names[e], tok_name);
        char *av[32];
        int k = 0;
        av[k++] = (char *)python, av[k++] = script, av[k++] = "--engine", av[k++] = (char *)names[e];
        av[k++] = "--tokenizer", av[k++] = (char *)tok, av[k++] = "--data", av[k++] = (char *)data;
        av[k++] = "--eos", av[k++] = eos_s, av[k++] = "--timeout", av[k++] = timeout_s;
        av[k++] = "--stride", av[k++] = stride_s, av[k++] = "--out", av[k++] = outs[e];
        if (limit > 0) av[k++] = "--limit", av[k++] = limit_s;
        if (ids) av[k++] = "--ids", av[k++] = (char *)ids;
        if (progress > 0) av[k++] = "--progress", av[k++] = prog_s;
        if (!tbm_list) av[k++] = "--no-tbm-list";
        av[k] = NULL;
        fprintf(stderr, "bench grammar: %s (%s)\n", names[e], python);
        int x = spawn_wait(av, NULL);
        if (x) {
            fprintf(stderr, "pagoda bench grammar: the %s run failed (exit %d); left out of the table\n", names[e], x);
            rc = 1;
        } else {
            out_files[n_outs++] = outs[e];
        }
    }
    if (compare && n_outs) {
        char cmp[PATH_MAX + 64], plot[PATH_MAX + 300], table[PATH_MAX + 300];
        snprintf(cmp, sizeof cmp, "%s/bench/maskbench/compare.py", root);
        snprintf(plot, sizeof plot, "%s/tbm-%s.png", out_dir, tok_name);
        snprintf(table, sizeof table, "%s/table-%s.md", out_dir, tok_name);
        char *av[16];
        int k = 0;
        av[k++] = (char *)python, av[k++] = cmp;
        for (int i = 0; i < n_outs; i++) av[k++] = out_files[i];
        av[k++] = "--plot", av[k++] = plot;
        av[k] = NULL;
        int x = spawn_wait(av, table);
        char *t = NULL;
        size_t tl = 0;
        if (!x && !jsonl_read_file(table, (size_t)1 << 24, &t, &tl)) {
            fwrite(t, 1, tl, stdout);
            fflush(stdout);
            free(t);
            fprintf(stderr, "bench grammar: table in %s\n", table);
        } else {
            fprintf(stderr, "pagoda bench grammar: compare.py failed (exit %d)\n", x);
            rc = 1;
        }
    }
    return rc;
}
