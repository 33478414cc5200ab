/* safetensors reader and writer.
 * Layout: u64 little-endian header length N, N bytes of JSON, then the data section that every
 * "data_offsets" is relative to. Little-endian host assumed (see gguf.c). */
#include "format/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
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

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors.c assumes a little-endian host");

#define ST_MAX_HEADER (100u << 20)    /* the Python library's own limit is 100 MB */
#define ST_MAX_INDEX (64u << 20)      /* model.safetensors.index.json */
#define ST_MAX_SHARDS 4096

typedef struct {
    void *map; /* NULL for st_open_memory or an empty file */
    size_t size;
    char *name; /* shard file name, for messages; NULL for memory */
} st_shard;

struct st_model {
    st_shard *shards;
    int64_t n_shards, cap_shards;
    st_tensor *tensors;
    int *tensor_shard; /* [n] shard index of each tensor */
    int64_t n, cap, cap_ts;
    const st_tensor **sorted; /* [n] by name, for st_find */
    char **meta_key, **meta_val;
    int64_t n_meta;
};

typedef struct {
    const char *name;
    int bits; /* per element; F4/F6 pack below a byte */
    int dtype;
} st_dtype;

static const st_dtype k_dtypes[] = {
    {"F64", 64, PAGODA_DTYPE_F64},   {"F32", 32, PAGODA_DTYPE_F32},   {"F16", 16, PAGODA_DTYPE_F16},
    {"BF16", 16, PAGODA_DTYPE_BF16}, {"I64", 64, PAGODA_DTYPE_I64},   {"I32", 32, PAGODA_DTYPE_I32},
    {"I16", 16, PAGODA_DTYPE_I16},   {"I8", 8, PAGODA_DTYPE_I8},      {"U64", 64, -1},
    {"U32", 32, -1},                 {"U16", 16, -1},                 {"U8", 8, -1},
    {"BOOL", 8, -1},                 {"F8_E4M3", 8, -1},              {"F8_E5M2", 8, -1},
    {"F8_E8M0", 8, -1},              {"F6_E2M3", 6, -1},              {"F6_E3M2", 6, -1},
    {"F4", 4, -1},                   {"C64", 64, -1},
};

static const st_dtype *find_dtype_str(const char *s) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (strcmp(k_dtypes[i].name, s) == 0) return &k_dtypes[i];
    return NULL;
}

static const st_dtype *find_dtype_id(int dtype) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (k_dtypes[i].dtype >= 0 && k_dtypes[i].dtype == dtype) return &k_dtypes[i];
    return NULL;
}

/* Names from the file go into error messages: keep them short and printable. */
static const char *show(const char *s, char buf[96]) {
    size_t k = 0, n = strlen(s);
    for (size_t i = 0; i < n && k < 80; i++) buf[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (n > 80) { memcpy(buf + k, "...", 3); k += 3; }
    buf[k] = 0;
    return buf;
}

/* ---- one file ---- */

static pagoda_status parse_metadata(st_model *m, json_t *meta, bool keep) {
    if (!json_is_object(meta)) return pg_fail(PAGODA_ERR_FORMAT, "\"__metadata__\" is not an object");
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        char b[96];
        if (!json_is_string(v))
            return pg_fail(PAGODA_ERR_FORMAT, "\"__metadata__\" key '%s': value is not a string", show(k, b));
    }
    if (!keep) return PAGODA_OK;
    size_t n = json_object_size(meta);
    if (n == 0) return PAGODA_OK;
    m->meta_key = calloc(n, sizeof(char *));
    m->meta_val = calloc(n, sizeof(char *));
    if (!m->meta_key || !m->meta_val) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    json_object_foreach(meta, k, v) {
        m->meta_key[m->n_meta] = strdup(k);
        m->meta_val[m->n_meta] = strdup(json_string_value(v));
        m->n_meta++;
        if (!m->meta_key[m->n_meta - 1] || !m->meta_val[m->n_meta - 1])
            return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    return PAGODA_OK;
}

static bool json_u64(json_t *j, uint64_t *out) {
    if (!json_is_integer(j) || json_integer_value(j) < 0) return false;
    *out = (uint64_t)json_integer_value(j);
    return true;
}

static pagoda_status parse_tensor(st_model *m, const char *key, json_t *val, const uint8_t *data, size_t data_size,
                                  int shard) {
    char b[96];
    const char *nm = show(key, b);
    if (!json_is_object(val)) return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': entry is not an object", nm);
    json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"),
           *jo = json_object_get(val, "data_offsets");
    if (!json_is_string(jd)) return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': missing or non-string \"dtype\"", nm);
    const st_dtype *dt = find_dtype_str(json_string_value(jd));
    if (!dt) {
        char b2[96];
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': unknown dtype '%s'", nm, show(json_string_value(jd), b2));
    }
    if (!json_is_array(js)) return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': missing \"shape\" array", nm);
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': shape has %zu dims (at most %d)", nm, nd, ST_MAX_DIMS);
    int64_t shape[ST_MAX_DIMS] = {0};
    uint64_t numel = 1;
    for (size_t d = 0; d < nd; d++) {
        uint64_t v;
        if (!json_u64(json_array_get(js, d), &v))
            return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': shape[%zu] is not a non-negative integer", nm, d);
        shape[d] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel))
            return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': element count overflows", nm);
    }
    uint64_t begin, end;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_u64(json_array_get(jo, 0), &begin) ||
        !json_u64(json_array_get(jo, 1), &end))
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': \"data_offsets\" must be [begin, end] (non-negative integers)",
                       nm);
    if (begin > end)
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': data_offsets [%llu, %llu] have begin > end", nm,
                       (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': data_offsets [%llu, %llu] extend past the data section (%zu bytes)",
                       nm, (unsigned long long)begin, (unsigned long long)end, data_size);
    uint64_t bits;
    if (__builtin_mul_overflow(numel, (uint64_t)dt->bits, &bits))
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': byte size overflows", nm);
    if (bits % 8)
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': %llu %s elements are not a whole number of bytes", nm,
                       (unsigned long long)numel, dt->name);
    if (bits / 8 != end - begin)
        return pg_fail(PAGODA_ERR_FORMAT,
                       "tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %s with %llu elements needs %llu", nm,
                       (unsigned long long)begin, (unsigned long long)end, (unsigned long long)(end - begin), dt->name,
                       (unsigned long long)numel, (unsigned long long)(bits / 8));
    if (!pg_grow((void **)&m->tensors, &m->cap, m->n + 1, sizeof(st_tensor)))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    if (!pg_grow((void **)&m->tensor_shard, &m->cap_ts, m->n + 1, sizeof(int)))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    st_tensor *t = &m->tensors[m->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(key))) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    m->tensor_shard[m->n++] = shard;
    t->dtype = dt->dtype;
    snprintf(t->dtype_str, sizeof t->dtype_str, "%s", dt->name);
    t->n_dims = (int)nd;
    memcpy(t->shape, shape, sizeof shape);
    t->size = (size_t)(end - begin);
    t->data = data + begin;
    return PAGODA_OK;
}

static int cmp_data(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    uintptr_t p = (uintptr_t)x->data, q = (uintptr_t)y->data;
    if (p != q) return p < q ? -1 : 1;
    return x->size < y->size ? -1 : x->size > y->size;
}

/* Parses one file's bytes, appending its tensors with the given shard index. */
static pagoda_status parse_file(st_model *m, const uint8_t *base, size_t size, int shard) {
    pagoda_status st = PAGODA_OK;
    json_t *root = NULL;
    int64_t first = m->n;
    uint64_t hlen;
    if (size < 8)
        return pg_fail(PAGODA_ERR_FORMAT, "file is %zu bytes, too short for the 8-byte header length", size);
    memcpy(&hlen, base, 8);
    if (hlen > ST_MAX_HEADER)
        return pg_fail(PAGODA_ERR_FORMAT, "header length %llu exceeds the limit of %u bytes", (unsigned long long)hlen,
                       ST_MAX_HEADER);
    if (hlen > size - 8)
        return pg_fail(PAGODA_ERR_FORMAT, "header length %llu extends past end of file (%zu bytes)",
                       (unsigned long long)hlen, size);
    json_error_t je;
    root = json_loadb((const char *)base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        st = pg_fail(PAGODA_ERR_FORMAT, "header JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        goto fail;
    }
    if (!json_is_object(root)) {
        st = pg_fail(PAGODA_ERR_FORMAT, "header JSON is not an object");
        goto fail;
    }
    const uint8_t *data = base + 8 + hlen;
    size_t data_size = size - 8 - (size_t)hlen;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) st = parse_metadata(m, val, shard == 0);
        else st = parse_tensor(m, key, val, data, data_size, shard);
        if (st) goto fail;
    }
    /* File order is data order: sequential reads stream, and overlaps are easy to spot. */
    if (m->n > first) qsort(m->tensors + first, (size_t)(m->n - first), sizeof(st_tensor), cmp_data);
    const st_tensor *prev = NULL;
    for (int64_t i = first; i < m->n; i++) {
        const st_tensor *t = &m->tensors[i];
        if (!t->size) continue;
        if (prev && (const uint8_t *)t->data < (const uint8_t *)prev->data + prev->size) {
            char b1[96], b2[96];
            st = pg_fail(PAGODA_ERR_FORMAT, "tensors '%s' and '%s' overlap in the data section", show(prev->name, b1),
                         show(t->name, b2));
            goto fail;
        }
        prev = t;
    }
fail:
    json_decref(root);
    return st;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

static const char *shard_label(const st_model *m, int i) {
    return m->shards[i].name ? m->shards[i].name : "<memory>";
}

static pagoda_status build_index(st_model *m) {
    if (m->n == 0) return PAGODA_OK;
    if (!(m->sorted = malloc((size_t)m->n * sizeof *m->sorted))) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < m->n; i++) m->sorted[i] = &m->tensors[i];
    qsort(m->sorted, (size_t)m->n, sizeof *m->sorted, cmp_name);
    for (int64_t i = 1; i < m->n; i++) {
        if (strcmp(m->sorted[i - 1]->name, m->sorted[i]->name) == 0) {
            char b[96];
            return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s' appears twice (shards '%s' and '%s')",
                           show(m->sorted[i]->name, b), shard_label(m, m->tensor_shard[m->sorted[i - 1] - m->tensors]),
                           shard_label(m, m->tensor_shard[m->sorted[i] - m->tensors]));
        }
    }
    return PAGODA_OK;
}

static pagoda_status add_shard(st_model *m, const char *name) {
    if (!pg_grow((void **)&m->shards, &m->cap_shards, m->n_shards + 1, sizeof(st_shard)))
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    st_shard *s = &m->shards[m->n_shards];
    memset(s, 0, sizeof *s);
    if (name && !(s->name = strdup(name))) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    m->n_shards++;
    return PAGODA_OK;
}

void st_close(st_model *m) {
    if (!m) return;
    for (int64_t i = 0; i < m->n_shards; i++) {
        if (m->shards[i].map) munmap(m->shards[i].map, m->shards[i].size);
        free(m->shards[i].name);
    }
    for (int64_t i = 0; i < m->n; i++) free(m->tensors[i].name);
    for (int64_t i = 0; i < m->n_meta; i++) {
        free(m->meta_key[i]);
        free(m->meta_val[i]);
    }
    free(m->meta_key);
    free(m->meta_val);
    free(m->shards);
    free(m->tensors);
    free(m->tensor_shard);
    free(m->sorted);
    free(m);
}

pagoda_status st_open_memory(const void *data, size_t size, st_model **out) {
    *out = NULL;
    if (!data && size) return pg_fail(PAGODA_ERR_INVALID, "st_open_memory: NULL data with size %zu", size);
    st_model *m = calloc(1, sizeof *m);
    if (!m) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    pagoda_status st;
    if ((st = add_shard(m, NULL)) || (st = parse_file(m, data ? data : (const void *)"", size, 0)) ||
        (st = build_index(m)))
        goto fail;
    *out = m;
    return PAGODA_OK;
fail:
    st_close(m);
    return st;
}

/* mmaps path as a new shard of m and parses it; display names the shard in messages. */
static pagoda_status load_file(st_model *m, const char *path, const char *display) {
    pagoda_status st;
    int fd;
    struct stat sb;
    if ((st = pg_open_regular(path, &fd, &sb))) return st;
    if ((st = add_shard(m, display))) goto fail;
    st_shard *s = &m->shards[m->n_shards - 1];
    if (sb.st_size > 0) {
        void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            st = pg_fail(PAGODA_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
            goto fail;
        }
        s->map = map;
        s->size = (size_t)sb.st_size;
    }
    if ((st = parse_file(m, s->map ? s->map : (const void *)"", s->size, (int)(m->n_shards - 1)))) {
        pg_error_prefix("%s: ", path);
        goto fail;
    }
fail:
    close(fd);
    return st;
}

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* A shard name from the index must stay inside the folder. */
static bool shard_name_ok(const char *s) {
    return *s && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static pagoda_status load_index(st_model *m, const char *dir, const char *index_path) {
    pagoda_status st = PAGODA_OK;
    json_t *root = NULL;
    char *text = NULL, *shard_path = NULL;
    size_t len;
    if ((st = pg_read_file(index_path, ST_MAX_INDEX, &text, &len))) return st;
    json_error_t je;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        st = pg_fail(PAGODA_ERR_FORMAT, "%s: bad JSON: %s (line %d, column %d)", index_path, je.text, je.line,
                     je.column);
        goto fail;
    }
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        st = pg_fail(PAGODA_ERR_FORMAT, "%s: missing \"weight_map\" object", index_path);
        goto fail;
    }
    const char *name;
    json_t *v;
    /* Validate every entry, then load each distinct shard once, in order of first mention. */
    json_object_foreach(wm, name, v) {
        char b[96], b2[96];
        if (!json_is_string(v)) {
            st = pg_fail(PAGODA_ERR_FORMAT, "%s: weight_map['%s'] is not a string", index_path, show(name, b));
            goto fail;
        }
        const char *sh = json_string_value(v);
        if (!shard_name_ok(sh)) {
            st = pg_fail(PAGODA_ERR_FORMAT, "%s: weight_map['%s']: shard '%s' is not a plain file name", index_path,
                         show(name, b), show(sh, b2));
            goto fail;
        }
        bool seen = false;
        for (int64_t i = 0; i < m->n_shards && !seen; i++) seen = strcmp(m->shards[i].name, sh) == 0;
        if (seen) continue;
        if (m->n_shards >= ST_MAX_SHARDS) {
            st = pg_fail(PAGODA_ERR_FORMAT, "%s: more than %d shards", index_path, ST_MAX_SHARDS);
            goto fail;
        }
        if (!(shard_path = path_join(dir, sh))) {
            st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
            goto fail;
        }
        if ((st = load_file(m, shard_path, sh))) {
            pg_error_prefix("shard '%s' of %s: ", show(sh, b2), index_path);
            goto fail;
        }
        free(shard_path);
        shard_path = NULL;
    }
    if (m->n_shards == 0) {
        st = pg_fail(PAGODA_ERR_FORMAT, "%s: \"weight_map\" is empty", index_path);
        goto fail;
    }
    if ((st = build_index(m))) {
        pg_error_prefix("%s: ", dir);
        goto fail;
    }
    json_object_foreach(wm, name, v) {
        const st_tensor *t = st_find(m, name);
        const char *sh = json_string_value(v);
        if (!t || strcmp(m->shards[m->tensor_shard[t - m->tensors]].name, sh) != 0) {
            char b[96], b2[96];
            st = pg_fail(PAGODA_ERR_FORMAT, "%s: tensor '%s' is mapped to shard '%s' but is not in it", index_path,
                         show(name, b), show(sh, b2));
            goto fail;
        }
    }
fail:
    free(text);
    free(shard_path);
    json_decref(root);
    return st;
}

pagoda_status st_open(const char *path, st_model **out) {
    *out = NULL;
    pagoda_status st;
    char *p1 = NULL, *p2 = NULL;
    st_model *m = calloc(1, sizeof *m);
    if (!m) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    struct stat sb;
    if (stat(path, &sb) != 0) {
        st = pg_fail(PAGODA_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
        p1 = path_join(path, "model.safetensors.index.json");
        p2 = path_join(path, "model.safetensors");
        if (!p1 || !p2) {
            st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
            goto fail;
        }
        if (access(p1, F_OK) == 0) {
            st = load_index(m, path, p1);
        } else if (access(p2, F_OK) == 0) {
            if (!(st = load_file(m, p2, "model.safetensors"))) st = build_index(m);
        } else {
            st = pg_fail(PAGODA_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json in this folder", path);
        }
    } else {
        const char *base = strrchr(path, '/');
        if (!(st = load_file(m, path, base ? base + 1 : path))) st = build_index(m);
    }
    if (st) goto fail;
    free(p1);
    free(p2);
    *out = m;
    return PAGODA_OK;
fail:
    free(p1);
    free(p2);
    st_close(m);
    return st;
}

int64_t st_n_tensors(const st_model *m) { return m->n; }

const st_tensor *st_tensor_at(const st_model *m, int64_t i) { return i >= 0 && i < m->n ? &m->tensors[i] : NULL; }

const st_tensor *st_find(const st_model *m, const char *name) {
    if (!m->sorted || !name) return NULL;
    st_tensor key = {.name = (char *)name};
    const st_tensor *kp = &key;
    const st_tensor **hit = bsearch(&kp, m->sorted, (size_t)m->n, sizeof *m->sorted, cmp_name);
    return hit ? *hit : NULL;
}

const char *st_metadata(const st_model *m, const char *key) {
    for (int64_t i = 0; key && i < m->n_meta; i++)
        if (strcmp(m->meta_key[i], key) == 0) return m->meta_val[i];
    return NULL;
}

/* ---- writer ---- */

pagoda_status st_write(const char *path, const st_write_tensor *tensors, int n) {
    pagoda_status st = PAGODA_OK;
    json_t *root = NULL;
    char *header = NULL;
    FILE *fp = NULL;
    size_t *sizes = NULL;
    int *order = NULL;
    if (!path || n < 0 || (n > 0 && !tensors)) return pg_fail(PAGODA_ERR_INVALID, "st_write: bad arguments");
    if (!(root = json_object()) || !(sizes = calloc((size_t)n + 1, sizeof *sizes)) ||
        !(order = calloc((size_t)n + 1, sizeof *order))) {
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        const st_write_tensor *t = &tensors[i];
        const char *nm = t->name ? t->name : "(null)";
        bool dup = false;
        for (int j = 0; t->name && j < i && !dup; j++) dup = tensors[j].name && !strcmp(tensors[j].name, t->name);
        if (!t->name || !*t->name || strcmp(t->name, "__metadata__") == 0 || dup) {
            st = pg_fail(PAGODA_ERR_INVALID, "st_write: tensor %d: name '%s' is empty, reserved or a duplicate", i, nm);
            goto fail;
        }
        const st_dtype *dt = find_dtype_id(t->dtype);
        if (!dt) {
            st = pg_fail(PAGODA_ERR_INVALID, "st_write: tensor '%s': dtype %d has no safetensors name", nm, t->dtype);
            goto fail;
        }
        if (t->n_dims < 0 || t->n_dims > ST_MAX_DIMS || (t->n_dims > 0 && !t->shape)) {
            st = pg_fail(PAGODA_ERR_INVALID, "st_write: tensor '%s': n_dims %d is not in 0..%d", nm, t->n_dims,
                         ST_MAX_DIMS);
            goto fail;
        }
        size_t bytes = (size_t)dt->bits / 8;
        bool ok = true;
        for (int d = 0; ok && d < t->n_dims; d++) ok = t->shape[d] >= 0 && pg_mul_size(bytes, (size_t)t->shape[d], &bytes);
        if (!ok || (bytes && !t->data)) {
            st = pg_fail(PAGODA_ERR_INVALID, "st_write: tensor '%s': bad shape, size overflow or NULL data", nm);
            goto fail;
        }
        sizes[i] = bytes;
    }
    /* Widest elements first, as the Python library does: with the 8-byte aligned data section every
     * tensor is then aligned to its element size, and the data stays contiguous (no gaps allowed). */
    int k = 0;
    for (int bits = 64; bits >= 8; bits /= 2)
        for (int i = 0; i < n; i++)
            if (find_dtype_id(tensors[i].dtype)->bits == bits) order[k++] = i;
    uint64_t offset = 0;
    for (k = 0; k < n; k++) {
        const st_write_tensor *t = &tensors[order[k]];
        json_t *shape = json_array();
        bool ok = shape != NULL;
        for (int d = 0; ok && d < t->n_dims; d++) ok = json_array_append_new(shape, json_integer(t->shape[d])) == 0;
        json_t *e = ok ? json_pack("{s:s, s:o, s:[I,I]}", "dtype", find_dtype_id(t->dtype)->name, "shape", shape,
                                   "data_offsets", (json_int_t)offset, (json_int_t)(offset + sizes[order[k]]))
                       : NULL;
        if (!ok) json_decref(shape);
        if (!e || json_object_set_new(root, t->name, e) != 0) {
            st = pg_fail(PAGODA_ERR_INVALID, "st_write: tensor '%s': cannot encode (name not UTF-8?)", t->name);
            goto fail;
        }
        if (__builtin_add_overflow(offset, sizes[order[k]], &offset)) {
            st = pg_fail(PAGODA_ERR_INVALID, "st_write: total size overflows");
            goto fail;
        }
    }
    if (!(header = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER))) {
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    /* Pad with spaces so the data section starts 8-byte aligned, as the Python library does. */
    size_t hl = strlen(header);
    uint64_t padded = (hl + 7) / 8 * 8;
    static const char spaces[8] = "        ";
    if (!(fp = fopen(path, "wb"))) {
        st = pg_fail(PAGODA_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        goto fail;
    }
    bool ok = fwrite(&padded, 8, 1, fp) == 1 && fwrite(header, 1, hl, fp) == hl &&
              fwrite(spaces, 1, padded - hl, fp) == padded - hl;
    for (k = 0; ok && k < n; k++)
        ok = !sizes[order[k]] || fwrite(tensors[order[k]].data, 1, sizes[order[k]], fp) == sizes[order[k]];
    int rc = fclose(fp);
    fp = NULL;
    if (!ok || rc != 0) {
        st = pg_fail(PAGODA_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        unlink(path);
        goto fail;
    }
fail:
    if (fp) fclose(fp);
    free(header);
    free(sizes);
    free(order);
    json_decref(root);
    return st;
}
