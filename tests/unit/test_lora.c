/* LoRA adapters against independent references:
 *  - transformers + peft logits and greedy outputs (../shared/fixtures/lora/llama, see its README)
 *    for each adapter from its PEFT folder and from its GGUF LoRA, alone and mixed in one batch
 *    with rows of another adapter and rows of none;
 *  - synthetic random adapters against the model with merged weights W + scale*B*A computed here
 *    (in double, from the dequantized base), run as a plain model: an f32 Hugging Face base
 *    (qwen2: other shapes, biases) and a Q8_0 GGUF base (the delta is added in f32 after the
 *    quantized product);
 *  - malformed adapters fail with a clear error;
 *  - the scalar and fast CPU delta kernels agree. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/file.h"
#include "core/fp16.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "kernels/kernels.h"
#include "kernels/cpu/cpu_impl.h"
#include "kernels/ops.h"
#include "kv/kv_cache.h"
#include "model/forward.h"
#include "model/lora.h"
#include "model/model.h"
#include "test_util.h"

#define BLK 16

typedef struct {
    pg_model *m;
    pg_forward *f;
    pg_kv *kv;
} fx;

static int fx_open(fx *r, pg_model *m, int32_t max_tok) {
    memset(r, 0, sizeof *r);
    r->m = m;
    if (forward_create(m, max_tok, &r->f) || forward_kv_create(r->f, 64, BLK, PAGODA_DTYPE_F32, &r->kv)) {
        fprintf(stderr, "%s\n", pagoda_last_error());
        return 1;
    }
    return 0;
}
static void fx_close(fx *r) {
    forward_kv_destroy(r->kv);
    forward_destroy(r->f);
}

/* n_seq rows of T tokens from position 0 in one batch, row s with adapter ad[s]; every logit. */
static pagoda_status run_batch(fx *r, const int32_t *tokens, int32_t n_seq, int32_t T, const int32_t *ad, float *logits) {
    int32_t per = (T + BLK - 1) / BLK, blocks[64 * 4], start[65], pos0[64], nb[64];
    const int32_t *tables[64];
    uint8_t mask[64 * 64];
    for (int32_t s = 0; s < n_seq; s++) {
        for (int32_t j = 0; j < per; j++) blocks[s * per + j] = 63 - (s * per + j);
        tables[s] = blocks + s * per, start[s] = s * T, pos0[s] = 0, nb[s] = per;
    }
    start[n_seq] = n_seq * T;
    memset(mask, 1, (size_t)(n_seq * T));
    pg_batch b = {.n_tok = n_seq * T, .tokens = tokens, .n_seq = n_seq, .seq_start = start, .seq_pos0 = pos0,
                  .block_tables = tables, .n_blocks = nb, .logits_mask = mask, .seq_adapter = ad};
    pagoda_status st = forward_run(r->f, &b, r->kv, logits);
    if (st) fprintf(stderr, "forward: %s\n", pagoda_last_error());
    return st;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= mx)) mx = d;
    }
    return mx;
}

static void check_row_orders(const char *shared, const pg_model_config *c);

/* ---- transformers + peft goldens ---------------------------------------------------------------- */

static void greedy_check(fx *r, int32_t ad, const st_tensor *gp, const st_tensor *go, const char *what) {
    int32_t V = r->m->cfg.n_vocab, np = (int32_t)gp->shape[1], ng = (int32_t)go->shape[1], toks[128], out[64];
    float *lg = malloc(sizeof(float) * (size_t)V * 128);
    memcpy(toks, gp->data, sizeof(int32_t) * (size_t)np);
    int32_t n = np;
    for (int32_t i = 0; i < ng && n < 120; i++) { /* the whole sequence each time: simple and exact */
        if (run_batch(r, toks, 1, n, &ad, lg)) break;
        const float *row = lg + (size_t)(n - 1) * V;
        int32_t best = 0;
        for (int32_t v = 1; v < V; v++)
            if (row[v] > row[best]) best = v;
        out[i] = best, toks[n++] = best;
    }
    int same = 0;
    while (same < ng && out[same] == ((const int32_t *)go->data)[same]) same++;
    printf("lora %-22s greedy: %d/%d tokens equal\n", what, same, ng);
    CHECK(same == ng, "%s: greedy output differs at step %d", what, same);
    free(lg);
}

static void check_goldens(const char *shared) {
    char base[1024], dir[1024], p[1200];
    snprintf(base, sizeof base, "%s/fixtures/hf/llama", shared);
    snprintf(dir, sizeof dir, "%s/fixtures/lora/llama", shared);
    snprintf(p, sizeof p, "%s/golden.safetensors", dir);
    st_model *g = NULL;
    pg_model *m = NULL;
    if (st_open(p, &g) || model_load(base, &m)) {
        CHECK(0, "%s", pagoda_last_error());
        st_close(g);
        return;
    }
    const st_tensor *ids = st_find(g, "input_ids"), *lbase = st_find(g, "logits_base");
    int32_t B = (int32_t)ids->shape[0], T = (int32_t)ids->shape[1], V = m->cfg.n_vocab;
    size_t row = (size_t)T * V;
    fx r;
    CHECK(fx_open(&r, m, B * T) == 0, "forward");
    float *lg = malloc(sizeof(float) * row * B);
    /* name, file under dir, golden, bound. f16 GGUF: the converter kept these small matrices in f32
     * (checked below), so the same 1e-4 holds; an f16 A/B would move logits by ~|delta| * 2^-11 */
    struct { const char *name, *file; double tol; } cases[] = {
        {"attn_r8", "attn_r8", 1e-4}, {"mlp_r4", "mlp_r4", 1e-4},
        {"attn_r8", "attn_r8.gguf", 1e-4}, {"mlp_r4", "mlp_r4.f16.gguf", 1e-4},
    };
    pg_lora *ad[4] = {0};
    for (int c = 0; c < 4; c++) {
        snprintf(p, sizeof p, "%s/%s", dir, cases[c].file);
        if (lora_load(m, p, 0, &ad[c])) {
            CHECK(0, "load %s: %s", p, pagoda_last_error());
            continue;
        }
        const pg_lora *table[2] = {NULL, ad[c]};
        CHECK(forward_set_adapters(r.f, table, 2) == 0, "%s", pagoda_last_error());
        char gname[64];
        snprintf(gname, sizeof gname, "logits_%s", cases[c].name);
        const st_tensor *ref = st_find(g, gname);
        int32_t all1[8] = {1, 1, 1, 1, 1, 1, 1, 1};
        CHECK(run_batch(&r, ids->data, B, T, all1, lg) == 0, "forward");
        double d = max_diff(lg, ref->data, row * B), moved = max_diff(lbase->data, ref->data, row * B);
        printf("lora %-8s %-16s logits vs peft: max %.2e (tol %.0e; the adapter moves them by %.2f)\n", cases[c].name,
               cases[c].file, d, cases[c].tol, moved);
        CHECK(d <= cases[c].tol, "%s: max diff %g", cases[c].file, d);
        char gp[64], go[64];
        snprintf(gp, sizeof gp, "greedy_prompt_%s", cases[c].name);
        snprintf(go, sizeof go, "greedy_output_%s", cases[c].name);
        if (c < 2 && st_find(g, gp) && st_find(g, go)) greedy_check(&r, 1, st_find(g, gp), st_find(g, go), cases[c].file);
    }
    /* the GGUF pairs hold the same numbers as the PEFT folders */
    for (int c = 0; c < 2; c++)
        if (ad[c] && ad[c + 2]) {
            CHECK(ad[c]->targets == ad[c + 2]->targets && ad[c]->max_rank == ad[c + 2]->max_rank, "%s: peft vs gguf targets",
                  cases[c].name);
            const pg_lora_mat *a = lora_mat(ad[c], 0, c == 0 ? LORA_Q : LORA_GATE), *b = lora_mat(ad[c + 2], 0, c == 0 ? LORA_Q : LORA_GATE);
            CHECK(a->rank == b->rank && fabsf(a->scale - b->scale) < 1e-6f, "%s: rank/scale", cases[c].name);
        }
    /* one pass: row 0 attn_r8, row 1 mlp_r4, row 2 none; then base only with the table set */
    if (ad[0] && ad[1] && B >= 3) {
        const pg_lora *table[3] = {NULL, ad[0], ad[1]};
        CHECK(forward_set_adapters(r.f, table, 3) == 0, "%s", pagoda_last_error());
        int32_t mix[3] = {1, 2, 0};
        const char *gold[3] = {"logits_attn_r8", "logits_mlp_r4", "logits_base"};
        CHECK(run_batch(&r, ids->data, 3, T, mix, lg) == 0, "forward");
        for (int s = 0; s < 3; s++) {
            double d = max_diff(lg + s * row, (const float *)st_find(g, gold[s])->data + s * row, row);
            printf("lora mixed batch row %d (%s): max %.2e (tol 1e-4)\n", s, gold[s], d);
            CHECK(d <= 1e-4, "mixed row %d: %g", s, d);
        }
        CHECK(run_batch(&r, ids->data, B, T, NULL, lg) == 0, "forward");
        double d = max_diff(lg, lbase->data, row * B);
        printf("lora base rows with adapters loaded: max %.2e (tol 1e-4)\n", d);
        CHECK(d <= 1e-4, "base: %g", d);
        int32_t bad[3] = {0, 3, 0};
        CHECK(run_batch(&r, ids->data, 3, T, bad, lg) == PAGODA_ERR_INVALID, "unknown adapter accepted");
        CHECK(strstr(pagoda_last_error(), "adapter 3 is not loaded") != NULL, "message: %s", pagoda_last_error());
    }
    check_row_orders(shared, &m->cfg);
    for (int c = 0; c < 4; c++) lora_free(ad[c]);
    free(lg);
    fx_close(&r);
    model_free(m);
    st_close(g);
}

/* The PEFT folder and the GGUF LoRA of one adapter give the same matrices on a base whose Q/K rows
 * are interleaved (a GGUF llama: the PEFT rows are reordered) and on one whose rows are not (an HF
 * base: the GGUF rows are reordered back), every element exact. */
static void check_row_orders(const char *shared, const pg_model_config *c) {
    char p[1200];
    char *cfg = NULL, *st = NULL, *gg = NULL;
    size_t n_cfg = 0, n_st = 0, n_gg = 0;
    snprintf(p, sizeof p, "%s/fixtures/lora/llama/attn_r8/adapter_config.json", shared);
    pagoda_status s1 = pg_read_file(p, 1 << 20, &cfg, &n_cfg);
    snprintf(p, sizeof p, "%s/fixtures/lora/llama/attn_r8/adapter_model.safetensors", shared);
    pagoda_status s2 = pg_read_file(p, 1 << 24, &st, &n_st);
    snprintf(p, sizeof p, "%s/fixtures/lora/llama/attn_r8.gguf", shared);
    pagoda_status s3 = pg_read_file(p, 1 << 24, &gg, &n_gg);
    CHECK(!s1 && !s2 && !s3, "read: %s", pagoda_last_error());
    for (int inter = 0; inter < 2 && !s1 && !s2 && !s3; inter++) {
        pg_lora *a = NULL, *b = NULL;
        CHECK(lora_load_memory(c, inter, cfg, st, n_st, false, 0, &a) == 0, "%s", pagoda_last_error());
        CHECK(lora_load_memory(c, inter, NULL, gg, n_gg, true, 0, &b) == 0, "%s", pagoda_last_error());
        double d = 0;
        for (int32_t l = 0; a && b && l < c->n_layer; l++)
            for (int t = 0; t < LORA_N_TARGETS; t++) {
                const pg_lora_mat *x = lora_mat(a, l, (pg_lora_target)t), *y = lora_mat(b, l, (pg_lora_target)t);
                CHECK(x->rank == y->rank, "layer %d target %d: ranks %d and %d", l, t, x->rank, y->rank);
                if (!x->rank || x->rank != y->rank) continue;
                double da = max_diff(x->A, y->A, (size_t)(x->rank * x->n_in)), db = max_diff(x->Bt, y->Bt, (size_t)(x->rank * x->n_out));
                d = fmax(d, fmax(da, db));
            }
        printf("lora attn_r8 peft vs gguf matrices on a %s base: max %.2e (exact)\n", inter ? "GGUF (interleaved Q/K)" : "HF", d);
        CHECK(d == 0, "row orders: %g", d);
        if (inter && a) { /* and the order really changed for Q (not for V) */
            const pg_lora_mat *q = lora_mat(a, 0, LORA_Q);
            pg_lora *hf = NULL;
            if (!lora_load_memory(c, false, cfg, st, n_st, false, 0, &hf)) {
                CHECK(max_diff(q->Bt, lora_mat(hf, 0, LORA_Q)->Bt, (size_t)(q->rank * q->n_out)) > 0, "Q rows not reordered");
                CHECK(max_diff(lora_mat(a, 0, LORA_V)->Bt, lora_mat(hf, 0, LORA_V)->Bt, (size_t)(q->rank * lora_mat(a, 0, LORA_V)->n_out)) == 0,
                      "V rows reordered");
            }
            lora_free(hf);
        }
        lora_free(a), lora_free(b);
    }
    /* scales: alpha / r, alpha / sqrt(r) (use_rslora), alpha_pattern per module, the caller's override */
    struct { const char *json; float scale_arg, q, v; } sc[] = {
        {"{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":16}", 0, 2.0f, 2.0f},
        {"{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":16,\"use_rslora\":true}", 0, 16 / sqrtf(8), 16 / sqrtf(8)},
        {"{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":16,\"alpha_pattern\":{\"q_proj\":4}}", 0, 0.5f, 2.0f},
        {"{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":16}", 0.25f, 0.25f, 0.25f},
    };
    for (size_t i = 0; i < sizeof sc / sizeof sc[0] && st; i++) {
        pg_lora *a = NULL;
        CHECK(lora_load_memory(c, false, sc[i].json, st, n_st, false, sc[i].scale_arg, &a) == 0, "%s", pagoda_last_error());
        if (!a) continue;
        float q = lora_mat(a, 1, LORA_Q)->scale, v = lora_mat(a, 1, LORA_V)->scale;
        CHECK(fabsf(q - sc[i].q) < 1e-6f && fabsf(v - sc[i].v) < 1e-6f, "config %zu: scales q %g v %g, expected %g %g", i, q, v,
              sc[i].q, sc[i].v);
        lora_free(a);
    }
    free(cfg), free(st), free(gg);
}

/* ---- synthetic adapters vs merged weights --------------------------------------------------------- */

static pg_weight *target_weight(pg_layer_weights *w, pg_lora_target t) {
    pg_weight *ws[LORA_N_TARGETS] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
    return ws[t];
}

/* Writes a random adapter of rank r on every projection of m: a PEFT folder (HF base) or a GGUF
 * LoRA (GGUF base, same row order as the base). Returns the matrices ([l][t] A then B) for the merge. */
static float **write_random_adapter(const pg_model *m, int32_t r, float alpha, const char *path, bool gguf,
                                    unsigned long long seed, bool f16) {
    int32_t L = m->cfg.n_layer;
    float **mats = calloc((size_t)L * LORA_N_TARGETS * 2, sizeof(float *));
    uint16_t **halves = calloc((size_t)L * LORA_N_TARGETS * 2, sizeof(uint16_t *)); /* f16: what the file holds */
    const int dt = f16 ? PAGODA_DTYPE_F16 : PAGODA_DTYPE_F32;
    gguf_writer *gw = gguf ? gguf_writer_create() : NULL;
    st_write_tensor *sw = gguf ? NULL : calloc((size_t)L * LORA_N_TARGETS * 2, sizeof *sw);
    int64_t (*shapes)[2] = calloc((size_t)L * LORA_N_TARGETS * 2, sizeof *shapes);
    char (*names)[128] = calloc((size_t)L * LORA_N_TARGETS * 2, sizeof *names);
    static const char *peft[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    static const char *gg[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    if (gw) {
        gguf_writer_set_str(gw, "general.architecture", "llama");
        gguf_writer_set_str(gw, "general.type", "adapter");
        gguf_writer_set_str(gw, "adapter.type", "lora");
        gguf_writer_set_f32(gw, "adapter.lora.alpha", alpha);
    }
    int n = 0;
    for (int32_t l = 0; l < L; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const pg_weight *w = target_weight(&((pg_model *)m)->layers[l], (pg_lora_target)t);
            int64_t in = w->n_in, out = w->n_out;
            float *A = malloc(sizeof(float) * (size_t)(r * in)), *B = malloc(sizeof(float) * (size_t)(out * r));
            for (int64_t i = 0; i < r * in; i++) A[i] = 0.2f * test_rand_f(&seed);
            for (int64_t i = 0; i < out * r; i++) B[i] = 0.2f * test_rand_f(&seed);
            mats[n] = A, mats[n + 1] = B;
            for (int ab = 0; ab < 2; ab++) {
                int k = n + ab;
                if (f16) { /* the matrices as halves; the merged reference takes their exact values */
                    int64_t cnt = ab ? out * r : r * in;
                    halves[k] = malloc(sizeof(uint16_t) * (size_t)cnt);
                    for (int64_t i = 0; i < cnt; i++) mats[k][i] = pg_fp16_to_fp32(halves[k][i] = pg_fp32_to_fp16(mats[k][i]));
                }
                if (gw) {
                    snprintf(names[k], 128, "blk.%d.%s.weight.lora_%c", l, gg[t], ab ? 'b' : 'a');
                    int64_t ne[2] = {ab ? r : in, ab ? out : r};
                    gguf_writer_add_tensor(gw, names[k], dt, 2, ne);
                } else {
                    snprintf(names[k], 128, "base_model.model.model.layers.%d.%s.lora_%c.weight", l, peft[t], ab ? 'B' : 'A');
                    shapes[k][0] = ab ? out : r, shapes[k][1] = ab ? r : in;
                    sw[k] = (st_write_tensor){.name = names[k], .dtype = dt, .n_dims = 2, .shape = shapes[k],
                                              .data = f16 ? (const void *)halves[k] : (const void *)mats[k]};
                }
            }
            n += 2;
        }
    if (gw) {
        CHECK(gguf_writer_begin(gw, path) == 0, "%s", pagoda_last_error());
        for (int k = 0; k < n; k++) {
            const pg_weight *w = target_weight(&((pg_model *)m)->layers[k / 2 / LORA_N_TARGETS], (pg_lora_target)(k / 2 % LORA_N_TARGETS));
            size_t sz = (f16 ? sizeof(uint16_t) : sizeof(float)) * (size_t)r * (size_t)(k % 2 ? w->n_out : w->n_in);
            gguf_writer_write_tensor(gw, f16 ? (const void *)halves[k] : (const void *)mats[k], sz);
        }
        CHECK(gguf_writer_end(gw) == 0, "%s", pagoda_last_error());
        gguf_writer_destroy(gw);
    } else {
        char p[1200];
        mkdir(path, 0700);
        snprintf(p, sizeof p, "%s/adapter_model.safetensors", path);
        CHECK(st_write(p, sw, n) == 0, "%s", pagoda_last_error());
        snprintf(p, sizeof p, "%s/adapter_config.json", path);
        FILE *f = fopen(p, "w");
        fprintf(f, "{\"peft_type\": \"LORA\", \"r\": %d, \"lora_alpha\": %g, \"bias\": \"none\", \"target_modules\": "
                   "\"(q|k|v|o|gate|up|down)_proj\", \"modules_to_save\": null, \"fan_in_fan_out\": false}", r, alpha);
        fclose(f);
    }
    free(sw), free(shapes), free(names);
    for (int k = 0; f16 && k < L * LORA_N_TARGETS * 2; k++) free(halves[k]);
    free(halves);
    return mats;
}

/* The base's weights replaced by dequantized W + scale * B·A (double accumulation), owned here. */
static void merge_into(pg_model *m, float **mats, int32_t r, double scale, float **owned) {
    int n = 0;
    for (int32_t l = 0; l < m->cfg.n_layer; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++, n += 2) {
            pg_weight *w = target_weight(&m->layers[l], (pg_lora_target)t);
            int64_t in = w->n_in, out = w->n_out;
            float *W = malloc(sizeof(float) * (size_t)(in * out));
            const k_type_traits *tr = kref_traits(w->dtype);
            size_t rs = 0;
            dtype_row_size(w->dtype, in, &rs);
            for (int64_t o = 0; o < out; o++) tr->to_float((const char *)w->data + (size_t)o * rs, W + o * in, in);
            const float *A = mats[n], *B = mats[n + 1];
            for (int64_t o = 0; o < out; o++)
                for (int64_t i = 0; i < in; i++) {
                    double s = 0;
                    for (int32_t k = 0; k < r; k++) s += (double)B[o * r + k] * A[k * in + i];
                    W[o * in + i] = (float)(W[o * in + i] + scale * s);
                }
            w->data = W, w->dtype = PAGODA_DTYPE_F32;
            owned[n / 2] = W;
        }
}

/* Base W (dequantized to f32, no adapter) in place, for the quantization bound. */
static void dequant_into(pg_model *m, float **owned) {
    int n = 0;
    for (int32_t l = 0; l < m->cfg.n_layer; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++, n++) {
            pg_weight *w = target_weight(&m->layers[l], (pg_lora_target)t);
            float *W = malloc(sizeof(float) * (size_t)(w->n_in * w->n_out));
            const k_type_traits *tr = kref_traits(w->dtype);
            size_t rs = 0;
            dtype_row_size(w->dtype, w->n_in, &rs);
            for (int64_t o = 0; o < w->n_out; o++) tr->to_float((const char *)w->data + (size_t)o * rs, W + o * w->n_in, w->n_in);
            w->data = W, w->dtype = PAGODA_DTYPE_F32;
            owned[n] = W;
        }
}

static void check_synthetic(const char *model_path, bool gguf, int32_t r, const char *what, bool f16) {
    pg_model *m = NULL, *ref = NULL, *deq = NULL;
    if (model_load(model_path, &m) || model_load(model_path, &ref) || model_load(model_path, &deq)) {
        CHECK(0, "%s: %s", model_path, pagoda_last_error());
        model_free(m), model_free(ref), model_free(deq);
        return;
    }
    char path[256];
    snprintf(path, sizeof path, "/tmp/pagoda_lora_%d_%s%s", (int)getpid(), what, gguf ? ".gguf" : "");
    float alpha = 2.0f * (float)r;
    float **mats = write_random_adapter(m, r, alpha, path, gguf, 0x1234 + (unsigned long long)r, f16);
    int32_t L = m->cfg.n_layer, T = 12, n_seq = 2, V = m->cfg.n_vocab;
    float **owned = calloc((size_t)L * LORA_N_TARGETS * 2, sizeof(float *));
    merge_into(ref, mats, r, alpha / r, owned);
    dequant_into(deq, owned + L * LORA_N_TARGETS);
    pg_lora *a = NULL;
    if (lora_load(m, path, 0, &a)) CHECK(0, "%s: %s", path, pagoda_last_error());
    /* an f16 file is kept in halves (half the bytes), an f32 one in floats */
    if (a) CHECK(f16 ? a->mats[0].A16 && a->mats[0].Bt16 && !a->mats[0].A : a->mats[0].A && !a->mats[0].A16,
                 "%s: matrices kept as %s", what, a->mats[0].A16 ? "f16" : "f32");
    int32_t tokens[24];
    unsigned long long s = 99;
    for (int i = 0; i < T * n_seq; i++) tokens[i] = (int32_t)(test_rand_u64(&s) % (unsigned long long)V);
    float *l_lora = malloc(sizeof(float) * (size_t)(T * n_seq) * V), *l_ref = malloc(sizeof(float) * (size_t)(T * n_seq) * V);
    float *l_base = malloc(sizeof(float) * (size_t)(T * n_seq) * V), *l_deq = malloc(sizeof(float) * (size_t)(T * n_seq) * V);
    fx fa, fr, fd;
    if (a && !fx_open(&fa, m, T * n_seq) && !fx_open(&fr, ref, T * n_seq) && !fx_open(&fd, deq, T * n_seq)) {
        const pg_lora *table[2] = {NULL, a};
        CHECK(forward_set_adapters(fa.f, table, 2) == 0, "%s", pagoda_last_error());
        int32_t one[2] = {1, 1};
        CHECK(run_batch(&fa, tokens, n_seq, T, one, l_lora) == 0 && run_batch(&fr, tokens, n_seq, T, NULL, l_ref) == 0 &&
              run_batch(&fa, tokens, n_seq, T, NULL, l_base) == 0 && run_batch(&fd, tokens, n_seq, T, NULL, l_deq) == 0, "runs");
        size_t n = (size_t)(T * n_seq) * V;
        double d = max_diff(l_lora, l_ref, n), q = max_diff(l_base, l_deq, n), moved = max_diff(l_ref, l_deq, n);
        /* the base product rounds activations as its weight type does (Q8_0 for q8_0; none for
         * f32); the merged reference runs in f32: the bound is that rounding (measured on the base
         * alone, doubled) plus 1e-4 */
        double tol = 2 * q + 1e-4;
        printf("lora synthetic %-10s r=%d vs merged weights: max %.2e (tol %.2e = 2 x base quantization %.2e + 1e-4; "
               "adapter moves logits by %.2f)\n", what, r, d, tol, q, moved);
        CHECK(d <= tol, "%s: %g > %g", what, d, tol);
        CHECK(moved > 10 * tol, "%s: the adapter barely moves the logits (%g)", what, moved);
        fx_close(&fa), fx_close(&fr), fx_close(&fd);
    }
    for (int i = 0; i < L * LORA_N_TARGETS * 2; i++) free(mats[i]), free(owned[i]);
    free(mats), free(owned), free(l_lora), free(l_ref), free(l_base), free(l_deq);
    lora_free(a);
    model_free(m), model_free(ref), model_free(deq);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    CHECK(system(cmd) == 0, "cleanup");
}

/* ---- malformed ---------------------------------------------------------------------------------- */

static void expect_fail(const pg_model *m, const char *path, const char *needle, const char *what) {
    pg_lora *a = NULL;
    pagoda_status st = lora_load(m, path, 0, &a);
    CHECK(st != PAGODA_OK && !a, "%s: loaded", what);
    CHECK(strstr(pagoda_last_error(), needle) != NULL, "%s: message \"%s\" lacks \"%s\"", what, pagoda_last_error(), needle);
    printf("lora malformed %-18s -> %s\n", what, pagoda_last_error());
    lora_free(a);
}

static void copy_file(const char *from, const char *to, long truncate_to) {
    FILE *f = fopen(from, "rb"), *o = fopen(to, "wb");
    char buf[65536];
    size_t n;
    long done = 0;
    while (f && o && (n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (truncate_to >= 0 && done + (long)n > truncate_to) n = (size_t)(truncate_to - done);
        fwrite(buf, 1, n, o);
        done += (long)n;
        if (truncate_to >= 0 && done >= truncate_to) break;
    }
    if (f) fclose(f);
    if (o) fclose(o);
}

static void check_malformed(const char *shared) {
    char p[1200], d[256], q[1300];
    pg_model *llama = NULL, *qwen = NULL; /* qwen: another base, tiny-llama (64 x 64 vs 256 x 256 ...) */
    snprintf(p, sizeof p, "%s/fixtures/hf/llama", shared);
    CHECK(model_load(p, &llama) == 0, "%s", pagoda_last_error());
    snprintf(p, sizeof p, "%s/fixtures/gguf/tiny-llama-f32.gguf", shared);
    CHECK(model_load(p, &qwen) == 0, "%s", pagoda_last_error());
    if (!llama || !qwen) goto out;
    /* wrong base: names the tensor and both shapes */
    snprintf(p, sizeof p, "%s/fixtures/lora/llama/attn_r8", shared);
    expect_fail(qwen, p, "expected [", "wrong base (peft)");
    snprintf(p, sizeof p, "%s/fixtures/lora/llama/attn_r8.gguf", shared);
    expect_fail(qwen, p, "lora_", "wrong base (gguf)");
    /* a model file is not an adapter */
    snprintf(p, sizeof p, "%s/fixtures/gguf/tiny-llama-f32.gguf", shared);
    expect_fail(llama, p, "not \"adapter\"", "model as adapter");
    snprintf(d, sizeof d, "/tmp/pagoda_lora_bad_%d", (int)getpid());
    mkdir(d, 0700);
    /* truncated tensor files */
    snprintf(p, sizeof p, "%s/fixtures/lora/llama/attn_r8.gguf", shared);
    snprintf(q, sizeof q, "%s/trunc.gguf", d);
    copy_file(p, q, 20000);
    expect_fail(llama, q, "", "truncated gguf");
    snprintf(p, sizeof p, "%s/fixtures/lora/llama/attn_r8/adapter_model.safetensors", shared);
    snprintf(q, sizeof q, "%s/adapter_model.safetensors", d);
    copy_file(p, q, 20000);
    snprintf(p, sizeof p, "%s/fixtures/lora/llama/attn_r8/adapter_config.json", shared);
    snprintf(q, sizeof q, "%s/adapter_config.json", d);
    copy_file(p, q, -1);
    expect_fail(llama, d, "", "truncated safetensors");
    /* a missing lora_B */
    {
        float a[8 * 64] = {0};
        int64_t shape[2] = {8, 64};
        st_write_tensor t = {.name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                             .dtype = PAGODA_DTYPE_F32, .n_dims = 2, .shape = shape, .data = a};
        snprintf(q, sizeof q, "%s/adapter_model.safetensors", d);
        CHECK(st_write(q, &t, 1) == 0, "%s", pagoda_last_error());
        expect_fail(llama, d, "has no base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "missing lora_B");
    }
    /* config refusals */
    struct { const char *json, *needle, *what; } cfgs[] = {
        {"{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":16,\"bias\":\"all\"}", "bias all", "bias != none"},
        {"{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":16,\"modules_to_save\":[\"lm_head\"]}", "modules_to_save", "modules_to_save"},
        {"{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":16,\"target_modules\":[\"lm_head\"]}", "target module lm_head", "lm_head target"},
        {"{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":16,\"use_dora\":true}", "DoRA", "dora"},
        {"{\"peft_type\":\"IA3\",\"r\":8}", "only LORA", "ia3"},
        {"{\"r\":8,", "adapter_config.json", "broken json"},
        {"{\"peft_type\":\"LORA\",\"r\":-1,\"lora_alpha\":16}", "r must be", "negative r"},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        snprintf(q, sizeof q, "%s/adapter_config.json", d);
        FILE *f = fopen(q, "w");
        fputs(cfgs[i].json, f);
        fclose(f);
        expect_fail(llama, d, cfgs[i].needle, cfgs[i].what);
    }
    snprintf(q, sizeof q, "rm -rf '%s'", d);
    CHECK(system(q) == 0, "cleanup");
out:
    model_free(llama), model_free(qwen);
}

/* ---- kernels ------------------------------------------------------------------------------------ */

static void check_kernels(void) {
    unsigned long long s = 7;
    enum { ROWS = 5, IN = 96, OUT = 300, R = 16, LD = 320 };
    static float x[ROWS * IN], A[R * IN], Bt[R * OUT], y0[ROWS * LD], y1[ROWS * LD], tmp[ROWS * R];
    for (int i = 0; i < ROWS * IN; i++) x[i] = test_rand_f(&s);
    for (int i = 0; i < R * IN; i++) A[i] = test_rand_f(&s);
    for (int i = 0; i < R * OUT; i++) Bt[i] = test_rand_f(&s);
    for (int i = 0; i < ROWS * LD; i++) y0[i] = y1[i] = test_rand_f(&s);
    kref_lora(x, ROWS, IN, A, R, Bt, OUT, 0.5f, y0, LD, tmp);
    kcpu_lora(x, ROWS, IN, A, R, Bt, OUT, 0.5f, y1, LD, tmp);
    double d = max_diff(y0, y1, ROWS * LD);
    printf("lora kernel cpu vs ref: max %.2e (tol 1e-3 on values ~%d)\n", d, R * 10);
    CHECK(d <= 1e-3, "kcpu_lora vs kref_lora %g", d);
}

/* several segments in one call (what a decode step with a different adapter per sequence runs,
 * for up to 3 projections at once): different ranks, row counts and output widths, a rank-0
 * segment and an empty one, odd segments' matrices as halves (f16 adapters), threaded and not, at
 * every ISA level this CPU has, in a layout with many rows (one job of whole rows) and one with
 * two big rows (A job then B job); each segment's rows must equal kref_lora's for it alone (on
 * the halves' float values), and rows between segments stay untouched */
static void check_kernel_batch(void) {
    unsigned long long s = 11;
    enum { IN = 600, OUT = 2100, LD = 2112, NSEG = 7, MAXR = 32, ROWS = 40 };
    static const int32_t layouts[2][2][NSEG] = {
        {{1, 3, 0, 1, 17, 1, 6}, {16, 8, 4, 0, 32, 1, 16}}, /* rows, ranks */
        {{1, 0, 1, 0, 0, 0, 0}, {32, 4, 32, 8, 8, 8, 8}},
    };
    static float x[ROWS * IN], A[NSEG][MAXR * IN], Bt[NSEG][MAXR * OUT], y0[ROWS * LD], y1[ROWS * LD], tmp[ROWS * MAXR];
    static uint16_t A16[NSEG][MAXR * IN], Bt16[NSEG][MAXR * OUT];
    for (int i = 0; i < ROWS * IN; i++) x[i] = test_rand_f(&s);
    for (int g = 0; g < NSEG; g++) {
        for (int i = 0; i < MAXR * IN; i++) A[g][i] = test_rand_f(&s);
        for (int i = 0; i < MAXR * OUT; i++) Bt[g][i] = test_rand_f(&s);
        if (g % 2) { /* this segment in halves: the reference reads the values they hold */
            for (int i = 0; i < MAXR * IN; i++) A[g][i] = pg_fp16_to_fp32(A16[g][i] = pg_fp32_to_fp16(A[g][i]));
            for (int i = 0; i < MAXR * OUT; i++) Bt[g][i] = pg_fp16_to_fp32(Bt16[g][i] = pg_fp32_to_fp16(Bt[g][i]));
        }
    }
    const int isa_max = kcpu_isa_max();
    for (int lay = 0; lay < 2; lay++)
        for (int isa = KCPU_ISA_SCALAR; isa <= isa_max; isa++) {
            kcpu_isa_force(isa);
            for (int threads = 1; threads <= 2; threads++) {
                const int32_t *rows = layouts[lay][0], *ranks = layouts[lay][1];
                for (int i = 0; i < ROWS * LD; i++) y0[i] = y1[i] = test_rand_f(&s);
                pg_lora_seg segs[NSEG];
                int32_t t = 0;
                for (int g = 0; g < NSEG; g++) {
                    t += g == 3; /* a row no segment covers */
                    const int64_t n_in = IN - 50 * (g % 3), n_out = OUT - 700 * (g % 3); /* several projections */
                    segs[g] = (pg_lora_seg){.n_in = n_in, .n_out = n_out, .ldy = LD, .x = x + (int64_t)t * IN,
                                            .y = y1 + (int64_t)t * LD, .tmp = tmp + (int64_t)t * MAXR, .rows = rows[g],
                                            .rank = ranks[g], .scale = 0.25f * (float)(g + 1)};
                    /* the matrices of this shape: A rows n_in apart, Bt rows n_out apart */
                    if (g % 2) segs[g].A16 = A16[g], segs[g].Bt16 = Bt16[g];
                    else segs[g].A = A[g], segs[g].Bt = Bt[g];
                    if (ranks[g]) kref_lora(x + (int64_t)t * IN, rows[g], n_in, A[g], ranks[g], Bt[g], n_out, segs[g].scale,
                                            y0 + (int64_t)t * LD, LD, tmp + (int64_t)t * MAXR);
                    t += rows[g];
                }
                CHECK(t < ROWS, "test layout");
                kcpu_set_threads(threads);
                kcpu_lora_batch(segs, NSEG);
                double d = max_diff(y0, y1, ROWS * LD);
                printf("lora batch kernel (layout %d, f32 and f16, isa %d, %d threads) vs ref: max %.2e\n", lay, isa,
                       threads, d);
                CHECK(d <= 1e-3, "kcpu_lora_batch vs kref_lora %g (layout %d, isa %d, %d threads)", d, lay, isa, threads);
            }
        }
    kcpu_isa_force(isa_max);
    kcpu_set_threads(0);
}

int main(void) {
    check_kernels();
    check_kernel_batch();
    const char *shared = test_shared_dir();
    if (!shared) {
        printf("../shared absent: only the kernel check ran\n");
        TEST_DONE();
    }
    char p[1024];
    check_goldens(shared);
    snprintf(p, sizeof p, "%s/fixtures/hf/qwen2", shared);
    check_synthetic(p, false, 8, "qwen2-f32", false);
    check_synthetic(p, false, 8, "qwen2-f16", true);
    snprintf(p, sizeof p, "%s/fixtures/gguf/tiny-llama-q8_0.gguf", shared);
    check_synthetic(p, true, 16, "llama-q8_0", false);
    check_synthetic(p, true, 16, "llama-q8_0-f16", true);
    check_malformed(shared);
    TEST_DONE();
}
