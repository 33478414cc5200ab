/* Reference matrix product: convert each activation row to the weight's vec_dot_type (as llama.cpp
 * does), then one vec_dot per (token, output row). No blocking, no threads: obviously correct. */
#include <assert.h>

#include "core/dtype.h"
#include "kernels/kernels.h"

/* Bytes of one converted activation row of n_in elements; 0 if unsupported or not whole blocks. */
static size_t act_row_size(int wtype, int64_t n_in) {
    const k_type_traits *t = kref_traits(wtype);
    size_t sz;
    if (!t || !t->vec_dot || !dtype_row_size(t->vec_dot_type, n_in, &sz)) return 0;
    return sz;
}

bool k_matmul_supported(int wtype) {
    const k_type_traits *t = kref_traits(wtype);
    return t && t->vec_dot && kref_traits(t->vec_dot_type) && kref_traits(t->vec_dot_type)->from_float;
}

/* Converted rows are packed: row t starts at t * act_row_size. */
size_t k_matmul_work_size(int wtype, int64_t n_in, int64_t n_tok) {
    size_t total;
    if (n_tok < 0 || !pg_mul_size(act_row_size(wtype, n_in), (size_t)n_tok, &total)) return 0;
    return total;
}

void kref_matmul(int wtype, const void *w, int64_t n_in, int64_t n_out,
                 const float *x, int64_t n_tok, float *y, void *work) {
    const k_type_traits *t = kref_traits(wtype);
    assert(t && t->vec_dot);
    const k_type_traits *at = kref_traits(t->vec_dot_type);
    size_t w_row, a_row = act_row_size(wtype, n_in);
    bool ok = dtype_row_size(wtype, n_in, &w_row);
    assert(ok && a_row > 0);
    (void)ok;

    char *act = work;
    for (int64_t i = 0; i < n_tok; i++) at->from_float(x + i * n_in, act + (size_t)i * a_row, n_in);

    const char *wb = w;
    for (int64_t i = 0; i < n_tok; i++)
        for (int64_t r = 0; r < n_out; r++)
            y[i * n_out + r] = t->vec_dot(n_in, wb + (size_t)r * w_row, act + (size_t)i * a_row);
}
