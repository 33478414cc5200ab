/* GGUF reader/writer tests: writer -> reader round trip, every class of bad file, real fixtures.
 * `test_gguf --dump FILE` prints a stable text dump instead (used by tests/python/test_gguf_vs_gguf_py.py). */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "core/dtype.h"
#include "format/gguf.h"
#include "test_util.h"

/* ---- a byte builder for hand-made (often hostile) files ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *v, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, v, n);
    b->n += n;
}
static void put_u8(buf *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_hdr(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}
static void put_kv_u32(buf *b, const char *key, uint32_t v) {
    put_str(b, key);
    put_u32(b, GGUF_TYPE_UINT32);
    put_u32(b, v);
}
static void put_tinfo(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) put_u64(b, ne[i]);
    put_u32(b, type);
    put_u64(b, off);
}
static void put_pad(buf *b, size_t align) {
    while (b->n % align) put_u8(b, 0);
}
static void put_zeros(buf *b, size_t n) {
    for (size_t i = 0; i < n; i++) put_u8(b, 0);
}

/* Opens b from memory and expects a FORMAT error whose message contains frag. */
static void expect_bad(const buf *b, const char *frag, const char *what) {
    gguf_file *f = (gguf_file *)1;
    pagoda_status st = gguf_open_memory(b->p, b->n, &f);
    CHECK(st == PAGODA_ERR_FORMAT, "%s: status %d, want FORMAT", what, st);
    CHECK(f == NULL, "%s: out not NULL on failure", what);
    CHECK(strstr(pagoda_last_error(), frag), "%s: message '%s' lacks '%s'", what, pagoda_last_error(), frag);
    gguf_close(f);
}

static char g_tmp[256];

/* ---- writer -> reader round trip ---- */

static const char *const k_strs[] = {"hello", "", "wörld ✓", "a\tb"};
static const uint8_t a_u8[] = {0, 1, 255};
static const int8_t a_i8[] = {-128, 0, 127};
static const uint16_t a_u16[] = {0, 65535};
static const int16_t a_i16[] = {-32768, 32767, 5};
static const uint32_t a_u32[] = {0, 4294967295u, 7};
static const int32_t a_i32[] = {-2147483647 - 1, 2147483647};
static const float a_f32[] = {1.5f, -0.25f, 1e30f};
static const uint8_t a_bool[] = {1, 0, 1, 1};
static const uint64_t a_u64[] = {UINT64_MAX, 0};
static const int64_t a_i64[] = {INT64_MIN, INT64_MAX, -1};
static const double a_f64[] = {3.141592653589793, -1e300};

static const struct {
    gguf_type t;
    const void *v;
    uint64_t n;
    size_t bytes;
} k_arrs[] = {
    {GGUF_TYPE_UINT8, a_u8, 3, sizeof a_u8},       {GGUF_TYPE_INT8, a_i8, 3, sizeof a_i8},
    {GGUF_TYPE_UINT16, a_u16, 2, sizeof a_u16},    {GGUF_TYPE_INT16, a_i16, 3, sizeof a_i16},
    {GGUF_TYPE_UINT32, a_u32, 3, sizeof a_u32},    {GGUF_TYPE_INT32, a_i32, 2, sizeof a_i32},
    {GGUF_TYPE_FLOAT32, a_f32, 3, sizeof a_f32},   {GGUF_TYPE_BOOL, a_bool, 4, sizeof a_bool},
    {GGUF_TYPE_UINT64, a_u64, 2, sizeof a_u64},    {GGUF_TYPE_INT64, a_i64, 3, sizeof a_i64},
    {GGUF_TYPE_FLOAT64, a_f64, 2, sizeof a_f64},
};

typedef struct {
    const char *name;
    int dtype, n_dims;
    int64_t ne[4];
} tspec;

static const tspec k_tensors[] = {
    {"tok.weight", PAGODA_DTYPE_F32, 2, {4, 3}},   {"blk.0.q4", PAGODA_DTYPE_Q4_0, 2, {64, 2}},
    {"norm", PAGODA_DTYPE_F16, 1, {7}},            {"four.d", PAGODA_DTYPE_I8, 4, {3, 2, 2, 2}},
    {"empty", PAGODA_DTYPE_F32, 2, {0, 5}},        {"k.q6", PAGODA_DTYPE_Q6_K, 1, {256}},
};
#define N_TENSORS (int)(sizeof k_tensors / sizeof k_tensors[0])

static size_t tspec_size(const tspec *t) {
    size_t s;
    dtype_row_size(t->dtype, t->ne[0], &s);
    for (int d = 1; d < t->n_dims; d++) s *= (size_t)t->ne[d];
    return s;
}

/* Writes the round-trip file; returns the writer status. */
static pagoda_status write_sample(const char *path, uint32_t alignment) {
    gguf_writer *w = gguf_writer_create();
    pagoda_status st = 0;
    char key[64];
    st |= gguf_writer_set_str(w, "general.architecture", "llama");
    if (alignment) st |= gguf_writer_set_u32(w, "general.alignment", alignment);
    st |= gguf_writer_set_u32(w, "s.u32", 4000000000u);
    st |= gguf_writer_set_i32(w, "s.i32", -123456);
    st |= gguf_writer_set_u64(w, "s.u64", UINT64_MAX - 1);
    st |= gguf_writer_set_f32(w, "s.f32", 1e-5f);
    st |= gguf_writer_set_bool(w, "s.bool", true);
    st |= gguf_writer_set_str(w, "s.str", "pagoda ✓");
    st |= gguf_writer_set_arr_str(w, "a.str", k_strs, 4);
    st |= gguf_writer_set_arr_str(w, "a.str_empty", NULL, 0);
    for (size_t i = 0; i < sizeof k_arrs / sizeof k_arrs[0]; i++) {
        snprintf(key, sizeof key, "a.%s", gguf_type_name(k_arrs[i].t));
        st |= gguf_writer_set_arr(w, key, k_arrs[i].t, k_arrs[i].v, k_arrs[i].n);
    }
    for (int i = 0; i < N_TENSORS; i++)
        st |= gguf_writer_add_tensor(w, k_tensors[i].name, k_tensors[i].dtype, k_tensors[i].n_dims, k_tensors[i].ne);
    if (st) goto done;
    if ((st = gguf_writer_begin(w, path))) goto done;
    for (int i = 0; i < N_TENSORS; i++) {
        size_t n = tspec_size(&k_tensors[i]);
        uint8_t *d = malloc(n + 1);
        for (size_t j = 0; j < n; j++) d[j] = (uint8_t)(j * 7 + (size_t)i);
        st = gguf_writer_write_tensor(w, d, n);
        free(d);
        if (st) goto done;
    }
    st = gguf_writer_end(w);
done:
    gguf_writer_destroy(w);
    return st;
}

static void test_round_trip(uint32_t alignment) {
    char path[512];
    snprintf(path, sizeof path, "%s/rt.gguf", g_tmp);
    pagoda_status st = write_sample(path, alignment);
    CHECK(st == PAGODA_OK, "write: %s", pagoda_last_error());
    gguf_file *f = NULL;
    st = gguf_open(path, &f);
    CHECK(st == PAGODA_OK, "open: %s", pagoda_last_error());
    if (!f) return;
    size_t al = alignment ? alignment : 32;
    CHECK(gguf_version(f) == 3, "version %u", gguf_version(f));
    CHECK(gguf_alignment(f) == al, "alignment %zu", gguf_alignment(f));
    CHECK(gguf_data_offset(f) % al == 0, "data offset %zu", gguf_data_offset(f));
    CHECK(gguf_n_kv(f) == 9 + 11 + (alignment ? 1 : 0), "n_kv %lld", (long long)gguf_n_kv(f));
    CHECK(gguf_n_tensors(f) == N_TENSORS, "n_tensors %lld", (long long)gguf_n_tensors(f));
    CHECK(gguf_kv_at(f, 0) && strcmp(gguf_kv_at(f, 0)->key, "general.architecture") == 0, "kv order");
    CHECK(gguf_kv_at(f, gguf_n_kv(f)) == NULL && gguf_kv_at(f, -1) == NULL, "kv_at out of range");

    /* scalars and typed getters */
    const char *s = gguf_get_str(f, "general.architecture");
    CHECK(s && strcmp(s, "llama") == 0, "arch");
    uint32_t u32 = 0;
    int64_t i64 = 0;
    float f32 = 0;
    bool b = false;
    CHECK(gguf_get_u32(f, "s.u32", &u32) && u32 == 4000000000u, "u32 %u", u32);
    CHECK(gguf_get_i64(f, "s.u32", &i64) && i64 == 4000000000LL, "u32 as i64");
    CHECK(gguf_get_i64(f, "s.i32", &i64) && i64 == -123456, "i32");
    CHECK(!gguf_get_u32(f, "s.i32", &u32), "negative i32 must not convert to u32");
    CHECK(!gguf_get_i64(f, "s.u64", &i64), "huge u64 must not convert to i64");
    CHECK(gguf_find_kv(f, "s.u64")->u64 == UINT64_MAX - 1, "u64 bits");
    CHECK(gguf_get_f32(f, "s.f32", &f32) && f32 == 1e-5f, "f32");
    CHECK(!gguf_get_f32(f, "s.u32", &f32), "u32 is not a float");
    CHECK(gguf_get_bool(f, "s.bool", &b) && b, "bool");
    CHECK(!gguf_get_bool(f, "s.u32", &b), "u32 is not a bool");
    CHECK(!gguf_get_i64(f, "s.bool", &i64), "bool is not an integer");
    const gguf_kv *kv = gguf_find_kv(f, "s.str");
    CHECK(kv && kv->type == GGUF_TYPE_STRING && kv->str_len == strlen("pagoda ✓") && !strcmp(kv->str, "pagoda ✓"), "str");
    CHECK(gguf_get_str(f, "s.u32") == NULL && gguf_get_str(f, "nope") == NULL, "get_str on non-string");
    CHECK(gguf_find_kv(f, "nope") == NULL && !gguf_get_u32(f, "nope", &u32), "missing key");

    /* arrays */
    kv = gguf_find_kv(f, "a.str");
    CHECK(kv && kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING && kv->arr_n == 4, "a.str");
    for (int i = 0; kv && i < 4; i++)
        CHECK(kv->arr_str_len[i] == strlen(k_strs[i]) && !strcmp(kv->arr_str[i], k_strs[i]), "a.str[%d]", i);
    kv = gguf_find_kv(f, "a.str_empty");
    CHECK(kv && kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING && kv->arr_n == 0, "empty arr");
    for (size_t i = 0; i < sizeof k_arrs / sizeof k_arrs[0]; i++) {
        char key[64];
        snprintf(key, sizeof key, "a.%s", gguf_type_name(k_arrs[i].t));
        kv = gguf_find_kv(f, key);
        CHECK(kv && kv->type == GGUF_TYPE_ARRAY && kv->arr_type == k_arrs[i].t && kv->arr_n == k_arrs[i].n, "%s", key);
        if (kv) CHECK(memcmp(kv->arr_data, k_arrs[i].v, k_arrs[i].bytes) == 0, "%s contents", key);
    }

    /* tensors */
    for (int i = 0; i < N_TENSORS; i++) {
        const tspec *e = &k_tensors[i];
        const gguf_tensor *t = gguf_tensor_at(f, i);
        CHECK(t && gguf_find_tensor(f, e->name) == t, "tensor %s", e->name);
        if (!t) continue;
        CHECK(t->dtype == e->dtype && t->n_dims == e->n_dims, "%s dtype/dims", e->name);
        for (int d = 0; d < 4; d++) CHECK(t->ne[d] == (d < e->n_dims ? e->ne[d] : 1), "%s ne[%d]", e->name, d);
        CHECK(t->size == tspec_size(e), "%s size %zu", e->name, t->size);
        CHECK(t->offset % al == 0, "%s offset %llu", e->name, (unsigned long long)t->offset);
        const uint8_t *d = t->data;
        CHECK(d == (const uint8_t *)gguf_tensor_at(f, 0)->data - gguf_tensor_at(f, 0)->offset + t->offset, "%s data",
              e->name);
        bool ok = true;
        for (size_t j = 0; j < t->size; j++) ok = ok && d[j] == (uint8_t)(j * 7 + (size_t)i);
        CHECK(ok, "%s contents", e->name);
    }
    CHECK(gguf_find_tensor(f, "nope") == NULL && gguf_tensor_at(f, N_TENSORS) == NULL, "missing tensor");
    gguf_close(f);

    /* every byte prefix of the valid file is rejected until all tensor data is present */
    FILE *fp = fopen(path, "rb");
    buf whole = {0};
    uint8_t tmp[4096];
    size_t k;
    while ((k = fread(tmp, 1, sizeof tmp, fp)) > 0) put(&whole, tmp, k);
    fclose(fp);
    CHECK(gguf_open_memory(whole.p, whole.n, &f) == PAGODA_OK, "memory open");
    size_t need = 0;
    for (int64_t i = 0; f && i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (gguf_data_offset(f) + t->offset + t->size > need) need = gguf_data_offset(f) + t->offset + t->size;
    }
    gguf_close(f);
    for (size_t n = 0; n < whole.n; n++) {
        /* a fresh copy of exactly n bytes, so ASan catches any read past the end */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, whole.p, n);
        f = NULL;
        st = gguf_open_memory(cut, n, &f);
        if (n < need) {
            CHECK(st == PAGODA_ERR_FORMAT && f == NULL, "prefix %zu of %zu accepted", n, whole.n);
            CHECK(*pagoda_last_error(), "prefix %zu: empty message", n);
        } else {
            CHECK(st == PAGODA_OK, "prefix %zu (only padding cut): %s", n, pagoda_last_error());
        }
        gguf_close(f);
        free(cut);
    }
    free(whole.p);
    unlink(path);
}

static void test_writer_errors(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/bad.gguf", g_tmp);
    gguf_writer *w = gguf_writer_create();
    int64_t ne[2] = {33, 2};
    CHECK(gguf_writer_set_u32(w, "k", 1) == PAGODA_OK, "set");
    CHECK(gguf_writer_set_f32(w, "k", 1) == PAGODA_ERR_INVALID, "duplicate key");
    CHECK(gguf_writer_set_u32(w, "general.alignment", 48) == PAGODA_ERR_INVALID, "bad alignment");
    CHECK(gguf_writer_set_arr(w, "a", GGUF_TYPE_STRING, "x", 1) == PAGODA_ERR_INVALID, "string via set_arr");
    CHECK(gguf_writer_add_tensor(w, "t", PAGODA_DTYPE_Q4_0, 2, ne) == PAGODA_ERR_INVALID, "ne[0] not a block multiple");
    CHECK(gguf_writer_add_tensor(w, "t", 5, 2, ne) == PAGODA_ERR_INVALID, "unknown dtype");
    CHECK(gguf_writer_add_tensor(w, "t", PAGODA_DTYPE_F32, 5, ne) == PAGODA_ERR_INVALID, "5 dims");
    CHECK(gguf_writer_add_tensor(w, "t", PAGODA_DTYPE_F32, 2, ne) == PAGODA_OK, "add");
    CHECK(gguf_writer_add_tensor(w, "t", PAGODA_DTYPE_F32, 2, ne) == PAGODA_ERR_INVALID, "duplicate tensor");
    CHECK(gguf_writer_write_tensor(w, "x", 1) == PAGODA_ERR_INVALID, "write before begin");
    CHECK(gguf_writer_begin(w, path) == PAGODA_OK, "begin: %s", pagoda_last_error());
    CHECK(gguf_writer_set_u32(w, "late", 1) == PAGODA_ERR_INVALID, "key after begin");
    float data[66] = {0};
    CHECK(gguf_writer_write_tensor(w, data, 4) == PAGODA_ERR_INVALID, "wrong size");
    CHECK(gguf_writer_end(w) == PAGODA_ERR_INVALID, "end with a tensor missing");
    CHECK(strstr(pagoda_last_error(), "0 of 1"), "msg: %s", pagoda_last_error());
    gguf_writer_destroy(w); /* unfinished: removes the partial file */
    CHECK(access(path, F_OK) != 0, "partial file left behind");
    gguf_writer_destroy(NULL);
    gguf_close(NULL);
}

/* gguf_writer_remove_key: the remaining keys keep their order and values, remove + set moves a key
 * to the end (as llama-quantize rewrites general.file_type), and removing general.alignment
 * restores the default alignment. */
static void test_writer_remove_key(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/rm.gguf", g_tmp);
    gguf_writer *w = gguf_writer_create();
    CHECK(gguf_writer_set_str(w, "a", "first") == PAGODA_OK, "set a");
    CHECK(gguf_writer_set_u32(w, "general.alignment", 64) == PAGODA_OK, "set alignment");
    CHECK(gguf_writer_set_u32(w, "general.file_type", 0) == PAGODA_OK, "set file_type");
    const char *arr[2] = {"x", "yz"};
    CHECK(gguf_writer_set_arr_str(w, "c", arr, 2) == PAGODA_OK, "set c");
    CHECK(!gguf_writer_remove_key(w, "absent"), "absent key removed");
    CHECK(gguf_writer_remove_key(w, "general.file_type"), "remove file_type");
    CHECK(!gguf_writer_remove_key(w, "general.file_type"), "removed twice");
    CHECK(gguf_writer_set_u32(w, "general.file_type", 7) == PAGODA_OK, "set file_type again");
    CHECK(gguf_writer_remove_key(w, "general.alignment"), "remove alignment");
    CHECK(gguf_writer_remove_key(w, "a"), "remove the first key");
    CHECK(gguf_writer_set_str(w, "a", "second") == PAGODA_OK, "set a again");
    int64_t ne[2] = {8, 2};
    float data[16];
    for (int i = 0; i < 16; i++) data[i] = (float)i;
    CHECK(gguf_writer_add_tensor(w, "t", PAGODA_DTYPE_F32, 2, ne) == PAGODA_OK, "add");
    CHECK(gguf_writer_begin(w, path) == PAGODA_OK, "begin: %s", pagoda_last_error());
    CHECK(!gguf_writer_remove_key(w, "c"), "key removed after begin");
    CHECK(gguf_writer_write_tensor(w, data, sizeof data) == PAGODA_OK, "write");
    CHECK(gguf_writer_end(w) == PAGODA_OK, "end: %s", pagoda_last_error());
    gguf_writer_destroy(w);
    gguf_file *f = NULL;
    CHECK(gguf_open(path, &f) == PAGODA_OK, "open: %s", pagoda_last_error());
    if (!f) return;
    CHECK(gguf_n_kv(f) == 3, "n_kv %lld", (long long)gguf_n_kv(f));
    const char *want[3] = {"c", "general.file_type", "a"};
    for (int i = 0; i < 3 && i < gguf_n_kv(f); i++)
        CHECK(strcmp(gguf_kv_at(f, i)->key, want[i]) == 0, "key %d is %s", i, gguf_kv_at(f, i)->key);
    uint32_t ft = 0;
    CHECK(gguf_get_u32(f, "general.file_type", &ft) && ft == 7, "file_type %u", ft);
    CHECK(gguf_get_str(f, "a") && strcmp(gguf_get_str(f, "a"), "second") == 0, "a");
    const gguf_kv *c = gguf_find_kv(f, "c");
    CHECK(c && c->arr_n == 2 && strcmp(c->arr_str[1], "yz") == 0, "c");
    CHECK(gguf_alignment(f) == 32, "alignment %zu", gguf_alignment(f));
    CHECK(gguf_data_offset(f) % 32 == 0, "data offset");
    const gguf_tensor *t = gguf_find_tensor(f, "t");
    CHECK(t && t->size == sizeof data && memcmp(t->data, data, sizeof data) == 0, "tensor data");
    gguf_close(f);
    unlink(path);
}

/* ---- hand-made files ---- */

static void test_all_scalar_types(void) {
    buf b = {0};
    put_hdr(&b, 2, 0, 13);
    const uint8_t raw[8] = {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}; /* -2 in every signed width */
    static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    for (uint32_t t = 0; t <= GGUF_TYPE_FLOAT64; t++) {
        char key[32];
        snprintf(key, sizeof key, "t.%s", gguf_type_name((gguf_type)t));
        put_str(&b, key);
        put_u32(&b, t);
        if (t == GGUF_TYPE_STRING) put_str(&b, "s");
        else if (t == GGUF_TYPE_ARRAY) { put_u32(&b, GGUF_TYPE_UINT8); put_u64(&b, 2); put_u8(&b, 9); put_u8(&b, 8); }
        else if (t == GGUF_TYPE_FLOAT32) { float v = 0.5f; put(&b, &v, 4); }
        else if (t == GGUF_TYPE_FLOAT64) { double v = -0.25; put(&b, &v, 8); }
        else if (t == GGUF_TYPE_BOOL) put_u8(&b, 1);
        else put(&b, raw, sz[t]);
    }
    gguf_file *f = NULL;
    CHECK(gguf_open_memory(b.p, b.n, &f) == PAGODA_OK, "scalars: %s", pagoda_last_error());
    if (f) {
        CHECK(gguf_version(f) == 2 && gguf_n_kv(f) == 13 && gguf_n_tensors(f) == 0, "counts");
        const gguf_kv *kv;
        CHECK((kv = gguf_find_kv(f, "t.uint8")) && kv->i64 == 0xfe && kv->u64 == 0xfe, "u8");
        CHECK((kv = gguf_find_kv(f, "t.int8")) && kv->i64 == -2, "i8");
        CHECK((kv = gguf_find_kv(f, "t.uint16")) && kv->i64 == 0xfffe, "u16");
        CHECK((kv = gguf_find_kv(f, "t.int16")) && kv->i64 == -2, "i16");
        CHECK((kv = gguf_find_kv(f, "t.uint32")) && kv->i64 == 0xfffffffe, "u32");
        CHECK((kv = gguf_find_kv(f, "t.int32")) && kv->i64 == -2, "i32");
        CHECK((kv = gguf_find_kv(f, "t.uint64")) && kv->u64 == 0xfffffffffffffffeULL, "u64");
        CHECK((kv = gguf_find_kv(f, "t.int64")) && kv->i64 == -2, "i64");
        CHECK((kv = gguf_find_kv(f, "t.float32")) && kv->f64 == 0.5, "f32");
        CHECK((kv = gguf_find_kv(f, "t.float64")) && kv->f64 == -0.25, "f64");
        CHECK((kv = gguf_find_kv(f, "t.bool")) && kv->i64 == 1, "bool");
        CHECK((kv = gguf_find_kv(f, "t.string")) && !strcmp(kv->str, "s"), "str");
        CHECK((kv = gguf_find_kv(f, "t.array")) && kv->arr_n == 2 && ((const uint8_t *)kv->arr_data)[1] == 8, "arr");
        int64_t v;
        uint32_t u;
        CHECK(gguf_get_i64(f, "t.int8", &v) && v == -2, "get i8");
        CHECK(!gguf_get_u32(f, "t.int16", &u), "negative to u32");
        CHECK(gguf_get_u32(f, "t.uint16", &u) && u == 0xfffe, "u16 to u32");
        CHECK(!gguf_get_u32(f, "t.uint64", &u), "big u64 to u32");
        float fl;
        CHECK(gguf_get_f32(f, "t.float64", &fl) && fl == -0.25f, "f64 to f32");
    }
    gguf_close(f);
    free(b.p);
}

/* A valid file with one f32 [8] tensor, used as the base for single-field corruptions. */
static void one_tensor(buf *b, uint32_t type, uint64_t ne0, uint64_t offset) {
    put_hdr(b, 3, 1, 1);
    put_kv_u32(b, "general.alignment", 32);
    put_tinfo(b, "w", 1, &ne0, type, offset);
    put_pad(b, 32);
    put_zeros(b, 32);
}

static void test_bad_files(void) {
    buf b = {0};
    gguf_file *f = NULL;

    one_tensor(&b, PAGODA_DTYPE_F32, 8, 0);
    CHECK(gguf_open_memory(b.p, b.n, &f) == PAGODA_OK, "base file: %s", pagoda_last_error());
    gguf_close(f);
    b.p[0] = 'X';
    expect_bad(&b, "bad magic", "magic");
    b.n = 0;

    put_hdr(&b, 1, 0, 0);
    expect_bad(&b, "unsupported version 1", "v1");
    b.n = 0;
    put_hdr(&b, 4, 0, 0);
    expect_bad(&b, "unsupported version 4", "v4");
    b.n = 0;
    put_hdr(&b, 0x03000000, 0, 0);
    expect_bad(&b, "big-endian", "byte-swapped");
    b.n = 0;

    put_hdr(&b, 3, 1ull << 60, 0);
    put_zeros(&b, 64);
    expect_bad(&b, "n_tensors", "absurd n_tensors");
    b.n = 0;
    put_hdr(&b, 3, 0, UINT64_MAX);
    put_zeros(&b, 64);
    expect_bad(&b, "n_kv", "absurd n_kv");
    b.n = 0;
    put_hdr(&b, 3, 3, 4); /* each alone fits, together they do not */
    put_zeros(&b, 3 * 32 + 2 * 13);
    expect_bad(&b, "cannot fit", "n_tensors + n_kv");
    b.n = 0;

    /* strings */
    put_hdr(&b, 3, 0, 1);
    put_u64(&b, UINT64_MAX - 3);
    put_zeros(&b, 16);
    expect_bad(&b, "exceeds the limit", "key length overflow");
    b.n = 0;
    put_hdr(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, (1ull << 30) + 1);
    put_zeros(&b, 16);
    expect_bad(&b, "exceeds the limit", "string length cap");
    b.n = 0;
    put_hdr(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, 100);
    put_zeros(&b, 16);
    expect_bad(&b, "truncated", "string past end");
    b.n = 0;
    put_hdr(&b, 3, 0, 1);
    put_u64(&b, 0);
    put_u32(&b, GGUF_TYPE_UINT8);
    put_u8(&b, 0);
    expect_bad(&b, "is empty", "empty key");
    b.n = 0;
    put_hdr(&b, 3, 0, 1);
    put_u64(&b, 3);
    put(&b, "a\0b", 3);
    put_u32(&b, GGUF_TYPE_UINT8);
    put_u8(&b, 0);
    expect_bad(&b, "NUL", "NUL in key");
    b.n = 0;

    /* values */
    put_hdr(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, 13);
    put_zeros(&b, 8);
    expect_bad(&b, "'k': unknown value type 13", "bad value type");
    b.n = 0;
    put_hdr(&b, 3, 0, 1);
    put_str(&b, "nest");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u64(&b, 1);
    put_zeros(&b, 16);
    expect_bad(&b, "'nest': arrays of arrays", "nested array");
    b.n = 0;
    put_hdr(&b, 3, 0, 1);
    put_str(&b, "big");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_UINT32);
    put_u64(&b, 1ull << 62);
    put_zeros(&b, 16);
    expect_bad(&b, "'big': array of 4611686018427387904 uint32", "huge numeric array");
    b.n = 0;
    put_hdr(&b, 3, 0, 1);
    put_str(&b, "toks");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, 2);
    put_str(&b, "ok");
    put_u64(&b, 1ull << 40);
    expect_bad(&b, "element 1 of 2", "bad string in array");
    b.n = 0;
    put_hdr(&b, 3, 0, 2);
    put_kv_u32(&b, "dup", 1);
    put_kv_u32(&b, "dup", 2);
    expect_bad(&b, "duplicate key 'dup'", "duplicate key");
    b.n = 0;

    /* alignment */
    put_hdr(&b, 3, 0, 1);
    put_kv_u32(&b, "general.alignment", 48);
    expect_bad(&b, "not a non-zero power of two", "alignment 48");
    b.n = 0;
    put_hdr(&b, 3, 0, 1);
    put_kv_u32(&b, "general.alignment", 0);
    expect_bad(&b, "not a non-zero power of two", "alignment 0");
    b.n = 0;
    put_hdr(&b, 3, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, GGUF_TYPE_STRING);
    put_str(&b, "32");
    expect_bad(&b, "expected an unsigned integer", "alignment as string");
    b.n = 0;
    put_hdr(&b, 3, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, GGUF_TYPE_INT32);
    put_u32(&b, (uint32_t)-32);
    expect_bad(&b, "power of two", "negative alignment");
    b.n = 0;

    /* tensors */
    one_tensor(&b, PAGODA_DTYPE_F32, 8, 64);
    expect_bad(&b, "tensor 'w': data [offset 160, size 32] extends past end of file (128 bytes)", "out of bounds");
    b.n = 0;
    one_tensor(&b, PAGODA_DTYPE_F32, 9, 0);
    expect_bad(&b, "tensor 'w': data", "one byte too many");
    b.n = 0;
    one_tensor(&b, PAGODA_DTYPE_F32, 8, UINT64_MAX - 31);
    expect_bad(&b, "extends past end of file", "offset wraps");
    b.n = 0;
    one_tensor(&b, PAGODA_DTYPE_F32, 8, 16);
    expect_bad(&b, "offset 16 is not a multiple of the alignment 32", "misaligned offset");
    b.n = 0;
    one_tensor(&b, 4, 8, 0);
    expect_bad(&b, "tensor 'w': unknown dtype 4", "removed dtype");
    b.n = 0;
    one_tensor(&b, 1000, 8, 0);
    expect_bad(&b, "unknown dtype 1000", "unknown dtype");
    b.n = 0;
    one_tensor(&b, PAGODA_DTYPE_Q4_0, 33, 0);
    expect_bad(&b, "ne[0] = 33 is not a multiple of the q4_0 block size 32", "ne[0] block");
    b.n = 0;
    one_tensor(&b, PAGODA_DTYPE_F32, 1ull << 63, 0);
    expect_bad(&b, "ne[0] = 9223372036854775808 is out of range", "ne > INT64_MAX");
    b.n = 0;
    {
        uint64_t ne[5] = {1ull << 32, 1ull << 32, 4, 1, 1};
        put_hdr(&b, 3, 1, 0);
        put_tinfo(&b, "big", 3, ne, PAGODA_DTYPE_F32, 0);
        put_zeros(&b, 64);
        expect_bad(&b, "tensor 'big': element count overflows", "ne product overflow");
        b.n = 0;
        ne[0] = 1ull << 31;
        ne[1] = 1ull << 31;
        put_hdr(&b, 3, 1, 0);
        put_tinfo(&b, "big", 2, ne, PAGODA_DTYPE_F64, 0);
        put_zeros(&b, 64);
        expect_bad(&b, "tensor 'big': byte size overflows", "byte size overflow");
        b.n = 0;
        put_hdr(&b, 3, 1, 0);
        put_tinfo(&b, "t0", 5, ne, PAGODA_DTYPE_F32, 0);
        put_zeros(&b, 64);
        expect_bad(&b, "tensor 't0': n_dims 5 is not in 1..4", "5 dims");
        b.n = 0;
        put_hdr(&b, 3, 1, 0);
        put_tinfo(&b, "t0", 0, ne, PAGODA_DTYPE_F32, 0);
        put_zeros(&b, 64);
        expect_bad(&b, "n_dims 0", "0 dims");
        b.n = 0;
        ne[0] = 8;
        put_hdr(&b, 3, 2, 0);
        put_tinfo(&b, "same", 1, ne, PAGODA_DTYPE_F32, 0);
        put_tinfo(&b, "same", 1, ne, PAGODA_DTYPE_F32, 32);
        put_pad(&b, 32);
        put_zeros(&b, 64);
        expect_bad(&b, "duplicate tensor name 'same'", "duplicate tensor");
        b.n = 0;
        put_hdr(&b, 3, 1, 0);
        put_tinfo(&b, "", 1, ne, PAGODA_DTYPE_F32, 0);
        put_pad(&b, 32);
        put_zeros(&b, 32);
        expect_bad(&b, "is empty", "empty tensor name");
        b.n = 0;
        /* a zero-element tensor is fine, even at the very end */
        ne[0] = 0;
        put_hdr(&b, 3, 1, 0);
        put_tinfo(&b, "none", 1, ne, PAGODA_DTYPE_Q4_K, 0);
        put_pad(&b, 32);
        CHECK(gguf_open_memory(b.p, b.n, &f) == PAGODA_OK, "empty tensor: %s", pagoda_last_error());
        CHECK(f && gguf_tensor_at(f, 0)->size == 0, "empty tensor size");
        gguf_close(f);
        b.n = 0;
    }

    /* vocab-only files may end before the padded data section */
    put_hdr(&b, 3, 0, 1);
    put_kv_u32(&b, "x", 1);
    CHECK(gguf_open_memory(b.p, b.n, &f) == PAGODA_OK, "no tensors, no padding: %s", pagoda_last_error());
    CHECK(f && gguf_data_offset(f) == b.n, "clamped data offset");
    gguf_close(f);
    free(b.p);

    CHECK(gguf_open_memory(NULL, 0, &f) == PAGODA_ERR_FORMAT, "empty buffer");
    CHECK(gguf_open("/nonexistent/x.gguf", &f) == PAGODA_ERR_IO && f == NULL, "missing file");
    CHECK(strstr(pagoda_last_error(), "No such file"), "strerror: %s", pagoda_last_error());
    CHECK(gguf_open(g_tmp, &f) == PAGODA_ERR_IO, "directory");
    char path[512];
    snprintf(path, sizeof path, "%s/empty.gguf", g_tmp);
    fclose(fopen(path, "wb"));
    CHECK(gguf_open(path, &f) == PAGODA_ERR_FORMAT, "empty file");
    CHECK(strstr(pagoda_last_error(), path) && strstr(pagoda_last_error(), "truncated"), "msg: %s",
          pagoda_last_error());
    unlink(path);
}

/* ---- real fixtures ---- */

static void test_fixture_model(const char *path, int64_t want_tensors) {
    gguf_file *f = NULL;
    pagoda_status st = gguf_open(path, &f);
    CHECK(st == PAGODA_OK, "%s: %s", path, pagoda_last_error());
    if (!f) return;
    CHECK(gguf_n_tensors(f) == want_tensors, "%s: %lld tensors", path, (long long)gguf_n_tensors(f));
    const char *arch = gguf_get_str(f, "general.architecture");
    CHECK(arch && !strcmp(arch, "llama"), "%s: arch", path);
    uint32_t n_layer = 0, n_embd = 0;
    float eps = 0;
    CHECK(gguf_get_u32(f, "llama.block_count", &n_layer) && n_layer == 2, "%s: block_count", path);
    CHECK(gguf_get_u32(f, "llama.embedding_length", &n_embd) && n_embd == 256, "%s: n_embd", path);
    CHECK(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &eps) && fabsf(eps - 1e-5f) < 1e-9f, "eps");
    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    CHECK(t && t->n_dims == 2 && t->ne[0] == 256 && t->ne[1] == 512, "%s: token_embd", path);
    t = gguf_find_tensor(f, "blk.1.ffn_down.weight");
    CHECK(t && t->ne[0] == 512 && t->ne[1] == 256, "%s: ffn_down", path);
    t = gguf_find_tensor(f, "output_norm.weight");
    CHECK(t && t->dtype == PAGODA_DTYPE_F32 && t->n_dims == 1 && t->size == 1024, "%s: output_norm", path);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        t = gguf_tensor_at(f, i);
        const uint8_t *base = (const uint8_t *)t->data - t->offset - gguf_data_offset(f);
        CHECK((const uint8_t *)t->data + t->size <= base + gguf_file_size(f), "%s: bounds", t->name);
    }
    gguf_close(f);
}

static void test_fixture_vocab(const char *path) {
    gguf_file *f = NULL;
    pagoda_status st = gguf_open(path, &f);
    CHECK(st == PAGODA_OK, "%s: %s", path, pagoda_last_error());
    if (!f) return;
    CHECK(gguf_n_tensors(f) == 0, "%s: vocab-only", path);
    const gguf_kv *toks = gguf_find_kv(f, "tokenizer.ggml.tokens");
    CHECK(toks && toks->type == GGUF_TYPE_ARRAY && toks->arr_type == GGUF_TYPE_STRING && toks->arr_n > 1000,
          "%s: tokens", path);
    const gguf_kv *types = gguf_find_kv(f, "tokenizer.ggml.token_type");
    CHECK(types && toks && types->arr_n == toks->arr_n && types->arr_type == GGUF_TYPE_INT32, "%s: token_type", path);
    CHECK(gguf_get_str(f, "tokenizer.ggml.model") != NULL, "%s: tokenizer model", path);
    if (strstr(path, "gpt-2")) {
        CHECK(toks && toks->arr_n == 50257, "gpt-2 vocab size");
        CHECK(toks && !strcmp(toks->arr_str[0], "!"), "gpt-2 token 0");
        const gguf_kv *m = gguf_find_kv(f, "tokenizer.ggml.merges");
        CHECK(m && m->arr_n == 50000 && !strcmp(m->arr_str[0], "Ġ t"), "gpt-2 merges");
    }
    gguf_close(f);
}

static void test_fixtures(void) {
    const char *shared = test_shared_dir();
    if (!shared) {
        fprintf(stderr, "note: shared fixtures absent, skipping fixture checks\n");
        return;
    }
    char dir[1024], path[2048];
    int n_models = 0, n_vocab = 0;
    snprintf(dir, sizeof dir, "%s/fixtures/gguf", shared);
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 5, ".gguf")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        /* 2 layers x 9 + token_embd, output_norm, output (README: 16 of them are 2-D); tied lacks output */
        test_fixture_model(path, strstr(e->d_name, "tied") ? 20 : 21);
        n_models++;
    }
    if (d) closedir(d);
    snprintf(dir, sizeof dir, "%s/fixtures/tokenizers", shared);
    d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 5, ".gguf")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        test_fixture_vocab(path);
        n_vocab++;
    }
    if (d) closedir(d);
    CHECK(n_models >= 7 && n_vocab >= 3, "found %d model and %d vocab fixtures", n_models, n_vocab);
}

/* ---- --dump: a stable text form compared against gguf-py ---- */

static uint32_t crc32_bytes(uint32_t crc, const void *p, size_t n) {
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    const uint8_t *b = p;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ b[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static void print_hex(const char *s, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) printf("%02x", (unsigned char)s[i]);
}

static int dump(const char *path) {
    gguf_file *f = NULL;
    if (gguf_open(path, &f)) {
        fprintf(stderr, "error: %s\n", pagoda_last_error());
        return 1;
    }
    static const size_t esz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    printf("version %u\nalignment %zu\ndata_offset %zu\nn_kv %lld\nn_tensors %lld\n", gguf_version(f),
           gguf_alignment(f), gguf_data_offset(f), (long long)gguf_n_kv(f), (long long)gguf_n_tensors(f));
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        printf("kv\t%s\t%s\t", kv->key, gguf_type_name(kv->type));
        switch (kv->type) {
        case GGUF_TYPE_STRING: print_hex(kv->str, kv->str_len); break;
        case GGUF_TYPE_FLOAT32: case GGUF_TYPE_FLOAT64: printf("%.17g", kv->f64); break;
        case GGUF_TYPE_UINT64: printf("%llu", (unsigned long long)kv->u64); break;
        case GGUF_TYPE_ARRAY: {
            uint32_t crc = 0;
            if (kv->arr_type == GGUF_TYPE_STRING) {
                for (uint64_t j = 0; j < kv->arr_n; j++) {
                    crc = crc32_bytes(crc, &kv->arr_str_len[j], 8);
                    crc = crc32_bytes(crc, kv->arr_str[j], kv->arr_str_len[j]);
                }
            } else {
                crc = crc32_bytes(crc, kv->arr_data, kv->arr_n * esz[kv->arr_type]);
            }
            printf("%s\t%llu\t%08x", gguf_type_name(kv->arr_type), (unsigned long long)kv->arr_n, crc);
            break;
        }
        default: printf("%lld", (long long)kv->i64); break;
        }
        printf("\n");
    }
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        printf("tensor\t%s\t%d\t%d\t", t->name, t->dtype, t->n_dims);
        for (int d = 0; d < t->n_dims; d++) printf("%s%lld", d ? "," : "", (long long)t->ne[d]);
        printf("\t%llu\t%zu\t%08x\n", (unsigned long long)t->offset, t->size, crc32_bytes(0, t->data, t->size));
    }
    gguf_close(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--dump") == 0) return dump(argv[2]);
    if (argc != 1) {
        fprintf(stderr, "usage: %s [--dump FILE]\n", argv[0]);
        return 2;
    }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/pagoda_test_gguf_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip(0);
    test_round_trip(64);
    test_writer_errors();
    test_writer_remove_key();
    test_all_scalar_types();
    test_bad_files();
    test_fixtures();
    rmdir(g_tmp);
    TEST_DONE();
}
