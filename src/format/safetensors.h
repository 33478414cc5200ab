/* safetensors reader (single file, or sharded with model.safetensors.index.json) and writer.
 * Files are mmapped read-only; header JSON and all offsets are bounds- and overflow-checked. */
#ifndef PG_FORMAT_SAFETENSORS_H
#define PG_FORMAT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"

#define ST_MAX_DIMS 8

typedef struct {
    char *name;                  /* owned */
    int dtype;                   /* pagoda_dtype, or -1 for a dtype pagoda has no id for (U8, BOOL, ...) */
    char dtype_str[8];           /* as written in the file: "F32", "BF16", ... */
    int n_dims;
    int64_t shape[ST_MAX_DIMS];  /* file order: shape[0] outermost, shape[n_dims-1] contiguous */
    size_t size;                 /* bytes */
    const void *data;            /* into the mapping; read-only */
} st_tensor;

typedef struct st_model st_model;

/* path: a .safetensors file, or a folder holding model.safetensors or
 * model.safetensors.index.json (+ its shards). */
pagoda_status st_open(const char *path, st_model **out);
/* One file's bytes, kept alive by the caller (fuzzing, tests). */
pagoda_status st_open_memory(const void *data, size_t size, st_model **out);
void st_close(st_model *m); /* NULL is a no-op */

int64_t st_n_tensors(const st_model *m);
const st_tensor *st_tensor_at(const st_model *m, int64_t i);
const st_tensor *st_find(const st_model *m, const char *name); /* NULL if absent */
/* "__metadata__" string value, NULL if absent (first shard's metadata). */
const char *st_metadata(const st_model *m, const char *key);

/* Writes one file. dtypes are pagoda_dtype (F32, F16, BF16, I32, I64, I8, F64). */
typedef struct {
    const char *name;
    int dtype;
    int n_dims;
    const int64_t *shape; /* file order */
    const void *data;
} st_write_tensor;
pagoda_status st_write(const char *path, const st_write_tensor *tensors, int n);

#endif
