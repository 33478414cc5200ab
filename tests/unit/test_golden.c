/* The forward pass against independent references:
 *  - Hugging Face transformers logits and greedy outputs (../shared/fixtures/hf/<arch>/golden.safetensors)
 *  - llama.cpp logits for GGUF files it made and quantized (../shared/fixtures/gguf/, see its README)
 * plus properties the paged engine relies on: a batch of sequences gives the same logits as each
 * sequence alone, and chunked prefill gives the same logits as one pass.
 * Where a CUDA device answers, the same checks run on the GPU (all layers, then a CPU/GPU hybrid)
 * against the same references, with the bounds printed beside each figure. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "format/safetensors.h"
#include "kernels/cpu/cpu_impl.h"
#include "kernels/kernels.h"
#include "kv/kv_cache.h"
#include "model/forward.h"
#include "model/model.h"
#include "test_util.h"
#ifdef PAGODA_CUDA
#include "kernels/cuda/pcu.h"
#endif

#define BS 16

/* Layers on the GPU for the runs in progress: 0 = CPU; -1 = all; -2 = half (hybrid). */
static int g_gpu_layers;
static double g_same_tol; /* 0 on the CPU */

typedef struct {
    pg_model *m;
    pg_forward *f;
    pg_kv *kv;
} runner;

static int runner_open(runner *r, const char *path, int32_t max_tok, int32_t n_blocks) {
    memset(r, 0, sizeof *r);
    if (model_load(path, &r->m)) {
        fprintf(stderr, "load %s: %s\n", path, pagoda_last_error());
        return 1;
    }
    int32_t L = r->m->cfg.n_layer;
    pg_forward_opts fo = {.n_gpu_layers = g_gpu_layers == -1 ? L : g_gpu_layers == -2 ? (L + 1) / 2 : g_gpu_layers};
    if (forward_create_ex(r->m, max_tok, &fo, &r->f) || forward_kv_create(r->f, n_blocks, BS, PAGODA_DTYPE_F32, &r->kv)) {
        fprintf(stderr, "%s\n", pagoda_last_error());
        return 1;
    }
    return 0;
}

static void runner_close(runner *r) {
    forward_kv_destroy(r->kv);
    forward_destroy(r->f);
    model_free(r->m);
}

/* Runs n_seq sequences of T tokens each from position 0 as one packed batch; all logits.
 * Sequence s uses blocks in reverse order of a shared pool to exercise real block tables. */
static int run_rows(runner *r, const int32_t *tokens, int32_t n_seq, int32_t T, float *logits) {
    int32_t bpr = (T + BS - 1) / BS;
    int32_t *blocks = malloc(sizeof(int32_t) * n_seq * bpr), seq_start[64], pos0[64], nb[64];
    const int32_t *tables[64];
    uint8_t *mask = malloc((size_t)n_seq * T);
    memset(mask, 1, (size_t)n_seq * T);
    for (int32_t s = 0; s < n_seq; s++) {
        for (int32_t j = 0; j < bpr; j++) blocks[s * bpr + j] = forward_kv_geom(r->kv)->n_blocks - 1 - (s * bpr + j);
        tables[s] = blocks + s * bpr;
        seq_start[s] = s * T;
        pos0[s] = 0;
        nb[s] = bpr;
    }
    seq_start[n_seq] = n_seq * T;
    pg_batch b = {.n_tok = n_seq * T, .tokens = tokens, .n_seq = n_seq, .seq_start = seq_start, .seq_pos0 = pos0,
                  .block_tables = tables, .n_blocks = nb, .logits_mask = mask};
    pagoda_status st = forward_run(r->f, &b, r->kv, logits);
    if (st) fprintf(stderr, "forward: %s\n", pagoda_last_error());
    free(blocks);
    free(mask);
    return st != 0;
}

/* One sequence fed in chunks of `chunk` tokens; all logits. */
static int run_chunked(runner *r, const int32_t *tokens, int32_t T, int32_t chunk, float *logits) {
    int32_t nb = forward_kv_geom(r->kv)->n_blocks, *table = malloc(sizeof(int32_t) * nb);
    for (int32_t j = 0; j < nb; j++) table[j] = (j * 7) % nb; /* a permutation when nb is odd */
    const int32_t *tables[1] = {table};
    uint8_t mask[1024];
    memset(mask, 1, sizeof mask);
    int rc = 0;
    for (int32_t done = 0; done < T && !rc; done += chunk) {
        int32_t n = T - done < chunk ? T - done : chunk, ss[2] = {0, n}, pos0 = done;
        pg_batch b = {.n_tok = n, .tokens = tokens + done, .n_seq = 1, .seq_start = ss, .seq_pos0 = &pos0,
                      .block_tables = tables, .n_blocks = &nb, .logits_mask = mask};
        rc = forward_run(r->f, &b, r->kv, logits + (size_t)done * r->m->cfg.n_vocab) != 0;
    }
    free(table);
    return rc;
}

static void diff_stats(const float *a, const float *b, size_t n, double *max, double *mean) {
    double mx = 0, sum = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= mx)) mx = d; /* NaN propagates as a failure */
        sum += d;
    }
    *max = mx;
    *mean = sum / (double)n;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Greedy generation: prompt in one pass, then one token per pass. */
static void greedy(runner *r, const int32_t *prompt, int32_t n_prompt, int32_t n_gen, int32_t *out) {
    int32_t V = r->m->cfg.n_vocab, nb = forward_kv_geom(r->kv)->n_blocks, *table = malloc(sizeof(int32_t) * nb);
    for (int32_t j = 0; j < nb; j++) table[j] = j;
    const int32_t *tables[1] = {table};
    float *logits = malloc(sizeof(float) * V);
    int32_t ss[2] = {0, n_prompt}, pos0 = 0;
    pg_batch b = {.n_tok = n_prompt, .tokens = prompt, .n_seq = 1, .seq_start = ss, .seq_pos0 = &pos0,
                  .block_tables = tables, .n_blocks = &nb, .logits_mask = NULL};
    forward_run(r->f, &b, r->kv, logits);
    for (int32_t i = 0; i < n_gen; i++) {
        out[i] = argmax(logits, V);
        int32_t ss1[2] = {0, 1}, p = n_prompt + i;
        pg_batch b1 = {.n_tok = 1, .tokens = &out[i], .n_seq = 1, .seq_start = ss1, .seq_pos0 = &p,
                       .block_tables = tables, .n_blocks = &nb, .logits_mask = NULL};
        if (i + 1 < n_gen) forward_run(r->f, &b1, r->kv, logits);
    }
    free(logits);
    free(table);
}

/* golden: NULL = the fixture's own golden.safetensors */
static void check_hf(const char *shared, const char *name, const char *golden, double tol, double mean_tol) {
    char dir[1024], gpath[1100];
    snprintf(dir, sizeof dir, "%s/fixtures/hf/%s", shared, name);
    snprintf(gpath, sizeof gpath, "%s/golden.safetensors", dir);
    if (golden) snprintf(gpath, sizeof gpath, "%s", golden);
    st_model *g;
    if (st_open(gpath, &g)) {
        CHECK(0, "%s: %s", gpath, pagoda_last_error());
        return;
    }
    const st_tensor *ids = st_find(g, "input_ids"), *ref = st_find(g, "logits");
    int32_t B = (int32_t)ids->shape[0], T = (int32_t)ids->shape[1], V = (int32_t)ref->shape[2];
    runner r;
    if (runner_open(&r, dir, B * T + 64, 64)) {
        CHECK(0, "%s: cannot open", name);
        st_close(g);
        return;
    }
    CHECK(r.m->cfg.n_vocab == V, "%s: vocab %d vs %d", name, r.m->cfg.n_vocab, V);
    float *logits = malloc(sizeof(float) * B * T * V), *single = malloc(sizeof(float) * T * V);
    double mx, mean;
    CHECK(run_rows(&r, ids->data, B, T, logits) == 0, "%s: forward", name);
    diff_stats(logits, ref->data, (size_t)B * T * V, &mx, &mean);
    printf("hf %-12s logits vs transformers%s: max %.2e mean %.2e (tol %.0e)\n", name, golden ? " (f32 compute)" : "",
           mx, mean, tol);
    CHECK(mx <= tol && mean <= mean_tol, "%s: max abs diff %g > %g or mean %g > %g", name, mx, tol, mean, mean_tol);

    /* the same rows one at a time and in chunks must give identical numbers */
    for (int32_t s = 0; s < B; s++) {
        double same_tol = g_same_tol;
        CHECK(run_rows(&r, (const int32_t *)ids->data + s * T, 1, T, single) == 0, "forward");
        diff_stats(single, logits + (size_t)s * T * V, (size_t)T * V, &mx, &mean);
        CHECK(mx <= same_tol, "%s: row %d alone differs by %g from the same row in a batch", name, s, mx);
        CHECK(run_chunked(&r, (const int32_t *)ids->data + s * T, T, 5, single) == 0, "forward");
        diff_stats(single, logits + (size_t)s * T * V, (size_t)T * V, &mx, &mean);
        CHECK(mx <= same_tol, "%s: row %d in chunks of 5 differs by %g from one pass", name, s, mx);
    }

    const st_tensor *gp = st_find(g, "greedy_prompt"), *go = st_find(g, "greedy_output");
    if (gp && go) {
        int32_t np = (int32_t)gp->shape[1], ng = (int32_t)go->shape[1], out[256];
        greedy(&r, gp->data, np, ng, out);
        int same = 0;
        while (same < ng && out[same] == ((const int32_t *)go->data)[same]) same++;
        printf("hf %-12s greedy: %d/%d tokens equal\n", name, same, ng);
        CHECK(same == ng, "%s: greedy output differs at step %d", name, same);
    }
    free(logits);
    free(single);
    runner_close(&r);
    st_close(g);
}

/* llama.cpp goldens: batch logits and teacher-forced greedy logits. */
static void check_gguf(const char *shared, const char *name, double max_tol, double mean_tol, int exact_greedy) {
    char path[1024], gpath[1100];
    snprintf(path, sizeof path, "%s/fixtures/gguf/%s.gguf", shared, name);
    snprintf(gpath, sizeof gpath, "%s/fixtures/gguf/%s.golden.safetensors", shared, name);
    st_model *g;
    if (st_open(gpath, &g)) {
        CHECK(0, "%s: %s", gpath, pagoda_last_error());
        return;
    }
    const st_tensor *ids = st_find(g, "input_ids"), *ref = st_find(g, "logits");
    const st_tensor *gp = st_find(g, "greedy_prompt"), *go = st_find(g, "greedy_output"), *gl = st_find(g, "greedy_logits");
    int32_t B = (int32_t)ids->shape[0], T = (int32_t)ids->shape[1], V = (int32_t)ref->shape[2];
    runner r;
    if (runner_open(&r, path, 128, 64)) {
        CHECK(0, "%s: cannot open", name);
        st_close(g);
        return;
    }
    float *logits = malloc(sizeof(float) * B * T * V);
    double mx, mean;
    CHECK(run_rows(&r, ids->data, B, T, logits) == 0, "%s: forward", name);
    diff_stats(logits, ref->data, (size_t)B * T * V, &mx, &mean);
    printf("gguf %-20s logits vs llama.cpp: max %.2e mean %.2e (tol max %.0e mean %.0e)\n", name, mx, mean, max_tol, mean_tol);
    CHECK(mx <= max_tol && mean <= mean_tol, "%s: logits max %g mean %g", name, mx, mean);

    /* teacher forcing: prompt + greedy_output[:-1], compare logits from the last prompt position */
    int32_t np = (int32_t)gp->shape[1], ng = (int32_t)go->shape[1], seq[256];
    memcpy(seq, gp->data, sizeof(int32_t) * np);
    memcpy(seq + np, go->data, sizeof(int32_t) * (ng - 1));
    float *tf = malloc(sizeof(float) * (np + ng) * V);
    CHECK(run_rows(&r, seq, 1, np + ng - 1, tf) == 0, "forward");
    diff_stats(tf + (size_t)(np - 1) * V, gl->data, (size_t)ng * V, &mx, &mean);
    printf("gguf %-20s teacher-forced greedy logits: max %.2e mean %.2e\n", name, mx, mean);
    CHECK(mx <= max_tol && mean <= mean_tol, "%s: greedy logits max %g mean %g", name, mx, mean);
    if (exact_greedy) {
        int32_t out[256];
        greedy(&r, gp->data, np, ng, out);
        int same = 0;
        while (same < ng && out[same] == ((const int32_t *)go->data)[same]) same++;
        printf("gguf %-20s greedy: %d/%d tokens equal\n", name, same, ng);
        CHECK(same == ng, "%s: greedy output differs at step %d", name, same);
    }
    free(tf);
    free(logits);
    runner_close(&r);
    st_close(g);
}

/* Bounds that differ between runs of check_all (everything else is the same on every device). */
typedef struct {
    double same_tol, same_tol_bf16; /* a row alone / in chunks vs in a batch (0 on the CPU: bit-equal) */
    double bf16_f32compute;         /* bf16 weights vs transformers' float32 compute on them */
    double quant_max, quant_mean;   /* quantized GGUFs vs llama.cpp */
} bounds;

static void check_all(const char *shared, const bounds *bd) {
    const char *hf[] = {"llama", "llama3", "mistral", "qwen2", "qwen3", "starcoder2", "gpt_bigcode"};
    g_same_tol = bd->same_tol;
    for (size_t i = 0; i < sizeof hf / sizeof hf[0]; i++) check_hf(shared, hf[i], NULL, 1e-4, 1e-4);
    /* The shared bf16 golden was computed in bf16 and rounded to bf16 (ulp 2^-6 near |2|): no
     * float32 engine meets 1e-3 there (transformers on CPU: 0.031 in bf16, 0.035 in f32). Bound it by
     * that noise, and hold the bf16 weight path to bf16_f32compute against transformers' float32
     * compute on the same weights (tests/golden/make_llama_bf16_golden.py). */
    g_same_tol = bd->same_tol_bf16;
    check_hf(shared, "llama_bf16", NULL, 0.05, 0.01);
    char bf16_f32[1000];
    snprintf(bf16_f32, sizeof bf16_f32, "%s/golden/llama_bf16_f32compute.safetensors", PAGODA_TESTS_DIR);
    check_hf(shared, "llama_bf16", bf16_f32, bd->bf16_f32compute, bd->bf16_f32compute);
    check_gguf(shared, "tiny-llama-f32", 1e-4, 1e-5, 1);
    check_gguf(shared, "tiny-llama-tied-f32", 1e-4, 1e-5, 1);
    check_gguf(shared, "tiny-llama-f16", 1e-2, 2e-3, 1);
    const char *q[] = {"tiny-llama-q8_0", "tiny-llama-q4_0", "tiny-llama-q4_k", "tiny-llama-q6_k"};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) check_gguf(shared, q[i], bd->quant_max, bd->quant_mean, 0);
}

int main(void) {
    const char *shared = test_shared_dir();
    if (!shared) TEST_SKIP("../shared not found (set PAGODA_SHARED): golden fixtures unavailable");
    /* Every SIMD level this CPU has, the fastest (the default) last. */
    for (int level = KCPU_ISA_SCALAR; level <= kcpu_isa_max(); level++) {
        kcpu_isa_force(level);
        int best = level == kcpu_isa_max();
        printf("== isa %s%s\n", kcpu_isa(), best ? " (default)" : "");
        /* Quantized: activations are quantized to 8 bits like llama.cpp. The default kernels sum in
         * llama.cpp's AVX2 order, so the README's bound for a bit-faithful engine applies (mean 2e-3,
         * loose max 0.2). Other levels sum in another order; a 1e-6 difference can move an 8-bit
         * activation one step and later logits by ~0.05, so there only a looser mean is asserted. */
        bounds cpu = {.same_tol = 0, .same_tol_bf16 = 0, .bf16_f32compute = 1e-4, .quant_max = 0.25,
                      .quant_mean = best ? 2e-3 : 1e-2};
        check_all(shared, &cpu);
    }
#ifdef PAGODA_CUDA
    char why[256];
    if (!pcu_available(why, sizeof why)) {
        printf("== cuda: skipped, no CUDA device: %s\n", why);
        TEST_DONE();
    }
    /* On the GPU, batches of a few tokens and bigger ones take different product kernels, so "same
     * numbers" becomes "within 1e-4". bf16 weights: batches over 1 token multiply in bf16 on tensor
     * cores (activations rounded to bf16, as GPU engines do), so they meet the bf16 noise bound. The
     * GPU keeps activations in float (half for bigger batches) where llama.cpp quantizes them to 8
     * bits, so its distance to llama.cpp's quantized logits is that rounding's: measured mean
     * 0.04-0.06, max 0.26-0.45 on these files. */
    bounds gpu = {.same_tol = 1e-4, .same_tol_bf16 = 0.05, .bf16_f32compute = 0.05, .quant_max = 0.6, .quant_mean = 8e-2};
    for (int pass = 0; pass < 2; pass++) {
        g_gpu_layers = pass == 0 ? -1 : -2;
        printf("== cuda, %s\n", pass == 0 ? "all layers on the GPU" : "hybrid: first half of the layers on the GPU");
        check_all(shared, &gpu);
    }
#endif
    TEST_DONE();
}
