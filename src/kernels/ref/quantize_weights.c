/* Weight-side quantization: what llama-quantize writes for a row of floats without an imatrix
 * (ggml's quantize_row_*_ref). For most types that is the traits' from_float; Q8_0 differs,
 * because from_float rounds like llama.cpp's x86 activation path (see quants.c) while the weight
 * reference rounds x * (1/d) half away from zero. Keeping the two apart leaves the matmul's
 * activation numerics, and so the logits, untouched. */
#include <math.h>

#include "kernels/kernels.h"
#include "kernels/quants.h"
#include "core/fp16.h"

/* Never fuse a*b into an FMA here: the products must round like llama.cpp's scalar code. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* quantize_row_q8_0_ref: d = amax / 127, q = roundf(x * (1 / d)). */
static void q8_0_weights(const float *x, block_q8_0 *y, int64_t n) {
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) {
            const float a = fabsf(x[j]);
            amax = amax > a ? amax : a;
        }
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = pg_fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

bool kref_quantize_row(int dtype, const float *x, void *y, int64_t n) {
    if (dtype == PAGODA_DTYPE_Q8_0) {
        q8_0_weights(x, y, n);
        return true;
    }
    const k_type_traits *tr = kref_traits(dtype);
    if (!tr || !tr->from_float || !tr->vec_dot) return false; /* Q8_1/Q8_K are activation-only */
    tr->from_float(x, y, n);
    return true;
}
