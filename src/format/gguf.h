/* GGUF v2/v3 reader (bounded parser over an mmap) and streaming writer.
 * Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
 * Everything read from the file is overflow-checked; a bad file gives PAGODA_ERR_FORMAT with a
 * message (pagoda_last_error) naming the key or tensor and the field that is wrong. */
#ifndef PG_FORMAT_GGUF_H
#define PG_FORMAT_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"

typedef enum {
    GGUF_TYPE_UINT8 = 0, GGUF_TYPE_INT8 = 1, GGUF_TYPE_UINT16 = 2, GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4, GGUF_TYPE_INT32 = 5, GGUF_TYPE_FLOAT32 = 6, GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8, GGUF_TYPE_ARRAY = 9, GGUF_TYPE_UINT64 = 10, GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
} gguf_type;

#define GGUF_MAX_DIMS 4

typedef struct {
    char *key;     /* owned, NUL-terminated */
    gguf_type type;
    /* scalars, widened: integers in i64 (u64 keeps the uint64 bits), floats in f64, bool in i64 */
    int64_t i64;
    uint64_t u64;
    double f64;
    /* GGUF_TYPE_STRING: owned NUL-terminated copy; str_len excludes the NUL (may contain NULs) */
    char *str;
    uint64_t str_len;
    /* GGUF_TYPE_ARRAY */
    gguf_type arr_type;
    uint64_t arr_n;
    const void *arr_data;    /* numeric arrays: the raw little-endian elements, in the file mapping */
    char **arr_str;          /* string arrays: owned NUL-terminated copies [arr_n] */
    uint64_t *arr_str_len;   /* [arr_n] */
} gguf_kv;

typedef struct {
    char *name;                 /* owned */
    int dtype;                  /* pagoda_dtype (GGML type id) */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];  /* ne[0] is the contiguous (row) dimension; unused dims are 1 */
    uint64_t offset;            /* from the start of the data section */
    size_t size;                /* bytes */
    const void *data;           /* into the mapping; read-only */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* mmaps the file read-only. *out is NULL on failure. */
pagoda_status gguf_open(const char *path, gguf_file **out);
/* Parses a buffer the caller keeps alive (fuzzing, tests). */
pagoda_status gguf_open_memory(const void *data, size_t size, gguf_file **out);
void gguf_close(gguf_file *f); /* NULL is a no-op */

uint32_t gguf_version(const gguf_file *f);
size_t gguf_alignment(const gguf_file *f);
size_t gguf_data_offset(const gguf_file *f); /* file offset of the tensor data section */
size_t gguf_file_size(const gguf_file *f);

int64_t gguf_n_kv(const gguf_file *f);
const gguf_kv *gguf_kv_at(const gguf_file *f, int64_t i);
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key); /* NULL if absent */

/* Typed lookups: false if the key is absent or its type cannot represent the value
 * (integers of any width convert when in range; floats accept float32/float64). */
bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
bool gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
bool gguf_get_f32(const gguf_file *f, const char *key, float *out);
bool gguf_get_bool(const gguf_file *f, const char *key, bool *out);
const char *gguf_get_str(const gguf_file *f, const char *key); /* NULL if absent/not a string */

int64_t gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name); /* NULL if absent */

const char *gguf_type_name(gguf_type t);

/* Streaming writer: declare all metadata and tensors first, then write tensor data in the
 * order tensors were added, so multi-GB files never sit in memory. */
typedef struct gguf_writer gguf_writer;
gguf_writer *gguf_writer_create(void);
void gguf_writer_destroy(gguf_writer *w); /* NULL is a no-op */
pagoda_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
pagoda_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
pagoda_status gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
pagoda_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
pagoda_status gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
pagoda_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *v);
pagoda_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n);
/* string array with explicit lengths (strings may contain NULs); len NULL means strlen of each */
pagoda_status gguf_writer_set_arr_str_n(gguf_writer *w, const char *key, const char *const *v, const uint64_t *len,
                                        uint64_t n);
/* numeric array: elements of type t (not STRING/ARRAY), copied */
pagoda_status gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type t, const void *v, uint64_t n);
/* Copies a key/value from a gguf_file (gguf_kv_at/gguf_find_kv) under the same key, with the same
 * type: scalars of any width, strings and arrays of any element type. */
pagoda_status gguf_writer_set_kv(gguf_writer *w, const gguf_kv *kv);
/* Removes a key set earlier (before gguf_writer_begin); false if it was not set. The keys after it
 * keep their order, so remove + set moves a key to the end, as ggml's gguf_set_* does when it
 * replaces a value. Removing general.alignment restores the default alignment. */
bool gguf_writer_remove_key(gguf_writer *w, const char *key);
pagoda_status gguf_writer_add_tensor(gguf_writer *w, const char *name, int dtype, int n_dims, const int64_t *ne);
/* Writes the header, metadata and tensor table to path. */
pagoda_status gguf_writer_begin(gguf_writer *w, const char *path);
/* Appends the data of the next tensor (exactly its size in bytes), padding to the alignment. */
pagoda_status gguf_writer_write_tensor(gguf_writer *w, const void *data, size_t size);
/* Checks all tensors were written, flushes and closes the file. */
pagoda_status gguf_writer_end(gguf_writer *w);

#endif
