/* LoRA deltas, fast CPU version, for every segment of a step at once (f32 or f16 matrices, one
 * or several projections): where rows are many, one job whose items are rows, each doing its A
 * product (rank dot products) then its B product (rank axpys over the whole output row); where
 * they are few (a row's work would not spread), two jobs: the A products, then the B axpys over
 * (row, column chunk) items. */
#include "core/fp16.h"
#include "core/thread_pool.h"
#include "kernels/cpu/cpu_impl.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"

enum { COLS = 256, MAX_SEGS_STACK = 256 }; /* output columns per item of the two-job path */

typedef struct {
    const pg_lora_seg *segs;
    const int32_t *row0; /* [n + 1]: first flattened row of each segment */
    const int64_t *ch0;  /* [n + 1]: first flattened (row, chunk) item of each segment */
    int32_t n;
    int64_t n_rows, n_chunks;
    k_vec_dot_fn dot;
    float (*dot16)(int64_t n, const uint16_t *w, const float *x);
    void (*axpy16)(int64_t n, float a, const uint16_t *b, float *y);
    void (*axpy)(int64_t n, float a, const float *b, float *y);
} lora_job;

/* scalar versions (the SIMD ones are in lora_avx2.c) */
static float dot16_scalar(int64_t n, const uint16_t *w, const float *x) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += pg_fp16_to_fp32(w[i]) * x[i];
    return s;
}
static void axpy16_scalar(int64_t n, float a, const uint16_t *b, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * pg_fp16_to_fp32(b[i]);
}
static void axpy_scalar(int64_t n, float a, const float *b, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * b[i];
}

/* segment holding flattened index r of the prefix table p (nondecreasing; a thread's indices grow,
 * so the search goes on from its last hit) */
static int32_t seg_of_i32(const int32_t *p, int32_t n, int64_t r, int32_t hint) {
    int32_t s = hint < n && p[hint] <= r ? hint : 0;
    while (p[s + 1] <= r) s++;
    return s;
}
static int32_t seg_of_i64(const int64_t *p, int32_t n, int64_t r, int32_t hint) {
    int32_t s = hint < n && p[hint] <= r ? hint : 0;
    while (p[s + 1] <= r) s++;
    return s;
}

static void row_a(const lora_job *j, const pg_lora_seg *g, int64_t t) {
    const float *x = g->x + t * g->n_in;
    float *h = g->tmp + t * g->rank;
    if (g->A16)
        for (int32_t k = 0; k < g->rank; k++) h[k] = g->scale * j->dot16(g->n_in, g->A16 + (int64_t)k * g->n_in, x);
    else
        for (int32_t k = 0; k < g->rank; k++) h[k] = g->scale * j->dot(g->n_in, g->A + (int64_t)k * g->n_in, x);
}

static void row_b(const lora_job *j, const pg_lora_seg *g, int64_t t, int64_t o0, int64_t o1) {
    float *yt = g->y + t * g->ldy;
    const float *h = g->tmp + t * g->rank;
    if (g->Bt16)
        for (int32_t k = 0; k < g->rank; k++) j->axpy16(o1 - o0, h[k], g->Bt16 + (int64_t)k * g->n_out + o0, yt + o0);
    else
        for (int32_t k = 0; k < g->rank; k++) j->axpy(o1 - o0, h[k], g->Bt + (int64_t)k * g->n_out + o0, yt + o0);
}

static void whole_rows(void *ctx, int ith, int nth) {
    const lora_job *j = ctx;
    int32_t s = 0;
    for (int64_t r = ith; r < j->n_rows; r += nth) {
        s = seg_of_i32(j->row0, j->n, r, s);
        const pg_lora_seg *g = &j->segs[s];
        row_a(j, g, r - j->row0[s]);
        row_b(j, g, r - j->row0[s], 0, g->n_out);
    }
}

static void a_items(void *ctx, int ith, int nth) {
    const lora_job *j = ctx;
    int32_t s = 0;
    for (int64_t r = ith; r < j->n_rows; r += nth) {
        s = seg_of_i32(j->row0, j->n, r, s);
        row_a(j, &j->segs[s], r - j->row0[s]);
    }
}

static void b_items(void *ctx, int ith, int nth) {
    const lora_job *j = ctx;
    int32_t s = 0;
    for (int64_t it = ith; it < j->n_chunks; it += nth) {
        s = seg_of_i64(j->ch0, j->n, it, s);
        const pg_lora_seg *g = &j->segs[s];
        const int64_t n_ch = (g->n_out + COLS - 1) / COLS, k = it - j->ch0[s];
        const int64_t o0 = (k % n_ch) * COLS, o1 = o0 + COLS < g->n_out ? o0 + COLS : g->n_out;
        row_b(j, g, k / n_ch, o0, o1);
    }
}

void kcpu_lora_batch(const pg_lora_seg *segs, int32_t n) {
    if (n <= 0) return;
    if (n > MAX_SEGS_STACK) {
        /* more segments than the stack holds: in slices */
        for (int32_t i = 0; i < n; i += MAX_SEGS_STACK) kcpu_lora_batch(segs + i, n - i < MAX_SEGS_STACK ? n - i : MAX_SEGS_STACK);
        return;
    }
    int32_t row0[MAX_SEGS_STACK + 1];
    int64_t ch0[MAX_SEGS_STACK + 1];
    double work = 0, biggest = 0;
    row0[0] = 0, ch0[0] = 0;
    for (int32_t i = 0; i < n; i++) {
        const pg_lora_seg *g = &segs[i];
        const int32_t rows = g->rank > 0 && g->rows > 0 ? g->rows : 0;
        row0[i + 1] = row0[i] + rows;
        ch0[i + 1] = ch0[i] + (int64_t)rows * ((g->n_out + COLS - 1) / COLS);
        const double w = (double)g->rank * (double)(g->n_in + g->n_out);
        work += w * rows;
        if (rows && w > biggest) biggest = w;
    }
    lora_job j = {.segs = segs, .row0 = row0, .ch0 = ch0, .n = n, .n_rows = row0[n], .n_chunks = ch0[n],
                  .dot = kcpu_traits(PAGODA_DTYPE_F32)->vec_dot, .dot16 = dot16_scalar, .axpy16 = axpy16_scalar,
                  .axpy = axpy_scalar};
    if (!j.n_rows) return;
    if (kcpu_isa_level() >= KCPU_ISA_AVX2)
        j.dot16 = kcpu_lora_dot_f16_avx2, j.axpy16 = kcpu_lora_axpy_f16_avx2, j.axpy = kcpu_lora_axpy_f32_avx2;
    int nth = kcpu_get_threads();
    if (work < 131072 || nth < 1) nth = 1;
    /* whole rows per item when they spread evenly: every thread gets rows, and the largest row is
     * a small part of a thread's share */
    if (nth == 1 || (j.n_rows >= 2 * (int64_t)nth && biggest * nth <= work / 2)) {
        pg_parallel(nth > j.n_rows ? (int)j.n_rows : nth, whole_rows, &j);
        return;
    }
    pg_parallel(nth > j.n_rows ? (int)j.n_rows : nth, a_items, &j);
    pg_parallel((int64_t)nth > j.n_chunks ? (int)j.n_chunks : nth, b_items, &j);
}

void kcpu_lora(const float *x, int32_t rows, int64_t n_in, const float *A, int32_t rank, const float *Bt, int64_t n_out,
               float scale, float *y, int64_t ldy, float *tmp) {
    const pg_lora_seg g = {.n_in = n_in, .n_out = n_out, .ldy = ldy, .x = x, .y = y, .tmp = tmp, .A = A, .Bt = Bt,
                           .rows = rows, .rank = rank, .scale = scale};
    kcpu_lora_batch(&g, 1);
}
