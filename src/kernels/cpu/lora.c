/* LoRA delta, fast CPU version: the A product (rank outputs per row) on the threaded f32 matmul,
 * then rank axpys of Bt's rows into each output row (contiguous, vectorized), chunks of
 * (row, columns) across the thread pool. */
#include "core/thread_pool.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"

enum { COLS = 256 }; /* output columns per work item: a decode step (few rows) still spreads */

typedef struct {
    const float *tmp, *Bt;
    float *y;
    int64_t ldy, n_out, n_ch, n_items;
    int32_t rank;
} axpy_job;

static void axpy_items(void *ctx, int ith, int nth) {
    const axpy_job *j = ctx;
    for (int64_t it = ith; it < j->n_items; it += nth) { /* equal items: round robin is even */
        int64_t t = it / j->n_ch, o0 = (it % j->n_ch) * COLS, o1 = o0 + COLS < j->n_out ? o0 + COLS : j->n_out;
        float *yt = j->y + t * j->ldy;
        const float *h = j->tmp + t * j->rank;
        for (int32_t k = 0; k < j->rank; k++) {
            const float hk = h[k], *b = j->Bt + (int64_t)k * j->n_out;
            for (int64_t o = o0; o < o1; o++) yt[o] += hk * b[o];
        }
    }
}

void kcpu_lora(const float *x, int32_t rows, int64_t n_in, const float *A, int32_t rank, const float *Bt, int64_t n_out,
               float scale, float *y, int64_t ldy, float *tmp) {
    if (rows <= 0 || rank <= 0) return;
    /* f32 weights read f32 activations as they are: no conversion scratch */
    kcpu_matmul(PAGODA_DTYPE_F32, A, n_in, rank, x, rows, tmp, NULL);
    for (int64_t i = 0; i < (int64_t)rows * rank; i++) tmp[i] *= scale;
    axpy_job j = {.tmp = tmp, .Bt = Bt, .y = y, .ldy = ldy, .n_out = n_out, .rank = rank, .n_ch = (n_out + COLS - 1) / COLS};
    j.n_items = (int64_t)rows * j.n_ch;
    int nth = kcpu_get_threads();
    if ((double)rows * (double)n_out * rank < 131072 || nth < 1) nth = 1;
    if (nth > j.n_items) nth = (int)j.n_items;
    pg_parallel(nth, axpy_items, &j);
}
