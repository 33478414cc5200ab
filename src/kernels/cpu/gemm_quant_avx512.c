/* AVX-512 VNNI kernels for the 32-element block types. The Q5 types (and rows too long for the
 * others' tiles) take one block pair per 256-bit vector pair in 4x4 tiles; Q4_0 / Q4_1 take four
 * blocks per 512-bit vector (VBMI quads, 4 tokens per pass) and Q8_0 one block of two tokens per
 * 512-bit vector (a 256-bit kernel of the same arithmetic for one token). vpdpbusd multiplies u8 by
 * s8, so:
 *   Q8_0 weights (signed): dot(w, x) = dot(x ^ 0x80, w) - 128*sum(w), the sum once per weight block;
 *   Q4/Q5 weights (unsigned q, value q - off): dot(q, x) - off*sum(x), the sum once per token block.
 * The correction seeds the accumulator of vpdpbusd. Integer sums are exact; each output's float
 * accumulation is identical in every tile shape (batch and thread invariance). */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/simd_avx2.h"
#include "kernels/quants.h"

enum { Q_8_0, Q_4_0, Q_5_0, Q_4_1, Q_5_1 };
#define TR 4
#define TT 4
#define DEC_R 2 /* rows per decode tile: 2 prefetched row streams measured best */
#define RMAX TR

static inline float h2f(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* Decode reads each row once, and a row is only 1-3 KiB: the tile's R rows are R short streams
 * that end before the hardware prefetcher has ramped up (measured: 8 interleaved rows stream at
 * less than half the speed of one or two). The next tile's rows are contiguous, so walk them linearly,
 * R*step bytes per step, while this tile is computed. */
static inline __attribute__((always_inline)) void prefetch_next_tile(const char *w, int R, size_t ws, int64_t ib,
                                                                     size_t step) {
    const char *p = w + (size_t)R * ws + (size_t)ib * R * step;
    for (size_t o = 0; o < R * step; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

static inline size_t wblock(int kind) {
    switch (kind) {
    case Q_8_0: return sizeof(block_q8_0);
    case Q_4_0: return sizeof(block_q4_0);
    case Q_5_0: return sizeof(block_q5_0);
    case Q_4_1: return sizeof(block_q4_1);
    default: return sizeof(block_q5_1);
    }
}

/* Two F16 scales as [d0 x4 | d1 x4] (the lane layout of a block pair's integer sums). */
static inline __m256 scale_pair(const void *p0, const void *p1) {
    uint16_t h0, h1;
    memcpy(&h0, p0, 2);
    memcpy(&h1, p1, 2);
    __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)h0 | (uint32_t)h1 << 16)));
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(d), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
}

static inline __m256i load_pair128(const void *lo, const void *hi) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)lo)),
                                   _mm_loadu_si128((const __m128i *)hi), 1);
}

/* The weight side of block pair (ib, ib+1) for R rows: low and high nibbles (with the fifth
 * bits for Q5), the scale pair and (Q4_1/Q5_1) the two mins. zb: a zero block standing in for
 * a missing odd partner, NULL when the pair is whole. Shared by mk2 and mk2p, so both compute
 * the same values. */
static inline __attribute__((always_inline)) void unpack_pairs(int kind, int R, const char *w, size_t ws, int64_t ib,
                                                               const char *zb, __m256i *wl, __m256i *wh, __m256 *wd,
                                                               float *wm0, float *wm1) {
    const int q81 = kind == Q_4_1 || kind == Q_5_1, five = kind == Q_5_0 || kind == Q_5_1;
    const size_t wbs = wblock(kind);
    const size_t qso = kind == Q_4_0 ? 2 : kind == Q_5_0 ? 6 : kind == Q_4_1 ? 4 : 8; /* quants offset */
    const size_t qho = kind == Q_5_0 ? 2 : 4;                                               /* 5th bits offset */
    const __m256i m4 = _mm256_set1_epi8(0x0f);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const char *b0 = w + r * ws + ib * wbs, *b1 = zb ? zb : b0 + wbs;
        const __m256i q = load_pair128(b0 + qso, b1 + qso);
        wl[r] = _mm256_and_si256(q, m4);
        wh[r] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if (five) {
            uint32_t h0, h1;
            memcpy(&h0, b0 + qho, 4);
            memcpy(&h1, b1 + qho, 4);
            const __m256i b5 = _mm256_set1_epi8(0x10);
            wl[r] = _mm256_or_si256(wl[r], _mm256_maskz_mov_epi8((h0 & 0xffff) | h1 << 16, b5));
            wh[r] = _mm256_or_si256(wh[r], _mm256_maskz_mov_epi8(h0 >> 16 | (h1 & 0xffff0000u), b5));
        }
        wd[r] = scale_pair(b0, b1);
        wm0[r] = q81 ? h2f(b0 + 2) : 0.0f;
        wm1[r] = q81 ? h2f(b1 + 2) : 0.0f;
    }
}

/* The nibble types (Q4_0, Q5_0, Q4_1, Q5_1) two blocks at a time: the 16 quant bytes of both
 * blocks form one vector, whose low nibbles meet activations [x0[0:16] | x1[0:16]] and high
 * nibbles [x0[16:32] | x1[16:32]]; the activation halves are regrouped once per token, so a
 * weight pair costs one load, two masks and two vpdpbusd. Lanes 0-3 sum block 0, 4-7 block 1.
 * An odd last block is paired with zeros (zero quants, activations and scales add nothing). */
static inline __attribute__((always_inline)) void mk2(int kind, int R, int T, int64_t nb, const char *w, size_t ws,
                                                      const char *a, size_t as, float *y, int64_t ys) {
    const int q81 = kind == Q_4_1 || kind == Q_5_1;
    const int off = kind == Q_4_0 ? 8 : kind == Q_5_0 ? 16 : 0;
    const size_t wbs = wblock(kind), abs_ = q81 ? sizeof(block_q8_1) : sizeof(block_q8_0), aqo = q81 ? 4 : 2;
    const __m256i zero = _mm256_setzero_si256();
    __m256 acc[RMAX][TT];
    float ms[RMAX][TT];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            acc[r][t] = _mm256_setzero_ps();
            ms[r][t] = 0.0f;
        }
    /* a zero block stands in for the missing partner of an odd last block */
    _Alignas(32) char zb[2][40] = {{0}};
    for (int64_t ib = 0; ib < nb; ib += 2) {
        const int pair = ib + 1 < nb;
        if (T == 1) prefetch_next_tile(w, R, ws, ib, 2 * wbs);
        __m256i wl[RMAX], wh[RMAX];
        __m256 wd[RMAX];
        float wm0[RMAX], wm1[RMAX];
        unpack_pairs(kind, R, w, ws, ib, pair ? NULL : zb[0], wl, wh, wd, wm0, wm1);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const char *x0 = a + t * as + ib * abs_, *x1 = pair ? x0 + abs_ : zb[1];
            const __m256i xl = load_pair128(x0 + aqo, x1 + aqo), xh = load_pair128(x0 + aqo + 16, x1 + aqo + 16);
            const __m256 xd = scale_pair(x0, x1);
            const float xs0 = q81 ? h2f(x0 + 2) : 0.0f, xs1 = q81 ? h2f(x1 + 2) : 0.0f;
            __m256i xc = zero;
            if (off) {
                const __m256i o = _mm256_set1_epi8((char)off);
                xc = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, o, xl), o, xh));
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m256i p = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(xc, wl[r], xl), wh[r], xh);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(wd[r], xd), acc[r][t]);
                if (q81) {
                    ms[r][t] = __builtin_fmaf(wm0[r], xs0, ms[r][t]);
                    ms[r][t] = __builtin_fmaf(wm1[r], xs1, ms[r][t]);
                }
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) y[t * ys + r] = hsum8(acc[r][t]) + ms[r][t];
}

/* Decode (one token) with the nibble types: the activation side of mk2 (regrouped halves, the
 * offset correction, the scale pair) depends only on the token, so it is prepared once per call
 * instead of once per row tile. The values are the ones mk2 computes, in the same order, so
 * results stay bit-identical to the prefill tiles (batch invariance). */
typedef struct {
    __m256i xl, xh, xc;
    __m256 xd;
    float xs0, xs1;
} act_pair;

#define DEC_MAX_PAIRS 256 /* n_in up to 16384; larger rows use mk2 */

static inline __attribute__((always_inline)) void prep_pairs(int kind, int64_t nb, const char *a, act_pair *px) {
    const int q81 = kind == Q_4_1 || kind == Q_5_1;
    const int off = kind == Q_4_0 ? 8 : kind == Q_5_0 ? 16 : 0;
    const size_t abs_ = q81 ? sizeof(block_q8_1) : sizeof(block_q8_0), aqo = q81 ? 4 : 2;
    const __m256i zero = _mm256_setzero_si256();
    _Alignas(32) char zb[40] = {0};
    for (int64_t ib = 0; ib < nb; ib += 2) {
        const char *x0 = a + ib * abs_, *x1 = ib + 1 < nb ? x0 + abs_ : zb;
        act_pair *p = &px[ib / 2];
        p->xl = load_pair128(x0 + aqo, x1 + aqo);
        p->xh = load_pair128(x0 + aqo + 16, x1 + aqo + 16);
        p->xd = scale_pair(x0, x1);
        p->xs0 = q81 ? h2f(x0 + 2) : 0.0f;
        p->xs1 = q81 ? h2f(x1 + 2) : 0.0f;
        p->xc = zero;
        if (off) {
            const __m256i o = _mm256_set1_epi8((char)off);
            p->xc = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, o, p->xl), o, p->xh));
        }
    }
}

static inline __attribute__((always_inline)) void mk2_dec(int kind, int R, int64_t nb, const char *w, size_t ws,
                                                          const act_pair *px, float *y) {
    const int q81 = kind == Q_4_1 || kind == Q_5_1, five = kind == Q_5_0 || kind == Q_5_1;
    const size_t wbs = wblock(kind);
    const size_t qso = kind == Q_4_0 ? 2 : kind == Q_5_0 ? 6 : kind == Q_4_1 ? 4 : 8;
    const size_t qho = kind == Q_5_0 ? 2 : 4;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256 acc[RMAX];
    float ms[RMAX];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps(), ms[r] = 0.0f;
    _Alignas(32) char zb[40] = {0};
    for (int64_t ib = 0; ib < nb; ib += 2) {
        const int pair = ib + 1 < nb;
        const act_pair *p = &px[ib / 2];
        prefetch_next_tile(w, R, ws, ib, 2 * wbs);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const char *b0 = w + r * ws + ib * wbs, *b1 = pair ? b0 + wbs : zb;
            const __m256i q = load_pair128(b0 + qso, b1 + qso);
            __m256i wl = _mm256_and_si256(q, m4), wh = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (five) {
                uint32_t h0, h1;
                memcpy(&h0, b0 + qho, 4);
                memcpy(&h1, b1 + qho, 4);
                const __m256i b5 = _mm256_set1_epi8(0x10);
                wl = _mm256_or_si256(wl, _mm256_maskz_mov_epi8((h0 & 0xffff) | h1 << 16, b5));
                wh = _mm256_or_si256(wh, _mm256_maskz_mov_epi8(h0 >> 16 | (h1 & 0xffff0000u), b5));
            }
            const __m256i d = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(p->xc, wl, p->xl), wh, p->xh);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(scale_pair(b0, b1), p->xd), acc[r]);
            if (q81) {
                ms[r] = __builtin_fmaf(h2f(b0 + 2), p->xs0, ms[r]);
                ms[r] = __builtin_fmaf(h2f(b1 + 2), p->xs1, ms[r]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) y[r] = hsum8(acc[r]) + ms[r];
}

/* mk2 for several tokens with each token's activation side prepared once per token tile
 * (prep_pairs) instead of once per row tile: the same values in the same order as mk2, so the
 * results are bit-identical, at about a third fewer instructions per weight pair. */
static inline __attribute__((always_inline)) void mk2p(int kind, int R, int T, int64_t nb, const char *w, size_t ws,
                                                       const act_pair *px, int64_t np, float *y, int64_t ys, int pf) {
    const int q81 = kind == Q_4_1 || kind == Q_5_1;
    const size_t wbs = wblock(kind);
    __m256 acc[RMAX][TT];
    float ms[RMAX][TT];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            acc[r][t] = _mm256_setzero_ps();
            ms[r][t] = 0.0f;
        }
    _Alignas(32) char zb[40] = {0};
    for (int64_t ib = 0; ib < nb; ib += 2) {
        const int pair = ib + 1 < nb;
        if (T == 1 || pf) prefetch_next_tile(w, R, ws, ib, 2 * wbs);
        __m256i wl[RMAX], wh[RMAX];
        __m256 wd[RMAX];
        float wm0[RMAX], wm1[RMAX];
        unpack_pairs(kind, R, w, ws, ib, pair ? NULL : zb, wl, wh, wd, wm0, wm1);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const act_pair *p = &px[t * np + ib / 2];
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m256i d = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(p->xc, wl[r], p->xl), wh[r], p->xh);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(wd[r], p->xd), acc[r][t]);
                if (q81) {
                    ms[r][t] = __builtin_fmaf(wm0[r], p->xs0, ms[r][t]);
                    ms[r][t] = __builtin_fmaf(wm1[r], p->xs1, ms[r][t]);
                }
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) y[t * ys + r] = hsum8(acc[r][t]) + ms[r][t];
}

/* Q4_0 decode, four blocks (72 bytes) per 512-bit vector: with VBMI, one vpermt2b over two
 * overlapping 64-byte loads gathers the 4x16 quant bytes and one vpermb spreads the 4 fp16
 * scales over their lanes, about half the instructions per weight byte of mk2_dec (decode is
 * bound by them, not by the multiply-adds). The float side is mk2's exactly: lanes 0-7 are the
 * pair (blocks 0, 1), lanes 8-15 the pair (2, 3), each pair one 256-bit fma in order, so the
 * results stay bit-identical to the prefill tiles. */
#define VBMI __attribute__((target("avx512vbmi")))
#define QUAD_W (4 * sizeof(block_q4_0))
#define QUAD_A (4 * sizeof(block_q8_0))

/* Byte indices; a second table's byte i is numbered 64 + i. Weights: A = bytes 0..63, B = 8..71;
 * block k's quants are bytes 18k+2.., its scale 18k. */
static const uint8_t Q4Q_QUANTS[64] = {
    2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 20, 21, 22,  23,  24,  25,
    26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 38, 39, 40, 41, 42, 43, 44, 45, 46,  47,  48,  49,
    50, 51, 52, 53, 56, 57, 58, 59, 60, 61, 62, 63, 120, 121, 122, 123, 124, 125, 126, 127};
static const uint8_t Q4Q_SCALES[32] = {0,  1,  0,  1,  0,  1,  0,  1,  18, 19, 18, 19, 18, 19, 18, 19,
                                       36, 37, 36, 37, 36, 37, 36, 37, 54, 55, 54, 55, 54, 55, 54, 55};
/* Activations, four Q8_0 blocks: A = bytes 0..63, B = 64..127, C = 72..135; block k's quants are
 * bytes 34k+2.., its scale 34k. The last 8 bytes of the high halves come from C. */
static const uint8_t Q4Q_ACT_LO[64] = {
    2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12,  13,  14,  15,  16,  17,  36,  37,  38,  39,  40,  41,
    42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 70,  71,  72,  73,  74,  75,  76,  77,  78,  79,  80,  81,
    82, 83, 84, 85, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119};
static const uint8_t Q4Q_ACT_HI[64] = {
    18, 19, 20, 21, 22, 23, 24, 25, 26,  27,  28,  29,  30,  31,  32,  33,  52, 53, 54, 55, 56, 57,
    58, 59, 60, 61, 62, 63, 64, 65, 66,  67,  86,  87,  88,  89,  90,  91,  92, 93, 94, 95, 96, 97,
    98, 99, 100, 101, 120, 121, 122, 123, 124, 125, 126, 127, 56, 57, 58, 59, 60, 61, 62, 63};
static const uint8_t Q4Q_ACT_SCALES[32] = {0,  1,  0,  1,  0,  1,  0,  1,  34,  35,  34,  35,  34,  35,  34,  35,
                                           68, 69, 68, 69, 68, 69, 68, 69, 102, 103, 102, 103, 102, 103, 102, 103};

typedef struct {
    __m512i xl, xh, xc;
    __m512 xd;
} act_quad;

static inline __m512i ld512(const void *p) { return _mm512_loadu_si512(p); }
static inline __m512i ld256z(const void *p) { return _mm512_castsi256_si512(_mm256_loadu_si256(p)); }

/* A last, partial quad: its blocks followed by zeros (the zero pair that mk2 adds for an odd
 * block; a wholly zero pair is skipped). */
static inline const char *pad_quad(char *pad, const char *src, size_t n) {
    memset(pad, 0, QUAD_A);
    memcpy(pad, src, n);
    return pad;
}

/* The act_pair values of two pairs, side by side. */
static inline __attribute__((always_inline)) VBMI act_quad prep_quad(const char *x) {
    const __m512i zero = _mm512_setzero_si512(), o = _mm512_set1_epi8(8), a = ld512(x), b = ld512(x + 64);
    act_quad q;
    q.xl = _mm512_permutex2var_epi8(a, ld512(Q4Q_ACT_LO), b);
    q.xh = _mm512_permutex2var_epi8(a, ld512(Q4Q_ACT_HI), b);
    q.xh = _mm512_mask_permutexvar_epi8(q.xh, 0xff00000000000000ull, ld512(Q4Q_ACT_HI), ld512(x + 72));
    q.xd = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi8(a, ld256z(Q4Q_ACT_SCALES), b)));
    q.xc = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, o, q.xl), o, q.xh));
    return q;
}

static int has_vbmi(void) { return __builtin_cpu_supports("avx512vbmi"); }

#define DEC_MAX_QUADS 128 /* n_in up to 16384; larger rows use mk2 */

/* Q4_0 over 1-4 tokens (decode, a speculative verification, a small batch): each row's quad is
 * unpacked once for the tile's T tokens; per token, per pair of blocks, the float side is mk2's
 * (the same operations in the same order), so every output is bit-identical to mk2's whatever T.
 * Tiles of 4 rows: each prepared activation quad (4 vectors) is loaded once for 4 rows' weights
 * (with 2, TinyLlama-shape generation ran at 29 tokens/s on one core of this AMD EPYC, with 4 at
 * 44). For 2 tokens mk2p took 1.66x the one-token time, this 1.12x (TinyLlama FFN shape). */
static inline __attribute__((always_inline)) VBMI void q4_multi_rows(int R, int T, int64_t nb, const char *w, size_t ws,
                                                                    const act_quad *px, int64_t nqa, float *y,
                                                                    int64_t ys) {
    const int64_t nq = nb / 4, rem = nb % 4;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m256 acc[RMAX][TT];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    _Alignas(64) char pad[QUAD_A];
    for (int64_t g = 0; g < nq + (rem > 0); g++) {
        const int pairs = g < nq || rem > 2 ? 2 : 1;
        if (g < nq) prefetch_next_tile(w, R, ws, g, QUAD_W);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const char *b = g < nq ? w + r * ws + g * QUAD_W : pad_quad(pad, w + r * ws + nq * QUAD_W, rem * sizeof(block_q4_0));
            const __m512i a = ld512(b), q = _mm512_permutex2var_epi8(a, ld512(Q4Q_QUANTS), ld512(b + 8));
            const __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
            const __m512 d = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi8(ld256z(Q4Q_SCALES), a)));
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const act_quad *x = &px[t * nqa + g];
                const __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(x->xc, lo, x->xl), hi, x->xh));
                const __m512 sc = _mm512_mul_ps(d, x->xd);
                acc[r][t] = _mm256_fmadd_ps(_mm512_castps512_ps256(f), _mm512_castps512_ps256(sc), acc[r][t]);
                if (pairs > 1)
                    acc[r][t] = _mm256_fmadd_ps(_mm512_extractf32x8_ps(f, 1), _mm512_extractf32x8_ps(sc, 1), acc[r][t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) y[t * ys + r] = hsum8(acc[r][t]) + 0.0f; /* as mk2 adds its (zero) ms */
}

static VBMI void gemm_q4_0_vbmi(int64_t nb, const char *w, size_t ws, const char *a, size_t as, float *y,
                                      int64_t ys, int64_t nr, int nt) {
    const int64_t nqa = (nb + 3) / 4;
    act_quad px[nt * nqa];
    _Alignas(64) char pad[QUAD_A];
    for (int t = 0; t < nt; t++)
        for (int64_t g = 0; g < nqa; g++) {
            const char *x = a + t * as + g * QUAD_A;
            px[t * nqa + g] = prep_quad(g * 4 + 4 > nb ? pad_quad(pad, x, (size_t)(nb - g * 4) * sizeof(block_q8_0)) : x);
        }
    int64_t r = 0;
#define Q4M(T_)                                                                                                   \
    do {                                                                                                          \
        for (; r + 4 <= nr; r += 4) q4_multi_rows(4, T_, nb, w + r * ws, ws, px, nqa, y + r, ys);                 \
        for (; r < nr; r++) q4_multi_rows(1, T_, nb, w + r * ws, ws, px, nqa, y + r, ys);                         \
    } while (0)
    if (nt == 1) Q4M(1);
    else if (nt == 2) Q4M(2);
    else if (nt == 3) Q4M(3);
    else Q4M(4);
#undef Q4M
}

/* Q4_1 (the built-in model's type) the same way, 1-4 tokens per call (any number, 4 at a time):
 * four 20-byte blocks per quad (two overlapping loads, bytes 0-63 and 16-79), activations as Q8_1
 * (36-byte blocks, sum in s). Per pair of blocks the float side is mk2's (acc += float(dot) *
 * (d_w * d_x), then the mins' terms m_w * s_x in block order, one vector lane per output), so
 * outputs stay bit-identical to every other path. */
#define QUAD_W1 (4 * sizeof(block_q4_1))
#define QUAD_A1 (4 * sizeof(block_q8_1))
static const uint8_t Q41_QUANTS[64] = {
    4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 24,  25,  26,  27,  28,  29,
    30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 44, 45, 46, 47, 48, 49, 50,  51,  52,  53,  54,  55,
    56, 57, 58, 59, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127};
static const uint8_t Q41_SCALES[32] = {0,  1,  0,  1,  0,  1,  0,  1,  20, 21, 20, 21, 20, 21, 20, 21,
                                       40, 41, 40, 41, 40, 41, 40, 41, 60, 61, 60, 61, 60, 61, 60, 61};
/* activations: A = bytes 0..63, B = 64..127, C = 80..143 (the last 16 high-half bytes) */
static const uint8_t Q41_ACT_LO[64] = {
    4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18,  19,  40,  41,  42,  43,  44,  45,
    46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 76, 77, 78, 79, 80,  81,  82,  83,  84,  85,  86,  87,
    88, 89, 90, 91, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127};
static const uint8_t Q41_ACT_HI[64] = {
    20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,  31,  32,  33,  34,  35,  56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 92,  93,  94,  95,  96,  97,  98, 99, 100, 101, 102, 103,
    104, 105, 106, 107, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};
static const uint8_t Q41_ACT_SCALES[32] = {0,  1,  0,  1,  0,  1,  0,  1,  36,  37,  36,  37,  36,  37,  36,  37,
                                           72, 73, 72, 73, 72, 73, 72, 73, 108, 109, 108, 109, 108, 109, 108, 109};

typedef struct {
    __m512i xl, xh;
    __m512 xd;
} act_quad1;

/* The mins' terms of a tile of R <= 4 rows x T <= 4 tokens, vectorized: lane 4r + t of one
 * 512-bit register carries the chain ms[r][t] = fma(m_w, s_x, ms[r][t]) over the blocks in order,
 * the very operations mk2 (and llama.cpp's scalar sum) does one at a time, so every output stays
 * bit-identical. (Lanes by block instead, a chain per row and block index mod 4 summed at the end,
 * made one-token products 20% faster but moved the built-in model's perplexity 0.25% away from
 * llama-perplexity's: the 8-bit activations amplify the reordering.) Per quad: the rows' 4 fp16
 * mins gathered into lanes 4r + k (Q41_MINS, words 1, 11, 21, 31 of a row's first 64 bytes), then
 * for block k the lanes 4r + t take row r's min k (Q41_MIN_K) times token t's sum (prepared once
 * per call: lane 4r + t = s_x[t][k], zero for absent tokens). */
static const uint16_t Q41_MINS[32] = {1, 11, 21, 31, 33, 43, 53, 63, 0, 0, 0, 0, 0, 0, 0, 0,
                                      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
static const int32_t Q41_MIN_K[4][16] = {{0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12},
                                         {1, 1, 1, 1, 5, 5, 5, 5, 9, 9, 9, 9, 13, 13, 13, 13},
                                         {2, 2, 2, 2, 6, 6, 6, 6, 10, 10, 10, 10, 14, 14, 14, 14},
                                         {3, 3, 3, 3, 7, 7, 7, 7, 11, 11, 11, 11, 15, 15, 15, 15}};

/* lanes 4r + k: min k of row r's quad (rows 0-3 from their first 64 bytes; R < 4 leaves the rest
 * of the lanes unused) */
static inline __attribute__((always_inline)) __m512 q41_mins(int R, const __m512i *a) {
    const __m512i idx = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)Q41_MINS));
    const __m512i p01 = _mm512_permutex2var_epi16(a[0], idx, R > 1 ? a[1] : a[0]);
    const __m512i p23 = R > 2 ? _mm512_permutex2var_epi16(a[2], idx, R > 3 ? a[3] : a[2]) : p01;
    const __m256i m = _mm256_inserti128_si256(_mm512_castsi512_si256(p01), _mm512_castsi512_si128(p23), 1);
    return _mm512_cvtph_ps(m);
}

static inline __attribute__((always_inline)) VBMI act_quad1 prep_quad1(const char *x) {
    const __m512i a = ld512(x), b = ld512(x + 64);
    act_quad1 q;
    q.xl = _mm512_permutex2var_epi8(a, ld512(Q41_ACT_LO), b);
    q.xh = _mm512_permutex2var_epi8(a, ld512(Q41_ACT_HI), b);
    q.xh = _mm512_mask_permutexvar_epi8(q.xh, 0xffff000000000000ull, ld512(Q41_ACT_HI), ld512(x + 80));
    q.xd = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi8(a, ld256z(Q41_ACT_SCALES), b)));
    return q;
}

static inline __attribute__((always_inline)) VBMI void q41_rows(int R, int T, int64_t nb, const char *w, size_t ws,
                                                               const act_quad1 *px, const __m512 *xk, int64_t nqa,
                                                               float *y, int64_t ys) {
    const int64_t nq = nb / 4, rem = nb % 4;
    const __m512i m4 = _mm512_set1_epi8(0x0f), zero = _mm512_setzero_si512();
    __m256 acc[RMAX][TT];
    __m512 ms = _mm512_setzero_ps(); /* lane 4r + t */
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < nq + (rem > 0); g++) {
        const int pairs = g < nq || rem > 2 ? 2 : 1, nblk = g < nq ? 4 : (int)rem;
        /* the partial last quad: masked loads, zero blocks (zero scales and mins) after it */
        const int valid = nblk * (int)sizeof(block_q4_1);
        const __mmask64 ma = valid >= 64 ? ~0ull : (1ull << valid) - 1;
        const __mmask64 mb = valid - 16 >= 64 ? ~0ull : (1ull << (valid - 16)) - 1; /* (valid >= 20) */
        if (g < nq) prefetch_next_tile(w, R, ws, g, QUAD_W1);
        __m512i arow[RMAX];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const char *b = w + r * ws + g * QUAD_W1;
            const __m512i a = g < nq ? ld512(b) : _mm512_maskz_loadu_epi8(ma, b);
            arow[r] = a;
            const __m512i a2 = g < nq ? ld512(b + 16) : _mm512_maskz_loadu_epi8(mb, b + 16);
            const __m512i q = _mm512_permutex2var_epi8(a, ld512(Q41_QUANTS), a2);
            const __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
            const __m512 d = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi8(ld256z(Q41_SCALES), a)));
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const act_quad1 *x = &px[t * nqa + g];
                const __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo, x->xl), hi, x->xh));
                const __m512 sc = _mm512_mul_ps(d, x->xd);
                acc[r][t] = _mm256_fmadd_ps(_mm512_castps512_ps256(f), _mm512_castps512_ps256(sc), acc[r][t]);
                if (pairs > 1)
                    acc[r][t] = _mm256_fmadd_ps(_mm512_extractf32x8_ps(f, 1), _mm512_extractf32x8_ps(sc, 1), acc[r][t]);
            }
        }
        /* the mins of blocks past a partial quad's end are zero (masked loads), as are the sums */
        const __m512 mins = q41_mins(R, arow);
        const __m512 *x = xk + g * 4;
        ms = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_loadu_si512(Q41_MIN_K[0]), mins), x[0], ms);
        ms = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_loadu_si512(Q41_MIN_K[1]), mins), x[1], ms);
        if (pairs > 1) {
            ms = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_loadu_si512(Q41_MIN_K[2]), mins), x[2], ms);
            ms = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_loadu_si512(Q41_MIN_K[3]), mins), x[3], ms);
        }
    }
    _Alignas(64) float msl[16];
    _mm512_store_ps(msl, ms);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) y[t * ys + r] = hsum8(acc[r][t]) + msl[4 * r + t];
}

static VBMI void gemm_q4_1_vbmi(int64_t nb, const char *w, size_t ws, const char *a, size_t as, float *y, int64_t ys,
                                int64_t nr, int nt) {
    const int64_t nqa = (nb + 3) / 4;
    act_quad1 px[nt * nqa];
    __m512 xk[4 * nqa];             /* per quad and block k: lane 4r + t = s_x[t][k] */
    _Alignas(64) float xs[4 * 16]; /* per quad, [k][4r + t] */
    _Alignas(64) char pad[QUAD_A1];
    for (int64_t g = 0; g < nqa; g++) {
        memset(xs, 0, sizeof xs);
        for (int t = 0; t < nt; t++) {
            const char *x = a + t * as + g * QUAD_A1;
            if (g * 4 + 4 > nb) { /* zero blocks after a partial last quad */
                memset(pad, 0, sizeof pad);
                memcpy(pad, x, (size_t)(nb - g * 4) * sizeof(block_q8_1));
                x = pad;
            }
            px[t * nqa + g] = prep_quad1(x);
            for (int k = 0; k < 4; k++)
                for (int r = 0; r < 4; r++) xs[k * 16 + 4 * r + t] = h2f(x + k * sizeof(block_q8_1) + 2);
        }
        for (int k = 0; k < 4; k++) xk[g * 4 + k] = _mm512_load_ps(xs + k * 16);
    }
    int64_t r = 0;
#define Q41(T_)                                                                                                   \
    do {                                                                                                          \
        for (; r + 4 <= nr; r += 4) q41_rows(4, T_, nb, w + r * ws, ws, px, xk, nqa, y + r, ys);                  \
        for (; r < nr; r++) q41_rows(1, T_, nb, w + r * ws, ws, px, xk, nqa, y + r, ys);                          \
    } while (0)
    if (nt == 1) Q41(1);
    else if (nt == 2) Q41(2);
    else if (nt == 3) Q41(3);
    else Q41(4);
#undef Q41
}

/* Q8_0 over several tokens: each 512-bit vector holds one block for two tokens (lanes 0-7 token
 * 2p, 8-15 token 2p + 1; the weight block broadcast to both halves), so every output keeps the
 * one-token kernel's arithmetic lane for lane -- the 8-lane chain acc = fma(float(dot), d_w d_x,
 * acc) over the blocks in order, then hsum8 -- which is llama.cpp's AVX2 order (test_golden holds
 * the default kernels to its logits bit for bit), at half its operations per output: one
 * vpdpbusd, conversion, scale product and fma per block and token pair. Tiles of 4 rows x up to 4
 * token pairs, the tokens' blocks prepared once per call; the correction -128 sum(w) seeds
 * vpdpbusd (x ^ 0x80 is x + 128 unsigned). Rows of more than Q8_MAX_BLOCKS blocks take the
 * one-token kernel for every token. */
#define Q8_MAX_BLOCKS 512 /* n_in up to 16384 */
#define Q8_TP 4           /* token pairs per call */
typedef struct {
    __m512i xq; /* tokens 2p, 2p + 1: the block's quants ^ 0x80 */
    __m512 xd;  /* [d_x(2p) x8 | d_x(2p + 1) x8] */
} act_tok2;

static inline __attribute__((always_inline)) void q8_rows2(int R, int P, int nt, int64_t nb, const char *w, size_t ws,
                                                           const act_tok2 *px, float *y, int64_t ys) {
    const __m512i flip = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    const size_t wbs = sizeof(block_q8_0);
    __m512 acc[RMAX][Q8_TP];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int q = 0; q < P; q++) acc[r][q] = _mm512_setzero_ps();
    for (int64_t ib = 0; ib < nb; ib++) {
        prefetch_next_tile(w, R, ws, ib, wbs);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const char *b = w + r * ws + ib * wbs;
            const __m512i wq = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b + 2)));
            const __m512i wc = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, flip, wq));
            const __m512 wd = _mm512_set1_ps(h2f(b));
#pragma GCC unroll 8
            for (int q = 0; q < P; q++) {
                const act_tok2 *x = &px[q * nb + ib];
                const __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(wc, x->xq, wq));
                acc[r][q] = _mm512_fmadd_ps(f, _mm512_mul_ps(wd, x->xd), acc[r][q]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int q = 0; q < P; q++) {
            y[2 * q * ys + r] = hsum8(_mm512_castps512_ps256(acc[r][q]));
            if (2 * q + 1 < nt) y[(2 * q + 1) * ys + r] = hsum8(_mm512_extractf32x8_ps(acc[r][q], 1));
        }
}

/* nt (2 .. 2 * Q8_TP) tokens; a missing partner of an odd last token is zeros */
static void gemm_q8_0_tok2(int64_t nb, const char *w, size_t ws, const char *a, size_t as, float *y, int64_t ys,
                           int64_t nr, int nt) {
    const int P = (nt + 1) / 2;
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    act_tok2 px[P * nb];
    for (int q = 0; q < P; q++)
        for (int64_t ib = 0; ib < nb; ib++) {
            const char *x0 = a + 2 * q * as + ib * sizeof(block_q8_0);
            const int two = 2 * q + 1 < nt;
            const char *x1 = two ? x0 + as : x0;
            const __m256i q0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(x0 + 2)), flip);
            const __m256i q1 = two ? _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(x1 + 2)), flip) : q0;
            px[q * nb + ib].xq = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
            px[q * nb + ib].xd = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(h2f(x0))),
                                                    _mm256_set1_ps(two ? h2f(x1) : 0.0f), 1);
        }
    int64_t r = 0;
#define Q8T(P_)                                                                                                   \
    do {                                                                                                          \
        for (; r + 4 <= nr; r += 4) q8_rows2(4, P_, nt, nb, w + r * ws, ws, px, y + r, ys);                       \
        for (; r < nr; r++) q8_rows2(1, P_, nt, nb, w + r * ws, ws, px, y + r, ys);                               \
    } while (0)
    if (P == 1) Q8T(1);
    else if (P == 2) Q8T(2);
    else if (P == 3) Q8T(3);
    else Q8T(4);
#undef Q8T
}

/* Q8_0 for one token: the old 4x4 tile's arithmetic (the chain above) with 2 prefetched row
 * streams. */
static inline __attribute__((always_inline)) void q8_dec(int R, int64_t nb, const char *w, size_t ws, const char *a,
                                                         float *y) {
    const size_t wbs = sizeof(block_q8_0);
    const __m256i zero = _mm256_setzero_si256(), flip = _mm256_set1_epi8((char)0x80);
    __m256 acc[RMAX];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t ib = 0; ib < nb; ib++) {
        prefetch_next_tile(w, R, ws, ib, wbs);
        __m256i wq[RMAX], wc[RMAX];
        __m256 wd[RMAX];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const char *b = w + r * ws + ib * wbs;
            wd[r] = _mm256_set1_ps(h2f(b));
            wq[r] = _mm256_loadu_si256((const __m256i *)(b + 2));
            wc[r] = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, flip, wq[r]));
        }
        const char *ab = a + ib * wbs;
        const __m256i xq = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(ab + 2)), flip);
        const __m256 xd = _mm256_set1_ps(h2f(ab));
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_dpbusd_epi32(wc[r], xq, wq[r])), _mm256_mul_ps(wd[r], xd),
                                     acc[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) y[r] = hsum8(acc[r]);
}

#define MK(R, T)                                                                                                  \
    do {                                                                                                          \
        if (pt)                                                                                                   \
            mk2p(KIND, R, T, nb, wp, ws, pt, np, yp, ys, t == 0);                                                         \
        else                                                                                                      \
            mk2(KIND, R, T, nb, wp, ws, ap, as, yp, ys);                                                          \
    } while (0)
#define DEF_GEMM(NAME, KIND_)                                                                                     \
    static void NAME(int64_t n, const void *w, size_t ws, const void *a, size_t as, float *y, int64_t ys,        \
                     int64_t nr, int64_t nt) {                                                                    \
        enum { KIND = KIND_ };                                                                                    \
        const int64_t nb = n / 32;                                                                                \
        if ((int)KIND == (int)Q_8_0) {                                                                            \
            if (nt == 1 || nb > Q8_MAX_BLOCKS) { /* decode, and rows too long for the token-pair tiles */        \
                for (int64_t t = 0; t < nt; t++) {                                                                \
                    const char *wp = (const char *)w, *ap = (const char *)a + t * as;                             \
                    int64_t r = 0;                                                                                \
                    for (; r + DEC_R <= nr; r += DEC_R) q8_dec(DEC_R, nb, wp + r * ws, ws, ap, y + t * ys + r);   \
                    for (; r < nr; r++) q8_dec(1, nb, wp + r * ws, ws, ap, y + t * ys + r);                       \
                }                                                                                                 \
                return;                                                                                           \
            }                                                                                                     \
            for (int64_t t = 0; t < nt; t += 2 * Q8_TP) { /* token pairs, 8 tokens at a time */                  \
                const int tt = nt - t < 2 * Q8_TP ? (int)(nt - t) : 2 * Q8_TP;                                    \
                if (tt == 1) {                                                                                    \
                    int64_t r = 0;                                                                                \
                    const char *ap = (const char *)a + t * as;                                                    \
                    for (; r + DEC_R <= nr; r += DEC_R)                                                           \
                        q8_dec(DEC_R, nb, (const char *)w + r * ws, ws, ap, y + t * ys + r);                      \
                    for (; r < nr; r++) q8_dec(1, nb, (const char *)w + r * ws, ws, ap, y + t * ys + r);          \
                } else                                                                                            \
                    gemm_q8_0_tok2(nb, (const char *)w, ws, (const char *)a + t * as, as, y + t * ys, ys, nr, tt); \
            }                                                                                                     \
            return;                                                                                               \
        }                                                                                                         \
        if (((int)KIND == (int)Q_4_1 || (int)KIND == (int)Q_4_0) && nb <= 4 * DEC_MAX_QUADS && has_vbmi()) {    \
            for (int64_t t = 0; t < nt; t += TT) { /* the VBMI quad kernels, 4 tokens at a time */               \
                const int tt = nt - t < TT ? (int)(nt - t) : TT;                                                  \
                if ((int)KIND == (int)Q_4_1)                                                                      \
                    gemm_q4_1_vbmi(nb, (const char *)w, ws, (const char *)a + t * as, as, y + t * ys, ys, nr, tt);\
                else                                                                                              \
                    gemm_q4_0_vbmi(nb, (const char *)w, ws, (const char *)a + t * as, as, y + t * ys, ys, nr, tt);\
            }                                                                                                     \
            return;                                                                                               \
        }                                                                                                         \
        if ((int)KIND != (int)Q_8_0 && nt == 1 && (nb + 1) / 2 <= DEC_MAX_PAIRS) {                                \
            act_pair px[DEC_MAX_PAIRS];                                                                           \
            prep_pairs(KIND, nb, (const char *)a, px);                                                            \
            int64_t r = 0;                                                                                        \
            for (; r + DEC_R <= nr; r += DEC_R) mk2_dec(KIND, DEC_R, nb, (const char *)w + r * ws, ws, px, y + r); \
            for (; r < nr; r++) mk2_dec(KIND, 1, nb, (const char *)w + r * ws, ws, px, y + r);                   \
            return;                                                                                               \
        }                                                                                                         \
        const int64_t np = (nb + 1) / 2;                                                                          \
        const int prep = (int)KIND != (int)Q_8_0 && np <= DEC_MAX_PAIRS && nr > TR;                               \
        act_pair pbuf[prep ? TT * np : 1];                                                                        \
        for (int64_t t = 0; t < nt; t += TT) {                                                                    \
            int tt = nt - t < TT ? (int)(nt - t) : TT;                                                            \
            int tr = tt == 1 ? DEC_R : TR;                                                                        \
            const act_pair *pt = NULL;                                                                            \
            if (prep) { /* the tile's tokens, prepared once for all its row tiles */                              \
                for (int j = 0; j < tt; j++) prep_pairs(KIND, nb, (const char *)a + (t + j) * as, &pbuf[j * np]); \
                pt = pbuf;                                                                                        \
            }                                                                                                     \
            for (int64_t r = 0; r < nr; r += tr) {                                                                \
                int rr = nr - r < tr ? (int)(nr - r) : tr;                                                        \
                const char *wp = (const char *)w + r * ws, *ap = (const char *)a + t * as;                        \
                float *yp = y + t * ys + r;                                                                       \
                switch (rr * 8 + tt) {                                                                            \
                case 2 * 8 + 1: MK(2, 1); break;                                                                  \
                case 1 * 8 + 1: MK(1, 1); break;                                                                  \
                case 4 * 8 + 2: MK(4, 2); break;                                                                  \
                case 3 * 8 + 2: MK(3, 2); break;                                                                  \
                case 2 * 8 + 2: MK(2, 2); break;                                                                  \
                case 1 * 8 + 2: MK(1, 2); break;                                                                  \
                case 4 * 8 + 3: MK(4, 3); break;                                                                  \
                case 3 * 8 + 3: MK(3, 3); break;                                                                  \
                case 2 * 8 + 3: MK(2, 3); break;                                                                  \
                case 1 * 8 + 3: MK(1, 3); break;                                                                  \
                case 4 * 8 + 4: MK(4, 4); break;                                                                  \
                case 3 * 8 + 4: MK(3, 4); break;                                                                  \
                case 2 * 8 + 4: MK(2, 4); break;                                                                  \
                default: MK(1, 4); break;                                                                         \
                }                                                                                                 \
            }                                                                                                     \
        }                                                                                                         \
    }                                                                                                             \
    static float NAME##_dot(int64_t n, const void *w, const void *a) {                                           \
        float y;                                                                                                  \
        NAME(n, w, 0, a, 0, &y, 1, 1, 1);                                                                         \
        return y;                                                                                                 \
    }

DEF_GEMM(gemm_q8_0, Q_8_0)
DEF_GEMM(gemm_q4_0, Q_4_0)
DEF_GEMM(gemm_q5_0, Q_5_0)
DEF_GEMM(gemm_q4_1, Q_4_1)
DEF_GEMM(gemm_q5_1, Q_5_1)

void kcpu_fill_quant_avx512(kcpu_fns *f) {
    static const struct { int type; kcpu_gemm_fn g; k_vec_dot_fn d; } tab[] = {
        {PAGODA_DTYPE_Q8_0, gemm_q8_0, gemm_q8_0_dot}, {PAGODA_DTYPE_Q4_0, gemm_q4_0, gemm_q4_0_dot},
        {PAGODA_DTYPE_Q5_0, gemm_q5_0, gemm_q5_0_dot}, {PAGODA_DTYPE_Q4_1, gemm_q4_1, gemm_q4_1_dot},
        {PAGODA_DTYPE_Q5_1, gemm_q5_1, gemm_q5_1_dot},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        f->gemm[tab[i].type] = tab[i].g;
        f->vec_dot[tab[i].type] = tab[i].d;
        f->tile_rows[tab[i].type] = TR;
    }
}
