/* kcpu_matmul against kref_matmul (the specification) for every weight type, at every ISA level
 * this CPU has, on odd shapes. Checks:
 *   - activation conversion (kcpu_traits(t)->from_float) gives the reference's bytes exactly;
 *   - every output agrees with the reference within a float-summation bound:
 *       |y - y_ref| <= (16 + n_in/8) * FLT_EPSILON * S,  S = sum_i |w_i * a_i|
 *     (w, a: the dequantized weight row and converted activation row; integer block sums are
 *     exact, so the only error is float rounding of scales and partial sums, for all types);
 *   - batch invariance: row t of an n_tok product equals the n_tok = 1 product bit for bit;
 *   - thread invariance: 1, 2 and 3 threads give the same bits;
 *   - kcpu_traits(t)->vec_dot agrees with kref's within the same bound. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "kernels/cpu/cpu_impl.h"
#include "kernels/kernels.h"
#include "test_util.h"

static const int k_types[] = {PAGODA_DTYPE_F32,  PAGODA_DTYPE_F16,  PAGODA_DTYPE_BF16, PAGODA_DTYPE_Q8_0,
                              PAGODA_DTYPE_Q4_0, PAGODA_DTYPE_Q4_1, PAGODA_DTYPE_Q5_0, PAGODA_DTYPE_Q5_1,
                              PAGODA_DTYPE_Q4_K, PAGODA_DTYPE_Q5_K, PAGODA_DTYPE_Q6_K};
static const int k_ntok[] = {1, 2, 3, 5, 17, 64};
static unsigned long long g_seed = 12345;

static void fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = scale * test_rand_f(&g_seed);
}

/* Row i of a converted/quantized buffer, as floats. */
static void row_to_float(int type, const void *row, float *out, int64_t n) {
    if (type == PAGODA_DTYPE_F32)
        memcpy(out, row, (size_t)n * sizeof(float));
    else
        kref_traits(type)->to_float(row, out, n);
}

typedef struct {
    int wtype;
    int64_t n_in, n_out, n_tok;
    void *w;       /* [n_out] rows of wtype */
    float *x;      /* [n_tok][n_in] */
    float *bound;  /* [n_tok][n_out] error bound */
    float *y_ref;  /* [n_tok][n_out] */
    void *work;
    size_t w_row;
} mm_case;

static void case_init(mm_case *c, int wtype, int64_t n_in, int64_t n_out, int64_t n_tok) {
    memset(c, 0, sizeof *c);
    c->wtype = wtype, c->n_in = n_in, c->n_out = n_out, c->n_tok = n_tok;
    dtype_row_size(wtype, n_in, &c->w_row);
    float *wf = malloc(sizeof(float) * (size_t)(n_in * n_out));
    /* rows of different magnitude, plus an all-zero row, exercise the scales */
    for (int64_t r = 0; r < n_out; r++) fill(wf + r * n_in, n_in, r % 7 == 3 ? 0.0f : 0.05f * (1 + r % 5));
    c->w = malloc(c->w_row * (size_t)n_out);
    for (int64_t r = 0; r < n_out; r++) kref_traits(wtype)->from_float(wf + r * n_in, (char *)c->w + r * c->w_row, n_in);
    c->x = malloc(sizeof(float) * (size_t)(n_in * n_tok));
    for (int64_t t = 0; t < n_tok; t++) fill(c->x + t * n_in, n_in, t % 4 == 2 ? 3.0f : 1.0f);
    c->work = malloc(k_matmul_work_size(wtype, n_in, n_tok) + 64);
    c->y_ref = malloc(sizeof(float) * (size_t)(n_out * n_tok));
    kref_matmul(wtype, c->w, n_in, n_out, c->x, n_tok, c->y_ref, c->work);

    /* bound from the reference's own converted activations (still in work) */
    int vdt = kref_traits(wtype)->vec_dot_type;
    size_t a_row = 0;
    dtype_row_size(vdt, n_in, &a_row);
    float *wr = malloc(sizeof(float) * (size_t)n_in), *ar = malloc(sizeof(float) * (size_t)n_in);
    c->bound = malloc(sizeof(float) * (size_t)(n_out * n_tok));
    for (int64_t t = 0; t < n_tok; t++) {
        if (vdt == PAGODA_DTYPE_F32)
            memcpy(ar, c->x + t * n_in, sizeof(float) * (size_t)n_in);
        else
            row_to_float(vdt, (char *)c->work + t * a_row, ar, n_in);
        for (int64_t r = 0; r < n_out; r++) {
            row_to_float(wtype, (char *)c->w + r * c->w_row, wr, n_in);
            double s = 0;
            for (int64_t i = 0; i < n_in; i++) s += fabs((double)wr[i] * ar[i]);
            c->bound[t * n_out + r] = (float)((16.0 + n_in / 8.0) * FLT_EPSILON * s) + 1e-30f;
        }
    }
    free(wr), free(ar), free(wf);
}

static void case_free(mm_case *c) {
    free(c->w), free(c->x), free(c->bound), free(c->y_ref), free(c->work);
}

static int g_worst_type = -1;
static double g_worst_ratio[PAGODA_DTYPE_COUNT];

static void run_case(mm_case *c, const char *isa) {
    const int64_t n_out = c->n_out, n_tok = c->n_tok, n_in = c->n_in;
    float *y = malloc(sizeof(float) * (size_t)(n_out * n_tok));
    float *y1 = malloc(sizeof(float) * (size_t)n_out);
    float *yt = malloc(sizeof(float) * (size_t)(n_out * n_tok));
    kcpu_set_threads(2);
    kcpu_matmul(c->wtype, c->w, n_in, n_out, c->x, n_tok, y, c->work);
    int bad = 0;
    for (int64_t i = 0; i < n_out * n_tok && bad < 3; i++) {
        double err = fabs((double)y[i] - c->y_ref[i]);
        double ratio = err / c->bound[i];
        if (ratio > g_worst_ratio[c->wtype]) g_worst_ratio[c->wtype] = ratio;
        if (!(err <= c->bound[i])) {
            bad++;
            CHECK(0, "%s %s n_in=%lld n_out=%lld n_tok=%lld: y[%lld] = %.9g, ref %.9g, bound %.3g", isa,
                  dtype_name(c->wtype), (long long)n_in, (long long)n_out, (long long)n_tok, (long long)i, y[i],
                  c->y_ref[i], c->bound[i]);
        }
    }
    /* batch invariance: each token alone gives the same bits */
    for (int64_t t = 0; t < n_tok && n_tok > 1; t++) {
        kcpu_matmul(c->wtype, c->w, n_in, n_out, c->x + t * n_in, 1, y1, c->work);
        CHECK(memcmp(y1, y + t * n_out, sizeof(float) * (size_t)n_out) == 0,
              "%s %s n_in=%lld n_out=%lld n_tok=%lld: token %lld differs from its n_tok=1 result", isa,
              dtype_name(c->wtype), (long long)n_in, (long long)n_out, (long long)n_tok, (long long)t);
    }
    /* thread invariance */
    for (int nth = 1; nth <= 3; nth += 2) {
        kcpu_set_threads(nth);
        kcpu_matmul(c->wtype, c->w, n_in, n_out, c->x, n_tok, yt, c->work);
        CHECK(memcmp(yt, y, sizeof(float) * (size_t)(n_out * n_tok)) == 0,
              "%s %s n_in=%lld n_out=%lld n_tok=%lld: %d threads differ from 2", isa, dtype_name(c->wtype),
              (long long)n_in, (long long)n_out, (long long)n_tok, nth);
    }
    kcpu_set_threads(0);
    (void)g_worst_type;
    free(y), free(y1), free(yt);
}

/* kcpu from_float must give the reference's bytes (activation types and F16/BF16/F32). */
static void test_conversion(const char *isa) {
    static const int conv_types[] = {PAGODA_DTYPE_F16, PAGODA_DTYPE_BF16, PAGODA_DTYPE_Q8_0, PAGODA_DTYPE_Q8_1,
                                     PAGODA_DTYPE_Q8_K};
    const int64_t n = 1024;
    float *x = malloc(sizeof(float) * n);
    char *a = malloc(4 * n + 64), *b = malloc(4 * n + 64);
    for (int rep = 0; rep < 20; rep++) {
        fill(x, n, rep % 3 == 0 ? 1e-3f : rep % 3 == 1 ? 1.0f : 300.0f);
        if (rep == 5) memset(x + 32, 0, 32 * sizeof(float)); /* an all-zero block */
        if (rep == 6)                                          /* exact .5 ties after scaling */
            for (int i = 0; i < n; i++) x[i] = (float)((i % 255) - 127) * 0.5f;
        for (size_t k = 0; k < sizeof conv_types / sizeof conv_types[0]; k++) {
            int t = conv_types[k];
            size_t sz;
            dtype_row_size(t, n, &sz);
            memset(a, 0x55, sz), memset(b, 0xaa, sz);
            kref_traits(t)->from_float(x, a, n);
            kcpu_traits(t)->from_float(x, b, n);
            CHECK(memcmp(a, b, sz) == 0, "%s: from_float %s differs from the reference (rep %d)", isa,
                  dtype_name(t), rep);
        }
    }
    free(x), free(a), free(b);
}

static void test_vec_dot(const char *isa) {
    for (size_t k = 0; k < sizeof k_types / sizeof k_types[0]; k++) {
        int wt = k_types[k];
        int64_t n = dtype_info(wt)->block_size == 256 ? 512 : dtype_info(wt)->block_size == 32 ? 96 : 77;
        mm_case c;
        case_init(&c, wt, n, 3, 1);
        const k_type_traits *ct = kcpu_traits(wt);
        CHECK(ct && ct->vec_dot && ct->vec_dot_type == kref_traits(wt)->vec_dot_type, "%s: traits of %s", isa,
              dtype_name(wt));
        for (int r = 0; r < 3 && ct; r++) {
            float v = ct->vec_dot(n, (char *)c.w + r * c.w_row, c.work);
            CHECK(fabsf(v - c.y_ref[r]) <= c.bound[r], "%s: vec_dot %s row %d: %.9g vs ref %.9g", isa,
                  dtype_name(wt), r, v, c.y_ref[r]);
        }
        case_free(&c);
    }
}

int main(void) {
    static const char *names[] = {"scalar", "avx2", "avx512"};
    int max = kcpu_isa_max();
    printf("cpu max isa: %s\n", names[max]);
    for (int level = 0; level <= max; level++) {
        kcpu_isa_force(level);
        CHECK(strcmp(kcpu_isa(), names[level]) == 0, "forced %s, got %s", names[level], kcpu_isa());
        const char *isa = kcpu_isa();
        test_conversion(isa);
        test_vec_dot(isa);
        for (size_t k = 0; k < sizeof k_types / sizeof k_types[0]; k++) {
            int wt = k_types[k];
            int bs = dtype_info(wt)->block_size;
            /* n_in: one block, a few blocks, and (plain types) lengths off the vector width */
            int64_t n_ins[4] = {bs, 3 * bs, bs == 1 ? 37 : 8 * bs, bs == 1 ? 1000 : 2048};
            int64_t n_outs[3] = {1, 13, 37};
            for (int i = 0; i < 4; i++)
                for (int o = 0; o < 3; o++)
                    for (size_t t = 0; t < sizeof k_ntok / sizeof k_ntok[0]; t++) {
                        if (n_ins[i] >= 1000 && (t % 2 || o == 0)) continue; /* keep the big ones few */
                        mm_case c;
                        case_init(&c, wt, n_ins[i], n_outs[o], k_ntok[t]);
                        run_case(&c, isa);
                        case_free(&c);
                    }
            /* many rows: several threads, several chunks and row tiles */
            mm_case c;
            case_init(&c, wt, bs == 1 ? 67 : bs * 2, 531, 9);
            run_case(&c, isa);
            case_free(&c);
            /* rows longer than the AVX-512 tiles' prepared activations hold (more than 512 blocks:
             * the one-token kernels for every token, an odd block pair at the end) */
            if (bs == 32) {
                case_init(&c, wt, 32 * 515, 5, 5);
                run_case(&c, isa);
                case_free(&c);
            }
        }
    }
    kcpu_isa_force(max);
    for (size_t k = 0; k < sizeof k_types / sizeof k_types[0]; k++)
        printf("%-5s worst |err| / bound = %.3g\n", dtype_name(k_types[k]), g_worst_ratio[k_types[k]]);
    TEST_DONE();
}
