/* GGUF v2/v3 reader and streaming writer.
 * Little-endian host assumed (x86-64, aarch64): GGUF fields are little-endian and are copied with
 * memcpy straight into native integers. The static assert below keeps that assumption honest. */
#include "format/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/array.h"
#include "core/dtype.h"
#include "core/file.h"
#include "core/log.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "gguf.c assumes a little-endian host");
_Static_assert(sizeof(size_t) == 8, "gguf.c assumes 64-bit sizes (u64 file fields fit in size_t)");

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_STR (1ull << 30)   /* any string value */
#define GGUF_MAX_KEY 65535          /* spec: keys are at most 2^16-1 bytes */
#define GGUF_MAX_NAME 65535         /* tensor names (ggml itself uses 64) */
/* Smallest possible encodings, to bound counts by the bytes that remain. */
#define GGUF_MIN_KV_BYTES 13     /* key length u64 + type u32 + 1-byte value */
#define GGUF_MIN_TENSOR_BYTES 32 /* name length u64 + n_dims u32 + ne u64 + type u32 + offset u64 */

struct gguf_file {
    const uint8_t *base; /* the file bytes */
    size_t size;
    void *map; /* non-NULL when we own an mmap of base */
    uint32_t version;
    size_t alignment;
    size_t data_offset;
    int64_t n_kv, cap_kv;
    gguf_kv *kv;
    int64_t n_tensors, cap_tensors;
    gguf_tensor *tensors;
    int64_t *kv_sorted; /* indices sorted by key, for lookups and duplicate checks */
    int64_t *t_sorted;  /* indices sorted by tensor name */
};

/* ---- small helpers ---- */

static const size_t k_type_size[] = {
    [GGUF_TYPE_UINT8] = 1, [GGUF_TYPE_INT8] = 1,    [GGUF_TYPE_UINT16] = 2,  [GGUF_TYPE_INT16] = 2,
    [GGUF_TYPE_UINT32] = 4, [GGUF_TYPE_INT32] = 4,  [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,
    [GGUF_TYPE_STRING] = 0, [GGUF_TYPE_ARRAY] = 0,  [GGUF_TYPE_UINT64] = 8,  [GGUF_TYPE_INT64] = 8,
    [GGUF_TYPE_FLOAT64] = 8,
};

static bool type_valid(uint32_t t) { return t <= GGUF_TYPE_FLOAT64; }

const char *gguf_type_name(gguf_type t) {
    static const char *names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                  "bool",  "string", "array",  "uint64", "int64",  "float64"};
    return type_valid((uint32_t)t) ? names[t] : "?";
}

/* Names from the file go into error messages: keep them short and printable. */
static const char *show(const uint8_t *s, uint64_t n, char buf[96]) {
    size_t k = 0;
    for (uint64_t i = 0; i < n && k < 80; i++) buf[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    if (n > 80) { memcpy(buf + k, "...", 3); k += 3; }
    buf[k] = 0;
    return buf;
}

typedef struct {
    const uint8_t *p;
    size_t size, pos;
} reader;

static size_t rd_left(const reader *r) { return r->size - r->pos; }

static bool rd_bytes(reader *r, void *dst, size_t n) {
    if (rd_left(r) < n) return false;
    memcpy(dst, r->p + r->pos, n);
    r->pos += n;
    return true;
}
static bool rd_u32(reader *r, uint32_t *v) { return rd_bytes(r, v, 4); }
static bool rd_u64(reader *r, uint64_t *v) { return rd_bytes(r, v, 8); }

static pagoda_status fail_trunc(const reader *r, const char *what, const char *who) {
    return pg_fail(PAGODA_ERR_FORMAT, "%s%s%struncated at offset %zu reading %s (file is %zu bytes)",
                   who ? "'" : "", who ? who : "", who ? "': " : "", r->pos, what, r->size);
}

/* Reads a length-prefixed string without copying it. */
static pagoda_status rd_str(reader *r, uint64_t cap, const char *what, const char *who, const uint8_t **s,
                            uint64_t *n) {
    if (!rd_u64(r, n)) return fail_trunc(r, what, who);
    if (*n > cap)
        return pg_fail(PAGODA_ERR_FORMAT, "%s%s%s%s length %llu exceeds the limit of %llu bytes", who ? "'" : "",
                       who ? who : "", who ? "': " : "", what, (unsigned long long)*n, (unsigned long long)cap);
    if (rd_left(r) < *n) return fail_trunc(r, what, who);
    *s = r->p + r->pos;
    r->pos += (size_t)*n;
    return PAGODA_OK;
}

static char *dup_bytes(const uint8_t *s, uint64_t n) {
    char *d = malloc((size_t)n + 1);
    if (!d) return NULL;
    memcpy(d, s, (size_t)n);
    d[n] = 0;
    return d;
}

/* ---- metadata values ---- */

/* Widens a scalar into kv; bytes holds the little-endian value. */
static void set_scalar(gguf_kv *kv, gguf_type t, const uint8_t *bytes) {
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    float f32;
    switch (t) {
    case GGUF_TYPE_UINT8: memcpy(&u8, bytes, 1); kv->u64 = u8; kv->i64 = u8; break;
    case GGUF_TYPE_INT8: memcpy(&u8, bytes, 1); kv->i64 = (int8_t)u8; kv->u64 = (uint64_t)kv->i64; break;
    case GGUF_TYPE_UINT16: memcpy(&u16, bytes, 2); kv->u64 = u16; kv->i64 = u16; break;
    case GGUF_TYPE_INT16: memcpy(&u16, bytes, 2); kv->i64 = (int16_t)u16; kv->u64 = (uint64_t)kv->i64; break;
    case GGUF_TYPE_UINT32: memcpy(&u32, bytes, 4); kv->u64 = u32; kv->i64 = u32; break;
    case GGUF_TYPE_INT32: memcpy(&u32, bytes, 4); kv->i64 = (int32_t)u32; kv->u64 = (uint64_t)kv->i64; break;
    case GGUF_TYPE_UINT64: memcpy(&u64, bytes, 8); kv->u64 = u64; kv->i64 = (int64_t)u64; break;
    case GGUF_TYPE_INT64: memcpy(&u64, bytes, 8); kv->u64 = u64; kv->i64 = (int64_t)u64; break;
    case GGUF_TYPE_FLOAT32: memcpy(&f32, bytes, 4); kv->f64 = f32; break;
    case GGUF_TYPE_FLOAT64: memcpy(&kv->f64, bytes, 8); break;
    case GGUF_TYPE_BOOL: kv->i64 = bytes[0] != 0; kv->u64 = (uint64_t)kv->i64; break;
    default: break;
    }
}

/* String arrays live in one allocation: [char *ptrs][uint64_t lens][chars + NULs],
 * so a 150k-token vocabulary costs one malloc and one free. */
static pagoda_status read_str_array(reader *r, gguf_kv *kv, const char *key) {
    uint64_t n = kv->arr_n;
    if (n > rd_left(r) / 8)
        return pg_fail(PAGODA_ERR_FORMAT, "key '%s': array of %llu strings cannot fit in the %zu bytes left", key,
                       (unsigned long long)n, rd_left(r));
    if (n == 0) return PAGODA_OK;
    /* pass 1: validate lengths, sum the bytes */
    size_t start = r->pos, chars = 0;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *s;
        uint64_t len;
        pagoda_status st = rd_str(r, GGUF_MAX_STR, "array string", key, &s, &len);
        if (st) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", pagoda_last_error());
            return pg_fail(st, "%s (element %llu of %llu)", msg, (unsigned long long)i, (unsigned long long)n);
        }
        chars += (size_t)len + 1; /* cannot overflow: bounded by the file size plus n */
    }
    size_t bytes = (size_t)n * (sizeof(char *) + sizeof(uint64_t)) + chars;
    uint8_t *block = malloc(bytes);
    if (!block) return pg_fail(PAGODA_ERR_NOMEM, "key '%s': out of memory for %llu strings", key, (unsigned long long)n);
    kv->arr_str = (char **)block;
    kv->arr_str_len = (uint64_t *)(block + (size_t)n * sizeof(char *));
    char *out = (char *)(kv->arr_str_len + n);
    /* pass 2: copy (already validated) */
    r->pos = start;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = 0;
        rd_u64(r, &len);
        memcpy(out, r->p + r->pos, (size_t)len);
        out[len] = 0;
        kv->arr_str[i] = out;
        kv->arr_str_len[i] = len;
        out += len + 1;
        r->pos += (size_t)len;
    }
    return PAGODA_OK;
}

static pagoda_status read_value(reader *r, gguf_kv *kv, const char *key) {
    uint32_t t;
    if (!rd_u32(r, &t)) return fail_trunc(r, "value type", key);
    if (!type_valid(t)) return pg_fail(PAGODA_ERR_FORMAT, "key '%s': unknown value type %u", key, t);
    kv->type = (gguf_type)t;
    if (t == GGUF_TYPE_STRING) {
        const uint8_t *s;
        pagoda_status st = rd_str(r, GGUF_MAX_STR, "string value", key, &s, &kv->str_len);
        if (st) return st;
        if (!(kv->str = dup_bytes(s, kv->str_len))) return pg_fail(PAGODA_ERR_NOMEM, "key '%s': out of memory", key);
        return PAGODA_OK;
    }
    if (t != GGUF_TYPE_ARRAY) {
        uint8_t bytes[8];
        if (!rd_bytes(r, bytes, k_type_size[t])) return fail_trunc(r, gguf_type_name(kv->type), key);
        set_scalar(kv, kv->type, bytes);
        return PAGODA_OK;
    }
    uint32_t at;
    if (!rd_u32(r, &at)) return fail_trunc(r, "array element type", key);
    if (!type_valid(at)) return pg_fail(PAGODA_ERR_FORMAT, "key '%s': unknown array element type %u", key, at);
    if (at == GGUF_TYPE_ARRAY)
        return pg_fail(PAGODA_ERR_FORMAT, "key '%s': arrays of arrays are not supported", key);
    kv->arr_type = (gguf_type)at;
    if (!rd_u64(r, &kv->arr_n)) return fail_trunc(r, "array length", key);
    if (at == GGUF_TYPE_STRING) return read_str_array(r, kv, key);
    size_t esz = k_type_size[at];
    if (kv->arr_n > rd_left(r) / esz)
        return pg_fail(PAGODA_ERR_FORMAT, "key '%s': array of %llu %s needs more than the %zu bytes left in the file",
                       key, (unsigned long long)kv->arr_n, gguf_type_name(kv->arr_type), rd_left(r));
    kv->arr_data = r->p + r->pos;
    r->pos += (size_t)kv->arr_n * esz;
    return PAGODA_OK;
}

/* ---- lookup tables ---- */

/* Sorted index of n names; fails on a duplicate. Uses a merge sort so no global state is needed. */
typedef const char *(*name_at_fn)(const gguf_file *f, int64_t i);
static const char *kv_name(const gguf_file *f, int64_t i) { return f->kv[i].key; }
static const char *tensor_name(const gguf_file *f, int64_t i) { return f->tensors[i].name; }

static void merge_sort(const gguf_file *f, name_at_fn name, int64_t *a, int64_t *tmp, int64_t n) {
    if (n < 2) return;
    int64_t h = n / 2;
    merge_sort(f, name, a, tmp, h);
    merge_sort(f, name, a + h, tmp, n - h);
    int64_t i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = strcmp(name(f, a[i]), name(f, a[j])) <= 0 ? a[i++] : a[j++];
    while (i < h) tmp[k++] = a[i++];
    while (j < n) tmp[k++] = a[j++];
    memcpy(a, tmp, (size_t)n * sizeof *a);
}

static pagoda_status build_index(const gguf_file *f, int64_t n, name_at_fn name, const char *what, int64_t **out) {
    *out = NULL;
    if (n == 0) return PAGODA_OK;
    int64_t *idx = malloc((size_t)n * sizeof *idx), *tmp = malloc((size_t)n * sizeof *tmp);
    if (!idx || !tmp) {
        free(idx);
        free(tmp);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory indexing %lld %ss", (long long)n, what);
    }
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    merge_sort(f, name, idx, tmp, n);
    free(tmp);
    for (int64_t i = 1; i < n; i++) {
        if (strcmp(name(f, idx[i - 1]), name(f, idx[i])) == 0) {
            char b[96];
            const char *s = name(f, idx[i]);
            pg_fail(PAGODA_ERR_FORMAT, "duplicate %s '%s'", what, show((const uint8_t *)s, strlen(s), b));
            free(idx);
            return PAGODA_ERR_FORMAT;
        }
    }
    *out = idx;
    return PAGODA_OK;
}

static int64_t find_sorted(const gguf_file *f, const int64_t *idx, int64_t n, name_at_fn name, const char *key) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name(f, idx[mid]), key);
        if (c == 0) return idx[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

/* ---- parsing ---- */

static bool kv_is_int(const gguf_kv *kv) {
    switch (kv->type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16:
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: return true;
    default: return false;
    }
}


static pagoda_status read_kvs(gguf_file *f, reader *r, uint64_t n_kv) {
    for (uint64_t i = 0; i < n_kv; i++) {
        if (!pg_grow((void **)&f->kv, &f->cap_kv, f->n_kv + 1, sizeof(gguf_kv)))
            return pg_fail(PAGODA_ERR_NOMEM, "out of memory for %llu keys", (unsigned long long)n_kv);
        gguf_kv *kv = &f->kv[f->n_kv++];
        const uint8_t *k;
        uint64_t klen;
        char what[64];
        snprintf(what, sizeof what, "key %llu of %llu", (unsigned long long)i, (unsigned long long)n_kv);
        pagoda_status st = rd_str(r, GGUF_MAX_KEY, what, NULL, &k, &klen);
        if (st) return st;
        if (klen == 0) return pg_fail(PAGODA_ERR_FORMAT, "%s is empty", what);
        if (memchr(k, 0, (size_t)klen)) {
            char b[96];
            return pg_fail(PAGODA_ERR_FORMAT, "key '%s' contains a NUL byte", show(k, klen, b));
        }
        if (!(kv->key = dup_bytes(k, klen))) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        char b[96];
        if ((st = read_value(r, kv, show(k, klen, b)))) return st;
    }
    return PAGODA_OK;
}

static pagoda_status read_alignment(gguf_file *f) {
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find_kv(f, "general.alignment");
    if (!kv) return PAGODA_OK;
    if (!kv_is_int(kv))
        return pg_fail(PAGODA_ERR_FORMAT, "key 'general.alignment': expected an unsigned integer, got %s",
                       gguf_type_name(kv->type));
    bool neg = kv->type != GGUF_TYPE_UINT64 && kv->i64 < 0;
    uint64_t a = kv->u64;
    if (neg || a == 0 || (a & (a - 1)) || a > SIZE_MAX / 2)
        return pg_fail(PAGODA_ERR_FORMAT, "key 'general.alignment': %lld is not a non-zero power of two",
                       (long long)kv->i64);
    f->alignment = (size_t)a;
    return PAGODA_OK;
}

static pagoda_status read_tensor_infos(gguf_file *f, reader *r, uint64_t n_tensors) {
    for (uint64_t i = 0; i < n_tensors; i++) {
        if (!pg_grow((void **)&f->tensors, &f->cap_tensors, f->n_tensors + 1, sizeof(gguf_tensor)))
            return pg_fail(PAGODA_ERR_NOMEM, "out of memory for %llu tensors", (unsigned long long)n_tensors);
        gguf_tensor *t = &f->tensors[f->n_tensors++];
        const uint8_t *s;
        uint64_t slen;
        char what[64], b[96];
        snprintf(what, sizeof what, "name of tensor %llu of %llu", (unsigned long long)i, (unsigned long long)n_tensors);
        pagoda_status st = rd_str(r, GGUF_MAX_NAME, what, NULL, &s, &slen);
        if (st) return st;
        if (slen == 0) return pg_fail(PAGODA_ERR_FORMAT, "%s is empty", what);
        if (memchr(s, 0, (size_t)slen))
            return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': name contains a NUL byte", show(s, slen, b));
        if (!(t->name = dup_bytes(s, slen))) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        const char *nm = show(s, slen, b);

        uint32_t n_dims, type;
        if (!rd_u32(r, &n_dims)) return fail_trunc(r, "n_dims", nm);
        if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
            return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': n_dims %u is not in 1..%d", nm, n_dims, GGUF_MAX_DIMS);
        t->n_dims = (int)n_dims;
        int64_t nel = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) {
            uint64_t ne = 1;
            if (d < (int)n_dims && !rd_u64(r, &ne)) return fail_trunc(r, "ne", nm);
            if (ne > (uint64_t)INT64_MAX)
                return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': ne[%d] = %llu is out of range", nm, d,
                               (unsigned long long)ne);
            t->ne[d] = (int64_t)ne;
            if (__builtin_mul_overflow(nel, t->ne[d], &nel))
                return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': element count overflows (ne[%d] = %lld)", nm, d,
                               (long long)t->ne[d]);
        }
        if (!rd_u32(r, &type)) return fail_trunc(r, "type", nm);
        const pg_dtype_info *di = dtype_info((int)type);
        if (type > INT32_MAX || !di) return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': unknown dtype %u", nm, type);
        t->dtype = (int)type;
        if (t->ne[0] % di->block_size)
            return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': ne[0] = %lld is not a multiple of the %s block size %d", nm,
                           (long long)t->ne[0], di->name, di->block_size);
        size_t row, size;
        if (!dtype_row_size(t->dtype, t->ne[0], &row) || !pg_mul_size(row, (size_t)(t->ne[1]), &size) ||
            !pg_mul_size(size, (size_t)t->ne[2], &size) || !pg_mul_size(size, (size_t)t->ne[3], &size))
            return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': byte size overflows", nm);
        t->size = size;
        if (!rd_u64(r, &t->offset)) return fail_trunc(r, "offset", nm);
    }
    return PAGODA_OK;
}

static pagoda_status place_tensors(gguf_file *f) {
    for (int64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        char b[96];
        const char *nm = show((const uint8_t *)t->name, strlen(t->name), b);
        if (t->offset % f->alignment)
            return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': offset %llu is not a multiple of the alignment %zu", nm,
                           (unsigned long long)t->offset, f->alignment);
        size_t start, end;
        if (!pg_add_size(f->data_offset, (size_t)t->offset, &start) ||
            !pg_add_size(start, t->size, &end) || end > f->size)
            return pg_fail(PAGODA_ERR_FORMAT,
                           "tensor '%s': data [offset %llu, size %zu] extends past end of file (%zu bytes)", nm,
                           (unsigned long long)f->data_offset + (unsigned long long)t->offset, t->size, f->size);
        t->data = f->base + start;
    }
    return PAGODA_OK;
}

static pagoda_status parse(gguf_file *f) {
    reader r = {f->base, f->size, 0};
    uint32_t magic, version;
    uint64_t n_tensors, n_kv;
    pagoda_status st;
    if (!rd_u32(&r, &magic)) return fail_trunc(&r, "magic", NULL);
    if (magic != GGUF_MAGIC)
        return pg_fail(PAGODA_ERR_FORMAT, "bad magic 0x%08x (not a GGUF file)", (unsigned)magic);
    if (!rd_u32(&r, &version)) return fail_trunc(&r, "version", NULL);
    if (version == 1)
        return pg_fail(PAGODA_ERR_FORMAT, "unsupported version 1 (GGUF v1 files are not supported; convert to v3)");
    if (version != 2 && version != 3) {
        bool swapped = (version & 0xffffu) == 0 && (version >> 24) >= 1 && (version >> 24) <= 3;
        return pg_fail(PAGODA_ERR_FORMAT, "unsupported version %u%s", (unsigned)version,
                       swapped ? " (a big-endian GGUF file?)" : "");
    }
    f->version = version;
    if (!rd_u64(&r, &n_tensors)) return fail_trunc(&r, "n_tensors", NULL);
    if (!rd_u64(&r, &n_kv)) return fail_trunc(&r, "n_kv", NULL);
    /* Each entry takes some minimum number of bytes, so counts beyond that are hostile. */
    size_t left = rd_left(&r);
    if (n_tensors > left / GGUF_MIN_TENSOR_BYTES)
        return pg_fail(PAGODA_ERR_FORMAT, "n_tensors %llu cannot fit in the %zu bytes left in the file",
                       (unsigned long long)n_tensors, left);
    if (n_kv > left / GGUF_MIN_KV_BYTES)
        return pg_fail(PAGODA_ERR_FORMAT, "n_kv %llu cannot fit in the %zu bytes left in the file",
                       (unsigned long long)n_kv, left);
    if (n_tensors * GGUF_MIN_TENSOR_BYTES + n_kv * GGUF_MIN_KV_BYTES > left)
        return pg_fail(PAGODA_ERR_FORMAT, "n_tensors %llu and n_kv %llu cannot fit in the %zu bytes left in the file",
                       (unsigned long long)n_tensors, (unsigned long long)n_kv, left);
    if ((st = read_kvs(f, &r, n_kv))) return st;
    if ((st = build_index(f, f->n_kv, kv_name, "key", &f->kv_sorted))) return st;
    if ((st = read_alignment(f))) return st;
    if ((st = read_tensor_infos(f, &r, n_tensors))) return st;
    if ((st = build_index(f, f->n_tensors, tensor_name, "tensor name", &f->t_sorted))) return st;
    size_t pad = (f->alignment - r.pos % f->alignment) % f->alignment;
    if (!pg_add_size(r.pos, pad, &f->data_offset)) f->data_offset = SIZE_MAX;
    /* Vocab-only files end before the padded data section; that is fine with no tensors. */
    if (f->data_offset > f->size && f->n_tensors == 0) f->data_offset = f->size;
    return place_tensors(f);
}

static void free_contents(gguf_file *f) {
    for (int64_t i = 0; i < f->n_kv; i++) {
        free(f->kv[i].key);
        free(f->kv[i].str);
        free(f->kv[i].arr_str); /* also holds arr_str_len and the characters */
    }
    for (int64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kv);
    free(f->tensors);
    free(f->kv_sorted);
    free(f->t_sorted);
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    free_contents(f);
    if (f->map) munmap(f->map, f->size);
    free(f);
}

pagoda_status gguf_open_memory(const void *data, size_t size, gguf_file **out) {
    *out = NULL;
    if (!data && size) return pg_fail(PAGODA_ERR_INVALID, "gguf_open_memory: NULL data with size %zu", size);
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    f->base = data ? data : (const uint8_t *)"";
    f->size = size;
    pagoda_status st = parse(f);
    if (st) goto fail;
    *out = f;
    return PAGODA_OK;
fail:
    gguf_close(f);
    return st;
}

pagoda_status gguf_open(const char *path, gguf_file **out) {
    *out = NULL;
    pagoda_status st;
    void *map = NULL;
    struct stat sb;
    gguf_file *f = NULL;
    int fd;
    if ((st = pg_open_regular(path, &fd, &sb))) return st;
    size_t size = (size_t)sb.st_size;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            map = NULL;
            st = pg_fail(PAGODA_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
            goto fail;
        }
        /* Weights stream through once per token: 2 MiB pages (where the kernel and filesystem
         * give them) spare TLB misses and let the hardware prefetcher run past 4 KiB boundaries.
         * Only a hint; failure changes nothing. */
        madvise(map, size, MADV_HUGEPAGE);
    }
    if ((st = gguf_open_memory(map, size, &f))) {
        pg_error_prefix("%s: ", path);
        goto fail;
    }
    f->map = map;
    close(fd);
    *out = f;
    return PAGODA_OK;
fail:
    if (map) munmap(map, size);
    close(fd);
    return st;
}

/* ---- accessors ---- */

uint32_t gguf_version(const gguf_file *f) { return f->version; }
size_t gguf_alignment(const gguf_file *f) { return f->alignment; }
size_t gguf_data_offset(const gguf_file *f) { return f->data_offset; }
size_t gguf_file_size(const gguf_file *f) { return f->size; }
int64_t gguf_n_kv(const gguf_file *f) { return f->n_kv; }
int64_t gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }

const gguf_kv *gguf_kv_at(const gguf_file *f, int64_t i) { return i >= 0 && i < f->n_kv ? &f->kv[i] : NULL; }
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i) {
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
    int64_t i = find_sorted(f, f->kv_sorted, f->kv_sorted ? f->n_kv : 0, kv_name, key);
    return i < 0 ? NULL : &f->kv[i];
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    int64_t i = find_sorted(f, f->t_sorted, f->t_sorted ? f->n_tensors : 0, tensor_name, name);
    return i < 0 ? NULL : &f->tensors[i];
}

bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv || !kv_is_int(kv)) return false;
    if (kv->type == GGUF_TYPE_UINT64 && kv->u64 > (uint64_t)INT64_MAX) return false;
    *out = kv->i64;
    return true;
}

bool gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv || !kv_is_int(kv)) return false;
    if (kv->type == GGUF_TYPE_UINT64 ? kv->u64 > UINT32_MAX : (kv->i64 < 0 || kv->i64 > (int64_t)UINT32_MAX))
        return false;
    *out = (uint32_t)kv->u64;
    return true;
}

bool gguf_get_f32(const gguf_file *f, const char *key, float *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv || (kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)) return false;
    *out = (float)kv->f64;
    return true;
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv || kv->type != GGUF_TYPE_BOOL) return false;
    *out = kv->i64 != 0;
    return true;
}

const char *gguf_get_str(const gguf_file *f, const char *key) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    return kv && kv->type == GGUF_TYPE_STRING ? kv->str : NULL;
}

/* ---- writer ---- */

typedef struct {
    char *name;
    int dtype, n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    size_t size;
} gw_tensor;

struct gguf_writer {
    uint8_t *meta; /* serialized key/value pairs */
    size_t meta_len, meta_cap;
    char **keys;
    size_t *key_off; /* [n_kv] where each key's entry starts in meta */
    int64_t n_kv, cap_kv, cap_off;
    gw_tensor *tensors;
    int64_t n_tensors, cap_tensors;
    size_t alignment;
    FILE *fp;
    char *path;        /* set while a file is open, so an unfinished file can be removed */
    int64_t next;      /* next tensor whose data is expected */
    bool failed;       /* a write failed; the file is unusable */
};

gguf_writer *gguf_writer_create(void) {
    gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_destroy(gguf_writer *w) {
    if (!w) return;
    if (w->fp) {
        fclose(w->fp);
        unlink(w->path); /* never leave a half-written file that looks like a model */
    }
    free(w->path);
    free(w->meta);
    for (int64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    free(w->key_off);
    for (int64_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->tensors);
    free(w);
}

static bool meta_put(gguf_writer *w, const void *p, size_t n) {
    if (w->meta_cap - w->meta_len < n) {
        size_t nc = w->meta_cap ? w->meta_cap : 256;
        while (nc - w->meta_len < n) {
            if (nc > SIZE_MAX / 2) return false;
            nc *= 2;
        }
        uint8_t *m = realloc(w->meta, nc);
        if (!m) return false;
        w->meta = m;
        w->meta_cap = nc;
    }
    if (n) memcpy(w->meta + w->meta_len, p, n);
    w->meta_len += n;
    return true;
}

static bool meta_str(gguf_writer *w, const char *s, size_t n) {
    uint64_t len = n;
    return meta_put(w, &len, 8) && meta_put(w, s, n);
}

static bool is_alignment_key(const char *key) { return key && strcmp(key, "general.alignment") == 0; }

/* Checks the key and writes its name and type; the caller appends the value. */
static pagoda_status kv_begin(gguf_writer *w, const char *key, gguf_type t) {
    if (!key || !*key || strlen(key) > GGUF_MAX_KEY)
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key is NULL, empty or too long");
    if (w->path) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key '%s' set after gguf_writer_begin", key);
    for (int64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: duplicate key '%s'", key);
    char *k = strdup(key);
    uint32_t t32 = (uint32_t)t;
    if (!k || !pg_grow((void **)&w->keys, &w->cap_kv, w->n_kv + 1, sizeof(char *)) ||
        !pg_grow((void **)&w->key_off, &w->cap_off, w->n_kv + 1, sizeof(size_t))) {
        free(k);
        return pg_fail(PAGODA_ERR_NOMEM, "gguf writer: out of memory");
    }
    const size_t off = w->meta_len;
    if (!meta_str(w, key, strlen(key)) || !meta_put(w, &t32, 4)) {
        free(k);
        return pg_fail(PAGODA_ERR_NOMEM, "gguf writer: out of memory");
    }
    w->key_off[w->n_kv] = off;
    w->keys[w->n_kv++] = k;
    return PAGODA_OK;
}

bool gguf_writer_remove_key(gguf_writer *w, const char *key) {
    if (!key || w->path) return false;
    for (int64_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->keys[i], key) != 0) continue;
        const size_t start = w->key_off[i], end = i + 1 < w->n_kv ? w->key_off[i + 1] : w->meta_len;
        memmove(w->meta + start, w->meta + end, w->meta_len - end);
        w->meta_len -= end - start;
        free(w->keys[i]);
        for (int64_t j = i; j + 1 < w->n_kv; j++) {
            w->keys[j] = w->keys[j + 1];
            w->key_off[j] = w->key_off[j + 1] - (end - start);
        }
        w->n_kv--;
        if (is_alignment_key(key)) w->alignment = GGUF_DEFAULT_ALIGNMENT;
        return true;
    }
    return false;
}

static pagoda_status set_scalar_w(gguf_writer *w, const char *key, gguf_type t, const void *v) {
    pagoda_status st = kv_begin(w, key, t);
    if (st) return st;
    if (!meta_put(w, v, k_type_size[t])) return pg_fail(PAGODA_ERR_NOMEM, "gguf writer: out of memory");
    return PAGODA_OK;
}

pagoda_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) {
    bool align = is_alignment_key(key);
    if (align && (v == 0 || (v & (v - 1)) || v > (1u << 30)))
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: general.alignment %u is not a power of two", v);
    pagoda_status st = set_scalar_w(w, key, GGUF_TYPE_UINT32, &v);
    if (!st && align) w->alignment = v; /* the reader takes the data alignment from this key */
    return st;
}
pagoda_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v) {
    if (is_alignment_key(key))
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: general.alignment must be a uint32");
    return set_scalar_w(w, key, GGUF_TYPE_INT32, &v);
}
pagoda_status gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v) {
    if (is_alignment_key(key))
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: general.alignment must be a uint32");
    return set_scalar_w(w, key, GGUF_TYPE_UINT64, &v);
}
pagoda_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v) {
    return set_scalar_w(w, key, GGUF_TYPE_FLOAT32, &v);
}
pagoda_status gguf_writer_set_bool(gguf_writer *w, const char *key, bool v) {
    uint8_t b = v;
    return set_scalar_w(w, key, GGUF_TYPE_BOOL, &b);
}

static pagoda_status set_str_n(gguf_writer *w, const char *key, const char *v, uint64_t len) {
    if (!v && len) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key '%s': NULL string", key ? key : "");
    if (len > GGUF_MAX_STR)
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key '%s': string of %llu bytes is too long", key ? key : "",
                       (unsigned long long)len);
    pagoda_status st = kv_begin(w, key, GGUF_TYPE_STRING);
    if (st) return st;
    if (!meta_str(w, v ? v : "", (size_t)len)) return pg_fail(PAGODA_ERR_NOMEM, "gguf writer: out of memory");
    return PAGODA_OK;
}

pagoda_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *v) {
    if (!v) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key '%s': NULL string", key ? key : "");
    return set_str_n(w, key, v, strlen(v));
}

pagoda_status gguf_writer_set_arr_str_n(gguf_writer *w, const char *key, const char *const *v, const uint64_t *len,
                                        uint64_t n) {
    if (n && !v) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key '%s': NULL array", key ? key : "");
    /* every element costs at least its 8-byte length, so a count the metadata cannot hold is caught here */
    size_t bytes;
    if (!pg_mul_size((size_t)n, 8, &bytes))
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key '%s': array too large", key ? key : "");
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i] && (!len || len[i]))
            return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key '%s': NULL string at %llu", key ? key : "",
                           (unsigned long long)i);
        uint64_t li = len ? len[i] : strlen(v[i]);
        if (li > GGUF_MAX_STR)
            return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key '%s': string %llu of %llu bytes is too long",
                           key ? key : "", (unsigned long long)i, (unsigned long long)li);
    }
    pagoda_status st = kv_begin(w, key, GGUF_TYPE_ARRAY);
    if (st) return st;
    uint32_t at = GGUF_TYPE_STRING;
    bool ok = meta_put(w, &at, 4) && meta_put(w, &n, 8);
    for (uint64_t i = 0; ok && i < n; i++)
        ok = meta_str(w, v[i] ? v[i] : "", (size_t)(len ? len[i] : strlen(v[i])));
    return ok ? PAGODA_OK : pg_fail(PAGODA_ERR_NOMEM, "gguf writer: out of memory");
}

pagoda_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    return gguf_writer_set_arr_str_n(w, key, v, NULL, n);
}

pagoda_status gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type t, const void *v, uint64_t n) {
    if (!type_valid((uint32_t)t) || t == GGUF_TYPE_STRING || t == GGUF_TYPE_ARRAY)
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key '%s': bad numeric array type %d", key ? key : "", (int)t);
    size_t bytes;
    if (!pg_mul_size((size_t)n, k_type_size[t], &bytes))
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key '%s': array too large", key ? key : "");
    if (n && !v) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key '%s': NULL array", key ? key : "");
    pagoda_status st = kv_begin(w, key, GGUF_TYPE_ARRAY);
    if (st) return st;
    uint32_t at = (uint32_t)t;
    if (!meta_put(w, &at, 4) || !meta_put(w, &n, 8) || !meta_put(w, v, bytes))
        return pg_fail(PAGODA_ERR_NOMEM, "gguf writer: out of memory");
    return PAGODA_OK;
}

pagoda_status gguf_writer_set_kv(gguf_writer *w, const gguf_kv *kv) {
    if (!kv) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: NULL key/value");
    const char *key = kv->key;
    switch (kv->type) {
    case GGUF_TYPE_STRING: return set_str_n(w, key, kv->str, kv->str_len);
    case GGUF_TYPE_ARRAY:
        if (kv->arr_type == GGUF_TYPE_STRING)
            return gguf_writer_set_arr_str_n(w, key, (const char *const *)kv->arr_str, kv->arr_str_len, kv->arr_n);
        return gguf_writer_set_arr(w, key, kv->arr_type, kv->arr_data, kv->arr_n);
    case GGUF_TYPE_UINT32: return gguf_writer_set_u32(w, key, (uint32_t)kv->u64); /* checks general.alignment */
    case GGUF_TYPE_FLOAT32: return gguf_writer_set_f32(w, key, (float)kv->f64);   /* widened exactly: exact back */
    case GGUF_TYPE_FLOAT64: return set_scalar_w(w, key, GGUF_TYPE_FLOAT64, &kv->f64);
    default: break;
    }
    if (!type_valid((uint32_t)kv->type))
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: key '%s': bad value type %d", key ? key : "", (int)kv->type);
    if (is_alignment_key(key))
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: general.alignment must be a uint32");
    /* integers and bool: u64 holds the value's bits (sign-extended), so its low bytes are the value */
    uint8_t bytes[8];
    for (size_t i = 0; i < k_type_size[kv->type]; i++) bytes[i] = (uint8_t)(kv->u64 >> (8 * i));
    return set_scalar_w(w, key, kv->type, bytes);
}

pagoda_status gguf_writer_add_tensor(gguf_writer *w, const char *name, int dtype, int n_dims, const int64_t *ne) {
    if (!name || !*name || strlen(name) > GGUF_MAX_NAME)
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: tensor name is NULL, empty or too long");
    if (w->path) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: tensor '%s' added after begin", name);
    const pg_dtype_info *di = dtype_info(dtype);
    if (!di) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: tensor '%s': unknown dtype %d", name, dtype);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne)
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: tensor '%s': n_dims %d is not in 1..%d", name, n_dims,
                       GGUF_MAX_DIMS);
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return pg_fail(PAGODA_ERR_INVALID, "gguf writer: duplicate tensor '%s'", name);
    gw_tensor t = {.dtype = dtype, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 0) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: tensor '%s': ne[%d] < 0", name, d);
        t.ne[d] = ne[d];
    }
    if (t.ne[0] % di->block_size)
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: tensor '%s': ne[0] = %lld is not a multiple of %d", name,
                       (long long)t.ne[0], di->block_size);
    if (!dtype_row_size(dtype, t.ne[0], &t.size) || !pg_mul_size(t.size, (size_t)t.ne[1], &t.size) ||
        !pg_mul_size(t.size, (size_t)t.ne[2], &t.size) || !pg_mul_size(t.size, (size_t)t.ne[3], &t.size))
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: tensor '%s': size overflows", name);
    if (!(t.name = strdup(name)) || !pg_grow((void **)&w->tensors, &w->cap_tensors, w->n_tensors + 1, sizeof t)) {
        free(t.name);
        return pg_fail(PAGODA_ERR_NOMEM, "gguf writer: out of memory");
    }
    w->tensors[w->n_tensors++] = t;
    return PAGODA_OK;
}

static pagoda_status w_put(gguf_writer *w, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, w->fp) != n) {
        w->failed = true;
        return pg_fail(PAGODA_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
    }
    return PAGODA_OK;
}

static pagoda_status w_pad(gguf_writer *w, size_t pos) {
    static const uint8_t zeros[64];
    size_t pad = (w->alignment - pos % w->alignment) % w->alignment;
    pagoda_status st = PAGODA_OK;
    while (pad && !st) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        st = w_put(w, zeros, k);
        pad -= k;
    }
    return st;
}

pagoda_status gguf_writer_begin(gguf_writer *w, const char *path) {
    if (w->path) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: begin called twice");
    if (!path) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: NULL path");
    if (!(w->path = strdup(path))) return pg_fail(PAGODA_ERR_NOMEM, "gguf writer: out of memory");
    if (!(w->fp = fopen(path, "wb"))) return pg_fail(PAGODA_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    uint32_t head[2] = {GGUF_MAGIC, 3};
    uint64_t counts[2] = {(uint64_t)w->n_tensors, (uint64_t)w->n_kv};
    pagoda_status st;
    if ((st = w_put(w, head, 8)) || (st = w_put(w, counts, 16)) || (st = w_put(w, w->meta, w->meta_len))) return st;
    size_t pos = 24 + w->meta_len;
    uint64_t offset = 0;
    for (int64_t i = 0; i < w->n_tensors; i++) {
        const gw_tensor *t = &w->tensors[i];
        uint64_t len = strlen(t->name);
        uint32_t nd = (uint32_t)t->n_dims, type = (uint32_t)t->dtype;
        if ((st = w_put(w, &len, 8)) || (st = w_put(w, t->name, len)) || (st = w_put(w, &nd, 4)) ||
            (st = w_put(w, t->ne, 8 * (size_t)nd)) || (st = w_put(w, &type, 4)) || (st = w_put(w, &offset, 8)))
            return st;
        pos += 8 + len + 4 + 8 * (size_t)nd + 4 + 8;
        offset += t->size + (w->alignment - t->size % w->alignment) % w->alignment;
    }
    return w_pad(w, pos);
}

pagoda_status gguf_writer_write_tensor(gguf_writer *w, const void *data, size_t size) {
    if (!w->fp) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: write_tensor without a successful begin");
    if (w->failed) return pg_fail(PAGODA_ERR_IO, "%s: an earlier write failed", w->path);
    if (w->next >= w->n_tensors)
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: all %lld tensors were already written", (long long)w->n_tensors);
    const gw_tensor *t = &w->tensors[w->next];
    if (size != t->size || (size && !data))
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: tensor '%s' is %zu bytes, got %zu%s", t->name, t->size, size,
                       size && !data ? " (NULL data)" : "");
    pagoda_status st = w_put(w, data, size);
    if (!st) st = w_pad(w, size);
    if (!st) w->next++;
    return st;
}

pagoda_status gguf_writer_end(gguf_writer *w) {
    if (!w->fp) return pg_fail(PAGODA_ERR_INVALID, "gguf writer: end without a successful begin");
    if (w->failed) return pg_fail(PAGODA_ERR_IO, "%s: an earlier write failed", w->path);
    if (w->next != w->n_tensors)
        return pg_fail(PAGODA_ERR_INVALID, "gguf writer: only %lld of %lld tensors were written", (long long)w->next,
                       (long long)w->n_tensors);
    int rc = fclose(w->fp);
    w->fp = NULL;
    if (rc != 0) {
        pagoda_status st = pg_fail(PAGODA_ERR_IO, "%s: close failed: %s", w->path, strerror(errno));
        unlink(w->path);
        return st;
    }
    return PAGODA_OK;
}
