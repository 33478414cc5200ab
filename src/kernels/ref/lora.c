/* LoRA delta, scalar specification: y += scale * B (A x) per row. */
#include "kernels/ops.h"

void kref_lora(const float *x, int32_t rows, int64_t n_in, const float *A, int32_t rank, const float *Bt, int64_t n_out,
               float scale, float *y, int64_t ldy, float *tmp) {
    for (int32_t t = 0; t < rows; t++) {
        const float *xt = x + (int64_t)t * n_in;
        float *h = tmp + (int64_t)t * rank;
        for (int32_t k = 0; k < rank; k++) {
            double s = 0;
            for (int64_t i = 0; i < n_in; i++) s += (double)A[k * n_in + i] * xt[i];
            h[k] = (float)s * scale;
        }
        for (int64_t o = 0; o < n_out; o++) {
            double s = 0;
            for (int32_t k = 0; k < rank; k++) s += (double)h[k] * Bt[k * n_out + o];
            y[t * ldy + o] += (float)s;
        }
    }
}
