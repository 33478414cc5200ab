/* safetensors reader/writer tests: st_write -> st_open round trip, bad headers and offsets,
 * sharded folders (index JSON), and the real Hugging Face fixtures. */
#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/safetensors.h"
#include "test_util.h"

static char g_tmp[256];

/* A file image: 8-byte length, the JSON as given, then data_size bytes of data. */
static uint8_t *make(const char *json, size_t data_size, size_t *n) {
    size_t hl = strlen(json);
    *n = 8 + hl + data_size;
    uint8_t *p = calloc(1, *n);
    uint64_t h = hl;
    memcpy(p, &h, 8);
    memcpy(p + 8, json, hl);
    for (size_t i = 0; i < data_size; i++) p[8 + hl + i] = (uint8_t)i;
    return p;
}

static void expect_bad_json(const char *json, size_t data_size, const char *frag) {
    size_t n;
    uint8_t *p = make(json, data_size, &n);
    st_model *m = (st_model *)1;
    pagoda_status st = st_open_memory(p, n, &m);
    CHECK(st == PAGODA_ERR_FORMAT && m == NULL, "%s: status %d", json, st);
    CHECK(strstr(pagoda_last_error(), frag), "%s: message '%s' lacks '%s'", json, pagoda_last_error(), frag);
    st_close(m);
    free(p);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(*n + 1);
    if (fread(p, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return p;
}

/* ---- round trip ---- */

static void test_round_trip(void) {
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[4] = {0x3c00, 0x4000, 0xbc00, 0};
    uint16_t bf[4] = {0x3f80, 0x4000, 0xbf80, 0x7f80};
    int32_t i32[3] = {-1, 0, 7};
    int64_t i64 = -42;
    double f64[2] = {0.5, -1e300};
    int16_t i16[2] = {-5, 300};
    const int64_t s_a[] = {2, 3}, s_h[] = {4}, s_bf[] = {2, 2}, s_i32[] = {3}, s_e[] = {0, 7};
    const int64_t s_f64[] = {1, 1, 1, 1, 1, 1, 1, 2}, s_i16[] = {2};
    const st_write_tensor ts[] = {
        {"model.a", PAGODA_DTYPE_F32, 2, s_a, a},       {"h", PAGODA_DTYPE_F16, 1, s_h, h},
        {"bf", PAGODA_DTYPE_BF16, 2, s_bf, bf},         {"ids", PAGODA_DTYPE_I32, 1, s_i32, i32},
        {"scalar", PAGODA_DTYPE_I64, 0, NULL, &i64},    {"empty", PAGODA_DTYPE_I8, 2, s_e, NULL},
        {"eight.dims", PAGODA_DTYPE_F64, 8, s_f64, f64}, {"i16", PAGODA_DTYPE_I16, 1, s_i16, i16},
    };
    const int n = (int)(sizeof ts / sizeof ts[0]);
    const char *dt[] = {"F32", "F16", "BF16", "I32", "I64", "I8", "F64", "I16"};
    const size_t es[] = {4, 2, 2, 4, 8, 1, 8, 2};
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", g_tmp);
    CHECK(st_write(path, ts, n) == PAGODA_OK, "write: %s", pagoda_last_error());

    /* header padded with spaces to 8 bytes, like the Python library */
    size_t fsz = 0;
    uint8_t *raw = read_all(path, &fsz);
    uint64_t hl = 0;
    if (raw && fsz >= 8) memcpy(&hl, raw, 8);
    CHECK(hl % 8 == 0 && 8 + hl <= fsz && raw[8] == '{', "header length %llu", (unsigned long long)hl);

    st_model *m = NULL;
    CHECK(st_open(path, &m) == PAGODA_OK, "open: %s", pagoda_last_error());
    if (m) {
        CHECK(st_n_tensors(m) == n, "n %lld", (long long)st_n_tensors(m));
        for (int i = 0; i < n; i++) {
            const st_tensor *t = st_find(m, ts[i].name);
            CHECK(t, "find %s", ts[i].name);
            if (!t) continue;
            CHECK(t->dtype == ts[i].dtype && !strcmp(t->dtype_str, dt[i]), "%s dtype %d %s", ts[i].name, t->dtype,
                  t->dtype_str);
            CHECK(t->n_dims == ts[i].n_dims, "%s n_dims", ts[i].name);
            for (int d = 0; d < t->n_dims; d++) CHECK(t->shape[d] == ts[i].shape[d], "%s shape[%d]", ts[i].name, d);
            CHECK(!ts[i].data || (t->size && !memcmp(t->data, ts[i].data, t->size)), "%s data", ts[i].name);
            /* the writer orders tensors so each is aligned to its element size (the mmap is page aligned) */
            CHECK((uintptr_t)t->data % es[i] == 0, "%s misaligned", ts[i].name);
        }
        const st_tensor *e = st_find(m, "empty");
        CHECK(e && e->size == 0, "empty size");
        CHECK(st_find(m, "nope") == NULL && st_tensor_at(m, n) == NULL && st_tensor_at(m, -1) == NULL, "absent");
        /* tensors come back in data order */
        for (int64_t i = 1; i < st_n_tensors(m); i++)
            CHECK((const uint8_t *)st_tensor_at(m, i)->data >= (const uint8_t *)st_tensor_at(m, i - 1)->data, "order");
        CHECK(st_metadata(m, "format") == NULL, "no metadata");
    }
    st_close(m);

    /* every byte prefix is rejected */
    for (size_t k = 0; raw && k < fsz; k++) {
        uint8_t *cut = malloc(k ? k : 1);
        memcpy(cut, raw, k);
        m = NULL;
        pagoda_status st = st_open_memory(cut, k, &m);
        CHECK(st == PAGODA_ERR_FORMAT && !m, "prefix %zu of %zu accepted", k, fsz);
        st_close(m);
        free(cut);
    }
    free(raw);
    unlink(path);

    /* writer argument errors */
    const st_write_tensor dup[] = {{"x", PAGODA_DTYPE_F32, 1, s_i16, a}, {"x", PAGODA_DTYPE_F32, 1, s_i16, a}};
    CHECK(st_write(path, dup, 2) == PAGODA_ERR_INVALID, "duplicate name");
    const st_write_tensor q[] = {{"q", PAGODA_DTYPE_Q4_0, 1, s_i16, a}};
    CHECK(st_write(path, q, 1) == PAGODA_ERR_INVALID, "quantized dtype");
    const st_write_tensor meta[] = {{"__metadata__", PAGODA_DTYPE_F32, 1, s_i16, a}};
    CHECK(st_write(path, meta, 1) == PAGODA_ERR_INVALID, "reserved name");
    CHECK(access(path, F_OK) != 0, "no file after a failed write");
    CHECK(st_write(path, NULL, 0) == PAGODA_OK, "empty file: %s", pagoda_last_error());
    CHECK(st_open(path, &m) == PAGODA_OK && st_n_tensors(m) == 0, "open empty: %s", pagoda_last_error());
    st_close(m);
    unlink(path);
    st_close(NULL);
}

/* ---- hostile headers ---- */

static void test_bad_headers(void) {
    st_model *m = NULL;
    uint8_t small[4] = {0};
    CHECK(st_open_memory(small, 4, &m) == PAGODA_ERR_FORMAT && strstr(pagoda_last_error(), "too short"), "short");
    uint8_t big[16] = {0};
    uint64_t h = 200u << 20;
    memcpy(big, &h, 8);
    CHECK(st_open_memory(big, 16, &m) == PAGODA_ERR_FORMAT && strstr(pagoda_last_error(), "exceeds the limit"),
          "header cap: %s", pagoda_last_error());
    h = 9;
    memcpy(big, &h, 8);
    CHECK(st_open_memory(big, 16, &m) == PAGODA_ERR_FORMAT && strstr(pagoda_last_error(), "past end of file"),
          "header past end: %s", pagoda_last_error());

    expect_bad_json("{\"a\":", 0, "header JSON");
    expect_bad_json("[1,2]", 0, "header JSON"); /* jansson: not an object */
    expect_bad_json("\"x\"", 0, "header JSON");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8, "duplicate");
    expect_bad_json("{\"a\":5}", 0, "tensor 'a': entry is not an object");
    expect_bad_json("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing or non-string \"dtype\"");
    expect_bad_json("{\"a\":{\"dtype\":\"F12\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype 'F12'");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing \"shape\"");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                    "9 dims");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
                    "element count overflows");
    expect_bad_json("{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4,
                    "byte size overflows");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "\"data_offsets\" must be");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "\"data_offsets\" must be");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,-4]}}", 4, "\"data_offsets\" must be");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "begin > end");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 7,
                    "tensor 'a': data_offsets [4, 8] extend past the data section (7 bytes)");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                    "tensor 'a': data_offsets [0, 8] hold 8 bytes but F32 with 3 elements needs 12");
    expect_bad_json("{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 8, "not a whole number of bytes");
    expect_bad_json("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8, "overlap");
    expect_bad_json("{\"__metadata__\":{\"format\":1}}", 0, "\"__metadata__\" key 'format': value is not a string");
    expect_bad_json("{\"__metadata__\":[]}", 0, "\"__metadata__\" is not an object");

    /* valid: metadata, dtypes pagoda has no id for, scalars, zero-size tensors anywhere, gaps */
    const char *ok = "{\"__metadata__\":{\"format\":\"pt\",\"k\":\"v\"},"
                     "\"u8\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[0,4]},"
                     "\"b\":{\"dtype\":\"BOOL\",\"shape\":[4],\"data_offsets\":[4,8]},"
                     "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[6,6]},"
                     "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[16,24]},"
                     "\"f4\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[24,26]}}     ";
    size_t n;
    uint8_t *p = make(ok, 32, &n);
    CHECK(st_open_memory(p, n, &m) == PAGODA_OK, "valid: %s", pagoda_last_error());
    if (m) {
        CHECK(st_n_tensors(m) == 5, "n");
        const st_tensor *t = st_find(m, "u8");
        CHECK(t && t->dtype == -1 && !strcmp(t->dtype_str, "U8") && t->size == 4, "U8");
        t = st_find(m, "b");
        CHECK(t && t->dtype == -1 && !strcmp(t->dtype_str, "BOOL") && ((const uint8_t *)t->data)[0] == 4, "BOOL");
        t = st_find(m, "s");
        CHECK(t && t->dtype == PAGODA_DTYPE_I64 && t->n_dims == 0 && t->size == 8, "scalar");
        t = st_find(m, "f4");
        CHECK(t && t->size == 2, "F4");
        CHECK(st_metadata(m, "format") && !strcmp(st_metadata(m, "format"), "pt"), "metadata");
        CHECK(st_metadata(m, "k") && !strcmp(st_metadata(m, "k"), "v") && !st_metadata(m, "x"), "metadata k");
    }
    st_close(m);
    free(p);
    CHECK(st_open_memory(NULL, 0, &m) == PAGODA_ERR_FORMAT, "empty buffer");
}

/* ---- folders and shards ---- */

static void write_shards(const char *dir) {
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6}, c[3] = {7, 8, 9};
    const int64_t s4[] = {2, 2}, s2[] = {2}, s3[] = {3};
    const st_write_tensor sh1[] = {{"a", PAGODA_DTYPE_F32, 2, s4, a}, {"b", PAGODA_DTYPE_F32, 1, s2, b}};
    const st_write_tensor sh2[] = {{"c", PAGODA_DTYPE_F32, 1, s3, c}};
    char p[1024];
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    CHECK(st_write(p, sh1, 2) == PAGODA_OK, "shard 1: %s", pagoda_last_error());
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    CHECK(st_write(p, sh2, 1) == PAGODA_OK, "shard 2: %s", pagoda_last_error());
}

static void write_index(const char *dir, const char *weight_map) {
    char p[1024], text[2048];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    snprintf(text, sizeof text, "{\"metadata\":{\"total_size\":36},\"weight_map\":%s}", weight_map);
    write_file(p, text);
}

static void expect_bad_dir(const char *dir, pagoda_status want, const char *frag) {
    st_model *m = (st_model *)1;
    pagoda_status st = st_open(dir, &m);
    CHECK(st == want && m == NULL, "status %d want %d (%s)", st, want, pagoda_last_error());
    CHECK(strstr(pagoda_last_error(), frag), "message '%s' lacks '%s'", pagoda_last_error(), frag);
    st_close(m);
}

static void test_sharded(void) {
    char dir[512], p[1024];
    snprintf(dir, sizeof dir, "%s/sharded", g_tmp);
    mkdir(dir, 0700);
    expect_bad_dir(dir, PAGODA_ERR_IO, "no model.safetensors or model.safetensors.index.json");
    write_shards(dir);
    const char *good = "{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00001-of-00002.safetensors\","
                       "\"c\":\"model-00002-of-00002.safetensors\"}";
    write_index(dir, good);
    st_model *m = NULL;
    CHECK(st_open(dir, &m) == PAGODA_OK, "sharded: %s", pagoda_last_error());
    if (m) {
        CHECK(st_n_tensors(m) == 3, "n");
        const st_tensor *c = st_find(m, "c");
        CHECK(c && c->size == 12 && ((const float *)c->data)[2] == 9.0f, "c");
        const st_tensor *a = st_find(m, "a");
        CHECK(a && a->n_dims == 2 && ((const float *)a->data)[3] == 4.0f, "a");
    }
    st_close(m);

    write_index(dir, "{\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00001-of-00002.safetensors\"}");
    expect_bad_dir(dir, PAGODA_ERR_FORMAT, "tensor 'c' is mapped to shard 'model-00001-of-00002.safetensors'");
    write_index(dir, "{\"a\":\"model-00001-of-00002.safetensors\",\"x\":\"model-00002-of-00002.safetensors\"}");
    expect_bad_dir(dir, PAGODA_ERR_FORMAT, "tensor 'x' is mapped");
    write_index(dir, "{\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"missing.safetensors\"}");
    expect_bad_dir(dir, PAGODA_ERR_IO, "shard 'missing.safetensors'");
    write_index(dir, "{\"a\":\"../model-00001-of-00002.safetensors\"}");
    expect_bad_dir(dir, PAGODA_ERR_FORMAT, "is not a plain file name");
    write_index(dir, "{\"a\":\"..\"}");
    expect_bad_dir(dir, PAGODA_ERR_FORMAT, "is not a plain file name");
    write_index(dir, "{\"a\":\"/etc/passwd\"}");
    expect_bad_dir(dir, PAGODA_ERR_FORMAT, "is not a plain file name");
    write_index(dir, "{\"a\":7}");
    expect_bad_dir(dir, PAGODA_ERR_FORMAT, "is not a string");
    write_index(dir, "{}");
    expect_bad_dir(dir, PAGODA_ERR_FORMAT, "\"weight_map\" is empty");
    write_index(dir, "[1");
    expect_bad_dir(dir, PAGODA_ERR_FORMAT, "bad JSON");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_file(p, "{\"metadata\":{}}");
    expect_bad_dir(dir, PAGODA_ERR_FORMAT, "missing \"weight_map\"");

    /* the same tensor in two shards */
    float x[2] = {0, 1};
    const int64_t s2[] = {2};
    const st_write_tensor dup[] = {{"a", PAGODA_DTYPE_F32, 1, s2, x}};
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    CHECK(st_write(p, dup, 1) == PAGODA_OK, "rewrite shard 2");
    write_index(dir, good);
    expect_bad_dir(dir, PAGODA_ERR_FORMAT, "tensor 'a' appears twice");

    /* a corrupt shard names the shard */
    write_file(p, "garbage!garbage!");
    expect_bad_dir(dir, PAGODA_ERR_FORMAT, "model-00002-of-00002.safetensors");

    /* folder with a single model.safetensors */
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK(st_write(p, dup, 1) == PAGODA_OK, "single");
    CHECK(st_open(dir, &m) == PAGODA_OK && st_n_tensors(m) == 1, "single-file folder: %s", pagoda_last_error());
    st_close(m);
    expect_bad_dir("/nonexistent/dir", PAGODA_ERR_IO, "No such file");

    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

/* ---- real fixtures ---- */

static void test_fixtures(void) {
    const char *shared = test_shared_dir();
    if (!shared) {
        fprintf(stderr, "note: shared fixtures absent, skipping fixture checks\n");
        return;
    }
    char dir[1024], path[2048];
    snprintf(dir, sizeof dir, "%s/fixtures/hf", shared);
    DIR *d = opendir(dir);
    int n_models = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s/model.safetensors", dir, e->d_name);
        if (access(path, F_OK) != 0) continue;
        n_models++;
        st_model *m = NULL, *m2 = NULL;
        CHECK(st_open(path, &m) == PAGODA_OK, "%s: %s", path, pagoda_last_error());
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        CHECK(st_open(path, &m2) == PAGODA_OK, "folder %s: %s", path, pagoda_last_error());
        if (m && m2) {
            CHECK(st_n_tensors(m) > 10 && st_n_tensors(m) == st_n_tensors(m2), "%s: %lld tensors", path,
                  (long long)st_n_tensors(m));
            CHECK(st_metadata(m, "format") && !strcmp(st_metadata(m, "format"), "pt"), "%s: metadata", path);
            for (int64_t i = 0; i < st_n_tensors(m); i++) {
                const st_tensor *t = st_tensor_at(m, i);
                CHECK(t->dtype == PAGODA_DTYPE_F32 || t->dtype == PAGODA_DTYPE_BF16 || t->dtype == PAGODA_DTYPE_F16,
                      "%s: %s dtype %s", path, t->name, t->dtype_str);
                CHECK(st_find(m, t->name) == t, "find %s", t->name);
            }
            const st_tensor *emb = st_find(m, "model.embed_tokens.weight");
            if (!emb) emb = st_find(m, "transformer.wte.weight");
            CHECK(emb && emb->n_dims == 2 && emb->shape[1] > 0, "%s: embedding", path);
        }
        st_close(m);
        st_close(m2);
        snprintf(path, sizeof path, "%s/%s/golden.safetensors", dir, e->d_name);
        if (access(path, F_OK) == 0) {
            CHECK(st_open(path, &m) == PAGODA_OK, "%s: %s", path, pagoda_last_error());
            const st_tensor *ids = m ? st_find(m, "input_ids") : NULL, *lg = m ? st_find(m, "logits") : NULL;
            CHECK(ids && ids->dtype == PAGODA_DTYPE_I32 && ids->n_dims == 2, "%s: input_ids", path);
            CHECK(lg && lg->dtype == PAGODA_DTYPE_F32 && lg->n_dims == 3 && ids &&
                      lg->shape[0] == ids->shape[0] && lg->shape[1] == ids->shape[1],
                  "%s: logits", path);
            st_close(m);
        }
    }
    if (d) closedir(d);
    CHECK(n_models >= 8, "found %d hf fixtures", n_models);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/pagoda_test_st_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_bad_headers();
    test_sharded();
    test_fixtures();
    rmdir(g_tmp);
    TEST_DONE();
}
