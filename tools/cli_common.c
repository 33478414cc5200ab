#include "cli_common.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "core/clock.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double cli_median(double *v, long n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int cli_error(const char *context) {
    const char *e = pagoda_last_error();
    if (context && *context)
        fprintf(stderr, "pagoda: %s: %s\n", context, *e ? e : "error");
    else
        fprintf(stderr, "pagoda: %s\n", *e ? e : "error");
    return 1;
}

/* The next option token of a usage text from *p: "-x" or "--word" preceded by a space, a
 * newline, ',' or '|' (so "f32|f16" or "x-y" inside words are not taken). 0 at the end. */
static size_t next_option(const char **p, const char **start) {
    for (const char *s = *p; *s; s++) {
        if (*s != '-' || (s > *p && !(s[-1] == ' ' || s[-1] == '\n' || s[-1] == ',' || s[-1] == '[')))
            continue;
        const char *e = s + 1 + (s[1] == '-');
        if (!((*e >= 'a' && *e <= 'z') || (*e >= 'A' && *e <= 'Z'))) continue;
        while ((*e >= 'a' && *e <= 'z') || (*e >= 'A' && *e <= 'Z') || (*e >= '0' && *e <= '9') || *e == '-') e++;
        *start = s;
        *p = e;
        return (size_t)(e - s);
    }
    return 0;
}

int cli_option_listed(const char *opt, const char *usage_text) {
    const char *p = usage_text, *o;
    size_t n, len = strlen(opt);
    while ((n = next_option(&p, &o)))
        if (n == len && !strncmp(o, opt, n)) return 1;
    return 0;
}

/* Optimal-string-alignment distance (insertions, deletions, substitutions, adjacent swaps),
 * for strings up to 63 bytes (longer ones are far from everything). */
static int edit_distance(const char *a, size_t na, const char *b, size_t nb) {
    if (na > 63 || nb > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= na; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= nb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= na; i++)
        for (size_t j = 1; j <= nb; j++) {
            int v = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < v) v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[na][nb];
}

int cli_unknown_option(const char *cmd, const char *opt, const char *usage_text) {
    if (cli_option_listed(opt, usage_text)) { /* known, but the last argument */
        fprintf(stderr, "%s: option '%s' needs a value\n", cmd, opt);
        return 2;
    }
    const char *p = usage_text, *o, *best = NULL;
    size_t n, best_n = 0, len = strlen(opt);
    int best_d = 99;
    while ((n = next_option(&p, &o))) {
        int d = edit_distance(opt, len, o, n);
        if (d < best_d) best_d = d, best = o, best_n = n;
    }
    /* close enough to be a typo: a third of the name, at least 1, at most 3 edits */
    int limit = (int)len / 3;
    if (limit < 1) limit = 1;
    if (limit > 3) limit = 3;
    if (best && best_d <= limit)
        fprintf(stderr, "%s: unknown option '%s' (did you mean %.*s?)\n", cmd, opt, (int)best_n, best);
    else
        fprintf(stderr, "%s: unknown option '%s' (see --help)\n", cmd, opt);
    return 2;
}

int cli_int(const char *opt, const char *val, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = val ? strtol(val, &end, 10) : 0;
    if (!val || errno || *end || end == val || v < lo || v > hi) {
        fprintf(stderr, "pagoda: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, val ? val : "");
        return 1;
    }
    *out = v;
    return 0;
}

int cli_float(const char *opt, const char *val, float *out) {
    char *end;
    errno = 0;
    float v = val ? strtof(val, &end) : 0;
    if (!val || errno || *end || end == val || v != v) {
        fprintf(stderr, "pagoda: %s expects a number, got '%s'\n", opt, val ? val : "");
        return 1;
    }
    *out = v;
    return 0;
}

int cli_float_in(const char *opt, const char *val, float lo, float hi, float *out) {
    if (cli_float(opt, val, out)) return 1;
    if (*out >= lo && *out <= hi) return 0;
    fprintf(stderr, "pagoda: %s must be in [%g, %g], got '%s'\n", opt, lo, hi, val);
    return 1;
}

int cli_temperature(const char *opt, const char *val, float *out) { return cli_float_in(opt, val, 0, 2, out); }

int cli_top_p(const char *opt, const char *val, float *out) {
    if (cli_float(opt, val, out)) return 1;
    if (*out > 0 && *out <= 1) return 0;
    fprintf(stderr, "pagoda: %s must be in (0, 1], got '%s'\n", opt, val);
    return 1;
}

int cli_size(const char *opt, const char *val, uint64_t *out) {
    char *end;
    errno = 0;
    double v = val ? strtod(val, &end) : -1;
    if (!val || errno || end == val || v < 0) goto bad;
    uint64_t mul = 1;
    switch (*end) {
    case 0: break;
    case 'k': case 'K': mul = 1ull << 10, end++; break;
    case 'm': case 'M': mul = 1ull << 20, end++; break;
    case 'g': case 'G': mul = 1ull << 30, end++; break;
    case 't': case 'T': mul = 1ull << 40, end++; break;
    default: goto bad;
    }
    if (mul > 1 && (*end == 'i' || *end == 'I')) end++;
    if (*end == 'b' || *end == 'B') end++;
    if (*end || !(v * (double)mul <= 1.8e19)) goto bad;
    *out = (uint64_t)(v * (double)mul);
    return 0;
bad:
    fprintf(stderr, "pagoda: %s expects a size such as 512M or 2G, got '%s'\n", opt, val ? val : "");
    return 1;
}

static int kv_type_name(const char *v, int *out) {
    if (!strcmp(v, "f32")) *out = PAGODA_DTYPE_F32;
    else if (!strcmp(v, "f16")) *out = PAGODA_DTYPE_F16;
    else if (!strcmp(v, "int8") || !strcmp(v, "q8")) *out = PAGODA_DTYPE_KV_INT8;
    else if (!strcmp(v, "fp8") || !strcmp(v, "fp8_e4m3")) *out = PAGODA_DTYPE_KV_FP8_E4M3;
    else return 1;
    return 0;
}

int cli_kv_type(const char *opt, const char *val, int *out) {
    if (!val || kv_type_name(val, out)) {
        fprintf(stderr, "pagoda: %s expects f32, f16, int8 (q8) or fp8, got '%s'\n", opt, val ? val : "");
        return 1;
    }
    return 0;
}

int cli_kv_cache_dtype(const char *opt, const char *val, int *out, int *given) {
    if (!val) val = "";
    if (!strcmp(val, "auto")) return 0;
    if (!strcmp(val, "float16") || !strcmp(val, "half") || !strcmp(val, "fp16")) *out = PAGODA_DTYPE_F16;
    else if (!strcmp(val, "float32") || !strcmp(val, "float") || !strcmp(val, "fp32")) *out = PAGODA_DTYPE_F32;
    else if (kv_type_name(val, out)) {
        fprintf(stderr, "pagoda: %s '%s' is not available: pagoda's KV cache is auto, f32, f16, int8 or fp8 (e4m3; "
                        "also fp8_e4m3) (auto: f32 on the CPU, f16 on the GPU)\n", opt, val);
        return 1;
    }
    *given = 1;
    return 0;
}

int cli_parse_ids(const char *str, int32_t **ids, int32_t *n) {
    size_t cap = 16, cnt = 0;
    int32_t *v = malloc(cap * sizeof *v);
    const char *p = str;
    if (!v) return 1;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) {
            fprintf(stderr, "pagoda: bad token id near '%.20s'\n", p);
            free(v);
            return 1;
        }
        if (cnt == cap) {
            int32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return 1;
            }
            v = nv;
        }
        v[cnt++] = (int32_t)x;
        p = end;
    }
    *ids = v;
    *n = (int32_t)cnt;
    return 0;
}

/* Loading progress on stderr, at most every 5%, only where someone watches (a terminal). */
static void load_progress(uint64_t done, uint64_t total, void *user) {
    int *last = user;
    int pct = total ? (int)(100 * done / total) : 100;
    if (pct >= *last + 5 || done == total) {
        fprintf(stderr, "\rloading weights: %3d%% (%.0f / %.0f MiB)", pct, done / 1048576.0, total / 1048576.0);
        *last = pct;
    }
}

int cli_quant_act(const char *opt, const char *val, int *out) {
    static const char *const names[] = {"checkpoint", "float", "int8", "fp8", "int16"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(val, names[i])) return *out = i, 0;
    fprintf(stderr, "pagoda: %s expects checkpoint, float, int8, fp8 or int16, got '%s'\n", opt, val);
    return 1;
}

void cli_device_default(cli_device *d) {
    memset(d, 0, sizeof *d);
    d->gpu_layers = -1;
    d->kv_type = PAGODA_DTYPE_F32;
}

int cli_device_option(const char *opt, const char *val, cli_device *d, int *bad) {
    *bad = 0;
    if (!strcmp(opt, "--kv-type")) {
        *bad = cli_kv_type(opt, val, &d->kv_type);
        d->kv_type_given = 1;
        return 1;
    }
    if (!strcmp(opt, "--kv-cache-dtype")) {
        *bad = cli_kv_cache_dtype(opt, val, &d->kv_type, &d->kv_type_given);
        return 1;
    }
    if (!strcmp(opt, "--device")) {
        if (!strcmp(val, "cuda") || !strcmp(val, "gpu")) d->cuda = 1;
        else if (!strcmp(val, "cpu")) d->cuda = 0;
        else fprintf(stderr, "pagoda: --device expects cpu or cuda, got '%s'\n", val), *bad = 1;
        return 1;
    }
    if (!strcmp(opt, "--gpu-layers") || !strcmp(opt, "-ngl") || !strcmp(opt, "--n-gpu-layers")) {
        *bad = cli_int(opt, val, 0, 1 << 20, &d->gpu_layers);
        if (!*bad && d->gpu_layers > 0) d->cuda = 1;
        return 1;
    }
    if (!strcmp(opt, "--cuda-device")) {
        long v = 0;
        *bad = cli_int(opt, val, 0, 1024, &v);
        d->cuda_device = (int)v;
        return 1;
    }
    if (!strcmp(opt, "--cuda-graphs") || !strcmp(opt, "--cuda-repack")) {
        int *off = !strcmp(opt, "--cuda-graphs") ? &d->no_graphs : &d->no_repack;
        if (!strcmp(val, "on")) *off = 0;
        else if (!strcmp(val, "off")) *off = 1;
        else fprintf(stderr, "pagoda: %s expects on or off, got '%s'\n", opt, val), *bad = 1;
        return 1;
    }
    if (!strcmp(opt, "--cuda-nccl")) {
        if (!strcmp(val, "on")) d->nccl_always = 1, d->cuda = 1;
        else if (!strcmp(val, "off")) d->nccl_always = 0;
        else fprintf(stderr, "pagoda: %s expects on or off, got '%s'\n", opt, val), *bad = 1;
        return 1;
    }
    if (!strcmp(opt, "--cuda-qgemm")) {
        if (!strcmp(val, "half")) d->qgemm = 0;
        else if (!strcmp(val, "dequant")) d->qgemm = 1;
        else if (!strcmp(val, "mma")) d->qgemm = 2;
        else fprintf(stderr, "pagoda: --cuda-qgemm expects half, dequant or mma, got '%s'\n", val), *bad = 1;
        return 1;
    }
    if (!strcmp(opt, "--speculative")) {
        if (!strcmp(val, "none") || !strcmp(val, "off")) d->spec = PAGODA_SPEC_NONE;
        else if (!strcmp(val, "ngram") || !strcmp(val, "prompt-lookup")) d->spec = PAGODA_SPEC_NGRAM;
        else if (!strcmp(val, "grammar")) d->spec = PAGODA_SPEC_GRAMMAR;
        else if (!strncmp(val, "draft:", 6) && val[6]) d->spec = PAGODA_SPEC_DRAFT, d->spec_draft = val + 6;
        else fprintf(stderr, "pagoda: --speculative expects none, ngram, grammar or draft:PATH, got '%s'\n", val), *bad = 1;
        return 1;
    }
    if (!strcmp(opt, "-md") || !strcmp(opt, "--model-draft")) {
        d->spec = PAGODA_SPEC_DRAFT, d->spec_draft = val;
        return 1;
    }
    if (!strcmp(opt, "--num-speculative-tokens") || !strcmp(opt, "--draft-max")) {
        *bad = cli_int(opt, val, 1, 16, &d->spec_k);
        return 1;
    }
    if (!strcmp(opt, "--spec-ngram-min") || !strcmp(opt, "--spec-ngram-max")) {
        *bad = cli_int(opt, val, 1, 64, !strcmp(opt, "--spec-ngram-min") ? &d->spec_ngram_min : &d->spec_ngram_max);
        return 1;
    }
    if (!strcmp(opt, "--spec-k")) {
        if (!strcmp(val, "fixed")) d->spec_fixed_k = 1;
        else if (!strcmp(val, "cost")) d->spec_fixed_k = 0;
        else fprintf(stderr, "pagoda: --spec-k expects cost or fixed, got '%s'\n", val), *bad = 1;
        return 1;
    }
    if (!strcmp(opt, "--spec-ngram-history")) {
        *bad = cli_int(opt, val, 0, 1 << 26, &d->spec_ngram_history);
        d->spec_ngram_history_given = 1;
        return 1;
    }
    if (!strcmp(opt, "--spec-grammar-drafts")) {
        if (!strcmp(val, "on")) d->spec_no_grammar_drafts = 0;
        else if (!strcmp(val, "off")) d->spec_no_grammar_drafts = 1;
        else fprintf(stderr, "pagoda: --spec-grammar-drafts expects on or off, got '%s'\n", val), *bad = 1;
        return 1;
    }
    if (!strcmp(opt, "--spec-draft-vocab")) {
        *bad = cli_int(opt, val, 0, INT32_MAX, &d->spec_draft_vocab);
        return 1;
    }
    if (!strcmp(opt, "--spec-max-seqs")) {
        *bad = cli_int(opt, val, 1, 4096, &d->spec_max_seqs);
        return 1;
    }
    if (!strcmp(opt, "--quant-activations")) {
        *bad = cli_quant_act(opt, val, &d->quant_act);
        return 1;
    }
    if (!strcmp(opt, "--gpu-memory-utilization")) {
        *bad = cli_float(opt, val, &d->gpu_mem_util);
        if (!*bad && !(d->gpu_mem_util > 0.05f && d->gpu_mem_util <= 1.0f))
            fprintf(stderr, "pagoda: --gpu-memory-utilization expects a share in (0.05, 1], got '%s'\n", val), *bad = 1;
        return 1;
    }
    return 0;
}

int32_t cli_device_gpu_layers(const cli_device *d) {
    if (!d || !d->cuda) return 0;
    return d->gpu_layers < 0 ? -1 : (int32_t)d->gpu_layers;
}

void cli_device_apply(const cli_device *d, pagoda_engine_config *ec) {
    ec->n_gpu_layers = cli_device_gpu_layers(d);
    if (d->kv_type_given) ec->kv_dtype = (pagoda_dtype)d->kv_type;
    ec->quant_activations = d->quant_act;
    ec->speculative = d->spec, ec->speculative_draft = d->spec_draft;
    ec->num_speculative_tokens = (int32_t)d->spec_k, ec->spec_max_seqs = (int32_t)d->spec_max_seqs;
    ec->spec_ngram_min = (int32_t)d->spec_ngram_min, ec->spec_ngram_max = (int32_t)d->spec_ngram_max;
    ec->spec_fixed_k = d->spec_fixed_k;
    ec->spec_draft_vocab = (int32_t)d->spec_draft_vocab;
    ec->spec_no_grammar_drafts = d->spec_no_grammar_drafts;
    if (d->spec_ngram_history_given) ec->spec_ngram_history = d->spec_ngram_history ? (int32_t)d->spec_ngram_history : -1;
    if (!d->cuda) return;
    if (d->gpu_mem_util > 0) ec->gpu_memory_utilization = d->gpu_mem_util;
    ec->cuda_device = d->cuda_device, ec->cuda_no_graphs = d->no_graphs, ec->cuda_no_repack = d->no_repack;
    ec->cuda_qgemm = d->qgemm, ec->cuda_nccl_always = d->nccl_always;
    if (!d->kv_type_given) ec->kv_dtype = PAGODA_DTYPE_F16;
    if (!d->max_batch_given) ec->max_batch_tokens = 2048; /* a GPU step is cheap per token: prefill in big chunks */
}

int cli_model_load(const char *path, pagoda_model **out) {
    double t0 = pg_now_s();
    if (pagoda_model_load(path, out)) return cli_error("");
    int last = -5, tty = isatty(2);
    pagoda_model_prefault(*out, tty ? load_progress : NULL, &last);
    if (tty) fprintf(stderr, "\n");
    pagoda_model_info info;
    pagoda_model_facts facts;
    pagoda_model_get_info(*out, &info);
    pagoda_model_get_facts(*out, &facts);
    fprintf(stderr, "pagoda: loaded %s (%s, %d layers, %.1f MiB of weights) in %.2f s\n", path, info.arch,
            facts.n_layer, info.weight_bytes / 1048576.0, pg_now_s() - t0);
    return 0;
}

int cli_tp_begin(long size, pagoda_tp_group **out) { return cli_parallel_begin(size, 1, out); }

/* ---- a group of threads (no mpirun): rank 0 is the caller, cli_tp_spawn starts the others ---- */

typedef struct {
    pthread_t thread;
    pagoda_tp_group *g;
    const char *model_path;
    pagoda_engine_config ec;
    int started, rc;
} tp_thread;

static struct {
    pagoda_tp_group **groups; /* NULL: no group of threads */
    tp_thread *threads;       /* [size]: ranks 1.. */
    int n;
} g_tpt;

/* launched by an MPI launcher (mpirun / mpiexec / srun): its environment says so */
static int under_mpi_launcher(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("MPI_LOCALNRANKS");
}

static void *tp_thread_main(void *arg) {
    tp_thread *t = arg;
    pagoda_model *m = NULL;
    t->rc = 1;
    if (pagoda_model_load(t->model_path, &m)) {
        fprintf(stderr, "pagoda: tensor parallel rank %d: %s\n", t->g->rank, pagoda_last_error());
    } else {
        pagoda_model_prefault(m, NULL, NULL);
        t->ec.tp = t->g;
        if (pagoda_tp_worker_run(m, &t->ec) == PAGODA_OK) t->rc = 0;
        else fprintf(stderr, "pagoda: tensor parallel rank %d: %s\n", t->g->rank, pagoda_last_error());
        pagoda_model_free(m);
    }
    if (t->rc) pagoda_tp_threads_abort(t->g); /* rank 0 and the others stop waiting for this one */
    return NULL;
}

int cli_tp_spawn(pagoda_tp_group *g, const char *model_path, const pagoda_engine_config *ec) {
    if (!g || !pagoda_tp_threads_is(g) || g->rank != 0 || !g_tpt.groups) return 0;
    for (int r = 1; r < g_tpt.n; r++) {
        tp_thread *t = &g_tpt.threads[r];
        *t = (tp_thread){.g = g_tpt.groups[r], .model_path = model_path, .ec = *ec};
        if (pthread_create(&t->thread, NULL, tp_thread_main, t)) {
            fprintf(stderr, "pagoda: cannot start the thread of tensor parallel rank %d\n", r);
            pagoda_tp_threads_abort(g);
            return 1;
        }
        t->started = 1;
    }
    return 0;
}

static int threads_begin(long n, long pp_size, pagoda_tp_group **out) {
    pagoda_tp_group **groups = NULL;
    if (pagoda_tp_threads_create((int32_t)n, (int32_t)(pp_size > 1 ? pp_size : 1), &groups))
        return cli_error("--tensor-parallel-size");
    if (!(g_tpt.threads = calloc((size_t)n, sizeof *g_tpt.threads))) {
        pagoda_tp_threads_destroy(groups);
        fprintf(stderr, "pagoda: out of memory\n");
        return 1;
    }
    g_tpt.groups = groups, g_tpt.n = (int)n;
    fprintf(stderr, "pagoda: %ld ranks as threads of this process (not under mpirun)\n", n);
    *out = groups[0];
    return 0;
}

static void threads_end(int rc) {
    if (!g_tpt.groups) return;
    if (rc) pagoda_tp_threads_abort(g_tpt.groups[0]);
    for (int r = 1; r < g_tpt.n; r++)
        if (g_tpt.threads[r].started) pthread_join(g_tpt.threads[r].thread, NULL);
    pagoda_tp_threads_destroy(g_tpt.groups);
    free(g_tpt.threads);
    memset(&g_tpt, 0, sizeof g_tpt);
}

int cli_parallel_begin(long tp_size, long pp_size, pagoda_tp_group **out) {
    *out = NULL;
    long n = tp_size * pp_size;
    if (n <= 1) return 0;
    if (!under_mpi_launcher()) return threads_begin(n, pp_size, out);
    char what[96];
    if (pp_size <= 1) snprintf(what, sizeof what, "--tensor-parallel-size %ld", tp_size);
    else snprintf(what, sizeof what, "--tensor-parallel-size %ld x --pipeline-parallel-size %ld", tp_size, pp_size);
    pagoda_status st = pagoda_tp_mpi_create_pp((int32_t)(pp_size > 1 ? pp_size : 1), out);
    if (st == PAGODA_ERR_INVALID) { /* a job the stages do not divide */
        fprintf(stderr, "pagoda: %s: %s (run it under mpirun -np %ld)\n", what, pagoda_last_error(), n);
        return 1;
    }
    if (st) return cli_error(pp_size > 1 ? "--pipeline-parallel-size" : "--tensor-parallel-size");
    if ((*out)->size != n) {
        fprintf(stderr, "pagoda: %s, but this MPI job has %d processes (run it under mpirun -np %ld)\n", what,
                (*out)->size, n);
        pagoda_tp_mpi_destroy(*out, 0);
        *out = NULL;
        return 1;
    }
    return 0;
}

int cli_tp_worker(pagoda_model *m, const pagoda_engine_config *ec) {
    if (pagoda_tp_worker_run(m, ec)) {
        char ctx[64];
        snprintf(ctx, sizeof ctx, "%s rank %d", ec->tp->pp_size > 1 ? "parallel" : "tensor parallel", ec->tp->rank);
        return cli_error(ctx);
    }
    return 0;
}

void cli_comm_stats_begin(pagoda_tp_group *g) { pagoda_tp_mpi_count_comm(g, 1); }

void cli_comm_stats_print(const pagoda_tp_group *g) {
    if (pagoda_tp_threads_is(g)) {
        fprintf(stderr, "pagoda: comm-stats: not counted for ranks that are threads of one process\n");
        return;
    }
    pagoda_tp_comm_stats c;
    pagoda_tp_mpi_get_comm_stats(g, &c);
    /* one fprintf: mpirun forwards each rank's line whole */
    fprintf(stderr, "pagoda: comm-stats rank=%d size=%d pp=%d all_reduce_calls=%llu all_reduce_bytes=%llu "
            "all_reduce_s=%.6f bcast_calls=%llu bcast_bytes=%llu bcast_s=%.6f send_calls=%llu send_bytes=%llu "
            "send_s=%.6f recv_calls=%llu recv_bytes=%llu recv_s=%.6f\n", g ? g->rank : 0, g ? g->size : 1,
            g && g->pp_size > 1 ? g->pp_size : 1, (unsigned long long)c.n_all_reduce,
            (unsigned long long)c.all_reduce_bytes, c.all_reduce_s, (unsigned long long)c.n_bcast,
            (unsigned long long)c.bcast_bytes, c.bcast_s, (unsigned long long)c.n_send,
            (unsigned long long)c.send_bytes, c.send_s, (unsigned long long)c.n_recv,
            (unsigned long long)c.recv_bytes, c.recv_s);
}

void cli_tp_end(pagoda_tp_group *g, int rc) {
    if (g && pagoda_tp_threads_is(g)) {
        threads_end(rc);
        return;
    }
    if (g && rc && g->rank > 0) {
        /* a rank that fails where rank 0 fails too (a model the group cannot split) lets rank 0's
           message come out before the job ends */
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 500000000};
        nanosleep(&ts, NULL);
    }
    pagoda_tp_mpi_destroy(g, rc);
}

void cli_print_version(void) {
    printf("pagoda %s\n", pg_version);
    pagoda_system_info si;
    pagoda_system_get_info(&si);
    printf("cpu: %s kernels, %d threads\n", si.cpu_isa, si.n_cpu_threads);
    if (si.cuda) printf("cuda: built, %d device%s answering\n", si.n_cuda_devices, si.n_cuda_devices == 1 ? "" : "s");
    else printf("cuda: not built\n");
    printf("mpi: %s\n", si.mpi ? "built (--tensor-parallel-size / --pipeline-parallel-size under mpirun)" : "not built");
    if (si.nccl_version)
        printf("nccl: %d.%d.%d (loaded at run time: tensor parallelism on GPUs)\n", si.nccl_version / 10000,
               si.nccl_version / 100 % 100, si.nccl_version % 100);
    else printf("nccl: not available (%s)\n", si.nccl_why);
}
