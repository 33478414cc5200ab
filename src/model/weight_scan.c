/* Refusing weights that hold NaN or infinity: such a model loads, runs and generates nothing
 * (every logit NaN). Plain float tensors are scanned value by value; quantized GGML blocks by
 * their scales (d, dmin / m, all f16 except Q8_K's f32 d): a block's values are finite whenever
 * its scales are, since its quants are small integers. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/array.h"
#include "core/dtype.h"
#include "core/finite.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "kernels/quants.h"
#include "model/model.h"

/* Where the float scales sit inside one block of each quantized type. */
typedef struct {
    int dtype;
    pg_float_kind kind;
    int n_scales;
    size_t offset[2];
    const char *name[2];
} block_scales;

static const block_scales k_block_scales[] = {
    {PAGODA_DTYPE_Q4_0, PG_FLOAT_F16, 1, {offsetof(block_q4_0, d)}, {"d"}},
    {PAGODA_DTYPE_Q4_1, PG_FLOAT_F16, 2, {offsetof(block_q4_1, d), offsetof(block_q4_1, m)}, {"d", "m"}},
    {PAGODA_DTYPE_Q5_0, PG_FLOAT_F16, 1, {offsetof(block_q5_0, d)}, {"d"}},
    {PAGODA_DTYPE_Q5_1, PG_FLOAT_F16, 2, {offsetof(block_q5_1, d), offsetof(block_q5_1, m)}, {"d", "m"}},
    {PAGODA_DTYPE_Q8_0, PG_FLOAT_F16, 1, {offsetof(block_q8_0, d)}, {"d"}},
    {PAGODA_DTYPE_Q8_1, PG_FLOAT_F16, 2, {offsetof(block_q8_1, d), offsetof(block_q8_1, s)}, {"d", "s"}},
    {PAGODA_DTYPE_Q4_K, PG_FLOAT_F16, 2, {offsetof(block_q4_K, d), offsetof(block_q4_K, dmin)}, {"d", "dmin"}},
    {PAGODA_DTYPE_Q5_K, PG_FLOAT_F16, 2, {offsetof(block_q5_K, d), offsetof(block_q5_K, dmin)}, {"d", "dmin"}},
    {PAGODA_DTYPE_Q6_K, PG_FLOAT_F16, 1, {offsetof(block_q6_K, d)}, {"d"}},
    {PAGODA_DTYPE_Q8_K, PG_FLOAT_F32, 1, {offsetof(block_q8_K, d)}, {"d"}},
};

/* One piece of the scan: elements (or blocks) [i0, i1) of a weight. */
typedef struct {
    const pg_weight *w;
    int64_t i0, i1;
} piece;

#define PIECE_BYTES ((int64_t)1 << 20) /* spreads a big tensor over the threads; a block type with two
                                        * scales is read twice, the second time from cache */

typedef struct {
    const piece *pieces;
    int64_t n_pieces;
    _Atomic int64_t next;
    _Atomic int64_t bad_piece; /* lowest piece with a bad value (INT64_MAX: none) */
    int64_t *bad_at;           /* [n_pieces] where in that piece (element or block index) */
    int *bad_scale;            /* [n_pieces] which scale of the block */
} scan_job;

static const block_scales *scales_of(int dtype) {
    for (size_t i = 0; i < sizeof k_block_scales / sizeof k_block_scales[0]; i++)
        if (k_block_scales[i].dtype == dtype) return &k_block_scales[i];
    return NULL;
}

static int float_kind(int dtype, pg_float_kind *k) {
    switch (dtype) {
    case PAGODA_DTYPE_F32: *k = PG_FLOAT_F32; return 1;
    case PAGODA_DTYPE_F16: *k = PG_FLOAT_F16; return 1;
    case PAGODA_DTYPE_BF16: *k = PG_FLOAT_BF16; return 1;
    }
    return 0;
}

/* Index of the first bad element or block in the piece (-1: none); *scale: which block scale. */
static int64_t scan_piece(const piece *p, int *scale) {
    const pg_weight *w = p->w;
    const pg_dtype_info *di = dtype_info(w->dtype);
    pg_float_kind k;
    *scale = 0;
    if (float_kind(w->dtype, &k)) {
        int64_t bad = pg_first_nonfinite((const char *)w->data + (size_t)p->i0 * di->type_size, p->i1 - p->i0, k);
        return bad < 0 ? -1 : p->i0 + bad;
    }
    const block_scales *b = scales_of(w->dtype);
    for (int s = 0; b && s < b->n_scales; s++) {
        const char *base = (const char *)w->data + (size_t)p->i0 * di->type_size + b->offset[s];
        int64_t bad = pg_first_nonfinite_strided(base, p->i1 - p->i0, di->type_size, b->kind);
        if (bad >= 0) {
            *scale = s;
            return p->i0 + bad;
        }
    }
    return -1;
}

static void scan_pieces(void *ctx, int ith, int nth) {
    (void)ith, (void)nth;
    scan_job *j = ctx;
    for (int64_t i; (i = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->n_pieces;) {
        if (i > atomic_load_explicit(&j->bad_piece, memory_order_relaxed)) break; /* a lower one already failed */
        int64_t at = scan_piece(&j->pieces[i], &j->bad_scale[i]);
        j->bad_at[i] = at;
        if (at < 0) continue;
        int64_t cur = atomic_load(&j->bad_piece);
        while (i < cur && !atomic_compare_exchange_weak(&j->bad_piece, &cur, i)) {}
    }
}

/* Splits w into pieces (appended to *ps); weights with nothing to scan add none. */
static pagoda_status add_pieces(const pg_weight *w, piece **ps, int64_t *n, int64_t *cap) {
    if (!w->data) return PAGODA_OK;
    const pg_dtype_info *di = dtype_info(w->dtype);
    pg_float_kind k;
    if (!di || (!float_kind(w->dtype, &k) && !scales_of(w->dtype))) return PAGODA_OK;
    int64_t units = w->n_in * w->n_out / di->block_size; /* elements, or blocks */
    int64_t per = PIECE_BYTES / (int64_t)di->type_size;
    for (int64_t i0 = 0; i0 < units; i0 += per) {
        if (!pg_grow((void **)ps, cap, *n + 1, sizeof **ps)) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        (*ps)[(*n)++] = (piece){w, i0, units - i0 < per ? units : i0 + per};
    }
    return PAGODA_OK;
}

pagoda_status model_check_finite(const pg_model *m) {
    piece *ps = NULL;
    int64_t n = 0, cap = 0;
    int nr;
    pagoda_status st = PAGODA_OK;
    const pg_weight_role *r = model_global_roles(&nr);
    for (int i = 0; i < nr && !st; i++) {
        const pg_weight *w = role_weight_const(m, &r[i]);
        if (w != &m->tok_embd && w->data == m->tok_embd.data) continue; /* tied: scanned once */
        st = add_pieces(w, &ps, &n, &cap);
    }
    r = model_layer_roles(&nr);
    for (int l = 0; l < m->cfg.n_layer && !st; l++)
        for (int i = 0; i < nr && !st; i++) st = add_pieces(role_weight_const(&m->layers[l], &r[i]), &ps, &n, &cap);
    scan_job j = {.pieces = ps, .n_pieces = n};
    if (!st && n > 0 && (!(j.bad_at = malloc(sizeof(int64_t) * (size_t)n)) || !(j.bad_scale = malloc(sizeof(int) * (size_t)n))))
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    if (!st && n > 0) {
        atomic_init(&j.next, 0);
        atomic_init(&j.bad_piece, INT64_MAX);
        /* memory bound: a few threads reach the bandwidth */
        int nt = pg_cpu_count() < 8 ? pg_cpu_count() : 8;
        pg_parallel(nt < n ? nt : (int)n, scan_pieces, &j);
        int64_t b = atomic_load(&j.bad_piece);
        if (b != INT64_MAX) {
            const pg_weight *w = ps[b].w;
            const pg_dtype_info *di = dtype_info(w->dtype);
            pg_float_kind k;
            if (float_kind(w->dtype, &k))
                st = pg_fail(PAGODA_ERR_FORMAT, "tensor '%s' (%s): element %lld of %lld is NaN or infinite", w->name,
                             di->name, (long long)j.bad_at[b], (long long)(w->n_in * w->n_out));
            else
                st = pg_fail(PAGODA_ERR_FORMAT, "tensor '%s' (%s): block %lld of %lld has a NaN or infinite scale (%s)",
                             w->name, di->name, (long long)j.bad_at[b], (long long)(w->n_in * w->n_out / di->block_size),
                             scales_of(w->dtype)->name[j.bad_scale[b]]);
        }
    }
    free(j.bad_at);
    free(j.bad_scale);
    free(ps);
    return st;
}
