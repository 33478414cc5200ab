/* Quantized linear layers of Hugging Face checkpoints -> the qmatmul layout (kernels/qmatmul.h).
 *
 * Where each format keeps element (row o, column i) of an n_out x n_in weight, b bits, f = 32/b
 * values per int32 word (value j of a word in bits [b*j, b*j + b)):
 *   GPTQ      qweight [n_in/f][n_out]: word (i/f, o), value i%f. qzeros [n_group][n_out/f]: word
 *             (g, o/f), value o%f; v1 (checkpoint_format gptq) stores zero - 1. scales [n_group][n_out].
 *             g_idx [n_in]: group of each column (act-order when not i / group_size).
 *   AWQ       qweight [n_in][n_out/8]: word (i, o/8), value k_awq_pos[o%8] (AutoAWQ interleaves the
 *             8 outputs of a word as 0 2 4 6 1 3 5 7). qzeros [n_group][n_out/8] likewise (zero as is).
 *             scales [n_group][n_out].
 *   compressed-tensors pack-quantized: weight_packed [n_out][n_in/f]: word (o, i/f), value i%f, stored
 *             as q + 2^(b-1) (unsigned). weight_zero_point [n_out/f][n_group] (asymmetric): word (o/f, g),
 *             value o%f, same offset. weight_scale [n_out][n_group]. weight_shape [2] = (n_out, n_in).
 *             weight_g_idx [n_in] as GPTQ's g_idx.
 *   int-quantized: weight int8 [n_out][n_in]; weight_scale [n_out][n_group] (or [1]: per tensor);
 *             weight_zero_point int8 [n_out][n_group] when asymmetric.
 *   float-quantized: weight float8_e4m3fn [n_out][n_in]; weight_scale as above.
 * Dequantized: W[o][i] = scale[g][o] * (q - zero[g][o]), g = g_idx[i] (or i / group_size). */
#include "model/qweights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/fp16.h"
#include "core/log.h"
#include "kernels/qmatmul.h"

static const int k_awq_pos[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* output o%8 sits at value k_awq_pos[o%8] of its word */

typedef struct {
    const st_model *st;
    const pg_quant_config *qc;
    const qc_scheme *s;
    const char *module;
    int64_t n_in, n_out, gs, n_group;
    const qw_owner *own;
} qctx;

static const st_tensor *find(const qctx *q, const char *suffix) {
    char name[512];
    snprintf(name, sizeof name, "%s.%s", q->module, suffix);
    return st_find(q->st, name);
}

/* The tensor module.suffix with dtype (dtype_str when the dtype has no pagoda id) and shape
 * [d0] or [d0, d1]; NULL with an error naming it otherwise. */
static const st_tensor *need(const qctx *q, const char *suffix, int dtype, const char *dtype_str, int n_dims,
                             int64_t d0, int64_t d1, pagoda_status *st) {
    const st_tensor *t = find(q, suffix);
    if (!t) {
        *st = pg_fail(PAGODA_ERR_FORMAT, "tensor '%s.%s' is missing (%s checkpoint)", q->module, suffix,
                      quant_method_name(q->qc->method));
        return NULL;
    }
    bool ok_type = dtype_str ? !strcmp(t->dtype_str, dtype_str) : t->dtype == dtype;
    if (!ok_type) {
        *st = pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': dtype %s, expected %s", t->name, t->dtype_str,
                      dtype_str ? dtype_str : dtype_name(dtype));
        return NULL;
    }
    bool ok_shape = t->n_dims == n_dims && t->shape[0] == d0 && (n_dims < 2 || t->shape[1] == d1);
    if (!ok_shape) {
        char have[96] = "", *p = have;
        for (int i = 0; i < t->n_dims && p < have + sizeof have - 24; i++)
            p += snprintf(p, (size_t)(have + sizeof have - p), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (n_dims == 1)
            *st = pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': shape [%s], expected [%lld] for a %lld x %lld weight", t->name,
                          have, (long long)d0, (long long)q->n_out, (long long)q->n_in);
        else
            *st = pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': shape [%s], expected [%lld, %lld] for a %lld x %lld weight",
                          t->name, have, (long long)d0, (long long)d1, (long long)q->n_out, (long long)q->n_in);
        return NULL;
    }
    return t;
}

static void *own_alloc(const qctx *q, size_t bytes, pagoda_status *st) {
    void *p = q->own->alloc(q->own->ctx, bytes ? bytes : 1);
    if (!p) *st = pg_fail(PAGODA_ERR_NOMEM, "%s: out of memory (%zu bytes)", q->module, bytes);
    return p;
}

static float scalar_of(const st_tensor *t, int64_t i) {
    switch (t->dtype) {
    case PAGODA_DTYPE_F32: return ((const float *)t->data)[i];
    case PAGODA_DTYPE_F16: return pg_fp16_to_fp32(((const uint16_t *)t->data)[i]);
    case PAGODA_DTYPE_BF16: return pg_bf16_to_fp32(((const uint16_t *)t->data)[i]);
    default: return NAN;
    }
}

static bool float_type(const st_tensor *t) {
    return t->dtype == PAGODA_DTYPE_F32 || t->dtype == PAGODA_DTYPE_F16 || t->dtype == PAGODA_DTYPE_BF16;
}

/* Scales into F32 [n_out][n_group]. transposed: the file holds [n_group][n_out] (GPTQ, AWQ);
 * per_tensor: one value for all. */
static pagoda_status load_scales(const qctx *q, const char *suffix, bool transposed, pg_tensor *w) {
    pagoda_status st = PAGODA_OK;
    const st_tensor *t = find(q, suffix);
    if (!t) return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s.%s' is missing (%s checkpoint)", q->module, suffix,
                           quant_method_name(q->qc->method));
    if (!float_type(t)) return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': dtype %s, expected F32, F16 or BF16", t->name, t->dtype_str);
    int64_t elems = 1;
    for (int i = 0; i < t->n_dims; i++) elems *= t->shape[i];
    bool per_tensor = q->s->strategy == QC_STRAT_TENSOR;
    if (per_tensor ? elems != 1 : !need(q, suffix, t->dtype, NULL, 2, transposed ? q->n_group : q->n_out,
                                        transposed ? q->n_out : q->n_group, &st))
        return st ? st : pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': %lld values, expected 1 (per-tensor scale)", t->name, (long long)elems);
    float *s = own_alloc(q, sizeof(float) * (size_t)(q->n_out * q->n_group), &st);
    if (!s) return st;
    for (int64_t o = 0; o < q->n_out; o++)
        for (int64_t g = 0; g < q->n_group; g++) {
            float v = scalar_of(t, per_tensor ? 0 : transposed ? g * q->n_out + o : o * q->n_group + g);
            if (!isfinite(v))
                return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': scale of row %lld, group %lld is NaN or infinite", t->name,
                               (long long)o, (long long)g);
            s[o * q->n_group + g] = v;
        }
    w->scales = (pg_tensor_aux){.data = s, .dtype = PAGODA_DTYPE_F32, .ne = {q->n_group, q->n_out}};
    return PAGODA_OK;
}

/* From a group index per column: NULL perm when it is the plain i / group_size, else the stable
 * sort of the columns by group (which must then fill each group with group_size columns). */
static pagoda_status load_perm(const qctx *q, const char *suffix, int32_t **perm_out) {
    pagoda_status st = PAGODA_OK;
    *perm_out = NULL;
    const st_tensor *t = find(q, suffix);
    if (!t) return PAGODA_OK;
    if (!need(q, suffix, PAGODA_DTYPE_I32, NULL, 1, q->n_in, 0, &st)) return st;
    const int32_t *gi = t->data;
    bool plain = true;
    for (int64_t i = 0; i < q->n_in; i++) {
        if (gi[i] < 0 || gi[i] >= q->n_group)
            return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': column %lld is in group %d, outside [0, %lld)", t->name,
                           (long long)i, gi[i], (long long)q->n_group);
        plain = plain && gi[i] == i / q->gs;
    }
    if (plain) return PAGODA_OK;
    int64_t *start = calloc((size_t)q->n_group + 1, sizeof *start);
    int32_t *perm = own_alloc(q, sizeof(int32_t) * (size_t)q->n_in, &st);
    if (!start || !perm) {
        free(start);
        return st ? st : pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    for (int64_t i = 0; i < q->n_in; i++) start[gi[i] + 1]++;
    for (int64_t g = 0; g < q->n_group; g++) {
        int64_t want = g + 1 < q->n_group ? q->gs : q->n_in - g * q->gs;
        if (start[g + 1] != want) {
            st = pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor '%s': group %lld has %lld columns, expected %lld (act-order "
                         "groups must be equal)", t->name, (long long)g, (long long)start[g + 1], (long long)want);
            free(start);
            return st;
        }
        start[g + 1] += start[g];
    }
    for (int64_t i = 0; i < q->n_in; i++) perm[start[gi[i]]++] = (int32_t)i;
    free(start);
    *perm_out = perm;
    return PAGODA_OK;
}

/* pos[feature] = column of the codes that holds it (identity without perm). */
static int64_t *inverse_perm(const qctx *q, const int32_t *perm) {
    int64_t *pos = malloc(sizeof(int64_t) * (size_t)q->n_in);
    if (!pos) return NULL;
    for (int64_t i = 0; i < q->n_in; i++) pos[perm ? perm[i] : i] = i;
    return pos;
}

static inline void put_code(uint8_t *codes, int kind, int64_t row_bytes, int64_t o, int64_t col, unsigned v) {
    uint8_t *row = codes + o * row_bytes;
    if (kind == K_QW_INT4) row[col >> 1] |= (uint8_t)(v << ((col & 1) * 4));
    else row[col] = (uint8_t)v;
}

/* GPTQ / AWQ zero points -> [n_out][n_group] bytes; NULL (*zeros) when every one is the
 * symmetric default. */
static pagoda_status unpack_zeros_colmajor(const qctx *q, const st_tensor *t, bool awq, int add, uint8_t **zeros) {
    pagoda_status st = PAGODA_OK;
    int b = q->s->bits, f = 32 / b;
    unsigned mask = (1u << b) - 1, mid = 1u << (b - 1);
    uint8_t *z = own_alloc(q, (size_t)(q->n_out * q->n_group), &st);
    if (!z) return st;
    const uint32_t *wz = t->data;
    bool all_mid = true;
    for (int64_t g = 0; g < q->n_group; g++)
        for (int64_t o = 0; o < q->n_out; o++) {
            int pos = awq ? k_awq_pos[o % 8] : (int)(o % f);
            unsigned v = ((wz[g * (q->n_out / f) + o / f] >> (b * pos)) & mask) + (unsigned)add;
            if (v > mask)
                return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor '%s': zero point %u of row %lld, group %lld does not fit %d "
                               "bits (a GPTQ v1 checkpoint cannot store zero 0; convert it to gptq_v2)", t->name, v,
                               (long long)o, (long long)g, b);
            all_mid = all_mid && v == mid;
            /* INT8 codes are signed (stored value - 128), so are their zeros */
            z[o * q->n_group + g] = (uint8_t)(b == 8 ? v ^ 0x80u : v);
        }
    *zeros = all_mid ? NULL : z;
    return PAGODA_OK;
}

static pagoda_status load_gptq_awq(qctx *q, bool awq, pg_tensor *w) {
    pagoda_status st = PAGODA_OK;
    int b = q->s->bits, f = 32 / b;
    int kind = b == 4 ? K_QW_INT4 : K_QW_INT8;
    if (q->n_in % f || q->n_out % (awq ? 8 : f))
        return pg_fail(PAGODA_ERR_FORMAT, "%s: a %lld x %lld weight cannot be packed %d per word", q->module,
                       (long long)q->n_out, (long long)q->n_in, f);
    const st_tensor *qw = awq ? need(q, "qweight", PAGODA_DTYPE_I32, NULL, 2, q->n_in, q->n_out / 8, &st)
                              : need(q, "qweight", PAGODA_DTYPE_I32, NULL, 2, q->n_in / f, q->n_out, &st);
    if (!qw) return st;
    if ((st = load_scales(q, "scales", true, w))) return st;
    int32_t *perm = NULL;
    if (!awq && (st = load_perm(q, "g_idx", &perm))) return st;
    const st_tensor *qz = find(q, "qzeros");
    uint8_t *zeros = NULL;
    if (qz || !q->s->symmetric) {
        if (!(qz = need(q, "qzeros", PAGODA_DTYPE_I32, NULL, 2, q->n_group, q->n_out / (awq ? 8 : f), &st))) return st;
        if ((st = unpack_zeros_colmajor(q, qz, awq, awq || q->qc->gptq_v2 ? 0 : 1, &zeros))) return st;
    }
    int64_t row_bytes = kind == K_QW_INT4 ? q->n_in / 2 : q->n_in;
    uint8_t *codes = own_alloc(q, (size_t)(row_bytes * q->n_out), &st);
    int64_t *pos = codes ? inverse_perm(q, perm) : NULL;
    if (!codes || !pos) return st ? st : pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    memset(codes, 0, (size_t)(row_bytes * q->n_out));
    const uint32_t *words = qw->data;
    unsigned mask = (1u << b) - 1, flip = b == 8 ? 0x80u : 0;
    if (awq) {
        for (int64_t i = 0; i < q->n_in; i++)
            for (int64_t o = 0; o < q->n_out; o++)
                put_code(codes, kind, row_bytes, o, pos[i], ((words[i * (q->n_out / 8) + o / 8] >> (4 * k_awq_pos[o % 8])) & mask));
    } else {
        for (int64_t r = 0; r < q->n_in / f; r++)
            for (int64_t o = 0; o < q->n_out; o++) {
                uint32_t v = words[r * q->n_out + o];
                for (int j = 0; j < f; j++) put_code(codes, kind, row_bytes, o, pos[r * f + j], ((v >> (b * j)) & mask) ^ flip);
            }
    }
    free(pos);
    w->data = codes;
    w->qkind = (int8_t)kind;
    /* bytes: 0..15 for int4, int8 bits for int8 (pagoda has no U8 id: I8 names the element size) */
    if (zeros) w->zeros = (pg_tensor_aux){.data = zeros, .dtype = PAGODA_DTYPE_I8, .ne = {q->n_group, q->n_out}};
    if (perm) w->perm = (pg_tensor_aux){.data = perm, .dtype = PAGODA_DTYPE_I32, .ne = {q->n_in, 1}};
    return PAGODA_OK;
}

/* compressed-tensors: weight_shape must say (n_out, n_in) when present. */
static pagoda_status check_weight_shape(const qctx *q) {
    const st_tensor *t = find(q, "weight_shape");
    if (!t) return PAGODA_OK;
    if ((t->dtype != PAGODA_DTYPE_I64 && t->dtype != PAGODA_DTYPE_I32) || t->n_dims != 1 || t->shape[0] != 2)
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': expected 2 integers", t->name);
    int64_t d0 = t->dtype == PAGODA_DTYPE_I64 ? ((const int64_t *)t->data)[0] : ((const int32_t *)t->data)[0];
    int64_t d1 = t->dtype == PAGODA_DTYPE_I64 ? ((const int64_t *)t->data)[1] : ((const int32_t *)t->data)[1];
    if (d0 != q->n_out || d1 != q->n_in)
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': says [%lld, %lld], the model needs [%lld, %lld]", t->name,
                       (long long)d0, (long long)d1, (long long)q->n_out, (long long)q->n_in);
    return PAGODA_OK;
}

static pagoda_status load_ct(qctx *q, pg_tensor *w) {
    pagoda_status st = PAGODA_OK;
    const qc_scheme *s = q->s;
    int b = s->bits, f = 32 / b;
    int kind = s->is_float ? K_QW_FP8 : b == 4 ? K_QW_INT4 : K_QW_INT8;
    int64_t row_bytes = kind == K_QW_INT4 ? q->n_in / 2 : q->n_in;
    if ((st = check_weight_shape(q))) return st;
    int32_t *perm = NULL;
    if ((st = load_scales(q, "weight_scale", false, w)) || (st = load_perm(q, "weight_g_idx", &perm))) return st;
    const uint8_t *src; /* row-major codes in the file, or NULL: packed words */
    const st_tensor *t;
    if (s->format == QC_CT_PACK) {
        if (q->n_in % f)
            return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: %lld columns do not fill whole %d-value words", q->module,
                           (long long)q->n_in, f);
        if (!(t = need(q, "weight_packed", PAGODA_DTYPE_I32, NULL, 2, q->n_out, q->n_in / f, &st))) return st;
        /* 4-bit words are the layout's bytes as they are (little-endian, value j at bits 4j) */
        src = kind == K_QW_INT4 ? t->data : NULL;
    } else if (s->format == QC_CT_INT) {
        if (!(t = need(q, "weight", PAGODA_DTYPE_I8, NULL, 2, q->n_out, q->n_in, &st))) return st;
        src = t->data;
    } else {
        if (!(t = need(q, "weight", -1, "F8_E4M3", 2, q->n_out, q->n_in, &st))) return st;
        src = t->data;
        for (int64_t i = 0; i < q->n_out * q->n_in; i++)
            if ((src[i] & 0x7f) == 0x7f)
                return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': element %lld (row %lld) is NaN", t->name, (long long)i,
                               (long long)(i / q->n_in));
    }
    if (src && !perm) {
        w->data = src; /* in place */
    } else {
        uint8_t *codes = own_alloc(q, (size_t)(row_bytes * q->n_out), &st);
        int64_t *pos = codes ? inverse_perm(q, perm) : NULL;
        if (!codes || !pos) return st ? st : pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        memset(codes, 0, (size_t)(row_bytes * q->n_out));
        if (src) {
            for (int64_t o = 0; o < q->n_out; o++)
                for (int64_t i = 0; i < q->n_in; i++) {
                    unsigned v = kind == K_QW_INT4 ? (src[o * row_bytes + i / 2] >> ((i & 1) * 4)) & 15u : src[o * row_bytes + i];
                    put_code(codes, kind, row_bytes, o, pos[i], v);
                }
        } else { /* packed 8-bit words: value + 128 */
            const uint32_t *words = t->data;
            for (int64_t o = 0; o < q->n_out; o++)
                for (int64_t i = 0; i < q->n_in; i++)
                    put_code(codes, kind, row_bytes, o, pos[i], ((words[o * (q->n_in / f) + i / f] >> (b * (i % f))) & 0xffu) ^ 0x80u);
        }
        free(pos);
        w->data = codes;
    }
    if (!s->symmetric && !s->is_float) {
        uint8_t *z = own_alloc(q, (size_t)(q->n_out * q->n_group), &st);
        if (!z) return st;
        if (s->format == QC_CT_PACK) { /* packed along the rows, values offset like the codes */
            const st_tensor *zt = need(q, "weight_zero_point", PAGODA_DTYPE_I32, NULL, 2, (q->n_out + f - 1) / f, q->n_group, &st);
            if (!zt) return st;
            const uint32_t *zw = zt->data;
            unsigned mask = (1u << b) - 1;
            for (int64_t o = 0; o < q->n_out; o++)
                for (int64_t g = 0; g < q->n_group; g++) {
                    unsigned v = (zw[(o / f) * q->n_group + g] >> (b * (o % f))) & mask;
                    z[o * q->n_group + g] = (uint8_t)(b == 8 ? v ^ 0x80u : v);
                }
        } else {
            const st_tensor *zt = find(q, "weight_zero_point");
            if (!zt) return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s.weight_zero_point' is missing (asymmetric scheme)", q->module);
            int64_t elems = zt->n_dims == 1 ? zt->shape[0] : zt->n_dims == 2 ? zt->shape[0] * zt->shape[1] : -1;
            bool per_tensor = s->strategy == QC_STRAT_TENSOR && elems == 1;
            if (zt->dtype != PAGODA_DTYPE_I8 ||
                (!per_tensor && !need(q, "weight_zero_point", PAGODA_DTYPE_I8, NULL, 2, q->n_out, q->n_group, &st)))
                return st ? st : pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': dtype %s, expected I8", zt->name, zt->dtype_str);
            for (int64_t o = 0; o < q->n_out; o++)
                for (int64_t g = 0; g < q->n_group; g++)
                    z[o * q->n_group + g] = ((const uint8_t *)zt->data)[per_tensor ? 0 : o * q->n_group + g];
        }
        w->zeros = (pg_tensor_aux){.data = z, .dtype = PAGODA_DTYPE_I8, .ne = {q->n_group, q->n_out}};
    }
    w->qkind = (int8_t)kind;
    if (perm) w->perm = (pg_tensor_aux){.data = perm, .dtype = PAGODA_DTYPE_I32, .ne = {q->n_in, 1}};
    return PAGODA_OK;
}

pagoda_status qweight_load(const st_model *st, const pg_quant_config *qc, const qc_scheme *s, const char *module,
                           int64_t n_in, int64_t n_out, const qw_owner *own, pg_tensor *w, bool *found) {
    *found = false;
    qctx q = {.st = st, .qc = qc, .s = s, .module = module, .n_in = n_in, .n_out = n_out, .own = own};
    static const char *const k_markers[] = {"qweight", "weight_packed", "weight_scale"};
    bool any = false;
    for (size_t i = 0; i < sizeof k_markers / sizeof k_markers[0]; i++) any = any || find(&q, k_markers[i]);
    if (!any) return PAGODA_OK;
    *found = true;
    if (s->strategy == QC_STRAT_GROUP && s->group_size > 0 && s->group_size < n_in) q.gs = s->group_size;
    else q.gs = n_in;
    q.n_group = (n_in + q.gs - 1) / q.gs;
    if (s->bits == 4 && n_in % 2) return pg_fail(PAGODA_ERR_FORMAT, "%s: an odd column count (%lld) for 4-bit codes", module, (long long)n_in);
    memset(w, 0, sizeof *w);
    w->n_in = n_in, w->n_out = n_out, w->dtype = PAGODA_DTYPE_I8, w->group_size = (int32_t)q.gs;
    w->qact = s->act == QC_ACT_INT8_TOKEN ? K_ACT_INT8 : s->act == QC_ACT_FP8_TOKEN ? K_ACT_FP8 : K_ACT_FLOAT;
    pagoda_status rc;
    switch (qc->method) {
    case QC_GPTQ: rc = load_gptq_awq(&q, false, w); break;
    case QC_AWQ: rc = load_gptq_awq(&q, true, w); break;
    case QC_CT: rc = load_ct(&q, w); break;
    default: rc = pg_fail(PAGODA_ERR_INVALID, "%s: not a quantized checkpoint", module);
    }
    if (rc) memset(w, 0, sizeof *w);
    return rc;
}

uint64_t qweight_bytes(const pg_tensor *w) {
    if (!w->qkind || !w->data) return 0;
    uint64_t row = w->qkind == K_QW_INT4 ? (uint64_t)w->n_in / 2 : (uint64_t)w->n_in;
    uint64_t n_group = w->group_size > 0 ? (uint64_t)((w->n_in + w->group_size - 1) / w->group_size) : 1;
    uint64_t b = row * (uint64_t)w->n_out + 4 * n_group * (uint64_t)w->n_out;
    if (w->zeros.data) b += n_group * (uint64_t)w->n_out;
    if (w->perm.data) b += 4 * (uint64_t)w->n_in;
    return b;
}

void qweight_describe(const pg_tensor *w, char *buf, size_t n) {
    static const char *const kinds[] = {"?", "int4", "int8", "fp8"};
    static const char *const acts[] = {"", " a8", " fp8-act"};
    int k = w->qkind >= 1 && w->qkind <= 3 ? w->qkind : 0, a = w->qact >= 0 && w->qact <= 2 ? w->qact : 0;
    if (w->group_size > 0 && w->group_size < w->n_in)
        snprintf(buf, n, "%s g%d%s%s%s", kinds[k], w->group_size, w->zeros.data ? " asym" : "", w->perm.data ? " act-order" : "", acts[a]);
    else
        snprintf(buf, n, "%s per-channel%s%s", kinds[k], w->zeros.data ? " asym" : "", acts[a]);
}
