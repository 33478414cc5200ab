/* kcpu_matmul: converts the activations once (threaded over tokens), then splits the output rows
 * among OpenMP threads in contiguous, 16-row aligned ranges and runs the ISA's blocked kernel
 * over cache-sized chunks of weight rows. */
#include <omp.h>

#include "core/dtype.h"
#include "kernels/cpu/cpu_impl.h"

/* Weight bytes per chunk: a chunk is re-read once per token tile, so it should stay in L2 (96 KiB
 * measured 10-25% faster than 384 KiB for 8-128 tokens on Zen 4, in interleaved runs). */
#define KCPU_CHUNK_BYTES (96 * 1024)
/* Rows per work item when the weights stream through once (decode). Items are handed out
 * "guided" (large runs first, single items at the end), so neither thread waits long for the
 * other's last piece, which measured a few % of decode time with fixed 64-row pieces. */
#define KCPU_DECODE_CHUNK_ROWS 16
/* Below this many multiply-adds the fork/join costs more than it saves. */
#define KCPU_MIN_PARALLEL_MACS (1 << 17)
/* A single converted activation row up to this size is converted by every thread into its own
 * stack buffer: cheaper than a barrier, which costs a whole time slice when a thread is preempted. */
#define KCPU_LOCAL_ACT_BYTES 32768

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

#pragma omp parallel num_threads(nth)
    {
        int ith = omp_get_thread_num(), nt = omp_get_num_threads();
        _Alignas(64) char local[KCPU_LOCAL_ACT_BYTES];
        const void *act = a;
        if (conv && n_tok == 1 && a_row <= sizeof local) {
            conv(x, local, n_in);
            act = local;
        } else if (conv) {
            int64_t t0 = n_tok * ith / nt, t1 = n_tok * (ith + 1) / nt;
            for (int64_t t = t0; t < t1; t++) conv(x + t * n_in, (char *)work + t * a_row, n_in);
#pragma omp barrier
        }
        /* Rows go out in chunks, first come first served: on shared or virtual cores one thread
         * often runs slower, and a static half-and-half split would leave the other spinning.
         * Each row's result does not depend on which thread computes it (batch invariance). */
        int64_t step = n_tok <= 4 ? KCPU_DECODE_CHUNK_ROWS : mc;
        if (step % tile) step += tile - step % tile;
        int64_t n_chunks = (n_out + step - 1) / step;
#pragma omp for schedule(guided) nowait
        for (int64_t c = 0; c < n_chunks; c++) {
            int64_t r = c * step, nr = n_out - r < step ? n_out - r : step;
            gemm(n_in, (const char *)w + r * w_row, w_row, act, a_row, y + r, n_out, nr, n_tok);
        }
    }
}
