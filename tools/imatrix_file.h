/* llama.cpp importance-matrix files for `pagoda quantize --imatrix`, in both of llama.cpp's
 * formats, turned into what llama-quantize quantizes with: one weight per column of each tensor
 * (per expert for 3-D expert tensors: n = ne[0] * n_expert).
 *
 * Legacy binary (.dat, llama-imatrix before the GGUF format; all little-endian int32/float32):
 *     n_entries                      (>= 1)
 *     n_entries times: len, name[len], ncall, nval (>= 1), float values[nval]
 *     optional tail: last_call (chunks), dataset_len, dataset[dataset_len]
 *   values are stored multiplied by ncall; the weight is value / ncall (as is when ncall <= 0).
 *   A name given twice keeps the later entry.
 * GGUF (llama-imatrix since mid 2025): keys imatrix.datasets (string array), imatrix.chunk_count
 *   and imatrix.chunk_size (u32), all three required; per tensor T an F32 "T.in_sum2" [ne0, n_mat]
 *   and an F32 "T.counts" with n_mat elements; other tensors are ignored. The weight of column i of
 *   matrix j is in_sum2[j][i] / counts[j], or 1 where counts[j] <= 0 (no data for that matrix).
 * Either way a non-finite weight is an error (llama-quantize refuses those too). */
#ifndef PAGODA_TOOLS_IMATRIX_FILE_H
#define PAGODA_TOOLS_IMATRIX_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *name;
    float *values; /* n per-column weights */
    int64_t n;
} imatrix_entry;

typedef struct {
    imatrix_entry *entries; /* sorted by name, names unique */
    int64_t n_entries;
    bool gguf;              /* which format it came in */
    bool has_dataset;       /* .dat: a non-empty dataset tail; GGUF: a non-empty imatrix.datasets */
    char *dataset;          /* the (first) dataset name, NUL-terminated ("" if none) */
    int32_t chunks;         /* .dat last_call / GGUF imatrix.chunk_count as int32 (0 if absent) */
} imatrix;

/* Parses a whole file held in memory. On failure returns NULL and writes a one-line reason
 * (naming the entry or tensor at fault) to err. */
imatrix *imatrix_parse(const void *data, size_t size, char *err, size_t err_len);
/* Reads and parses path; as imatrix_parse (the reason includes the path). */
imatrix *imatrix_load(const char *path, char *err, size_t err_len);
const imatrix_entry *imatrix_find(const imatrix *m, const char *name); /* NULL if absent */
void imatrix_free(imatrix *m);                                          /* NULL is a no-op */

#endif
