/* Importance-matrix reader: see imatrix_file.h for both formats. Every length and count read
 * from the file is checked against the bytes left before it is used. */
#include "imatrix_file.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "format/gguf.h"

static void fail(char *err, size_t err_len, const char *fmt, ...) {
    if (!err || !err_len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

static void free_entries(imatrix_entry *e, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        free(e[i].name);
        free(e[i].values);
    }
    free(e);
}

void imatrix_free(imatrix *m) {
    if (!m) return;
    free_entries(m->entries, m->n_entries);
    free(m->dataset);
    free(m);
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const imatrix_entry *)a)->name, ((const imatrix_entry *)b)->name);
}

const imatrix_entry *imatrix_find(const imatrix *m, const char *name) {
    if (!m || !m->n_entries) return NULL;
    imatrix_entry key = {.name = (char *)name};
    return bsearch(&key, m->entries, (size_t)m->n_entries, sizeof key, cmp_entry);
}

/* Sorts by name; of equal names the later one in the file (higher index) stays */
typedef struct {
    imatrix_entry e;
    int64_t order;
} ordered_entry;

static int cmp_ordered(const void *pa, const void *pb) {
    const ordered_entry *a = pa, *b = pb;
    int c = strcmp(a->e.name, b->e.name);
    return c ? c : (a->order < b->order ? -1 : a->order > b->order);
}

/* Moves the entries into m (sorted, unique) and checks the weights; oe's entries are owned by
 * m or freed afterwards, whatever the result. */
static bool finish_entries(imatrix *m, ordered_entry *oe, int64_t n, char *err, size_t err_len) {
    qsort(oe, (size_t)n, sizeof *oe, cmp_ordered);
    m->entries = calloc((size_t)(n ? n : 1), sizeof *m->entries);
    if (!m->entries) {
        for (int64_t i = 0; i < n; i++) {
            free(oe[i].e.name);
            free(oe[i].e.values);
        }
        fail(err, err_len, "out of memory");
        return false;
    }
    for (int64_t i = 0; i < n; i++) {
        if (i + 1 < n && !strcmp(oe[i].e.name, oe[i + 1].e.name)) { /* a later entry replaces it */
            free(oe[i].e.name);
            free(oe[i].e.values);
            continue;
        }
        m->entries[m->n_entries++] = oe[i].e;
    }
    for (int64_t i = 0; i < m->n_entries; i++)
        for (int64_t j = 0; j < m->entries[i].n; j++)
            if (!isfinite(m->entries[i].values[j])) {
                fail(err, err_len, "%s: weight %lld is not finite (%g)", m->entries[i].name, (long long)j,
                     (double)m->entries[i].values[j]);
                return false;
            }
    return true;
}

/* ---- legacy binary ---- */

typedef struct {
    const uint8_t *p;
    size_t left;
} cursor;

static bool take(cursor *c, void *dst, size_t n) {
    if (c->left < n) return false;
    memcpy(dst, c->p, n);
    c->p += n;
    c->left -= n;
    return true;
}

static bool take_i32(cursor *c, int32_t *v) { return take(c, v, sizeof *v); }

static imatrix *parse_dat(const uint8_t *data, size_t size, char *err, size_t err_len) {
    cursor c = {data, size};
    int32_t n_entries;
    if (!take_i32(&c, &n_entries) || n_entries < 1) {
        fail(err, err_len, "not an imatrix file: no entries (neither GGUF nor llama.cpp's legacy .dat format)");
        return NULL;
    }
    /* each entry needs at least 16 bytes (len, ncall, nval, one value): bounds the allocation */
    if ((size_t)n_entries > c.left / 16) {
        fail(err, err_len, "truncated or not an imatrix file: %d entries announced in %zu bytes", n_entries, size);
        return NULL;
    }
    imatrix *m = calloc(1, sizeof *m);
    ordered_entry *oe = calloc((size_t)n_entries, sizeof *oe);
    int64_t n = 0;
    if (!m || !oe) {
        fail(err, err_len, "out of memory");
        goto bad;
    }
    for (int32_t i = 0; i < n_entries; i++) {
        int32_t len, ncall, nval;
        if (!take_i32(&c, &len) || len < 0 || (size_t)len > c.left) {
            fail(err, err_len, "truncated: cannot read the name of entry %d of %d", i + 1, n_entries);
            goto bad;
        }
        char *name = malloc((size_t)len + 1);
        if (!name) {
            fail(err, err_len, "out of memory");
            goto bad;
        }
        take(&c, name, (size_t)len);
        name[len] = 0; /* like llama-quantize, the name ends at its first NUL */
        oe[n].e.name = name;
        oe[n].order = n;
        n++;
        if (!take_i32(&c, &ncall) || !take_i32(&c, &nval)) {
            fail(err, err_len, "truncated: entry %d (%s) has no value count", i + 1, name);
            goto bad;
        }
        if (nval < 1 || (size_t)nval > c.left / sizeof(float)) {
            fail(err, err_len, "%s %d values for entry %d (%s), %zu bytes left",
                 nval < 1 ? "bad count:" : "truncated:", nval, i + 1, name, c.left);
            goto bad;
        }
        float *v = malloc((size_t)nval * sizeof *v);
        if (!v) {
            fail(err, err_len, "out of memory");
            goto bad;
        }
        take(&c, v, (size_t)nval * sizeof *v);
        if (ncall > 0)
            for (int32_t j = 0; j < nval; j++) v[j] /= ncall;
        oe[n - 1].e.values = v;
        oe[n - 1].e.n = nval;
    }
    m->dataset = NULL;
    if (c.left) { /* newer legacy files: chunk count and dataset name */
        int32_t last_call, dlen;
        if (!take_i32(&c, &last_call) || !take_i32(&c, &dlen) || dlen < 0 || (size_t)dlen > c.left) {
            fail(err, err_len, "truncated: bad chunk count / dataset name after the %d entries", n_entries);
            goto bad;
        }
        if (!(m->dataset = malloc((size_t)dlen + 1))) {
            fail(err, err_len, "out of memory");
            goto bad;
        }
        take(&c, m->dataset, (size_t)dlen);
        m->dataset[dlen] = 0;
        m->has_dataset = dlen > 0;
        m->chunks = last_call;
    }
    if (!m->dataset && !(m->dataset = calloc(1, 1))) {
        fail(err, err_len, "out of memory");
        goto bad;
    }
    if (!finish_entries(m, oe, n, err, err_len)) {
        free(oe);
        imatrix_free(m);
        return NULL;
    }
    free(oe);
    return m;
bad:
    for (int64_t i = 0; i < n; i++) {
        free(oe[i].e.name);
        free(oe[i].e.values);
    }
    free(oe);
    imatrix_free(m);
    return NULL;
}

/* ---- GGUF ---- */

static bool strip_suffix(const char *name, const char *suffix, size_t *base_len) {
    size_t n = strlen(name), k = strlen(suffix);
    if (n < k || memcmp(name + n - k, suffix, k)) return false;
    *base_len = n - k;
    return true;
}

static int cmp_tensor_ptr(const void *pa, const void *pb) {
    const gguf_tensor *a = *(const gguf_tensor *const *)pa, *b = *(const gguf_tensor *const *)pb;
    return strcmp(a->name, b->name);
}

/* the tensor named base + suffix among the sorted ones, NULL if absent */
static const gguf_tensor *find_with_suffix(const gguf_tensor **sorted, int64_t n, const char *base, size_t base_len,
                                           const char *suffix, char *buf, size_t buf_len) {
    size_t k = strlen(suffix);
    if (base_len + k + 1 > buf_len) return NULL;
    memcpy(buf, base, base_len);
    memcpy(buf + base_len, suffix, k + 1);
    gguf_tensor key = {.name = buf};
    const gguf_tensor *kp = &key;
    const gguf_tensor **hit = bsearch(&kp, sorted, (size_t)n, sizeof *sorted, cmp_tensor_ptr);
    return hit ? *hit : NULL;
}

static imatrix *parse_gguf(const void *data, size_t size, char *err, size_t err_len) {
    gguf_file *f = NULL;
    if (gguf_open_memory(data, size, &f) != PAGODA_OK) {
        fail(err, err_len, "malformed GGUF imatrix: %s", pagoda_last_error());
        return NULL;
    }
    imatrix *m = calloc(1, sizeof *m);
    const gguf_tensor **sorted = NULL;
    ordered_entry *oe = NULL;
    int64_t n = 0;
    char *buf = NULL;
    if (!m) {
        fail(err, err_len, "out of memory");
        goto bad;
    }
    m->gguf = true;
    const gguf_kv *ds = gguf_find_kv(f, "imatrix.datasets");
    const gguf_kv *cc = gguf_find_kv(f, "imatrix.chunk_count");
    const gguf_kv *cs = gguf_find_kv(f, "imatrix.chunk_size");
    if (!ds || !cc || !cs) {
        fail(err, err_len, "not an imatrix file: GGUF without imatrix.datasets, imatrix.chunk_count and "
                           "imatrix.chunk_size");
        goto bad;
    }
    if (ds->type != GGUF_TYPE_ARRAY || ds->arr_type != GGUF_TYPE_STRING || cc->type != GGUF_TYPE_UINT32 ||
        cs->type != GGUF_TYPE_UINT32) {
        fail(err, err_len, "malformed GGUF imatrix: imatrix.datasets must be a string array, "
                           "imatrix.chunk_count and imatrix.chunk_size u32");
        goto bad;
    }
    m->chunks = (int32_t)(uint32_t)cc->u64;
    m->has_dataset = ds->arr_n > 0;
    m->dataset = strdup(ds->arr_n ? ds->arr_str[0] : "");
    const int64_t nt = gguf_n_tensors(f);
    if (!m->dataset || !(sorted = calloc((size_t)(nt ? nt : 1), sizeof *sorted)) ||
        !(oe = calloc((size_t)(nt ? nt : 1), sizeof *oe))) {
        fail(err, err_len, "out of memory");
        goto bad;
    }
    size_t max_name = 0;
    for (int64_t i = 0; i < nt; i++) {
        sorted[i] = gguf_tensor_at(f, i);
        size_t len = strlen(sorted[i]->name);
        if (len > max_name) max_name = len;
    }
    if (!(buf = malloc(max_name + 16))) {
        fail(err, err_len, "out of memory");
        goto bad;
    }
    qsort(sorted, (size_t)nt, sizeof *sorted, cmp_tensor_ptr);
    for (int64_t i = 0; i < nt; i++) {
        const gguf_tensor *t = sorted[i], *sums, *counts;
        size_t base_len;
        const char *name = t->name;
        if (strip_suffix(name, ".in_sum2", &base_len)) {
            sums = t;
            counts = find_with_suffix(sorted, nt, name, base_len, ".counts", buf, max_name + 16);
        } else if (strip_suffix(name, ".counts", &base_len)) {
            counts = t;
            sums = find_with_suffix(sorted, nt, name, base_len, ".in_sum2", buf, max_name + 16);
            if (sums) continue; /* the pair is taken from its in_sum2 tensor */
        } else {
            continue;
        }
        if (!sums || !counts) {
            fail(err, err_len, "malformed GGUF imatrix: %.*s has %s but no %s", (int)base_len, name,
                 sums ? "in_sum2" : "counts", sums ? "counts" : "in_sum2");
            goto bad;
        }
        const int64_t ne0 = sums->ne[0], ne1 = sums->ne[1];
        int64_t n_counts = counts->ne[0] * counts->ne[1] * counts->ne[2] * counts->ne[3];
        if (sums->dtype != PAGODA_DTYPE_F32 || counts->dtype != PAGODA_DTYPE_F32 || sums->ne[2] != 1 ||
            sums->ne[3] != 1 || ne0 < 1 || ne1 < 1 || n_counts != ne1) {
            fail(err, err_len,
                 "malformed GGUF imatrix: %.*s needs an F32 in_sum2 [columns, matrices] and F32 counts with one "
                 "value per matrix (got %s [%lld, %lld, %lld, %lld] and %s with %lld)",
                 (int)base_len, name, dtype_name(sums->dtype), (long long)sums->ne[0], (long long)sums->ne[1],
                 (long long)sums->ne[2], (long long)sums->ne[3], dtype_name(counts->dtype), (long long)n_counts);
            goto bad;
        }
        size_t nv;
        if (!pg_mul_size((size_t)ne0, (size_t)ne1, &nv) || nv > sums->size / sizeof(float) ||
            (size_t)n_counts > counts->size / sizeof(float)) {
            fail(err, err_len, "malformed GGUF imatrix: %.*s: tensor data too small", (int)base_len, name);
            goto bad;
        }
        char *ename = malloc(base_len + 1);
        float *v = malloc(nv * sizeof *v);
        if (!ename || !v) {
            free(ename);
            free(v);
            fail(err, err_len, "out of memory");
            goto bad;
        }
        memcpy(ename, name, base_len);
        ename[base_len] = 0;
        const uint8_t *sp = sums->data, *cp = counts->data;
        for (int64_t j = 0; j < ne1; j++) {
            float count;
            memcpy(&count, cp + (size_t)j * sizeof count, sizeof count);
            for (int64_t k = 0; k < ne0; k++) {
                float s;
                memcpy(&s, sp + ((size_t)j * (size_t)ne0 + (size_t)k) * sizeof s, sizeof s);
                v[j * ne0 + k] = count > 0.0f ? s / count : 1.0f;
            }
        }
        oe[n] = (ordered_entry){.e = {.name = ename, .values = v, .n = (int64_t)nv}, .order = n};
        n++;
    }
    if (!n) {
        fail(err, err_len, "GGUF imatrix without data: no <tensor>.in_sum2 / <tensor>.counts pairs");
        goto bad;
    }
    if (!finish_entries(m, oe, n, err, err_len)) {
        n = 0; /* owned by m now */
        goto bad;
    }
    free(oe);
    free(sorted);
    free(buf);
    gguf_close(f);
    return m;
bad:
    for (int64_t i = 0; i < n; i++) {
        free(oe[i].e.name);
        free(oe[i].e.values);
    }
    free(oe);
    free(sorted);
    free(buf);
    imatrix_free(m);
    gguf_close(f);
    return NULL;
}

imatrix *imatrix_parse(const void *data, size_t size, char *err, size_t err_len) {
    if (size >= 4 && !memcmp(data, "GGUF", 4)) return parse_gguf(data, size, err, err_len);
    return parse_dat(data, size, err, err_len);
}

imatrix *imatrix_load(const char *path, char *err, size_t err_len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fail(err, err_len, "cannot open imatrix %s: %s", path, strerror(errno));
        return NULL;
    }
    uint8_t *data = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 1 << 16;
            uint8_t *p = ncap > cap ? realloc(data, ncap) : NULL;
            if (!p) {
                free(data);
                fclose(fp);
                fail(err, err_len, "imatrix %s: out of memory", path);
                return NULL;
            }
            data = p;
            cap = ncap;
        }
        size_t got = fread(data + n, 1, cap - n, fp);
        n += got;
        if (got == 0) break;
    }
    bool rd_err = ferror(fp);
    fclose(fp);
    if (rd_err) {
        free(data);
        fail(err, err_len, "cannot read imatrix %s", path);
        return NULL;
    }
    char why[448];
    imatrix *m = imatrix_parse(data, n, why, sizeof why);
    free(data);
    if (!m) fail(err, err_len, "imatrix %s: %s", path, why);
    return m;
}
