/* pagoda imatrix -m MODEL -f TEXT -o OUT [-c 512] [--chunks N] [--output-format gguf|dat] ...
 * The importance matrix llama.cpp's llama-imatrix computes, for `pagoda quantize --imatrix` and
 * llama-quantize --imatrix:
 *  - the whole text is tokenized once, with the model's BOS when it adds one (special tokens are
 *    not parsed); at least 2 x n_ctx tokens are needed; it is cut into chunks of n_ctx tokens (the
 *    tail is not used), at most --chunks of them;
 *  - each chunk is an independent sequence from position 0 (empty KV cache); when the model adds
 *    a BOS, the chunk's first input token is replaced by it;
 *  - every product over a weight named blk.* (and output.weight with --process-output, which then
 *    sees every token: llama-imatrix asks for all logits) whose input has at least 16 rows adds,
 *    per input column j, x[t][j]^2 over its rows to in_sum2 (x[t][j] to in_sum) and its row count
 *    to the tensor's count: every token of the chunk counts;
 *  - GGUF output (default): general.type "imatrix", imatrix.datasets [TEXT as given],
 *    imatrix.chunk_count and imatrix.chunk_size (u32), then per tensor in name order
 *    <name>.in_sum2 F32 [n_in, 1], <name>.counts F32 [1, 1], <name>.in_sum F32 [n_in, 1];
 *    legacy .dat: per tensor in name order its name, ncall = ceil(count / n_ctx) and the values
 *    in_sum2 / count * ncall, then the chunk count and TEXT (imatrix_file.h has both layouts).
 *  - the file is written every --output-frequency chunks (default 10) and at the end, as
 *    llama-imatrix does; the perplexity of the chunks (second halves, as llama-perplexity scores)
 *    is printed unless --no-ppl.
 * Activations are observed in the CPU backend's products (pg_forward_opts.observe): the model runs
 * on the CPU. GGUF models only: a Hugging Face folder's tensor names are not llama.cpp's (convert
 * it to GGUF first). Models with expert (MoE) layers are not run by pagoda at all. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_common.h"
#include "commands.h"
#include "core/clock.h"
#include "engine/model_api.h"
#include "format/gguf.h"
#include "model/forward.h"

static const char k_usage[] =
    "usage: pagoda imatrix -m MODEL -f TEXT -o OUT [-c N_CTX] [--chunks N] [--output-format gguf|dat]\n"
    "                      [--process-output] [--output-frequency N] [--no-ppl] [-t THREADS]\n"
    "  computes llama.cpp's importance matrix (as llama-imatrix) for quantize --imatrix\n"
    "  -m, --model PATH       .gguf model (Hugging Face folders: convert to GGUF first)\n"
    "  -f, --file TEXT        the calibration text (UTF-8)\n"
    "  -o, --output OUT       the imatrix file to write\n"
    "  -c, --ctx-size N       tokens per chunk (default 512); the text must give at least 2 chunks\n"
    "  --chunks N             at most N chunks (default: all the text gives)\n"
    "  --output-format F      gguf (default; llama-imatrix's current format) or dat (the legacy one)\n"
    "  --process-output       also collect output.weight (the LM head), as llama-imatrix --process-output\n"
    "  --output-frequency N   write OUT every N chunks (default 10) as well as at the end\n"
    "  --no-ppl               do not compute the chunks' perplexity\n"
    "  -t, --threads N        threads (default: all cores)\n";

typedef struct {
    const char *name; /* the model's (borrowed) */
    int64_t n_in;
    double *sum2, *sum; /* [n_in] */
    int64_t count;      /* rows seen */
} im_entry;

typedef struct {
    im_entry *e;
    int n, cap;
    int process_output;
    int failed;
    char error[256];
} collector;

static int cmp_entry(const void *a, const void *b) { return strcmp(((const im_entry *)a)->name, ((const im_entry *)b)->name); }

static void observe(void *user, const char *name, const float *x, int32_t T, int64_t n_in) {
    collector *c = user;
    if (c->failed || T < 16) return; /* llama-imatrix ignores products over fewer than 16 rows */
    if (strncmp(name, "blk.", 4) && !(c->process_output && !strcmp(name, "output.weight"))) return;
    im_entry *e = NULL;
    for (int i = 0; i < c->n && !e; i++) /* a few hundred tensors, one look-up per product */
        if (c->e[i].name == name || !strcmp(c->e[i].name, name)) e = &c->e[i];
    if (!e) {
        if (c->n == c->cap) {
            int cap = c->cap ? 2 * c->cap : 64;
            im_entry *ne = realloc(c->e, sizeof *ne * (size_t)cap);
            if (!ne) goto nomem;
            c->e = ne, c->cap = cap;
        }
        e = &c->e[c->n];
        *e = (im_entry){.name = name, .n_in = n_in, .sum2 = calloc((size_t)n_in, sizeof(double)),
                        .sum = calloc((size_t)n_in, sizeof(double))};
        if (!e->sum2 || !e->sum) {
            free(e->sum2), free(e->sum);
            goto nomem;
        }
        c->n++;
    } else if (e->n_in != n_in) {
        c->failed = 1;
        snprintf(c->error, sizeof c->error, "%s: products with %lld and %lld columns", name, (long long)e->n_in,
                 (long long)n_in);
        return;
    }
    for (int32_t t = 0; t < T; t++) {
        const float *r = x + (int64_t)t * n_in;
        for (int64_t j = 0; j < n_in; j++) e->sum2[j] += (double)r[j] * r[j], e->sum[j] += r[j];
    }
    e->count += T;
    return;
nomem:
    c->failed = 1;
    snprintf(c->error, sizeof c->error, "out of memory");
}

static char *read_text(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            char *b = cap > ((size_t)1 << 30) ? NULL : realloc(buf, 2 * cap + 1);
            if (!b) free(buf);
            buf = b, cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) return free(buf), NULL;
    buf[n] = 0, *len = n;
    return buf;
}

/* The legacy .dat (as llama-imatrix's save_imatrix_legacy writes it). */
static int write_dat(const char *path, const collector *c, int32_t n_ctx, int32_t chunks, const char *dataset) {
    FILE *f = fopen(path, "wb");
    if (!f) return fprintf(stderr, "pagoda imatrix: cannot write %s: %s\n", path, strerror(errno)), 1;
    int32_t n = 0;
    for (int i = 0; i < c->n; i++) n += c->e[i].count > 0;
    int ok = fwrite(&n, sizeof n, 1, f) == 1;
    float *tmp = NULL;
    for (int i = 0; i < c->n && ok; i++) {
        const im_entry *e = &c->e[i];
        if (e->count <= 0) continue;
        int32_t len = (int32_t)strlen(e->name), ncall = (int32_t)((e->count + n_ctx - 1) / n_ctx), nval = (int32_t)e->n_in;
        float *t = realloc(tmp, sizeof(float) * (size_t)nval);
        if (!t) {
            ok = 0;
            break;
        }
        tmp = t;
        for (int32_t j = 0; j < nval; j++) tmp[j] = ((float)e->sum2[j] / (float)e->count) * (float)ncall;
        ok = fwrite(&len, 4, 1, f) == 1 && fwrite(e->name, 1, (size_t)len, f) == (size_t)len &&
             fwrite(&ncall, 4, 1, f) == 1 && fwrite(&nval, 4, 1, f) == 1 &&
             fwrite(tmp, sizeof(float), (size_t)nval, f) == (size_t)nval;
    }
    free(tmp);
    int32_t dlen = (int32_t)strlen(dataset);
    ok = ok && fwrite(&chunks, 4, 1, f) == 1 && fwrite(&dlen, 4, 1, f) == 1 &&
         fwrite(dataset, 1, (size_t)dlen, f) == (size_t)dlen;
    if (fclose(f) || !ok) return fprintf(stderr, "pagoda imatrix: cannot write %s: %s\n", path, strerror(errno)), 1;
    return 0;
}

/* The GGUF imatrix (as llama-imatrix's save_imatrix writes it). */
static int write_gguf(const char *path, const collector *c, int32_t n_ctx, int32_t chunks, const char *dataset) {
    gguf_writer *w = gguf_writer_create();
    float *buf = NULL;
    int64_t max_in = 1;
    for (int i = 0; i < c->n; i++) max_in = c->e[i].n_in > max_in ? c->e[i].n_in : max_in;
    pagoda_status st = !w || !(buf = malloc(sizeof(float) * (size_t)max_in)) ? PAGODA_ERR_NOMEM : PAGODA_OK;
    if (!st) st = gguf_writer_set_str(w, "general.type", "imatrix");
    if (!st) st = gguf_writer_set_arr_str(w, "imatrix.datasets", &dataset, 1);
    if (!st) st = gguf_writer_set_u32(w, "imatrix.chunk_count", (uint32_t)chunks);
    if (!st) st = gguf_writer_set_u32(w, "imatrix.chunk_size", (uint32_t)n_ctx);
    char name[512];
    for (int i = 0; i < c->n && !st; i++) {
        const int64_t col[2] = {c->e[i].n_in, 1}, one[2] = {1, 1};
        snprintf(name, sizeof name, "%s.in_sum2", c->e[i].name);
        if ((st = gguf_writer_add_tensor(w, name, PAGODA_DTYPE_F32, 2, col))) break;
        snprintf(name, sizeof name, "%s.counts", c->e[i].name);
        if ((st = gguf_writer_add_tensor(w, name, PAGODA_DTYPE_F32, 2, one))) break;
        snprintf(name, sizeof name, "%s.in_sum", c->e[i].name);
        st = gguf_writer_add_tensor(w, name, PAGODA_DTYPE_F32, 2, col);
    }
    if (!st) st = gguf_writer_begin(w, path);
    for (int i = 0; i < c->n && !st; i++) {
        const im_entry *e = &c->e[i];
        const size_t bytes = sizeof(float) * (size_t)e->n_in;
        for (int64_t j = 0; j < e->n_in; j++) buf[j] = (float)e->sum2[j];
        if ((st = gguf_writer_write_tensor(w, buf, bytes))) break;
        float count = (float)e->count;
        if ((st = gguf_writer_write_tensor(w, &count, sizeof count))) break;
        for (int64_t j = 0; j < e->n_in; j++) buf[j] = (float)e->sum[j];
        st = gguf_writer_write_tensor(w, buf, bytes);
    }
    if (!st) st = gguf_writer_end(w);
    gguf_writer_destroy(w);
    free(buf);
    if (st) fprintf(stderr, "pagoda imatrix: cannot write %s: %s\n", path, pagoda_last_error());
    return st ? 1 : 0;
}

static int save(const char *path, int dat, collector *c, int32_t n_ctx, int32_t chunks, const char *dataset) {
    qsort(c->e, (size_t)c->n, sizeof *c->e, cmp_entry); /* deterministic order, as llama-imatrix */
    return dat ? write_dat(path, c, n_ctx, chunks, dataset) : write_gguf(path, c, n_ctx, chunks, dataset);
}

/* Fails early (before the model runs) when OUT cannot be written; leaves no file behind. */
static int check_writable(const char *path) {
    struct stat sb;
    const int existed = stat(path, &sb) == 0;
    FILE *f = fopen(path, "ab");
    if (!f) return fprintf(stderr, "pagoda imatrix: cannot write %s: %s\n", path, strerror(errno)), 1;
    fclose(f);
    if (!existed) remove(path);
    return 0;
}

int cmd_imatrix(int argc, char **argv) {
    const char *model = NULL, *text_path = NULL, *out = NULL;
    long n_ctx = 512, max_chunks = -1, threads = 0, out_freq = 10;
    int dat = 0, no_ppl = 0;
    collector col = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(k_usage, stdout), 0;
        if (!strcmp(a, "--process-output")) { col.process_output = 1; continue; }
        if (!strcmp(a, "--no-ppl")) { no_ppl = 1; continue; }
        if (!v) return cli_unknown_option("pagoda imatrix", a, k_usage);
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v, i++;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) text_path = v, i++;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = v, i++;
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) { if (cli_int(a, v, 16, 1 << 20, &n_ctx)) return 2; i++; }
        else if (!strcmp(a, "--chunks")) { if (cli_int(a, v, -1, 1 << 30, &max_chunks)) return 2; i++; }
        else if (!strcmp(a, "--output-frequency")) { if (cli_int(a, v, 1, 1 << 30, &out_freq)) return 2; i++; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (cli_int(a, v, 0, 1024, &threads)) return 2; i++; }
        else if (!strcmp(a, "--output-format")) {
            if (strcmp(v, "gguf") && strcmp(v, "dat")) {
                fprintf(stderr, "pagoda imatrix: --output-format %s: gguf or dat\n", v);
                return 2;
            }
            dat = !strcmp(v, "dat"), i++;
        } else return cli_unknown_option("pagoda imatrix", a, k_usage);
    }
    if (!model || !text_path || !out) return fputs(k_usage, stderr), 2;
    int rc = 1;
    size_t text_len = 0, n_tok = 0;
    char *text = read_text(text_path, &text_len);
    int32_t *tokens = NULL, *chunk = NULL, *blocks = NULL;
    uint8_t *mask = NULL;
    float *logits = NULL;
    pagoda_model *pm = NULL;
    pg_forward *f = NULL;
    pg_kv *kv = NULL;
    if (!text) {
        fprintf(stderr, "pagoda imatrix: cannot read %s: %s\n", text_path, strerror(errno));
        return 1;
    }
    if (check_writable(out)) goto done;
    if (cli_model_load(model, &pm)) goto done;
    const pg_model *m = pm->m;
    if (m->format != MODEL_FORMAT_GGUF) {
        fprintf(stderr, "pagoda imatrix: %s is a Hugging Face folder: its tensor names are not llama.cpp's; convert it "
                "to GGUF first and compute the importance matrix of the GGUF\n", model);
        goto done;
    }
    pagoda_model_info info;
    pagoda_model_get_info(pm, &info);
    const int32_t V = info.n_vocab, C = (int32_t)n_ctx;
    double t0 = pg_now_s();
    if (pagoda_tokenize(pm, text, text_len, 1, 0, &tokens, &n_tok)) { cli_error("tokenize"); goto done; }
    const int add_bos = n_tok > 0 && info.bos >= 0 && tokens[0] == info.bos;
    fprintf(stderr, "pagoda imatrix: tokenized %zu bytes into %zu tokens in %.0f ms%s\n", text_len, n_tok,
            1e3 * (pg_now_s() - t0), add_bos ? " (BOS first)" : "");
    if (n_tok < 2 * (size_t)n_ctx) {
        fprintf(stderr, "pagoda imatrix: the text gives %zu tokens: at least %ld (2 x the context of %ld) are needed\n",
                n_tok, 2 * n_ctx, n_ctx);
        goto done;
    }
    int64_t n_chunks = (int64_t)(n_tok / (size_t)n_ctx);
    if (max_chunks > 0 && max_chunks < n_chunks) n_chunks = max_chunks;
    pg_forward_opts fo = {.n_threads = (int32_t)threads, .observe = observe, .observe_user = &col};
    if (forward_create_ex(m, C, &fo, &f)) { cli_error("forward pass"); goto done; }
    const int32_t bs = 16, nb = (C + bs - 1) / bs;
    if (forward_kv_create(f, nb, bs, PAGODA_DTYPE_F32, &kv)) { cli_error("KV cache"); goto done; }
    /* logits: every row with --process-output (the head then sees every token), else the rows
     * perplexity scores (second half), else none */
    const int32_t first = C / 2;
    int32_t n_out = col.process_output ? C : no_ppl ? 0 : C - 1 - first;
    chunk = malloc(sizeof(int32_t) * (size_t)C), blocks = malloc(sizeof(int32_t) * (size_t)nb), mask = calloc((size_t)C, 1);
    logits = n_out ? malloc(sizeof(float) * (size_t)n_out * (size_t)V) : NULL;
    if (!chunk || !blocks || !mask || (n_out && !logits)) {
        fprintf(stderr, "pagoda imatrix: out of memory\n");
        goto done;
    }
    for (int32_t i = 0; i < nb; i++) blocks[i] = i;
    for (int32_t t = 0; t < C; t++) mask[t] = col.process_output || (!no_ppl && t >= first && t < C - 1);
    fprintf(stderr, "pagoda imatrix: computing over %lld chunks of %d tokens (%s), writing %s (%s)\n",
            (long long)n_chunks, C, forward_placement(f), out, dat ? "legacy .dat" : "GGUF");
    double nll = 0, nll2 = 0;
    int64_t count = 0;
    const double tstart = pg_now_s();
    for (int64_t ci = 0; ci < n_chunks; ci++) {
        const double tc = pg_now_s();
        memcpy(chunk, tokens + ci * C, sizeof(int32_t) * (size_t)C);
        if (add_bos) chunk[0] = info.bos;
        const int32_t seq_start[2] = {0, C}, pos0 = 0;
        const int32_t *tables[1] = {blocks};
        pg_batch b = {.n_tok = C, .tokens = chunk, .n_seq = 1, .seq_start = seq_start, .seq_pos0 = &pos0,
                      .block_tables = tables, .n_blocks = &nb, .logits_mask = mask};
        if (forward_run(f, &b, kv, logits)) { cli_error("forward pass"); goto done; }
        if (col.failed) {
            fprintf(stderr, "pagoda imatrix: %s\n", col.error);
            goto done;
        }
        if (!no_ppl) {
            const int32_t *tgt = tokens + ci * C;
            for (int32_t p = first; p < C - 1; p++) {
                const float *l = logits + (size_t)(col.process_output ? p : p - first) * (size_t)V;
                float mx = l[0];
                for (int32_t v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
                double s = 0;
                for (int32_t v = 0; v < V; v++) s += exp((double)l[v] - mx);
                const double x = mx + log(s) - l[tgt[p + 1]];
                nll += x, nll2 += x * x, count++;
            }
        }
        const double now = pg_now_s();
        fprintf(stderr, "pagoda imatrix: chunk %lld/%lld: %.2f s (%.1f s in all, ETA %.1f s)", (long long)ci + 1,
                (long long)n_chunks, now - tc, now - tstart, (now - tstart) / (double)(ci + 1) * (double)(n_chunks - ci - 1));
        if (!no_ppl) fprintf(stderr, ", PPL %.4f", exp(nll / (double)count));
        fputc('\n', stderr);
        if ((ci + 1) % out_freq == 0 && ci + 1 < n_chunks && save(out, dat, &col, C, (int32_t)(ci + 1), text_path))
            goto done;
    }
    if (!col.n) {
        fprintf(stderr, "pagoda imatrix: no product over a blk.* weight was seen: nothing to write\n");
        goto done;
    }
    if (save(out, dat, &col, C, (int32_t)n_chunks, text_path)) goto done;
    if (!no_ppl && count > 1) {
        const double mean = nll / (double)count, var = nll2 / (double)count - mean * mean, ppl = exp(mean);
        printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, var > 0 ? sqrt(var / (double)(count - 1)) * ppl : 0.0);
    }
    fprintf(stderr, "pagoda imatrix: wrote %d tensors' statistics over %lld chunks to %s\n", col.n, (long long)n_chunks, out);
    rc = 0;
done:
    for (int i = 0; i < col.n; i++) free(col.e[i].sum2), free(col.e[i].sum);
    free(col.e);
    forward_kv_destroy(kv);
    forward_destroy(f);
    free(logits), free(mask), free(blocks), free(chunk);
    pagoda_free(tokens);
    pagoda_model_free(pm);
    free(text);
    return rc;
}
