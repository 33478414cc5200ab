/* kcpu_qmatmul: picks the kernel path from the weight's kind and group size and the activation
 * mode, prepares the activations once into work (permuted, rounded to int8, int16 or e4m3; threaded over
 * tokens when there are many), then hands chunks of output rows to the calling thread's team
 * (core/thread_pool.h), as kcpu_matmul does. Without AVX2 it is kref_qmatmul. */
#include <stdatomic.h>

#include "core/thread_pool.h"
#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/qmatmul_impl.h"
#include "kernels/kernels.h"

/* Weight bytes per chunk when several tokens re-read it: stays in L2 (as kcpu_matmul). */
#define QMM_CHUNK_BYTES (96 * 1024)
/* Rows per work item when the weights stream through once (decode). */
#define QMM_DECODE_CHUNK_ROWS 16
/* Below this many multiply-adds the fork/join costs more than it saves. */
#define QMM_MIN_PARALLEL_MACS (1 << 17)
/* Prepare the activations on the calling thread below this many elements. */
#define QMM_MIN_PARALLEL_PREP (1 << 15)

typedef struct {
    qmm_plan p;
    const float *x;
    int64_t step, n_chunks;
    _Atomic long long next;
} qmm_job;

static void qmm_prep_task(void *ctx, int ith, int nth) {
    qmm_job *j = ctx;
    int64_t t0 = j->p.n_tok * ith / nth, t1 = j->p.n_tok * (ith + 1) / nth;
    kcpu_qmm_prep_avx2(&j->p, j->x, t0, t1);
}

static void qmm_rows_task(void *ctx, int ith, int nth) {
    (void)ith;
    qmm_job *j = ctx;
    long long c0, c1;
    while (pg_guided_next(&j->next, j->n_chunks, nth, 1, &c0, &c1))
        for (long long c = c0; c < c1; c++) {
            int64_t r = c * j->step, r1 = r + j->step < j->p.w->n_out ? r + j->step : j->p.w->n_out;
            if (j->p.path >= QMM_F512)
                kcpu_qmm_rows_avx512(&j->p, r, r1);
            else
                kcpu_qmm_rows_avx2(&j->p, r, r1);
        }
}

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* INT4 on int16 spans of 128 columns, or of 32 / 64 that are its groups, whose byte planes
 * (QMM_FMT_W16S) and span scales fit in a prepared row before the unit sums (n_in >= 96 or so) */
static int w16s_fits(const k_qweight *w) {
    const int64_t span = k_qmatmul_int16_span(w), n_pad = (w->n_in + 31) & ~(int64_t)31;
    const int64_t n128 = (n_pad + 127) & ~(int64_t)127;
    return w->kind == K_QW_INT4 && (span == 128 || ((span == 32 || span == 64) && w->group_size == span)) &&
           qmm_w16_scales_at(QMM_FMT_W16S, n_pad) + (size_t)(n128 / span) * sizeof(float) <=
               (size_t)n_pad * sizeof(float);
}

int kcpu_qmatmul_int16_fast(const k_qweight *w) {
    if (kcpu_isa_level() >= KCPU_ISA_AVX512) return k_qmatmul_int16_span(w) % 32 == 0 && w->kind != K_QW_FP8;
    return kcpu_isa_level() >= KCPU_ISA_AVX2 && w16s_fits(w);
}

void kcpu_qmatmul(const k_qweight *w, k_act_kind act, const float *x, int64_t n_tok, float *y, int64_t ldy,
                  void *work) {
    if (kcpu_isa_level() < KCPU_ISA_AVX2 || n_tok <= 0 || w->n_out <= 0 || w->n_in <= 0) {
        kref_qmatmul(w, act, x, n_tok, y, ldy, work);
        return;
    }
    qmm_job j = {.x = x};
    qmm_plan *p = &j.p;
    const int64_t gs = w->group_size;
    p->w = w, p->act = act, p->n_tok = n_tok, p->y = y, p->ldy = ldy;
    p->n_group = k_qweight_n_group(w);
    p->n_pad = (w->n_in + 31) & ~(int64_t)31;
    /* the same layout as k_qmatmul_work_size's (rows sized for floats, the widest format, and
     * the unit sums) */
    p->a_row = round64((size_t)p->n_pad * sizeof(float) + (size_t)p->n_pad / 8);
    p->s_tok = work;
    p->a = (char *)work + round64((size_t)n_tok * sizeof(float));

    int by8 = gs % 8 == 0 || p->n_group == 1, by32 = gs % 32 == 0 || p->n_group == 1;
    p->path = by8 ? QMM_FLOAT : QMM_GENERIC;
    p->fmt = QMM_FMT_F32;
    if (act == K_ACT_INT8 && by32 && w->kind == K_QW_INT4) p->path = QMM_Q4_I8, p->fmt = QMM_FMT_I8R;
    if (act == K_ACT_INT8 && by32 && w->kind == K_QW_INT8) p->path = QMM_Q8_I8, p->fmt = QMM_FMT_I16;
    p->unit = 0;
    p->span = k_qmatmul_int16_span(w);
    if (act == K_ACT_INT16 && kcpu_qmatmul_int16_fast(w)) {
        /* exact int16 dot products per span (which the unit is); INT4 on the spans w16s_fits takes
         * as two byte planes (512-bit vpdpbusd over 128-column blocks; AVX2: maddubs, the only
         * int16 path there) */
        p->path = QMM_W16, p->unit = p->span, p->fmt = w->kind == K_QW_INT4 ? QMM_FMT_W16R : QMM_FMT_W16;
        if (w16s_fits(w)) p->fmt = QMM_FMT_W16S;
        if (kcpu_isa_level() < KCPU_ISA_AVX512) p->path = QMM_W16_AVX2;
    } else if (kcpu_isa_level() >= KCPU_ISA_AVX512 && by32) {
        /* units: the group, cut into 128-column units when it is long (int32 lanes and the
         * (128 + z) * sum(a) term stay exact in float) */
        p->unit = p->n_group == 1 ? 128 : gs <= 512 ? gs : gs % 128 == 0 ? 128 : 32;
        if (act == K_ACT_INT8 && w->kind == K_QW_INT4)
            p->path = QMM_Q4_VNNI, p->fmt = gs % 128 == 0 || p->n_group == 1 ? QMM_FMT_I8R128 : QMM_FMT_I8R;
        else if (act == K_ACT_INT8 && w->kind == K_QW_INT8 && p->n_group == 1 && w->n_in <= QMM_Q8_ROW_MAX_IN)
            p->path = QMM_Q8_ROW, p->fmt = QMM_FMT_I8, p->unit = p->n_pad; /* one sum: the whole row */
        else if (act == K_ACT_INT8 && w->kind == K_QW_INT8)
            p->path = QMM_Q8_VNNI, p->fmt = QMM_FMT_I8;
        else
            p->path = QMM_F512, p->fmt = w->kind == K_QW_INT4 ? QMM_FMT_F32R : QMM_FMT_F32;
    }

    int nth = kcpu_get_threads();
    if (nth < 1) nth = 1;
    if (n_tok * w->n_in >= QMM_MIN_PARALLEL_PREP && n_tok > 1)
        pg_parallel(nth < n_tok ? nth : (int)n_tok, qmm_prep_task, &j);
    else
        kcpu_qmm_prep_avx2(p, x, 0, n_tok);

    const size_t rb = k_qweight_row_bytes(w) > 0 ? k_qweight_row_bytes(w) : 1;
    int64_t mc = (int64_t)(QMM_CHUNK_BYTES / rb);
    mc = mc < 16 ? 16 : mc & ~(int64_t)15;
    j.step = n_tok <= 4 ? QMM_DECODE_CHUNK_ROWS : mc;
    j.n_chunks = (w->n_out + j.step - 1) / j.step;
    int64_t max_by_rows = j.n_chunks;
    if (nth > max_by_rows) nth = (int)max_by_rows;
    if ((double)w->n_in * (double)w->n_out * (double)n_tok < QMM_MIN_PARALLEL_MACS) nth = 1;
    atomic_init(&j.next, 0);
    pg_parallel(nth, qmm_rows_task, &j);
}
