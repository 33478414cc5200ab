/* One tensor in or out of a safetensors file, for the tools that exchange arrays with Python
 * (`pagoda logits`): input_ids in, logits out. Built on jansson only: tools/ reach the library
 * through include/pagoda.h, and this is file exchange, not model loading (src/format/ reads
 * model weights). Bounded: a hostile file gets a clear error, never a crash. */
#ifndef PG_TOOLS_TENSOR_FILE_H
#define PG_TOOLS_TENSOR_FILE_H

#include <stdint.h>

/* Reads tensor `name` of dtype I32 and rank 2 ([rows][cols], each >= 1, at most max_elems
 * elements) into *data (malloc'd). Prints "pagoda: <path>: <what is wrong>" and returns 1 on
 * failure. */
int tensor_file_read_i32_2d(const char *path, const char *name, int64_t max_elems, int32_t **data, int64_t *rows,
                            int64_t *cols);
/* Writes one F32 tensor `name` of shape [n_dims] as a safetensors file laid out as the Python
 * library writes it (compact JSON header padded with spaces to 8 bytes). Prints the error and
 * returns 1 on failure (the file is removed). */
int tensor_file_write_f32(const char *path, const char *name, const int64_t *shape, int n_dims, const float *data);

#endif
