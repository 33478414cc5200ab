/* kcpu_* non-matmul ops: per-ISA selection (AVX-512 > AVX2 > scalar, the level dispatch.c
 * chose) and the paged flash-style attention driver (OpenMP over KV heads x query tiles). */
#include "kernels/ops.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/ops_isa.h"
#include "core/fp16.h"
#include "core/fp8.h"
#include "core/thread_pool.h"
#include <immintrin.h>

/* The ISA level and thread count are dispatch.c's (shared with matmul): one level (kcpu_isa_force)
 * and the calling thread's kcpu_set_threads() govern every kcpu_* op. */
static inline int kops_isa(void) { return kcpu_isa_level(); }

/* ---- elementwise and row ops ---- */

void kcpu_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps) {
    switch (kops_isa()) {
    case KCPU_ISA_AVX512: kavx512_rmsnorm(y, x, w, n, eps); break;
    case KCPU_ISA_AVX2: kavx2_rmsnorm(y, x, w, n, eps); break;
    default: kref_rmsnorm(y, x, w, n, eps); break;
    }
}

void kcpu_layernorm(float *y, const float *x, const float *w, const float *b, int64_t n, float eps) {
    switch (kops_isa()) {
    case KCPU_ISA_AVX512: kavx512_layernorm(y, x, w, b, n, eps); break;
    case KCPU_ISA_AVX2: kavx2_layernorm(y, x, w, b, n, eps); break;
    default: kref_layernorm(y, x, w, b, n, eps); break;
    }
}

void kcpu_softmax(float *x, int64_t n) {
    switch (kops_isa()) {
    case KCPU_ISA_AVX512: kavx512_softmax(x, n); break;
    case KCPU_ISA_AVX2: kavx2_softmax(x, n); break;
    default: kref_softmax(x, n); break;
    }
}

void kcpu_silu_mul(float *gate, const float *up, int64_t n) {
    switch (kops_isa()) {
    case KCPU_ISA_AVX512: kavx512_silu_mul(gate, up, n); break;
    case KCPU_ISA_AVX2: kavx2_silu_mul(gate, up, n); break;
    default: kref_silu_mul(gate, up, n); break;
    }
}

void kcpu_gelu(float *x, int64_t n) {
    switch (kops_isa()) {
    case KCPU_ISA_AVX512: kavx512_gelu(x, n); break;
    case KCPU_ISA_AVX2: kavx2_gelu(x, n); break;
    default: kref_gelu(x, n); break;
    }
}

/* The sin/cos are the cost: computed once per pair and shared by every head (kref_rope
 * recomputes them per head). Same float angles and libm calls, so results equal kref's. */
void kcpu_rope(float *x, int n_head, int head_dim, int rope_dim, int32_t pos, const float *inv_freq, bool neox) {
    enum { CHUNK = 64 };
    const int half = rope_dim / 2;
    float c[CHUNK], s[CHUNK];
    for (int i0 = 0; i0 < half; i0 += CHUNK) {
        int n = half - i0 < CHUNK ? half - i0 : CHUNK;
        for (int i = 0; i < n; i++) {
            float theta = (float)pos * inv_freq[i0 + i];
            c[i] = cosf(theta);
            s[i] = sinf(theta);
        }
        for (int h = 0; h < n_head; h++) {
            float *xh = x + (size_t)h * head_dim;
            if (neox) {
                float *x0 = xh + i0, *x1 = xh + i0 + half;
                for (int i = 0; i < n; i++) {
                    float a = x0[i], b = x1[i];
                    x0[i] = a * c[i] - b * s[i];
                    x1[i] = a * s[i] + b * c[i];
                }
            } else {
                float *xp = xh + 2 * i0;
                for (int i = 0; i < n; i++) {
                    float a = xp[2 * i], b = xp[2 * i + 1];
                    xp[2 * i] = a * c[i] - b * s[i];
                    xp[2 * i + 1] = a * s[i] + b * c[i];
                }
            }
        }
    }
}

/* ---- attention ---- */

/* Plain C tile step (no SIMD, or a head_dim the SIMD tile does not take). */
static void attn_tile_scalar(float *o, const float *q, const float *const *kp, const float *const *vp,
                             int n, int hd, float scale, float *m, float *l) {
    float s[KOPS_ATTN_TILE];
    float tmax = -INFINITY;
    for (int j = 0; j < n; j++) {
        float dot = 0.0f;
        for (int d = 0; d < hd; d++) dot += q[d] * kp[j][d];
        s[j] = dot * scale;
        tmax = s[j] > tmax ? s[j] : tmax;
    }
    float m_new = tmax > *m ? tmax : *m;
    float alpha = expf(*m - m_new);
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        s[j] = expf(s[j] - m_new);
        sum += s[j];
    }
    *l = *l * alpha + sum;
    *m = m_new;
    for (int d = 0; d < hd; d++) o[d] *= alpha;
    for (int j = 0; j < n; j++)
        for (int d = 0; d < hd; d++) o[d] += s[j] * vp[j][d];
}

#define ATTN_MAX_ROWS 256 /* query rows (tokens x heads) in one work item */
#define ATTN_PACK_FLOATS 8192 /* K (and V) tile copy: 32 KiB each, on the stack */
#define ATTN_PACK_MIN_ROWS 8  /* query rows from which copying the tile pays off */

/* n halves to floats (exact). F16C where the CPU has it (every AVX2 level here does). */
__attribute__((target("avx2,f16c"))) static void halves_f16c(const uint16_t *src, float *dst, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = pg_fp16_to_fp32(src[i]);
}

static void halves_to_floats(const uint16_t *src, float *dst, int n, int f16c) {
    if (f16c) {
        halves_f16c(src, dst, n);
        return;
    }
    for (int i = 0; i < n; i++) dst[i] = pg_fp16_to_fp32(src[i]);
}

/* n int8 / fp8 e4m3 codes of one head to floats: code value * scale. The fp8 magnitude bits
 * shifted left 7 are a half of 2^-8 the value (subnormals too), so F16C converts them; scale * 256
 * is exact, so both paths give the same floats. */
__attribute__((target("avx2,f16c"))) static void codes_avx2(int type, const uint8_t *src, float scale, float *dst, int n) {
    int i = 0;
    if (type == PAGODA_DTYPE_KV_INT8) {
        const __m256 s = _mm256_set1_ps(scale);
        for (; i + 8 <= n; i += 8) {
            __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(src + i)));
            _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtepi32_ps(w), s));
        }
    } else {
        const __m256 s = _mm256_set1_ps(scale * 256.0f);
        const __m128i mag = _mm_set1_epi16(0x7f), sgn = _mm_set1_epi16(0x80);
        for (; i + 8 <= n; i += 8) {
            __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(src + i)));
            __m128i h = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(b, mag), 7), _mm_slli_epi16(_mm_and_si128(b, sgn), 8));
            _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtph_ps(h), s));
        }
    }
    for (; i < n; i++)
        dst[i] = (type == PAGODA_DTYPE_KV_INT8 ? (float)(int8_t)src[i] : pg_fp8_e4m3_to_fp32(src[i])) * scale;
}

static void codes_to_floats(int type, const uint8_t *src, float scale, float *dst, int n, int simd) {
    if (simd) {
        codes_avx2(type, src, scale, dst, n);
        return;
    }
    for (int i = 0; i < n; i++)
        dst[i] = (type == PAGODA_DTYPE_KV_INT8 ? (float)(int8_t)src[i] : pg_fp8_e4m3_to_fp32(src[i])) * scale;
}

/* One work item: query tokens [q0, q1) x query heads [h0, h1), all of one KV head. Keys are
 * visited in tiles; each tile's K/V rows are read from cache once per row of the item, so the
 * heads sharing a KV head (GQA) and the tokens of the tile reuse them while they are hot. */
static void attn_item(float *out, const float *q, int32_t pos0, int n_head, float scale, int window,
                      const k_kv_view *kv, kops_attn_tile_fn tile, int q0, int q1, int h0, int h1) {
    const int hd = kv->head_dim, bs = kv->block_size;
    const int kvh = h0 / (n_head / kv->n_head_kv);
    const size_t slot_stride = (size_t)kv->n_head_kv * hd;
    const int nh = h1 - h0;
    float m[ATTN_MAX_ROWS], l[ATTN_MAX_ROWS];
    const float *kp[KOPS_ATTN_TILE], *vp[KOPS_ATTN_TILE];
    float kbuf[ATTN_PACK_FLOATS], vbuf[ATTN_PACK_FLOATS];

    for (int i = q0; i < q1; i++)
        for (int h = h0; h < h1; h++) {
            int r = (i - q0) * nh + (h - h0);
            m[r] = -INFINITY;
            l[r] = 0.0f;
            memset(out + ((size_t)i * n_head + h) * hd, 0, (size_t)hd * sizeof(float));
        }

    /* With several rows, copy the tile's K/V rows into one contiguous buffer first: in the
     * cache they sit a whole slot ([n_head_kv][head_dim]) apart, a power-of-two stride that maps
     * a tile onto few L1 sets and evicts itself between rows. */
    /* A decode item has only the few heads of one GQA group: there the copy costs more than the
     * evictions it saves (measured: 15% of SmolLM2 decode time in memcpy), so pack from 8 rows. */
    /* A half-precision or int8/fp8 cache is always copied: the copy is where its rows become
     * floats (once per tile, for every head of the GQA group and every query row of the item). */
    int tile_n = KOPS_ATTN_TILE;
    const int f16 = kv->type == PAGODA_DTYPE_F16, f16c = f16 && kops_isa() >= KCPU_ISA_AVX2;
    const int quant = k_kv_quantized(kv->type), qsimd = quant && kops_isa() >= KCPU_ISA_AVX2;
    bool pack = ((q1 - q0) * nh >= ATTN_PACK_MIN_ROWS || f16 || quant) && hd <= ATTN_PACK_FLOATS / 8;
    if (pack && tile_n * hd > ATTN_PACK_FLOATS) tile_n = ATTN_PACK_FLOATS / hd / 8 * 8;

    const int32_t khi = pos0 + q1 - 1;
    const int32_t klo = (window > 0 && pos0 + q0 - window + 1 > 0) ? pos0 + q0 - window + 1 : 0;
    for (int32_t t0 = klo; t0 <= khi; t0 += tile_n) {
        const int n = khi - t0 + 1 < tile_n ? khi - t0 + 1 : tile_n;
        for (int j = 0; j < n; j++) {
            int32_t t = t0 + j;
            if (quant) {
                const int32_t blk = kv->block_table[t / bs];
                const size_t eo = k_kv_elem_offset(kv->type, bs, kv->n_head_kv, hd, blk, t % bs, kvh);
                const size_t so = k_kv_scale_offset(bs, kv->n_head_kv, hd, blk, t % bs, kvh);
                float sk, sv;
                memcpy(&sk, (const uint8_t *)kv->k + so, sizeof sk);
                memcpy(&sv, (const uint8_t *)kv->v + so, sizeof sv);
                codes_to_floats(kv->type, (const uint8_t *)kv->k + eo, sk, kbuf + (size_t)j * hd, hd, qsimd);
                codes_to_floats(kv->type, (const uint8_t *)kv->v + eo, sv, vbuf + (size_t)j * hd, hd, qsimd);
                kp[j] = kbuf + (size_t)j * hd;
                vp[j] = vbuf + (size_t)j * hd;
                continue;
            }
            size_t off = ((size_t)kv->block_table[t / bs] * bs + t % bs) * slot_stride + (size_t)kvh * hd;
            if (f16) {
                halves_to_floats((const uint16_t *)kv->k + off, kbuf + (size_t)j * hd, hd, f16c);
                halves_to_floats((const uint16_t *)kv->v + off, vbuf + (size_t)j * hd, hd, f16c);
                kp[j] = kbuf + (size_t)j * hd;
                vp[j] = vbuf + (size_t)j * hd;
            } else if (pack) {
                memcpy(kbuf + (size_t)j * hd, (const float *)kv->k + off, (size_t)hd * sizeof(float));
                memcpy(vbuf + (size_t)j * hd, (const float *)kv->v + off, (size_t)hd * sizeof(float));
                kp[j] = kbuf + (size_t)j * hd;
                vp[j] = vbuf + (size_t)j * hd;
            } else {
                kp[j] = (const float *)kv->k + off;
                vp[j] = (const float *)kv->v + off;
            }
        }
        for (int i = q0; i < q1; i++) {
            /* this query's visible keys within the tile: a contiguous range [a, b] */
            const int32_t p = pos0 + i;
            int32_t a = t0, b = t0 + n - 1;
            if (window > 0 && p - window + 1 > a) a = p - window + 1;
            if (p < b) b = p;
            if (a > b) continue;
            for (int h = h0; h < h1; h++) {
                size_t off = ((size_t)i * n_head + h) * hd;
                int r = (i - q0) * nh + (h - h0);
                tile(out + off, q + off, kp + (a - t0), vp + (a - t0), b - a + 1, hd, scale, &m[r], &l[r]);
            }
        }
    }

    for (int i = q0; i < q1; i++)
        for (int h = h0; h < h1; h++) {
            float *o = out + ((size_t)i * n_head + h) * hd;
            float inv = 1.0f / l[(i - q0) * nh + (h - h0)];
            for (int d = 0; d < hd; d++) o[d] *= inv;
        }
}

/* How one sequence's attention is cut into work items: query tiles x KV heads x head parts. */
typedef struct {
    int tq, n_qt, hsplit, gh, n_items;
} attn_split;

static attn_split split_attention(int n_q, int n_head, int n_kv_head, int nth) {
    attn_split p;
    const int group = n_head / n_kv_head;
    /* Query tile: about 64 rows (tokens x group heads) per item, enough reuse of each K/V tile. */
    p.tq = group >= 64 ? 1 : 64 / group;
    if (p.tq > n_q) p.tq = n_q;
    p.n_qt = (n_q + p.tq - 1) / p.tq;
    /* Too few items for the threads (decode, MQA): split the head group as well. Each part
     * reads the same K/V, which is still cheaper than leaving cores idle. */
    p.hsplit = 1;
    if (n_kv_head * p.n_qt < nth) p.hsplit = (nth + n_kv_head * p.n_qt - 1) / (n_kv_head * p.n_qt);
    if (p.hsplit < (group * p.tq + ATTN_MAX_ROWS - 1) / ATTN_MAX_ROWS) p.hsplit = (group * p.tq + ATTN_MAX_ROWS - 1) / ATTN_MAX_ROWS;
    if (p.hsplit > group) p.hsplit = group;
    p.gh = (group + p.hsplit - 1) / p.hsplit; /* heads per part */
    p.hsplit = (group + p.gh - 1) / p.gh;
    p.n_items = n_kv_head * p.n_qt * p.hsplit;
    return p;
}

static kops_attn_tile_fn attention_tile(int hd) {
    int isa = kops_isa();
    if (isa == KCPU_ISA_AVX512) return kavx512_attn_tile;
    if (isa == KCPU_ISA_AVX2 && hd % 8 == 0) return kavx2_attn_tile;
    return attn_tile_scalar;
}

/* Item `it` of one sequence (later query tiles, which see more keys, come first). */
static void run_item(const k_attn_seq *sq, const attn_split *p, int it, int n_head, float scale, int window,
                     kops_attn_tile_fn tile) {
    const int n_kv_head = sq->kv.n_head_kv, group = n_head / n_kv_head;
    const int qt = p->n_qt - 1 - it / (n_kv_head * p->hsplit);
    const int rem = it % (n_kv_head * p->hsplit);
    const int g = rem / p->hsplit, part = rem % p->hsplit;
    const int q0 = qt * p->tq, q1 = q0 + p->tq < sq->n_q ? q0 + p->tq : sq->n_q;
    const int h0 = g * group + part * p->gh;
    const int h1 = h0 + p->gh < (g + 1) * group ? h0 + p->gh : (g + 1) * group;
    attn_item(sq->out, sq->q, sq->pos0, n_head, scale, window, &sq->kv, tile, q0, q1, h0, h1);
}

void kcpu_attention(float *out, const float *q, int n_q, int32_t pos0, int n_head, float scale,
                    int window, const k_kv_view *kv) {
    k_attn_seq one = {.out = out, .q = q, .n_q = n_q, .pos0 = pos0, .kv = *kv};
    kcpu_attention_batch(&one, 1, n_head, scale, window);
}

typedef struct {
    const k_attn_seq *seqs;
    const attn_split *sp;
    const int *first; /* first item of each sequence */
    int n_seq, n_items, n_head, window;
    float scale;
    _Atomic int next;
} attn_job;

/* Items one at a time, first come first served. */
static void attn_items(void *ctx, int ith, int nth) {
    (void)ith, (void)nth;
    attn_job *j = ctx;
    for (int it; (it = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->n_items;) {
        int lo = 0, hi = j->n_seq - 1; /* the sequence holding item it */
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (j->first[mid] <= it) lo = mid; else hi = mid - 1;
        }
        const k_attn_seq *sq = &j->seqs[lo];
        run_item(sq, &j->sp[lo], it - j->first[lo], j->n_head, j->scale, j->window, attention_tile(sq->kv.head_dim));
    }
}

#define ATTN_MAX_SEQS 4096
#define ATTN_STACK_SEQS 256

void kcpu_attention_batch(const k_attn_seq *seqs, int n_seq, int n_head, float scale, int window) {
    if (n_seq <= 0) return;
    if (n_seq > ATTN_MAX_SEQS) { /* keep the per-call tables on the stack */
        for (int s = 0; s < n_seq; s += ATTN_MAX_SEQS)
            kcpu_attention_batch(seqs + s, n_seq - s < ATTN_MAX_SEQS ? n_seq - s : ATTN_MAX_SEQS, n_head, scale, window);
        return;
    }
    int nth = kcpu_get_threads();
    /* per-sequence tables: on the stack for usual batches (no malloc while decoding) */
    attn_split split_buf[ATTN_STACK_SEQS];
    int first_buf[ATTN_STACK_SEQS + 1];
    const int big = n_seq > ATTN_STACK_SEQS;
    attn_split *sp = big ? malloc(sizeof(attn_split) * (size_t)n_seq) : split_buf;
    int *first = big ? malloc(sizeof(int) * (size_t)(n_seq + 1)) : first_buf; /* first item of each sequence */
    if (!sp || !first) { /* out of memory: one sequence at a time */
        free(sp);
        free(first);
        for (int s = 0; s < n_seq; s++) {
            attn_split p = split_attention(seqs[s].n_q, n_head, seqs[s].kv.n_head_kv, nth);
            for (int it = 0; it < p.n_items; it++) run_item(&seqs[s], &p, it, n_head, scale, window, attention_tile(seqs[s].kv.head_dim));
        }
        return;
    }
    double work = 0;
    first[0] = 0;
    for (int s = 0; s < n_seq; s++) {
        /* the split depends only on the sequence itself, so its result does too (batch invariance) */
        sp[s] = split_attention(seqs[s].n_q > 0 ? seqs[s].n_q : 1, n_head, seqs[s].kv.n_head_kv, nth);
        if (seqs[s].n_q <= 0) sp[s].n_items = 0;
        first[s + 1] = first[s] + sp[s].n_items;
        work += 2.0 * n_head * (double)seqs[s].n_q * ((double)seqs[s].pos0 + seqs[s].n_q) * seqs[s].kv.head_dim;
    }
    const int n_items = first[n_seq];
    if (nth > n_items) nth = n_items;
    /* rough multiply-adds; below this, waking threads costs more than it saves */
    attn_job j = {.seqs = seqs, .sp = sp, .first = first, .n_seq = n_seq, .n_items = n_items, .n_head = n_head,
                  .scale = scale, .window = window};
    atomic_init(&j.next, 0);
    pg_parallel(nth > 1 && work > 2e5 ? nth : 1, attn_items, &j);
    if (big) free(sp), free(first);
}
