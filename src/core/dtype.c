#include "core/dtype.h"

#include <strings.h>

static const pg_dtype_info k_dtypes[PAGODA_DTYPE_COUNT] = {
    [PAGODA_DTYPE_F32] = {"f32", 1, 4},
    [PAGODA_DTYPE_F16] = {"f16", 1, 2},
    [PAGODA_DTYPE_Q4_0] = {"q4_0", 32, 18},
    [PAGODA_DTYPE_Q4_1] = {"q4_1", 32, 20},
    [PAGODA_DTYPE_Q5_0] = {"q5_0", 32, 22},
    [PAGODA_DTYPE_Q5_1] = {"q5_1", 32, 24},
    [PAGODA_DTYPE_Q8_0] = {"q8_0", 32, 34},
    [PAGODA_DTYPE_Q8_1] = {"q8_1", 32, 36},
    [PAGODA_DTYPE_Q2_K] = {"q2_k", 256, 84},
    [PAGODA_DTYPE_Q3_K] = {"q3_k", 256, 110},
    [PAGODA_DTYPE_Q4_K] = {"q4_k", 256, 144},
    [PAGODA_DTYPE_Q5_K] = {"q5_k", 256, 176},
    [PAGODA_DTYPE_Q6_K] = {"q6_k", 256, 210},
    [PAGODA_DTYPE_Q8_K] = {"q8_k", 256, 292},
    [PAGODA_DTYPE_I8] = {"i8", 1, 1},
    [PAGODA_DTYPE_I16] = {"i16", 1, 2},
    [PAGODA_DTYPE_I32] = {"i32", 1, 4},
    [PAGODA_DTYPE_I64] = {"i64", 1, 8},
    [PAGODA_DTYPE_F64] = {"f64", 1, 8},
    [PAGODA_DTYPE_BF16] = {"bf16", 1, 2},
};

const pg_dtype_info *dtype_info(int dtype) {
    if (dtype < 0 || dtype >= PAGODA_DTYPE_COUNT || !k_dtypes[dtype].name) return NULL;
    return &k_dtypes[dtype];
}

const char *dtype_name(int dtype) {
    const pg_dtype_info *i = dtype_info(dtype);
    return i ? i->name : "?";
}

int dtype_from_name(const char *name) {
    for (int t = 0; t < PAGODA_DTYPE_COUNT; t++)
        if (k_dtypes[t].name && strcasecmp(k_dtypes[t].name, name) == 0) return t;
    return -1;
}

bool dtype_row_size(int dtype, int64_t n, size_t *out) {
    const pg_dtype_info *i = dtype_info(dtype);
    if (!i || n < 0 || n % i->block_size) return false;
    return pg_mul_size((size_t)(n / i->block_size), i->type_size, out);
}
