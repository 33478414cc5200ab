/* libFuzzer target: the importance-matrix reader of `pagoda quantize --imatrix` (legacy .dat and
 * GGUF). Every weight of every accepted entry is read so ASan sees any out-of-bounds pointer, and
 * the lookup must find each entry by its own name. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "imatrix_file.h"

static volatile float g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    imatrix *m = imatrix_parse(data, size, err, sizeof err);
    if (!m) {
        if (!memchr(err, 0, sizeof err) || !err[0]) __builtin_trap(); /* a failure always says why */
        return 0;
    }
    float acc = (float)m->chunks + (float)strlen(m->dataset);
    if (m->n_entries < 1) __builtin_trap();
    for (int64_t i = 0; i < m->n_entries; i++) {
        const imatrix_entry *e = &m->entries[i];
        if (imatrix_find(m, e->name) != e || e->n < 1) __builtin_trap();
        for (int64_t j = 0; j < e->n; j++) acc += e->values[j];
    }
    g_sink = acc;
    imatrix_free(m);
    return 0;
}
