#include "tensor_file.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "tensor_file.c assumes a little-endian host");

enum { MAX_HEADER = 100 << 20 }; /* the Python library's own limit */

static int fail(FILE *fp, const char *path, const char *what) {
    fprintf(stderr, "pagoda: %s: %s\n", path, what);
    if (fp) fclose(fp);
    return 1;
}

int tensor_file_read_i32_2d(const char *path, const char *name, int64_t max_elems, int32_t **data, int64_t *rows,
                            int64_t *cols) {
    *data = NULL, *rows = *cols = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "pagoda: %s: cannot open: %s\n", path, strerror(errno));
        return 1;
    }
    uint64_t hlen = 0;
    if (fseek(fp, 0, SEEK_END) != 0) return fail(fp, path, "cannot seek");
    long fsize = ftell(fp);
    if (fsize < 8 || fseek(fp, 0, SEEK_SET) != 0 || fread(&hlen, 8, 1, fp) != 1)
        return fail(fp, path, "not a safetensors file (shorter than its 8-byte header length)");
    if (hlen > MAX_HEADER || hlen > (uint64_t)fsize - 8) return fail(fp, path, "header length out of range");
    char *text = malloc(hlen + 1);
    if (!text) return fail(fp, path, "out of memory");
    if (fread(text, 1, hlen, fp) != hlen) {
        free(text);
        return fail(fp, path, "truncated header");
    }
    text[hlen] = 0;
    json_error_t jerr;
    json_t *root = json_loadb(text, hlen, 0, &jerr);
    free(text);
    const uint64_t data_size = (uint64_t)fsize - 8 - hlen;
    json_t *t = root ? json_object_get(root, name) : NULL, *shape = json_object_get(t, "shape");
    json_t *offs = json_object_get(t, "data_offsets");
    const char *dtype = json_string_value(json_object_get(t, "dtype"));
    char msg[256];
    snprintf(msg, sizeof msg, "needs tensor %s of type I32 and shape [B,T] (B*T <= %lld)", name, (long long)max_elems);
    int ok = root && json_is_object(root) && json_is_object(t) && dtype && !strcmp(dtype, "I32") &&
             json_array_size(shape) == 2 && json_array_size(offs) == 2;
    int64_t r = 0, c = 0, b0 = 0, b1 = 0;
    if (ok) {
        json_t *d0 = json_array_get(shape, 0), *d1 = json_array_get(shape, 1);
        json_t *o0 = json_array_get(offs, 0), *o1 = json_array_get(offs, 1);
        ok = json_is_integer(d0) && json_is_integer(d1) && json_is_integer(o0) && json_is_integer(o1);
        if (ok) r = json_integer_value(d0), c = json_integer_value(d1), b0 = json_integer_value(o0), b1 = json_integer_value(o1);
        ok = ok && r > 0 && c > 0 && r <= max_elems && c <= max_elems / r;
    }
    json_decref(root);
    if (!ok) return fail(fp, path, msg);
    const uint64_t bytes = (uint64_t)r * (uint64_t)c * sizeof(int32_t);
    if (b0 < 0 || b1 < b0 || (uint64_t)(b1 - b0) != bytes || (uint64_t)b1 > data_size)
        return fail(fp, path, "data_offsets of the tensor do not match its shape or lie outside the file");
    int32_t *v = malloc(bytes);
    if (!v) return fail(fp, path, "out of memory");
    if (fseek(fp, (long)(8 + hlen + (uint64_t)b0), SEEK_SET) != 0 || fread(v, 1, bytes, fp) != bytes) {
        free(v);
        return fail(fp, path, "cannot read the tensor data");
    }
    fclose(fp);
    *data = v, *rows = r, *cols = c;
    return 0;
}

int tensor_file_write_f32(const char *path, const char *name, const int64_t *shape, int n_dims, const float *data) {
    uint64_t bytes = sizeof(float);
    json_t *dims = json_array();
    for (int d = 0; dims && d < n_dims; d++) {
        bytes *= (uint64_t)shape[d];
        json_array_append_new(dims, json_integer(shape[d]));
    }
    json_t *root = json_object(), *t = dims ? json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", dims,
                                                       "data_offsets", (json_int_t)0, (json_int_t)bytes) : NULL;
    char *header = t && root && json_object_set_new(root, name, t) == 0 ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!header) {
        fprintf(stderr, "pagoda: %s: out of memory\n", path);
        return 1;
    }
    /* spaces pad the header so the data section starts 8-byte aligned, as the Python library does */
    size_t hl = strlen(header);
    uint64_t padded = (hl + 7) / 8 * 8;
    FILE *fp = fopen(path, "wb");
    int ok = fp && fwrite(&padded, 8, 1, fp) == 1 && fwrite(header, 1, hl, fp) == hl &&
             fwrite("        ", 1, padded - hl, fp) == padded - hl && (!bytes || fwrite(data, 1, bytes, fp) == bytes);
    free(header);
    if (fp && fclose(fp) != 0) ok = 0;
    if (!ok) {
        fprintf(stderr, "pagoda: %s: cannot write: %s\n", path, strerror(errno));
        if (fp) unlink(path);
        return 1;
    }
    return 0;
}
