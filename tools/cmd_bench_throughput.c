/* pagoda bench throughput -m MODEL: offline batched generation through the engine. For each
 * input length x output length x number of concurrent requests, submits that many requests of
 * random prompt tokens (or prompts from a JSONL dataset) at once (generation runs to exactly the output length) and reports
 * requests/s, output tokens/s (end to end and in the decode phase after every prompt is in),
 * total tokens/s, TTFT and TPOT (per request, the time per output token after its first, then
 * the mean over requests: a single sequence's decode speed, whatever the others do). Rows with concurrency 1 are the single-sequence baseline of the same run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli_common.h"
#include "commands.h"
#include "bench_report.h"
#include "jsonl.h"
#include "core/clock.h"
#include "core/fp16.h"
#include "format/gguf.h"
#include "model/model.h"

static const char k_usage[] =
            "usage: pagoda bench throughput -m MODEL [options]\n"
            "  -m, --model PATH     .gguf file or Hugging Face model folder\n"
            "  --lens LIST          input/output token lengths, e.g. 128/128,512/128 (default 128/128)\n"
            "  -c, --concurrency L  concurrent requests per row, e.g. 1,8,32 (default 1,8,32)\n"
            "  -n N                 requests per row (default: the concurrency, i.e. one wave)\n"
            "  -t N                 threads (default: all cores)\n"
            "  --kv-mem SIZE        KV cache budget, e.g. 2G (default: a quarter of free memory)\n"
            CLI_DEVICE_HELP
            "  --max-batch-tokens N tokens per engine step (default 256)\n"
            "  -r N                 repetitions, rows interleaved; medians are reported (default 1)\n"
            "  --seed N             prompt token seed (default 1)\n"
            "  --temperature T      sampling temperature (default 0: greedy); each request seeded\n"
            "  --top-p P            nucleus sampling (default 1: off)\n"
            "  --top-k K            top-k sampling (default 0: off)\n"
            "  --dataset PATH       prompts from a JSONL file (\"prompt\" or \"text\" per line, .gz ok;\n"
            "                       'humaneval': ../shared/data/HumanEval.jsonl.gz) instead of random\n"
            "                       tokens (special-token text parsed); the IN of --lens is then ignored\n"
            "                       and the mean is shown\n"
            "  --json-schema FILE   structured output: every row also runs with each request constrained\n"
            "                       by this JSON Schema, next to the same row free (alternated)\n"
            "  --regex PATTERN      the same with a regular expression\n"
            "  --gbnf FILE          the same with a GBNF grammar\n"
            "  --lora N:RANK[:f16|f32]\n"
            "                       every row also runs with N synthetic LoRA adapters of rank RANK (f16,\n"
            "                       the default, as convert_lora_to_gguf writes them, or f32) on\n"
            "                       all projections, requests spread round-robin over them (CPU only)\n"
            "  --json PATH          also write the rows as JSON\n"
            "  --svg PATH           plot: tokens/s against concurrent requests, a line per length pair\n";

static void usage(void) { fputs(k_usage, stderr); }

typedef struct {
    int32_t generated, first_tokens, done, n_requests;
    double ttft_sum;     /* seconds from submit to first token, summed over requests */
    double *t_submit;    /* [n_requests] */
    double *t_first;     /* [n_requests] when each got its first token */
    double tpot_sum;     /* seconds per output token after the first, summed over requests */
    int32_t tpot_n;
    double t_last_first; /* when the last request got its first token */
    int32_t gen_at_last_first;
    int32_t failed;      /* requests that ended with an error */
    char error[256];     /* the first error */
} progress;

/* the request's slot: user points at p->t_submit[k] */
typedef struct {
    progress *p;
    int32_t k;
} req_slot;

static void on_event(const pagoda_event *ev, void *user) {
    req_slot *rs = user;
    progress *p = rs->p;
    if (ev->token >= 0) {
        p->generated++;
        if (ev->n_completion_tokens == 1) p->t_first[rs->k] = pg_now_s(), p->ttft_sum += p->t_first[rs->k] - p->t_submit[rs->k];
        if (ev->n_completion_tokens == 1 && ++p->first_tokens == p->n_requests) {
            p->t_last_first = pg_now_s();
            p->gen_at_last_first = p->generated;
        }
    }
    if (ev->finish == PAGODA_FINISH_ERROR && p->failed++ == 0)
        snprintf(p->error, sizeof p->error, "%s", ev->error ? ev->error : "unknown error");
    if (ev->request_done) {
        p->done++;
        if (ev->n_completion_tokens > 1 && p->t_first[rs->k] > 0)
            p->tpot_sum += (pg_now_s() - p->t_first[rs->k]) / (ev->n_completion_tokens - 1), p->tpot_n++;
    }
}

/* Tokenized dataset prompts, used round-robin. */
typedef struct {
    int32_t **ids;
    int32_t *n;
    size_t count, next;
} dataset;

static int dataset_load(const char *path, pagoda_model *pm, dataset *d) {
    char buf[4096];
    if (!strcmp(path, "humaneval")) {
        if (jsonl_find_humaneval(buf, sizeof buf)) {
            fprintf(stderr, "pagoda: HumanEval.jsonl.gz not found (set PAGODA_SHARED or give a path)\n");
            return 1;
        }
        path = buf;
    }
    json_t **rows;
    size_t n_rows;
    if (jsonl_load(path, &rows, &n_rows)) return 1;
    d->ids = calloc(n_rows ? n_rows : 1, sizeof *d->ids);
    d->n = calloc(n_rows ? n_rows : 1, sizeof *d->n);
    int rc = !d->ids || !d->n;
    for (size_t i = 0; !rc && i < n_rows; i++) {
        const char *text = jsonl_str(rows[i], "prompt");
        if (!text) text = jsonl_str(rows[i], "text");
        if (!text) continue;
        size_t n = 0;
        /* special-token text ("<|im_start|>") is parsed, as servers do with raw prompts: chat-formatted
         * workloads (bench/spec_workload.py) keep their markers */
        if (pagoda_tokenize(pm, text, strlen(text), 1, 1, &d->ids[d->count], &n)) {
            rc = cli_error("dataset prompt");
            break;
        }
        d->n[d->count++] = (int32_t)n;
    }
    jsonl_free(rows, n_rows);
    if (!rc && d->count == 0) {
        fprintf(stderr, "pagoda: %s: no line has a \"prompt\" or \"text\" string\n", path);
        rc = 1;
    }
    return rc;
}

static void dataset_free(dataset *d) {
    for (size_t i = 0; i < d->count; i++) free(d->ids[i]);
    free(d->ids), free(d->n);
}

/* how every request samples (vLLM's benchmark_throughput samples at temperature 1) */
typedef struct {
    float temperature, top_p;
    long top_k;
} sampling_opts;

typedef struct {
    int32_t in_len, out_len, conc, n_req;
    int constrained;  /* the twin row: requests carry the grammar, or the LoRA adapters */
    double seconds, req_s, out_tok_s, decode_tok_s, total_tok_s, ttft_ms;
    double tpot_ms; /* mean over requests of the time per output token after the first */
    double spec_drafts, spec_proposed, spec_accepted; /* speculation in the row's run */
    double host_ms; /* per engine step, outside the forward pass (scheduling, sampling, events) */
} row;

static int run_row(pagoda_engine *e, int32_t V, row *r, uint64_t *seed, dataset *ds, int32_t max_len,
                   const sampling_opts *so, pagoda_grammar *grammar, const int32_t *lora_ids, int n_lora) {
    progress p = {.n_requests = r->n_req};
    int32_t *prompt = malloc(sizeof(int32_t) * ((size_t)r->in_len + 1));
    req_slot *slots = malloc(sizeof *slots * (size_t)r->n_req);
    p.t_submit = malloc(sizeof(double) * (size_t)r->n_req);
    p.t_first = calloc((size_t)r->n_req, sizeof(double));
    if (!prompt || !slots || !p.t_submit || !p.t_first) {
        free(prompt), free(slots), free(p.t_submit), free(p.t_first);
        return 1;
    }
    int64_t prompt_tokens = 0;
    int32_t submitted = 0, live = 0;
    pagoda_engine_stats s0, s1;
    pagoda_engine_get_stats(e, &s0);
    double t0 = pg_now_s();
    while (p.done < r->n_req) {
        /* keep `conc` requests in flight */
        while (submitted < r->n_req && submitted - p.done < r->conc) {
            const int32_t *ids = prompt;
            int32_t n_ids = r->in_len;
            if (ds && ds->count) { /* the next dataset prompt, cut to leave room for the output */
                size_t k = ds->next++ % ds->count;
                ids = ds->ids[k], n_ids = ds->n[k];
                if (n_ids > max_len - r->out_len) n_ids = max_len - r->out_len;
            } else {
                for (int32_t i = 0; i < r->in_len; i++) {
                    *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
                    prompt[i] = (int32_t)((*seed >> 33) % (uint64_t)V);
                }
            }
            prompt_tokens += n_ids;
            pagoda_request q;
            pagoda_request_default(&q);
            q.prompt_tokens = ids, q.n_prompt_tokens = n_ids, q.max_tokens = r->out_len;
            q.ignore_eos = 1;
            q.sampling.temperature = so->temperature, q.sampling.top_p = so->top_p, q.sampling.top_k = (int32_t)so->top_k;
            q.sampling.seed = submitted + 1;
            if (r->constrained) q.grammar = grammar;
            if (r->constrained && n_lora) q.adapter = lora_ids[submitted % n_lora];
            slots[submitted] = (req_slot){&p, submitted};
            p.t_submit[submitted] = pg_now_s();
            q.on_event = on_event, q.user = &slots[submitted];
            if (pagoda_engine_submit(e, &q, NULL)) {
                free(prompt), free(slots), free(p.t_submit), free(p.t_first);
                return cli_error("submit");
            }
            submitted++;
        }
        pagoda_engine_step(e, &live);
    }
    double t1 = pg_now_s();
    pagoda_engine_get_stats(e, &s1);
    free(prompt), free(slots), free(p.t_submit), free(p.t_first);
    r->tpot_ms = p.tpot_n ? 1e3 * p.tpot_sum / p.tpot_n : 0;
    r->ttft_ms = p.first_tokens ? 1e3 * p.ttft_sum / p.first_tokens : 0;
    if (p.failed) { /* a figure over failed requests would mean nothing */
        fprintf(stderr, "pagoda: %d of %d requests failed: %s\n", p.failed, r->n_req, p.error);
        return 1;
    }
    r->seconds = t1 - t0;
    r->spec_drafts = (double)(s1.n_spec_drafts - s0.n_spec_drafts);
    r->spec_proposed = (double)(s1.n_spec_proposed - s0.n_spec_proposed);
    r->spec_accepted = (double)(s1.n_spec_accepted - s0.n_spec_accepted);
    uint64_t steps = s1.n_steps - s0.n_steps;
    r->host_ms = steps ? 1e3 * ((s1.step_seconds - s1.forward_seconds) - (s0.step_seconds - s0.forward_seconds)) / (double)steps : 0;
    r->req_s = r->n_req / r->seconds;
    r->out_tok_s = p.generated / r->seconds;
    r->total_tok_s = ((double)prompt_tokens + p.generated) / r->seconds;
    if (ds && ds->count) r->in_len = (int32_t)(prompt_tokens / r->n_req); /* the mean, for the table */
    r->decode_tok_s = t1 > p.t_last_first && p.generated > p.gen_at_last_first
                          ? (p.generated - p.gen_at_last_first) / (t1 - p.t_last_first) : 0;
    return 0;
}

static int parse_list(const char *opt, const char *s, int32_t *v, int max, int *n) {
    *n = 0;
    for (const char *p = s; *p && *n < max;) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x <= 0 || x > 100000) {
            fprintf(stderr, "pagoda: %s expects a list of positive integers, got '%s'\n", opt, s);
            return 1;
        }
        v[(*n)++] = (int32_t)x;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            fprintf(stderr, "pagoda: %s expects a comma-separated list, got '%s'\n", opt, s);
            return 1;
        }
    }
    return 0;
}

/* Decode and whole-run output tokens/s against concurrency: rows come n_conc per length pair, each
 * followed by its twin (constrained or adapted, named twin_name) when twin_name is set. */
static void write_svg(const char *path, const char *model, const row *rows, int n_rows, int n_conc, const char *twin_name) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "pagoda: cannot write %s\n", path);
        return;
    }
    enum { MAX_SERIES = 32 };
    const int per = twin_name ? 2 : 1;
    br_series series[MAX_SERIES];
    double x[MAX_SERIES][16], y[MAX_SERIES][16];
    char names[MAX_SERIES][96];
    size_t ns = 0;
    for (int i = 0; i + n_conc * per <= n_rows && ns + 2 * (size_t)per <= MAX_SERIES; i += n_conc * per)
        for (int v = 0; v < per; v++) {
            const size_t n = (size_t)(n_conc < 16 ? n_conc : 16);
            for (size_t k = 0; k < n; k++) {
                const row *r = &rows[i + (int)k * per + v];
                x[ns][k] = x[ns + 1][k] = r->conc;
                y[ns][k] = r->decode_tok_s;
                y[ns + 1][k] = r->out_tok_s;
            }
            const char *tw = v ? twin_name : NULL;
            snprintf(names[ns], sizeof names[ns], "%d/%d decode%s%s", rows[i].in_len, rows[i].out_len, tw ? ", " : "", tw ? tw : "");
            snprintf(names[ns + 1], sizeof names[ns + 1], "%d/%d whole run%s%s", rows[i].in_len, rows[i].out_len, tw ? ", " : "",
                     tw ? tw : "");
            const int color = (int)(ns / 2);
            series[ns] = (br_series){names[ns], x[ns], y[ns], n, 0, 1, color};
            series[ns + 1] = (br_series){names[ns + 1], x[ns + 1], y[ns + 1], n, 1, 1, color};
            ns += 2;
        }
    char title[512];
    const char *base = strrchr(model, '/');
    snprintf(title, sizeof title, "pagoda bench throughput: %s", base ? base + 1 : model);
    br_chart c = {.title = title, .xlabel = "concurrent requests", .ylabel = "output tokens/s", .logx = 1, .ymin_zero = 1};
    br_svg_lines(f, &c, series, ns);
    fclose(f);
}

/* Writes a GGUF LoRA of this rank on every projection of the model at model_path (random
 * weights, small enough to keep generation sane; f16 as llama.cpp's convert_lora_to_gguf writes
 * by default, or f32) and loads it into e. */
static int bench_lora_synthetic(pagoda_engine *e, const char *model_path, int rank, int k, int f16, int32_t *id) {
    pg_model *m = NULL;
    if (model_load(model_path, &m)) return cli_error("lora");
    char path[256];
    snprintf(path, sizeof path, "/tmp/pagoda-bench-lora-%d-%d.gguf", (int)getpid(), k);
    static const char *names[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    gguf_writer *w = gguf_writer_create();
    int bad = !w || gguf_writer_set_str(w, "general.architecture", "llama") || gguf_writer_set_str(w, "general.type", "adapter") ||
              gguf_writer_set_str(w, "adapter.type", "lora") || gguf_writer_set_f32(w, "adapter.lora.alpha", (float)rank);
    int64_t biggest = 0;
    for (int32_t l = 0; l < m->cfg.n_layer && !bad; l++) {
        const pg_layer_weights *L = &m->layers[l];
        const pg_weight *ws[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int t = 0; t < 7 && !bad; t++) {
            if (!ws[t]->data) continue;
            char n[96];
            int64_t ne_a[2] = {ws[t]->n_in, rank}, ne_b[2] = {rank, ws[t]->n_out};
            snprintf(n, sizeof n, "blk.%d.%s.weight.lora_a", l, names[t]);
            bad |= gguf_writer_add_tensor(w, n, f16 ? PAGODA_DTYPE_F16 : PAGODA_DTYPE_F32, 2, ne_a) != 0;
            snprintf(n, sizeof n, "blk.%d.%s.weight.lora_b", l, names[t]);
            bad |= gguf_writer_add_tensor(w, n, f16 ? PAGODA_DTYPE_F16 : PAGODA_DTYPE_F32, 2, ne_b) != 0;
            if (ws[t]->n_in > biggest) biggest = ws[t]->n_in;
            if (ws[t]->n_out > biggest) biggest = ws[t]->n_out;
        }
    }
    float *buf = bad ? NULL : malloc(sizeof(float) * (size_t)(biggest * rank));
    bad |= !buf || gguf_writer_begin(w, path) != 0;
    uint64_t s = 0x5eed + (uint64_t)k;
    for (int32_t l = 0; l < m->cfg.n_layer && !bad; l++) {
        const pg_layer_weights *L = &m->layers[l];
        const pg_weight *ws[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int t = 0; t < 7 && !bad; t++) {
            if (!ws[t]->data) continue;
            for (int ab = 0; ab < 2 && !bad; ab++) {
                int64_t n = rank * (ab ? ws[t]->n_out : ws[t]->n_in);
                for (int64_t i = 0; i < n; i++) {
                    s = s * 6364136223846793005ull + 1442695040888963407ull;
                    buf[i] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.02f;
                }
                uint16_t *h = (uint16_t *)buf; /* in place, front to back: h[i] overwrites bytes buf[0..i] only */
                for (int64_t i = 0; f16 && i < n; i++) h[i] = pg_fp32_to_fp16(buf[i]);
                bad |= gguf_writer_write_tensor(w, buf, (f16 ? sizeof(uint16_t) : sizeof(float)) * (size_t)n) != 0;
            }
        }
    }
    bad |= !w || gguf_writer_end(w) != 0;
    gguf_writer_destroy(w);
    free(buf);
    model_free(m);
    bad |= bad ? 1 : pagoda_engine_adapter_load(e, path, 0, id) != 0;
    remove(path);
    return bad ? cli_error("lora") : 0;
}

int cmd_bench_throughput(int argc, char **argv) {
    const char *model = NULL, *json_path = NULL, *lens = "128/128", *conc_list = "1,8,32", *dataset_path = NULL, *svg_path = NULL;
    const char *schema_path = NULL, *regex = NULL, *gbnf_path = NULL, *lora = NULL;
    long n_req = 0, threads = 0, max_batch = 256, seed_opt = 1, reps = 1;
    uint64_t kv_mem = 0;
    sampling_opts so = {.temperature = 0, .top_p = 1, .top_k = 0};
    cli_device dev;
    cli_device_default(&dev);
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(), 0;
        if (!cli_option_listed(a, k_usage)) return cli_unknown_option("pagoda bench throughput", a, k_usage);
        if (!v) { fprintf(stderr, "pagoda bench throughput: option '%s' needs a value\n", a); return 2; }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--lens")) lens = v;
        else if (!strcmp(a, "-c") || !strcmp(a, "--concurrency")) conc_list = v;
        else if (!strcmp(a, "-n")) bad = cli_int(a, v, 1, 100000, &n_req);
        else if (!strcmp(a, "-t")) bad = cli_int(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "--max-batch-tokens")) bad = cli_int(a, v, 1, 65536, &max_batch), dev.max_batch_given = 1;
        else if (cli_device_option(a, v, &dev, &bad)) {}
        else if (!strcmp(a, "-r")) bad = cli_int(a, v, 1, 100, &reps);
        else if (!strcmp(a, "--seed")) bad = cli_int(a, v, 0, 1L << 30, &seed_opt);
        else if (!strcmp(a, "--temperature")) bad = cli_temperature(a, v, &so.temperature);
        else if (!strcmp(a, "--top-p")) bad = cli_top_p(a, v, &so.top_p);
        else if (!strcmp(a, "--top-k")) bad = cli_int(a, v, 0, 1L << 30, &so.top_k);
        else if (!strcmp(a, "--kv-mem")) bad = cli_size(a, v, &kv_mem);
        else if (!strcmp(a, "--json")) json_path = v;
        else if (!strcmp(a, "--json-schema")) schema_path = v;
        else if (!strcmp(a, "--regex")) regex = v;
        else if (!strcmp(a, "--gbnf")) gbnf_path = v;
        else if (!strcmp(a, "--dataset")) dataset_path = v;
        else if (!strcmp(a, "--svg")) svg_path = v;
        else if (!strcmp(a, "--lora")) lora = v;
        else return cli_unknown_option("pagoda bench throughput", a, k_usage);
        if (bad) return 2;
    }
    if (!model) { usage(); return 2; }
    int32_t concs[16], ins[16], outs[16];
    int n_conc, n_lens = 0;
    if (parse_list("--concurrency", conc_list, concs, 16, &n_conc)) return 2;
    for (const char *p = lens; *p && n_lens < 16;) {
        long a, b;
        int used = 0;
        if (sscanf(p, "%ld/%ld%n", &a, &b, &used) != 2 || a < (dataset_path ? 0 : 1) || b <= 0 || a > 1000000 || b > 1000000) {
            fprintf(stderr, "pagoda: --lens expects IN/OUT[,IN/OUT...], got '%s'\n", lens);
            return 2;
        }
        ins[n_lens] = (int32_t)a, outs[n_lens] = (int32_t)b, n_lens++;
        p += used;
        if (*p == ',') p++;
        else if (*p) { fprintf(stderr, "pagoda: --lens expects IN/OUT[,IN/OUT...], got '%s'\n", lens); return 2; }
    }
    int32_t max_conc = 1;
    for (int i = 0; i < n_conc; i++) max_conc = concs[i] > max_conc ? concs[i] : max_conc;

    pagoda_model *pm;
    if (cli_model_load(model, &pm)) return 1;
    dataset ds = {0};
    if (dataset_path && dataset_load(dataset_path, pm, &ds)) {
        dataset_free(&ds);
        pagoda_model_free(pm);
        return 1;
    }
    pagoda_engine_config c;
    pagoda_engine_config_default(&c);
    c.n_threads = (int32_t)threads, c.kv_mem_bytes = kv_mem, c.max_batch_tokens = (int32_t)max_batch;
    c.max_seqs = max_conc;
    cli_device_apply(&dev, &c);
    pagoda_grammar *grammar = NULL;
    double compile_ms = 0;
    if (!!schema_path + !!regex + !!gbnf_path > 1) {
        fprintf(stderr, "pagoda: give at most one of --json-schema, --regex, --gbnf\n");
        dataset_free(&ds);
        pagoda_model_free(pm);
        return 2;
    }
    if (schema_path || regex || gbnf_path) {
        char *text = NULL;
        size_t len = 0;
        if (!regex && jsonl_read_file(schema_path ? schema_path : gbnf_path, (size_t)16 << 20, &text, &len)) {
            dataset_free(&ds);
            pagoda_model_free(pm);
            return 1;
        }
        pagoda_grammar_spec spec = {.kind = schema_path ? PAGODA_GRAMMAR_JSON_SCHEMA : regex ? PAGODA_GRAMMAR_REGEX : PAGODA_GRAMMAR_GBNF,
                                    .text = regex ? regex : text, .len = regex ? strlen(regex) : len};
        double tc = pg_now_s();
        pagoda_status gs = pagoda_grammar_compile(pm, &spec, &grammar);
        compile_ms = 1e3 * (pg_now_s() - tc);
        free(text);
        if (gs) {
            cli_error("grammar");
            dataset_free(&ds);
            pagoda_model_free(pm);
            return 1;
        }
        fprintf(stderr, "pagoda: grammar compiled in %.2f ms\n", compile_ms);
    }
    int n_lora = 0, lora_rank = 0, lora_f16 = 1;
    int32_t lora_ids[255];
    char lora_dt[8] = "f16";
    int n_fields = lora ? sscanf(lora, "%d:%d:%7s", &n_lora, &lora_rank, lora_dt) : 0;
    if (lora && (n_fields < 2 || n_lora < 1 || n_lora > 255 || lora_rank < 1 || lora_rank > 1024 || grammar ||
                 (strcmp(lora_dt, "f16") && strcmp(lora_dt, "f32")))) {
        fprintf(stderr, "pagoda: --lora expects N:RANK[:f16|f32] (1 <= N <= 255, 1 <= RANK <= 1024), without a grammar; got '%s'\n", lora);
        pagoda_grammar_unref(grammar);
        dataset_free(&ds);
        pagoda_model_free(pm);
        return 2;
    }
    if (n_lora) c.max_adapters = n_lora;
    lora_f16 = !strcmp(lora_dt, "f16");
    /* twins run the same prompts: the second must not find the first's KV in the prefix cache */
    int twins = grammar || n_lora;
    if (twins) c.prefix_caching = 0;
    pagoda_engine *e;
    if (pagoda_engine_create(pm, &c, &e)) {
        pagoda_grammar_unref(grammar);
        dataset_free(&ds);
        pagoda_model_free(pm);
        return cli_error("engine");
    }
    pagoda_model_info info;
    pagoda_model_get_info(pm, &info);
    pagoda_engine_stats st;
    pagoda_engine_get_stats(e, &st);
    fprintf(stderr, "pagoda: KV cache %d blocks x %d tokens; max %d tokens per step\n", st.kv_blocks_total, st.kv_block_size,
            (int)c.max_batch_tokens);
    uint64_t seed = (uint64_t)seed_opt;
    for (int k = 0; k < n_lora; k++)
        if (bench_lora_synthetic(e, model, lora_rank, k, lora_f16, &lora_ids[k])) goto fail;
    if (n_lora) fprintf(stderr, "pagoda: %d synthetic LoRA adapters of rank %d on every projection (%s)\n", n_lora, lora_rank, lora_dt);
    { /* warm-up: page in weights and scratch, settle the thread pool */
        row w = {.in_len = 16, .out_len = 4, .conc = 1, .n_req = 1};
        if (run_row(e, info.n_vocab, &w, &seed, NULL, st.max_model_len, &so, NULL, NULL, 0)) goto fail;
    }
    row rows[256];
    int n_rows = 0;
    for (int l = 0; l < n_lens; l++)
        for (int k = 0; k < n_conc && n_rows < 256; k++) {
            row *r = &rows[n_rows];
            memset(r, 0, sizeof *r);
            r->in_len = ins[l], r->out_len = outs[l], r->conc = concs[k];
            r->n_req = n_req > 0 ? (int32_t)n_req : concs[k];
            if ((int64_t)(dataset_path ? 1 : r->in_len) + r->out_len > st.max_model_len) {
                fprintf(stderr, "pagoda: skipping %d/%d: over the context of %d tokens\n", r->in_len, r->out_len, st.max_model_len);
                continue;
            }
            n_rows++;
            if (twins && n_rows < 256) { /* its constrained (or adapted) twin, right after it */
                rows[n_rows] = *r;
                rows[n_rows++].constrained = 1;
            }
        }
    /* repetitions go round all rows, so a slow spell of a shared machine hits every row alike */
    enum { NS = 10 }; /* figures kept per repetition */
    double *samples = calloc((size_t)n_rows * (size_t)reps * NS, sizeof(double));
    if (!samples) goto fail;
    for (long rep = 0; rep < reps; rep++)
        for (int i = 0; i < n_rows; i++) {
            /* twins alternate which goes first, and see the same prompts */
            int j = twins && rep % 2 ? i ^ 1 : i;
            row x = rows[j];
            uint64_t row_seed = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(rep * 1000 + (twins ? j / 2 : j) + 1);
            fprintf(stderr, "\rrepetition %ld/%ld: %d/%d x %d%s      ", rep + 1, reps, x.in_len, x.out_len, x.conc,
                    x.constrained ? " constrained" : "");
            if (run_row(e, info.n_vocab, &x, &row_seed, &ds, st.max_model_len, &so, grammar, lora_ids, n_lora)) {
                free(samples);
                goto fail;
            }
            double *smp = samples + ((size_t)j * (size_t)reps + (size_t)rep) * NS;
            smp[0] = x.seconds, smp[1] = x.out_tok_s, smp[2] = x.decode_tok_s, smp[3] = x.total_tok_s, smp[4] = x.host_ms;
            smp[5] = x.ttft_ms, smp[6] = x.tpot_ms;
            smp[7] = x.spec_drafts, smp[8] = x.spec_proposed, smp[9] = x.spec_accepted;
            if (dataset_path) rows[j].in_len = x.in_len;
        }
    fprintf(stderr, "\n");
    char lname[32];
    snprintf(lname, sizeof lname, "lora %dx r%d", n_lora, lora_rank);
    const char *gname = n_lora ? lname : schema_path ? "json_schema" : regex ? "regex" : "gbnf";
    if (grammar) printf("grammar compiled in %.2f ms (not in the rows: compiled once, as the server's cache does)\n\n", compile_ms);
    printf("| %6s | %6s | %5s | %5s |%s %8s | %10s | %10s | %10s | %10s | %9s | %8s | %12s |\n", "input", "output", "conc", "reqs",
           grammar ? " grammar     |" : n_lora ? " adapters    |" : "", "seconds", "req/s", "out tok/s", "decode t/s", "total t/s", "TTFT ms",
           "TPOT ms", "host ms/step");
    printf("|-------:|-------:|------:|------:|%s---------:|-----------:|-----------:|-----------:|-----------:|----------:|---------:|-------------:|\n",
           twins ? ":------------|" : "");
    for (int i = 0; i < n_rows; i++) {
        row *r = &rows[i];
        /* the repetition of median duration gives all the row's figures, so they agree */
        double v[100];
        for (long rep = 0; rep < reps; rep++) v[rep] = samples[((size_t)i * (size_t)reps + (size_t)rep) * NS];
        double med = cli_median(v, reps);
        const double *pick = NULL;
        for (long rep = 0; rep < reps; rep++) {
            const double *smp = samples + ((size_t)i * (size_t)reps + (size_t)rep) * NS;
            if (!pick || fabs(smp[0] - med) < fabs(pick[0] - med)) pick = smp;
        }
        r->seconds = pick[0], r->out_tok_s = pick[1], r->decode_tok_s = pick[2], r->total_tok_s = pick[3];
        r->host_ms = pick[4], r->ttft_ms = pick[5], r->tpot_ms = pick[6];
        r->spec_drafts = pick[7], r->spec_proposed = pick[8], r->spec_accepted = pick[9];
        r->req_s = r->n_req / r->seconds;
        char gcol[64] = "";
        if (twins) snprintf(gcol, sizeof gcol, " %-11s |", r->constrained ? gname : "-");
        printf("| %6d | %6d | %5d | %5d |%s %8.2f | %10.2f | %10.1f | %10.1f | %10.1f | %9.2f | %8.3f | %12.3f |\n", r->in_len,
               r->out_len, r->conc, r->n_req, gcol, r->seconds, r->req_s, r->out_tok_s, r->decode_tok_s, r->total_tok_s,
               r->ttft_ms, r->tpot_ms, r->host_ms);
        if (r->spec_drafts > 0)
            printf("|        |        |       |       |%s speculation: %.0f drafts, %.0f of %.0f draft tokens accepted (%.1f%%), "
                   "mean accepted length %.2f |\n", twins ? "             |" : "", r->spec_drafts, r->spec_accepted,
                   r->spec_proposed, 100 * r->spec_accepted / r->spec_proposed, 1 + r->spec_accepted / r->spec_drafts);
        if (twins && r->constrained && i > 0) { /* against its free (base) twin */
            const row *f = &rows[i - 1];
            printf("|        |        |       |       | ratio       |          |            | %9.3fx | %9.3fx |            | %8.3fx | %7.3fx |              |\n",
                   f->out_tok_s > 0 ? r->out_tok_s / f->out_tok_s : 0, f->decode_tok_s > 0 ? r->decode_tok_s / f->decode_tok_s : 0,
                   f->ttft_ms > 0 ? r->ttft_ms / f->ttft_ms : 0, f->tpot_ms > 0 ? r->tpot_ms / f->tpot_ms : 0);
        }
    }
    free(samples);
    pagoda_engine_get_stats(e, &st);
    fprintf(stderr, "pagoda: %llu steps, %llu preemptions\n", (unsigned long long)st.n_steps, (unsigned long long)st.n_preemptions);
    if (st.n_spec_drafts) /* every row together (each row's run is in the table) */
        printf("\nspeculation: %llu drafts verified, %llu of %llu draft tokens accepted (%.1f%%), mean accepted length %.2f\n",
               (unsigned long long)st.n_spec_drafts, (unsigned long long)st.n_spec_accepted,
               (unsigned long long)st.n_spec_proposed, 100.0 * (double)st.n_spec_accepted / (double)st.n_spec_proposed,
               1.0 + (double)st.n_spec_accepted / (double)st.n_spec_drafts);
    if (json_path) {
        json_t *arr = json_array();
        for (int i = 0; i < n_rows; i++)
            json_array_append_new(arr, json_pack("{s:i, s:i, s:i, s:i, s:b, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "input_len", rows[i].in_len,
                                                 "output_len", rows[i].out_len, "concurrency", rows[i].conc, "requests",
                                                 rows[i].n_req, "constrained", rows[i].constrained, "seconds", rows[i].seconds, "requests_per_s", rows[i].req_s,
                                                 "output_tokens_per_s", rows[i].out_tok_s, "decode_tokens_per_s",
                                                 rows[i].decode_tok_s, "total_tokens_per_s", rows[i].total_tok_s,
                                                 "host_ms_per_step", rows[i].host_ms, "ttft_ms", rows[i].ttft_ms,
                                                 "tpot_ms", rows[i].tpot_ms, "spec_drafts", rows[i].spec_drafts,
                                                 "spec_draft_tokens", rows[i].spec_proposed, "spec_accepted_tokens",
                                                 rows[i].spec_accepted));
        json_t *root = json_pack("{s:s, s:s, s:i, s:o}", "model", model, "arch", info.arch, "threads", (int)threads, "rows", arr);
        json_object_set_new(root, "spec_drafts", json_integer((json_int_t)st.n_spec_drafts));
        json_object_set_new(root, "spec_draft_tokens", json_integer((json_int_t)st.n_spec_proposed));
        json_object_set_new(root, "spec_accepted_tokens", json_integer((json_int_t)st.n_spec_accepted));
        if (json_dump_file(root, json_path, JSON_INDENT(2))) fprintf(stderr, "pagoda: cannot write %s\n", json_path);
        json_decref(root);
    }
    if (svg_path) write_svg(svg_path, model, rows, n_rows, n_conc, twins ? gname : NULL);
    pagoda_engine_destroy(e);
    pagoda_grammar_unref(grammar);
    dataset_free(&ds);
    pagoda_model_free(pm);
    return 0;
fail:
    pagoda_engine_destroy(e);
    pagoda_grammar_unref(grammar);
    dataset_free(&ds);
    pagoda_model_free(pm);
    return 1;
}
