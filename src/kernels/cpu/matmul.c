/* kcpu_matmul: converts the activations once (threaded over tokens), then hands chunks of output
 * rows to the calling thread's team (core/thread_pool.h), first come first served, and runs the
 * ISA's blocked kernel over each cache-sized chunk of weight rows. */
#include <stdatomic.h>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "kernels/cpu/cpu_impl.h"

/* Weight bytes per chunk: a chunk is re-read once per token tile, so it should stay in L2 (96 KiB
 * measured 10-25% faster than 384 KiB for 8-128 tokens on Zen 4, in interleaved runs). */
#define KCPU_CHUNK_BYTES (96 * 1024)
/* Rows per work item when the weights stream through once (decode): small items, so neither
 * thread waits long for the other's last piece (fixed 64-row pieces measured a few % slower). */
#define KCPU_DECODE_CHUNK_ROWS 16
/* Below this many multiply-adds the fork/join costs more than it saves. */
#define KCPU_MIN_PARALLEL_MACS (1 << 17)
/* Converted activations up to this size (one decode row, or the few rows of a speculative
 * verification) are converted by every thread into its own stack buffer: cheaper than a barrier,
 * which costs a whole time slice when a thread is preempted. */
#define KCPU_LOCAL_ACT_BYTES 32768

typedef struct {
    k_from_float_fn conv;
    kcpu_gemm_fn gemm;
    const float *x;
    const void *w;
    void *work;
    float *y;
    const void *act; /* the converted activations (work) or x itself */
    int64_t n_in, n_out, n_tok, step, n_chunks;
    size_t w_row, a_row;
    int local_conv; /* a few rows: every thread converts them into its own stack buffer */
    _Atomic long long next;
} mm_job;

static void mm_convert(void *ctx, int ith, int nth) {
    mm_job *j = ctx;
    int64_t t0 = j->n_tok * ith / nth, t1 = j->n_tok * (ith + 1) / nth;
    for (int64_t t = t0; t < t1; t++) j->conv(j->x + t * j->n_in, (char *)j->work + t * j->a_row, j->n_in);
}

static void mm_rows(void *ctx, int ith, int nth) {
    (void)ith;
    mm_job *j = ctx;
    _Alignas(64) char local[KCPU_LOCAL_ACT_BYTES]; /* cheaper than a second fork/join for one row */
    const void *act = j->act;
    if (j->local_conv) {
        for (int64_t t = 0; t < j->n_tok; t++) j->conv(j->x + t * j->n_in, local + t * j->a_row, j->n_in);
        act = local;
    }
    /* guided: a thread's chunks are mostly adjacent (one stream for the prefetcher), and the
     * shared counter is touched a few dozen times per product, not once per chunk */
    long long c0, c1;
    while (pg_guided_next(&j->next, j->n_chunks, nth, 1, &c0, &c1))
        for (long long c = c0; c < c1; c++) {
            int64_t r = c * j->step, nr = j->n_out - r < j->step ? j->n_out - r : j->step;
            j->gemm(j->n_in, (const char *)j->w + r * j->w_row, j->w_row, act, j->a_row, j->y + r, j->n_out, nr,
                    j->n_tok);
        }
}

void kcpu_matmul(int wtype, const void *w, int64_t n_in, int64_t n_out, const float *x, int64_t n_tok, float *y,
                 void *work) {
    const kcpu_fns *f = kcpu_active();
    const k_type_traits *rt = kref_traits(wtype);
    kcpu_gemm_fn gemm = (wtype >= 0 && wtype < PAGODA_DTYPE_COUNT) ? f->gemm[wtype] : NULL;
    size_t w_row, a_row;
    if (!gemm || !rt || n_in <= 0 || n_out <= 0 || n_tok <= 0 || !dtype_row_size(wtype, n_in, &w_row) ||
        !dtype_row_size(rt->vec_dot_type, n_in, &a_row)) {
        kref_matmul(wtype, w, n_in, n_out, x, n_tok, y, work);
        return;
    }
    k_from_float_fn conv = NULL;
    const void *a = x;
    if (rt->vec_dot_type != PAGODA_DTYPE_F32) {
        conv = f->from_float[rt->vec_dot_type];
        if (!conv) conv = kref_traits(rt->vec_dot_type)->from_float;
        a = work;
    } else {
        a_row = (size_t)n_in * sizeof(float);
    }

    int nth = kcpu_get_threads();
    int64_t max_by_rows = (n_out + 15) / 16;
    if (nth > max_by_rows) nth = (int)max_by_rows;
    if ((double)n_in * (double)n_out * (double)n_tok < KCPU_MIN_PARALLEL_MACS) nth = 1;
    if (nth < 1) nth = 1;

    int tile = f->tile_rows[wtype] > 0 ? f->tile_rows[wtype] : 4;
    int64_t mc = (int64_t)(KCPU_CHUNK_BYTES / w_row);
    mc = mc < 16 ? 16 : mc & ~(int64_t)15;
    if (mc % tile) mc += tile - mc % tile;

    mm_job j = {.conv = conv, .gemm = gemm, .x = x, .w = w, .work = work, .y = y, .act = a, .n_in = n_in,
                .n_out = n_out, .n_tok = n_tok, .w_row = w_row, .a_row = a_row};
    j.local_conv = conv && (uint64_t)n_tok * a_row <= KCPU_LOCAL_ACT_BYTES;
    if (conv && !j.local_conv) pg_parallel(nth, mm_convert, &j);
    /* Each row's result does not depend on which thread computes it (batch invariance). */
    j.step = n_tok <= 4 ? KCPU_DECODE_CHUNK_ROWS : mc;
    if (j.step % tile) j.step += tile - j.step % tile;
    j.n_chunks = (n_out + j.step - 1) / j.step;
    atomic_init(&j.next, 0);
    pg_parallel(nth, mm_rows, &j);
}
