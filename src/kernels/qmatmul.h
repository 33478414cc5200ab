/* Matrix products over weights quantized the way Hugging Face checkpoints store them (GPTQ, AWQ,
 * compressed-tensors): integer or FP8 codes with a float scale (and an optional zero point) per
 * output row and group of input columns. One layout serves every format: compressed-tensors'
 * row-major codes are read in place from the file mapping; GPTQ's and AWQ's column-major words are
 * repacked into it once at load, bit for bit (no dequantized copy ever exists).
 *
 * A weight W of n_out rows and n_in columns; group g of a row covers columns
 * [g*group_size, min((g+1)*group_size, n_in)); n_group = ceil(n_in / group_size). Element (r, i):
 *
 *   K_QW_INT4: codes [n_out][n_in/2] bytes: element i in byte i/2, the low nibble for even i;
 *              unsigned q in 0..15;  W[r][i] = scale[r][g] * (q - z),  z = zeros[r][g] (0..15),
 *              or 8 when zeros is NULL (symmetric).
 *   K_QW_INT8: codes [n_out][n_in] int8 q in -128..127;  W[r][i] = scale[r][g] * (q - z),
 *              z = zeros[r][g] read as int8, or 0 when zeros is NULL.
 *   K_QW_FP8:  codes [n_out][n_in] float8 e4m3fn bytes (1 sign, 4 exponent bits biased by 7,
 *              3 mantissa bits, no infinities, S.1111.111 is NaN: refused at load);
 *              W[r][i] = scale[r][g] * e4m3(code); zeros must be NULL.
 *
 * perm (act-order, GPTQ desc_act): when not NULL, column i of the codes holds input feature
 * perm[i], i.e. the product is y[t][r] = sum_i W[r][i] * x[t][perm[i]]. (The loader sorts the
 * columns by g_idx so that every group is contiguous; perm is that sort.)
 *
 * Activations: K_ACT_FLOAT multiplies the float activations by the dequantized weights (the
 * reference numerics of transformers; only summation order differs). K_ACT_INT8 first rounds
 * each activation row t to int8 with one scale per row (s_t = max|x[t]| / 127, q = x / s_t
 * rounded to nearest, ties away from zero, clamped to [-127, 127]; s_t = 0 gives q = 0), the
 * dynamic per-token scheme of compressed-tensors W8A8 and vLLM; integer dot products per group,
 * then scaled. K_ACT_FP8 rounds each row to e4m3 with s_t = max|x[t]| / 448 (round to nearest
 * even, saturating at +-448) and multiplies the dequantized values in float. K_ACT_INT16 rounds
 * each row to int16 per span of columns (k_qmatmul_int16_span; in column order, after the
 * permutation): s = max|x over the span| / 32767, q = x / s rounded to nearest, ties away from
 * zero (s = 0 gives q = 0); the product multiplies the dequantized weights by q * s. Its error is
 * at most 2^-16 of the span's largest activation per element, finer than a half's (2^-11 of each
 * value) unless a span's values differ by more than 32x; on AVX-512 VNNI CPUs it runs as exact
 * integer dot products per span: INT4 on spans of 128 columns (or of 32 / 64 that are its groups)
 * splits each code into a signed high and an unsigned low byte and takes two 512-bit vpdpbusd per
 * 64 columns (g128 decode at 1.0-1.3x Q4_0's speed, g32 0.7x, prefill 1.3-2.2x the int16 form's),
 * other spans vpdpwssd.
 *
 * Contract (batch and thread invariance): y[t][r] depends only on W row r and x row t, never on
 * n_tok, the thread count, or which rows are computed together. */
#ifndef PG_KERNELS_QMATMUL_H
#define PG_KERNELS_QMATMUL_H

#include <stddef.h>
#include <stdint.h>

typedef enum { K_QW_INT4 = 1, K_QW_INT8 = 2, K_QW_FP8 = 3 } k_qw_kind;
typedef enum { K_ACT_FLOAT = 0, K_ACT_INT8 = 1, K_ACT_FP8 = 2, K_ACT_INT16 = 3 } k_act_kind;

typedef struct {
    k_qw_kind kind;
    const uint8_t *codes;  /* [n_out][row_bytes]: n_in/2 bytes per row (INT4), n_in (INT8, FP8) */
    int64_t n_in, n_out;   /* n_in even for INT4 */
    int64_t group_size;    /* columns per scale, 1 <= group_size <= n_in (n_in: one per row) */
    const float *scales;   /* [n_out][n_group] */
    const uint8_t *zeros;  /* [n_out][n_group] zero points, or NULL (symmetric); INT4: 0..15; INT8: int8 bits */
    const int32_t *perm;   /* [n_in] input feature read by each column, or NULL (identity) */
} k_qweight;

/* Bytes of one row of codes. */
static inline size_t k_qweight_row_bytes(const k_qweight *w) {
    return w->kind == K_QW_INT4 ? (size_t)(w->n_in / 2) : (size_t)w->n_in;
}
static inline int64_t k_qweight_n_group(const k_qweight *w) { return (w->n_in + w->group_size - 1) / w->group_size; }

/* Columns per int16 activation span (K_ACT_INT16): 128 with one group per row, else the largest
 * divisor of group_size up to 128 (so a span never crosses a group, and an int16 dot product over
 * one span stays exact in int32). Spans start at multiples of it; the row's last may be shorter. */
static inline int64_t k_qmatmul_int16_span(const k_qweight *w) {
    if (k_qweight_n_group(w) == 1) return 128;
    for (int64_t d = 128; d > 1; d--)
        if (w->group_size % d == 0) return d;
    return 1;
}

/* e4m3fn code -> float (exact). */
float k_fp8_e4m3_to_float(uint8_t code);
/* float -> e4m3fn code, round to nearest even, saturating at +-448 (NaN -> 0x7f). */
uint8_t k_fp8_e4m3_from_float(float x);

/* Scratch bytes the product needs for n_tok activation rows (permuted / quantized activations). */
size_t k_qmatmul_work_size(const k_qweight *w, int64_t n_tok, k_act_kind act);

/* y[t*ldy + r] = sum_i W[r][i] * x'[t][perm ? perm[i] : i] for t < n_tok, r < n_out, where x' is
 * x (K_ACT_FLOAT) or x rounded as act says. x: [n_tok][n_in] floats contiguous; work:
 * k_qmatmul_work_size bytes (64-byte aligned). kcpu_ is threaded on the caller's team
 * (kcpu_set_threads) and agrees with kref_ within float summation-order error. */
void kref_qmatmul(const k_qweight *w, k_act_kind act, const float *x, int64_t n_tok, float *y, int64_t ldy, void *work);
void kcpu_qmatmul(const k_qweight *w, k_act_kind act, const float *x, int64_t n_tok, float *y, int64_t ldy, void *work);

/* Whether kcpu_qmatmul runs K_ACT_INT16 over w as integer dot products (AVX-512 VNNI: INT4/INT8
 * codes, spans of whole 32-column blocks; AVX2: INT4 on spans of 128 columns or of 32 / 64 that
 * are its groups, n_in >= 96 or so, by maddubs over byte planes); elsewhere it rounds the
 * activations the same way and multiplies in float, which is no faster than K_ACT_FLOAT. */
int kcpu_qmatmul_int16_fast(const k_qweight *w);

/* Rows [r0, r0 + n_rows) of W as plain floats, by input feature (out[r - r0][f], n_in each; the
 * permutation undone): the values kref_qmatmul multiplies float activations by. For a backend with
 * no kernels over these codes (CUDA today), which runs the product on this copy. */
void kref_qweight_dequant(const k_qweight *w, int64_t r0, int64_t n_rows, float *out);

/* The same values as GGML blocks, where those hold them exactly: symmetric INT4 (zero point 8) as
 * Q4_0 and symmetric INT8 as Q8_0, when the columns are in input order (no act-order permutation),
 * groups are whole 32-column blocks and every scale is exactly a half. _type: that GGML type
 * (PAGODA_DTYPE_Q4_0 / Q8_0), or 0 when the values cannot be held so. _to_ggml writes the n_out rows
 * of n_in / 32 blocks into dst and returns the type (0: nothing written). For backends whose
 * kernels read GGML types and not these codes (CUDA). */
int kref_qweight_ggml_type(const k_qweight *w);
int kref_qweight_to_ggml(const k_qweight *w, void *dst);

#endif
